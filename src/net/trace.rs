//! The path to a host, hop by hop (traceroute, mtr), on one private mio
//! loop: every hop is probed at once, not one after another, so a whole
//! table takes about one round trip plus the slowest hop's answer.
//!
//! A probe is sent with a limited TTL (hop limit); the router where it runs
//! out answers ICMP "time exceeded", the destination answers the probe
//! itself. Three methods, as traceroute has them:
//!
//! - `udp`: a datagram to an unlikely port (33434 and up, one per probe);
//!   the destination answers "port unreachable". Each probe has its own
//!   connected socket, and ICMP errors arrive on its error queue
//!   (`IP_RECVERR`): no privileges needed.
//! - `tcp`: a SYN to a port (80); the destination answers SYN-ACK or reset.
//!   One socket per probe, errors on its error queue, as for UDP.
//! - `icmp`: an echo request (the ping socket, see [`crate::net::ping`]);
//!   the destination answers an echo reply.
//!
//! A round sends `queries` probes to every hop from `first_hop` to
//! `max_hops` (after the first round, only up to the destination), at most
//! [`MAX_IN_FLIGHT`] at once. Rounds repeat every `interval` for `rounds`
//! (`--report`, the live view); names are looked up in the background.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::net::client::{self, ClientCtx};
use crate::net::ping::{self, Heard, IcmpSocket, SocketOpts};
use crate::net::sock;
use crate::stats::{Rtt, RttStats};

/// Probes in flight at once (each UDP or TCP probe holds a socket).
pub const MAX_IN_FLIGHT: usize = 128;
/// Highest `max_hops`.
pub const MAX_HOPS: u8 = 64;
/// The first port of UDP probes, as traceroute's.
pub const UDP_BASE_PORT: u16 = 33434;
/// Payload of a UDP probe (traceroute's 60-byte packets over IPv4).
const UDP_PAYLOAD: usize = 32;
/// Probes sent before the loop reads answers again.
const SEND_BURST: usize = 4;
/// How long the second probe of every hop waits for the destination to be
/// known (the third twice as long), so that the destination is not sent a
/// probe for every hop beyond it, and rate-limits its answers.
const STAGGER: Duration = Duration::from_millis(100);
const ICMP_TOKEN: Token = Token(usize::MAX - 1);

/// How probes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// UDP datagrams to unlikely ports (traceroute's default).
    Udp,
    /// ICMP echo requests.
    Icmp,
    /// TCP SYNs to a port (through firewalls that let the port in).
    Tcp,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How probes travel.
    pub method: Method,
    /// UDP: the first port (one more per probe); TCP: the port.
    pub port: u16,
    /// The first TTL probed.
    pub first_hop: u8,
    /// The last TTL probed.
    pub max_hops: u8,
    /// Probes per hop per round.
    pub queries: u8,
    /// Rounds (1: a traceroute table).
    pub rounds: u32,
    /// From one round's start to the next.
    pub interval: Duration,
    /// A probe with no answer after this long is lost.
    pub timeout: Duration,
    /// Look up the names of hops.
    pub names: bool,
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A router on the way answered: time exceeded.
    Hop,
    /// The destination answered.
    Reached,
    /// Someone answered "unreachable" (`!H`, `!N`, `!P`, `!X`…).
    Unreachable,
    /// No answer in time.
    Lost,
}

/// One probe of the last round.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Who answered; `null` if nobody.
    pub address: Option<IpAddr>,
    /// Round trip in ms; `null` if lost.
    pub rtt_ms: Option<f64>,
    /// How it ended.
    pub outcome: Outcome,
    /// traceroute's mark for an unreachable (`!H`, `!N`, `!P`, `!X`, `!<n>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
}

/// One hop over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// Its TTL (hop limit), from 1.
    pub ttl: u8,
    /// Every address that answered for it, in the order first seen.
    pub addresses: Vec<IpAddr>,
    /// The name of the first address, once looked up.
    pub name: Option<String>,
    /// Probes sent to it.
    pub sent: u64,
    /// Probes it answered.
    pub received: u64,
    /// Percent not answered.
    pub loss_pct: f64,
    /// The most recent RTT, ms.
    pub last_ms: Option<f64>,
    /// RTT summary over all rounds (`min` is mtr's best, `max` its worst,
    /// `mdev` its StDev).
    pub rtt: Option<RttStats>,
    /// The probes of the last round, in the order sent.
    pub probes: Vec<ProbeResult>,
    #[serde(skip)]
    rtt_acc: Rtt,
}

/// The state of the trace, after each round and at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The address traced.
    pub address: IpAddr,
    /// How probes travel.
    pub method: Method,
    /// UDP's first port or TCP's port; `null` for ICMP.
    pub port: Option<u16>,
    /// The last TTL probed.
    pub max_hops: u8,
    /// Probes per hop per round.
    pub queries: u8,
    /// Rounds done.
    pub rounds: u32,
    /// Whether the destination answered.
    pub reached: bool,
    /// Every hop up to the destination (or `max_hops`).
    pub hops: Vec<Hop>,
    /// True if Ctrl-C cut it short.
    pub interrupted: bool,
}

/// A probe in flight.
struct Flying {
    ttl: u8,
    /// Index among this hop's probes of the round.
    query: usize,
    sent: Instant,
    sock: Option<ProbeSock>,
}

/// The socket of one UDP or TCP probe.
enum ProbeSock {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// What a probe met: how it ended, who answered, when, traceroute's mark.
struct Met {
    outcome: Outcome,
    from: Option<IpAddr>,
    at: Instant,
    mark: Option<String>,
}

/// One trace in progress: the poll, the sockets, what is known so far.
struct Tracer<'p> {
    plan: &'p Plan,
    dst: IpAddr,
    poll: Poll,
    events: Events,
    /// The ICMP method's one socket.
    icmp: Option<IcmpSocket>,
    t: Trace,
    /// The lowest TTL at which the destination (or a refusal) answered.
    dest_ttl: Option<u8>,
    next_id: u64,
    buf: Vec<u8>,
    heard: Vec<Heard>,
    names: Names,
}

/// Reverse lookups in the background.
struct Names {
    on: bool,
    tx: mpsc::Sender<(IpAddr, Option<String>)>,
    rx: mpsc::Receiver<(IpAddr, Option<String>)>,
    /// Looked up (`Some("")`: no name), or asked for (`None`).
    known: HashMap<IpAddr, Option<String>>,
    /// Waiting for the resolver to have room.
    wanted: Vec<IpAddr>,
}

/// One round's probes.
struct Round {
    /// Not yet sent, the next last: query by query, hop by hop.
    queue: Vec<(u8, usize)>,
    flying: BTreeMap<u64, Flying>,
    results: Vec<(u8, usize, ProbeResult)>,
    started: Instant,
}

/// Trace to `dst`; `on_round` sees the state after every round, for a live
/// view.
///
/// # Errors
/// Socket errors that stop every probe (no ICMP socket, no route at all);
/// a lost probe or an unreachable is a result, not an error.
pub fn run(
    dst: IpAddr,
    plan: &Plan,
    ctx: ClientCtx<'_>,
    on_round: &mut dyn FnMut(&Trace),
) -> Result<Trace> {
    let mut tr = Tracer::new(dst, plan)?;
    let start = Instant::now();
    for round in 0..plan.rounds {
        if !tr.wait_until(start + plan.interval * round, ctx) || !tr.round(ctx)? {
            tr.t.interrupted = true;
            break;
        }
        tr.t.rounds = round + 1;
        tr.names.take(&mut tr.t);
        on_round(&tr.t);
    }
    tr.names.wait_for_last(ctx, &mut tr.t);
    finish(&mut tr.t);
    Ok(tr.t)
}

impl<'p> Tracer<'p> {
    fn new(dst: IpAddr, plan: &'p Plan) -> Result<Tracer<'p>> {
        let poll = Poll::new().map_err(|e| Error::io("create poll", "epoll", &e))?;
        let icmp = match plan.method {
            Method::Icmp => {
                let s = IcmpSocket::open(dst.is_ipv6(), &SocketOpts::default())?;
                s.register(poll.registry(), ICMP_TOKEN)?;
                Some(s)
            }
            _ => None,
        };
        let (tx, rx) = mpsc::channel();
        Ok(Tracer {
            plan,
            dst,
            poll,
            events: Events::with_capacity(256),
            icmp,
            t: Trace {
                address: dst,
                method: plan.method,
                port: (plan.method != Method::Icmp).then_some(plan.port),
                max_hops: plan.max_hops,
                queries: plan.queries,
                rounds: 0,
                reached: false,
                hops: Vec::new(),
                interrupted: false,
            },
            dest_ttl: None,
            next_id: 0,
            buf: vec![0u8; 2048],
            heard: Vec::new(),
            names: Names {
                on: plan.names,
                tx,
                rx,
                known: HashMap::new(),
                wanted: Vec::new(),
            },
        })
    }

    /// Sleep until `at` (the next round's start); false on Ctrl-C.
    fn wait_until(&mut self, at: Instant, ctx: ClientCtx<'_>) -> bool {
        while Instant::now() < at {
            if ctx.interrupted() {
                return false;
            }
            self.names.take(&mut self.t);
            std::thread::sleep((at - Instant::now()).min(client::SLICE));
        }
        true
    }

    /// One round: every hop up to the destination (once known), `queries`
    /// probes each. False on Ctrl-C.
    fn round(&mut self, ctx: ClientCtx<'_>) -> Result<bool> {
        let first = self.plan.first_hop;
        let last = self.dest_ttl.unwrap_or(self.plan.max_hops);
        for ttl in first..=last {
            hop_mut(&mut self.t, ttl).probes.clear();
        }
        let mut queue: Vec<(u8, usize)> = (0..usize::from(self.plan.queries))
            .flat_map(|q| (first..=last).map(move |ttl| (ttl, q)))
            .collect();
        queue.reverse();
        let mut r = Round {
            queue,
            flying: BTreeMap::new(),
            results: Vec::new(),
            started: Instant::now(),
        };
        loop {
            if ctx.interrupted() {
                return Ok(false);
            }
            let sent = self.send_some(&mut r)?;
            self.expire(&mut r);
            if r.flying.is_empty() && r.queue.is_empty() {
                break;
            }
            self.read(&mut r, sent)?;
        }
        self.fold(r.results);
        Ok(true)
    }

    /// Send while there is room, a few at a time, so the loop reads answers
    /// in between: a burst would queue behind itself and add its own delay
    /// to every hop's time. The second and later probes of a hop wait until
    /// the destination is known (so nothing is sent beyond it), or for a
    /// moment. Returns how many went.
    fn send_some(&mut self, r: &mut Round) -> Result<usize> {
        let mut sent = 0;
        while r.flying.len() < MAX_IN_FLIGHT && sent < SEND_BURST {
            let Some(&(ttl, query)) = r.queue.last() else {
                break;
            };
            if self.dest_ttl.is_some_and(|d| ttl > d) {
                r.queue.pop();
                continue;
            }
            if self.held(r, query) {
                break;
            }
            r.queue.pop();
            let id = self.next_id;
            self.next_id += 1;
            let (sock, at) = send_probe(
                self.plan,
                self.dst,
                ttl,
                id,
                self.icmp.as_ref(),
                self.poll.registry(),
            )?;
            hop_mut(&mut self.t, ttl).sent += 1;
            r.flying.insert(
                id,
                Flying {
                    ttl,
                    query,
                    sent: at,
                    sock,
                },
            );
            sent += 1;
        }
        Ok(sent)
    }

    /// Whether probe `query` of a hop waits for the destination to be known.
    fn held(&self, r: &Round, query: usize) -> bool {
        query > 0 && self.dest_ttl.is_none() && Instant::now() < self.release(r, query)
    }

    fn release(&self, r: &Round, query: usize) -> Instant {
        r.started + STAGGER * query as u32
    }

    /// Give up on probes past their timeout, and on those beyond the
    /// destination (not needed: they are not counted as sent).
    fn expire(&mut self, r: &mut Round) {
        let now = Instant::now();
        let timeout = self.plan.timeout;
        let dest = self.dest_ttl;
        let gone: Vec<u64> = r
            .flying
            .iter()
            .filter(|(_, f)| now >= f.sent + timeout || dest.is_some_and(|d| f.ttl > d))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(f) = r.flying.remove(&id) {
                drop_sock(f.sock, self.poll.registry());
                if dest.is_some_and(|d| f.ttl > d) {
                    let h = hop_mut(&mut self.t, f.ttl);
                    h.sent = h.sent.saturating_sub(1);
                } else {
                    r.results.push((f.ttl, f.query, lost()));
                }
            }
        }
    }

    /// Wait (until an answer, a timeout, or the next probe's turn) and read
    /// what came.
    fn read(&mut self, r: &mut Round, sent: usize) -> Result<()> {
        let now = Instant::now();
        let next_turn = match r.queue.last() {
            Some(_) if sent == SEND_BURST || r.flying.len() >= MAX_IN_FLIGHT => now,
            Some(&(_, q)) if self.held(r, q) => self.release(r, q),
            Some(_) => now,
            None => now + client::SLICE,
        };
        let wake = r
            .flying
            .values()
            .map(|f| f.sent + self.plan.timeout)
            .min()
            .unwrap_or(now + client::SLICE)
            .min(next_turn)
            .min(now + client::SLICE);
        if let Err(e) = self
            .poll
            .poll(&mut self.events, Some(wake.saturating_duration_since(now)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "trace", &e));
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for token in tokens {
            if token == ICMP_TOKEN {
                self.read_icmp(r)?;
                continue;
            }
            let id = token.0 as u64;
            let Some(f) = r.flying.get_mut(&id) else {
                continue;
            };
            if let Some(m) = sock_result(f, self.dst, &mut self.buf) {
                self.settle(r, id, m);
            }
        }
        Ok(())
    }

    fn read_icmp(&mut self, r: &mut Round) -> Result<()> {
        let Some(s) = &self.icmp else {
            return Ok(());
        };
        s.drain(&mut self.buf, &mut self.heard)
            .map_err(|e| Error::io("read ICMP from", self.dst, &e))?;
        let last = self.next_id.saturating_sub(1);
        for h in std::mem::take(&mut self.heard) {
            if let Some((id, m)) = icmp_result(h, self.dst, last) {
                self.settle(r, id, m);
            }
        }
        Ok(())
    }

    /// Record what probe `id` met, and free its socket.
    fn settle(&mut self, r: &mut Round, id: u64, m: Met) {
        let Some(f) = r.flying.remove(&id) else {
            return;
        };
        drop_sock(f.sock, self.poll.registry());
        // The path ends here: at the destination, or where it is refused.
        if matches!(m.outcome, Outcome::Reached | Outcome::Unreachable) {
            self.dest_ttl = Some(self.dest_ttl.map_or(f.ttl, |d| d.min(f.ttl)));
        }
        r.results.push((
            f.ttl,
            f.query,
            ProbeResult {
                address: m.from,
                rtt_ms: Some(m.at.saturating_duration_since(f.sent).as_secs_f64() * 1e3),
                outcome: m.outcome,
                mark: m.mark,
            },
        ));
    }

    /// Fold a round's results into the hops, in the order probes were sent.
    fn fold(&mut self, mut results: Vec<(u8, usize, ProbeResult)>) {
        results.sort_by_key(|(ttl, q, _)| (*ttl, *q));
        for (ttl, _, r) in results {
            if self.dest_ttl.is_some_and(|d| ttl > d) {
                continue;
            }
            let h = hop_mut(&mut self.t, ttl);
            if let Some(a) = r.address {
                if !h.addresses.contains(&a) {
                    h.addresses.push(a);
                }
                self.names.want(a);
            }
            if let Some(ms) = r.rtt_ms {
                h.received += 1;
                h.rtt_acc.record(ms);
                h.last_ms = Some(ms);
            }
            h.probes.push(r);
        }
        self.names.ask();
        self.t.reached = self.dest_ttl.is_some();
        if let Some(d) = self.dest_ttl {
            self.t.hops.retain(|h| h.ttl <= d);
        }
        finish(&mut self.t);
    }
}

impl Names {
    fn want(&mut self, a: IpAddr) {
        if self.on && !self.known.contains_key(&a) && !self.wanted.contains(&a) {
            self.wanted.push(a);
        }
    }

    /// Start lookups for the wanted addresses (as far as the resolver has room).
    fn ask(&mut self) {
        let (tx, known) = (&self.tx, &mut self.known);
        self.wanted.retain(|&a| {
            if crate::net::addr::reverse_lookup(a, tx.clone()) {
                known.insert(a, None);
                false
            } else {
                true
            }
        });
    }

    /// Take the names that came back, and show them.
    fn take(&mut self, t: &mut Trace) {
        while let Ok((ip, name)) = self.rx.try_recv() {
            self.known.insert(ip, Some(name.unwrap_or_default()));
        }
        self.apply(t);
    }

    /// The last names: wait for them a moment (each lookup has its own
    /// thread; a dead resolver costs at most this wait).
    fn wait_for_last(&mut self, ctx: ClientCtx<'_>, t: &mut Trace) {
        if !self.on {
            return;
        }
        self.ask();
        let until = Instant::now() + ctx.timeout.min(Duration::from_secs(2));
        while self.known.values().any(Option::is_none)
            && Instant::now() < until
            && !ctx.interrupted()
        {
            match self.rx.recv_timeout(client::SLICE) {
                Ok((ip, name)) => {
                    self.known.insert(ip, Some(name.unwrap_or_default()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.apply(t);
    }

    fn apply(&self, t: &mut Trace) {
        for h in &mut t.hops {
            if let Some(a) = h.addresses.first()
                && let Some(Some(n)) = self.known.get(a)
                && !n.is_empty()
            {
                h.name = Some(n.clone());
            }
        }
    }
}

fn hop_mut(t: &mut Trace, ttl: u8) -> &mut Hop {
    let i = match t.hops.binary_search_by_key(&ttl, |h| h.ttl) {
        Ok(i) => i,
        Err(i) => {
            t.hops.insert(
                i,
                Hop {
                    ttl,
                    addresses: Vec::new(),
                    name: None,
                    sent: 0,
                    received: 0,
                    loss_pct: 0.0,
                    last_ms: None,
                    rtt: None,
                    probes: Vec::new(),
                    rtt_acc: Rtt::default(),
                },
            );
            i
        }
    };
    &mut t.hops[i]
}

/// Recompute what is derived from the counts.
fn finish(t: &mut Trace) {
    for h in &mut t.hops {
        h.loss_pct = if h.sent == 0 {
            0.0
        } else {
            h.sent.saturating_sub(h.received) as f64 * 100.0 / h.sent as f64
        };
        h.rtt = h.rtt_acc.summary();
    }
}

fn lost() -> ProbeResult {
    ProbeResult {
        address: None,
        rtt_ms: None,
        outcome: Outcome::Lost,
        mark: None,
    }
}

fn drop_sock(s: Option<ProbeSock>, registry: &mio::Registry) {
    match s {
        Some(ProbeSock::Udp(mut u)) => {
            let _ = registry.deregister(&mut u);
        }
        Some(ProbeSock::Tcp(mut t)) => {
            let _ = registry.deregister(&mut t);
        }
        None => {}
    }
}

/// Send probe `id` with `ttl`; UDP and TCP probes get a socket of their own.
fn send_probe(
    plan: &Plan,
    dst: IpAddr,
    ttl: u8,
    id: u64,
    icmp: Option<&IcmpSocket>,
    registry: &mio::Registry,
) -> Result<(Option<ProbeSock>, Instant)> {
    let v6 = dst.is_ipv6();
    let token = Token(id as usize);
    match plan.method {
        Method::Icmp => {
            let Some(s) = icmp else {
                return Ok((None, Instant::now()));
            };
            s.set_ttl(ttl)?;
            let mut out = Vec::with_capacity(64);
            let payload = ping::payload(id, UDP_PAYLOAD);
            let at = Instant::now();
            match s.send_echo(dst, id as u16, &payload, &mut out) {
                Ok(()) => Ok((None, at)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((None, at)),
                Err(e) => Err(Error::io("send an echo request to", dst, &e)),
            }
        }
        Method::Udp => {
            let port = plan.port.wrapping_add((id % 1024) as u16);
            let to = SocketAddr::new(dst, port);
            let local: SocketAddr = if v6 {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let u =
                std::net::UdpSocket::bind(local).map_err(|e| Error::io("bind UDP for", to, &e))?;
            sock::enable_errors_and_ttl(u.as_raw_fd(), v6)
                .map_err(|e| Error::io("set options for", to, &e))?;
            sock::set_ttl(u.as_raw_fd(), v6, ttl)
                .map_err(|e| Error::io("set the TTL for", to, &e))?;
            u.set_nonblocking(true)
                .map_err(|e| Error::io("set non-blocking", to, &e))?;
            u.connect(to)
                .map_err(|e| Error::io("connect UDP", to, &e))?;
            let mut u = UdpSocket::from_std(u);
            registry
                .register(&mut u, token, Interest::READABLE)
                .map_err(|e| Error::io("register", to, &e))?;
            // A refusal of the send itself is read back as the probe's answer.
            let payload = ping::payload(id, UDP_PAYLOAD);
            let at = Instant::now();
            let _ = u.send(&payload);
            Ok((Some(ProbeSock::Udp(u)), at))
        }
        Method::Tcp => {
            let to = SocketAddr::new(dst, plan.port);
            let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| Error::io("open a TCP socket for", to, &e))?;
            sock::enable_errors_and_ttl(s.as_raw_fd(), v6)
                .map_err(|e| Error::io("set options for", to, &e))?;
            sock::set_ttl(s.as_raw_fd(), v6, ttl)
                .map_err(|e| Error::io("set the TTL for", to, &e))?;
            s.set_nonblocking(true)
                .map_err(|e| Error::io("set non-blocking", to, &e))?;
            let at = Instant::now();
            match s.connect(&SockAddr::from(to)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                // Read back through the socket like any other answer.
                Err(_) => {}
            }
            let mut t = TcpStream::from_std(s.into());
            registry
                .register(&mut t, token, Interest::WRITABLE | Interest::READABLE)
                .map_err(|e| Error::io("register", to, &e))?;
            Ok((Some(ProbeSock::Tcp(t)), at))
        }
    }
}

/// What a UDP or TCP probe's socket says, if it has said something yet.
fn sock_result(f: &mut Flying, dst: IpAddr, buf: &mut [u8]) -> Option<Met> {
    let fd = match &f.sock {
        Some(ProbeSock::Udp(u)) => u.as_raw_fd(),
        Some(ProbeSock::Tcp(t)) => t.as_raw_fd(),
        None => return None,
    };
    // An ICMP error (a hop, or an unreachable) comes first.
    if let Ok(Some(q)) = sock::recv_error(fd, buf)
        && q.icmp
    {
        return Some(classify_icmp(
            dst.is_ipv6(),
            q.kind,
            q.code,
            q.offender,
            dst,
            q.at,
        ));
    }
    let reached = |at| Met {
        outcome: Outcome::Reached,
        from: Some(dst),
        at,
        mark: None,
    };
    match &mut f.sock {
        Some(ProbeSock::Udp(u)) => match u.recv(buf) {
            // Something answers UDP on that port: the destination.
            Ok(_) => Some(reached(Instant::now())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(reached(Instant::now())),
            Err(_) => None,
        },
        Some(ProbeSock::Tcp(t)) => {
            let at = Instant::now();
            match t.take_error() {
                Ok(None) => match t.peer_addr() {
                    // The handshake completed: the destination.
                    Ok(_) => {
                        let _ = t.read(&mut [0u8; 1]);
                        Some(reached(at))
                    }
                    Err(_) => None,
                },
                // A reset from the destination is an answer too.
                Ok(Some(e)) | Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    Some(reached(at))
                }
                Ok(Some(_)) | Err(_) => None,
            }
        }
        None => None,
    }
}

/// A time exceeded is a hop; an unreachable from the destination (port
/// unreachable for UDP) is the destination; any other unreachable ends the
/// path with traceroute's mark.
fn classify_icmp(
    v6: bool,
    kind: u8,
    code: u8,
    from: Option<IpAddr>,
    dst: IpAddr,
    at: Instant,
) -> Met {
    let met = |outcome, mark| Met {
        outcome,
        from,
        at,
        mark,
    };
    if ping::is_time_exceeded(v6, kind) {
        return met(Outcome::Hop, None);
    }
    let port_unreachable = if v6 {
        kind == 1 && code == 4
    } else {
        kind == 3 && code == 3
    };
    if port_unreachable && from == Some(dst) {
        return met(Outcome::Reached, None);
    }
    met(Outcome::Unreachable, Some(mark(v6, kind, code)))
}

/// traceroute's marks: `!N` network, `!H` host, `!P` protocol or port, `!F`
/// fragmentation needed, `!X` administratively prohibited, else `!<code>`.
fn mark(v6: bool, kind: u8, code: u8) -> String {
    let m = if v6 {
        match (kind, code) {
            (1, 0) => "!N",
            (1, 1) => "!X",
            (1, 3) => "!H",
            (1, 4) => "!P",
            (2, _) => "!F",
            _ => return format!("!<{code}>"),
        }
    } else {
        match (kind, code) {
            (3, 0 | 6) => "!N",
            (3, 1 | 7) => "!H",
            (3, 2 | 3) => "!P",
            (3, 4) => "!F",
            (3, 9 | 10 | 13) => "!X",
            _ => return format!("!<{code}>"),
        }
    };
    m.to_string()
}

/// What the ICMP socket heard, as (probe, what it met); `last` is the last
/// probe sent (probes are numbered by ICMP's 16-bit sequence).
fn icmp_result(h: Heard, dst: IpAddr, last: u64) -> Option<(u64, Met)> {
    match h {
        // Only the destination's replies are ours (a raw socket sees all).
        Heard::Reply { seq, from, at, .. } => (from == Some(dst) || from.is_none()).then(|| {
            let m = Met {
                outcome: Outcome::Reached,
                from: Some(dst),
                at,
                mark: None,
            };
            (ping::unwrap_seq(seq, last), m)
        }),
        Heard::Error {
            seq,
            from,
            at,
            kind,
            code,
            ..
        } => Some((
            ping::unwrap_seq(seq, last),
            classify_icmp(dst.is_ipv6(), kind, code, from, dst, at),
        )),
    }
}
