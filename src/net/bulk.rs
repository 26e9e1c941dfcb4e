//! Bulk throughput (like iperf3, but every byte is checked): P parallel
//! connections, in one private mio loop, each either writing a known pattern
//! while reading the echo back (`STREAM`), writing it to a server that
//! checks it and sums up (`SINK`), or reading it from the server and checking
//! it (`SOURCE`). Bounded by time or bytes, and by a
//! stall timeout: no progress for the session's timeout is an error.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::net::client::{self, ClientCtx, LineReader};
use crate::net::tls::{Stream as Connection, Wire};
use crate::proto::echo::{self as proto, Reply, Request, SourceLimit, parse_reply};

/// Bytes per write and per read in the one-way modes (iperf3 writes 128
/// KiB); at most the pattern's contiguous span.
const CHUNK: usize = 256 * 1024;
/// Bytes per write in echo mode: the server queues at most 1 MiB of echo
/// per connection, so smaller writes keep both directions moving.
const ECHO_CHUNK: usize = 128 * 1024;
const _: () = assert!(CHUNK <= proto::PATTERN_SPAN && ECHO_CHUNK <= CHUNK);
/// Longest summary line a SINK server may answer.
const MAX_SUMMARY: usize = 1024;
/// Most parallel streams.
pub const MAX_STREAMS: usize = 128;

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the server and back (`STREAM`), checked by the client.
    Echo,
    /// To the server (`SINK`), checked by the server.
    Send,
    /// From the server (`SOURCE`), checked by the client.
    Recv,
}

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
    /// Echo, send or receive.
    pub direction: Direction,
    /// Check every byte (off with `--no-verify`).
    pub verify: bool,
}

/// One reporting interval.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Seconds since the start, interval start.
    pub start_s: f64,
    /// Interval end.
    pub end_s: f64,
    /// Bytes in the interval (all streams): echoed and verified (echo),
    /// written (send), read (recv).
    pub bytes: u64,
    /// Gbit/s over the interval.
    pub gbit_per_s: f64,
}

/// Where a byte first differed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mismatch {
    /// The stream, from 1.
    pub stream: usize,
    /// The byte's offset in that stream's bytes, from 0.
    pub offset: u64,
}

/// One end's figures, like iperf3's `sender` and `receiver` lines.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Side {
    /// Bytes that end moved.
    pub bytes: u64,
    /// Over this long.
    #[serde(rename = "time_s")]
    pub seconds: f64,
    /// Gbit/s.
    pub gbit_per_s: f64,
}

impl Side {
    /// `bytes` over `seconds`.
    pub fn new(bytes: u64, seconds: f64) -> Side {
        let seconds = seconds.max(1e-9);
        Side {
            bytes,
            seconds,
            gbit_per_s: bytes as f64 * 8.0 / seconds / 1e9,
        }
    }
}

/// Totals.
#[derive(Debug, Clone, Serialize)]
pub struct BulkResult {
    /// Server address.
    pub address: String,
    /// `echo`, `send` or `recv`.
    pub direction: Direction,
    /// Whether the bytes were checked.
    pub verified: bool,
    /// Parallel streams.
    pub streams: usize,
    /// From the first byte sent to the last byte received.
    #[serde(rename = "time_s")]
    pub seconds: f64,
    /// Bytes the sender wrote.
    pub bytes_sent: u64,
    /// Bytes the receiver read.
    pub bytes_received: u64,
    /// Bytes that differed from the pattern or never arrived.
    pub mismatched_bytes: u64,
    /// Where the first differing byte was, if any.
    pub first_mismatch: Option<Mismatch>,
    /// Received Gbit/s.
    pub gbit_per_s: f64,
    /// The sending end (the client, or the server for recv).
    pub sender: Side,
    /// The receiving end (the server's own count for send).
    pub receiver: Side,
    /// Figures per report interval (a last one shorter than half an
    /// interval is folded into the one before).
    pub intervals: Vec<Interval>,
    /// True if Ctrl-C cut the run short.
    pub interrupted: bool,
}

struct Stream {
    sock: Wire,
    offset: usize,
    to_send: Option<u64>,
    sent: u64,
    received: u64,
    write_done: bool,
    eof: bool,
    /// Send: the server's summary line as it arrives.
    line: Vec<u8>,
    summary: Option<proto::SinkSummary>,
}

fn stall(what: &str, address: Option<SocketAddr>, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::TimedOut,
        format!(
            "{what} {} stalled: no bytes for {}",
            address.map(|a| a.to_string()).unwrap_or_default(),
            crate::units::format_duration(timeout)
        ),
    )
}

/// Run the plan against `ep`, over connections `open` makes (plain TCP,
/// or TLS with its handshake done); `on_interval` sees each per-second
/// figure.
///
/// # Errors
/// Connection errors; `protocol` if the server does not answer `STREAM`,
/// `SINK` or `SOURCE` with `OK` (or a SINK with its summary); `timed-out` if
/// the bytes stall.
pub fn run(
    plan: &BulkPlan,
    ctx: ClientCtx<'_>,
    open: &mut dyn FnMut() -> Result<(Connection, SocketAddr)>,
    on_interval: &mut dyn FnMut(&Interval),
) -> Result<BulkResult> {
    let dir = plan.direction;
    let mut poll = Poll::new().map_err(|e| Error::io("create poll", "epoll", &e))?;
    let mut streams = Vec::with_capacity(plan.streams);
    let mut address = None::<SocketAddr>;
    let (mut early_bytes, mut early_mismatched, mut early_first) = (0u64, 0u64, None);
    for k in 0..plan.streams {
        let (mut s, addr) = open()?;
        address = Some(addr);
        let to_send = plan.bytes.map(|b| {
            let share = b / plan.streams as u64;
            if k == 0 {
                share + b % plan.streams as u64
            } else {
                share
            }
        });
        let start = proto::bulk_offset(k);
        let req = match dir {
            Direction::Echo => Request::Stream,
            Direction::Send => Request::Sink {
                start,
                verify: plan.verify,
            },
            Direction::Recv => Request::Source {
                start,
                limit: match to_send {
                    Some(n) => SourceLimit::Bytes(n.max(1)),
                    None => SourceLimit::Millis((plan.duration.as_millis() as u64).max(1)),
                },
            },
        };
        let mut r = LineReader::new(1024);
        let line = client::request(&mut s, &mut r, &req, addr, ctx)?;
        if parse_reply(&line) != Reply::Ok {
            return Err(client::unexpected(addr, &req, &line));
        }
        // The pattern may have come in the same read as the OK.
        let rest = r.take_rest();
        let mut sock = s
            .into_wire()
            .map_err(|e| Error::io("set non-blocking", addr, &e))?;
        poll.registry()
            .register(
                sock.socket(),
                Token(k),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| Error::io("register", addr, &e))?;
        if !rest.is_empty() && dir != Direction::Send {
            if plan.verify {
                let (bad, first) = proto::check_pattern(start as u64, &rest);
                if bad > 0 {
                    early_mismatched += bad;
                    if early_first.is_none() {
                        early_first = Some(Mismatch {
                            stream: k + 1,
                            offset: first.unwrap_or(0) as u64,
                        });
                    }
                }
            }
            early_bytes += rest.len() as u64;
        }
        streams.push(Stream {
            sock,
            offset: start,
            to_send,
            sent: 0,
            received: if dir == Direction::Send {
                0
            } else {
                rest.len() as u64
            },
            write_done: dir == Direction::Recv,
            eof: false,
            line: Vec::new(),
            summary: None,
        });
    }

    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; CHUNK];
    let chunk = if dir == Direction::Echo {
        ECHO_CHUNK
    } else {
        CHUNK
    };
    let start = Instant::now();
    let send_until = start + plan.duration;
    let mut last_progress = Instant::now();
    let mut intervals = Vec::new();
    let mut interval_start = start;
    let mut interval_bytes = early_bytes;
    let mut mismatched = early_mismatched;
    let mut first_mismatch = early_first;
    let mut interrupted = false;
    let mut last_byte = start;
    let mut last_write = start;
    let addr_text = || address.map(|a| a.to_string()).unwrap_or_default();

    loop {
        let now = Instant::now();
        if ctx.interrupted() && !interrupted {
            interrupted = true;
        }
        if interrupted && dir == Direction::Recv {
            break; // the close tells the server
        }
        let stop_sending = interrupted || (plan.bytes.is_none() && now >= send_until);
        for st in streams.iter_mut() {
            let done = stop_sending || st.to_send.is_some_and(|n| st.sent >= n);
            if done && !st.write_done {
                st.write_done = true;
                // Half-close: the server echoes what it has (or sums up), then closes.
                st.sock.shutdown_write();
            }
        }
        if streams.iter().all(|s| s.eof) {
            break;
        }
        if now.duration_since(last_progress) > ctx.timeout {
            return Err(match dir {
                Direction::Echo => stall("the echo from", address, ctx.timeout),
                Direction::Send if streams.iter().all(|s| s.write_done) => Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "the server at {} sent no summary within {}",
                        addr_text(),
                        crate::units::format_duration(ctx.timeout)
                    ),
                ),
                Direction::Send => stall("sending to", address, ctx.timeout),
                Direction::Recv => stall("receiving from", address, ctx.timeout),
            });
        }
        let tick = Duration::from_millis(100);
        if let Err(e) = poll.poll(&mut events, Some(tick))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "bulk", &e));
        }
        for (k, st) in streams.iter_mut().enumerate() {
            // Events are hints: try both directions on every stream each turn.
            if st.write_done {
                // TLS records (and the close) still on their way out.
                st.sock
                    .pump()
                    .map_err(|e| Error::io("send to", addr_text(), &e))?;
            }
            while !st.write_done {
                let mut len = chunk;
                if let Some(n) = st.to_send {
                    len = len.min((n - st.sent) as usize);
                }
                if len == 0 {
                    break;
                }
                let data = proto::pattern_at(st.offset as u64 + st.sent, len);
                match st.sock.write(data) {
                    Ok(n) => {
                        st.sent += n as u64;
                        if dir == Direction::Send {
                            interval_bytes += n as u64;
                            last_progress = Instant::now();
                            last_write = last_progress;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("send to", addr_text(), &e)),
                }
                if st.to_send.is_some_and(|n| st.sent >= n) {
                    break;
                }
            }
            if dir == Direction::Send {
                // The server's one summary line, after our half-close.
                while !st.eof {
                    match st.sock.read(&mut buf) {
                        Ok(0) => {
                            return Err(Error::new(
                                ErrorKind::Protocol,
                                format!(
                                    "{} closed stream {} without a summary",
                                    addr_text(),
                                    k + 1
                                ),
                            ));
                        }
                        Ok(n) => {
                            st.line.extend_from_slice(&buf[..n]);
                            if let Some(i) = st.line.iter().position(|&b| b == b'\n') {
                                let line =
                                    st.line[..i].strip_suffix(b"\r").unwrap_or(&st.line[..i]);
                                let Some(sum) = proto::SinkSummary::parse(line) else {
                                    let shown = crate::proto::escape::display_bytes(
                                        &line[..line.len().min(120)],
                                    );
                                    return Err(Error::new(
                                        ErrorKind::Protocol,
                                        format!(
                                            "{} answered SINK's end with '{shown}'",
                                            addr_text()
                                        ),
                                    ));
                                };
                                st.summary = Some(sum);
                                st.eof = true;
                                last_progress = Instant::now();
                            } else if st.line.len() > MAX_SUMMARY {
                                return Err(Error::new(
                                    ErrorKind::Protocol,
                                    format!(
                                        "{} sent a summary line over {MAX_SUMMARY} bytes",
                                        addr_text()
                                    ),
                                ));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io("read from", addr_text(), &e)),
                    }
                }
                continue;
            }
            let mut reads = 0;
            while !st.eof && reads < 64 {
                reads += 1;
                match st.sock.read(&mut buf) {
                    Ok(0) => st.eof = true,
                    Ok(n) => {
                        if plan.verify {
                            let pos = st.offset as u64 + st.received;
                            let (bad, first) = proto::check_pattern(pos, &buf[..n]);
                            if bad > 0 {
                                mismatched += bad;
                                if first_mismatch.is_none() {
                                    first_mismatch = Some(Mismatch {
                                        stream: k + 1,
                                        offset: st.received + first.unwrap_or(0) as u64,
                                    });
                                }
                            }
                        }
                        st.received += n as u64;
                        interval_bytes += n as u64;
                        last_progress = Instant::now();
                        last_byte = last_progress;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("read from", addr_text(), &e)),
                }
            }
            if dir == Direction::Echo && st.received > st.sent {
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
    if dir == Direction::Send {
        last_byte = last_write;
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
    let (sender, receiver, sent, received) = match dir {
        Direction::Echo => {
            let sent: u64 = streams.iter().map(|s| s.sent).sum();
            let received: u64 = streams.iter().map(|s| s.received).sum();
            if received < sent {
                mismatched += sent - received; // bytes that never came back
            }
            let side = Side::new(received, seconds);
            (Side::new(sent, seconds), side, sent, received)
        }
        Direction::Send => {
            let sent: u64 = streams.iter().map(|s| s.sent).sum();
            let mut got = 0u64;
            let mut elapsed = 0u64;
            for (k, st) in streams.iter().enumerate() {
                let Some(sum) = st.summary else { continue };
                got += sum.bytes;
                elapsed = elapsed.max(sum.elapsed_us);
                mismatched += sum.mismatched + st.sent.saturating_sub(sum.bytes);
                let first = sum.first.or((sum.bytes < st.sent).then_some(sum.bytes));
                if first_mismatch.is_none()
                    && let Some(offset) = first
                {
                    first_mismatch = Some(Mismatch {
                        stream: k + 1,
                        offset,
                    });
                }
            }
            let receiver = Side::new(got, elapsed as f64 / 1e6);
            (Side::new(sent, seconds), receiver, sent, got)
        }
        Direction::Recv => {
            let received: u64 = streams.iter().map(|s| s.received).sum();
            // What the server wrote is what arrived before its clean FIN
            // (TCP delivers in order or reports an error); asked-for bytes
            // that never came count as missing.
            let asked: u64 = streams.iter().filter_map(|s| s.to_send).sum();
            let sent = if plan.bytes.is_some() && !interrupted {
                asked
            } else {
                received
            };
            mismatched += sent.saturating_sub(received);
            let side = Side::new(received, seconds);
            (side, side, sent, received)
        }
    };
    Ok(BulkResult {
        address: addr_text(),
        direction: dir,
        verified: plan.verify,
        streams: plan.streams,
        seconds,
        bytes_sent: sent,
        bytes_received: received,
        mismatched_bytes: mismatched,
        first_mismatch,
        gbit_per_s: receiver.gbit_per_s,
        sender,
        receiver,
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
