//! `ping HOST`: ICMP (or ICMPv6) echo to any host, with iputils' flags,
//! lines and summary, plus what netsh adds: percentiles to p99.9, reordering
//! and a payload check. Ctrl-C ends with the summary; Ctrl-\ (SIGQUIT)
//! prints the statistics so far and goes on. Without `-c` it runs until
//! Ctrl-C or the `-w` deadline, as ping does.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::probe_args::ProbeArgs;
use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::client;
use crate::net::ping::{self, IcmpSocket, Ping, SocketKind, SocketOpts};
use crate::net::probe::{self, Event, Plan, Status};
use crate::paint::Paint;
use crate::report::Report;
use crate::session::Session;
use crate::stats::{pct, reply_ms};
use crate::units;

/// Shortest interval for an unprivileged socket, as iputils allows.
const USER_MIN_INTERVAL: Duration = Duration::from_millis(2);
/// With `-i 0`, how long the next request waits for the previous reply
/// (iputils' flood: as fast as replies come, or 100 a second).
const FLOOD_WAIT: Duration = Duration::from_millis(10);

/// `ping` words.
#[derive(Debug, Args)]
struct PingArgs {
    /// Host name or address
    #[arg(value_name = "HOST")]
    host: String,
    #[command(flatten)]
    probe: ProbeArgs,
    /// Payload bytes per request
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value_t = 56,
          value_parser = clap::value_parser!(u32).range(0..=ping::MAX_PAYLOAD as i64))]
    size: u32,
    /// Put the Unix time before each line
    #[arg(short = 'D', long = "timestamps")]
    timestamps: bool,
    /// Say when a reply is still outstanding as the next request leaves
    #[arg(short = 'O', long = "report-outstanding")]
    outstanding: bool,
    /// TTL (hop limit) of the requests
    #[arg(short = 't', long, value_name = "TTL", value_parser = clap::value_parser!(u8).range(1..=255))]
    ttl: Option<u8>,
    /// Send from this interface (name) or source address
    #[arg(short = 'I', long, value_name = "IFACE")]
    interface: Option<String>,
}

/// The `ping` command.
pub struct PingCmd;

impl Command for PingCmd {
    fn name(&self) -> &'static str {
        "ping"
    }
    fn summary(&self) -> &'static str {
        "ICMP echo to any host, like iputils ping (-c -i -s -W -w -q -D -O -t -4 -6 -I)"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        PingArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: PingArgs = args_of(m)?;
        let host = host_only(&a.host)?;
        let interrupt = std::sync::Arc::clone(&s.interrupt);
        let ctx = s.settings.client_ctx(&interrupt);
        let p = &a.probe;
        let addr = client::resolve_one(&host, p.family(), ctx)?.ip();
        let opts = SocketOpts {
            ttl: a.ttl,
            interface: a.interface.clone(),
        };
        let sock = IcmpSocket::open(addr.is_ipv6(), &opts)?;
        if sock.kind == SocketKind::Datagram && p.interval < USER_MIN_INTERVAL {
            return Err(Error::bad_value(format!(
                "ping -i {}: without CAP_NET_RAW the shortest interval is 2ms",
                units::format_duration(p.interval)
            ))
            .with_hint("use -i 2ms or more, or run netsh with CAP_NET_RAW"));
        }
        let size = a.size as usize;
        let kind = sock.kind;
        let ip_header = if addr.is_ipv6() { 40 } else { 20 };
        if addr.is_ipv6() {
            s.emit(&format!("PING {} ({addr}) {size} data bytes", host.host))
                .ok();
        } else {
            s.emit(&format!(
                "PING {} ({addr}) {size}({}) bytes of data.",
                host.host,
                size + 8 + ip_header
            ))
            .ok();
        }
        let plan = Plan {
            await_previous: p.interval.is_zero().then_some(FLOOD_WAIT),
            ..p.plan(ctx.timeout, &s.progress)
        };
        let mut transport = Ping::new(sock, addr, size);
        let (quiet, stamps, outstanding) = (p.quiet, a.timestamps, a.outstanding);
        let summary = probe::run(&mut transport, &plan, size, ctx, &mut |ev| {
            let line = match ev {
                Event::Progress(sum) => Some(progress_line(sum)),
                _ if quiet => None,
                Event::Settled(p) => reply_line(p, addr),
                Event::Duplicate(seq) => Some(format!("{addr}: icmp_seq={seq} (DUP!)")),
                Event::Outstanding(seq) if outstanding => {
                    Some(format!("no answer yet for icmp_seq={seq}"))
                }
                _ => None,
            };
            if let Some(l) = line {
                let l = if stamps {
                    format!("[{}] {l}", unix_now())
                } else {
                    l
                };
                s.emit(&l).ok();
            }
        })?;
        Ok(Report::Ping(PingReport {
            target: host.host,
            address: addr,
            socket: kind,
            bytes: size,
            ttl: a.ttl,
            summary,
        }))
    }
}

/// A host without a port: ping has none.
fn host_only(word: &str) -> Result<Endpoint> {
    let ep = Endpoint::parse(word, 0)?;
    if ep.port != 0 {
        return Err(Error::bad_value(format!(
            "ping takes a host, not HOST:PORT ('{}')",
            crate::proto::escape::escape_controls(word)
        ))
        .with_hint("ping the host alone, or probe the port with 'tcping HOST:PORT'"));
    }
    Ok(ep)
}

/// What iputils prints for a reply or an error (nothing for a loss).
fn reply_line(p: &probe::Probe, addr: IpAddr) -> Option<String> {
    let seq = p.seq;
    let from = p.from.unwrap_or(addr);
    let ttl = p.ttl.map(|t| format!(" ttl={t}")).unwrap_or_default();
    match p.status {
        Status::Ok => Some(format!(
            "{} bytes from {from}: icmp_seq={seq}{ttl} time={} ms",
            p.bytes + 8,
            reply_ms(p.rtt_ms.unwrap_or(0.0))
        )),
        Status::Corrupt => Some(format!(
            "{} bytes from {from}: icmp_seq={seq}{ttl} wrong data byte #{}",
            p.bytes + 8,
            p.first_difference.unwrap_or(0)
        )),
        Status::Error => Some(format!(
            "From {from} icmp_seq={seq} {}",
            p.error.as_deref().unwrap_or("error")
        )),
        Status::Lost | Status::Refused => None,
    }
}

/// The statistics so far, as iputils prints them on SIGQUIT.
fn progress_line(s: &probe::Summary) -> String {
    let mut l = format!(
        "{}/{} packets, {}% loss",
        s.received,
        s.transmitted,
        pct(s.loss_pct)
    );
    if let Some(r) = &s.rtt {
        l.push_str(&format!(
            ", min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            r.min, r.avg, r.max, r.mdev
        ));
    }
    l
}

fn unix_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", t.as_secs(), t.subsec_micros())
}

/// What `ping` reports.
#[derive(Debug, Serialize)]
pub struct PingReport {
    /// The host as given.
    pub target: String,
    /// The address pinged.
    pub address: IpAddr,
    /// The ICMP socket used: `datagram` (unprivileged) or `raw`.
    pub socket: SocketKind,
    /// Payload bytes per request.
    pub bytes: usize,
    /// The TTL asked for with `-t`; `null` for the system's.
    pub ttl: Option<u8>,
    /// Counts, RTT summary and the probes (`seq` is `icmp_seq`, from 1).
    #[serde(flatten)]
    pub summary: probe::Summary,
}

impl PingReport {
    /// An error that sets the exit status although the report prints: no
    /// reply at all (1), or replies with changed bytes (3).
    pub fn failure(&self) -> Option<Error> {
        let s = &self.summary;
        if s.corrupt > 0 {
            return Some(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "{} of {} replies from {} came back with changed bytes",
                    s.corrupt, s.transmitted, self.address
                ),
            ));
        }
        if s.received > 0 || s.transmitted == 0 || s.interrupted {
            return None;
        }
        let first_error = s.probes.iter().find_map(|p| p.error.as_deref());
        Some(match first_error {
            Some(what) => Error::new(
                ErrorKind::Unreachable,
                format!("no reply from {}: {} errors ({what})", self.address, s.errors),
            ),
            None => Error::new(
                ErrorKind::TimedOut,
                format!(
                    "no reply from {} to {} requests",
                    self.address, s.transmitted
                ),
            )
            .with_hint("the host may be down, or a firewall drops ICMP; try 'tcping HOST:PORT' or 'trace HOST'"),
        })
    }

    /// Text form: iputils' summary, then netsh's percentiles.
    pub fn render(&self, p: &Paint) -> String {
        let s = &self.summary;
        let mut out = p.bold(&format!("--- {} ping statistics ---", self.target));
        let mut extra = String::new();
        for (n, what) in [
            (s.duplicate, "duplicates"),
            (s.corrupt, "corrupted"),
            (s.errors, "errors"),
            (s.reordered, "reordered"),
        ] {
            if n > 0 {
                extra.push_str(&format!("+{n} {what}, "));
            }
        }
        let loss = format!("{}% packet loss", pct(s.loss_pct));
        let loss = if s.loss_pct > 0.0 {
            p.red(&loss)
        } else {
            p.green(&loss)
        };
        out.push_str(&format!(
            "\n{} packets transmitted, {} received, {extra}{loss}, time {:.0}ms",
            s.transmitted, s.received, s.time_ms
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
