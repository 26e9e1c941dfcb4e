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

use crate::cmd::probe_args::ProbeArgs;
use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::client;
use crate::net::probe::{self, Event, Status};
use crate::net::tcping::Tcping;
use crate::paint::Paint;
use crate::report::Report;
use crate::session::Session;
use crate::stats::{pct, reply_ms};
use crate::units;

/// Port when none is given.
const DEFAULT_PORT: u16 = 80;
/// Shortest interval: each connect holds a socket while it waits.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// `tcping` words.
#[derive(Debug, Args)]
struct TcpingArgs {
    /// Host and port (port 80 if omitted)
    #[arg(value_name = "HOST:PORT")]
    target: String,
    #[command(flatten)]
    probe: ProbeArgs,
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
        let p = &a.probe;
        if p.interval < MIN_INTERVAL {
            // Each connect holds a socket until it is answered or times out.
            return Err(Error::bad_value(format!(
                "tcping -i {}: the shortest interval is 1ms",
                units::format_duration(p.interval)
            )));
        }
        let addr = client::resolve_one(&ep, p.family(), ctx)?;
        s.emit(&format!("TCPING {ep} ({addr}): TCP handshakes"))
            .ok();
        let plan = p.plan(ctx.timeout, &s.progress);
        let timeout = plan.timeout;
        let mut transport = Tcping::new(addr, ctx.opts);
        let quiet = p.quiet;
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
