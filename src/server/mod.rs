//! The server behind `netsh serve`: one mio event loop owns every socket —
//! the TCP listeners (IPv4 and IPv6), the UDP echo sockets on the same port
//! number, the waker that `serve stop` uses, and SIGINT/SIGTERM in the
//! foreground. The SNTP responder and the chat room join this loop later.
//!
//! Tokens: fixed ones for listeners, UDP sockets, the waker and signals;
//! connections get `FIRST_CONN + slot` from a slab with a free list, bounded
//! by `max_clients`. Limits: line length, per-client output queue, idle
//! timeout, client count; out of file descriptors, accepting pauses and is
//! retried when a connection closes or after `ACCEPT_RETRY` (never a busy
//! loop: mio is edge-triggered, see CRATES.md finding 7).

pub mod chat;
pub mod console;
pub mod echo;
pub mod sntp;
#[cfg(target_os = "linux")]
mod udp_batch;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::proto::echo as proto;
use chat::{ChatIn, Deliver, OPERATOR, Room};
use console::{Console, Level};
use echo::{Conn, Mode, Next};

/// Listener tokens: `LISTEN + i` for the i-th bound address.
const LISTEN: usize = 0;
/// UDP echo tokens: `UDP + i`.
const UDP: usize = 8;
const WAKER: Token = Token(16);
const SIGNALS: Token = Token(17);
/// SNTP responder tokens: `NTP + i`.
const NTP: usize = 24;
/// First connection token.
const FIRST_CONN: usize = 32;

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
/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_536;
/// Default for `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Connections one remote address may hold by default, so one client can't
/// take every slot and lock everyone else out.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 64;
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
    /// Stop on SIGINT/SIGTERM (foreground `netsh serve`).
    pub handle_signals: bool,
    /// The SNTP responder; `None` turns it off.
    pub ntp: Option<sntp::NtpConfig>,
    /// Where the chat room logs (`logs/chat`); `None`: no chat log.
    pub chat_log_dir: Option<PathBuf>,
    /// Lines replayed to someone joining the chat.
    pub chat_replay: usize,
    /// Console and log output.
    pub console: Console,
}

/// Counters shared with `serve status` (atomics: read from other threads).
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients accepted since start.
    pub clients_total: AtomicU64,
    /// Clients refused (server full).
    pub refused: AtomicU64,
    /// Bytes read from clients (TCP and UDP).
    pub bytes_in: AtomicU64,
    /// Bytes written to clients (TCP and UDP).
    pub bytes_out: AtomicU64,
    /// Request lines answered.
    pub requests: AtomicU64,
    /// UDP datagrams echoed.
    pub datagrams: AtomicU64,
    /// UDP datagrams not echoed because their source could loop (see
    /// [`could_reflect`]).
    pub datagrams_ignored: AtomicU64,
    /// Datagrams that reached the SNTP port.
    pub ntp_requests: AtomicU64,
    /// SNTP replies sent (kiss-o'-death included).
    pub ntp_replies: AtomicU64,
    /// Datagrams on the SNTP port that were not answered.
    pub ntp_ignored: AtomicU64,
    /// RATE kiss-o'-death replies sent.
    pub ntp_kod: AtomicU64,
}

impl Stats {
    fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    /// A plain copy for reports.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            clients: g(&self.clients),
            clients_total: g(&self.clients_total),
            refused: g(&self.refused),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            requests: g(&self.requests),
            datagrams: g(&self.datagrams),
            datagrams_ignored: g(&self.datagrams_ignored),
            ntp_requests: g(&self.ntp_requests),
            ntp_replies: g(&self.ntp_replies),
            ntp_ignored: g(&self.ntp_ignored),
            ntp_kod: g(&self.ntp_kod),
        }
    }
}

/// [`Stats`] at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Clients connected now.
    pub clients: u64,
    /// Clients accepted since start.
    pub clients_total: u64,
    /// Clients refused because the server was full.
    pub refused: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Request lines answered.
    pub requests: u64,
    /// UDP datagrams echoed.
    pub datagrams: u64,
    /// UDP datagrams not echoed: their source could loop.
    pub datagrams_ignored: u64,
    /// Datagrams that reached the SNTP port.
    pub ntp_requests: u64,
    /// SNTP replies sent.
    pub ntp_replies: u64,
    /// Datagrams on the SNTP port not answered (not a request, or rate-limited).
    pub ntp_ignored: u64,
    /// RATE kiss-o'-death replies sent.
    pub ntp_kod: u64,
}

/// What the operator (console or shell) hands to the loop.
#[derive(Default)]
struct OperatorBox {
    /// Lines the operator typed.
    inbox: VecDeque<String>,
    /// A pending change of attachment: `Some(Some(tx))` join, `Some(None)` leave.
    attach: Option<Option<Sender<String>>>,
}

/// Lines the operator may queue before the loop takes them.
const OPERATOR_INBOX_MAX: usize = 1024;

/// Stops a running server from another thread, reads its counters, and
/// lets the operator take part in the chat room.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    operator: Arc<Mutex<OperatorBox>>,
    /// Live counters.
    pub stats: Arc<Stats>,
}

impl Handle {
    /// Ask the server to shut down (it says goodbye to clients and returns).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Join the chat room as the operator; room lines arrive on the receiver.
    pub fn attach_operator(&self) -> Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut b) = self.operator.lock() {
            b.attach = Some(Some(tx));
        }
        let _ = self.waker.wake();
        rx
    }

    /// Leave the chat room as the operator.
    pub fn detach_operator(&self) {
        if let Ok(mut b) = self.operator.lock() {
            b.attach = Some(None);
        }
        let _ = self.waker.wake();
    }

    /// Say a line in the room as the operator (`/me`, `/who` … work too).
    /// Returns false if the server is not taking lines (gone or flooded).
    pub fn operator_say(&self, line: &str) -> bool {
        let ok = match self.operator.lock() {
            Ok(mut b) if b.inbox.len() < OPERATOR_INBOX_MAX => {
                b.inbox.push_back(line.to_string());
                true
            }
            _ => false,
        };
        ok && self.waker.wake().is_ok()
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    udps: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
    ntps: Vec<UdpSocket>,
    ntp_addrs: Vec<SocketAddr>,
    responder: Option<sntp::Responder>,
    handle: Handle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    cfg_max_clients: usize,
    cfg_max_per_address: usize,
    cfg_limit_loopback: bool,
    /// Open connections per client address (for the per-address limit).
    per_address: HashMap<IpAddr, usize>,
    idle_timeout: Duration,
    console: Console,
    /// "accept paused" was said for the current out-of-descriptors episode.
    accept_paused_said: bool,
    room: Room,
    /// Flow control: members' lines are not read while a member is congested.
    room_paused: bool,
    /// Deliveries produced outside a round (operator joins), sent with the next.
    early: Vec<Deliver>,
    /// Room events waiting to be handled: member, its address, the event.
    chat_events: Vec<(usize, Option<SocketAddr>, ChatIn)>,
    /// Slots of closed connections that the room or a waiting event still
    /// names: they are reused only once the room has handled those events,
    /// so a leaver's late `/quit` can't close a newcomer in its slot.
    held_slots: Vec<usize>,
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
        let (mut listeners, mut udps, addrs) = bind_all(&ips, cfg.port, cfg.bind.is_empty())?;
        let (mut ntps, ntp_addrs) = match &cfg.ntp {
            Some(n) => bind_ntp(&addrs, n.port)?,
            None => (Vec::new(), Vec::new()),
        };
        let registry = poll.registry();
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
            udps,
            addrs,
            ntps,
            ntp_addrs,
            responder: cfg.ntp.as_ref().map(sntp::Responder::new),
            handle: Handle {
                waker: Arc::new(waker),
                stop: Arc::new(AtomicBool::new(false)),
                operator: Arc::new(Mutex::new(OperatorBox::default())),
                stats: Arc::new(Stats::default()),
            },
            signals,
            cfg_max_clients: cfg.max_clients.max(1),
            cfg_max_per_address: cfg.max_per_address,
            cfg_limit_loopback: cfg.limit_loopback,
            per_address: HashMap::new(),
            idle_timeout: cfg.idle_timeout,
            console: cfg.console,
            accept_paused_said: false,
            room: Room::new(cfg.chat_log_dir.clone(), cfg.chat_replay),
            chat_events: Vec::new(),
            held_slots: Vec::new(),
            early: Vec::new(),
            room_paused: false,
        })
    }

    /// The bound addresses (with the real port when 0 was asked for).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The SNTP responder's addresses (empty when it is off).
    pub fn ntp_addrs(&self) -> &[SocketAddr] {
        &self.ntp_addrs
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
        self.room.open_log();
        if self.room.take_log_failure() {
            self.console.say(
                Level::Main,
                "[CHAT] cannot write the chat log under logs/chat; the room goes on without it",
            );
        }
        for a in &self.addrs {
            self.console.say(
                Level::Main,
                &format!("[MAIN] Server running on {a} (TCP echo, UDP echo)"),
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
        let mut events = Events::with_capacity(1024);
        let mut conns: Vec<Option<Conn>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut scratch = vec![0u8; 64 * 1024];
        let mut again: Vec<Token> = Vec::new();
        let mut accept_paused_until: Option<Instant> = None;
        let mut retry_accept = false;
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut shutdown_at: Option<Instant> = None;
        let stats = Arc::clone(&self.handle.stats);

        loop {
            // ---- how long may we sleep?
            let now = Instant::now();
            let mut wake = next_sweep;
            if let Some(t) = accept_paused_until {
                wake = wake.min(t);
            }
            if let Some(t) = shutdown_at {
                wake = wake.min(t);
            }
            let timeout = if !again.is_empty() || retry_accept {
                Duration::ZERO
            } else {
                wake.saturating_duration_since(now)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue; // signals interrupt epoll_wait; mio does not retry
                }
                return Err(Error::io("poll", "event loop", &e));
            }

            let mut ready: Vec<Token> = events.iter().map(|e| e.token()).collect();
            ready.append(&mut again);
            if retry_accept || accept_paused_until.is_some_and(|t| Instant::now() >= t) {
                retry_accept = false;
                accept_paused_until = None;
                ready.extend((0..self.listeners.len()).map(|i| Token(LISTEN + i)));
            }

            for token in ready {
                match token.0 {
                    t if t >= FIRST_CONN => {
                        let slot = t - FIRST_CONN;
                        let Some(Some(conn)) = conns.get_mut(slot) else {
                            continue;
                        };
                        let next = conn.drive(&mut scratch, &stats, &mut self.console);
                        if !conn.events.is_empty() {
                            let peer = conn.peer;
                            self.chat_events
                                .extend(conn.events.drain(..).map(|e| (slot, Some(peer), e)));
                        }
                        match next {
                            Next::Keep(i) | Next::Again(i) => {
                                if conn.registered != i {
                                    match self.poll.registry().reregister(&mut conn.sock, token, i)
                                    {
                                        Ok(()) => conn.registered = i,
                                        Err(_) => {
                                            self.close(
                                                &mut conns,
                                                &mut free,
                                                slot,
                                                "reregister failed",
                                            );
                                            retry_accept |= accept_paused_until.is_some();
                                            continue;
                                        }
                                    }
                                }
                                if matches!(next, Next::Again(_)) {
                                    again.push(token);
                                }
                            }
                            Next::Close(why) => {
                                self.close(&mut conns, &mut free, slot, why);
                                retry_accept |= accept_paused_until.is_some();
                            }
                        }
                    }
                    t if (LISTEN..LISTEN + self.listeners.len()).contains(&t) => {
                        if shutdown_at.is_some() || accept_paused_until.is_some() {
                            continue;
                        }
                        match self.accept(t - LISTEN, &mut conns, &mut free) {
                            Accept::Drained => {}
                            Accept::More => again.push(token),
                            Accept::OutOfFds => {
                                accept_paused_until = Some(Instant::now() + ACCEPT_RETRY);
                            }
                        }
                    }
                    t if (UDP..UDP + self.udps.len()).contains(&t)
                        && self.udp_echo(t - UDP, &mut scratch) =>
                    {
                        again.push(token);
                    }
                    t if (NTP..NTP + self.ntps.len()).contains(&t) => {
                        if let Some(r) = self.responder.as_mut()
                            && r.serve(&self.ntps[t - NTP], &mut scratch, &stats)
                        {
                            again.push(token);
                        }
                    }
                    _ if token == WAKER => self.take_operator(),
                    _ if token == SIGNALS => {
                        if let Some(s) = self.signals.as_mut()
                            && s.pending().next().is_some()
                        {
                            self.handle.stop.store(true, Ordering::SeqCst);
                        }
                    }
                    _ => {}
                }
            }

            // ---- the chat room: log, then deliver; touched connections flush next turn
            if !self.chat_events.is_empty() || !self.early.is_empty() {
                for slot in self.chat_round(&mut conns, &mut free) {
                    again.push(Token(FIRST_CONN + slot));
                }
                for slot in self.room_flow(&mut conns, &mut free) {
                    again.push(Token(FIRST_CONN + slot));
                }
                if self.chat_events.is_empty() {
                    free.append(&mut self.held_slots);
                }
            } else if self.room_paused {
                for slot in self.room_flow(&mut conns, &mut free) {
                    again.push(Token(FIRST_CONN + slot));
                }
            }

            // ---- shutdown: stop accepting, say goodbye, give clients a moment
            if self.handle.stop.load(Ordering::SeqCst) && shutdown_at.is_none() {
                self.console.say(Level::Main, "[MAIN] Shutting down");
                shutdown_at = Some(Instant::now() + SHUTDOWN_GRACE);
                for l in &mut self.listeners {
                    let _ = self.poll.registry().deregister(l);
                }
                self.listeners.clear();
                for (slot, c) in conns.iter_mut().enumerate() {
                    if let Some(c) = c {
                        c.close_with(&proto::reply_bytes(&proto::Reply::Bye(
                            proto::SHUTDOWN_TEXT,
                        )));
                        again.push(Token(FIRST_CONN + slot));
                    }
                }
            }
            if let Some(deadline) = shutdown_at
                && (conns.iter().all(Option::is_none) || Instant::now() >= deadline)
            {
                for slot in 0..conns.len() {
                    if conns[slot].is_some() {
                        self.close(&mut conns, &mut free, slot, "server shutting down");
                    }
                }
                let s = stats.snapshot();
                self.console.say(
                    Level::Main,
                    &format!(
                        "[MAIN] Server stopped: {} clients served, {} requests, {} datagrams, {} bytes in, {} bytes out",
                        s.clients_total, s.requests, s.datagrams, s.bytes_in, s.bytes_out
                    ),
                );
                return Ok(s);
            }

            // ---- periodic: idle and stuck-closing connections
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + SWEEP_EVERY;
                self.console.roll_window();
                let now = Instant::now();
                for slot in 0..conns.len() {
                    let why = match &conns[slot] {
                        Some(c) if c.closing_since.is_some_and(|t| now - t > CLOSE_GRACE) => {
                            Some("did not take its last bytes in time")
                        }
                        // Chat members may listen quietly for hours; the room is bounded.
                        Some(c)
                            if c.mode != Mode::Chat && now - c.last_active > self.idle_timeout =>
                        {
                            Some("idle timeout")
                        }
                        _ => None,
                    };
                    if let Some(why) = why {
                        self.close(&mut conns, &mut free, slot, why);
                        retry_accept |= accept_paused_until.is_some();
                    }
                }
            }
        }
    }

    /// Take what the operator typed and any change of attachment.
    fn take_operator(&mut self) {
        let (lines, attach) = match self.handle.operator.lock() {
            Ok(mut b) => (std::mem::take(&mut b.inbox), b.attach.take()),
            Err(_) => return,
        };
        if let Some(out) = attach {
            let mut deliver = Vec::new();
            if let Some(line) = self.room.set_operator(out, &mut deliver) {
                self.console.say(Level::Info, &format!("[CHAT] {line}"));
            }
            self.pending_deliveries(deliver);
        }
        for l in lines {
            if self.room.contains(OPERATOR) {
                self.chat_events
                    .push((OPERATOR, None, ChatIn::Line(l.into_bytes())));
            }
        }
    }

    fn pending_deliveries(&mut self, d: Vec<Deliver>) {
        // Attachment notices are delivered with the next round.
        self.early.extend(d);
    }

    /// Handle queued room events; returns the connection slots that got output.
    /// Each event's lines go to the members of that moment, so a member who
    /// says something and leaves in one read still gets its own line.
    fn chat_round(&mut self, conns: &mut [Option<Conn>], free: &mut Vec<usize>) -> BTreeSet<usize> {
        let mut touched = BTreeSet::new();
        let mut deliver: Vec<Deliver> = std::mem::take(&mut self.early);
        let mut members: Vec<usize> = Vec::new();
        self.apply(&mut deliver, &mut members, conns, &mut touched);
        // Bounded: leaves caused by drops feed back at most a few rounds.
        for _ in 0..4 {
            for (who, addr, ev) in std::mem::take(&mut self.chat_events) {
                if let Some(line) = self.room.handle(who, addr, ev, &mut deliver) {
                    self.console.say(Level::Info, &format!("[CHAT] {line}"));
                }
                self.apply(&mut deliver, &mut members, conns, &mut touched);
            }
            if self.room.take_log_failure() {
                self.console.say(
                    Level::Main,
                    "[CHAT] cannot write the chat log under logs/chat; the room goes on without it",
                );
            }
            // Members past the hard cap: dropped at once, and the others told.
            let over: Vec<usize> = touched
                .iter()
                .copied()
                .filter(|&s| {
                    self.room.contains(s)
                        && conns
                            .get(s)
                            .and_then(|c| c.as_ref())
                            .is_some_and(|c| c.queued() > chat::MEMBER_HARD_CAP)
                })
                .collect();
            for slot in over {
                self.drop_member(conns, free, slot, &mut deliver);
                touched.remove(&slot);
                self.apply(&mut deliver, &mut members, conns, &mut touched);
            }
            if self.chat_events.is_empty() {
                break;
            }
        }
        touched
    }

    /// Drop a member that stopped reading; the notice goes into `deliver`.
    fn drop_member(
        &mut self,
        conns: &mut [Option<Conn>],
        free: &mut Vec<usize>,
        slot: usize,
        deliver: &mut Vec<Deliver>,
    ) {
        if let Some(line) = self.room.drop_slow(slot, deliver) {
            self.console.say(Level::Main, &format!("[CHAT] {line}"));
        }
        self.close(conns, free, slot, "not reading");
    }

    /// Flow control for the room: stop reading members' lines while any
    /// member has more than [`chat::MEMBER_OUT_CAP`] queued; resume (and
    /// drive every member, since input may wait with no new edge) once all
    /// are below half of it. Members stalled over the cap are dropped.
    /// Returns the slots to drive again.
    fn room_flow(&mut self, conns: &mut [Option<Conn>], free: &mut Vec<usize>) -> Vec<usize> {
        let now = Instant::now();
        let mut most = 0;
        let mut stalled = Vec::new();
        for slot in self.room.member_slots() {
            if let Some(Some(c)) = conns.get(slot) {
                let q = c.queued();
                most = most.max(q);
                // While the room is paused, a member that holds it above the
                // resume mark and takes nothing is as stuck as one over the cap.
                let mark = if self.room_paused {
                    chat::MEMBER_OUT_CAP / 2
                } else {
                    chat::MEMBER_OUT_CAP
                };
                if q > mark && now.duration_since(c.last_progress) > chat::MEMBER_STALL {
                    stalled.push(slot);
                }
            }
        }
        for slot in stalled {
            let mut d = Vec::new();
            self.drop_member(conns, free, slot, &mut d);
            self.early.extend(d);
        }
        let congested = most > chat::MEMBER_OUT_CAP;
        let calm = most <= chat::MEMBER_OUT_CAP / 2;
        let mut wake = Vec::new();
        if congested && !self.room_paused {
            self.room_paused = true;
            for slot in self.room.member_slots() {
                if let Some(Some(c)) = conns.get_mut(slot) {
                    c.paused = true;
                }
            }
        } else if calm && self.room_paused {
            self.room_paused = false;
            for slot in self.room.member_slots() {
                if let Some(Some(c)) = conns.get_mut(slot) {
                    c.paused = false;
                    wake.push(slot);
                }
            }
        }
        wake
    }

    /// Send out what the room produced for one event, to the members now in it.
    fn apply(
        &mut self,
        deliver: &mut Vec<Deliver>,
        members: &mut Vec<usize>,
        conns: &mut [Option<Conn>],
        touched: &mut BTreeSet<usize>,
    ) {
        if deliver.is_empty() {
            return;
        }
        members.clear();
        members.extend(self.room.member_slots());
        for d in deliver.drain(..) {
            match d {
                Deliver::One(OPERATOR, line) => self.send_operator(line),
                Deliver::One(slot, line) => {
                    // A slot freed and reused in this turn is not the member.
                    if let Some(Some(c)) = conns.get_mut(slot)
                        && c.mode == Mode::Chat
                    {
                        c.queue_line(&line);
                        touched.insert(slot);
                    }
                }
                Deliver::All(line) => {
                    for &slot in members.iter() {
                        if let Some(Some(c)) = conns.get_mut(slot)
                            && c.mode == Mode::Chat
                        {
                            c.queue_line(&line);
                            touched.insert(slot);
                        }
                    }
                    self.send_operator(line);
                }
                Deliver::Close(slot) => {
                    if let Some(Some(c)) = conns.get_mut(slot) {
                        c.close_with(b"");
                        touched.insert(slot);
                    }
                }
            }
        }
    }

    fn send_operator(&mut self, line: String) {
        if let Some(tx) = &self.room.operator_out
            && tx.send(line).is_err()
        {
            // The operator's side went away without detaching: leave for it.
            let mut d = Vec::new();
            if let Some(l) = self.room.set_operator(None, &mut d) {
                self.console.say(Level::Info, &format!("[CHAT] {l}"));
            }
            self.early.extend(d);
        }
    }

    fn accept(&mut self, i: usize, conns: &mut Vec<Option<Conn>>, free: &mut Vec<usize>) -> Accept {
        let stats = Arc::clone(&self.handle.stats);
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut sock, peer) = match self.listeners[i].accept() {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accept::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    if !self.accept_paused_said {
                        self.accept_paused_said = true;
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
            let live = stats.clients.load(Ordering::Relaxed) as usize;
            if live >= self.cfg_max_clients {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = sock.write(&proto::reply_bytes(&proto::Reply::Full));
                let _ = sock.shutdown(std::net::Shutdown::Write);
                self.console
                    .say(Level::Info, &format!("[MAIN] Refused {peer}: server full"));
                continue;
            }
            let ip = peer.ip();
            let held = self.per_address.get(&ip).copied().unwrap_or(0);
            if self.cfg_max_per_address > 0
                && held >= self.cfg_max_per_address
                && (self.cfg_limit_loopback || !ip.is_loopback())
            {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = sock.write(&proto::too_many_reply(ip, self.cfg_max_per_address));
                let _ = sock.shutdown(std::net::Shutdown::Write);
                self.console.say(
                    Level::Info,
                    &format!("[MAIN] Refused {peer}: {held} connections from that address already"),
                );
                continue;
            }
            let _ = sock.set_nodelay(true);
            let slot = free.pop().unwrap_or_else(|| {
                conns.push(None);
                conns.len() - 1
            });
            if self
                .poll
                .registry()
                .register(&mut sock, Token(FIRST_CONN + slot), Interest::READABLE)
                .is_err()
            {
                free.push(slot);
                continue;
            }
            conns[slot] = Some(Conn::new(sock, peer));
            *self.per_address.entry(ip).or_insert(0) += 1;
            self.accept_paused_said = false;
            stats.clients.fetch_add(1, Ordering::Relaxed);
            stats.clients_total.fetch_add(1, Ordering::Relaxed);
            self.console
                .say(Level::Info, &format!("[MAIN] Connected by {peer}"));
        }
        Accept::More
    }

    fn close(&mut self, conns: &mut [Option<Conn>], free: &mut Vec<usize>, slot: usize, why: &str) {
        if let Some(mut c) = conns[slot].take() {
            let _ = self.poll.registry().deregister(&mut c.sock);
            let ip = c.peer.ip();
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
            if self.room.contains(slot) {
                let why = if why == "client closed" { "left" } else { why };
                self.chat_events
                    .push((slot, Some(c.peer), ChatIn::Gone(static_reason(why))));
            }
            self.handle.stats.clients.fetch_sub(1, Ordering::Relaxed);
            if self.room.contains(slot) || self.chat_events.iter().any(|e| e.0 == slot) {
                self.held_slots.push(slot);
            } else {
                free.push(slot);
            }
            self.console.say(
                Level::Info,
                &format!("[MAIN] Disconnected {} ({why})", c.peer),
            );
        }
    }

    /// Echo datagrams; true if the turn's cap was hit (more may be waiting).
    fn udp_echo(&mut self, i: usize, scratch: &mut [u8]) -> bool {
        let stats = &self.handle.stats;
        let sock = &self.udps[i];
        let cap = scratch.len().min(MAX_DATAGRAM);
        let buf = &mut scratch[..cap];
        // udps[i] is bound where addrs[i] says: no system call per event.
        let own_port = self.addrs.get(i).map_or(0, SocketAddr::port);
        for _ in 0..UDP_PER_TURN {
            match sock.recv_from(buf) {
                Ok((n, peer)) if could_reflect(peer, own_port) => {
                    stats.add_in(n);
                    stats.datagrams_ignored.fetch_add(1, Ordering::Relaxed);
                    self.console.say(
                        Level::Debug,
                        &format!("[UDP] ignored {n} bytes from {peer}: an echo there could loop"),
                    );
                }
                Ok((n, peer)) => {
                    stats.add_in(n);
                    // A full send buffer drops the echo: UDP promises nothing more.
                    if sock.send_to(&buf[..n], peer).is_ok() {
                        stats.add_out(n);
                        stats.datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                    self.console
                        .say(Level::Debug, &format!("[UDP] {n} bytes from {peer}"));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {} // e.g. a queued ICMP error: skip it
            }
        }
        true
    }
}

/// Whether echoing to `peer` could start a loop that never ends: a
/// datagram spoofed from our own address, from another echo server on our
/// port, or from a well-known service port (echo 7, chargen 19, daytime 13,
/// NTP 123…) would be answered by a reply, answered in turn, forever. Real
/// clients send from ephemeral ports (1024 and up), so they never match.
fn could_reflect(peer: SocketAddr, own_port: u16) -> bool {
    peer.port() < 1024 || peer.port() == own_port
}

enum Accept {
    Drained,
    More,
    OutOfFds,
}

/// Close reasons as `'static` text for room notices.
fn static_reason(why: &str) -> &'static str {
    match why {
        "left" => "left",
        "idle timeout" => "idle timeout",
        "not reading" => "not reading",
        "server shutting down" => "server shutting down",
        "connection reset by client" => "connection reset",
        "client went away" => "connection lost",
        _ => "connection closed",
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the machine, not the client, is out of something.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

type Bound = (Vec<TcpListener>, Vec<UdpSocket>, Vec<SocketAddr>);

/// Bind TCP and UDP on every address with one port number. With port 0 the
/// first TCP bind picks it; if another address or UDP cannot get the same
/// number, start over (a few times).
fn bind_all(ips: &[IpAddr], port: u16, default_pair: bool) -> Result<Bound> {
    let attempts = if port == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        match bind_once(ips, port, default_pair) {
            Ok(b) => return Ok(b),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::bad_value("no address to bind")))
}

fn bind_once(ips: &[IpAddr], port: u16, default_pair: bool) -> Result<Bound> {
    let mut listeners = Vec::new();
    let mut udps = Vec::new();
    let mut addrs = Vec::new();
    let mut port = port;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let tcp = match tcp_listener(addr) {
            Ok(l) => l,
            // No IPv6 on this machine: serve IPv4 alone rather than fail.
            Err(e) if default_pair && ip.is_ipv6() && e.kind() != io::ErrorKind::AddrInUse => {
                continue;
            }
            Err(e) => return Err(bind_error("bind TCP", addr, &e)),
        };
        let local = tcp
            .local_addr()
            .map_err(|e| Error::io("bind TCP", addr, &e))?;
        port = local.port();
        let udp = udp_socket(local).map_err(|e| bind_error("bind UDP", local, &e))?;
        listeners.push(tcp);
        udps.push(udp);
        addrs.push(local);
    }
    Ok((listeners, udps, addrs))
}

/// Bind the SNTP responder on the same addresses as the echo listeners.
fn bind_ntp(addrs: &[SocketAddr], port: u16) -> Result<(Vec<UdpSocket>, Vec<SocketAddr>)> {
    let mut socks = Vec::new();
    let mut bound = Vec::new();
    let mut port = port;
    for a in addrs {
        let addr = SocketAddr::new(a.ip(), port);
        let s = udp_socket(addr).map_err(|e| {
            let err = bind_error("bind SNTP", addr, &e);
            if e.kind() == io::ErrorKind::PermissionDenied {
                err.with_hint(
                    "port 123 needs privileges: use --ntp-port 5123 (the default) or run as root",
                )
            } else {
                err.with_hint("choose another --ntp-port (0 picks a free one), or --no-ntp")
            }
        })?;
        let local = s
            .local_addr()
            .map_err(|e| Error::io("bind SNTP", addr, &e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // Without kernel timestamps the responder reads the clock instead.
            let _ = udp_batch::enable_timestamps(s.as_raw_fd());
        }
        port = local.port();
        socks.push(s);
        bound.push(local);
    }
    Ok((socks, bound))
}

fn bind_error(op: &str, addr: SocketAddr, e: &io::Error) -> Error {
    let err = Error::io(op, addr, e);
    if e.kind() == io::ErrorKind::AddrInUse {
        err.with_hint(
            "another program uses this port: choose another with --port (0 picks a free one)",
        )
    } else {
        err
    }
}

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?; // IPv4 has its own socket
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into()))
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}
