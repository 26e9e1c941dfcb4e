//! The SNTP responder of `netsh serve`: answers client requests on UDP from
//! the system clock like chrony's `local stratum 10` (reference ID `LOCL`),
//! so a LAN without internet still has a time source. It never answers with
//! more bytes than it received (replies are 48 bytes; shorter requests are
//! ignored), ignores anything that is not a client request, never answers
//! a source port an answer could bounce off (see [`limit::could_reflect`];
//! 123 excepted: ntpd asks from it, and no NTP server answers a reply), and
//! rate-limits each source by default ([`DEFAULT_NTP_RATE`], like chrony's
//! `ratelimit`), with a kiss-o'-death `RATE` at most once a second.
//!
//! On Linux requests are read and answered in batches (`recvmmsg`/`sendmmsg`,
//! see `udp_batch`), and the receive timestamp is the kernel's own
//! (`SO_TIMESTAMPNS`: when the datagram reached the socket); the transmit
//! timestamp is read right before the send. Elsewhere it reads the clock
//! right after `recv_from` and right before `send_to`.

#[cfg(not(target_os = "linux"))]
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use mio::net::UdpSocket;

use crate::proto::ntp::{self, ServerClock};
use crate::server::access::Gate;
use crate::server::handle::Stats;
use crate::server::limit::{self, Limiter, Rate, Verdict};

/// Requests handled per readiness event before yielding.
const PER_TURN: usize = 256;
/// Default `--ntp-rate-limit`: 2 requests a second per source with a burst
/// of 16. chrony's `ratelimit` (1 per 8 s, burst 8) is the model, made
/// roomier for a diagnostic tool: `sntp -c 8` and `monitor -i 1 sntp://…`
/// stay under it, a flood gets 2 answers a second and a kiss.
pub const DEFAULT_NTP_RATE: Rate = Rate {
    per_sec: 2.0,
    burst: 16.0,
};

/// How the responder behaves.
#[derive(Debug, Clone, Copy)]
pub struct NtpConfig {
    /// UDP port (0 picks a free one).
    pub port: u16,
    /// Stratum to claim, 1–15.
    pub stratum: u8,
    /// Requests allowed per source; `None` = no limit.
    pub rate_limit: Option<Rate>,
    /// Prefix an IPv6 source is counted under.
    pub v6_prefix: u8,
}

/// Responder state.
pub struct Responder {
    clock: ServerClock,
    limiter: Option<Limiter>,
    #[cfg(target_os = "linux")]
    batch: Box<super::udp_batch::Batch>,
}

impl Responder {
    /// A responder with the clock's precision measured now.
    pub fn new(cfg: &NtpConfig) -> Responder {
        Responder {
            clock: ServerClock {
                stratum: cfg.stratum.clamp(1, 15),
                ref_id: *b"LOCL",
                precision: measure_precision(),
                ref_ts: ntp::to_ntp(SystemTime::now()),
                root_dispersion: ntp::secs_to_short(0.000_5),
            },
            limiter: cfg.rate_limit.map(|r| Limiter::new(r, cfg.v6_prefix)),
            #[cfg(target_os = "linux")]
            batch: Box::default(),
        }
    }

    /// The per-source limit it applies, if any.
    pub fn rate(&self) -> Option<Rate> {
        self.limiter.as_ref().map(Limiter::rate)
    }

    /// The clock it serves (for the start-up line).
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// Answer waiting requests; true if the turn's cap was hit.
    #[cfg(target_os = "linux")]
    pub fn serve(
        &mut self,
        sock: &UdpSocket,
        own_port: u16,
        _buf: &mut [u8],
        stats: &Stats,
        gate: &mut Gate,
    ) -> bool {
        use std::os::fd::AsRawFd;
        let fd = sock.as_raw_fd();
        for _ in 0..PER_TURN / super::udp_batch::BATCH {
            let n = match self.batch.recv(fd) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(_) => return false, // a queued ICMP error and the like: next event
            };
            let now = SystemTime::now();
            stats.ntp_requests.fetch_add(n as u64, Ordering::Relaxed);
            for i in 0..n {
                let (data, peer, rx) = self.batch.get(i);
                if let Some(p) = peer
                    && !gate.admit("SNTP", p.ip())
                {
                    stats.denied_ntp.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let receive_ts = ntp::to_ntp(rx.unwrap_or(now));
                let reply = ntp::reply_to(data, receive_ts, &self.clock);
                let (Some(reply), Some(peer)) = (reply, peer) else {
                    stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if bounces(peer, own_port) {
                    stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match self.admit(peer.ip()) {
                    Admit::Yes => self.batch.reply(i, ntp::encode(&reply)),
                    Admit::Kiss => {
                        stats.ntp_kod.fetch_add(1, Ordering::Relaxed);
                        self.batch.reply(i, ntp::encode(&kiss_for(&reply)));
                    }
                    Admit::Drop => {
                        stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let sent = self.batch.send(fd, ntp::to_ntp(SystemTime::now()));
            stats.ntp_replies.fetch_add(sent as u64, Ordering::Relaxed);
            // No early return on a short batch: clients answer replies at
            // once, so the next request is often already there, and one
            // recvmmsg is cheaper than a trip through epoll to find it.
        }
        true
    }

    /// Answer waiting requests one datagram at a time; true if the turn's cap was hit.
    #[cfg(not(target_os = "linux"))]
    pub fn serve(
        &mut self,
        sock: &UdpSocket,
        own_port: u16,
        buf: &mut [u8],
        stats: &Stats,
        gate: &mut Gate,
    ) -> bool {
        for _ in 0..PER_TURN {
            let (n, peer) = match sock.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => continue,
            };
            let receive_ts = ntp::to_ntp(SystemTime::now());
            stats.ntp_requests.fetch_add(1, Ordering::Relaxed);
            if !gate.admit("SNTP", peer.ip()) {
                stats.denied_ntp.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(reply) = ntp::reply_to(&buf[..n], receive_ts, &self.clock) else {
                stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if bounces(peer, own_port) {
                stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut bytes = match self.admit(peer.ip()) {
                Admit::Yes => ntp::encode(&reply),
                Admit::Kiss => {
                    stats.ntp_kod.fetch_add(1, Ordering::Relaxed);
                    ntp::encode(&kiss_for(&reply))
                }
                Admit::Drop => {
                    stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            ntp::set_transmit(&mut bytes, ntp::to_ntp(SystemTime::now()));
            if sock.send_to(&bytes, peer).is_ok() {
                stats.ntp_replies.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    fn admit(&mut self, ip: IpAddr) -> Admit {
        let Some(l) = &mut self.limiter else {
            return Admit::Yes;
        };
        match l.check(ip, Instant::now()) {
            Verdict::Pass => Admit::Yes,
            // Over the limit: one RATE kiss per second, silence otherwise.
            Verdict::Over { notice: true } => Admit::Kiss,
            Verdict::Over { notice: false } => Admit::Drop,
        }
    }
}

/// A source port no SNTP reply goes to (see [`limit::could_reflect`]),
/// except 123: ntpd sends its client requests from it, and an NTP server
/// there ignores our reply (mode 4), so no loop can start.
fn bounces(peer: SocketAddr, own_port: u16) -> bool {
    peer.port() != 123 && limit::could_reflect(peer, own_port)
}

/// The RATE kiss-o'-death for the request `reply` answers.
fn kiss_for(reply: &ntp::Packet) -> ntp::Packet {
    let req = ntp::Packet {
        version: reply.version,
        transmit_ts: reply.origin_ts,
        ..Default::default()
    };
    ntp::kiss_reply(&req, *b"RATE")
}

enum Admit {
    Yes,
    Kiss,
    Drop,
}

/// The clock's precision as log2 seconds: the smallest step seen between
/// successive readings of the system clock (RFC 5905 §7.3).
pub fn measure_precision() -> i8 {
    let mut best = u128::MAX;
    let mut last = SystemTime::now();
    for _ in 0..2000 {
        let now = SystemTime::now();
        if let Ok(d) = now.duration_since(last) {
            let ns = d.as_nanos();
            if ns > 0 && ns < best {
                best = ns;
            }
        }
        last = now;
    }
    if best == u128::MAX {
        return -20;
    }
    let secs = best as f64 / 1e9;
    secs.log2().ceil().clamp(-32.0, 0.0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_plausible() {
        let p = measure_precision();
        assert!((-32..=-6).contains(&p), "{p}");
    }

    #[test]
    fn rate_limit_kisses_once_then_drops() {
        let mut r = Responder::new(&NtpConfig {
            port: 0,
            stratum: 10,
            rate_limit: Some(Rate {
                per_sec: 2.0,
                burst: 2.0,
            }),
            v6_prefix: 64,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(r.admit(ip), Admit::Yes));
        assert!(matches!(r.admit(ip), Admit::Yes));
        assert!(matches!(r.admit(ip), Admit::Kiss));
        assert!(matches!(r.admit(ip), Admit::Drop));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(
            matches!(r.admit(other), Admit::Yes),
            "limits are per source"
        );
    }

    #[test]
    fn reflecting_source_ports_get_no_reply_but_123_does() {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        for port in [7, 19, 1023, 5123] {
            assert!(bounces(at(port), 5123), "{port}");
        }
        for port in [123, 40000] {
            assert!(!bounces(at(port), 5123), "{port}");
        }
    }
}
