//! The server behind `netsh serve`: one mio event loop owns every socket —
//! the TCP listeners (IPv4 and IPv6), the UDP echo sockets on the same port
//! number, the SNTP responder, the waker that `serve stop` and the operator
//! use, and SIGINT/SIGTERM in the foreground. Files, in the order a request
//! meets them:
//!
//! - [`bind`]: the sockets; `mod.rs` (this file): the loop and its tokens;
//! - [`conns`]: the slab of connections; [`conn`]: one TCP connection's
//!   state machine (line protocol, stream echo, chat member, closing);
//! - [`hub`]: the chat room's queues and flow control around [`chat`]'s
//!   `Room`; [`sntp`] (+ `udp_batch` on Linux): the SNTP responder;
//! - [`handle`]: what other threads hold (stop, counters, operator);
//!   [`console`]: the rate-limited console and server log.
//!
//! Tokens: fixed ones for listeners, UDP sockets, the waker and signals;
//! connections get `FIRST_CONN + slot`, bounded by `max_clients`. Limits:
//! line length, per-client output queue, idle timeout, client count; out of
//! file descriptors, accepting pauses and is retried when a connection
//! closes or after `ACCEPT_RETRY` (never a busy loop: mio is edge-triggered,
//! and a full backlog gives no new edge).

pub mod access;
mod bind;
pub mod chat;
pub mod conn;
mod conns;
pub mod console;
pub mod handle;
pub mod hub;
pub mod limit;
pub mod metrics;
pub mod sntp;
pub mod tls;
#[cfg(target_os = "linux")]
mod udp_batch;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::error::{Error, Result};
use crate::proto::echo as proto;
use conn::{Conn, Mode, Next, Reads};
use conns::Conns;
use console::{Console, Level};
pub use handle::{Handle, OperatorView, Refusal, Stats, StatsSnapshot};
use hub::ChatHub;

/// Listener tokens: `LISTEN + i` for the i-th bound address.
const LISTEN: usize = 0;
/// UDP echo tokens: `UDP + i`.
const UDP: usize = 8;
const WAKER: Token = Token(16);
const SIGNALS: Token = Token(17);
/// SNTP responder tokens: `NTP + i`.
const NTP: usize = 24;
/// TLS listener tokens: `TLS_LISTEN + i`.
const TLS_LISTEN: usize = 32;
/// First connection token.
const FIRST_CONN: usize = 48;
/// The metrics endpoint's tokens: far above any connection slot.
const METRICS: usize = 1 << 40;

/// How long accepting stays paused after EMFILE before it is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How often idle and closing connections are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Longest a closing connection may take to take its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// On shutdown, how long clients get to receive the goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Datagrams handled per readiness event before yielding.
const UDP_PER_TURN: usize = 256;
/// Accepts per readiness event before yielding.
const ACCEPTS_PER_TURN: usize = 256;
/// Default for `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Connections one remote address may hold by default, so one client can't
/// take every slot and lock everyone else out.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 64;
/// Default `--udp-rate-limit`: datagrams per second one source (an IPv4
/// address, an IPv6 /64) gets echoed, with a burst of two seconds' worth;
/// enough for any probe and for UDP tests at a steady rate, and it caps
/// what a forged source can make the server reflect at someone.
pub const DEFAULT_UDP_RATE: limit::Rate = limit::Rate {
    per_sec: 1000.0,
    burst: 2000.0,
};
/// Default for `--line-timeout`: as a web server's request-header timeout.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `--chat-idle`: the netsh chat client sends `/ping` each minute.
pub const DEFAULT_CHAT_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default for `--idle-timeout`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// How to run the server.
pub struct ServerConfig {
    /// Addresses to bind; empty means `0.0.0.0` and `::` (IPv6-only socket).
    pub bind: Vec<IpAddr>,
    /// TCP and UDP port; 0 picks a free one (the same for all addresses).
    pub port: u16,
    /// Clients beyond this get `ERR server full`.
    pub max_clients: usize,
    /// Connections one address may hold (0: no limit); more get `ERR too
    /// many connections from …`.
    pub max_per_address: usize,
    /// Whether that limit applies to loopback clients too (off by default:
    /// a local user can stop the server anyway, and local load tests hold
    /// thousands of connections).
    pub limit_loopback: bool,
    /// Connections with no traffic for this long are closed.
    pub idle_timeout: Duration,
    /// A line must be whole within this long of its first byte (slowloris).
    pub line_timeout: Duration,
    /// Chat members that sent nothing (not even `/ping`) this long are
    /// closed; `None`: never.
    pub chat_idle: Option<Duration>,
    /// What one address may cost the chat room.
    pub chat_limits: hub::ChatLimits,
    /// Datagrams per second each source gets echoed; `None`: no limit.
    pub udp_rate_limit: Option<limit::Rate>,
    /// Prefix an IPv6 source is counted under by every per-source limit.
    pub v6_prefix: u8,
    /// Stop on SIGINT/SIGTERM (foreground `netsh serve`).
    pub handle_signals: bool,
    /// The SNTP responder; `None` turns it off.
    pub ntp: Option<sntp::NtpConfig>,
    /// Where the chat room logs (`logs/chat`); `None`: no chat log.
    pub chat_log_dir: Option<PathBuf>,
    /// How much of the chat log is kept.
    pub chat_log_keep: chat::Retention,
    /// Lines replayed to someone joining the chat.
    pub chat_replay: usize,
    /// Console and log output.
    pub console: Console,
    /// Where to serve `/metrics` for Prometheus; `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// Echo and chat over TLS on a port of their own; `None`: no TLS.
    pub tls: Option<tls::TlsSetup>,
    /// The chat room's key (`--chat-key`): joining needs its proof.
    pub chat_key: Option<std::sync::Arc<Vec<u8>>>,
    /// Who may use any service (`--allow`, `--deny`); empty: everyone.
    pub access: access::Access,
}

/// The limits of [`ServerConfig`] the loop applies to every client.
struct Limits {
    max_clients: usize,
    max_per_address: usize,
    limit_loopback: bool,
    idle_timeout: Duration,
    line_timeout: Duration,
    chat_idle: Option<Duration>,
}

/// Why the sweep closes a connection.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    /// Closing, and its last bytes were not taken in time.
    CloseGrace,
    /// A line begun and never ended (slowloris).
    SlowLine,
    /// A chat member that sent nothing for too long.
    ChatIdle,
    /// No traffic at all for the idle timeout.
    Idle,
    /// A TLS handshake not finished within the line timeout.
    Handshake,
}

impl Expiry {
    fn why(self) -> &'static str {
        match self {
            Expiry::CloseGrace => "did not take its last bytes in time",
            Expiry::SlowLine => "line not finished in time",
            Expiry::ChatIdle => "silent in the room too long",
            Expiry::Idle => "idle timeout",
            Expiry::Handshake => "TLS handshake not finished in time",
        }
    }

    fn refusal(self) -> Option<Refusal> {
        match self {
            Expiry::CloseGrace => None,
            Expiry::SlowLine => Some(Refusal::SlowLine),
            Expiry::ChatIdle => Some(Refusal::ChatIdle),
            Expiry::Idle => Some(Refusal::IdleTimeout),
            Expiry::Handshake => Some(Refusal::TlsHandshake),
        }
    }
}

impl Limits {
    /// Whether `c` has outstayed a limit at `now`, and which.
    fn expired(&self, c: &Conn, now: Instant) -> Option<Expiry> {
        let over = |since: Instant, limit: Duration| now.saturating_duration_since(since) > limit;
        if c.closing_since.is_some_and(|t| over(t, CLOSE_GRACE)) {
            return Some(Expiry::CloseGrace);
        }
        // A TLS peer gets as long for its handshake as for a line: one
        // that stops half-way does not keep its slot.
        if c.handshaking() && over(c.accepted, self.line_timeout) {
            return Some(Expiry::Handshake);
        }
        // A line begun and never ended: a slowloris peer holding a slot
        // with a byte now and then. Not while the room holds members'
        // input back (congestion is ours, not theirs).
        if !c.paused && c.line_started.is_some_and(|t| over(t, self.line_timeout)) {
            return Some(Expiry::SlowLine);
        }
        if c.mode == Mode::Chat {
            // Members may listen quietly, but not for ever: the netsh
            // client says /ping each minute.
            return self
                .chat_idle
                .is_some_and(|d| over(c.last_heard, d))
                .then_some(Expiry::ChatIdle);
        }
        over(c.last_active, self.idle_timeout).then_some(Expiry::Idle)
    }

    /// The line a peer closed for `e` is sent, if any.
    fn notice(&self, e: Expiry) -> Option<String> {
        match e {
            Expiry::SlowLine => Some(format!(
                "ERR line not finished within {}; closing",
                crate::units::format_duration(self.line_timeout)
            )),
            Expiry::ChatIdle => Some(format!(
                "ERR nothing heard from you in {} (send /ping to stay); closing",
                crate::units::format_duration(self.chat_idle.unwrap_or_default())
            )),
            Expiry::CloseGrace | Expiry::Idle | Expiry::Handshake => None,
        }
    }
}

/// When the loop must wake, and what it must retry without a new event.
struct Schedule {
    /// Tokens to handle again next turn (a fairness cap was hit, or output
    /// was queued for them).
    again: Vec<Token>,
    /// Accepting is paused (out of descriptors) until then.
    accept_paused_until: Option<Instant>,
    /// "accept paused" was said for the current out-of-descriptors episode.
    accept_paused_said: bool,
    /// A connection closed while accepting was paused: retry at once.
    retry_accept: bool,
    next_sweep: Instant,
    /// Shutting down: clients get until then to take their goodbye.
    shutdown_at: Option<Instant>,
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// The TLS listeners (`tls_addrs[i]`), and what their sessions share.
    tls_listeners: Vec<TcpListener>,
    tls_addrs: Vec<SocketAddr>,
    tls: Option<tls::TlsSetup>,
    chat_key: Option<std::sync::Arc<Vec<u8>>>,
    udps: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
    ntps: Vec<UdpSocket>,
    ntp_addrs: Vec<SocketAddr>,
    responder: Option<sntp::Responder>,
    handle: Handle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    limits: Limits,
    console: Console,
    conns: Conns,
    hub: ChatHub,
    sched: Schedule,
    /// One read buffer for every socket.
    scratch: Vec<u8>,
    /// UDP bulk flows: token → the slot of the control connection.
    udp_flows: std::collections::HashMap<u32, usize>,
    /// `/metrics`, when asked for.
    metrics: Option<metrics::Endpoint>,
    /// Per-source budget of the UDP echo.
    udp_limit: Option<limit::Limiter>,
    /// The last echo to each peer, to see it reflected back.
    udp_mirror: limit::Mirror,
    /// `--allow`/`--deny`, checked first for every service.
    gate: access::Gate,
}

impl Server {
    /// Bind the listeners and UDP sockets and register everything.
    ///
    /// # Errors
    /// `addr-in-use` when the port is taken (with the hint to choose another),
    /// or the OS error naming the address.
    pub fn bind(cfg: ServerConfig) -> Result<Server> {
        let poll = Poll::new().map_err(|e| Error::io("create poll", "epoll", &e))?;
        let ips = if cfg.bind.is_empty() {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            cfg.bind.clone()
        };
        let (mut listeners, mut udps, addrs) = bind::bind_all(&ips, cfg.port, cfg.bind.is_empty())?;
        let (mut ntps, ntp_addrs) = match &cfg.ntp {
            Some(n) => bind::bind_ntp(&addrs, n.port)?,
            None => (Vec::new(), Vec::new()),
        };
        let (mut tls_listeners, tls_addrs) = match &cfg.tls {
            Some(t) => bind::bind_tls(&addrs, t.port)?,
            None => (Vec::new(), Vec::new()),
        };
        let registry = poll.registry();
        for (i, l) in tls_listeners.iter_mut().enumerate() {
            registry
                .register(l, Token(TLS_LISTEN + i), Interest::READABLE)
                .map_err(|e| Error::io("register", tls_addrs[i], &e))?;
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            registry
                .register(l, Token(LISTEN + i), Interest::READABLE)
                .map_err(|e| Error::io("register", addrs[i], &e))?;
        }
        for (i, u) in udps.iter_mut().enumerate() {
            registry
                .register(u, Token(UDP + i), Interest::READABLE)
                .map_err(|e| Error::io("register", addrs[i], &e))?;
        }
        for (i, u) in ntps.iter_mut().enumerate() {
            registry
                .register(u, Token(NTP + i), Interest::READABLE)
                .map_err(|e| Error::io("register", ntp_addrs[i], &e))?;
        }
        let waker =
            Waker::new(registry, WAKER).map_err(|e| Error::io("create waker", "epoll", &e))?;
        let handle = Handle::new(waker);
        let metrics = match cfg.metrics {
            Some(addr) => {
                let mut m = metrics::Endpoint::bind(
                    addr,
                    metrics::ServerCollector::registry(std::sync::Arc::clone(&handle.stats)),
                )?;
                m.register(registry, METRICS)?;
                Some(m)
            }
            None => None,
        };
        let signals = if cfg.handle_signals {
            let mut s = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])
            .map_err(|e| Error::io("install signal handlers", "SIGINT/SIGTERM", &e))?;
            registry
                .register(&mut s, SIGNALS, Interest::READABLE)
                .map_err(|e| Error::io("register", "signals", &e))?;
            Some(s)
        } else {
            None
        };
        Ok(Server {
            poll,
            listeners,
            tls_listeners,
            tls_addrs,
            tls: cfg.tls,
            chat_key: cfg.chat_key,
            udps,
            addrs,
            ntps,
            ntp_addrs,
            responder: cfg.ntp.as_ref().map(sntp::Responder::new),
            handle,
            signals,
            limits: Limits {
                max_clients: cfg.max_clients.max(1),
                max_per_address: cfg.max_per_address,
                limit_loopback: cfg.limit_loopback,
                idle_timeout: cfg.idle_timeout,
                line_timeout: cfg.line_timeout,
                chat_idle: cfg.chat_idle,
            },
            console: cfg.console,
            conns: Conns::new(cfg.v6_prefix),
            hub: ChatHub::new(
                cfg.chat_log_dir,
                cfg.chat_log_keep,
                cfg.chat_replay,
                cfg.chat_limits,
            ),
            sched: Schedule {
                again: Vec::new(),
                accept_paused_until: None,
                accept_paused_said: false,
                retry_accept: false,
                next_sweep: Instant::now() + SWEEP_EVERY,
                shutdown_at: None,
            },
            scratch: vec![0u8; 256 * 1024],
            udp_flows: std::collections::HashMap::new(),
            metrics,
            udp_limit: cfg
                .udp_rate_limit
                .map(|r| limit::Limiter::new(r, cfg.v6_prefix)),
            udp_mirror: limit::Mirror::default(),
            gate: access::Gate::new(cfg.access),
        })
    }

    /// The bound addresses (with the real port when 0 was asked for).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS listeners' addresses (empty without TLS).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The TLS certificate's SHA-256 fingerprint, if TLS is on.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.fingerprint.as_str())
    }

    /// The SNTP responder's addresses (empty when it is off).
    pub fn ntp_addrs(&self) -> &[SocketAddr] {
        &self.ntp_addrs
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(metrics::Endpoint::local_addr)
    }

    /// A handle to stop the server and read its counters.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Run until stopped (handle, or a signal in the foreground). Returns the
    /// final counters.
    ///
    /// # Errors
    /// Only when the poll itself fails; a bad client never stops the server.
    pub fn run(mut self) -> Result<StatsSnapshot> {
        self.hub.open_log(&mut self.console);
        self.announce();
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(self.sleep_for())) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue; // signals interrupt epoll_wait; mio does not retry
                }
                return Err(Error::io("poll", "event loop", &e));
            }
            for (token, reads) in self.ready(&events) {
                self.dispatch(token, reads);
            }
            // The chat room: log, then deliver, then print what the room
            // said (its console lines wait until the members' lines are out).
            self.console.hold();
            let turn = self
                .hub
                .turn(&mut self.conns, &self.handle.stats, &mut self.console);
            for slot in turn.close {
                self.handle.stats.refuse(Refusal::NotReading);
                self.close(slot, "not reading");
            }
            self.handle
                .stats
                .chat_members
                .store(self.hub.members() as u64, Ordering::Relaxed);
            // Members with new output write it now; those the flow control
            // let go read again on the next turn.
            for slot in turn.flush {
                self.drive_conn(slot, Reads::None);
            }
            self.console.release();
            let drive = turn.drive.into_iter().map(|s| Token(FIRST_CONN + s));
            self.sched.again.extend(drive);
            if !self.hub.has_events() {
                self.conns.release_held();
            }
            if self.handle.stopping() && self.sched.shutdown_at.is_none() {
                self.begin_shutdown();
            }
            if let Some(stats) = self.finish_shutdown() {
                return Ok(stats);
            }
            if Instant::now() >= self.sched.next_sweep {
                self.sweep();
            }
        }
    }

    /// Say where the server listens.
    fn announce(&mut self) {
        for a in &self.addrs {
            self.console.say(
                Level::Main,
                &format!("[MAIN] Server running on {a} (TCP echo, UDP echo)"),
            );
        }
        if let Some(t) = &self.tls {
            for a in &self.tls_addrs {
                self.console.say(
                    Level::Main,
                    &format!("[TLS] Serving echo and chat over TLS on {a}"),
                );
            }
            self.console.say(
                Level::Main,
                &format!(
                    "[TLS] Certificate SHA-256 {} ({}); clients: --tls --pin {}",
                    t.fingerprint,
                    t.origin,
                    t.fingerprint.replace(':', "")
                ),
            );
        }
        if let Some(m) = &self.metrics {
            self.console.say(
                Level::Main,
                &format!(
                    "[METRICS] Serving Prometheus metrics on http://{}/metrics",
                    m.local_addr()
                ),
            );
        }
        if let Some(r) = &self.responder {
            let c = *r.clock();
            for a in &self.ntp_addrs {
                self.console.say(
                    Level::Main,
                    &format!(
                        "[SNTP] Answering on {a} (stratum {}, reference LOCL, precision 2^{} s, from the system clock)",
                        c.stratum, c.precision
                    ),
                );
            }
        }
        let say = |r: Option<limit::Rate>| {
            r.map_or_else(
                || "no limit".to_string(),
                |r| format!("{}/s (burst {})", r.per_sec, r.burst),
            )
        };
        let mut budget = format!(
            "[MAIN] Per source: UDP echo {}",
            say(self.udp_limit.as_ref().map(limit::Limiter::rate))
        );
        if let Some(r) = &self.responder {
            budget.push_str(&format!(", SNTP {}", say(r.rate())));
        }
        let c = self.hub.limits();
        budget.push_str(&format!(
            ", chat {} lines and {} bytes, {} members{}",
            say(c.lines),
            say(c.bytes),
            if c.per_address == 0 {
                "any number of".to_string()
            } else {
                c.per_address.to_string()
            },
            if c.limit_loopback {
                ""
            } else {
                " (loopback exempt)"
            }
        ));
        self.console.say(Level::Info, &budget);
    }

    /// How long the next poll may sleep: not at all if work is waiting,
    /// else until the next timer (sweep, accept retry, shutdown deadline).
    fn sleep_for(&self) -> Duration {
        let s = &self.sched;
        if !s.again.is_empty() || s.retry_accept {
            return Duration::ZERO;
        }
        // Scrapes past their deadline are closed by the sweep.
        let wake = [s.accept_paused_until, s.shutdown_at]
            .into_iter()
            .flatten()
            .fold(s.next_sweep, Instant::min);
        wake.saturating_duration_since(Instant::now())
    }

    /// The tokens to handle this turn: the poll's events, what was left for
    /// again, and the listeners when a paused accept is due.
    /// With each, how a connection behind it reads: a fresh edge with no
    /// end of stream or error in it ends at a short read.
    fn ready(&mut self, events: &Events) -> Vec<(Token, Reads)> {
        let mut ready: Vec<(Token, Reads)> = events
            .iter()
            .map(|e| {
                let edge = e.is_readable() && !e.is_read_closed() && !e.is_error();
                (e.token(), if edge { Reads::Edge } else { Reads::Full })
            })
            .collect();
        ready.extend(self.sched.again.drain(..).map(|t| (t, Reads::Full)));
        let s = &mut self.sched;
        if s.retry_accept || s.accept_paused_until.is_some_and(|t| Instant::now() >= t) {
            s.retry_accept = false;
            s.accept_paused_until = None;
            let listeners = (0..self.listeners.len()).map(|i| Token(LISTEN + i));
            let tls = (0..self.tls_listeners.len()).map(|i| Token(TLS_LISTEN + i));
            ready.extend(listeners.chain(tls).map(|t| (t, Reads::Full)));
        }
        ready
    }

    /// Say the sources denied lately (each at most once a minute).
    fn say_denied(&mut self) {
        for (service, ip) in self.gate.take_said() {
            self.console.say(
                Level::Main,
                &format!("[ACCESS] Denied {service} from {ip}: not allowed by --allow/--deny"),
            );
        }
    }

    /// Handle one ready token.
    fn dispatch(&mut self, token: Token, reads: Reads) {
        self.dispatch_token(token, reads);
        self.say_denied();
    }

    fn dispatch_token(&mut self, token: Token, reads: Reads) {
        if let Some(m) = self.metrics.as_mut()
            && m.owns(token)
        {
            m.ready(token, self.poll.registry());
            return;
        }
        match token.0 {
            t if t >= FIRST_CONN => self.drive_conn(t - FIRST_CONN, reads),
            t if (LISTEN..LISTEN + self.listeners.len()).contains(&t)
                || (TLS_LISTEN..TLS_LISTEN + self.tls_listeners.len()).contains(&t) =>
            {
                if self.sched.shutdown_at.is_some() || self.sched.accept_paused_until.is_some() {
                    return;
                }
                let which = if t >= TLS_LISTEN {
                    Listener::Tls(t - TLS_LISTEN)
                } else {
                    Listener::Plain(t - LISTEN)
                };
                match self.accept(which) {
                    Accept::Drained => {}
                    Accept::More => self.sched.again.push(token),
                    Accept::OutOfFds => {
                        self.sched.accept_paused_until = Some(Instant::now() + ACCEPT_RETRY);
                    }
                }
            }
            t if (UDP..UDP + self.udps.len()).contains(&t) && self.udp_echo(t - UDP) => {
                self.sched.again.push(token);
            }
            t if (NTP..NTP + self.ntps.len()).contains(&t) => {
                if let Some(r) = self.responder.as_mut()
                    && r.serve(
                        &self.ntps[t - NTP],
                        self.ntp_addrs.get(t - NTP).map_or(0, SocketAddr::port),
                        &mut self.scratch,
                        &self.handle.stats,
                        &mut self.gate,
                    )
                {
                    self.sched.again.push(token);
                }
            }
            _ if token == WAKER => {
                let input = self.handle.take_operator();
                self.hub.operator(input, &mut self.console);
            }
            _ if token == SIGNALS => {
                if let Some(s) = self.signals.as_mut()
                    && s.pending().next().is_some()
                {
                    self.handle.stop();
                }
            }
            _ => {}
        }
    }

    /// Let a connection do what its socket allows, and act on what it says next.
    fn drive_conn(&mut self, slot: usize, reads: Reads) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut next = conn.drive(
            &mut self.scratch,
            &self.handle.stats,
            &mut self.console,
            reads,
        );
        if conn.udp_wanted {
            conn.udp_wanted = false;
            if self.udp_flows.len() < MAX_UDP_FLOWS {
                let token = loop {
                    let t = random_token();
                    if !self.udp_flows.contains_key(&t) {
                        break t;
                    }
                };
                self.udp_flows.insert(token, slot);
                conn.udp_flow = Some(conn::UdpFlow::new(token));
                conn.queue_line(&format!("OK {token}"));
                self.console.say(
                    Level::Info,
                    &format!("[BULK] {} started a UDP test", conn.peer),
                );
            } else {
                conn.queue_line(&format!(
                    "ERR too many UDP bulk tests (max {MAX_UDP_FLOWS})"
                ));
            }
            // Written on the next turn.
            if let Next::Keep(i) = next {
                next = Next::Again(i);
            }
        }
        if !conn.events.is_empty() {
            self.hub.push(slot, conn.peer, conn.events.drain(..));
        }
        let token = Token(FIRST_CONN + slot);
        match next {
            Next::Keep(i) | Next::Again(i) => {
                if conn.registered != i {
                    match self.poll.registry().reregister(&mut conn.sock, token, i) {
                        Ok(()) => conn.registered = i,
                        Err(_) => {
                            self.close(slot, "reregister failed");
                            return;
                        }
                    }
                }
                if matches!(next, Next::Again(_)) {
                    self.sched.again.push(token);
                }
            }
            Next::Close(why) => self.close(slot, why),
        }
    }

    /// Stop accepting, say goodbye to every client, give them a moment.
    fn begin_shutdown(&mut self) {
        self.console.say(Level::Main, "[MAIN] Shutting down");
        self.sched.shutdown_at = Some(Instant::now() + SHUTDOWN_GRACE);
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        for l in &mut self.tls_listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.tls_listeners.clear();
        let bye = proto::reply_bytes(&proto::Reply::Bye(proto::SHUTDOWN_TEXT));
        for slot in self.conns.open_slots() {
            if let Some(c) = self.conns.get_mut(slot) {
                c.close_with(&bye);
                self.sched.again.push(Token(FIRST_CONN + slot));
            }
        }
    }

    /// Once every client is gone or the grace period is over: close the rest
    /// and return the final counters.
    fn finish_shutdown(&mut self) -> Option<StatsSnapshot> {
        let deadline = self.sched.shutdown_at?;
        if !self.conns.is_empty() && Instant::now() < deadline {
            return None;
        }
        for slot in self.conns.open_slots() {
            self.close(slot, "server shutting down");
        }
        let s = self.handle.stats.snapshot();
        self.console.say(
            Level::Main,
            &format!(
                "[MAIN] Server stopped: {} clients served, {} requests, {} datagrams, {} bytes in, {} bytes out",
                s.clients_total, s.requests, s.datagrams, s.bytes_in, s.bytes_out
            ),
        );
        Some(s)
    }

    /// Periodic: close idle connections and ones stuck closing.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.sched.next_sweep = now + SWEEP_EVERY;
        self.console.roll_window();
        if let Some(m) = self.metrics.as_mut() {
            m.sweep(now, self.poll.registry());
        }
        let quiet = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        for slot in self.conns.open_slots() {
            if let Some(c) = self.conns.get_mut(slot) {
                c.trim(quiet);
            }
            let Some(e) = self
                .conns
                .get(slot)
                .and_then(|c| self.limits.expired(c, now))
            else {
                continue;
            };
            if let Some(r) = e.refusal() {
                self.handle.stats.refuse(r);
            }
            // One try at telling the peer why, never a wait: the socket is
            // usually empty.
            if let (Some(line), Some(c)) = (self.limits.notice(e), self.conns.get_mut(slot)) {
                c.try_say(&line);
            }
            self.close(slot, e.why());
        }
    }

    /// Accept what the listener has, up to a fair share per turn.
    fn accept(&mut self, which: Listener) -> Accept {
        let stats = &self.handle.stats;
        let (listener, tls) = match which {
            Listener::Plain(i) => (&self.listeners[i], None),
            Listener::Tls(i) => (&self.tls_listeners[i], self.tls.as_ref()),
        };
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut sock, peer) = match listener.accept() {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accept::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    if !self.sched.accept_paused_said {
                        self.sched.accept_paused_said = true;
                        self.console.say(
                            Level::Main,
                            &format!("[MAIN] accept paused: {e}; retrying when a client leaves"),
                        );
                    }
                    return Accept::OutOfFds;
                }
                // ECONNABORTED and friends: that client is gone, try the next.
                Err(_) => continue,
            };
            // Not allowed: closed without a byte read or written.
            if !self.gate.admit("TCP", peer.ip()) {
                stats.denied_tcp.fetch_add(1, Ordering::Relaxed);
                drop(sock);
                continue;
            }
            let live = stats.clients.load(Ordering::Relaxed) as usize;
            if live >= self.limits.max_clients {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                stats.refuse(Refusal::ServerFull);
                // A TLS peer would read these bytes as a broken record: it
                // gets the close alone.
                if tls.is_none() {
                    let _ = sock.write(&proto::reply_bytes(&proto::Reply::Full));
                }
                let _ = sock.shutdown(std::net::Shutdown::Write);
                self.console
                    .say(Level::Info, &format!("[MAIN] Refused {peer}: server full"));
                continue;
            }
            let ip = peer.ip();
            let held = self.conns.held_by(ip);
            let max = self.limits.max_per_address;
            if max > 0 && held >= max && (self.limits.limit_loopback || !ip.is_loopback()) {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                stats.refuse(Refusal::TooManyPerAddress);
                if tls.is_none() {
                    let _ = sock.write(&proto::too_many_reply(ip, max));
                }
                let _ = sock.shutdown(std::net::Shutdown::Write);
                self.console.say(
                    Level::Info,
                    &format!("[MAIN] Refused {peer}: {held} connections from that address already"),
                );
                continue;
            }
            let _ = sock.set_nodelay(true);
            let registry = self.poll.registry();
            let mut conn = Conn::new(sock, peer);
            conn.chat_key.clone_from(&self.chat_key);
            if let Some(t) = tls {
                match tls::Tls::new(&t.config) {
                    Ok(s) => conn.tls = Some(Box::new(s)),
                    Err(_) => continue,
                }
            }
            let inserted = self.conns.insert(conn, |c, slot| {
                registry.register(&mut c.sock, Token(FIRST_CONN + slot), Interest::READABLE)
            });
            if inserted.is_err() {
                continue;
            }
            self.sched.accept_paused_said = false;
            stats.clients.fetch_add(1, Ordering::Relaxed);
            stats.clients_total.fetch_add(1, Ordering::Relaxed);
            self.console.say(
                Level::Info,
                &format!(
                    "[MAIN] Connected by {peer}{}",
                    if tls.is_some() { " (TLS)" } else { "" }
                ),
            );
        }
        Accept::More
    }

    /// Close the connection in `slot` (the one place connections end).
    fn close(&mut self, slot: usize, why: &str) {
        // Held back while the room or a waiting room event names it.
        let hold = self.hub.names(slot);
        let Some(mut c) = self.conns.remove(slot, hold) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.sock);
        if let Some(f) = &c.udp_flow {
            self.udp_flows.remove(&f.token);
        }
        self.hub.gone(slot, c.peer, why);
        self.handle.stats.clients.fetch_sub(1, Ordering::Relaxed);
        self.console.say(
            Level::Info,
            &format!("[MAIN] Disconnected {} ({why})", c.peer),
        );
        // A descriptor came free: a paused accept may go on.
        self.sched.retry_accept |= self.sched.accept_paused_until.is_some();
    }

    /// Echo datagrams; true if the turn's cap was hit (more may be waiting).
    fn udp_echo(&mut self, i: usize) -> bool {
        let fd = self.udps[i].as_raw_fd();
        let cap = self.scratch.len().min(crate::net::gso::GRO_BUFFER);
        let mut budget = UDP_PER_TURN;
        while budget > 0 {
            let got = match crate::net::gso::recv_from(fd, &mut self.scratch[..cap]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    budget -= 1;
                    continue; // e.g. a queued ICMP error: skip it
                }
            };
            let scratch = std::mem::take(&mut self.scratch);
            // One datagram, or a GRO run of them from one sender.
            for data in got.datagrams(&scratch) {
                budget = budget.saturating_sub(1);
                self.udp_datagram(i, data, got.from, got.local);
            }
            self.scratch = scratch;
        }
        true
    }

    /// One datagram that came in on UDP socket `i` from `peer`, to our
    /// address `local` (where the socket is on the wildcard).
    fn udp_datagram(
        &mut self,
        i: usize,
        data: &[u8],
        peer: SocketAddr,
        local: Option<crate::net::pktinfo::Local>,
    ) {
        let stats = &self.handle.stats;
        let n = data.len();
        if !self.gate.admit("UDP", peer.ip()) {
            stats.denied_udp.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.add_in(n);
        let now = Instant::now();
        if let Some(h) = crate::proto::bulk::header(data) {
            // A UDP bulk datagram: counted for the flow a TCP handshake
            // opened (same address), never echoed, whatever the budget.
            match self
                .udp_flows
                .get(&h.token)
                .and_then(|&slot| self.conns.get_mut(slot))
            {
                Some(c) if c.peer.ip() == peer.ip() => {
                    if let Some(f) = &mut c.udp_flow {
                        f.datagram(h, data, now);
                        c.last_active = now;
                    }
                }
                _ => {
                    stats.datagrams_ignored.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        // udps[i] is bound where addrs[i] says: no system call per datagram.
        let own_port = self.addrs.get(i).map_or(0, SocketAddr::port);
        let digest = self.udp_mirror.digest(data);
        if limit::could_reflect(peer, own_port) || self.udp_mirror.is_reflection(peer, digest, now)
        {
            stats.datagrams_ignored.fetch_add(1, Ordering::Relaxed);
            self.console.say(
                Level::Debug,
                &format!("[UDP] ignored {n} bytes from {peer}: an echo there could loop"),
            );
            return;
        }
        if let Some(l) = &mut self.udp_limit
            && let limit::Verdict::Over { notice } = l.check(peer.ip(), now)
        {
            stats.datagrams_limited.fetch_add(1, Ordering::Relaxed);
            if notice {
                self.console.say(
                    Level::Debug,
                    &format!(
                        "[UDP] {peer} is over its rate limit ({}/s): not echoed",
                        l.rate()
                    ),
                );
            }
            return;
        }
        // A full send buffer drops the echo: UDP promises nothing more.
        let fd = self.udps[i].as_raw_fd();
        if crate::net::pktinfo::send_to(fd, data, peer, local).is_ok() {
            self.udp_mirror.sent(peer, digest, now);
            stats.add_out(n);
            stats.datagrams.fetch_add(1, Ordering::Relaxed);
        }
        self.console
            .say(Level::Debug, &format!("[UDP] {n} bytes from {peer}"));
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy)]
enum Listener {
    Plain(usize),
    Tls(usize),
}

/// Most UDP bulk flows open at once.
const MAX_UDP_FLOWS: usize = 64;

/// A token for a UDP bulk flow: not guessable from outside (std's per-process
/// random hash keys over the clock).
fn random_token() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

enum Accept {
    Drained,
    More,
    OutOfFds,
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the machine, not the client, is out of something.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}
