//! `echo`: reachability and quality against a netsh server.
//!
//! - `echo [HOST[:PORT]] MESSAGE`: one exchange, with an exact
//!   comparison (first differing byte offset, exit status 3 on a mismatch);
//! - probe mode (`-c`, `-i`, `-s`, `-w`, `--udp`), like ping: a line per
//!   probe, then loss/corrupt/duplicate/reordered and RTT min/avg/max/mdev
//!   and p50/p90/p99/p99.9. Each probe waits at most `set timeout`;
//! - `--bulk` (`-t`/`-n`, `-P`), like iperf3: per-second lines and a total,
//!   every byte checked (`--no-verify` to compare with iperf3): a round trip
//!   (`--echo`, the default), one way (`--send`, `-R`) with sender and
//!   receiver lines, or UDP (`--udp -b RATE -l LEN`) with loss, jitter and
//!   out-of-order from the server's count.

use std::time::{Duration, Instant};

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{Command, args_of, probe_args};
use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::bulk::{self, BulkPlan, BulkResult, Direction};
use crate::net::bulk_udp::{self, UdpBulkResult, UdpPlan};
use crate::net::client::{self, ClientCtx, LineReader};
use crate::net::echo::{TcpEcho, UdpEcho};
use crate::net::probe::{self, Event, Plan, Status, Transport};
use crate::paint::Paint;
use crate::proto::echo::{self as proto, Reply, Request};
use crate::proto::escape::display_bytes;
use crate::report::Report;
use crate::session::Session;
use crate::units;

/// Most probes in one run.
const MAX_COUNT: u64 = 1_000_000;
/// Largest probe payload (TCP line or UDP datagram).
const MAX_SIZE: usize = 65_000;
/// The message when none is given (and no `-c`).
const DEFAULT_MESSAGE: &str = "Hello";
/// Shortest `-i` between bulk reports.
const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// `echo` words.
#[derive(Debug, Args)]
struct EchoArgs {
    /// [HOST[:PORT]] then MESSAGE words. One word with no '.' or ':' is a
    /// message to the server of 'set server'; write HOST:PORT for bare names
    #[arg(value_name = "HOST[:PORT]] [MESSAGE", num_args = 0..)]
    words: Vec<String>,
    /// Probe mode: send COUNT probes [without -c and a message: one 'Hello']
    #[arg(short = 'c', long, value_name = "COUNT", conflicts_with = "bulk",
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    count: Option<u64>,
    /// Time between probes (1s, 200ms, 0 for back to back); with --bulk,
    /// between reports (at least 100ms)
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "1s", value_parser = probe_args::interval)]
    interval: Duration,
    /// Probe payload size in bytes
    #[arg(short = 's', long, value_name = "SIZE", default_value_t = 56, conflicts_with = "bulk",
          value_parser = clap::value_parser!(u32).range(16..=MAX_SIZE as i64))]
    size: u32,
    /// Stop after this long, whatever the count: 10s
    #[arg(short = 'w', long, value_name = "DEADLINE", conflicts_with = "bulk", value_parser = probe_args::deadline)]
    deadline: Option<Duration>,
    /// Probe over UDP (datagrams echoed verbatim) instead of TCP; with
    /// --bulk, a UDP throughput test (client to server, like iperf3 -u)
    #[arg(short = 'u', long)]
    udp: bool,
    /// Throughput mode: stream bytes and check every byte
    #[arg(long)]
    bulk: bool,
    /// Bulk --udp: bit rate (500M, 1G; 0 for as fast as possible)
    #[arg(short = 'b', long = "bitrate", value_name = "RATE", default_value = "1M",
          requires = "udp", value_parser = bulk_udp::parse_rate)]
    bitrate: u64,
    /// Bulk --udp: bytes per datagram, header included
    #[arg(short = 'l', long = "length", value_name = "BYTES", default_value_t = 1448, requires = "udp",
          value_parser = clap::value_parser!(u32).range(bulk_udp::MIN_LENGTH as i64..=bulk_udp::MAX_LENGTH as i64))]
    length: u32,
    /// Bulk --udp: one datagram per send call (no UDP GSO batches), to
    /// measure what GSO gives
    #[arg(long, requires = "udp")]
    no_gso: bool,
    /// Bulk: seconds to send
    #[arg(short = 't', long = "time", value_name = "SECONDS", default_value = "5", requires = "bulk",
          value_parser = parse_bulk_time)]
    time: Duration,
    /// Bulk: send this many bytes instead (e.g. 100M)
    #[arg(short = 'n', long = "bytes", value_name = "BYTES", requires = "bulk", value_parser = parse_bulk_bytes)]
    bytes: Option<u64>,
    /// Bulk: one way, client to server (the server checks and reports)
    #[arg(long, requires = "bulk", conflicts_with_all = ["recv", "echo"])]
    send: bool,
    /// Bulk: one way, server to client (the client checks)
    #[arg(short = 'R', long, requires = "bulk", conflicts_with = "echo")]
    recv: bool,
    /// Bulk: to the server and back, checked (the default)
    #[arg(long, requires = "bulk")]
    echo: bool,
    /// Bulk: do not check the bytes (to compare with iperf3 on equal terms)
    #[arg(long, requires = "bulk")]
    no_verify: bool,
    /// Bulk: parallel streams
    #[arg(short = 'P', long = "parallel", value_name = "STREAMS", default_value_t = 1, requires = "bulk",
          value_parser = clap::value_parser!(u32).range(1..=bulk::MAX_STREAMS as i64))]
    parallel: u32,
    #[command(flatten)]
    tls: crate::cmd::tls_args::TlsArgs,
}

fn parse_bulk_time(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(100), Duration::from_secs(3600))
}

fn parse_bulk_bytes(s: &str) -> std::result::Result<u64, String> {
    let n = units::parse_bytes(s)?;
    if n == 0 || n > 1 << 40 {
        return Err(format!("'{s}' is out of range (1 byte-1TiB)"));
    }
    Ok(n)
}

/// The `echo` command.
pub struct Echo;

impl Command for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn summary(&self) -> &'static str {
        "Against a netsh server: one message, ping-like probes (-c, --udp), throughput (--bulk)"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        EchoArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: EchoArgs = args_of(m)?;
        if a.words.len() == 1 && a.words[0] == "?" {
            return Ok(Report::Help(crate::cmd::help::HelpReport::command(self)));
        }
        let given = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        let (ep, message) =
            target_and_message(&a.words, &a.tls.default_server(s), a.tls.default_port())?;
        if a.tls.on() && (a.count.is_some() || a.udp) {
            return Err(Error::usage(
                "over TLS, echo sends one message or a --bulk test; -c and --udp are plain for now",
            )
            .with_hint("echo --tls HOST[:PORT] MESSAGE, or echo --tls HOST[:PORT] --bulk"));
        }
        let interrupt = std::sync::Arc::clone(&s.interrupt);
        let ctx = s.settings.client_ctx(&interrupt);
        let report = if a.bulk && a.udp {
            if message.is_some() {
                return Err(Error::usage("echo --bulk takes no message")
                    .with_hint("echo HOST[:PORT] --bulk --udp -b 100M"));
            }
            if a.recv || a.echo || a.parallel > 1 {
                return Err(Error::usage(
                    "echo --bulk --udp sends from client to server, one flow (no -R, --echo, -P)",
                )
                .with_hint("echo HOST[:PORT] --bulk --udp -b 100M -t 5"));
            }
            let plan = UdpPlan {
                rate_bps: a.bitrate,
                length: a.length as usize,
                duration: a.time,
                bytes: a.bytes,
                interval: a.interval.max(MIN_REPORT_INTERVAL),
                gso: !a.no_gso,
            };
            s.emit(&format!(
                "Sending UDP to {ep} at {}, {}-byte datagrams ...",
                if plan.rate_bps == 0 {
                    "full speed".to_string()
                } else {
                    format!("{:.2} Mbit/s", plan.rate_bps as f64 / 1e6)
                },
                plan.length
            ))
            .ok();
            let r = bulk_udp::run(&ep, &plan, ctx, &mut |iv| {
                let mut line = format!(
                    "[UDP] {:6.2}-{:6.2} sec  {:>10}  {:9.2} Mbit/s  {} datagrams",
                    iv.start_s,
                    iv.end_s,
                    units::size(iv.bytes),
                    iv.mbit_per_s,
                    iv.datagrams
                );
                // The server's side of the interval, as iperf3's server prints it.
                if let (Some(got), Some(lost), Some(ooo), Some(jitter)) =
                    (iv.received, iv.lost, iv.out_of_order, iv.jitter_ms)
                {
                    let total = got + lost;
                    let pct = if total > 0 {
                        lost as f64 * 100.0 / total as f64
                    } else {
                        0.0
                    };
                    line.push_str(&format!(
                        "  | server: {jitter:.3} ms jitter  {lost}/{total} ({pct:.2}%) lost  {ooo} out of order"
                    ));
                }
                s.emit(&line).ok();
            });
            EchoReport::BulkUdp(BulkUdpReport {
                mode: Mode::BulkUdp,
                target: ep.to_string(),
                result: r?,
            })
        } else if a.bulk {
            if message.is_some() {
                return Err(Error::usage("echo --bulk takes no message")
                    .with_hint("echo HOST[:PORT] --bulk -t 5 -P 2"));
            }
            if given("interval") && a.interval < MIN_REPORT_INTERVAL {
                return Err(Error::bad_value(format!(
                    "echo --bulk -i {}: reports come at most every 100ms",
                    units::format_duration(a.interval)
                )));
            }
            let plan = BulkPlan {
                streams: a.parallel as usize,
                duration: a.time,
                bytes: a.bytes,
                interval: a.interval.max(MIN_REPORT_INTERVAL),
                direction: if a.send {
                    Direction::Send
                } else if a.recv {
                    Direction::Recv
                } else {
                    Direction::Echo
                },
                verify: !a.no_verify,
            };
            let (verb, prep) = match plan.direction {
                Direction::Echo => ("Streaming", "to"),
                Direction::Send => ("Sending", "to"),
                Direction::Recv => ("Receiving", "from"),
            };
            s.emit(&format!(
                "{verb} {prep} {ep}{} with {}, {} ...",
                if a.tls.on() { " over TLS" } else { "" },
                units::plural(plan.streams as u64, "stream"),
                if plan.verify {
                    "every byte checked"
                } else {
                    "bytes not checked"
                }
            ))
            .ok();
            // Each report as it comes, flushed, as iperf3 prints them. Both
            // the connect (its notes, a first-use fingerprint) and the
            // reports speak through the session, one at a time.
            let session = std::cell::RefCell::new(&mut *s);
            let r = bulk::run(
                &plan,
                ctx,
                &mut || {
                    let mut s = session.borrow_mut();
                    let (c, addr, _) = crate::cmd::tls_args::connect(&ep, ctx, &a.tls, &mut s)?;
                    Ok((c, addr))
                },
                &mut |iv| {
                    session
                        .borrow_mut()
                        .emit(&format!(
                            "[SUM] {:6.2}-{:6.2} sec  {:>10}  {:7.2} Gbit/s",
                            iv.start_s,
                            iv.end_s,
                            units::size(iv.bytes),
                            iv.gbit_per_s
                        ))
                        .ok();
                },
            );
            EchoReport::Bulk(BulkReport {
                mode: Mode::Bulk,
                target: ep.to_string(),
                result: r?,
            })
        } else if a.count.is_none() {
            if a.udp {
                return Err(
                    Error::usage("a message is echoed over TCP; --udp is for probe mode")
                        .with_hint("echo HOST[:PORT] --udp -c 10"),
                );
            }
            if let Some(flag) = ["interval", "size", "deadline"]
                .into_iter()
                .find(|f| given(f))
            {
                return Err(Error::usage(format!(
                    "echo of one message: --{flag} is for probe mode (-c)"
                ))
                .with_hint("echo HOST[:PORT] -c 10 -i 200ms"));
            }
            let msg = message.as_deref().unwrap_or(DEFAULT_MESSAGE);
            single(&ep, msg, ctx, &a.tls, s)?
        } else {
            if message.is_some() {
                return Err(Error::usage("probe mode (-c) takes no message")
                    .with_hint("echo HOST[:PORT] -c 10 -s 64"));
            }
            let plan = Plan {
                count: a.count.unwrap_or(1),
                first_seq: 1,
                interval: a.interval,
                deadline: a.deadline,
                timeout: ctx.timeout,
                // One probe in flight: the next waits for this one's answer.
                await_previous: Some(ctx.timeout),
                progress: None,
                light: false,
            };
            probes(&ep, &plan, a.size as usize, a.udp, ctx, s)?
        };
        Ok(Report::Echo(report))
    }
}

/// Split the words into target and message (see the `words` help).
fn target_and_message(
    words: &[String],
    default: &Endpoint,
    port: u16,
) -> Result<(Endpoint, Option<String>)> {
    let looks_like_host = |w: &str| w.contains('.') || w.contains(':') || w == "localhost";
    let (ep, rest) = match words.split_first() {
        None => (default.clone(), &words[..0]),
        Some((first, rest)) if !rest.is_empty() || looks_like_host(first) => {
            (Endpoint::parse(first, port)?, rest)
        }
        Some(_) => (default.clone(), words),
    };
    let message = (!rest.is_empty()).then(|| rest.join(" "));
    if let Some(m) = &message
        && (m.contains('\n') || m.contains('\r'))
    {
        return Err(Error::bad_value(
            "the message has a line break; one line is one message",
        ));
    }
    if message
        .as_ref()
        .is_some_and(|m| m.len() > proto::MAX_LINE - 5)
    {
        return Err(Error::bad_value(format!(
            "the message is over {} bytes",
            proto::MAX_LINE - 5
        )));
    }
    Ok((ep, message))
}

/// One exchange: connect, send one ECHO, compare.
fn single(
    ep: &Endpoint,
    msg: &str,
    ctx: ClientCtx<'_>,
    tls: &crate::cmd::tls_args::TlsArgs,
    s: &mut Session,
) -> Result<EchoReport> {
    s.emit(&format!("Connecting to {ep} ...")).ok();
    let (mut sock, addr, connect) = crate::cmd::tls_args::connect(ep, ctx, tls, s)?;
    s.emit(if sock.is_tls() {
        "Connected to server (TLS)."
    } else {
        "Connected to server."
    })
    .ok();
    s.emit(&format!("Sent: {}", display_bytes(msg.as_bytes())))
        .ok();
    let mut reader = LineReader::new(proto::MAX_LINE + 64);
    let req = Request::Echo(msg.as_bytes());
    let t = Instant::now();
    let line = client::request(&mut sock, &mut reader, &req, addr, ctx)?;
    let rtt = t.elapsed();
    let _ = client::send(&mut sock, &Request::Quit, ctx);
    s.emit(&format!("Received: {}", display_bytes(&line))).ok();
    let Reply::Echo(text) = proto::parse_reply(&line) else {
        return Err(client::unexpected(addr, &req, &line));
    };
    let diff = proto::first_difference(msg.as_bytes(), text);
    Ok(EchoReport::Single(SingleReport {
        mode: Mode::Single,
        target: ep.to_string(),
        address: addr.to_string(),
        connect_ms: ms(connect),
        rtt_ms: ms(rtt),
        sent: msg.to_string(),
        received: String::from_utf8_lossy(text).into_owned(),
        matches: diff.is_none(),
        first_difference: diff,
    }))
}

/// Probe mode: one probe in flight at a time, each waiting at most `set
/// timeout`, on one TCP connection or a connected UDP socket.
fn probes(
    ep: &Endpoint,
    plan: &Plan,
    size: usize,
    udp: bool,
    ctx: ClientCtx<'_>,
    s: &mut Session,
) -> Result<EchoReport> {
    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
    let (mut transport, addr, connect_ms): (Box<dyn Transport>, _, _) = if udp {
        let (u, a) = client::udp_connect_within(ep, ctx)?;
        (Box::new(UdpEcho::new(u, a, size)?), a, None)
    } else {
        let (t, a, c) = client::connect_noting(ep, ctx, &mut |l| {
            s.emit(l).ok();
        })?;
        (Box::new(TcpEcho::new(t, a, size)?), a, Some(ms(c)))
    };
    s.emit(&format!(
        "ECHO {ep} ({addr}) over {protocol}: {} probes of {size} bytes",
        plan.count
    ))
    .ok();
    let timeout = units::format_duration(ctx.timeout);
    let summary = probe::run(transport.as_mut(), plan, size, ctx, &mut |ev| {
        if let Event::Settled(p) = ev {
            s.emit(&probe_line(p, &timeout)).ok();
        }
    });
    Ok(EchoReport::Probe(ProbeReport {
        mode: Mode::Probe,
        target: ep.to_string(),
        address: addr.to_string(),
        protocol,
        connect_ms,
        summary: summary?,
    }))
}

/// `seq=3 bytes=56 rtt=0.061 ms`, or what became of the probe.
fn probe_line(p: &probe::Probe, timeout: &str) -> String {
    match (p.status, p.rtt_ms) {
        (Status::Ok, Some(rtt)) => format!("seq={} bytes={} rtt={rtt:.3} ms", p.seq, p.bytes),
        (Status::Corrupt, _) => format!(
            "seq={} bytes={} corrupt: first difference at byte {}",
            p.seq,
            p.bytes,
            p.first_difference.unwrap_or(0)
        ),
        _ => format!(
            "seq={} bytes={} lost (no echo in {timeout})",
            p.seq, p.bytes
        ),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One message, compared byte for byte.
#[derive(Debug, Serialize)]
pub struct SingleReport {
    /// `single`.
    pub mode: Mode,
    /// As given.
    pub target: String,
    /// The address connected to.
    pub address: String,
    /// TCP connect time.
    pub connect_ms: f64,
    /// From sending the line to the echo.
    pub rtt_ms: f64,
    /// The message.
    pub sent: String,
    /// The echoed text (after `ECHO_RESPONSE:`).
    pub received: String,
    /// Whether it came back byte for byte.
    pub matches: bool,
    /// Offset into the message of the first differing byte.
    pub first_difference: Option<usize>,
}

/// Which of `echo`'s three modes a report is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One message, compared byte for byte.
    Single,
    /// Ping-like probes.
    Probe,
    /// Throughput.
    Bulk,
    /// UDP throughput.
    #[serde(rename = "bulk_udp")]
    BulkUdp,
}

/// The transport of probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `ECHO` lines on one TCP connection.
    Tcp,
    /// Datagrams.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Probe mode.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// `probe`.
    pub mode: Mode,
    /// As given.
    pub target: String,
    /// The address probed.
    pub address: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// TCP connect time; `null` for UDP.
    pub connect_ms: Option<f64>,
    /// Counts, RTT summary and the probes.
    #[serde(flatten)]
    pub summary: probe::Summary,
}

/// Bulk mode.
#[derive(Debug, Serialize)]
pub struct BulkReport {
    /// `bulk`.
    pub mode: Mode,
    /// As given.
    pub target: String,
    /// Figures.
    #[serde(flatten)]
    pub result: BulkResult,
}

/// UDP bulk mode.
#[derive(Debug, Serialize)]
pub struct BulkUdpReport {
    /// `bulk_udp`.
    pub mode: Mode,
    /// As given.
    pub target: String,
    /// Figures.
    #[serde(flatten)]
    pub result: UdpBulkResult,
}

/// What `echo` reports.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EchoReport {
    /// One message.
    Single(SingleReport),
    /// Probes.
    Probe(ProbeReport),
    /// Throughput.
    Bulk(BulkReport),
    /// UDP throughput.
    BulkUdp(BulkUdpReport),
}

impl EchoReport {
    /// An error that should set the exit status although the report prints:
    /// data mismatch (3), or no echo at all (1).
    pub fn failure(&self) -> Option<Error> {
        match self {
            EchoReport::Single(r) if !r.matches => Some(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "echo from {} differs from what was sent, first at byte {}",
                    r.address,
                    r.first_difference.unwrap_or(0)
                ),
            )),
            EchoReport::Probe(r) if r.summary.corrupt > 0 => Some(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "{} of {} echoes from {} came back corrupt",
                    r.summary.corrupt, r.summary.transmitted, r.address
                ),
            )),
            EchoReport::Probe(r)
                if r.summary.received == 0
                    && !r.summary.interrupted
                    && r.summary.transmitted > 0 =>
            {
                Some(Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "no echo from {} for {} probes ({})",
                        r.address, r.summary.transmitted, r.protocol
                    ),
                ))
            }
            EchoReport::Bulk(b) if b.result.mismatched_bytes > 0 => Some(Error::new(
                ErrorKind::Mismatch,
                match b.result.direction {
                    Direction::Echo => format!(
                        "{} of {} echoed bytes from {} differed or were missing",
                        b.result.mismatched_bytes, b.result.bytes_sent, b.result.address
                    ),
                    _ => format!(
                        "{} of {} bytes {} {} differed or were missing{}",
                        b.result.mismatched_bytes,
                        b.result.bytes_sent,
                        if b.result.direction == Direction::Send {
                            "sent to"
                        } else {
                            "received from"
                        },
                        b.result.address,
                        b.result
                            .first_mismatch
                            .map(|m| format!(", first at byte {} of stream {}", m.offset, m.stream))
                            .unwrap_or_default()
                    ),
                },
            )),
            EchoReport::BulkUdp(b) if b.result.bad > 0 => Some(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "{} of {} datagrams to {} arrived with a changed payload",
                    b.result.bad, b.result.datagrams_received, b.result.address
                ),
            )),
            _ => None,
        }
    }

    /// Text form.
    pub fn render(&self, p: &Paint) -> String {
        match self {
            EchoReport::Single(r) if r.matches => format!(
                "{} {}",
                p.green("Connection successful, data matches."),
                p.dim(&format!(
                    "(rtt {:.3} ms, connect {:.3} ms)",
                    r.rtt_ms, r.connect_ms
                ))
            ),
            EchoReport::Single(r) => format!(
                "{} first difference at byte {} of the message",
                p.red("Data does not match:"),
                r.first_difference.unwrap_or(0)
            ),
            EchoReport::Probe(r) => {
                let mut out = p.bold(&format!(
                    "--- {} echo statistics ({}) ---",
                    r.target, r.protocol
                ));
                let loss = format!("{:.1}% loss", r.summary.loss_pct);
                let loss = if r.summary.loss_pct > 0.0 {
                    p.red(&loss)
                } else {
                    p.green(&loss)
                };
                out.push_str(&format!(
                    "\n{} sent, {} received, {loss}, {} corrupt, {} duplicate, {} reordered, time {:.0} ms",
                    r.summary.transmitted, r.summary.received, r.summary.corrupt, r.summary.duplicate, r.summary.reordered, r.summary.time_ms
                ));
                if let Some(s) = &r.summary.rtt {
                    out.push('\n');
                    out.push_str(&s.text());
                }
                if r.summary.interrupted {
                    out.push_str(&p.yellow("\n(interrupted)"));
                }
                out
            }
            EchoReport::BulkUdp(b) => render_udp(&b.result, p),
            EchoReport::Bulk(b) => {
                let r = &b.result;
                if r.direction != Direction::Echo {
                    return render_one_way(r, p);
                }
                let mut out = format!(
                    "{} {:.2} sec  sent {}  received {}  {} ({})",
                    p.bold("[SUM] total"),
                    r.seconds,
                    units::size(r.bytes_sent),
                    units::size(r.bytes_received),
                    p.cyan(&format!("{:.2} Gbit/s", r.gbit_per_s)),
                    units::plural(r.streams as u64, "stream"),
                );
                if r.mismatched_bytes == 0 && !r.verified {
                    out.push_str(&format!(
                        "\n{}",
                        p.yellow("bytes not verified (--no-verify)")
                    ));
                } else if r.mismatched_bytes == 0 {
                    out.push_str(&format!("\n{}", p.green("every echoed byte verified")));
                } else {
                    out.push_str(&format!(
                        "\n{} {} bytes differed or were missing",
                        p.red("MISMATCH:"),
                        r.mismatched_bytes
                    ));
                }
                if r.interrupted {
                    out.push_str(&p.yellow("\n(interrupted)"));
                }
                out
            }
        }
    }
}

/// `--udp`: iperf3's sender and receiver lines, with jitter and loss.
fn render_udp(r: &UdpBulkResult, p: &Paint) -> String {
    let mut out = format!(
        "{} 0.00-{:.2} sec  {:>10}  {}  {} datagrams  sender",
        p.bold("[UDP]"),
        r.sender.seconds,
        units::size(r.sender.bytes),
        p.cyan(&format!("{:9.2} Mbit/s", r.sender.gbit_per_s * 1e3)),
        r.datagrams_sent,
    );
    let loss = format!("{}/{} ({:.2}%)", r.lost, r.datagrams_sent, r.loss_pct);
    let loss = if r.lost > 0 {
        p.red(&loss)
    } else {
        p.green(&loss)
    };
    out.push_str(&format!(
        "\n{} 0.00-{:.2} sec  {:>10}  {}  {:.3} ms jitter  {loss} lost  {} out of order  receiver",
        p.bold("[UDP]"),
        r.receiver.seconds,
        units::size(r.receiver.bytes),
        p.cyan(&format!("{:9.2} Mbit/s", r.receiver.gbit_per_s * 1e3)),
        r.jitter_ms,
        r.out_of_order,
    ));
    if r.bad == 0 {
        out.push_str(&format!(
            "\n{}",
            p.green("every datagram received verified by the server")
        ));
    } else {
        out.push_str(&format!(
            "\n{} {} datagrams had a changed payload",
            p.red("MISMATCH:"),
            r.bad
        ));
    }
    if r.interrupted {
        out.push_str(&p.yellow("\n(interrupted)"));
    }
    out
}

/// `--send` and `--recv`: iperf3's two lines, then the check.
fn render_one_way(r: &BulkResult, p: &Paint) -> String {
    let line = |side: &bulk::Side, who: &str| {
        format!(
            "{} 0.00-{:.2} sec  {:>10}  {}  {who}",
            p.bold("[SUM]"),
            side.seconds,
            units::size(side.bytes),
            p.cyan(&format!("{:7.2} Gbit/s", side.gbit_per_s)),
        )
    };
    let mut out = format!(
        "{}\n{}\n{}",
        p.dim(&format!(
            "{} ({})",
            if r.direction == Direction::Send {
                "client to server"
            } else {
                "server to client"
            },
            units::plural(r.streams as u64, "stream")
        )),
        line(&r.sender, "sender"),
        line(&r.receiver, "receiver"),
    );
    if r.mismatched_bytes > 0 {
        out.push_str(&format!(
            "\n{} {} bytes differed or were missing{}",
            p.red("MISMATCH:"),
            r.mismatched_bytes,
            r.first_mismatch
                .map(|m| format!(" (first at byte {} of stream {})", m.offset, m.stream))
                .unwrap_or_default()
        ));
    } else if r.verified {
        out.push_str(&format!(
            "\n{}",
            p.green(if r.direction == Direction::Send {
                "every byte verified by the server"
            } else {
                "every byte verified"
            })
        ));
    } else {
        out.push_str(&format!(
            "\n{}",
            p.yellow("bytes not verified (--no-verify)")
        ));
    }
    if r.interrupted {
        out.push_str(&p.yellow("\n(interrupted)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn target_or_message() {
        let d = Endpoint::parse("127.0.0.1", 5050).unwrap();
        let (e, m) = target_and_message(&w(&["127.0.0.1", "hello", "world"]), &d, 5050).unwrap();
        assert_eq!(
            (e.to_string(), m.as_deref()),
            ("127.0.0.1:5050".into(), Some("hello world"))
        );
        let (e, m) = target_and_message(&w(&["hello"]), &d, 5050).unwrap();
        assert_eq!((e, m.as_deref()), (d.clone(), Some("hello")));
        let (e, m) = target_and_message(&w(&["[::1]:7"]), &d, 5050).unwrap();
        assert_eq!((e.to_string(), m), ("[::1]:7".into(), None));
        assert!(target_and_message(&w(&["bad host!", "x"]), &d, 5050).is_err());
    }
}
