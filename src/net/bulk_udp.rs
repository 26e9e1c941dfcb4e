//! UDP bulk throughput (`echo --bulk --udp`), like iperf3 `-u`: a TCP control
//! connection opens a flow (`UDPBULK` → `OK <token>`), datagrams carrying the
//! token, a sequence number and the send time go to the server's UDP port at
//! the asked rate, and `END <sent>` fetches the server's count: received,
//! lost, out of order, bad payloads, RFC 3550 jitter. Bounded by time or
//! bytes; every wait has the session's timeout.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::bulk::Side;
use crate::net::client::{self, ClientCtx, LineReader};
use crate::net::{Endpoint, gso};
use crate::proto::bulk::{self as proto, Header, Summary};
use crate::proto::echo::Request;

/// After the last datagram, this long for the ones in flight before `END`.
const SETTLE: Duration = Duration::from_millis(250);
/// Smallest datagram: the header and a few pattern bytes.
pub const MIN_LENGTH: usize = proto::HEADER + 8;
/// Largest datagram.
pub const MAX_LENGTH: usize = proto::MAX_DATAGRAM;

/// What to run.
pub struct UdpPlan {
    /// Bits per second; 0 for as fast as the socket takes them.
    pub rate_bps: u64,
    /// Bytes per datagram, header included.
    pub length: usize,
    /// Send for this long (if `bytes` is not given).
    pub duration: Duration,
    /// Or this many bytes (whole datagrams, rounded up).
    pub bytes: Option<u64>,
    /// Between two interval reports.
    pub interval: Duration,
    /// Hand the kernel several datagrams per send (UDP GSO) where it can.
    pub gso: bool,
}

/// One reporting interval, the sender's view.
#[derive(Debug, Clone, Serialize)]
pub struct UdpInterval {
    /// Seconds since the start, interval start.
    pub start_s: f64,
    /// Interval end.
    pub end_s: f64,
    /// Datagrams sent in the interval.
    pub datagrams: u64,
    /// Bytes sent in the interval.
    pub bytes: u64,
    /// Mbit/s over the interval.
    pub mbit_per_s: f64,
    /// The server's count at the interval's end (`STATS`), less the one at
    /// its start: datagrams received; `None` if the server does not say.
    pub received: Option<u64>,
    /// Lost in the interval, as iperf3's receiver counts: behind a later
    /// one that came.
    pub lost: Option<u64>,
    /// Came after a later one, in the interval.
    pub out_of_order: Option<u64>,
    /// The server's RFC 3550 jitter at the interval's end, ms.
    pub jitter_ms: Option<f64>,
}

/// Totals.
#[derive(Debug, Clone, Serialize)]
pub struct UdpBulkResult {
    /// Server address.
    pub address: String,
    /// Asked rate, bit/s (0: unlimited).
    pub rate_bps: u64,
    /// Bytes per datagram.
    pub length: usize,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams the server received (each once).
    pub datagrams_received: u64,
    /// Sent but not received.
    pub lost: u64,
    /// `lost` / sent, percent.
    pub loss_pct: f64,
    /// Received after a later one.
    pub out_of_order: u64,
    /// Received with a payload that was not the pattern.
    pub bad: u64,
    /// RFC 3550 inter-arrival jitter at the server, ms.
    pub jitter_ms: f64,
    /// Datagrams sent per second.
    pub datagrams_per_s: f64,
    /// The client's figures.
    pub sender: Side,
    /// The server's figures.
    pub receiver: Side,
    /// Per interval, as sent.
    pub intervals: Vec<UdpInterval>,
    /// Send calls the kernel refused (full buffers), retried later.
    pub send_errors: u64,
    /// Sends that carried several datagrams as one UDP GSO buffer.
    pub gso_sends: u64,
    /// True if Ctrl-C cut the run short.
    pub interrupted: bool,
}

/// Run the plan against `ep`; `on_interval` sees each interval's figures.
///
/// # Errors
/// Connection errors; `protocol` if the server does not open the flow or
/// answer `END`; `timed-out` if it does not answer in time.
pub fn run(
    ep: &Endpoint,
    plan: &UdpPlan,
    ctx: ClientCtx<'_>,
    on_interval: &mut dyn FnMut(&UdpInterval),
) -> Result<UdpBulkResult> {
    let (mut ctl, addr, _) = client::connect(ep, ctx)?;
    let mut reader = LineReader::new(1024);
    let line = client::request(&mut ctl, &mut reader, &Request::UdpBulk, addr, ctx)?;
    let Some(token) = proto::parse_ok(&line) else {
        return Err(client::unexpected(addr, &Request::UdpBulk, &line));
    };
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| Error::usage("bad address"))?
    } else {
        "[::]:0".parse().map_err(|_| Error::usage("bad address"))?
    };
    let sock = UdpSocket::bind(local).map_err(|e| Error::io("bind", local, &e))?;
    sock.connect(addr)
        .map_err(|e| Error::io("connect", addr, &e))?;
    sock.set_write_timeout(Some(ctx.timeout.max(Duration::from_millis(10))))
        .map_err(|e| Error::io("set timeout", addr, &e))?;

    let len = plan.length.clamp(MIN_LENGTH, MAX_LENGTH);
    // Datagrams per send: one, or as many as one GSO buffer holds. The
    // kernel splits the buffer late (on loopback at the receiving socket),
    // so a batch costs about one send; at a set rate only the datagrams
    // already due go together.
    let fd = sock.as_raw_fd();
    let mut per_send = if plan.gso && gso::supported(fd) {
        (gso::MAX_BYTES / len).clamp(1, gso::MAX_SEGMENTS)
    } else {
        1
    };
    let mut buf = vec![0u8; len * per_send];
    let max_count = plan.bytes.map(|b| b.div_ceil(len as u64));
    let ns_per_dgram = if plan.rate_bps > 0 {
        (len as f64 * 8.0 * 1e9 / plan.rate_bps as f64) as u64
    } else {
        0
    };
    let mut server = ServerCount::default();
    let start = Instant::now();
    let end = start + plan.duration;
    let mut seq = 0u64;
    let mut send_errors = 0u64;
    let mut gso_sends = 0u64;
    let mut interrupted = false;
    let mut intervals = Vec::new();
    let mut iv_start = start;
    let mut iv_count = 0u64;
    let mut last_send = start;
    loop {
        if max_count.is_some_and(|m| seq >= m) {
            break;
        }
        if ctx.interrupted() {
            interrupted = true;
            break;
        }
        let now = Instant::now();
        if max_count.is_none() && now >= end {
            break;
        }
        if now.duration_since(iv_start) >= plan.interval {
            let mut iv = interval(start, iv_start, now, iv_count, len);
            server.fill(&mut iv, &mut ctl, &mut reader, addr, ctx);
            on_interval(&iv);
            intervals.push(iv);
            iv_start = now;
            iv_count = 0;
        }
        let since = now.duration_since(start).as_nanos() as u64;
        let mut batch = per_send as u64;
        if ns_per_dgram > 0 {
            let due = seq.saturating_mul(ns_per_dgram);
            if since < due {
                let ahead = due - since;
                if ahead > 200_000 {
                    // Sleep most of the gap; the last part is spun off in
                    // this loop's checks (at most 50 ms a nap: Ctrl-C).
                    std::thread::sleep(Duration::from_nanos((ahead - 100_000).min(50_000_000)));
                }
                continue;
            }
            batch = batch.min(since / ns_per_dgram + 1 - seq);
        }
        if let Some(m) = max_count {
            batch = batch.min(m - seq);
        }
        let n = batch.max(1) as usize;
        for (i, d) in buf.chunks_exact_mut(len).take(n).enumerate() {
            let h = Header {
                token,
                seq: seq + i as u64,
                sent_ns: since,
            };
            proto::encode(d, h);
        }
        let sent = if n > 1 {
            gso::send_segments(fd, &buf[..n * len], len as u16)
        } else {
            sock.send(&buf[..len])
        };
        match sent {
            Ok(_) => {
                seq += n as u64;
                iv_count += n as u64;
                gso_sends += u64::from(n > 1);
                last_send = now;
            }
            Err(e) if n > 1 && (gso::refused(&e) || e.raw_os_error() == Some(libc::EMSGSIZE)) => {
                // This path cannot take GSO (or a buffer this big): one
                // datagram per send from now on.
                per_send = 1;
            }
            Err(e) if retryable(&e) => {
                send_errors += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(Error::io("send to", addr, &e)),
        }
    }
    let seconds = last_send.duration_since(start).as_secs_f64();
    // The last datagrams are in flight or in the server's queue: give them
    // a moment, then ask for the count.
    std::thread::sleep(SETTLE.min(ctx.timeout));
    if iv_count > 0 {
        let mut iv = interval(start, iv_start, last_send.max(iv_start), iv_count, len);
        server.fill(&mut iv, &mut ctl, &mut reader, addr, ctx);
        on_interval(&iv);
        intervals.push(iv);
    }
    let mut line = client::request(&mut ctl, &mut reader, &Request::End(seq), addr, ctx)?;
    if server.owed {
        // The answer to a STATS that timed out came first.
        if Summary::parse_as(proto::STATS, &line).is_some() {
            line = client::read_reply(&mut ctl, &mut reader, &Request::End(seq), addr, ctx)?;
        }
    }
    let Some(sum) = Summary::parse(&line) else {
        return Err(client::unexpected(addr, &Request::End(seq), &line));
    };
    let _ = client::send(&mut ctl, &Request::Quit, ctx);
    Ok(result(
        addr,
        plan,
        len,
        seq,
        seconds,
        sum,
        intervals,
        (send_errors, gso_sends),
        interrupted,
    ))
}

/// The server's count at the last interval report (`STATS`).
#[derive(Default)]
struct ServerCount {
    last: Summary,
    /// The server answered `STATS` with something else: ask no more.
    unsupported: bool,
    /// A `STATS` went unanswered in time: its answer may still come.
    owed: bool,
}

impl ServerCount {
    /// Ask the server for its count and put the interval's share in `iv`.
    /// A server that does not answer in time, or does not know `STATS`, is
    /// asked no more; the run goes on.
    fn fill(
        &mut self,
        iv: &mut UdpInterval,
        ctl: &mut std::net::TcpStream,
        reader: &mut LineReader,
        addr: SocketAddr,
        ctx: ClientCtx<'_>,
    ) {
        if self.unsupported || self.owed {
            return;
        }
        let now = match client::request(ctl, reader, &Request::Stats, addr, ctx) {
            Ok(line) => Summary::parse_as(proto::STATS, &line),
            Err(_) => {
                self.owed = true;
                return;
            }
        };
        let Some(now) = now else {
            self.unsupported = true;
            return;
        };
        iv.received = Some(now.received.saturating_sub(self.last.received));
        iv.lost = Some(now.lost.saturating_sub(self.last.lost));
        iv.out_of_order = Some(now.out_of_order.saturating_sub(self.last.out_of_order));
        iv.jitter_ms = Some(now.jitter_us / 1e3);
        self.last = now;
    }
}

/// A full socket buffer or a passing ICMP error: try again.
fn retryable(e: &io::Error) -> bool {
    const ENOBUFS: i32 = 105;
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
    ) || e.raw_os_error() == Some(ENOBUFS)
}

#[allow(clippy::too_many_arguments)]
fn result(
    addr: SocketAddr,
    plan: &UdpPlan,
    len: usize,
    sent: u64,
    seconds: f64,
    sum: Summary,
    intervals: Vec<UdpInterval>,
    (send_errors, gso_sends): (u64, u64),
    interrupted: bool,
) -> UdpBulkResult {
    let secs = seconds.max(1e-9);
    UdpBulkResult {
        address: addr.to_string(),
        rate_bps: plan.rate_bps,
        length: len,
        datagrams_sent: sent,
        datagrams_received: sum.received,
        lost: sum.lost,
        loss_pct: if sum.total > 0 {
            sum.lost as f64 * 100.0 / sum.total as f64
        } else {
            0.0
        },
        out_of_order: sum.out_of_order,
        bad: sum.bad,
        jitter_ms: sum.jitter_us / 1e3,
        datagrams_per_s: sent as f64 / secs,
        sender: Side::new(sent * len as u64, seconds),
        receiver: Side::new(sum.bytes, sum.elapsed_us as f64 / 1e6),
        intervals,
        send_errors,
        gso_sends,
        interrupted,
    }
}

fn interval(start: Instant, from: Instant, to: Instant, n: u64, len: usize) -> UdpInterval {
    let secs = to.duration_since(from).as_secs_f64().max(1e-9);
    let bytes = n * len as u64;
    UdpInterval {
        start_s: from.duration_since(start).as_secs_f64(),
        end_s: to.duration_since(start).as_secs_f64(),
        datagrams: n,
        bytes,
        mbit_per_s: bytes as f64 * 8.0 / secs / 1e6,
        received: None,
        lost: None,
        out_of_order: None,
        jitter_ms: None,
    }
}

/// Parse a bit rate as iperf3 does: `500M`, `1G`, `100k`, `0` (decimal
/// units, bits per second).
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        _ => {
            return Err(format!(
                "'{}' is not a bit rate (e.g. 500M)",
                s.escape_debug()
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{}' is not a bit rate (e.g. 500M)", s.escape_debug()))?;
    let bps = n * mult;
    if !(0.0..=1e12).contains(&bps) {
        return Err(format!("'{}' is out of range (0-1000G)", s.escape_debug()));
    }
    Ok(bps as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500M"), Ok(500_000_000));
        assert_eq!(parse_rate("1.5g"), Ok(1_500_000_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("100k"), Ok(100_000));
        assert!(parse_rate("x").is_err());
        assert!(parse_rate("5T").is_err());
    }
}
