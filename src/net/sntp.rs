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

use crate::error::{Error, ErrorKind, Result};
use crate::net::client::{self, ClientCtx, SLICE, interrupted};
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
    let sent_tx = ntp::decode(&adapter.sent.borrow())
        .map(|p| p.transmit_ts)
        .unwrap_or(0);
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
                return Err(Error::io("query", addr, &e).with_hint(refused_hint(addr.port())));
            }
            Err(e) => return Err(Error::io("receive from", addr, &e)),
        };
        let arrived = SystemTime::now();
        let p = match ntp::decode(&buf[..n]) {
            Ok(p) => p,
            Err(ntp::Malformed::Truncated(len)) => {
                bad += 1;
                last_bad = Some(format!("a truncated packet of {len} bytes"));
                continue;
            }
        };
        match ntp::check_reply(&p, sent_tx) {
            Verdict::WrongOrigin => stale += 1,
            Verdict::Kiss(code) => return Ok(Outcome::Kiss(code)),
            Verdict::Unsynchronised => {
                return Err(Error::new(
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
                .with_hint("it has no time source yet: wait for it to synchronise, or ask another server"));
            }
            Verdict::Good => {
                *adapter.reply.borrow_mut() = Some((buf[..n].to_vec(), addr));
                fixed.set(Some(arrived));
                match sntpc::sync::sntp_process_response(addr, &adapter, context, sent) {
                    Ok(r) => {
                        return Ok(Outcome::Sample(Sample {
                            offset_us: r.offset(),
                            delay_us: r.roundtrip(),
                            local: arrived,
                            header: p,
                            bad,
                            stale,
                        }));
                    }
                    Err(e) => {
                        bad += 1;
                        last_bad = Some(format!("a reply sntpc refused ({e:?})"));
                    }
                }
            }
            other => {
                bad += 1;
                last_bad = Some(match other {
                    Verdict::WrongMode(m) => format!("a packet in mode {m}, not a server reply"),
                    Verdict::BadVersion(v) => format!("a packet of version {v}"),
                    Verdict::ZeroTransmit => "a reply with a zero transmit time".into(),
                    Verdict::BadTimestamps => {
                        "a reply whose receive time is zero or after its transmit time".into()
                    }
                    Verdict::BadStratum(s) => format!("a reply with stratum {s}"),
                    _ => "a bad packet".into(),
                });
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
