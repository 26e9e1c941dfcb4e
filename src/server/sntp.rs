//! The SNTP responder of `netsh serve`: answers client requests on UDP from
//! the system clock like chrony's `local stratum 10` (reference ID `LOCL`),
//! so a LAN without internet still has a time source. It never answers with
//! more bytes than it received (replies are 48 bytes; shorter requests are
//! ignored), ignores anything that is not a client request, and can
//! rate-limit a flooding source with a kiss-o'-death `RATE`.
//!
//! On Linux requests are read and answered in batches (`recvmmsg`/`sendmmsg`,
//! see `udp_batch`), and the receive timestamp is the kernel's own
//! (`SO_TIMESTAMPNS`: when the datagram reached the socket); the transmit
//! timestamp is read right before the send. Elsewhere it reads the clock
//! right after `recv_from` and right before `send_to`.

use std::collections::HashMap;
#[cfg(not(target_os = "linux"))]
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use mio::net::UdpSocket;

use crate::proto::ntp::{self, ServerClock};
use crate::server::handle::Stats;

/// Requests handled per readiness event before yielding.
const PER_TURN: usize = 256;
/// Sources remembered by the rate limiter; the table is cleared past this.
const MAX_TRACKED: usize = 4096;

/// How the responder behaves.
#[derive(Debug, Clone, Copy)]
pub struct NtpConfig {
    /// UDP port (0 picks a free one).
    pub port: u16,
    /// Stratum to claim, 1–15.
    pub stratum: u8,
    /// Requests per second allowed per source address; `None` = no limit.
    pub rate_limit: Option<u32>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    last_kod: Option<Instant>,
}

/// Responder state.
pub struct Responder {
    clock: ServerClock,
    rate: Option<u32>,
    buckets: HashMap<IpAddr, Bucket>,
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
            rate: cfg.rate_limit,
            buckets: HashMap::new(),
            #[cfg(target_os = "linux")]
            batch: Box::default(),
        }
    }

    /// The clock it serves (for the start-up line).
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// Answer waiting requests; true if the turn's cap was hit.
    #[cfg(target_os = "linux")]
    pub fn serve(&mut self, sock: &UdpSocket, _buf: &mut [u8], stats: &Stats) -> bool {
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
                let receive_ts = ntp::to_ntp(rx.unwrap_or(now));
                let reply = ntp::reply_to(data, receive_ts, &self.clock);
                let (Some(reply), Some(peer)) = (reply, peer) else {
                    stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
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
    pub fn serve(&mut self, sock: &UdpSocket, buf: &mut [u8], stats: &Stats) -> bool {
        for _ in 0..PER_TURN {
            let (n, peer) = match sock.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => continue,
            };
            let receive_ts = ntp::to_ntp(SystemTime::now());
            stats.ntp_requests.fetch_add(1, Ordering::Relaxed);
            let Some(reply) = ntp::reply_to(&buf[..n], receive_ts, &self.clock) else {
                stats.ntp_ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            };
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
        let Some(rate) = self.rate else {
            return Admit::Yes;
        };
        let now = Instant::now();
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.buckets.clear();
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: f64::from(rate),
            last: now,
            last_kod: None,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * f64::from(rate))
            .min(f64::from(rate));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Admit::Yes;
        }
        // Over the limit: one RATE kiss per second, silence otherwise.
        if b.last_kod
            .is_none_or(|t| now.duration_since(t).as_secs_f64() >= 1.0)
        {
            b.last_kod = Some(now);
            Admit::Kiss
        } else {
            Admit::Drop
        }
    }
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
            rate_limit: Some(2),
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
}
