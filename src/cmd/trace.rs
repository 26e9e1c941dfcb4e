//! `trace HOST`: the path to any host, hop by hop, with traceroute's and
//! mtr's conventions: `-M udp|icmp|tcp`, `-p PORT`, `-q` probes per hop,
//! `-m` max hops, `-f` first hop, `-w` wait, `-n` no names.
//!
//! - By default, one round and traceroute's table (every hop probed at
//!   once, so the whole table takes about the slowest hop's answer);
//! - `--report`: `-c` rounds (10), then mtr's report: per hop loss %, sent,
//!   last/avg/best/worst RTT and deviation;
//! - `--live`: the same table redrawn in place after every round, at a
//!   terminal, until Ctrl-C or `-c` rounds, then the report.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{Command, args_of, probe_args};
use crate::error::{Error, Result};
use crate::net::Endpoint;
use crate::net::client::{self, Family};
use crate::net::trace::{self, Hop, Method, Outcome, Plan, Trace};
use crate::paint::Paint;
use crate::proto::escape::escape_controls;
use crate::report::Report;
use crate::session::Session;
use crate::stats::reply_ms;
use crate::units;

/// Most rounds of `--report` and `--live`.
const MAX_ROUNDS: u32 = 100_000;
/// Rounds of `--report` when `-c` is not given.
const REPORT_ROUNDS: u32 = 10;

/// `trace` words.
#[derive(Debug, Args)]
struct TraceArgs {
    /// Host name or address
    #[arg(value_name = "HOST")]
    host: String,
    /// How probes travel
    #[arg(short = 'M', long, value_enum, default_value = "udp")]
    method: Method,
    /// UDP: the first port (one more per probe) [default: 33434]; TCP: the port [default: 80]
    #[arg(short = 'p', long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Probes per hop per round [default: 3; 1 with --report and --live, as mtr]
    #[arg(short = 'q', long, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..=10))]
    queries: Option<u8>,
    /// The last hop probed
    #[arg(short = 'm', long, value_name = "HOPS", default_value_t = 30,
          value_parser = clap::value_parser!(u8).range(1..=trace::MAX_HOPS as i64))]
    max_hops: u8,
    /// The first hop probed
    #[arg(short = 'f', long, value_name = "HOP", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=trace::MAX_HOPS as i64))]
    first_hop: u8,
    /// How long to wait for each probe's answer [default: 'set timeout']
    #[arg(short = 'w', long, value_name = "WAIT", value_parser = probe_args::wait)]
    wait: Option<Duration>,
    /// Show addresses only (no name lookups)
    #[arg(short = 'n')]
    numeric: bool,
    /// IPv4 only
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// IPv6 only
    #[arg(short = '6')]
    ipv6: bool,
    /// Run rounds (-c, 10) and print mtr's report: loss, last/avg/best/worst per hop
    #[arg(short = 'r', long, conflicts_with = "live")]
    report: bool,
    /// Redraw the report in place after every round (at a terminal), until Ctrl-C or -c rounds
    #[arg(short = 'l', long)]
    live: bool,
    /// Rounds for --report and --live [default: 10 for --report, until Ctrl-C for --live]
    #[arg(short = 'c', long = "cycles", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_ROUNDS as i64))]
    cycles: Option<u32>,
    /// Time between the starts of two rounds
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "1s", value_parser = parse_round_interval)]
    interval: Duration,
}

/// Between two rounds' starts: 10 ms to an hour (every round probes every
/// hop, so no faster).
fn parse_round_interval(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(10), Duration::from_secs(3600))
}

/// How the result is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// traceroute's table of one round.
    Table,
    /// mtr's report after rounds.
    Report,
    /// mtr's live view, then the report.
    Live,
}

/// The `trace` command.
pub struct TraceCmd;

impl Command for TraceCmd {
    fn name(&self) -> &'static str {
        "trace"
    }
    fn summary(&self) -> &'static str {
        "The path to any host hop by hop, like traceroute; --report and --live like mtr"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        TraceArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: TraceArgs = args_of(m)?;
        if a.first_hop > a.max_hops {
            return Err(Error::bad_value(format!(
                "trace -f {} is beyond -m {}",
                a.first_hop, a.max_hops
            )));
        }
        if a.cycles.is_some() && !(a.report || a.live) {
            return Err(Error::usage("trace -c counts rounds of --report or --live")
                .with_hint("trace HOST --report -c 20"));
        }
        let view = if a.live {
            View::Live
        } else if a.report {
            View::Report
        } else {
            View::Table
        };
        if view == View::Live && !(s.terminal.interactive() && s.streaming) {
            return Err(
                Error::usage("trace --live redraws a terminal, and there is none here")
                    .with_hint("use --report for one summary after the rounds"),
            );
        }
        let ep = Endpoint::parse(&a.host, 0)?;
        if ep.port != 0 {
            return Err(Error::bad_value("trace takes a host; the port is -p PORT")
                .with_hint("trace HOST -M tcp -p 443"));
        }
        let interrupt = std::sync::Arc::clone(&s.interrupt);
        let ctx = s.settings.client_ctx(&interrupt);
        let dst = client::resolve_one(&ep, Family::from_flags(a.ipv4, a.ipv6), ctx)?.ip();
        let plan = Plan {
            method: a.method,
            port: a.port.unwrap_or(match a.method {
                Method::Tcp => 80,
                _ => trace::UDP_BASE_PORT,
            }),
            first_hop: a.first_hop,
            max_hops: a.max_hops,
            queries: a.queries.unwrap_or(if view == View::Table { 3 } else { 1 }),
            rounds: match view {
                View::Table => 1,
                View::Report => a.cycles.unwrap_or(REPORT_ROUNDS),
                View::Live => a.cycles.unwrap_or(MAX_ROUNDS),
            },
            interval: a.interval,
            timeout: a.wait.unwrap_or(ctx.timeout),
            names: !a.numeric,
        };
        let head = format!(
            "trace to {} ({dst}), {} hops max, {}",
            ep.host,
            plan.max_hops,
            method_text(&plan)
        );
        s.emit(&head).ok();
        let width = s.terminal.width();
        let mut frame = crate::live::Frame::new();
        let result = trace::run(dst, &plan, ctx, &mut |t| {
            if view == View::Live {
                let lines = report_lines(t, None, width);
                s.emit(&frame.redraw(&lines)).ok();
            }
        });
        if frame.drawn() > 0 {
            // The final report replaces the live frame.
            s.emit(&frame.erase()).ok();
        }
        Ok(Report::Trace(TraceReport {
            target: ep.host,
            view,
            trace: result?,
        }))
    }
}

fn method_text(p: &Plan) -> String {
    match p.method {
        Method::Udp => format!("UDP to ports {}+", p.port),
        Method::Tcp => format!("TCP SYN to port {}", p.port),
        Method::Icmp => "ICMP echo".to_string(),
    }
}

/// What `trace` reports.
#[derive(Debug, Serialize)]
pub struct TraceReport {
    /// The host as given.
    pub target: String,
    /// `table`, `report` or `live`.
    pub view: View,
    /// The hops.
    #[serde(flatten)]
    pub trace: Trace,
}

impl TraceReport {
    /// Text form: traceroute's table, or mtr's report.
    pub fn render(&self, p: &Paint) -> String {
        let t = &self.trace;
        let mut out = match self.view {
            View::Table => table_lines(t).join("\n"),
            View::Report | View::Live => report_lines(t, Some(p), None).join("\n"),
        };
        if !t.reached && !t.interrupted {
            out.push_str(&p.yellow(&format!(
                "\n(no answer from {} within {} hops)",
                t.address, t.max_hops
            )));
        }
        if t.interrupted {
            out.push_str(&p.yellow("\n(interrupted)"));
        }
        out
    }
}

/// `name (addr)`, or the address alone.
fn host_text(name: Option<&str>, a: IpAddr) -> String {
    match name {
        Some(n) => format!("{} ({a})", escape_controls(n)),
        None => a.to_string(),
    }
}

/// traceroute's lines: ` 1  name (addr)  0.123 ms  0.100 ms  *`.
fn table_lines(t: &Trace) -> Vec<String> {
    t.hops
        .iter()
        .map(|h| {
            let mut l = format!("{:>2} ", h.ttl);
            let mut last: Option<IpAddr> = None;
            for pr in &h.probes {
                match (pr.address, pr.rtt_ms) {
                    (Some(a), Some(ms)) => {
                        if last != Some(a) {
                            let name = (Some(a) == h.addresses.first().copied())
                                .then_some(h.name.as_deref())
                                .flatten();
                            l.push_str(&format!(" {}", host_text(name, a)));
                            last = Some(a);
                        }
                        l.push_str(&format!("  {} ms", reply_ms(ms)));
                        if let Some(m) = pr.mark.as_deref().filter(|m| !m.is_empty()) {
                            l.push_str(&format!(" {m}"));
                        }
                    }
                    _ => l.push_str(" *"),
                }
            }
            l
        })
        .collect()
}

/// mtr's report, fitted to `width` when given.
fn report_lines(t: &Trace, p: Option<&Paint>, width: Option<usize>) -> Vec<String> {
    let mut lines = vec![format!(
        "{:>4}  {:<34} {:>6} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "Hop", "Host", "Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev"
    )];
    for h in &t.hops {
        lines.push(hop_line(h, p));
    }
    let end = match (t.reached, t.hops.last()) {
        (true, Some(h)) => format!("reached the host at hop {}", h.ttl),
        _ => "did not reach the host".to_string(),
    };
    lines.push(format!(
        "{} round{}; {end}",
        t.rounds,
        if t.rounds == 1 { "" } else { "s" },
    ));
    if let Some(w) = width {
        for l in &mut lines {
            if l.chars().count() > w {
                *l = l.chars().take(w).collect();
            }
        }
    }
    lines
}

fn hop_line(h: &Hop, p: Option<&Paint>) -> String {
    let host = match h.addresses.first() {
        Some(&a) => {
            let mut s = host_text(h.name.as_deref(), a);
            if h.addresses.len() > 1 {
                s.push_str(&format!(" +{}", h.addresses.len() - 1));
            }
            s
        }
        None => "???".to_string(),
    };
    let host: String = if host.chars().count() > 34 {
        host.chars().take(33).chain(['…']).collect()
    } else {
        host
    };
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    let r = h.rtt.as_ref();
    let loss = format!("{:.1}%", h.loss_pct);
    let loss = match p {
        Some(p) if h.loss_pct > 0.0 => p.red(&format!("{loss:>6}")),
        _ => format!("{loss:>6}"),
    };
    let unreachable = h
        .probes
        .iter()
        .find(|pr| pr.outcome == Outcome::Unreachable)
        .and_then(|pr| pr.mark.clone())
        .filter(|m| !m.is_empty())
        .map(|m| format!(" {m}"))
        .unwrap_or_default();
    format!(
        "{:>4}  {:<34} {loss} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7}{unreachable}",
        h.ttl,
        host,
        h.sent,
        f(h.last_ms),
        f(r.map(|r| r.avg)),
        f(r.map(|r| r.min)),
        f(r.map(|r| r.max)),
        f(r.map(|r| r.mdev)),
    )
}
