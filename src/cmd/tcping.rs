//! `tcping HOST:PORT`: the time to a TCP handshake with any service, with
//! ping's statistics. A reset (`refused`: the host answered, nothing
//! listens) is told apart from silence (`timed out`: a firewall drops the
//! SYN, or no host is there) and from errors (no route).
//!
//! A command of its own rather than `echo --tcp-connect`: it probes any
//! service, not a netsh server, and takes none of echo's words (a message,
//! `--udp`, `--bulk`); its flags are ping's.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::client::{self, Family};
use crate::net::probe::{self, Event, Plan, Status};
use crate::net::tcping::Tcping;
use crate::paint::Paint;
use crate::report::Report;
use crate::session::Session;
use crate::stats::{pct, reply_ms};
use crate::units;

/// Most probes in one run (without `-c`: until Ctrl-C, up to this many).
const MAX_COUNT: u64 = 1_000_000_000;
/// Port when none is given.
const DEFAULT_PORT: u16 = 80;

/// `tcping` words.
#[derive(Debug, Args)]
struct TcpingArgs {
    /// Host and port (port 80 if omitted)
    #[arg(value_name = "HOST:PORT")]
    target: String,
    /// Stop after COUNT connects [default: until Ctrl-C or -w]
    #[arg(short = 'c', long, value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    count: Option<u64>,
    /// Time between connects: 1s, 200ms
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// How long to wait for each handshake [default: 'set timeout']
    #[arg(short = 'W', long = "timeout", value_name = "TIMEOUT", value_parser = parse_wait)]
    timeout: Option<Duration>,
    /// Stop after this long, whatever the count: 10s
    #[arg(short = 'w', long, value_name = "DEADLINE", value_parser = parse_deadline)]
    deadline: Option<Duration>,
    /// Quiet: only the first line and the summary
    #[arg(short = 'q', long)]
    quiet: bool,
    /// IPv4 only
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// IPv6 only
    #[arg(short = '6')]
    ipv6: bool,
}

fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(3600))
}

fn parse_wait(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(3600))
}

fn parse_deadline(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(86_400 * 7))
}

/// The `tcping` command.
pub struct TcpingCmd;

impl Command for TcpingCmd {
    fn name(&self) -> &'static str {
        "tcping"
    }
    fn summary(&self) -> &'static str {
        "Time TCP handshakes to any HOST:PORT, like ping; refused and timed out told apart"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        TcpingArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: TcpingArgs = args_of(m)?;
        let ep = Endpoint::parse(&a.target, DEFAULT_PORT)?;
        let interrupt = std::sync::Arc::clone(&s.interrupt);
        let ctx = s.settings.client_ctx(&interrupt);
        let addr = client::resolve_one(&ep, Family::from_flags(a.ipv4, a.ipv6), ctx)?;
        s.emit(&format!("TCPING {ep} ({addr}): TCP handshakes"))
            .ok();
        let timeout = a.timeout.unwrap_or(ctx.timeout);
        let plan = Plan {
            count: a.count.unwrap_or(MAX_COUNT),
            first_seq: 1,
            interval: a.interval,
            deadline: a.deadline,
            timeout,
            await_previous: None,
            progress: Some(std::sync::Arc::clone(&s.progress)),
        };
        let mut transport = Tcping::new(addr, ctx.opts);
        let quiet = a.quiet;
        let waited = units::format_duration(timeout);
        let summary = probe::run(&mut transport, &plan, 0, ctx, &mut |ev| {
            let line = match ev {
                Event::Settled(p) if !quiet => Some(probe_line(p, addr, &waited)),
                _ => None,
            };
            if let Some(l) = line {
                s.emit(&l).ok();
            }
        })?;
        Ok(Report::Tcping(TcpingReport {
            target: ep.to_string(),
            address: addr,
            summary,
        }))
    }
}

fn probe_line(p: &probe::Probe, addr: SocketAddr, waited: &str) -> String {
    let t = p.rtt_ms.map(reply_ms).unwrap_or_default();
    match p.status {
        Status::Ok => format!("connected to {addr}: seq={} time={t} ms", p.seq),
        Status::Refused => format!(
            "refused by {addr}: seq={} time={t} ms (nothing listens on the port)",
            p.seq
        ),
        Status::Lost => format!("no answer from {addr}: seq={} in {waited}", p.seq),
        Status::Error | Status::Corrupt => format!(
            "{addr}: seq={} {}",
            p.seq,
            p.error.as_deref().unwrap_or("error")
        ),
    }
}

/// What `tcping` reports.
#[derive(Debug, Serialize)]
pub struct TcpingReport {
    /// `HOST:PORT` as given (with the default port).
    pub target: String,
    /// The address connected to.
    pub address: SocketAddr,
    /// Counts (`received` = handshakes completed, `refused` = resets,
    /// `lost` = no answer), RTT of completed handshakes, the probes.
    #[serde(flatten)]
    pub summary: probe::Summary,
}

impl TcpingReport {
    /// An error that sets the exit status although the report prints: no
    /// handshake completed at all.
    pub fn failure(&self) -> Option<Error> {
        let s = &self.summary;
        if s.received > 0 || s.transmitted == 0 || s.interrupted {
            return None;
        }
        let a = self.address;
        Some(if s.refused > 0 {
            Error::new(
                ErrorKind::ConnectionRefused,
                format!(
                    "{a} refused {} of {} connects: the host is up, nothing listens on port {}",
                    s.refused,
                    s.transmitted,
                    a.port()
                ),
            )
            .with_hint("check the port number, or start the service there")
        } else if s.errors > 0 {
            let what = s
                .probes
                .iter()
                .find_map(|p| p.error.as_deref())
                .unwrap_or("error");
            Error::new(
                ErrorKind::Unreachable,
                format!("no connect to {a} succeeded: {what}"),
            )
        } else {
            Error::new(
                ErrorKind::TimedOut,
                format!("no answer from {a} to {} connects", s.transmitted),
            )
            .with_hint(
                "the host is down, or a firewall drops the SYN; raise -W if the path is slow",
            )
        })
    }

    /// Text form: counts that add up, then the RTT of completed handshakes.
    pub fn render(&self, p: &Paint) -> String {
        let s = &self.summary;
        let mut out = p.bold(&format!("--- {} tcping statistics ---", self.target));
        let failed = format!("{}% failed", pct(s.loss_pct));
        let failed = if s.loss_pct > 0.0 {
            p.red(&failed)
        } else {
            p.green(&failed)
        };
        out.push_str(&format!(
            "\n{} connects, {} connected, {} refused, {} timed out, {} errors, {failed}, time {:.0}ms",
            s.transmitted, s.received, s.refused, s.lost, s.errors, s.time_ms
        ));
        if let Some(r) = &s.rtt {
            out.push('\n');
            out.push_str(&r.text());
        }
        if s.interrupted {
            out.push_str(&p.yellow("\n(interrupted)"));
        }
        out
    }
}
