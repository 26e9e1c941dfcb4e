//! SNTP client core: one query at a time on a connected UDP socket with a
//! deadline, driving sntpc's split API through an adapter (sntpc 0.11 has no
//! socket or timeout of its own: its std adapter is a separate crate and
//! blocks without a deadline). netsh does the I/O: it sends
//! the request sntpc builds, waits with its own deadline (sliced for Ctrl-C),
//! drops replies whose origin timestamp is not ours (stale or spoofed),
//! decodes the header itself so an unsynchronised server or a kiss-o'-death
//! is reported exactly, and hands good replies to sntpc for validation and
//! the offset/delay arithmetic, stamped with the time the datagram arrived.

use std::cell::{Cell, RefCell};
use std::future::{Future, ready};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sntpc::{NtpContext, NtpTimestampGenerator, NtpUdpSocket};

use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::error::{Error, ErrorKind, Result};
use crate::net::client::{self, ClientCtx, SLICE, interrupted};
use crate::net::probe::{Answer, AnswerKind, Tokens, Transport};
use crate::proto::ntp::{self, Packet, Verdict};

/// Largest datagram read (replies with extension fields included).
const MAX_DATAGRAM: usize = 1024;

/// The clock sntpc reads: now, or the arrival time netsh recorded.
#[derive(Clone, Copy)]
struct Stamp<'a> {
    fixed: &'a Cell<Option<SystemTime>>,
    now: Duration,
}

impl NtpTimestampGenerator for Stamp<'_> {
    fn init(&mut self) {
        let t = self.fixed.get().unwrap_or_else(SystemTime::now);
        self.now = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    }
    fn timestamp_sec(&self) -> u64 {
        self.now.as_secs()
    }
    fn timestamp_subsec_micros(&self) -> u32 {
        self.now.subsec_micros()
    }
}

/// sntpc's view of the socket: sends go out at once; "receives" hand over
/// the datagram netsh already read and checked. Never pending, as sntpc's
/// busy-polling executor requires.
struct Adapter<'a> {
    sock: &'a UdpSocket,
    sent: RefCell<Vec<u8>>,
    reply: RefCell<Option<(Vec<u8>, SocketAddr)>>,
}

impl NtpUdpSocket for Adapter<'_> {
    fn send_to(&self, buf: &[u8], _addr: SocketAddr) -> impl Future<Output = sntpc::Result<usize>> {
        *self.sent.borrow_mut() = buf.to_vec();
        ready(self.sock.send(buf).map_err(|_| sntpc::Error::Network))
    }
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = sntpc::Result<(usize, SocketAddr)>> {
        let r = match self.reply.borrow_mut().take() {
            Some((d, from)) if d.len() <= buf.len() => {
                buf[..d.len()].copy_from_slice(&d);
                Ok((d.len(), from))
            }
            _ => Err(sntpc::Error::Network),
        };
        ready(r)
    }
}

/// One good sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Server clock minus local clock, microseconds.
    pub offset_us: i64,
    /// Round-trip delay, microseconds.
    pub delay_us: u64,
    /// Local time the reply arrived.
    pub local: SystemTime,
    /// The reply's header.
    pub header: Packet,
    /// Bad datagrams seen before this reply.
    pub bad: u32,
    /// Stale or forged replies seen before this reply.
    pub stale: u32,
}

/// What one query produced.
#[derive(Debug)]
pub enum Outcome {
    /// A validated sample.
    Sample(Sample),
    /// No acceptable reply before the deadline; how many bad and stale
    /// datagrams were seen meanwhile and the last bad one's reason.
    Lost {
        /// Datagrams that were not valid replies.
        bad: u32,
        /// Replies to an earlier request (or forged): wrong origin timestamp.
        stale: u32,
        /// Why the last bad datagram was refused.
        last_bad: Option<String>,
    },
    /// Kiss-o'-death with its code.
    Kiss([u8; 4]),
}

/// A connected UDP socket to `addr`.
///
/// # Errors
/// The OS error naming the address.
pub fn socket(addr: SocketAddr) -> Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let s = UdpSocket::bind(local).map_err(|e| Error::io("bind UDP", local, &e))?;
    s.connect(addr)
        .map_err(|e| Error::io("connect UDP", addr, &e))?;
    Ok(s)
}

/// A request on the wire: what its reply must match.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    sent: sntpc::SendRequestResult,
    /// Its transmit timestamp, which the reply's origin must repeat.
    tx: u64,
}

/// What one datagram is, as an answer to a [`Request`].
#[derive(Debug)]
pub enum Judged {
    /// A reply to another request (or forged): wrong origin timestamp.
    Stale,
    /// Not a valid reply; why.
    Bad(String),
    /// Kiss-o'-death with its code.
    Kiss([u8; 4]),
    /// The server says it has no time.
    Unsynchronised(Packet),
    /// A good reply.
    Good {
        /// Server clock minus local clock, microseconds.
        offset_us: i64,
        /// Round-trip delay less the server's hold time, microseconds.
        delay_us: u64,
        /// The reply's header.
        header: Packet,
    },
}

/// Send one SNTP request on `sock` (connected to `addr`).
///
/// # Errors
/// The OS error of the send.
pub fn send_request(sock: &UdpSocket, addr: SocketAddr) -> Result<Request> {
    let fixed = Cell::new(None);
    let context = NtpContext::new(Stamp {
        fixed: &fixed,
        now: Duration::ZERO,
    });
    let adapter = Adapter {
        sock,
        sent: RefCell::new(Vec::new()),
        reply: RefCell::new(None),
    };
    let sent = sntpc::sync::sntp_send_request(addr, &adapter, context)
        .map_err(|_| Error::io("send SNTP request to", addr, &io::Error::last_os_error()))?;
    let tx = ntp::decode(&adapter.sent.borrow())
        .map(|p| p.transmit_ts)
        .unwrap_or(0);
    Ok(Request { sent, tx })
}

/// Judge datagram `d`, which arrived at `arrived`, as the reply to `req`:
/// the header checked as RFC 4330 asks, then sntpc's validation and
/// arithmetic on a good one.
pub fn judge(
    sock: &UdpSocket,
    addr: SocketAddr,
    req: &Request,
    d: &[u8],
    arrived: SystemTime,
) -> Judged {
    let p = match ntp::decode(d) {
        Ok(p) => p,
        Err(ntp::Malformed::Truncated(len)) => {
            return Judged::Bad(format!("a truncated packet of {len} bytes"));
        }
    };
    match ntp::check_reply(&p, req.tx) {
        Verdict::WrongOrigin => Judged::Stale,
        Verdict::Kiss(code) => Judged::Kiss(code),
        Verdict::Unsynchronised => Judged::Unsynchronised(p),
        Verdict::Good => {
            let fixed = Cell::new(Some(arrived));
            let context = NtpContext::new(Stamp {
                fixed: &fixed,
                now: Duration::ZERO,
            });
            let adapter = Adapter {
                sock,
                sent: RefCell::new(Vec::new()),
                reply: RefCell::new(Some((d.to_vec(), addr))),
            };
            match sntpc::sync::sntp_process_response(addr, &adapter, context, req.sent) {
                Ok(r) => Judged::Good {
                    offset_us: r.offset(),
                    delay_us: r.roundtrip(),
                    header: p,
                },
                Err(e) => Judged::Bad(format!("a reply sntpc refused ({e:?})")),
            }
        }
        other => Judged::Bad(match other {
            Verdict::WrongMode(m) => format!("a packet in mode {m}, not a server reply"),
            Verdict::BadVersion(v) => format!("a packet of version {v}"),
            Verdict::ZeroTransmit => "a reply with a zero transmit time".into(),
            Verdict::BadTimestamps => {
                "a reply whose receive time is zero or after its transmit time".into()
            }
            Verdict::BadStratum(s) => format!("a reply with stratum {s}"),
            _ => "a bad packet".into(),
        }),
    }
}

/// The error for a server that says it has no time.
pub fn unsynchronised(addr: SocketAddr, p: &Packet) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "{addr} is not synchronised: leap {} (alarm), stratum {}, reference {}, version {}, root dispersion {:.3} s",
            p.leap,
            p.stratum,
            ntp::ref_id_text(p.stratum.max(2), p.ref_id),
            p.version,
            ntp::short_to_secs(p.root_dispersion)
        ),
    )
    .with_hint("it has no time source yet: wait for it to synchronise, or ask another server")
}

/// The error for an SNTP port that refused (ICMP port unreachable).
pub fn refused(addr: SocketAddr, e: &io::Error) -> Error {
    Error::io("query", addr, e).with_hint(refused_hint(addr.port()))
}

/// Send one request and wait for its reply until `timeout` passes.
///
/// # Errors
/// `connection-refused` (ICMP port unreachable), `protocol` for an
/// unsynchronised server, `interrupted`, or the OS error.
pub fn query(
    sock: &UdpSocket,
    addr: SocketAddr,
    timeout: Duration,
    ctx: ClientCtx<'_>,
) -> Result<Outcome> {
    let req = send_request(sock, addr)?;
    let deadline = Instant::now() + timeout;
    let (mut bad, mut stale, mut last_bad) = (0u32, 0u32, None);
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        if ctx.interrupted() {
            return Err(interrupted());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Outcome::Lost {
                bad,
                stale,
                last_bad,
            });
        }
        sock.set_read_timeout(Some(
            (deadline - now).min(SLICE).max(Duration::from_micros(100)),
        ))
        .map_err(|e| Error::io("set timeout", addr, &e))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if client::is_wait(&e) => {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(refused(addr, &e));
            }
            Err(e) => return Err(Error::io("receive from", addr, &e)),
        };
        let arrived = SystemTime::now();
        match judge(sock, addr, &req, &buf[..n], arrived) {
            Judged::Stale => stale += 1,
            Judged::Bad(why) => {
                bad += 1;
                last_bad = Some(why);
            }
            Judged::Kiss(code) => return Ok(Outcome::Kiss(code)),
            Judged::Unsynchronised(p) => return Err(unsynchronised(addr, &p)),
            Judged::Good {
                offset_us,
                delay_us,
                header,
            } => {
                return Ok(Outcome::Sample(Sample {
                    offset_us,
                    delay_us,
                    local: arrived,
                    header,
                    bad,
                    stale,
                }));
            }
        }
    }
}

/// What to say when nothing answers NTP on `port`.
fn refused_hint(port: u16) -> String {
    match port {
        123 => "no NTP server there: check the host, or give the port of one (netsh serve answers on 5123 unless --ntp-port 123)".into(),
        5123 => "no SNTP responder there: is 'netsh serve' running on that host?".into(),
        p => format!("nothing answers NTP on port {p} there: check the host and the port"),
    }
}

/// SNTP requests as probes (`monitor sntp://HOST`): each probe one request
/// on a connected, non-blocking UDP socket; a good reply is an intact
/// answer carrying the clock offset, a kiss-o'-death or an invalid reply an
/// error answer, a reply to another request nothing.
pub struct SntpProbe {
    sock: UdpSocket,
    addr: SocketAddr,
    /// Requests in flight, by probe number.
    in_flight: std::collections::BTreeMap<u64, Request>,
    buf: Vec<u8>,
}

impl SntpProbe {
    /// Probes of the server at `addr`.
    ///
    /// # Errors
    /// The OS error making the socket.
    pub fn new(addr: SocketAddr) -> Result<SntpProbe> {
        let sock = socket(addr)?;
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", addr, &e))?;
        Ok(SntpProbe {
            sock,
            addr,
            in_flight: std::collections::BTreeMap::new(),
            buf: vec![0u8; MAX_DATAGRAM],
        })
    }
}

impl Transport for SntpProbe {
    fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()> {
        let fd = self.sock.as_raw_fd();
        registry
            .register(&mut SourceFd(&fd), tokens.token(0), Interest::READABLE)
            .map_err(|e| Error::io("register", self.addr, &e))
    }

    fn send(&mut self, seq: u64, _registry: &Registry) -> Result<Instant> {
        let at = Instant::now();
        match send_request(&self.sock, self.addr) {
            Ok(req) => {
                self.in_flight.insert(seq, req);
                Ok(at)
            }
            // A full send buffer loses the probe, as the network may.
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Ok(at),
            Err(e) => Err(e),
        }
    }

    fn ready(&mut self, _token: Token, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        loop {
            let n = match self.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(refused(self.addr, &e));
                }
                Err(e) => return Err(Error::io("receive from", self.addr, &e)),
            };
            let (at, arrived) = (Instant::now(), SystemTime::now());
            let d = &self.buf[..n];
            let found = self.in_flight.iter().find_map(|(&seq, req)| {
                match judge(&self.sock, self.addr, req, d, arrived) {
                    Judged::Stale => None,
                    j => Some((seq, j)),
                }
            });
            let Some((seq, j)) = found else { continue };
            let (kind, offset_us) = match j {
                Judged::Good { offset_us, .. } => (AnswerKind::Intact, Some(offset_us)),
                Judged::Kiss(code) => (
                    AnswerKind::Error {
                        what: format!("kiss-o'-death {}", String::from_utf8_lossy(&code)),
                    },
                    None,
                ),
                Judged::Unsynchronised(_) => (
                    AnswerKind::Error {
                        what: "not synchronised (leap 3)".into(),
                    },
                    None,
                ),
                Judged::Bad(why) => (AnswerKind::Error { what: why }, None),
                Judged::Stale => continue,
            };
            out.push(Answer {
                seq,
                at,
                kind,
                from: None,
                ttl: None,
                offset_us,
            });
        }
    }

    fn forget(&mut self, seq: u64, _registry: &Registry) {
        self.in_flight.remove(&seq);
    }
}
