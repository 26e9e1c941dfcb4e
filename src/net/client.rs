//! Blocking client connections with deadlines: name resolution (with the
//! session's timeout, stopping on Ctrl-C), connect (every resolved address,
//! with the session's timeout and retries), line reads that stop at
//! a deadline or on Ctrl-C, the request/reply handshake of the line
//! protocol ([`request`]), and a connected UDP socket. Every wait is sliced
//! into short reads so Ctrl-C is noticed within [`SLICE`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::sockopt::SockOpts;
use crate::proto::echo::{Reply, Request, encode_request, parse_reply};
use crate::proto::escape::display_bytes;
use crate::proto::line::{Frame, next_line};

/// Longest single blocking wait, so Ctrl-C is noticed quickly.
pub const SLICE: Duration = Duration::from_millis(50);

/// What a client needs from the session.
#[derive(Clone, Copy)]
pub struct ClientCtx<'a> {
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Extra connection attempts after a timeout.
    pub retries: u32,
    /// Socket options for TCP.
    pub opts: SockOpts,
    /// Ctrl-C.
    pub interrupt: &'a AtomicBool,
}

impl ClientCtx<'_> {
    /// True once Ctrl-C was pressed.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }
}

/// A read that ended without data because its time slice ran out (or a
/// signal came): not an error, wait on.
pub fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The error for Ctrl-C.
pub fn interrupted() -> Error {
    Error::new(ErrorKind::Interrupted, "interrupted")
}

/// Resolve `ep` within the session's timeout, stopping on Ctrl-C.
///
/// # Errors
/// `dns`, or `interrupted` on Ctrl-C.
pub fn resolve(ep: &Endpoint, ctx: ClientCtx<'_>) -> Result<Vec<SocketAddr>> {
    ep.resolve_within(ctx.timeout, Some(ctx.interrupt))
}

/// Which address family a command may use (`-4`, `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Either; IPv4 first where both resolve.
    #[default]
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Family {
    /// From `-4` / `-6` flags (clap makes them exclusive).
    pub fn from_flags(v4: bool, v6: bool) -> Family {
        match (v4, v6) {
            (true, _) => Family::V4,
            (_, true) => Family::V6,
            _ => Family::Any,
        }
    }

    fn admits(self, a: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        }
    }
}

/// Resolve `ep` to the first address of `family`.
///
/// # Errors
/// `dns` when it does not resolve, or resolves only to the other family;
/// `interrupted` on Ctrl-C.
pub fn resolve_one(ep: &Endpoint, family: Family, ctx: ClientCtx<'_>) -> Result<SocketAddr> {
    let addrs = resolve(ep, ctx)?;
    addrs
        .iter()
        .copied()
        .find(|a| family.admits(a))
        .ok_or_else(|| {
            let want = if family == Family::V6 { "IPv6" } else { "IPv4" };
            Error::new(ErrorKind::Dns, format!("{} has no {want} address", ep.host)).with_hint(
                if family == Family::V6 {
                    "drop -6, or use an IPv6 address"
                } else {
                    "drop -4, or use an IPv4 address"
                },
            )
        })
}

/// Connect to the first address of `ep` that answers. Returns the stream,
/// the address and the connect time (resolution not included).
///
/// # Errors
/// As [`connect_noting`].
pub fn connect(ep: &Endpoint, ctx: ClientCtx<'_>) -> Result<(TcpStream, SocketAddr, Duration)> {
    connect_noting(ep, ctx, &mut |_| {})
}

/// [`connect`], telling `note` of each attempt that got no answer while
/// the next one goes on (`connect 10.0.0.9:5050: attempt 1/2: no answer in
/// 3s`), so a wait is never silent.
///
/// # Errors
/// `dns`, `connection-refused`, `timed-out`, `unreachable` naming the
/// address (a timeout counts the attempts and the time they really took);
/// `interrupted` on Ctrl-C.
pub fn connect_noting(
    ep: &Endpoint,
    ctx: ClientCtx<'_>,
    note: &mut dyn FnMut(&str),
) -> Result<(TcpStream, SocketAddr, Duration)> {
    let addrs = resolve(ep, ctx)?;
    let mut last = None;
    let attempts = ctx.retries + 1;
    let start = Instant::now();
    let waited = crate::units::format_duration(ctx.timeout);
    // Retries only help against timeouts; a refusal is an answer.
    for attempt in 1..=attempts {
        let mut timed_out = false;
        for addr in &addrs {
            if ctx.interrupted() {
                return Err(interrupted());
            }
            let t = Instant::now();
            match TcpStream::connect_timeout(addr, ctx.timeout) {
                Ok(s) => {
                    let took = t.elapsed();
                    ctx.opts
                        .apply(&s)
                        .map_err(|e| Error::io("set socket options on", addr, &e))?;
                    return Ok((s, *addr, took));
                }
                Err(e) => {
                    let mut err = Error::io("connect", addr, &e);
                    if e.kind() == io::ErrorKind::TimedOut {
                        timed_out = true;
                        if attempt < attempts {
                            note(&format!(
                                "connect {addr}: attempt {attempt}/{attempts}: no answer in {waited}"
                            ));
                        }
                        let took = Duration::from_millis(start.elapsed().as_millis() as u64);
                        err.message = format!(
                            "connect {addr}: no answer in {} ({} of {waited})",
                            crate::units::format_duration(took),
                            crate::units::plural(attempt.into(), "attempt")
                        );
                    }
                    last = Some(err);
                }
            }
        }
        if !timed_out {
            break;
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::new(ErrorKind::Dns, format!("resolve {}: no addresses", ep.host))
    }))
}

/// A blocking connection the line clients read and write with deadlines:
/// a TCP socket, or [`crate::net::tls::Stream`] (plain or TLS).
pub trait LineStream: Read + Write {
    /// As [`TcpStream::set_read_timeout`].
    ///
    /// # Errors
    /// The OS error.
    fn set_read_timeout(&mut self, d: Option<Duration>) -> io::Result<()>;
    /// As [`TcpStream::set_write_timeout`].
    ///
    /// # Errors
    /// The OS error.
    fn set_write_timeout(&mut self, d: Option<Duration>) -> io::Result<()>;
    /// The peer's address, for messages (empty if unknown).
    fn peer(&self) -> String;
}

impl LineStream for TcpStream {
    fn set_read_timeout(&mut self, d: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&mut self, d: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, d)
    }
    fn peer(&self) -> String {
        self.peer_addr().map(|a| a.to_string()).unwrap_or_default()
    }
}

/// Reads `\n`-terminated lines from a blocking stream with deadlines,
/// framed by [`crate::proto::line::next_line`].
pub struct LineReader {
    buf: Vec<u8>,
    max: usize,
    /// Any byte read yet: a close before the first one is how a server's
    /// access control (`serve --allow/--deny`) looks from here.
    got_any: bool,
}

/// Outcome of waiting for a line.
pub enum ReadLine {
    /// A line, terminator stripped.
    Line(Vec<u8>),
    /// The deadline passed first.
    TimedOut,
    /// The peer closed the connection.
    Closed,
}

impl LineReader {
    /// A reader accepting lines up to `max` bytes.
    pub fn new(max: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            max,
            got_any: false,
        }
    }

    /// The bytes read past the last line (a raw stream that followed it).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Wait for the next line until `deadline`.
    ///
    /// # Errors
    /// `interrupted` on Ctrl-C; `protocol` for an over-long line; the OS error.
    pub fn read_line<S: LineStream + ?Sized>(
        &mut self,
        s: &mut S,
        deadline: Instant,
        ctx: ClientCtx<'_>,
    ) -> Result<ReadLine> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match next_line(&self.buf, self.max) {
                Frame::Line(line, used) => {
                    let line = line.to_vec();
                    self.buf.drain(..used);
                    return Ok(ReadLine::Line(line));
                }
                Frame::TooLong => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("the server sent a line over {} bytes", self.max),
                    ));
                }
                Frame::Incomplete => {}
            }
            if ctx.interrupted() {
                return Err(interrupted());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(ReadLine::TimedOut);
            }
            let wait = (deadline - now).min(SLICE).max(Duration::from_micros(100));
            s.set_read_timeout(Some(wait))
                .map_err(|e| Error::io("set timeout", "socket", &e))?;
            match s.read(&mut chunk) {
                Ok(0) => return Ok(ReadLine::Closed),
                Ok(n) => {
                    self.got_any = true;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if is_wait(&e) => {}
                Err(e) if !self.got_any && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(ReadLine::Closed);
                }
                Err(e) => {
                    return Err(Error::io("read from", s.peer(), &e));
                }
            }
        }
    }
}

/// Send one request of the line protocol and wait, within the session's
/// timeout, for the line that answers it. This is the one handshake every
/// client (`echo`, `--bulk`'s `STREAM`, `chat`'s `CHAT`) goes through.
///
/// # Errors
/// `timed-out` when no line comes in time; `protocol` when the server closes
/// instead; the OS error of the write or read.
pub fn request<S: LineStream + ?Sized>(
    sock: &mut S,
    reader: &mut LineReader,
    req: &Request<'_>,
    addr: SocketAddr,
    ctx: ClientCtx<'_>,
) -> Result<Vec<u8>> {
    send(sock, req, ctx)?;
    read_reply(sock, reader, req, addr, ctx)
}

/// Read the answer to `req`, sent before, within the session's timeout.
///
/// # Errors
/// As [`request`].
pub fn read_reply<S: LineStream + ?Sized>(
    sock: &mut S,
    reader: &mut LineReader,
    req: &Request<'_>,
    addr: SocketAddr,
    ctx: ClientCtx<'_>,
) -> Result<Vec<u8>> {
    let word = request_word(req);
    match reader.read_line(sock, Instant::now() + ctx.timeout, ctx)? {
        ReadLine::Line(l) => Ok(l),
        ReadLine::TimedOut => Err(Error::new(
            ErrorKind::TimedOut,
            format!(
                "no answer to {word} from {addr} in {}",
                crate::units::format_duration(ctx.timeout)
            ),
        )),
        ReadLine::Closed if !reader.got_any => Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "{addr} closed the connection before answering — the server may not allow your address (ask its operator to add it with --allow)"
            ),
        )),
        ReadLine::Closed => Err(Error::new(
            ErrorKind::Protocol,
            format!("{addr} closed the connection without answering {word}"),
        )
        .with_hint(NOT_NETSH_HINT)),
    }
}

/// Send one request line without waiting for an answer (`QUIT` on the way out).
///
/// # Errors
/// As [`write_all`].
pub fn send<S: LineStream + ?Sized>(
    sock: &mut S,
    req: &Request<'_>,
    ctx: ClientCtx<'_>,
) -> Result<()> {
    let mut wire = Vec::new();
    encode_request(req, &mut wire);
    write_all(sock, &wire, ctx)
}

/// The hint for a peer that does not speak netsh's protocol.
const NOT_NETSH_HINT: &str = "is it a netsh server? ('netsh serve')";

fn request_word(req: &Request<'_>) -> &'static str {
    match req {
        Request::Echo(_) => "ECHO",
        Request::Stream => "STREAM",
        Request::Sink { .. } => "SINK",
        Request::Source { .. } => "SOURCE",
        Request::UdpBulk => "UDPBULK",
        Request::End(_) => "END",
        Request::Stats => "STATS",
        Request::Chat(_) => "CHAT",
        Request::Help => "HELP",
        Request::Quit => "QUIT",
        Request::Empty | Request::Unknown(_) => "the request",
    }
}

/// The error for a reply that is not the one `req` expects: a full server
/// and a per-address limit say so with their fix; anything else is
/// probably not a netsh server.
pub fn unexpected(addr: SocketAddr, req: &Request<'_>, line: &[u8]) -> Error {
    let shown = |l: &[u8]| display_bytes(&l[..l.len().min(120)]);
    match parse_reply(line) {
        Reply::Full => Error::new(
            ErrorKind::Protocol,
            format!("{addr} is full: it refused the connection ('ERR server full')"),
        )
        .with_hint("try again later, or raise --max-clients on the server"),
        Reply::TooMany(_) => Error::new(
            ErrorKind::Protocol,
            format!("{addr} refused the connection: '{}'", shown(line)),
        )
        .with_hint("close some connections from this address, or raise --max-per-ip on the server"),
        _ => Error::new(
            ErrorKind::Protocol,
            format!(
                "{addr} answered {} with '{}'",
                request_word(req),
                shown(line)
            ),
        )
        .with_hint(NOT_NETSH_HINT),
    }
}

/// Write all of `data`, bounded by the timeout.
///
/// # Errors
/// `timed-out` if the peer does not take the bytes in time; the OS error.
pub fn write_all<S: LineStream + ?Sized>(s: &mut S, data: &[u8], ctx: ClientCtx<'_>) -> Result<()> {
    s.set_write_timeout(Some(ctx.timeout))
        .map_err(|e| Error::io("set timeout", "socket", &e))?;
    s.write_all(data)
        .map_err(|e| Error::io("send to", s.peer(), &e))
}

/// A UDP socket connected to the first resolved address (so ICMP "port
/// unreachable" comes back as `connection-refused`), resolving within the
/// session's timeout and stopping on Ctrl-C.
///
/// # Errors
/// `dns`, `interrupted` on Ctrl-C, or the OS error naming the address.
pub fn udp_connect_within(ep: &Endpoint, ctx: ClientCtx<'_>) -> Result<(UdpSocket, SocketAddr)> {
    udp_connect_to(ep, &resolve(ep, ctx)?)
}

/// Bind a UDP socket of the first address's family and connect it there.
fn udp_connect_to(ep: &Endpoint, addrs: &[SocketAddr]) -> Result<(UdpSocket, SocketAddr)> {
    let addr = *addrs
        .first()
        .ok_or_else(|| Error::new(ErrorKind::Dns, format!("resolve {}: no addresses", ep.host)))?;
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| Error::bad_value("bad local address"))?
    } else {
        "[::]:0"
            .parse()
            .map_err(|_| Error::bad_value("bad local address"))?
    };
    let s = UdpSocket::bind(local).map_err(|e| Error::io("bind UDP", local, &e))?;
    s.connect(addr)
        .map_err(|e| Error::io("connect UDP", addr, &e))?;
    Ok((s, addr))
}

/// Sleep until `until`, waking for Ctrl-C.
///
/// # Errors
/// `interrupted` on Ctrl-C.
pub fn sleep_until(until: Instant, ctx: ClientCtx<'_>) -> Result<()> {
    loop {
        if ctx.interrupted() {
            return Err(interrupted());
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(SLICE));
    }
}
