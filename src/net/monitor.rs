//! `monitor`'s engine: many targets watched at once on one mio poll, no
//! thread per target. Each target runs the same probes as the one-shot
//! commands (a [`Prober`] over an echo, UDP, SNTP, ICMP or TCP-connect
//! transport), on a schedule of its own: probe *n* of target *k* leaves at
//! `start + k × interval / targets + n × interval`, so a thousand targets
//! spread their probes over the interval instead of sending in one burst.
//!
//! A target whose transport fails (the server closed, a port refused) is not
//! dropped: the probes in flight are settled as errors, and at its next slot
//! it starts over (a fresh socket; for TCP echo a non-blocking connect, which
//! is that slot's probe). The loop waits on a heap of the targets' next
//! wake-ups, so each turn touches only the targets that have something to
//! do; it never sleeps past a slice (Ctrl-C) and ends at the count, the
//! deadline or Ctrl-C. A `/metrics` endpoint can share the poll.
//!
//! Nothing here prints: [`Event`]s tell the caller each settled probe (with
//! the target's running figures) and give it a chance to draw.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::addr::Endpoint;
use crate::net::client::{self, ClientCtx};
use crate::net::echo::{TcpEcho, UdpEcho};
use crate::net::ping::{HubPing, IcmpHub, IcmpSocket, Ping, SocketOpts};
use crate::net::probe::{self, Plan, Probe, Prober, Status, Tokens, Transport, Turn};
use crate::net::sntp::SntpProbe;
use crate::net::tcping::Tcping;
use crate::server::metrics::Endpoint as MetricsEndpoint;
use crate::settings::DEFAULT_PORT;
use crate::stats::{Rtt, RttStats};

/// Most targets one monitor watches.
pub const MAX_TARGETS: usize = 10_000;
/// Round trips kept per target for the sparkline.
pub const RECENT: usize = 240;
/// The metrics endpoint's tokens, above every target's range.
const METRICS_BASE: usize = 1 << 60;
/// Due targets between two reads of the shared ICMP sockets.
const HUB_DRAIN_EVERY: usize = 32;
/// The shared raw ICMP sockets' tokens (IPv4, IPv6).
const HUB_TOKENS: [Token; 2] = [Token(1 << 59), Token((1 << 59) + 1)];
/// The local token of a TCP echo target's connect.
const CONNECT: usize = Tokens::SPAN - 1;
/// Probes one target may send in one turn before the others get theirs.
const SENDS_PER_TURN: usize = 16;

/// What a target is probed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `ECHO` lines to a netsh server over one TCP connection.
    Echo,
    /// Datagrams to a netsh server's UDP echo.
    Udp,
    /// SNTP requests (clock offset as well as round trip).
    Sntp,
    /// ICMP echo requests, as ping.
    Icmp,
    /// TCP handshakes to any port, as tcping.
    Tcp,
}

impl Kind {
    /// The URL scheme and metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Udp => "udp",
            Kind::Sntp => "sntp",
            Kind::Icmp => "icmp",
            Kind::Tcp => "tcp",
        }
    }
}

/// One target, as the user wrote it and as it is probed.
#[derive(Debug, Clone)]
pub struct Target {
    /// The canonical name: `echo://127.0.0.1:5050`, `icmp://example.org`.
    pub name: String,
    /// How it is probed.
    pub kind: Kind,
    /// Host and port (0 for ICMP).
    pub ep: Endpoint,
}

impl Target {
    /// Parse `echo://HOST[:PORT]`, `udp://…`, `sntp://…`, `icmp://HOST`,
    /// `tcp://HOST:PORT`, or a bare `HOST[:PORT]` (TCP echo).
    ///
    /// # Errors
    /// `bad-value` naming the forms.
    pub fn parse(word: &str) -> Result<Target> {
        let shown = crate::proto::escape::escape_controls(word);
        let (kind, rest) = match word.split_once("://") {
            None => (Kind::Echo, word),
            Some((scheme, rest)) => {
                let kind = match scheme.to_ascii_lowercase().as_str() {
                    "echo" => Kind::Echo,
                    "udp" => Kind::Udp,
                    "sntp" | "ntp" => Kind::Sntp,
                    "icmp" | "ping" => Kind::Icmp,
                    "tcp" | "tcping" => Kind::Tcp,
                    _ => {
                        return Err(Error::bad_value(format!(
                            "monitor target '{shown}': unknown kind '{}'",
                            crate::proto::escape::escape_controls(scheme)
                        ))
                        .with_hint(TARGET_FORMS));
                    }
                };
                (kind, rest.trim_end_matches('/'))
            }
        };
        let default_port = match kind {
            Kind::Echo | Kind::Udp => DEFAULT_PORT,
            Kind::Sntp => 123,
            Kind::Icmp | Kind::Tcp => 0,
        };
        let ep = Endpoint::parse(rest, default_port).map_err(|e| e.with_hint(TARGET_FORMS))?;
        match kind {
            Kind::Icmp if ep.port != 0 => {
                return Err(Error::bad_value(format!(
                    "monitor target '{shown}': ICMP has no port"
                ))
                .with_hint("write icmp://HOST, or tcp://HOST:PORT to time handshakes to a port"));
            }
            Kind::Tcp if ep.port == 0 => {
                return Err(Error::bad_value(format!(
                    "monitor target '{shown}': tcp:// needs a port"
                ))
                .with_hint("write tcp://HOST:PORT, e.g. tcp://127.0.0.1:22"));
            }
            _ => {}
        }
        let name = match kind {
            Kind::Icmp if ep.host.contains(':') => format!("icmp://[{}]", ep.host),
            Kind::Icmp => format!("icmp://{}", ep.host),
            _ => format!("{}://{ep}", kind.name()),
        };
        Ok(Target { name, kind, ep })
    }
}

/// The forms a target takes, for hints.
pub const TARGET_FORMS: &str = "targets: HOST[:PORT] or echo://HOST[:PORT] (TCP echo), udp://HOST[:PORT], sntp://HOST[:PORT], icmp://HOST, tcp://HOST:PORT";

/// How to watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between two probes of one target.
    pub interval: Duration,
    /// Probes per target; `None`: until the deadline or Ctrl-C.
    pub count: Option<u64>,
    /// Stop after this long.
    pub deadline: Option<Duration>,
    /// A probe with no answer after this long is lost.
    pub timeout: Duration,
    /// Payload bytes of echo, UDP and ICMP probes.
    pub size: usize,
    /// With a metrics endpoint: go on answering scrapes this long after the
    /// last probe (unless Ctrl-C ended the run).
    pub linger: Option<Duration>,
}

/// One target's running figures.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The target.
    pub target: Target,
    /// The address probed, once resolved.
    pub address: Option<SocketAddr>,
    /// Probes settled.
    pub sent: u64,
    /// Answered intact in time.
    pub received: u64,
    /// No answer in time.
    pub lost: u64,
    /// Answered by an error (refused, unreachable, corrupt, kiss-o'-death),
    /// or not sent because the target could not be reached.
    pub failed: u64,
    /// The last answered round trip, ms.
    pub last_ms: Option<f64>,
    /// Every answered round trip.
    pub rtt: Rtt,
    /// Mean absolute difference of consecutive round trips, ms.
    pub jitter_ms: Option<f64>,
    jitter_sum: f64,
    jitter_n: u64,
    /// The last SNTP offset, seconds.
    pub offset_s: Option<f64>,
    /// The last round trips, ms (NaN: that probe got no intact answer);
    /// `f32` as a sparkline needs no more and a thousand targets keep these.
    pub recent: VecDeque<f32>,
    /// Whether the last probe was answered.
    pub up: bool,
    /// What went wrong last (the last error, or why it could not start).
    pub last_error: Option<String>,
    /// The target could not be set up at all (its name does not resolve):
    /// it is never probed.
    pub unknown: Option<String>,
}

impl Watch {
    fn new(target: Target) -> Watch {
        Watch {
            target,
            address: None,
            sent: 0,
            received: 0,
            lost: 0,
            failed: 0,
            last_ms: None,
            // Percentiles to 2 digits: enough for a summary, and small.
            rtt: Rtt::with_digits(2),
            jitter_ms: None,
            jitter_sum: 0.0,
            jitter_n: 0,
            offset_s: None,
            recent: VecDeque::with_capacity(RECENT),
            up: false,
            last_error: None,
            unknown: None,
        }
    }

    /// Percent of the probes settled that got no intact answer.
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.received) as f64 * 100.0 / self.sent as f64
        }
    }

    /// The round-trip summary; `None` before the first answer.
    pub fn rtt_stats(&self) -> Option<RttStats> {
        self.rtt.summary()
    }

    fn record(&mut self, p: &Probe) {
        self.sent += 1;
        let rtt = match (p.status, p.rtt_ms) {
            (Status::Ok, Some(ms)) => {
                self.received += 1;
                if let Some(prev) = self.last_ms {
                    self.jitter_sum += (ms - prev).abs();
                    self.jitter_n += 1;
                    self.jitter_ms = Some(self.jitter_sum / self.jitter_n as f64);
                }
                self.last_ms = Some(ms);
                self.rtt.record(ms);
                if p.offset_s.is_some() {
                    self.offset_s = p.offset_s;
                }
                self.up = true;
                Some(ms)
            }
            (Status::Lost, _) => {
                self.lost += 1;
                self.up = false;
                None
            }
            _ => {
                self.failed += 1;
                self.up = false;
                self.last_error = Some(p.error.clone().unwrap_or_else(|| match p.status {
                    Status::Corrupt => "corrupt answer".into(),
                    Status::Refused => "refused".into(),
                    _ => "error".into(),
                }));
                None
            }
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(rtt.map_or(f32::NAN, |ms| ms as f32));
    }
}

/// What the caller hears while the monitor runs.
pub enum Event<'a> {
    /// Target `index` settled a probe.
    Sample {
        /// Which target.
        index: usize,
        /// The probe.
        probe: &'a Probe,
        /// The target's figures, this probe included.
        watch: &'a Watch,
    },
    /// A turn of the loop ended: a moment to redraw (callers pace
    /// themselves; this comes at least every slice).
    Turn(&'a [Watch]),
    /// The probes are done; scrapes are answered this long more.
    Lingering(Duration),
}

/// Where a target is.
enum Phase {
    /// Nothing running; at `at`, start probe number `index` (0-based).
    Idle { at: Instant, index: u64 },
    /// A TCP echo target's connect for probe `index`.
    Connecting {
        stream: TcpStream,
        addr: SocketAddr,
        index: u64,
        give_up: Instant,
    },
    /// Probing.
    Running(Box<Prober<'static>>),
    /// Finished (count reached, or never startable).
    Done,
}

/// The whole run.
struct Monitor<'e> {
    opts: Options,
    ctx_opts: crate::net::sockopt::SockOpts,
    start: Instant,
    end: Option<Instant>,
    watches: Vec<Watch>,
    phases: Vec<Phase>,
    /// When each target wants its next turn.
    wake: Vec<Option<Instant>>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    metrics: Option<&'e mut MetricsEndpoint>,
    /// One raw ICMP socket per family for every ICMP target, when this
    /// process gets raw sockets (see [`IcmpHub`]).
    hubs: [Option<Rc<RefCell<IcmpHub>>>; 2],
    /// Which target each hub identifier is, per hub (the two hubs hand
    /// out identifiers on their own, so one may be in both).
    idents: [HashMap<u16, usize>; 2],
}

/// Watch `targets` until the count, the deadline or Ctrl-C; `on_event`
/// hears every settled probe and every turn. A metrics endpoint, if given,
/// is served from the same poll.
///
/// # Errors
/// Only when the poll itself fails; a target's troubles are its figures.
pub fn run(
    targets: &[Target],
    opts: &Options,
    ctx: ClientCtx<'_>,
    metrics: Option<&mut MetricsEndpoint>,
    on_event: &mut dyn FnMut(&Event<'_>),
) -> Result<Vec<Watch>> {
    let mut poll = Poll::new().map_err(|e| Error::io("create poll", "epoll", &e))?;
    let mut watches: Vec<Watch> = targets.iter().cloned().map(Watch::new).collect();
    // Names first (bounded by the timeout each): a target that does not
    // resolve is reported, not probed.
    for w in &mut watches {
        if ctx.interrupted() {
            break;
        }
        match resolve(&w.target, ctx) {
            Ok(a) => w.address = Some(a),
            Err(e) => w.unknown = Some(e.message),
        }
    }
    crate::net::sock::raise_fd_limit(targets.len() * 2 + 64);
    let start = Instant::now();
    let n = targets.len().max(1) as u32;
    let mut m = Monitor {
        opts: opts.clone(),
        ctx_opts: ctx.opts,
        start,
        end: opts.deadline.map(|d| start + d),
        phases: Vec::with_capacity(watches.len()),
        wake: Vec::with_capacity(watches.len()),
        heap: BinaryHeap::with_capacity(watches.len()),
        watches,
        metrics,
        hubs: [None, None],
        idents: [HashMap::new(), HashMap::new()],
    };
    // ICMP targets share a raw socket per family, when raw is what we get.
    for (f, v6) in [(0, false), (1, true)] {
        let wanted = m
            .watches
            .iter()
            .any(|w| w.target.kind == Kind::Icmp && w.address.is_some_and(|a| a.is_ipv6() == v6));
        if wanted && let Ok(Some(hub)) = IcmpHub::open(v6) {
            hub.register(poll.registry(), HUB_TOKENS[f])?;
            m.hubs[f] = Some(Rc::new(RefCell::new(hub)));
        }
    }
    for k in 0..m.watches.len() {
        let phase = if m.watches[k].unknown.is_some() {
            Phase::Done
        } else {
            Phase::Idle {
                at: start + opts.interval * (k as u32) / n,
                index: 0,
            }
        };
        m.phases.push(phase);
        m.wake.push(None);
        m.reschedule(k);
    }
    if let Some(e) = m.metrics.as_deref_mut() {
        e.register(poll.registry(), METRICS_BASE)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut due = Vec::new();
    let slack = timer_slack(opts);
    loop {
        if ctx.interrupted() {
            break;
        }
        let now = Instant::now();
        if m.end.is_some_and(|e| now >= e) {
            break;
        }
        // Every target whose time has come, or comes within the slack: one
        // wake-up serves several targets instead of one each.
        let now = now + slack;
        due.clear();
        while let Some(&Reverse((at, k))) = m.heap.peek() {
            if at > now {
                break;
            }
            m.heap.pop();
            if m.wake[k] == Some(at) {
                m.wake[k] = None;
                due.push(k);
            }
        }
        for (i, &k) in due.iter().enumerate() {
            m.due(k, now, poll.registry(), on_event);
            m.reschedule(k);
            // Many due at once (a wake-up after the process was off the
            // CPU: every target sends what it owes): read the shared ICMP
            // sockets between sends, so their replies do not pile up past
            // the receive buffer before the poll comes round.
            if i % HUB_DRAIN_EVERY == HUB_DRAIN_EVERY - 1 {
                let now = Instant::now();
                for f in 0..m.hubs.len() {
                    m.hub_ready(f, now, poll.registry(), on_event);
                }
            }
        }
        // Every target not done has a wake-up on the heap.
        if m.heap.is_empty() && m.phases.iter().all(|p| matches!(p, Phase::Done)) {
            break;
        }
        on_event(&Event::Turn(&m.watches));
        let now = Instant::now();
        let mut wake = now + client::SLICE;
        if let Some(&Reverse((at, _))) = m.heap.peek() {
            wake = wake.min(at);
        }
        if let Some(e) = m.end {
            wake = wake.min(e);
        }
        if let Some(d) = m
            .metrics
            .as_deref()
            .and_then(MetricsEndpoint::next_deadline)
        {
            wake = wake.min(d);
        }
        if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "monitor", &e));
        }
        let now = Instant::now();
        for ev in events.iter() {
            let token = ev.token();
            if let Some(e) = m.metrics.as_deref_mut()
                && e.owns(token)
            {
                e.ready(token, poll.registry());
                continue;
            }
            if let Some(f) = HUB_TOKENS.iter().position(|&t| t == token) {
                m.hub_ready(f, now, poll.registry(), on_event);
                continue;
            }
            let k = Tokens::owner(token);
            if k < m.phases.len() {
                m.ready(k, token, now, poll.registry(), on_event);
                m.reschedule(k);
            }
        }
        if let Some(e) = m.metrics.as_deref_mut() {
            e.sweep(now, poll.registry());
        }
    }
    if let (Some(e), Some(linger)) = (m.metrics.as_deref_mut(), opts.linger)
        && !ctx.interrupted()
    {
        on_event(&Event::Lingering(linger));
        linger_on(&mut poll, e, linger, ctx)?;
    }
    Ok(m.watches)
}

/// After the probes: go on answering scrapes on `e` for `linger` (or
/// until Ctrl-C), so a scraper sees the final counts.
fn linger_on(
    poll: &mut Poll,
    e: &mut MetricsEndpoint,
    linger: Duration,
    ctx: ClientCtx<'_>,
) -> Result<()> {
    let until = Instant::now() + linger;
    let mut events = Events::with_capacity(64);
    loop {
        let now = Instant::now();
        if ctx.interrupted() || now >= until {
            return Ok(());
        }
        let mut wake = until.min(now + client::SLICE);
        if let Some(d) = e.next_deadline() {
            wake = wake.min(d);
        }
        if let Err(err) = poll.poll(&mut events, Some(wake.saturating_duration_since(now)))
            && err.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "metrics", &err));
        }
        for ev in events.iter() {
            if e.owns(ev.token()) {
                e.ready(ev.token(), poll.registry());
            }
        }
        e.sweep(Instant::now(), poll.registry());
    }
}

/// How early a probe may leave, so that one wake-up serves the targets
/// due within it: 0.5% of the interval, 2% of the timeout, at most 5 ms.
fn timer_slack(opts: &Options) -> Duration {
    (opts.interval / 200)
        .min(opts.timeout / 50)
        .min(Duration::from_millis(5))
}

fn resolve(t: &Target, ctx: ClientCtx<'_>) -> Result<SocketAddr> {
    let addrs = client::resolve(&t.ep, ctx)?;
    addrs.first().copied().ok_or_else(|| {
        Error::new(
            crate::error::ErrorKind::Dns,
            format!("resolve {}: no addresses", t.ep.host),
        )
    })
}

impl Monitor<'_> {
    /// When probe `index` of target `k` is due.
    fn slot(&self, k: usize, index: u64) -> Instant {
        let n = self.watches.len().max(1) as u32;
        let offset = self.opts.interval * (k as u32) / n;
        self.start
            + offset
            + self
                .opts
                .interval
                .saturating_mul(index.min(u64::from(u32::MAX)) as u32)
    }

    fn finished(&self, index: u64) -> bool {
        self.opts.count.is_some_and(|c| index >= c)
    }

    /// Put target `k`'s next wake-up on the heap.
    fn reschedule(&mut self, k: usize) {
        let at = match &self.phases[k] {
            Phase::Idle { at, .. } => Some(*at),
            Phase::Connecting { give_up, .. } => Some(*give_up),
            Phase::Running(_) | Phase::Done => self.wake[k],
        };
        self.wake[k] = at;
        if let Some(at) = at {
            self.heap.push(Reverse((at, k)));
        }
    }

    /// Target `k`'s time has come.
    fn due(
        &mut self,
        k: usize,
        now: Instant,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        match std::mem::replace(&mut self.phases[k], Phase::Done) {
            Phase::Idle { index, .. } => self.begin(k, index, now, registry, on_event),
            Phase::Connecting {
                mut stream, index, ..
            } => {
                let _ = registry.deregister(&mut stream);
                self.settle_one(k, index, Status::Lost, None, on_event);
                self.idle_after(k, index + 1);
            }
            Phase::Running(p) => {
                self.phases[k] = Phase::Running(p);
                self.turn(k, now, registry, on_event);
            }
            Phase::Done => {}
        }
    }

    /// Start probe `index` of target `k`: a transport, or a connect.
    fn begin(
        &mut self,
        k: usize,
        index: u64,
        now: Instant,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        if self.finished(index) {
            self.phases[k] = Phase::Done;
            return;
        }
        let Some(addr) = self.watches[k].address else {
            self.phases[k] = Phase::Done;
            return;
        };
        let tokens = Tokens::nth(k);
        if self.watches[k].target.kind == Kind::Echo {
            match TcpStream::connect(addr) {
                Ok(mut stream) => {
                    let _ = self.ctx_opts.apply(&stream);
                    match registry.register(&mut stream, tokens.token(CONNECT), Interest::WRITABLE)
                    {
                        Ok(()) => {
                            self.phases[k] = Phase::Connecting {
                                stream,
                                addr,
                                index,
                                give_up: now + self.opts.timeout,
                            };
                        }
                        Err(e) => {
                            self.cannot_start(k, index, &Error::io("register", addr, &e), on_event)
                        }
                    }
                }
                Err(e) => self.cannot_start(k, index, &Error::io("connect", addr, &e), on_event),
            }
            return;
        }
        match self.transport(k, addr) {
            Ok(t) => self.run_transport(k, index, t, registry, now, on_event),
            Err(e) => self.cannot_start(k, index, &e, on_event),
        }
    }

    /// A transport for a target that needs no connect.
    fn transport(&mut self, k: usize, addr: SocketAddr) -> Result<Box<dyn Transport>> {
        let size = self.opts.size;
        Ok(match self.watches[k].target.kind {
            Kind::Udp => Box::new(UdpEcho::new(crate::net::sntp::socket(addr)?, addr, size)?),
            Kind::Sntp => Box::new(SntpProbe::new(addr)?),
            Kind::Icmp => match &self.hubs[usize::from(addr.is_ipv6())] {
                Some(hub) => {
                    let t = HubPing::new(Rc::clone(hub), addr.ip(), size);
                    self.idents[usize::from(addr.is_ipv6())].insert(t.ident(), k);
                    Box::new(t)
                }
                None => {
                    let sock = IcmpSocket::open(addr.is_ipv6(), &SocketOpts::default())?;
                    Box::new(Ping::new(sock, addr.ip(), size))
                }
            },
            Kind::Tcp => Box::new(Tcping::new(addr, self.ctx_opts)),
            Kind::Echo => {
                return Err(Error::bad_value("echo targets connect first"));
            }
        })
    }

    /// A shared ICMP socket is readable: sort what it read, and let each
    /// target that got something take it.
    fn hub_ready(
        &mut self,
        f: usize,
        now: Instant,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        let Some(hub) = self.hubs[f].clone() else {
            return;
        };
        let got = match hub.borrow_mut().read() {
            Ok(g) => g,
            // A failed read loses those packets only; probes time out.
            Err(_) => return,
        };
        for ident in got {
            if let Some(&k) = self.idents[f].get(&ident) {
                self.ready(k, Tokens::nth(k).token(0), now, registry, on_event);
                self.reschedule(k);
            }
        }
    }

    /// Probe with `t` from probe `index` on.
    fn run_transport(
        &mut self,
        k: usize,
        index: u64,
        t: Box<dyn Transport>,
        registry: &Registry,
        now: Instant,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        let plan = Plan {
            count: self.opts.count.map_or(u64::MAX, |c| c - index),
            first_seq: index + 1,
            interval: self.opts.interval,
            deadline: None,
            timeout: self.opts.timeout,
            await_previous: None,
            progress: None,
            light: true,
        };
        let bytes = match self.watches[k].target.kind {
            Kind::Tcp | Kind::Sntp => 0,
            _ => self.opts.size,
        };
        let mut p = Box::new(Prober::starting_at(t, &plan, bytes, self.slot(k, index)));
        match p.register(registry, Tokens::nth(k)) {
            Ok(()) => {
                self.phases[k] = Phase::Running(p);
                self.turn(k, now, registry, on_event);
            }
            Err(e) => self.cannot_start(k, index, &e, on_event),
        }
    }

    /// Probe `index` could not even start: it is a failed probe; try again
    /// at the next slot.
    fn cannot_start(
        &mut self,
        k: usize,
        index: u64,
        e: &Error,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        self.settle_one(k, index, Status::Error, Some(e.message.clone()), on_event);
        self.idle_after(k, index + 1);
    }

    fn idle_after(&mut self, k: usize, index: u64) {
        self.phases[k] = if self.finished(index) {
            Phase::Done
        } else {
            Phase::Idle {
                at: self.slot(k, index),
                index,
            }
        };
    }

    /// Settle probe `index` of target `k` without a transport.
    fn settle_one(
        &mut self,
        k: usize,
        index: u64,
        status: Status,
        error: Option<String>,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        let p = Probe {
            seq: index + 1,
            bytes: 0,
            rtt_ms: None,
            status,
            first_difference: None,
            from: None,
            ttl: None,
            error,
            offset_s: None,
        };
        let w = &mut self.watches[k];
        w.record(&p);
        on_event(&Event::Sample {
            index: k,
            probe: &p,
            watch: w,
        });
    }

    /// Let target `k`'s prober send what is due; note when it next wakes.
    fn turn(
        &mut self,
        k: usize,
        now: Instant,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        let Phase::Running(p) = &mut self.phases[k] else {
            return;
        };
        let w = &mut self.watches[k];
        let mut cb = |ev: &probe::Event<'_>| {
            if let probe::Event::Settled(pr) = ev {
                w.record(pr);
                on_event(&Event::Sample {
                    index: k,
                    probe: pr,
                    watch: w,
                });
            }
        };
        let mut result = Ok(Turn::Again);
        for _ in 0..SENDS_PER_TURN {
            result = p.turn(now, registry, &mut cb);
            if !matches!(result, Ok(Turn::Again)) {
                break;
            }
        }
        match result {
            Ok(Turn::Done) => {
                self.phases[k] = Phase::Done;
                self.wake[k] = None;
            }
            Ok(Turn::Again) => self.wake[k] = Some(now),
            Ok(Turn::Wait(at)) => {
                let _ = p.before_wait(registry);
                self.wake[k] = Some(at);
            }
            Err(e) => self.fail(k, &e, registry, on_event),
        }
    }

    /// The poll reported `token` for target `k`.
    fn ready(
        &mut self,
        k: usize,
        token: Token,
        now: Instant,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        match std::mem::replace(&mut self.phases[k], Phase::Done) {
            Phase::Connecting {
                mut stream,
                addr,
                index,
                give_up,
            } => {
                let result = match stream.take_error() {
                    Ok(Some(e)) | Err(e) => Err(e),
                    Ok(None) => match stream.peer_addr() {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                            // A spurious wake: keep waiting.
                            self.phases[k] = Phase::Connecting {
                                stream,
                                addr,
                                index,
                                give_up,
                            };
                            return;
                        }
                        Err(e) => Err(e),
                    },
                };
                let _ = registry.deregister(&mut stream);
                match result {
                    Ok(()) => {
                        let t = TcpEcho::from_mio(stream, addr, self.opts.size);
                        self.run_transport(k, index, Box::new(t), registry, now, on_event);
                    }
                    Err(e) => {
                        let e = Error::io("connect", addr, &e);
                        self.cannot_start(k, index, &e, on_event);
                    }
                }
            }
            Phase::Running(mut p) => {
                let w = &mut self.watches[k];
                let mut cb = |ev: &probe::Event<'_>| {
                    if let probe::Event::Settled(pr) = ev {
                        w.record(pr);
                        on_event(&Event::Sample {
                            index: k,
                            probe: pr,
                            watch: w,
                        });
                    }
                };
                let r = p.ready(token, registry, &mut cb);
                self.phases[k] = Phase::Running(p);
                match r {
                    Ok(()) => self.turn(k, now, registry, on_event),
                    Err(e) => self.fail(k, &e, registry, on_event),
                }
            }
            other => self.phases[k] = other,
        }
    }

    /// Target `k`'s transport failed: settle what was in flight, start
    /// over at the next slot.
    fn fail(
        &mut self,
        k: usize,
        e: &Error,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        let Phase::Running(mut p) = std::mem::replace(&mut self.phases[k], Phase::Done) else {
            return;
        };
        let w = &mut self.watches[k];
        w.last_error = Some(e.message.clone());
        let mut cb = |ev: &probe::Event<'_>| {
            if let probe::Event::Settled(pr) = ev {
                w.record(pr);
                on_event(&Event::Sample {
                    index: k,
                    probe: pr,
                    watch: w,
                });
            }
        };
        p.fail(&e.message, registry, &mut cb);
        let next = p.next_seq().saturating_sub(1);
        drop(p);
        self.idle_after(k, next);
    }
}
