//! `monitor TARGET...`: many targets watched at once, as mtr and gping show
//! one and smokeping keeps many. On a terminal, a live table redrawn in
//! place (last / avg / best / worst round trip, jitter, loss, SNTP offset,
//! a sparkline of the recent round trips); through a pipe, a line per probe;
//! with `--json`, one JSON record per probe (NDJSON) and the summary as the
//! last line. Thresholds make it a Nagios-style check: `--warn` and
//! `--crit` on average RTT and loss (and `--warn-offset`, `--crit-offset`
//! for SNTP targets) set the exit status 0 OK, 1 WARNING, 2 CRITICAL, 3
//! UNKNOWN, with the status line first in the summary. `--metrics ADDR`
//! serves the same figures to Prometheus from the same loop.
//!
//! The engine is `net::monitor`; this file is the words, the views and the
//! verdict.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::live::Frame;
use crate::net::monitor::{self, Event, Kind, Options, TARGET_FORMS, Target, Watch};
use crate::net::probe::{Probe, Status};
use crate::paint::Paint;
use crate::report::Report;
use crate::server::metrics::{Endpoint, MonitorMetrics, TargetLabels};
use crate::session::Session;
use crate::stats::RttStats;
use crate::units;

/// Redraws of the live view, at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(200);
/// Shortest `-i`.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// `monitor` words.
#[derive(Debug, Args)]
struct MonitorArgs {
    /// What to watch: HOST[:PORT] or echo://HOST[:PORT] (TCP echo to a netsh
    /// server), udp://HOST[:PORT], sntp://HOST[:PORT], icmp://HOST,
    /// tcp://HOST:PORT [default: 'set monitor-targets']
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Time between two probes of one target [default: 'set monitor-interval', 1s]
    #[arg(short = 'i', long, value_name = "DURATION", value_parser = parse_interval)]
    interval: Option<Duration>,
    /// Probes per target, then the summary [default: until Ctrl-C]
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    count: Option<u64>,
    /// Stop after this long, whatever the count: 60s, 1h
    #[arg(short = 'w', long, value_name = "DURATION", value_parser = parse_deadline)]
    deadline: Option<Duration>,
    /// Payload bytes of echo, UDP and ICMP probes
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 56,
          value_parser = clap::value_parser!(u32).range(0..=65_000))]
    size: u32,
    /// WARNING when a target's average round trip or loss reaches this:
    /// RTT/LOSS%, e.g. 100ms/5%, 100ms, /5%
    #[arg(long, value_name = "RTT/LOSS%", value_parser = parse_threshold)]
    warn: Option<Threshold>,
    /// CRITICAL when a target's average round trip or loss reaches this
    /// [default: loss 100%, a target that never answered]
    #[arg(long, value_name = "RTT/LOSS%", value_parser = parse_threshold)]
    crit: Option<Threshold>,
    /// WARNING when an SNTP target's clock offset (either way) reaches this: 50ms
    #[arg(long, value_name = "OFFSET", value_parser = parse_offset)]
    warn_offset: Option<Duration>,
    /// CRITICAL when an SNTP target's clock offset reaches this: 1s
    #[arg(long, value_name = "OFFSET", value_parser = parse_offset)]
    crit_offset: Option<Duration>,
    /// Serve Prometheus metrics on http://ADDR/metrics while it runs: PORT
    /// (loopback), :PORT (every address) or HOST:PORT
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics)]
    metrics: Option<SocketAddr>,
    /// With --metrics: go on answering scrapes this long after the last
    /// probe, so the final counts are scraped [default: 0]
    #[arg(long, value_name = "DURATION", requires = "metrics", value_parser = parse_deadline)]
    linger: Option<Duration>,
    /// Only the summary: no line per probe (a Nagios check's output)
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, MIN_INTERVAL, Duration::from_secs(3600))
}

fn parse_deadline(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(
        s,
        Duration::from_millis(1),
        Duration::from_secs(366 * 86_400),
    )
}

fn parse_offset(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_micros(1), Duration::from_secs(86_400))
}

fn parse_metrics(s: &str) -> std::result::Result<SocketAddr, String> {
    crate::server::metrics::parse_addr(s).map_err(|e| {
        let hint = e.hint.map(|h| format!(" ({h})")).unwrap_or_default();
        format!("{}{hint}", e.message)
    })
}

/// A threshold on average round trip and loss; either may be absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Average round trip, ms.
    pub rtt_ms: Option<f64>,
    /// Loss, percent.
    pub loss_pct: Option<f64>,
}

/// `100ms/5%`, `100ms`, `/5%`, `5%`; a bare number is milliseconds, as
/// check_ping reads it.
fn parse_threshold(s: &str) -> std::result::Result<Threshold, String> {
    let bad = |why: &str| format!("'{s}': {why}; write RTT/LOSS%, e.g. 100ms/5%, 100ms or /5%");
    let (rtt, loss) = match s.split_once('/').or_else(|| s.split_once(',')) {
        Some((r, l)) => (r.trim(), l.trim()),
        None if s.trim_end().ends_with('%') => ("", s.trim()),
        None => (s.trim(), ""),
    };
    let rtt_ms = if rtt.is_empty() {
        None
    } else if let Ok(ms) = rtt.parse::<f64>() {
        Some(ms)
    } else {
        // To the nanosecond, so 0.1ms reads back as 0.1.
        let ms = units::parse_duration(rtt)
            .map_err(|e| bad(&e))?
            .as_secs_f64()
            * 1e3;
        Some((ms * 1e6).round() / 1e6)
    };
    let loss_pct = if loss.is_empty() {
        None
    } else {
        let n: f64 = loss
            .trim_end_matches('%')
            .trim()
            .parse()
            .map_err(|_| bad("the loss is not a percentage"))?;
        Some(n)
    };
    if rtt_ms.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(bad("the round trip must be above 0"));
    }
    if loss_pct.is_some_and(|l| !(0.0..=100.0).contains(&l) || l.is_nan()) {
        return Err(bad("the loss must be 0-100%"));
    }
    if rtt_ms.is_none() && loss_pct.is_none() {
        return Err(bad("nothing given"));
    }
    Ok(Threshold { rtt_ms, loss_pct })
}

/// The `monitor` command.
pub struct Monitor;

impl Command for Monitor {
    fn name(&self) -> &'static str {
        "monitor"
    }
    fn summary(&self) -> &'static str {
        "Watch many targets live (echo, udp, sntp, icmp, tcp); NDJSON, Nagios exit status, Prometheus /metrics"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        MonitorArgs::augment_args(c)
    }
    fn nagios(&self) -> bool {
        true
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: MonitorArgs = args_of(m)?;
        let json = m.get_flag("json");
        let words = if a.targets.is_empty() {
            s.settings.monitor_targets.clone()
        } else {
            a.targets.clone()
        };
        if words.is_empty() {
            return Err(Error::usage("monitor: no targets given").with_hint(format!(
                "{TARGET_FORMS}; or 'set monitor-targets udp://HOST,...'"
            )));
        }
        if words.len() > monitor::MAX_TARGETS {
            return Err(Error::bad_value(format!(
                "monitor: {} targets, at most {}",
                words.len(),
                monitor::MAX_TARGETS
            )));
        }
        let targets = words
            .iter()
            .map(|w| Target::parse(w))
            .collect::<Result<Vec<_>>>()?;
        let verdict = Verdict {
            warn: a.warn,
            crit: a.crit,
            warn_offset_s: a.warn_offset.map(|d| d.as_secs_f64()),
            crit_offset_s: a.crit_offset.map(|d| d.as_secs_f64()),
        };
        let interval = a.interval.unwrap_or(s.settings.monitor_interval);
        let interrupt = std::sync::Arc::clone(&s.interrupt);
        let ctx = s.settings.client_ctx(&interrupt);
        let opts = Options {
            interval,
            count: a.count,
            deadline: a.deadline,
            timeout: ctx.timeout,
            size: a.size as usize,
            linger: a.linger,
        };
        let (metrics, registry) = MonitorMetrics::new();
        let mut endpoint = match a.metrics {
            Some(addr) => Some(Endpoint::bind(addr, registry)?),
            None => None,
        };
        let labels: Vec<TargetLabels> = targets
            .iter()
            .map(|t| TargetLabels {
                target: t.name.clone(),
                kind: t.kind.name(),
            })
            .collect();
        for l in &labels {
            // Every series exists from the first scrape, at zero.
            drop(metrics.sent.get_or_create(l));
            drop(metrics.received.get_or_create(l));
            drop(metrics.lost.get_or_create(l));
            drop(metrics.failed.get_or_create(l));
            drop(metrics.up.get_or_create(l));
        }
        let metrics_url = endpoint
            .as_ref()
            .map(|e| format!("http://{}/metrics", e.local_addr()));
        let live = !json && !a.quiet && s.streaming && s.terminal.width().is_some();
        let head = format!(
            "monitor: {} every {}{}{}",
            units::plural(targets.len() as u64, "target"),
            units::format_duration(interval),
            a.count
                .map(|c| format!(", {} each", units::plural(c, "probe")))
                .unwrap_or_default(),
            metrics_url
                .as_ref()
                .map(|u| format!(", metrics on {u}"))
                .unwrap_or_default()
        );
        if !a.quiet {
            s.emit(&head).ok();
        }
        let started = Instant::now();
        let timeout = units::format_duration(ctx.timeout);
        let paint = s.paint;
        let mut frame = Frame::new();
        let mut last_draw: Option<Instant> = None;
        let mut changed = true;
        let result = {
            let mut on_event = |ev: &Event<'_>| match ev {
                Event::Sample {
                    index,
                    probe,
                    watch,
                } => {
                    let l = &labels[*index];
                    metrics.sent.get_or_create(l).inc();
                    match probe.status {
                        Status::Ok => {
                            metrics.received.get_or_create(l).inc();
                            if let Some(ms) = probe.rtt_ms {
                                metrics.rtt.get_or_create(l).observe(ms / 1e3);
                            }
                            metrics.up.get_or_create(l).set(1);
                            if let Some(o) = probe.offset_s {
                                metrics.offset.get_or_create(l).set(o);
                            }
                        }
                        Status::Lost => {
                            metrics.lost.get_or_create(l).inc();
                            metrics.up.get_or_create(l).set(0);
                        }
                        _ => {
                            metrics.failed.get_or_create(l).inc();
                            metrics.up.get_or_create(l).set(0);
                        }
                    }
                    changed = true;
                    if json {
                        let rec = sample_record(probe, watch);
                        s.emit_record(&rec).ok();
                    } else if !live && !a.quiet {
                        s.emit(&probe_line(&watch.target.name, probe, &timeout))
                            .ok();
                    }
                }
                Event::Lingering(linger) => {
                    if frame.drawn() > 0 {
                        s.emit(&frame.erase()).ok();
                    }
                    if !a.quiet && !json {
                        s.emit(&format!(
                            "monitor: probes done; answering scrapes for {} more (Ctrl-C ends it)",
                            units::format_duration(*linger)
                        ))
                        .ok();
                    }
                }
                Event::Turn(watches) => {
                    if !live {
                        return;
                    }
                    let now = Instant::now();
                    if last_draw.is_some_and(|t| now < t + REDRAW_EVERY)
                        || (!changed && last_draw.is_some_and(|t| now < t + Duration::from_secs(1)))
                    {
                        return;
                    }
                    last_draw = Some(now);
                    changed = false;
                    let width = s.terminal.width().unwrap_or(80);
                    let height = s.terminal.height().unwrap_or(24);
                    let lines =
                        live_lines(watches, &verdict, &paint, width, height, started, interval);
                    s.emit(&frame.redraw(&lines)).ok();
                }
            };
            monitor::run(&targets, &opts, ctx, endpoint.as_mut(), &mut on_event)
        };
        if frame.drawn() > 0 {
            s.emit(&frame.erase()).ok();
        }
        let watches = result?;
        Ok(Report::Monitor(MonitorReport::new(
            &watches,
            &verdict,
            interval,
            a.count,
            started.elapsed(),
            s.interrupted(),
            metrics_url,
        )))
    }
}

/// A probe as one text line: `udp://127.0.0.1:5050 seq=3 rtt=0.061 ms`.
fn probe_line(name: &str, p: &Probe, timeout: &str) -> String {
    match (p.status, p.rtt_ms) {
        (Status::Ok, Some(rtt)) => match p.offset_s {
            Some(o) => format!("{name} seq={} rtt={rtt:.3} ms offset={o:+.6} s", p.seq),
            None => format!("{name} seq={} rtt={rtt:.3} ms", p.seq),
        },
        (Status::Lost, _) => format!("{name} seq={} lost (no answer in {timeout})", p.seq),
        (Status::Corrupt, _) => format!("{name} seq={} corrupt answer", p.seq),
        (Status::Refused, _) => format!("{name} seq={} refused", p.seq),
        _ => format!(
            "{name} seq={} error: {}",
            p.seq,
            p.error.as_deref().unwrap_or("no answer")
        ),
    }
}

/// One NDJSON record for a settled probe, with the target's figures.
fn sample_record(p: &Probe, w: &Watch) -> String {
    let r = w.rtt_stats();
    let v = serde_json::json!({
        "record": "sample",
        "time": chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        "target": w.target.name,
        "kind": w.target.kind,
        "seq": p.seq,
        "status": p.status,
        "rtt_ms": p.rtt_ms,
        "offset_s": p.offset_s,
        "error": p.error,
        "sent": w.sent,
        "received": w.received,
        "loss_pct": w.loss_pct(),
        "avg_ms": r.as_ref().map(|r| r.avg),
        "min_ms": r.as_ref().map(|r| r.min),
        "max_ms": r.as_ref().map(|r| r.max),
        "jitter_ms": w.jitter_ms,
    });
    serde_json::to_string(&crate::report::document("monitor", v)).unwrap_or_default()
}

/// Nagios' four states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Within every threshold.
    Ok,
    /// Past a warning threshold.
    Warning,
    /// Not known: never probed (the name does not resolve, or Ctrl-C came
    /// before the first answer was due).
    Unknown,
    /// Past a critical threshold.
    Critical,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Unknown => "UNKNOWN",
            State::Critical => "CRITICAL",
        }
    }

    fn exit_code(self) -> i32 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }
}

/// The thresholds.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    warn: Option<Threshold>,
    crit: Option<Threshold>,
    warn_offset_s: Option<f64>,
    crit_offset_s: Option<f64>,
}

impl Verdict {
    fn any(&self) -> bool {
        self.warn.is_some()
            || self.crit.is_some()
            || self.warn_offset_s.is_some()
            || self.crit_offset_s.is_some()
    }

    /// Critical loss: as given, else 100% (a target that never answered).
    fn crit_loss(&self) -> f64 {
        self.crit.and_then(|c| c.loss_pct).unwrap_or(100.0)
    }

    /// A target's state and, unless OK, why.
    fn judge(&self, w: &Watch) -> (State, Option<String>) {
        if let Some(why) = &w.unknown {
            return (State::Unknown, Some(why.clone()));
        }
        if w.sent == 0 {
            return (State::Unknown, Some("no probe settled".into()));
        }
        let avg = w.rtt_stats().map(|r| r.avg);
        let loss = w.loss_pct();
        let offset = w.offset_s.map(f64::abs);
        let over =
            |level: &str, t: Option<Threshold>, loss_limit: Option<f64>, off: Option<f64>| {
                let mut why = Vec::new();
                if let Some(l) = loss_limit
                    && loss >= l
                {
                    why.push(format!(
                        "loss {}% ({level} at {}%)",
                        crate::stats::pct(loss),
                        crate::stats::pct(l)
                    ));
                }
                if let (Some(r), Some(a)) = (t.and_then(|t| t.rtt_ms), avg)
                    && a >= r
                {
                    why.push(format!(
                        "avg rtt {} ms ({level} at {r} ms)",
                        crate::stats::reply_ms(a)
                    ));
                }
                if let (Some(o), Some(x)) = (off, offset)
                    && x >= o
                {
                    why.push(format!("offset {x:.6} s ({level} at {o} s)"));
                }
                (!why.is_empty()).then(|| why.join(", "))
            };
        if let Some(why) = over(
            "critical",
            self.crit,
            Some(self.crit_loss()),
            self.crit_offset_s,
        ) {
            return (State::Critical, Some(why));
        }
        if let Some(why) = over(
            "warning",
            self.warn,
            self.warn.and_then(|t| t.loss_pct),
            self.warn_offset_s,
        ) {
            return (State::Warning, Some(why));
        }
        (State::Ok, None)
    }
}

/// One target in the summary.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// The canonical name.
    pub target: String,
    /// How it was probed.
    pub kind: Kind,
    /// The address probed; `null` if the name did not resolve.
    pub address: Option<String>,
    /// Probes settled.
    pub sent: u64,
    /// Answered intact in time.
    pub received: u64,
    /// No answer in time.
    pub lost: u64,
    /// Answered by an error, or could not be sent.
    pub failed: u64,
    /// `(sent - received) / sent`.
    pub loss_pct: f64,
    /// The last round trip.
    pub last_ms: Option<f64>,
    /// Round-trip statistics (`min_ms` is mtr's best, `max_ms` its worst).
    pub rtt: Option<RttStats>,
    /// Mean difference of consecutive round trips.
    pub jitter_ms: Option<f64>,
    /// The last SNTP offset (server minus this machine).
    pub offset_s: Option<f64>,
    /// `ok`, `warning`, `critical` or `unknown`.
    pub state: State,
    /// Why the state is not `ok`.
    pub reason: Option<String>,
    /// The last error seen.
    pub last_error: Option<String>,
}

/// Thresholds as the summary shows them.
#[derive(Debug, Serialize)]
pub struct Thresholds {
    /// `--warn` round trip.
    pub warn_rtt_ms: Option<f64>,
    /// `--warn` loss.
    pub warn_loss_pct: Option<f64>,
    /// `--crit` round trip.
    pub crit_rtt_ms: Option<f64>,
    /// `--crit` loss (100 unless given).
    pub crit_loss_pct: f64,
    /// `--warn-offset`.
    pub warn_offset_s: Option<f64>,
    /// `--crit-offset`.
    pub crit_offset_s: Option<f64>,
}

/// What `monitor` reports at the end.
#[derive(Debug, Serialize)]
pub struct MonitorReport {
    /// `summary` (the stream's other records are `sample`s).
    pub record: &'static str,
    /// The worst state of all targets.
    pub state: State,
    /// The Nagios status line.
    pub status_line: String,
    /// Time between two probes of one target.
    pub interval_s: f64,
    /// Probes per target asked for; `null`: until stopped.
    pub count: Option<u64>,
    /// How long it ran.
    pub time_s: f64,
    /// Ctrl-C ended it.
    pub interrupted: bool,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// The Prometheus endpoint, if served.
    pub metrics: Option<String>,
    /// Every target, in the order given.
    pub targets: Vec<TargetReport>,
    #[serde(skip)]
    perfdata: String,
}

impl MonitorReport {
    fn new(
        watches: &[Watch],
        verdict: &Verdict,
        interval: Duration,
        count: Option<u64>,
        took: Duration,
        interrupted: bool,
        metrics: Option<String>,
    ) -> MonitorReport {
        let targets: Vec<TargetReport> = watches
            .iter()
            .map(|w| {
                let (state, reason) = verdict.judge(w);
                TargetReport {
                    target: w.target.name.clone(),
                    kind: w.target.kind,
                    address: w.address.map(|a| match w.target.kind {
                        Kind::Icmp => a.ip().to_string(),
                        _ => a.to_string(),
                    }),
                    sent: w.sent,
                    received: w.received,
                    lost: w.lost,
                    failed: w.failed,
                    loss_pct: w.loss_pct(),
                    last_ms: w.last_ms,
                    rtt: w.rtt_stats(),
                    jitter_ms: w.jitter_ms,
                    offset_s: w.offset_s,
                    state,
                    reason,
                    last_error: w.last_error.clone(),
                }
            })
            .collect();
        let state = targets
            .iter()
            .map(|t| t.state)
            .max()
            .unwrap_or(State::Unknown);
        let status_line = status_line(state, &targets);
        let perfdata = if verdict.any() {
            perfdata(&targets, verdict)
        } else {
            String::new()
        };
        MonitorReport {
            record: "summary",
            state,
            status_line,
            interval_s: interval.as_secs_f64(),
            count,
            time_s: took.as_secs_f64(),
            interrupted,
            thresholds: Thresholds {
                warn_rtt_ms: verdict.warn.and_then(|t| t.rtt_ms),
                warn_loss_pct: verdict.warn.and_then(|t| t.loss_pct),
                crit_rtt_ms: verdict.crit.and_then(|t| t.rtt_ms),
                crit_loss_pct: verdict.crit_loss(),
                warn_offset_s: verdict.warn_offset_s,
                crit_offset_s: verdict.crit_offset_s,
            },
            metrics,
            targets,
            perfdata,
        }
    }

    /// The error the exit status stands for (1 WARNING, 2 CRITICAL, 3
    /// UNKNOWN); `None` when every target is OK.
    pub fn failure(&self) -> Option<Error> {
        let kind = match self.state {
            State::Ok => return None,
            State::Warning => ErrorKind::Warning,
            State::Critical => ErrorKind::Critical,
            State::Unknown => match self.targets.iter().find(|t| t.state == State::Unknown) {
                Some(t) if t.address.is_none() => ErrorKind::Dns,
                _ => ErrorKind::Interrupted,
            },
        };
        Some(
            Error::new(kind, self.status_line.clone())
                .with_hint(match self.state {
                    State::Unknown => "check the targets' names; let each probe at least once",
                    _ => "the summary names each target past its threshold",
                })
                .with_status(self.state.exit_code()),
        )
    }

    /// Text: the status line first (a Nagios check shows it), then a row
    /// per target.
    pub fn render(&self, p: &Paint) -> String {
        let mut out = self.status_line.clone();
        if !self.perfdata.is_empty() {
            out.push_str(" |");
            out.push_str(&self.perfdata);
        }
        let name_w = self
            .targets
            .iter()
            .map(|t| t.target.chars().count())
            .max()
            .unwrap_or(6)
            .clamp(6, 48);
        let sntp = self.targets.iter().any(|t| t.kind == Kind::Sntp);
        out.push('\n');
        out.push_str(&p.bold(&header(name_w, sntp)));
        for t in &self.targets {
            out.push('\n');
            let r = t.rtt.as_ref();
            let mut row = format!(
                "{} {:>6} {:>6} {:>5} {:>5} {:>5} {:>6}",
                fit(&t.target, name_w),
                t.sent,
                format!("{:.1}%", t.loss_pct),
                ms_cell(r.map(|r| r.avg)),
                ms_cell(r.map(|r| r.min)),
                ms_cell(r.map(|r| r.max)),
                ms_cell(t.jitter_ms),
            );
            if sntp {
                row.push_str(&format!(" {:>10}", offset_cell(t.offset_s)));
            }
            row.push_str(&format!("  {}", paint_state(p, t.state)));
            if let Some(why) = t.reason.as_ref().or(t.last_error.as_ref()) {
                row.push_str(&format!(" {}", p.dim(why)));
            }
            out.push_str(&row);
        }
        if self.interrupted {
            out.push_str(&p.yellow("\n(interrupted)"));
        }
        out
    }
}

fn status_line(state: State, targets: &[TargetReport]) -> String {
    let count = |s: State| targets.iter().filter(|t| t.state == s).count();
    let mut parts = Vec::new();
    for s in [State::Critical, State::Unknown, State::Warning, State::Ok] {
        let n = count(s);
        if n > 0 {
            parts.push(format!("{n} {}", s.word().to_ascii_lowercase()));
        }
    }
    let mut line = format!(
        "MONITOR {} - {}: {}",
        state.word(),
        units::plural(targets.len() as u64, "target"),
        parts.join(", ")
    );
    // The first of the worst targets, named.
    let worst = targets.iter().map(|t| t.state).max().unwrap_or(State::Ok);
    if let Some(t) = targets
        .iter()
        .find(|t| t.state == worst && t.state != State::Ok)
    {
        line.push_str(&format!(
            "; {} {}",
            t.target,
            t.reason.as_deref().unwrap_or("")
        ));
    }
    line
}

/// Nagios performance data: `'NAME rta'=0.123ms;100;500;0 'NAME pl'=0%;5;20;0;100`.
fn perfdata(targets: &[TargetReport], v: &Verdict) -> String {
    let num = |x: Option<f64>| x.map(|x| format!("{x}")).unwrap_or_default();
    let mut out = String::new();
    for t in targets {
        let name = t.target.replace('\'', "");
        let rta = t.rtt.as_ref().map(|r| r.avg);
        out.push_str(&format!(
            " '{name} rta'={}ms;{};{};0",
            rta.map(|x| format!("{x:.3}")).unwrap_or_else(|| "U".into()),
            num(v.warn.and_then(|w| w.rtt_ms)),
            num(v.crit.and_then(|c| c.rtt_ms)),
        ));
        out.push_str(&format!(
            " '{name} pl'={}%;{};{};0;100",
            crate::stats::pct(t.loss_pct),
            num(v.warn.and_then(|w| w.loss_pct)),
            crate::stats::pct(v.crit_loss()),
        ));
        if t.kind == Kind::Sntp {
            out.push_str(&format!(
                " '{name} offset'={}s;{};{}",
                t.offset_s
                    .map(|o| format!("{o:.6}"))
                    .unwrap_or_else(|| "U".into()),
                num(v.warn_offset_s),
                num(v.crit_offset_s),
            ));
        }
    }
    out
}

fn paint_state(p: &Paint, s: State) -> String {
    let w = s.word();
    match s {
        State::Ok => p.green(w),
        State::Warning => p.yellow(w),
        State::Critical | State::Unknown => p.red(w),
    }
}

/// The summary's column titles, `TARGET` padded to `name_w`.
fn header(name_w: usize, sntp: bool) -> String {
    let mut h = format!(
        "{} {:>6} {:>6} {:>5} {:>5} {:>5} {:>6}",
        fit("TARGET", name_w),
        "SENT",
        "LOSS",
        "AVG",
        "BEST",
        "WORST",
        "JITTER"
    );
    if sntp {
        h.push_str(&format!(" {:>10}", "OFFSET"));
    }
    h.push_str("  STATE");
    h
}

/// `s` cut or padded to exactly `w` columns (`…` where cut).
fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        format!("{s}{}", " ".repeat(w - n))
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn ms_cell(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".into(), crate::stats::reply_ms)
}

fn offset_cell(o: Option<f64>) -> String {
    o.map_or_else(|| "-".into(), |o| format!("{o:+.6}s"))
}

/// The live view's columns after the target: title, width, and the
/// narrowest terminal that still shows it (0: always), so at 80 columns the
/// sparkline keeps room and the least needed columns go first.
const LIVE_COLUMNS: [(&str, usize, u8); 8] = [
    ("SENT", 6, 3),
    ("LOSS", 6, 0),
    ("LAST", 5, 0),
    ("AVG", 5, 1),
    ("BEST", 5, 2),
    ("WORST", 5, 1),
    ("JITTER", 6, 2),
    ("OFFSET", 10, 0),
];

/// Narrowest sparkline worth drawing.
const MIN_SPARK: usize = 12;

fn live_cells(w: &Watch) -> [String; 8] {
    let r = w.rtt_stats();
    [
        w.sent.to_string(),
        format!("{:.1}%", w.loss_pct()),
        ms_cell(w.last_ms),
        ms_cell(r.as_ref().map(|r| r.avg)),
        ms_cell(r.as_ref().map(|r| r.min)),
        ms_cell(r.as_ref().map(|r| r.max)),
        ms_cell(w.jitter_ms),
        offset_cell(w.offset_s),
    ]
}

/// The live view's lines: a title, the column titles, a row per target
/// (as many as the terminal holds), each with a sparkline filling the rest
/// of the width; no line wider than the terminal.
fn live_lines(
    watches: &[Watch],
    verdict: &Verdict,
    p: &Paint,
    width: usize,
    height: usize,
    started: Instant,
    interval: Duration,
) -> Vec<String> {
    // The last column stays empty: some terminals wrap a full line.
    let width = width.max(40) - 1;
    let sntp = watches.iter().any(|w| w.target.kind == Kind::Sntp);
    let name_w = watches
        .iter()
        .map(|w| w.target.name.chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 40)
        .min(width / 3);
    // Drop the least needed columns until a sparkline fits.
    let mut level = 3u8;
    let shown_cols = |level: u8| -> Vec<usize> {
        (0..LIVE_COLUMNS.len())
            .filter(|&i| LIVE_COLUMNS[i].2 <= level && (i != 7 || sntp))
            .collect()
    };
    let used =
        |cols: &[usize]| name_w + cols.iter().map(|&i| LIVE_COLUMNS[i].1 + 1).sum::<usize>() + 2;
    while level > 0 && used(&shown_cols(level)) + 1 + MIN_SPARK > width {
        level -= 1;
    }
    let cols = shown_cols(level);
    let spark_w = width.saturating_sub(used(&cols) + 1).min(monitor::RECENT);
    let mut lines = vec![p.bold(&fit(
        &format!(
            "netsh monitor: {} every {}, {:.0} s; Ctrl-C for the summary",
            units::plural(watches.len() as u64, "target"),
            units::format_duration(interval),
            started.elapsed().as_secs_f64()
        ),
        width,
    ))];
    let mut head = fit("TARGET", name_w);
    for &i in &cols {
        let (title, w, _) = LIVE_COLUMNS[i];
        head.push_str(&format!(" {title:>w$}"));
    }
    if spark_w > 0 {
        head.push_str("   RECENT");
    }
    lines.push(p.bold(&fit(&head, width)));
    let room = height.saturating_sub(3).max(1);
    let shown = watches.len().min(room);
    for w in &watches[..shown] {
        let (state, _) = verdict.judge(w);
        let cells = live_cells(w);
        let mut row = fit(&w.target.name, name_w);
        for &i in &cols {
            let cw = LIVE_COLUMNS[i].1;
            row.push_str(&format!(" {:>cw$}", cells[i]));
        }
        // Pad, then paint: the width is counted on the plain text.
        let glyph = match state {
            State::Ok => p.green("●"),
            State::Warning => p.yellow("●"),
            _ if w.sent == 0 => p.dim("○"),
            _ => p.red("●"),
        };
        let mut line = format!("{row} {glyph}");
        if spark_w > 0 {
            line.push(' ');
            line.push_str(&sparkline(&w.recent, spark_w, p));
        }
        lines.push(line);
    }
    if shown < watches.len() {
        lines.push(p.dim(&fit(
            &format!(
                "… and {} more (the summary lists every target)",
                watches.len() - shown
            ),
            width,
        )));
    }
    lines
}

/// The last `width` round trips as Unicode blocks, scaled between the
/// window's best and worst; `×` where a probe got no answer.
fn sparkline(recent: &std::collections::VecDeque<f32>, width: usize, p: &Paint) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = recent.len().saturating_sub(width);
    let window: Vec<Option<f64>> = recent
        .iter()
        .skip(skip)
        .map(|&x| (!x.is_nan()).then_some(f64::from(x)))
        .collect();
    let (lo, hi) = window
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let mut out = String::new();
    let mut misses = String::new();
    let flush = |out: &mut String, misses: &mut String| {
        if !misses.is_empty() {
            out.push_str(&p.red(misses));
            misses.clear();
        }
    };
    for x in window {
        match x {
            Some(x) => {
                flush(&mut out, &mut misses);
                let level = if hi > lo {
                    (((x - lo) / (hi - lo)) * 7.0).round() as usize
                } else {
                    0
                };
                out.push(BLOCKS[level.min(7)]);
            }
            None => misses.push('×'),
        }
    }
    flush(&mut out, &mut misses);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_check_ping_writes_them() {
        let t = |s| parse_threshold(s).unwrap();
        assert_eq!(
            t("100ms/5%"),
            Threshold {
                rtt_ms: Some(100.0),
                loss_pct: Some(5.0)
            }
        );
        assert_eq!(
            t("100,5%"),
            Threshold {
                rtt_ms: Some(100.0),
                loss_pct: Some(5.0)
            }
        );
        assert_eq!(
            t("2s"),
            Threshold {
                rtt_ms: Some(2000.0),
                loss_pct: None
            }
        );
        assert_eq!(
            t("/20%"),
            Threshold {
                rtt_ms: None,
                loss_pct: Some(20.0)
            }
        );
        assert_eq!(
            t("20%"),
            Threshold {
                rtt_ms: None,
                loss_pct: Some(20.0)
            }
        );
        for bad in ["", "/", "abc", "10ms/150%", "-5", "10ms/x%"] {
            assert!(parse_threshold(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sparkline_scales_and_marks_misses() {
        let p = Paint::PLAIN;
        let r: std::collections::VecDeque<f32> = [1.0, 2.0, f32::NAN, 3.0].into_iter().collect();
        assert_eq!(sparkline(&r, 10, &p), "▁▅×█");
        assert_eq!(sparkline(&r, 2, &p), "×▁", "the last ones, scaled alone");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("abc", 5), "abc  ");
        assert_eq!(fit("abcdef", 4), "abc…");
    }
}
