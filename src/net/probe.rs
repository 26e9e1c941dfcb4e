//! The probe loop behind every ping-like command: send numbered probes on a
//! schedule, match the answers that come back, give up on each after the
//! per-probe timeout, and keep the statistics ping prints. One private mio
//! loop; what a probe *is* (an echo line, a UDP datagram, an ICMP echo, a
//! TCP connect) is a [`Transport`].
//!
//! Scheduling, as ping does it: probe `n` leaves at `start + n × interval`,
//! never earlier; with [`Plan::await_previous`] it also waits (at most that
//! long) for the previous probe to be settled, which keeps one probe in
//! flight (echo over one TCP connection, `ping -i 0`). Every wait is bounded
//! by the probe timeout, the run's deadline and Ctrl-C, which is looked at
//! every [`SLICE`](crate::net::client::SLICE).
//!
//! An answer to a probe already answered is a duplicate; an answer to one
//! already given up is late (counted as reordered, the probe stays lost);
//! an answer that arrives after a later probe's answer is reordered.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::net::client::{self, ClientCtx};
use crate::stats::{RttStats, summarize};

/// Probes kept one by one in the result (the most recent); the counts and
/// the RTT summary cover every probe.
pub const MAX_KEPT: usize = 10_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Probes to send.
    pub count: u64,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Stop after this long, whatever the count.
    pub deadline: Option<Duration>,
    /// A probe with no answer after this long is lost.
    pub timeout: Duration,
    /// Before sending the next probe, wait at most this long for the
    /// previous one to be settled (`None`: send on the interval alone).
    pub await_previous: Option<Duration>,
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answered intact in time.
    Ok,
    /// No answer in time.
    Lost,
    /// Answered with different bytes.
    Corrupt,
}

/// What happened to one probe.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Sequence number, from 0.
    pub seq: u64,
    /// Payload bytes.
    pub bytes: usize,
    /// Round trip in ms; `null` if lost or corrupt.
    pub rtt_ms: Option<f64>,
    /// `ok`, `lost` or `corrupt`.
    pub status: Status,
    /// For a corrupt answer: offset of the first differing byte.
    pub first_difference: Option<usize>,
}

/// What an answer says about its probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerKind {
    /// The probe came back as sent.
    Intact,
    /// The probe came back changed, first at this byte.
    Corrupt {
        /// Offset of the first differing byte.
        first_difference: usize,
    },
}

/// One answer read by a transport.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The probe it answers.
    pub seq: u64,
    /// When it was read.
    pub at: Instant,
    /// What it says.
    pub kind: AnswerKind,
}

/// How probes travel. The loop owns the poll; a transport owns its sockets.
pub trait Transport {
    /// Register the transport's sockets (once, before the first probe).
    ///
    /// # Errors
    /// The registry's error.
    fn register(&mut self, registry: &Registry) -> Result<()>;
    /// Send probe `seq` of `bytes` bytes; returns when it left.
    ///
    /// # Errors
    /// A send that failed for good (the run ends with it).
    fn send(&mut self, seq: u64, registry: &Registry) -> Result<Instant>;
    /// The socket with `token` is ready: read every answer waiting into
    /// `out` (and write what waits to be written).
    ///
    /// # Errors
    /// A socket error that ends the run (the peer refused or closed).
    fn ready(&mut self, token: Token, registry: &Registry, out: &mut Vec<Answer>) -> Result<()>;
}

/// Something the caller may show while the run goes on.
#[derive(Debug)]
pub enum Event<'a> {
    /// A probe was settled (answered or lost).
    Settled(&'a Probe),
    /// An answer came for a probe already answered.
    Duplicate(u64),
    /// An answer came for a probe already given up.
    Late(u64),
}

/// The statistics of a run.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Probes sent.
    pub transmitted: u64,
    /// Probes answered intact in time.
    pub received: u64,
    /// Lost probes, percent of those sent (corrupt ones are not lost).
    pub loss_pct: f64,
    /// Probes answered with different bytes.
    pub corrupt: u64,
    /// Answers received twice.
    pub duplicate: u64,
    /// Answers that arrived after a later probe's (or after the probe was
    /// given up).
    pub reordered: u64,
    /// Wall time of the run.
    pub time_ms: f64,
    /// RTT summary; `null` if nothing came back.
    pub rtt: Option<RttStats>,
    /// True if Ctrl-C ended the run early.
    pub interrupted: bool,
    /// The most recent probes (at most [`MAX_KEPT`]), in order.
    pub probes: Vec<Probe>,
}

/// Run `plan` over `t`; `on_event` sees each probe as it is settled.
///
/// # Errors
/// The transport's errors; `io` if the poll fails. Ctrl-C is not an error:
/// the summary says `interrupted`.
pub fn run(
    t: &mut dyn Transport,
    plan: &Plan,
    bytes: usize,
    ctx: ClientCtx<'_>,
    on_event: &mut dyn FnMut(&Event<'_>),
) -> Result<Summary> {
    let mut poll = Poll::new().map_err(|e| Error::io("create poll", "epoll", &e))?;
    t.register(poll.registry())?;
    let mut events = Events::with_capacity(64);
    let mut answers = Vec::new();
    let start = Instant::now();
    let end = plan.deadline.map(|d| start + d);
    let mut r = Run {
        in_flight: BTreeMap::new(),
        answered: Window::default(),
        newest_answered: None,
        kept: VecDeque::new(),
        rtts: Vec::new(),
        transmitted: 0,
        corrupt: 0,
        duplicate: 0,
        reordered: 0,
        bytes,
    };
    let mut last_sent: Option<Instant> = None;
    let mut interrupted = false;
    loop {
        if ctx.interrupted() {
            interrupted = true;
            break;
        }
        let now = Instant::now();
        let over = end.is_some_and(|e| now >= e);
        // Give up on probes past their timeout (all of them at the deadline).
        let expired: Vec<u64> = r
            .in_flight
            .iter()
            .filter(|&(_, &sent)| over || now >= sent + plan.timeout)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in expired {
            r.in_flight.remove(&seq);
            r.settle(seq, Status::Lost, None, None, on_event);
        }
        let more = r.transmitted < plan.count && !over;
        if !more && r.in_flight.is_empty() {
            break;
        }
        // When may the next probe leave?
        let next_send = more.then(|| {
            let on_schedule = start + plan.interval * r.transmitted as u32;
            match (plan.await_previous, last_sent) {
                (Some(wait), Some(prev)) if !r.in_flight.is_empty() => on_schedule.max(prev + wait),
                _ => on_schedule,
            }
        });
        if let Some(at) = next_send
            && now >= at
        {
            let seq = r.transmitted;
            let sent = t.send(seq, poll.registry())?;
            r.answered.clear(seq);
            r.transmitted += 1;
            r.in_flight.insert(seq, sent);
            last_sent = Some(sent);
            continue;
        }
        // Sleep until the next thing to do, never past a slice (Ctrl-C).
        let mut wake = now + client::SLICE;
        if let Some(at) = next_send {
            wake = wake.min(at);
        }
        if let Some(&sent) = r.in_flight.values().min() {
            wake = wake.min(sent + plan.timeout);
        }
        if let Some(e) = end {
            wake = wake.min(e);
        }
        let wait = wake.saturating_duration_since(now);
        if let Err(e) = poll.poll(&mut events, Some(wait))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "probes", &e));
        }
        for ev in events.iter() {
            t.ready(ev.token(), poll.registry(), &mut answers)?;
        }
        for a in answers.drain(..) {
            r.answer(a, on_event);
        }
    }
    let time_ms = ms(start.elapsed());
    let transmitted = r.transmitted;
    let received = r.rtts.len() as u64;
    let mut probes: Vec<Probe> = r.kept.into_iter().collect();
    probes.sort_by_key(|p| p.seq);
    Ok(Summary {
        transmitted,
        received,
        loss_pct: if transmitted == 0 {
            0.0
        } else {
            (transmitted - received - r.corrupt) as f64 * 100.0 / transmitted as f64
        },
        corrupt: r.corrupt,
        duplicate: r.duplicate,
        reordered: r.reordered,
        time_ms,
        rtt: summarize(&r.rtts),
        interrupted,
        probes,
    })
}

/// The state of a run.
struct Run {
    /// Probes sent and not yet settled, with when they left.
    in_flight: BTreeMap<u64, Instant>,
    /// Probes answered (to tell duplicates), over the last [`WINDOW`] sent.
    answered: Window,
    /// The highest sequence number answered so far (to tell reordering).
    newest_answered: Option<u64>,
    kept: VecDeque<Probe>,
    rtts: Vec<f64>,
    transmitted: u64,
    corrupt: u64,
    duplicate: u64,
    reordered: u64,
    bytes: usize,
}

impl Run {
    fn answer(&mut self, a: Answer, on_event: &mut dyn FnMut(&Event<'_>)) {
        let seq = a.seq;
        if seq >= self.transmitted {
            return; // never sent: not an answer of ours
        }
        let Some(sent) = self.in_flight.remove(&seq) else {
            if self.transmitted - seq <= WINDOW && self.answered.get(seq) {
                self.duplicate += 1;
                on_event(&Event::Duplicate(seq));
            } else {
                self.reordered += 1;
                on_event(&Event::Late(seq));
            }
            return;
        };
        if self.newest_answered.is_some_and(|n| seq < n) {
            self.reordered += 1;
        }
        self.newest_answered = Some(self.newest_answered.map_or(seq, |n| n.max(seq)));
        self.answered.set(seq);
        match a.kind {
            AnswerKind::Intact => {
                let rtt = ms(a.at.saturating_duration_since(sent));
                self.rtts.push(rtt);
                self.settle(seq, Status::Ok, Some(rtt), None, on_event);
            }
            AnswerKind::Corrupt { first_difference } => {
                self.corrupt += 1;
                self.settle(seq, Status::Corrupt, None, Some(first_difference), on_event);
            }
        }
    }

    fn settle(
        &mut self,
        seq: u64,
        status: Status,
        rtt_ms: Option<f64>,
        first_difference: Option<usize>,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        let p = Probe {
            seq,
            bytes: self.bytes,
            rtt_ms,
            status,
            first_difference,
        };
        on_event(&Event::Settled(&p));
        if self.kept.len() == MAX_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(p);
    }
}

/// Probes back over which duplicates are told from late answers (as ping's
/// 64 Ki-bit table): older answers count as late.
const WINDOW: u64 = 1 << 16;

/// One bit per probe over the last [`WINDOW`] sequence numbers.
struct Window {
    bits: Vec<u64>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            bits: vec![0; (WINDOW / 64) as usize],
        }
    }
}

impl Window {
    fn at(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }
    fn get(&self, seq: u64) -> bool {
        let (w, b) = Window::at(seq);
        self.bits[w] & b != 0
    }
    fn set(&mut self, seq: u64) {
        let (w, b) = Window::at(seq);
        self.bits[w] |= b;
    }
    fn clear(&mut self, seq: u64) {
        let (w, b) = Window::at(seq);
        self.bits[w] &= !b;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The error for a transport whose peer closed after `sent` probes.
pub fn closed_after(addr: impl std::fmt::Display, sent: u64) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{addr} closed the connection after {sent} probes"),
    )
}
