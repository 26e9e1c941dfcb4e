//! ICMP and ICMPv6 echo to any host, as a [`probe::Transport`]: the socket
//! behind `ping`, and behind `trace -M icmp`.
//!
//! The socket is the least privileged one that works, as iputils chooses:
//! a datagram ("ping") socket where `net.ipv4.ping_group_range` admits the
//! process's group (the kernel then owns the identifier and filters replies
//! for us, and ICMP errors arrive on the socket's error queue), else a raw
//! socket where the process has `CAP_NET_RAW` (we filter replies by our
//! identifier, and errors arrive as ICMP messages quoting our request).
//! Otherwise one error names both fixes.
//!
//! Payloads carry the probe's full 64-bit number (ICMP's sequence number
//! has 16 bits) and a filler derived from it, so a reply says which probe
//! it answers and whether any byte changed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, ErrorKind, Result};
use crate::net::probe::{Answer, AnswerKind, Tokens, Transport};
use crate::net::sock;
use crate::proto::echo::first_difference;
use crate::proto::icmp::{self, Family, Message, Transport as Quoted};

/// Datagrams read for one readiness event before the loop goes round (a
/// flood of other hosts' replies on a raw socket cannot hold it).
const READS_PER_EVENT: usize = 1024;
/// Receive buffer of a shared raw socket ([`IcmpHub`]), bytes asked (the
/// kernel doubles it for its bookkeeping).
const HUB_RCVBUF: libc::c_int = 2 << 20;
/// Largest ICMP payload over IPv4 (65535 − 20 − 8); IPv6 allows a little
/// more, but one limit is simpler to state.
pub const MAX_PAYLOAD: usize = 65_507;

/// Which kind of ICMP socket was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    /// An unprivileged datagram ICMP socket (`ping_group_range`).
    Datagram,
    /// A raw socket (`CAP_NET_RAW`).
    Raw,
}

/// Where and how the socket sends.
#[derive(Debug, Clone, Default)]
pub struct SocketOpts {
    /// TTL (hop limit) of the requests.
    pub ttl: Option<u8>,
    /// Send from this interface (a name) or source address.
    pub interface: Option<String>,
}

/// An ICMP socket of one family.
pub struct IcmpSocket {
    sock: Socket,
    /// IPv6 (ICMPv6) rather than IPv4.
    pub v6: bool,
    /// Datagram or raw.
    pub kind: SocketKind,
    /// Our identifier (raw sockets; the kernel picks it for datagram ones).
    ident: u16,
    /// Shared by many targets ([`IcmpHub`]): replies are not filtered by
    /// one identifier here, the hub sorts them by theirs.
    shared: bool,
}

impl IcmpSocket {
    /// Open the least privileged ICMP socket that works for the family.
    ///
    /// # Errors
    /// `permission-denied` naming both fixes when neither kind may be
    /// opened; the OS error otherwise.
    pub fn open(v6: bool, opts: &SocketOpts) -> Result<IcmpSocket> {
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (sock, kind) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, SocketKind::Datagram),
            Err(d) if is_denied(&d) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, SocketKind::Raw),
                Err(r) if is_denied(&r) => return Err(no_icmp_socket()),
                Err(r) => return Err(Error::io("open a raw ICMP socket", family(v6), &r)),
            },
            Err(d) => return Err(Error::io("open an ICMP socket", family(v6), &d)),
        };
        let s = IcmpSocket {
            sock,
            v6,
            kind,
            ident: ident(),
            shared: false,
        };
        s.setup(opts)?;
        Ok(s)
    }

    fn setup(&self, opts: &SocketOpts) -> Result<()> {
        let fd = self.sock.as_raw_fd();
        let what = family(self.v6);
        self.sock
            .set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", what, &e))?;
        // A raw socket reads ICMP errors as the packets they are (and the
        // TTL in the IPv4 header); a datagram socket gets them on its error
        // queue, and the TTL as a control message.
        let options = match (self.kind, self.v6) {
            (SocketKind::Raw, false) => sock::enable_stamps(fd),
            (SocketKind::Raw, true) => {
                sock::enable_stamps(fd).and_then(|()| sock::enable_hop_limit(fd))
            }
            (SocketKind::Datagram, v6) => sock::enable_errors_and_ttl(fd, v6),
        };
        options.map_err(|e| Error::io("set options on", what, &e))?;
        if self.kind == SocketKind::Raw {
            let pass: &[u8] = if self.v6 {
                &[
                    icmp::v6::ECHO_REPLY,
                    icmp::v6::DEST_UNREACH,
                    icmp::v6::PACKET_TOO_BIG,
                    icmp::v6::TIME_EXCEEDED,
                ]
            } else {
                &[
                    icmp::v4::ECHO_REPLY,
                    icmp::v4::DEST_UNREACH,
                    icmp::v4::TIME_EXCEEDED,
                ]
            };
            // Without the filter every ICMP packet is read and dropped here.
            let _ = sock::raw_icmp_filter(fd, self.v6, pass);
        }
        if let Some(ttl) = opts.ttl {
            self.set_ttl(ttl)?;
        }
        if let Some(i) = &opts.interface {
            match i.parse::<IpAddr>() {
                Ok(ip) => {
                    if ip.is_ipv6() != self.v6 {
                        return Err(Error::bad_value(format!("-I {ip}: not an {what} address")));
                    }
                    self.sock
                        .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
                        .map_err(|e| Error::io("bind to", ip, &e))?
                }
                Err(_) => self.sock.bind_device(Some(i.as_bytes())).map_err(|e| {
                    Error::io(
                        "bind to interface",
                        crate::proto::escape::escape_controls(i),
                        &e,
                    )
                    .with_hint("'info' lists the interfaces")
                })?,
            }
        }
        Ok(())
    }

    /// Set the TTL (hop limit) of the next requests.
    ///
    /// # Errors
    /// The OS error.
    pub fn set_ttl(&self, ttl: u8) -> Result<()> {
        sock::set_ttl(self.sock.as_raw_fd(), self.v6, ttl)
            .map_err(|e| Error::io("set the TTL on", family(self.v6), &e))
    }

    /// The identifier replies to a raw socket must carry.
    pub fn ident(&self) -> u16 {
        self.ident
    }

    fn icmp_family(&self) -> Family {
        if self.v6 { Family::V6 } else { Family::V4 }
    }

    /// Send one echo request with `seq` and `payload` to `dst`.
    ///
    /// # Errors
    /// The OS error (`WouldBlock` when the send buffer is full).
    pub fn send_echo(
        &self,
        dst: IpAddr,
        seq: u16,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.send_echo_as(dst, self.ident, seq, payload, out)
    }

    /// [`IcmpSocket::send_echo`] with identifier `ident` (a raw socket
    /// shared by many targets, each with its own).
    ///
    /// # Errors
    /// The OS error.
    pub fn send_echo_as(
        &self,
        dst: IpAddr,
        ident: u16,
        seq: u16,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        out.clear();
        icmp::encode_echo_request(self.icmp_family(), ident, seq, payload, out);
        let to = SockAddr::from(SocketAddr::new(dst, 0));
        match self.sock.send_to(out, &to) {
            // A datagram socket reports an earlier request's ICMP error on
            // the next call, a send too; that reporting clears it (the
            // details wait on the error queue): send again.
            Err(e)
                if self.kind == SocketKind::Datagram
                    && e.raw_os_error().is_some_and(is_icmp_errno) =>
            {
                self.sock.send_to(out, &to).map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    /// Read what waits: echo replies and errors, into `seen` (in order).
    /// Datagrams that are not ours are skipped.
    ///
    /// # Errors
    /// The OS error of a read that is not "nothing waits" or a reported ICMP
    /// error.
    pub fn drain(&self, buf: &mut [u8], seen: &mut Vec<Heard>) -> io::Result<()> {
        self.read(buf, seen, false)
    }

    /// Read what waits until nothing does, or (`first`) until the first
    /// datagram of ours: a look right after a send, which leaves the rest
    /// to the poll (its readiness event is still pending, so nothing is
    /// missed) and saves a system call per probe when replies are prompt.
    fn read(&self, buf: &mut [u8], seen: &mut Vec<Heard>, first: bool) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        for _ in 0..if first { 8 } else { READS_PER_EVENT } {
            match sock::recv(fd, buf) {
                Ok(r) => {
                    if let Some(h) = self.heard(&buf[..r.len], r.from, r.ttl, r.at) {
                        seen.push(h);
                        if first {
                            return Ok(());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A datagram socket reports a queued ICMP error once as the
                // read's error; the details are on the error queue below,
                // and datagrams may still wait behind it.
                Err(e) if e.raw_os_error().is_some_and(is_icmp_errno) => {}
                Err(e) => return Err(e),
            }
        }
        // Only datagram sockets queue ICMP errors; a raw one reads them above.
        while self.kind == SocketKind::Datagram
            && let Some(q) = sock::recv_error(fd, buf)?
        {
            let at = q.at;
            // The queue hands back our own request.
            let Some((_, seq)) = icmp::ident_seq_of_request(&buf[..q.len]) else {
                continue;
            };
            let what = if q.icmp {
                describe(self.v6, q.kind, q.code)
            } else {
                format!("local error: {}", io::Error::from_raw_os_error(q.errno))
            };
            seen.push(Heard::Error {
                ident: 0,
                seq,
                from: q.offender,
                what,
                at,
                kind: q.kind,
                code: q.code,
            });
        }
        Ok(())
    }

    /// What one datagram says, if it is ours.
    fn heard(
        &self,
        data: &[u8],
        from: Option<IpAddr>,
        ttl: Option<u8>,
        at: Instant,
    ) -> Option<Heard> {
        let (msg, ttl, from) = if self.kind == SocketKind::Raw && !self.v6 {
            let (h, msg) = icmp::strip_ipv4_header(data)?;
            (msg, Some(h.ttl), Some(IpAddr::V4(h.src)))
        } else {
            (data, ttl, from)
        };
        let raw = self.kind == SocketKind::Raw;
        match icmp::parse(self.icmp_family(), msg).ok()? {
            Message::EchoReply {
                ident,
                seq,
                payload,
            } => {
                // A raw socket sees every host's replies: ours carry our id.
                (!raw || self.shared || ident == self.ident).then(|| Heard::Reply {
                    ident,
                    seq,
                    payload: payload.to_vec(),
                    from,
                    ttl,
                    at,
                    len: msg.len(),
                })
            }
            Message::TimeExceeded { original, .. }
            | Message::Unreachable { original, .. }
            | Message::TooBig { original, .. } => {
                let Quoted::IcmpEcho { ident, seq } = original.transport else {
                    return None;
                };
                if raw && !self.shared && ident != self.ident {
                    return None;
                }
                let (kind, code) = (msg[0], msg[1]);
                Some(Heard::Error {
                    ident,
                    seq,
                    from,
                    what: describe(self.v6, kind, code),
                    at,
                    kind,
                    code,
                })
            }
            Message::EchoRequest { .. } | Message::Other { .. } => None,
        }
    }

    /// Register with a poll.
    ///
    /// # Errors
    /// The registry's error.
    pub fn register(&self, registry: &Registry, token: Token) -> Result<()> {
        let fd: RawFd = self.sock.as_raw_fd();
        registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .map_err(|e| Error::io("register", family(self.v6), &e))
    }

    /// Leave the poll.
    ///
    /// # Errors
    /// The registry's error.
    pub fn deregister(&self, registry: &Registry) -> Result<()> {
        let fd: RawFd = self.sock.as_raw_fd();
        registry
            .deregister(&mut SourceFd(&fd))
            .map_err(|e| Error::io("deregister", family(self.v6), &e))
    }
}

/// What an ICMP socket read.
#[derive(Debug, Clone)]
pub enum Heard {
    /// An echo reply.
    Reply {
        /// Its identifier (raw sockets; 0 where the kernel matched it).
        ident: u16,
        /// Its 16-bit sequence number.
        seq: u16,
        /// Its payload.
        payload: Vec<u8>,
        /// Who sent it.
        from: Option<IpAddr>,
        /// Its TTL (hop limit).
        ttl: Option<u8>,
        /// When it was read.
        at: Instant,
        /// ICMP bytes (header and payload).
        len: usize,
    },
    /// An ICMP error about one of our requests.
    Error {
        /// The request's identifier (raw sockets; 0 otherwise).
        ident: u16,
        /// The request's 16-bit sequence number.
        seq: u16,
        /// Who sent the error.
        from: Option<IpAddr>,
        /// What it says, as iputils words it.
        what: String,
        /// When it was read.
        at: Instant,
        /// Its ICMP type (for a local error: 0).
        kind: u8,
        /// Its ICMP code.
        code: u8,
    },
}

/// The full probe number of a 16-bit `seq`: the most recent one sent (at
/// most `last`) that ends in those 16 bits.
pub fn unwrap_seq(seq: u16, last: u64) -> u64 {
    let back = u64::from((last as u16).wrapping_sub(seq));
    last.saturating_sub(back)
}

/// The payload of probe `seq`: `NSH1`, its 64-bit number, then a fixed
/// filler (byte `i` is `i mod 256`, as iputils fills), cut to `size`.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size);
    payload_into(seq, size, &mut p);
    p
}

/// [`payload`] into `out` (cleared first).
pub fn payload_into(seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(crate::proto::echo::UDP_MAGIC);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend((out.len()..size).map(|i| i as u8));
    out.truncate(size);
}

/// Where a reply's payload differs from probe `seq`'s, if it does.
fn check_payload(seq: u64, size: usize, got: &[u8], scratch: &mut Vec<u8>) -> Option<usize> {
    payload_into(seq, size, scratch);
    first_difference(scratch, got)
}

/// Echo requests to one host.
pub struct Ping {
    sock: IcmpSocket,
    dst: IpAddr,
    size: usize,
    last_sent: u64,
    buf: Vec<u8>,
    out: Vec<u8>,
    payload: Vec<u8>,
    heard: Vec<Heard>,
    /// In the poll now (see `watch`).
    registered: bool,
    token: Token,
}

impl Ping {
    /// Probes of `size` payload bytes to `dst` on `sock`.
    pub fn new(sock: IcmpSocket, dst: IpAddr, size: usize) -> Ping {
        Ping {
            sock,
            dst,
            size,
            last_sent: 0,
            // The reply (IP header, ICMP header, payload), or an error
            // quoting a request (up to 1,280 bytes for ICMPv6).
            buf: vec![0u8; (size + 128).max(1536)],
            out: Vec::with_capacity(size + 8),
            payload: Vec::with_capacity(size),
            heard: Vec::new(),
            registered: false,
            token: Tokens::ALONE.token(0),
        }
    }

    /// The socket's kind.
    pub fn kind(&self) -> SocketKind {
        self.sock.kind
    }
}

impl Transport for Ping {
    fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()> {
        self.token = tokens.token(0);
        self.watch(registry, true)
    }

    fn watch(&mut self, registry: &Registry, needed: bool) -> Result<()> {
        // Replies that come before the send returns (loopback) are read
        // right after it: out of the poll, each costs no wake-up. Anything
        // that arrives meanwhile waits in the socket for the next read, or
        // for the poll once the socket is back in it.
        if needed != self.registered {
            if needed {
                self.sock.register(registry, self.token)?;
            } else {
                self.sock.deregister(registry)?;
            }
            self.registered = needed;
        }
        Ok(())
    }

    fn send(&mut self, seq: u64, _registry: &Registry) -> Result<Instant> {
        payload_into(seq, self.size, &mut self.payload);
        self.last_sent = seq;
        let at = Instant::now();
        match self
            .sock
            .send_echo(self.dst, seq as u16, &self.payload, &mut self.out)
        {
            // A full send buffer loses the probe, as the network may.
            Ok(()) => Ok(at),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(at),
            Err(e) => Err(Error::io("send an echo request to", self.dst, &e)),
        }
    }

    fn pending(&mut self, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        // On loopback the reply is queued before the send returns.
        self.take(true, out)
    }

    fn ready(&mut self, _token: Token, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        self.take(false, out)
    }
}

impl Ping {
    fn take(&mut self, first: bool, out: &mut Vec<Answer>) -> Result<()> {
        self.sock
            .read(&mut self.buf, &mut self.heard, first)
            .map_err(|e| Error::io("read ICMP from", self.dst, &e))?;
        for h in self.heard.drain(..) {
            if from_the_target(&h, self.dst) {
                out.push(answer_of(h, self.last_sent, self.size, &mut self.payload));
            }
        }
        Ok(())
    }
}

/// Whether `h` may be the target's: identifiers are 16 bits, a raw socket
/// sees every reply on the host and a datagram one every reply carrying its
/// identifier, so another host's reply may carry ours. A reply is ours only
/// from the host we asked; errors come from the hops on the way.
fn from_the_target(h: &Heard, dst: IpAddr) -> bool {
    match h {
        Heard::Reply { from, .. } => from.is_none_or(|f| f == dst),
        Heard::Error { .. } => true,
    }
}

/// What one heard datagram says about probe `seq` (of the last sent).
fn answer_of(h: Heard, last_sent: u64, size: usize, scratch: &mut Vec<u8>) -> Answer {
    match h {
        Heard::Reply {
            seq,
            payload: got,
            from,
            ttl,
            at,
            ..
        } => {
            let seq = unwrap_seq(seq, last_sent);
            let kind = match check_payload(seq, size, &got, scratch) {
                None => AnswerKind::Intact,
                Some(first_difference) => AnswerKind::Corrupt { first_difference },
            };
            Answer {
                seq,
                at,
                kind,
                from,
                ttl,
                offset_us: None,
            }
        }
        Heard::Error {
            seq,
            from,
            what,
            at,
            ..
        } => Answer {
            seq: unwrap_seq(seq, last_sent),
            at,
            kind: AnswerKind::Error { what },
            from,
            ttl: None,
            offset_us: None,
        },
    }
}

/// One raw ICMP socket for many targets (`monitor icmp://…`): a raw
/// socket gets a copy of every ICMP packet, so a socket per target would
/// read every target's replies, a thousand targets a million reads a
/// second. The hub reads each packet once and keeps it for the target
/// whose identifier it carries; each target sends with an identifier of
/// its own. Datagram ICMP sockets need none of this (the kernel sorts
/// their replies), so [`IcmpHub::open`] gives a hub only for a raw one.
pub struct IcmpHub {
    sock: IcmpSocket,
    buf: Vec<u8>,
    heard: Vec<Heard>,
    queues: HashMap<u16, Vec<Heard>>,
    next_ident: u16,
}

impl IcmpHub {
    /// A hub for the family, if this process gets a raw socket (`None` when
    /// it gets a datagram one: then a socket per target costs nothing).
    ///
    /// # Errors
    /// As [`IcmpSocket::open`].
    pub fn open(v6: bool) -> Result<Option<IcmpHub>> {
        let mut sock = IcmpSocket::open(v6, &SocketOpts::default())?;
        if sock.kind != SocketKind::Raw {
            return Ok(None);
        }
        sock.shared = true;
        // A raw socket gets a copy of every ICMP reply on the host, and one
        // hub takes the replies of all its targets: the default 208 KiB
        // (about 200 replies) overflowed on a busy 2-core machine when the
        // process was off the CPU for a moment (/proc/net/raw counted the
        // drops; 61 targets at 40 ms lost 1-4 replies in a third of the
        // runs). Forced past rmem_max where the process may (CAP_NET_ADMIN),
        // else as far as rmem_max allows.
        let fd = sock.sock.as_raw_fd();
        if sock::set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, HUB_RCVBUF).is_err() {
            let _ = sock::set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, HUB_RCVBUF);
        }
        let next_ident = sock.ident;
        Ok(Some(IcmpHub {
            sock,
            buf: vec![0u8; MAX_PAYLOAD + 128],
            heard: Vec::new(),
            queues: HashMap::new(),
            next_ident,
        }))
    }

    /// A fresh identifier for one more target.
    pub fn new_ident(&mut self) -> u16 {
        let i = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        self.queues.insert(i, Vec::new());
        i
    }

    /// A target is gone: drop its queue.
    pub fn release(&mut self, ident: u16) {
        self.queues.remove(&ident);
    }

    /// Register with a poll.
    ///
    /// # Errors
    /// The registry's.
    pub fn register(&self, registry: &Registry, token: Token) -> Result<()> {
        self.sock.register(registry, token)
    }

    /// Read what waits and sort it by identifier; the identifiers that got
    /// something (datagrams for nobody are dropped).
    ///
    /// # Errors
    /// The OS error of the read.
    pub fn read(&mut self) -> io::Result<Vec<u16>> {
        self.sock.drain(&mut self.buf, &mut self.heard)?;
        let mut got = Vec::new();
        for h in self.heard.drain(..) {
            let ident = match &h {
                Heard::Reply { ident, .. } | Heard::Error { ident, .. } => *ident,
            };
            if let Some(q) = self.queues.get_mut(&ident) {
                if q.is_empty() {
                    got.push(ident);
                }
                // Bounded: a target that is never asked keeps at most this.
                if q.len() < 1024 {
                    q.push(h);
                }
            }
        }
        Ok(got)
    }

    fn take(&mut self, ident: u16) -> Vec<Heard> {
        self.queues
            .get_mut(&ident)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// Echo requests to one host through a shared [`IcmpHub`].
pub struct HubPing {
    hub: Rc<RefCell<IcmpHub>>,
    ident: u16,
    dst: IpAddr,
    size: usize,
    last_sent: u64,
    out: Vec<u8>,
    payload: Vec<u8>,
}

impl HubPing {
    /// Probes of `size` payload bytes to `dst` through `hub`.
    pub fn new(hub: Rc<RefCell<IcmpHub>>, dst: IpAddr, size: usize) -> HubPing {
        let ident = hub.borrow_mut().new_ident();
        HubPing {
            hub,
            ident,
            dst,
            size,
            last_sent: 0,
            out: Vec::with_capacity(size + 8),
            payload: Vec::with_capacity(size),
        }
    }

    /// Its identifier: the hub's answers for it carry this.
    pub fn ident(&self) -> u16 {
        self.ident
    }
}

impl Drop for HubPing {
    fn drop(&mut self) {
        if let Ok(mut h) = self.hub.try_borrow_mut() {
            h.release(self.ident);
        }
    }
}

impl Transport for HubPing {
    fn register(&mut self, _registry: &Registry, _tokens: Tokens) -> Result<()> {
        // The hub is in the poll already, under its own token.
        Ok(())
    }

    fn send(&mut self, seq: u64, _registry: &Registry) -> Result<Instant> {
        payload_into(seq, self.size, &mut self.payload);
        self.last_sent = seq;
        let at = Instant::now();
        let hub = self.hub.borrow();
        match hub.sock.send_echo_as(
            self.dst,
            self.ident,
            seq as u16,
            &self.payload,
            &mut self.out,
        ) {
            Ok(()) => Ok(at),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(at),
            Err(e) => Err(Error::io("send an echo request to", self.dst, &e)),
        }
    }

    fn ready(&mut self, _token: Token, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        let heard = self.hub.borrow_mut().take(self.ident);
        for h in heard {
            if from_the_target(&h, self.dst) {
                out.push(answer_of(h, self.last_sent, self.size, &mut self.payload));
            }
        }
        Ok(())
    }
}

fn family(v6: bool) -> &'static str {
    if v6 { "ICMPv6" } else { "ICMP" }
}

fn is_denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// The errors a datagram ICMP socket reports for a queued ICMP error.
fn is_icmp_errno(n: i32) -> bool {
    matches!(
        n,
        libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ECONNREFUSED
            | libc::EPROTO
            | libc::EMSGSIZE
            | libc::EACCES
            | libc::ENOPROTOOPT
    )
}

/// Whether ICMP type `kind` is "time exceeded" (a hop's answer to a trace).
pub fn is_time_exceeded(v6: bool, kind: u8) -> bool {
    kind == if v6 {
        icmp::v6::TIME_EXCEEDED
    } else {
        icmp::v4::TIME_EXCEEDED
    }
}

/// The one error for a process that may open no ICMP socket at all.
pub fn no_icmp_socket() -> Error {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    // SAFETY: getgid has no preconditions.
    let gid = unsafe { libc::getgid() };
    Error::new(
        ErrorKind::Permission,
        format!(
            "cannot open an ICMP socket: group {gid} is outside net.ipv4.ping_group_range ({range}) and netsh has no CAP_NET_RAW"
        ),
    )
    .with_hint(
        "allow unprivileged ping with 'sudo sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"', or give netsh the capability with 'sudo setcap cap_net_raw+ep $(command -v netsh)'",
    )
}

/// An identifier for a raw socket's requests: the process id, mixed with
/// a counter so two pings of one process differ.
fn ident() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16) ^ NEXT.fetch_add(0x9e37, Ordering::Relaxed)
}

/// An ICMP error as iputils words it.
pub fn describe(v6: bool, kind: u8, code: u8) -> String {
    let s = if v6 {
        match (kind, code) {
            (1, 0) => "Destination unreachable: No route",
            (1, 1) => "Destination unreachable: Administratively prohibited",
            (1, 2) => "Destination unreachable: Beyond scope of source address",
            (1, 3) => "Destination unreachable: Address unreachable",
            (1, 4) => "Destination unreachable: Port unreachable",
            (1, _) => "Destination unreachable",
            (2, _) => "Packet too big",
            (3, 0) => "Time exceeded: Hop limit",
            (3, _) => "Time exceeded: Defragmentation failure",
            (4, _) => "Parameter problem",
            _ => return format!("ICMPv6 type {kind} code {code}"),
        }
    } else {
        match (kind, code) {
            (3, 0) => "Destination Net Unreachable",
            (3, 1) => "Destination Host Unreachable",
            (3, 2) => "Destination Protocol Unreachable",
            (3, 3) => "Destination Port Unreachable",
            (3, 4) => "Frag needed and DF set",
            (3, 5) => "Source Route Failed",
            (3, 6) => "Destination Net Unknown",
            (3, 7) => "Destination Host Unknown",
            (3, 9 | 10 | 13) => "Packet filtered",
            (3, _) => "Destination Unreachable",
            (11, 0) => "Time to live exceeded",
            (11, _) => "Frag reassembly time exceeded",
            (12, _) => "Parameter problem",
            _ => return format!("ICMP type {kind} code {code}"),
        }
    };
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_unwrap_to_the_most_recent_probe() {
        assert_eq!(unwrap_seq(5, 5), 5);
        assert_eq!(unwrap_seq(3, 5), 3);
        assert_eq!(unwrap_seq(0xffff, 65_536 + 2), 65_535);
        assert_eq!(unwrap_seq(2, 65_536 + 2), 65_538);
        assert_eq!(unwrap_seq(9, 3), 0, "never before the first");
    }

    #[test]
    fn payloads_carry_the_full_number() {
        let p = payload(70_000, 56);
        assert_eq!(p.len(), 56);
        assert_eq!(&p[4..12], &70_000u64.to_be_bytes());
        assert_eq!(payload(1, 0), b"");
        assert_eq!(payload(1, 4), b"NSH1");
        assert_ne!(payload(1, 56), payload(2, 56));
        assert_eq!(payload(1, 14)[12..], [12, 13]);
        let mut scratch = Vec::new();
        let mut bad = payload(9, 56);
        assert_eq!(check_payload(9, 56, &bad, &mut scratch), None);
        bad[40] ^= 1;
        assert_eq!(check_payload(9, 56, &bad, &mut scratch), Some(40));
    }

    #[test]
    fn errors_are_worded_as_iputils_words_them() {
        assert_eq!(describe(false, 3, 1), "Destination Host Unreachable");
        assert_eq!(describe(false, 11, 0), "Time to live exceeded");
        assert_eq!(
            describe(true, 1, 3),
            "Destination unreachable: Address unreachable"
        );
        assert_eq!(describe(false, 42, 7), "ICMP type 42 code 7");
    }
}
