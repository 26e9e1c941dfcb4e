//! Bulk echo throughput (like iperf3, but every byte is checked): P parallel
//! connections in `STREAM` mode, each writing a known pattern while reading
//! the echo back, in one private mio loop. Bounded by time or bytes, and by a
//! stall timeout: no progress for the session's timeout is an error.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::client::{self, ClientCtx, LineReader};
use crate::proto::echo::{self as proto, Reply, Request, parse_reply};

/// Bytes per write and per read. Below `PATTERN_LEN`, so a chunk starting
/// anywhere in the first period stays inside the doubled pattern.
const CHUNK: usize = 60 * 1024;
const _: () = assert!(CHUNK < proto::PATTERN_LEN);
/// Most parallel streams.
pub const MAX_STREAMS: usize = 128;

/// What to run.
pub struct BulkPlan {
    /// Parallel connections.
    pub streams: usize,
    /// Send for this long (if `bytes` is not given).
    pub duration: Duration,
    /// Or send exactly this many bytes in all (split across streams).
    pub bytes: Option<u64>,
    /// Between two interval reports.
    pub interval: Duration,
}

/// One reporting interval.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Seconds since the start, interval start.
    pub start_s: f64,
    /// Interval end.
    pub end_s: f64,
    /// Echoed bytes verified in the interval (all streams).
    pub bytes: u64,
    /// Gbit/s over the interval.
    pub gbit_per_s: f64,
}

/// Where an echoed byte first differed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mismatch {
    /// The stream, from 1.
    pub stream: usize,
    /// The byte's offset in that stream's bytes, from 0.
    pub offset: u64,
}

/// Totals.
#[derive(Debug, Clone, Serialize)]
pub struct BulkResult {
    /// Server address.
    pub address: String,
    /// Parallel streams.
    pub streams: usize,
    /// From the first byte sent to the last byte echoed.
    #[serde(rename = "time_s")]
    pub seconds: f64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Bytes read back.
    pub bytes_received: u64,
    /// Echoed bytes that differed from what was sent.
    pub mismatched_bytes: u64,
    /// Where the first differing byte was, if any.
    pub first_mismatch: Option<Mismatch>,
    /// Received Gbit/s.
    pub gbit_per_s: f64,
    /// Figures per report interval (a last one shorter than half an
    /// interval is folded into the one before).
    pub intervals: Vec<Interval>,
    /// True if Ctrl-C cut the run short.
    pub interrupted: bool,
}

struct Stream {
    sock: TcpStream,
    offset: usize,
    to_send: Option<u64>,
    sent: u64,
    received: u64,
    write_done: bool,
    eof: bool,
}

/// Run the plan against `ep`; `on_interval` sees each per-second figure.
///
/// # Errors
/// Connection errors; `protocol` if the server does not answer `STREAM` with
/// `OK`; `timed-out` if the echo stalls.
pub fn run(
    ep: &Endpoint,
    plan: &BulkPlan,
    ctx: ClientCtx<'_>,
    on_interval: &mut dyn FnMut(&Interval),
) -> Result<BulkResult> {
    let pattern = proto::bulk_pattern();
    let mut poll = Poll::new().map_err(|e| Error::io("create poll", "epoll", &e))?;
    let mut streams = Vec::with_capacity(plan.streams);
    let mut address = None::<SocketAddr>;
    for k in 0..plan.streams {
        let (mut s, addr, _) = client::connect(ep, ctx)?;
        address = Some(addr);
        let mut r = LineReader::new(1024);
        let line = client::request(&mut s, &mut r, &Request::Stream, addr, ctx)?;
        if parse_reply(&line) != Reply::Ok {
            return Err(client::unexpected(addr, &Request::Stream, &line));
        }
        s.set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", addr, &e))?;
        let mut sock = TcpStream::from_std(s);
        poll.registry()
            .register(&mut sock, Token(k), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Error::io("register", addr, &e))?;
        let to_send = plan.bytes.map(|b| {
            let share = b / plan.streams as u64;
            if k == 0 {
                share + b % plan.streams as u64
            } else {
                share
            }
        });
        streams.push(Stream {
            sock,
            offset: proto::bulk_offset(k),
            to_send,
            sent: 0,
            received: 0,
            write_done: false,
            eof: false,
        });
    }

    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let send_until = start + plan.duration;
    let mut last_progress = Instant::now();
    let mut intervals = Vec::new();
    let mut interval_start = start;
    let mut interval_bytes = 0u64;
    let mut mismatched = 0u64;
    let mut first_mismatch = None;
    let mut interrupted = false;
    let mut last_byte = start;

    loop {
        let now = Instant::now();
        if ctx.interrupted() && !interrupted {
            interrupted = true;
        }
        let stop_sending = interrupted || (plan.bytes.is_none() && now >= send_until);
        for st in streams.iter_mut() {
            let done = stop_sending || st.to_send.is_some_and(|n| st.sent >= n);
            if done && !st.write_done {
                st.write_done = true;
                // Half-close: the server echoes what it has, then closes.
                let _ = st.sock.shutdown(Shutdown::Write);
            }
        }
        if streams.iter().all(|s| s.eof) {
            break;
        }
        if now.duration_since(last_progress) > ctx.timeout {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the echo from {} stalled: no bytes for {}",
                    address.map(|a| a.to_string()).unwrap_or_default(),
                    crate::units::format_duration(ctx.timeout)
                ),
            ));
        }
        let tick = Duration::from_millis(100);
        if let Err(e) = poll.poll(&mut events, Some(tick))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "bulk", &e));
        }
        for (k, st) in streams.iter_mut().enumerate() {
            // Events are hints: try both directions on every stream each turn.
            while !st.write_done {
                let pos = ((st.offset as u64 + st.sent) % proto::PATTERN_LEN as u64) as usize;
                let mut len = CHUNK;
                if let Some(n) = st.to_send {
                    len = len.min((n - st.sent) as usize);
                }
                if len == 0 {
                    break;
                }
                match st.sock.write(&pattern[pos..pos + len]) {
                    Ok(n) => st.sent += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::io(
                            "send to",
                            address.map(|a| a.to_string()).unwrap_or_default(),
                            &e,
                        ));
                    }
                }
                if st.to_send.is_some_and(|n| st.sent >= n) {
                    break;
                }
            }
            while !st.eof {
                match st.sock.read(&mut buf) {
                    Ok(0) => st.eof = true,
                    Ok(n) => {
                        let pos =
                            ((st.offset as u64 + st.received) % proto::PATTERN_LEN as u64) as usize;
                        let want = &pattern[pos..pos + n];
                        if want != &buf[..n] {
                            let bad =
                                want.iter().zip(&buf[..n]).filter(|(a, b)| a != b).count() as u64;
                            mismatched += bad;
                            if first_mismatch.is_none() {
                                let off =
                                    proto::first_difference(want, &buf[..n]).unwrap_or(0) as u64;
                                first_mismatch = Some(Mismatch {
                                    stream: k + 1,
                                    offset: st.received + off,
                                });
                            }
                        }
                        st.received += n as u64;
                        interval_bytes += n as u64;
                        last_progress = Instant::now();
                        last_byte = last_progress;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::io(
                            "read from",
                            address.map(|a| a.to_string()).unwrap_or_default(),
                            &e,
                        ));
                    }
                }
            }
            if st.received > st.sent {
                mismatched += st.received - st.sent;
                st.received = st.sent;
            }
        }
        let now = Instant::now();
        if now.duration_since(interval_start) >= plan.interval {
            let iv = interval(start, interval_start, now, interval_bytes);
            on_interval(&iv);
            intervals.push(iv);
            interval_start = now;
            interval_bytes = 0;
        }
    }
    if interval_bytes > 0 {
        let end = last_byte.max(interval_start);
        // A runt (the last echoes after the final report, often a few ms)
        // would show a rate of a few bytes over no time: in the result it
        // is folded into the last interval (whose live line stays as shown).
        let runt = end.duration_since(interval_start) < plan.interval / 2;
        match intervals.pop() {
            Some(prev) if runt => {
                let from = start + Duration::from_secs_f64(prev.start_s);
                let iv = interval(start, from, end, prev.bytes + interval_bytes);
                intervals.push(iv);
            }
            prev => {
                intervals.extend(prev);
                let iv = interval(start, interval_start, end, interval_bytes);
                on_interval(&iv);
                intervals.push(iv);
            }
        }
    }
    let seconds = last_byte.duration_since(start).as_secs_f64().max(1e-9);
    let sent: u64 = streams.iter().map(|s| s.sent).sum();
    let received: u64 = streams.iter().map(|s| s.received).sum();
    if received < sent {
        mismatched += sent - received; // bytes that never came back
    }
    Ok(BulkResult {
        address: address.map(|a| a.to_string()).unwrap_or_default(),
        streams: plan.streams,
        seconds,
        bytes_sent: sent,
        bytes_received: received,
        mismatched_bytes: mismatched,
        first_mismatch,
        gbit_per_s: received as f64 * 8.0 / seconds / 1e9,
        intervals,
        interrupted,
    })
}

fn interval(start: Instant, from: Instant, to: Instant, bytes: u64) -> Interval {
    let secs = to.duration_since(from).as_secs_f64().max(1e-9);
    Interval {
        start_s: from.duration_since(start).as_secs_f64(),
        end_s: to.duration_since(start).as_secs_f64(),
        bytes,
        gbit_per_s: bytes as f64 * 8.0 / secs / 1e9,
    }
}
