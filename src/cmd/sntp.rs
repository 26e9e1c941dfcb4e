//! `sntp`: how far this machine's clock is from an NTP server's (RFC 4330 /
//! RFC 5905 client). Several samples; the one with the lowest round-trip
//! delay is reported, as NTP's clock filter would pick. netsh only reports
//! the offset: it never sets the system clock.
//!
//! Kiss-o'-death DENY/RSTR stop queries to that address and are remembered
//! across runs, per server address (in `sntp-kod.list` under the data
//! directory); RATE doubles
//! the interval for the remaining samples.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local, Utc};
use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::client::{self, ClientCtx};
use crate::net::sntp::{self, Outcome, Sample};
use crate::paint::Paint;
use crate::proto::ntp;
use crate::report::Report;
use crate::session::Session;
use crate::settings::NTP_PORT;
use crate::units;

/// Most samples in one run.
const MAX_SAMPLES: u32 = 64;
/// Remembered DENY/RSTR codes.
const KOD_FILE: &str = "sntp-kod.list";

/// `sntp` words.
#[derive(Debug, Args)]
#[command(after_help = "netsh only reports the offset; it never sets the system clock.")]
struct SntpArgs {
    /// NTP server [default: 'set sntp-server', pool.ntp.org]
    #[arg(value_name = "SERVER[:PORT]")]
    server: Option<String>,
    /// Samples to take; the one with the lowest delay is reported
    #[arg(short = 'c', long = "samples", visible_alias = "count", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=MAX_SAMPLES as i64))]
    samples: u32,
    /// Pause between samples: 0, 200ms, 1s
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "0", value_parser = parse_interval)]
    interval: Duration,
    /// Wait this long for each reply [default: 'set timeout']
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// IPv4 only
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// IPv6 only
    #[arg(short = '6')]
    ipv6: bool,
    /// Show every sample
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::ZERO, Duration::from_secs(600))
}

fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(60))
}

/// The `sntp` command.
pub struct Sntp;

impl Command for Sntp {
    fn name(&self) -> &'static str {
        "sntp"
    }
    fn summary(&self) -> &'static str {
        "Clock offset against an NTP server (reports only; never sets the clock)"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        SntpArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: SntpArgs = args_of(m)?;
        let ep = match &a.server {
            Some(w) => Endpoint::parse(w, NTP_PORT)?,
            None => s.settings.sntp_server.clone(),
        };
        let timeout = a.timeout.unwrap_or(s.settings.timeout);
        let interrupt = std::sync::Arc::clone(&s.interrupt);
        let ctx = ClientCtx {
            timeout,
            retries: 0,
            ..s.settings.client_ctx(&interrupt)
        };
        s.emit(&format!("[SNTP] Connecting to {} ...", ep.host))
            .ok();
        let addr = pick(&ep, a.ipv4, a.ipv6, ctx)?;
        let kod_path = s.paths.data_dir.join(KOD_FILE);
        if let Some((code, when)) = remembered_kiss(&kod_path, addr) {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("{addr} told netsh to stop querying it (kiss-o'-death {code}, {when})"),
            )
            .with_hint(format!(
                "ask another server, or delete its line in {} to try again",
                kod_path.display()
            )));
        }
        let sock = sntp::socket(addr)?;
        let mut interval = a.interval;
        let mut samples: Vec<Option<Sample>> = Vec::new();
        let (mut bad, mut stale, mut rate_limited) = (0u32, 0u32, false);
        let mut last_bad = None;
        let mut interrupted = false;
        let start = Instant::now();
        for i in 0..a.samples {
            if i > 0
                && let Err(e) = client::sleep_until(Instant::now() + interval, ctx)
            {
                if e.kind == ErrorKind::Interrupted {
                    interrupted = true;
                    break;
                }
                return Err(e);
            }
            let n = format!("{}/{}", i + 1, a.samples);
            match sntp::query(&sock, addr, timeout, ctx) {
                Ok(Outcome::Sample(smp)) => {
                    bad += smp.bad;
                    stale += smp.stale;
                    s.emit(&format!(
                        "[SNTP] request {n}: offset {:+.6} s, delay {:.6} s",
                        smp.offset_us as f64 / 1e6,
                        smp.delay_us as f64 / 1e6
                    ))
                    .ok();
                    samples.push(Some(smp));
                }
                Ok(Outcome::Lost {
                    bad: b,
                    stale: st,
                    last_bad: lb,
                }) => {
                    bad += b;
                    stale += st;
                    last_bad = lb.or(last_bad);
                    s.emit(&format!(
                        "[SNTP] request {n}: no valid reply in {}",
                        units::format_duration(timeout)
                    ))
                    .ok();
                    samples.push(None);
                }
                Ok(Outcome::Kiss(code)) => {
                    let text = crate::proto::escape::display_bytes(&code);
                    match &code {
                        b"DENY" | b"RSTR" => {
                            remember_kiss(&kod_path, addr, &text);
                            return Err(Error::new(
                                ErrorKind::Protocol,
                                format!("{addr} answered kiss-o'-death {text}: it refuses to serve this client"),
                            )
                            .with_hint("netsh will not query it again; ask another server ('set sntp-server')"));
                        }
                        b"RATE" => {
                            rate_limited = true;
                            interval = (interval * 2).max(Duration::from_secs(1));
                            if i + 1 < a.samples {
                                s.emit(&format!("[SNTP] {addr} asks to slow down (RATE): waiting {} between samples", units::format_duration(interval))).ok();
                            }
                            samples.push(None);
                        }
                        _ => {
                            bad += 1;
                            last_bad = Some(format!("kiss-o'-death {text}"));
                            samples.push(None);
                        }
                    }
                }
                Err(e) if e.kind == ErrorKind::Interrupted => {
                    interrupted = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(best) = samples.iter().flatten().min_by_key(|x| x.delay_us).copied() else {
            if interrupted {
                return Err(client::interrupted());
            }
            let mut msg = format!(
                "no valid reply from {} ({addr}) to {} in {} ({} each)",
                ep.host,
                units::plural(samples.len() as u64, "request"),
                units::format_duration(round_ms(start.elapsed())),
                units::format_duration(timeout)
            );
            if rate_limited {
                msg.push_str("; the server answered kiss-o'-death RATE (rate limited)");
                return Err(Error::new(ErrorKind::Protocol, msg).with_hint(
                    "it asks to slow down: wait, then use fewer samples or a longer -i",
                ));
            }
            if let Some(b) = &last_bad {
                msg.push_str(&format!(
                    "; {}, the last {b}",
                    units::plural(bad.into(), "bad packet")
                ));
                return Err(Error::new(ErrorKind::Protocol, msg)
                    .with_hint("is that an NTP server? check the port"));
            }
            if stale > 0 {
                let replies = if stale == 1 { "reply" } else { "replies" };
                msg.push_str(&format!("; {stale} {replies} did not match our request"));
            }
            return Err(Error::new(ErrorKind::TimedOut, msg));
        };
        Ok(Report::Sntp(SntpReport::new(
            &ep,
            addr,
            &samples,
            best,
            bad,
            stale,
            rate_limited,
            interrupted,
            start,
            a.verbose,
        )))
    }
}

/// A duration to the millisecond, for messages.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The first resolved address of the family asked for.
fn pick(ep: &Endpoint, v4: bool, v6: bool, ctx: ClientCtx<'_>) -> Result<SocketAddr> {
    let addrs = client::resolve(ep, ctx)?;
    addrs
        .iter()
        .copied()
        .find(|a| (!v4 || a.is_ipv4()) && (!v6 || a.is_ipv6()))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Dns,
                format!(
                    "{} has no {} address",
                    ep.host,
                    if v4 { "IPv4" } else { "IPv6" }
                ),
            )
        })
}

/// Most of the kiss file netsh reads; past it the file is started afresh.
const KISS_FILE_MAX: u64 = 256 << 10;

/// The remembered kisses, one `ADDR CODE WHEN` line each ("" if none or unreadable).
fn kiss_lines(path: &Path) -> String {
    crate::files::read_capped(path, KISS_FILE_MAX)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn remembered_kiss(path: &Path, addr: SocketAddr) -> Option<(String, String)> {
    let text = kiss_lines(path);
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (a, code, when) = (w.next()?, w.next()?, w.next().unwrap_or("earlier"));
        (a == addr.to_string()).then(|| (code.to_string(), when.to_string()))
    })
}

fn remember_kiss(path: &Path, addr: SocketAddr, code: &str) {
    let line = format!(
        "{} {code} {}\n",
        addr,
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // One line per server: an older kiss from the same address is replaced.
    let me = addr.to_string();
    let mut text: String = kiss_lines(path)
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(me.as_str()))
        .flat_map(|l| [l, "\n"])
        .collect();
    text.push_str(&line);
    // Best effort: failing to remember only means asking again next time.
    let _ = fs::write(path, text);
}

/// One sample in the report.
#[derive(Debug, Serialize)]
pub struct SampleReport {
    /// Its number, from 1.
    pub sample: usize,
    /// Offset in seconds.
    pub offset_s: f64,
    /// Round-trip delay in seconds.
    pub delay_s: f64,
}

/// What `sntp` reports: the best sample's figures at the top level.
#[derive(Debug, Serialize)]
pub struct SntpReport {
    /// The server as given.
    pub server: String,
    /// The address queried.
    pub address: String,
    /// Server time at the moment of the best reply (local + offset), RFC 3339, UTC.
    pub network_time: String,
    /// Local time when the best reply arrived, RFC 3339 with the local offset.
    pub local_time: String,
    /// Server clock minus local clock, seconds (best sample).
    pub offset_s: f64,
    /// Round-trip delay, seconds (best sample).
    pub delay_s: f64,
    /// Server stratum.
    pub stratum: u8,
    /// Reference ID as text (`LOCL`, `GPS`, an IPv4 address).
    pub reference: String,
    /// Leap indicator, 0–2.
    pub leap: u8,
    /// `none`, `+1s`, `-1s` (leap 3, unsynchronised, is refused as a bad reply).
    pub leap_text: &'static str,
    /// Server precision, as a power of two of seconds (−24: about 60 ns).
    pub precision_log2_s: i8,
    /// Server root delay, seconds.
    pub root_delay_s: f64,
    /// Server root dispersion, seconds.
    pub root_dispersion_s: f64,
    /// NTP version of the reply.
    pub version: u8,
    /// Samples asked for and sent.
    pub samples_sent: u32,
    /// Samples with a valid reply.
    pub samples_answered: u32,
    /// The best sample's number, from 1 (as the text says `best #N`).
    pub best_sample: usize,
    /// Every sample in order; `null` where no valid reply came.
    pub samples: Vec<Option<SampleReport>>,
    /// Datagrams that were not valid replies.
    pub bad_replies: u32,
    /// Replies to another request (stale or forged), ignored.
    pub stale_replies: u32,
    /// The server sent a RATE kiss-o'-death.
    pub rate_limited: bool,
    /// Ctrl-C cut the run short.
    pub interrupted: bool,
    /// Wall time of the whole query.
    pub time_ms: f64,
    #[serde(skip)]
    network: SystemTime,
    #[serde(skip)]
    local: SystemTime,
    #[serde(skip)]
    verbose: bool,
}

fn utc(t: SystemTime) -> String {
    DateTime::<Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S%.6f UTC")
        .to_string()
}

impl SntpReport {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ep: &Endpoint,
        addr: SocketAddr,
        samples: &[Option<Sample>],
        best: Sample,
        bad: u32,
        stale: u32,
        rate_limited: bool,
        interrupted: bool,
        start: Instant,
        verbose: bool,
    ) -> SntpReport {
        let offset = best.offset_us as f64 / 1e6;
        let network = if best.offset_us >= 0 {
            best.local + Duration::from_micros(best.offset_us.unsigned_abs())
        } else {
            best.local - Duration::from_micros(best.offset_us.unsigned_abs())
        };
        let h = best.header;
        SntpReport {
            server: ep.host.clone(),
            address: addr.to_string(),
            network_time: DateTime::<Utc>::from(network)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
            local_time: DateTime::<Local>::from(best.local)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
            offset_s: offset,
            delay_s: best.delay_us as f64 / 1e6,
            stratum: h.stratum,
            reference: ntp::ref_id_text(h.stratum, h.ref_id),
            leap: h.leap,
            leap_text: match h.leap {
                0 => "none",
                1 => "+1s",
                2 => "-1s",
                _ => "unsynchronised",
            },
            precision_log2_s: h.precision,
            root_delay_s: ntp::short_to_secs(h.root_delay),
            root_dispersion_s: ntp::short_to_secs(h.root_dispersion),
            version: h.version,
            samples_sent: samples.len() as u32,
            samples_answered: samples.iter().flatten().count() as u32,
            best_sample: samples
                .iter()
                .position(|s| {
                    s.is_some_and(|x| x.delay_us == best.delay_us && x.local == best.local)
                })
                .unwrap_or(0)
                + 1,
            samples: samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.map(|x| SampleReport {
                        sample: i + 1,
                        offset_s: x.offset_us as f64 / 1e6,
                        delay_s: x.delay_us as f64 / 1e6,
                    })
                })
                .collect(),
            bad_replies: bad,
            stale_replies: stale,
            rate_limited,
            interrupted,
            time_ms: start.elapsed().as_secs_f64() * 1e3,
            network,
            local: best.local,
            verbose,
        }
    }

    /// Text form: a labelled block, one field a line.
    pub fn render(&self, p: &Paint) -> String {
        let l = |s: &str| p.bold(&format!("{s:<13}"));
        let mut out = p.bold("--- SNTP Time Synchronization ---");
        out.push_str(&format!(
            "\n{}: {} ({})",
            l("NTP Server"),
            p.cyan(&self.server),
            self.address
        ));
        out.push_str(&format!("\n{}: {}", l("Network Time"), utc(self.network)));
        out.push_str(&format!(
            "\n{}: {}  ({})",
            l("Local Time"),
            utc(self.local),
            DateTime::<Local>::from(self.local).format("%Y-%m-%d %H:%M:%S%.6f %:z")
        ));
        let off = format!("{:+.6} s", self.offset_s);
        let off = if self.offset_s.abs() < 0.1 {
            p.green(&off)
        } else {
            p.yellow(&off)
        };
        out.push_str(&format!("\n{}: {off}", l("Time Offset")));
        out.push_str(&format!("\n{}: {:.6} s", l("Round Trip"), self.delay_s));
        out.push_str(&format!(
            "\n{}: {}   Reference: {}   Leap: {}   Precision: 2^{} s",
            l("Stratum"),
            self.stratum,
            self.reference,
            self.leap_text,
            self.precision_log2_s
        ));
        out.push_str(&format!(
            "\n{}: {} sent, {} answered, best #{} (lowest delay){}",
            l("Samples"),
            self.samples_sent,
            self.samples_answered,
            self.best_sample,
            if self.rate_limited {
                p.yellow("; server asked to slow down (RATE)")
            } else {
                String::new()
            }
        ));
        if self.verbose {
            for (i, s) in self.samples.iter().enumerate() {
                let n = i + 1;
                match s {
                    Some(s) => out.push_str(&format!(
                        "\n  #{n}  offset {:+.6} s  delay {:.6} s",
                        s.offset_s, s.delay_s
                    )),
                    None => out.push_str(&format!("\n  #{n}  {}", p.dim("no valid reply"))),
                }
            }
            if self.bad_replies + self.stale_replies > 0 {
                out.push_str(&format!(
                    "\n  ignored: {} bad, {} stale",
                    self.bad_replies, self.stale_replies
                ));
            }
        }
        out.push_str(&format!(
            "\n{}",
            p.bold("---------------------------------")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kiss_line_per_server_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("sntp-kod.list");
        let a: SocketAddr = "192.0.2.1:123".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:123".parse().unwrap();
        remember_kiss(&list, a, "DENY");
        remember_kiss(&list, b, "RSTR");
        remember_kiss(&list, a, "RSTR");
        let text = fs::read_to_string(&list).unwrap();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert_eq!(
            remembered_kiss(&list, a).map(|k| k.0).as_deref(),
            Some("RSTR")
        );
        assert_eq!(
            remembered_kiss(&list, b).map(|k| k.0).as_deref(),
            Some("RSTR")
        );
    }

    #[test]
    fn a_kiss_list_that_never_ends_is_not_read_forever() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("sntp-kod.list");
        std::os::unix::fs::symlink("/dev/zero", &list).unwrap();
        let a: SocketAddr = "192.0.2.1:123".parse().unwrap();
        assert_eq!(remembered_kiss(&list, a), None);
    }
}
