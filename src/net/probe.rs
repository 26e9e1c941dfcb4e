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
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::net::client::{self, ClientCtx};
use crate::stats::{Rtt, RttStats};

/// Probes kept one by one in the result (the most recent); the counts and
/// the RTT summary cover every probe.
pub const MAX_KEPT: usize = 10_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Probes to send.
    pub count: u64,
    /// The number of the first probe (0 for `echo`, 1 for `ping`'s
    /// `icmp_seq` and the commands that follow it).
    pub first_seq: u64,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Stop after this long, whatever the count.
    pub deadline: Option<Duration>,
    /// A probe with no answer after this long is lost.
    pub timeout: Duration,
    /// Before sending the next probe, wait at most this long for the
    /// previous one to be settled (`None`: send on the interval alone).
    pub await_previous: Option<Duration>,
    /// Raised (by SIGQUIT, Ctrl-\\) to ask for the statistics so far: the
    /// loop lowers it and reports [`Event::Progress`].
    pub progress: Option<Arc<AtomicBool>>,
    /// The caller keeps its own figures from the events (`monitor`): no
    /// probe list, no percentiles, duplicates told over [`LIGHT_WINDOW`]
    /// probes, so a thousand long-running probers stay small.
    pub light: bool,
}

/// Probes over which a light run tells duplicates from late answers.
pub const LIGHT_WINDOW: u64 = 1024;

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
    /// The port refused (a TCP reset): the host answers, nothing listens.
    Refused,
    /// An error came back instead (ICMP unreachable, a TCP connect error).
    Error,
}

/// What happened to one probe.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Sequence number, from 1 (as ping's `icmp_seq`).
    pub seq: u64,
    /// Payload bytes.
    pub bytes: usize,
    /// Round trip in ms; `null` if lost or corrupt.
    pub rtt_ms: Option<f64>,
    /// `ok`, `lost`, `corrupt`, `refused` or `error`.
    pub status: Status,
    /// For a corrupt answer: offset of the first differing byte.
    pub first_difference: Option<usize>,
    /// Who answered, where it is not the target (an ICMP error's sender).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<IpAddr>,
    /// The answer's TTL (hop limit), where the transport sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// What the error said (`Destination Host Unreachable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A clock probe's offset (server minus local), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_s: Option<f64>,
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
    /// The port refused: the host is there, nothing listens.
    Refused,
    /// An error came back instead of an answer.
    Error {
        /// What it said.
        what: String,
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
    /// Who sent it, where that is worth saying (an ICMP error's router).
    pub from: Option<IpAddr>,
    /// Its TTL (hop limit), where the transport sees it.
    pub ttl: Option<u8>,
    /// A clock probe's offset (server minus local), microseconds.
    pub offset_us: Option<i64>,
}

/// How probes travel. The loop owns the poll; a transport owns its sockets.
pub trait Transport {
    /// Register the transport's sockets (once, before the first probe),
    /// with tokens from `tokens` only.
    ///
    /// # Errors
    /// The registry's error.
    fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()>;
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
    /// Answers that may already wait without the poll having said so (a
    /// connect refused in the call itself; a loopback reply, which is there
    /// before the send returns): called after every send, so a fast answer
    /// costs no poll. Must leave the sockets drained, as `ready` does.
    ///
    /// # Errors
    /// As `ready`.
    fn pending(&mut self, _registry: &Registry, _out: &mut Vec<Answer>) -> Result<()> {
        Ok(())
    }
    /// Probe `seq` is settled (answered or given up): free what it holds.
    fn forget(&mut self, _seq: u64, _registry: &Registry) {}
    /// Whether the loop needs readiness events now: `false` when every
    /// probe was answered right after its send (a transport may leave the
    /// poll, sparing the kernel a wake-up per reply), `true` before the loop
    /// waits on the poll for answers.
    ///
    /// # Errors
    /// The registry's error.
    fn watch(&mut self, _registry: &Registry, _needed: bool) -> Result<()> {
        Ok(())
    }
}

/// A borrowed transport is one too (what [`run`] drives).
impl<T: Transport + ?Sized> Transport for &mut T {
    fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()> {
        (**self).register(registry, tokens)
    }
    fn send(&mut self, seq: u64, registry: &Registry) -> Result<Instant> {
        (**self).send(seq, registry)
    }
    fn ready(&mut self, token: Token, registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        (**self).ready(token, registry, out)
    }
    fn pending(&mut self, registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        (**self).pending(registry, out)
    }
    fn forget(&mut self, seq: u64, registry: &Registry) {
        (**self).forget(seq, registry)
    }
    fn watch(&mut self, registry: &Registry, needed: bool) -> Result<()> {
        (**self).watch(registry, needed)
    }
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
    /// The next probe leaves while this one has no answer yet (`ping -O`).
    Outstanding(u64),
    /// The statistics so far, when [`Plan::progress`] asked.
    Progress(&'a Summary),
}

/// The statistics of a run.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Probes sent.
    pub transmitted: u64,
    /// Probes answered intact in time.
    pub received: u64,
    /// Probes sent that got no intact answer, percent of those sent (as
    /// ping counts: corrupt, refused and errors are not received).
    pub loss_pct: f64,
    /// Probes with no answer at all in time.
    pub lost: u64,
    /// Probes answered with different bytes.
    pub corrupt: u64,
    /// Probes the port refused (TCP reset).
    pub refused: u64,
    /// Probes answered by an error (ICMP unreachable and the like).
    pub errors: u64,
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

/// The tokens a transport may use in a poll it shares with others: a
/// range of its own ([`Tokens::SPAN`] wide), so one loop can drive many
/// transports (`monitor`). [`Tokens::ALONE`] is the whole range from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    base: usize,
}

impl Tokens {
    /// Tokens per transport.
    pub const SPAN: usize = 1 << 24;
    /// The range of a transport alone in its poll.
    pub const ALONE: Tokens = Tokens { base: 0 };

    /// The range of transport number `i` in a shared poll.
    pub fn nth(i: usize) -> Tokens {
        Tokens {
            base: i.saturating_mul(Tokens::SPAN),
        }
    }

    /// The transport a token belongs to, in a shared poll.
    pub fn owner(t: Token) -> usize {
        t.0 / Tokens::SPAN
    }

    /// This range's token number `local` (taken modulo the span).
    pub fn token(self, local: usize) -> Token {
        Token(self.base + local % Tokens::SPAN)
    }

    /// Which of this range's tokens `t` is.
    pub fn local(self, t: Token) -> usize {
        t.0.wrapping_sub(self.base) % Tokens::SPAN
    }
}

/// What a [`Prober`] wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Every probe is sent and settled (or the deadline passed).
    Done,
    /// A probe just left: call [`Prober::turn`] again before waiting.
    Again,
    /// Nothing to do before this instant, or before the poll reports.
    Wait(Instant),
}

/// One run of probes over one transport, as a state machine a loop drives:
/// [`run`] drives one, `monitor` many on one poll.
pub struct Prober<'t> {
    t: Box<dyn Transport + 't>,
    plan: Plan,
    r: Run,
    start: Instant,
    end: Option<Instant>,
    last_sent: Option<Instant>,
    answers: Vec<Answer>,
}

impl<'t> Prober<'t> {
    /// A run of `plan` over `t` starting now, probes of `bytes` bytes.
    pub fn new(t: Box<dyn Transport + 't>, plan: &Plan, bytes: usize) -> Prober<'t> {
        Prober::starting_at(t, plan, bytes, Instant::now())
    }

    /// The same, on a schedule from `start` (probe *n* at `start + n ×
    /// interval`), which may be past: a late probe leaves at once.
    pub fn starting_at(
        t: Box<dyn Transport + 't>,
        plan: &Plan,
        bytes: usize,
        start: Instant,
    ) -> Prober<'t> {
        Prober {
            t,
            plan: plan.clone(),
            r: Run {
                in_flight: BTreeMap::new(),
                answered: Window::new(if plan.light { LIGHT_WINDOW } else { WINDOW }),
                newest_answered: None,
                kept: VecDeque::new(),
                keep: if plan.light { 0 } else { MAX_KEPT },
                rtt: if plan.light {
                    Rtt::without_percentiles()
                } else {
                    Rtt::default()
                },
                sent: 0,
                first: plan.first_seq,
                lost: 0,
                corrupt: 0,
                refused: 0,
                errors: 0,
                duplicate: 0,
                reordered: 0,
                bytes,
                settled_now: Vec::new(),
            },
            start,
            end: plan.deadline.map(|d| start + d),
            last_sent: None,
            answers: Vec::new(),
        }
    }

    /// Put the transport's sockets in the poll, in `tokens`.
    ///
    /// # Errors
    /// The transport's.
    pub fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()> {
        self.t.register(registry, tokens)
    }

    /// Give up on probes past their timeout, send the next probe if it is
    /// due, and say what comes next. At most one probe leaves per call.
    ///
    /// # Errors
    /// The transport's send error (the run ends with it).
    pub fn turn(
        &mut self,
        now: Instant,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) -> Result<Turn> {
        let over = self.end.is_some_and(|e| now >= e);
        let timeout = self.plan.timeout;
        let expired: Vec<u64> = self
            .r
            .in_flight
            .iter()
            .filter(|&(_, &sent)| over || now >= sent + timeout)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in expired {
            self.r.in_flight.remove(&seq);
            self.t.forget(seq, registry);
            self.r.lost += 1;
            self.r
                .settle(Probe::new(seq, self.r.bytes, Status::Lost), on_event);
        }
        let more = self.r.sent < self.plan.count && !over;
        if !more && self.r.in_flight.is_empty() {
            return Ok(Turn::Done);
        }
        // When may the next probe leave?
        let next_send = more.then(|| {
            let on_schedule = self.start + self.plan.interval * self.r.sent as u32;
            match (self.plan.await_previous, self.last_sent) {
                (Some(wait), Some(prev)) if !self.r.in_flight.is_empty() => {
                    on_schedule.max(prev + wait)
                }
                _ => on_schedule,
            }
        });
        if let Some(at) = next_send
            && now >= at
        {
            let seq = self.r.first + self.r.sent;
            if let Some(prev) = seq.checked_sub(1)
                && self.r.in_flight.contains_key(&prev)
            {
                on_event(&Event::Outstanding(prev));
            }
            let sent = self.t.send(seq, registry)?;
            self.r.answered.clear(seq);
            self.r.sent += 1;
            self.r.in_flight.insert(seq, sent);
            self.last_sent = Some(sent);
            self.t.pending(registry, &mut self.answers)?;
            self.r
                .take(&mut self.answers, &mut *self.t, registry, on_event);
            if self.r.in_flight.is_empty() {
                self.t.watch(registry, false)?;
            }
            return Ok(Turn::Again);
        }
        let mut wake = next_send;
        if let Some(&sent) = self.r.in_flight.values().min() {
            wake = Some(wake.map_or(sent + timeout, |w| w.min(sent + timeout)));
        }
        if let Some(e) = self.end {
            wake = Some(wake.map_or(e, |w| w.min(e)));
        }
        // Something is due (more, or in flight): one of the three is set.
        Ok(Turn::Wait(wake.unwrap_or(now)))
    }

    /// Before the loop waits on the poll: the transport watches for
    /// answers while probes are in flight.
    ///
    /// # Errors
    /// The registry's.
    pub fn before_wait(&mut self, registry: &Registry) -> Result<()> {
        if !self.r.in_flight.is_empty() {
            self.t.watch(registry, true)?;
        }
        Ok(())
    }

    /// The poll reported `token`, one of this prober's: read and settle.
    ///
    /// # Errors
    /// The transport's (the run ends with it).
    pub fn ready(
        &mut self,
        token: Token,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) -> Result<()> {
        // Answers read before an error (the peer answered, then closed)
        // still count.
        let read = self.t.ready(token, registry, &mut self.answers);
        self.r
            .take(&mut self.answers, &mut *self.t, registry, on_event);
        read
    }

    /// The statistics so far.
    pub fn summary(&self, interrupted: bool) -> Summary {
        self.r.summary(self.start, interrupted)
    }

    /// The run ends now (Ctrl-C): probes still in flight are lost, as
    /// ping counts them; the final statistics.
    pub fn finish(mut self, interrupted: bool) -> Summary {
        self.r.lost += self.r.in_flight.len() as u64;
        self.r.summary(self.start, interrupted)
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.r.sent
    }

    /// The number the next probe will carry.
    pub fn next_seq(&self) -> u64 {
        self.r.first + self.r.sent
    }

    /// The transport failed for good (`why`): every probe in flight is
    /// settled as an error saying so, and forgotten.
    pub fn fail(&mut self, why: &str, registry: &Registry, on_event: &mut dyn FnMut(&Event<'_>)) {
        for seq in std::mem::take(&mut self.r.in_flight).into_keys() {
            self.t.forget(seq, registry);
            self.r.errors += 1;
            let mut p = Probe::new(seq, self.r.bytes, Status::Error);
            p.error = Some(why.to_string());
            self.r.settle(p, on_event);
        }
    }
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
    let mut p = Prober::new(Box::new(t), plan, bytes);
    p.register(poll.registry(), Tokens::ALONE)?;
    let mut events = Events::with_capacity(64);
    let mut interrupted = false;
    loop {
        if ctx.interrupted() {
            interrupted = true;
            break;
        }
        if let Some(flag) = &plan.progress
            && flag.swap(false, Ordering::Relaxed)
        {
            on_event(&Event::Progress(&p.summary(false)));
        }
        let now = Instant::now();
        let wake = match p.turn(now, poll.registry(), on_event)? {
            Turn::Done => break,
            Turn::Again => continue,
            // Never past a slice, for Ctrl-C.
            Turn::Wait(at) => at.min(now + client::SLICE),
        };
        p.before_wait(poll.registry())?;
        if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(Error::io("poll", "probes", &e));
        }
        for ev in events.iter() {
            p.ready(ev.token(), poll.registry(), on_event)?;
        }
    }
    Ok(p.finish(interrupted))
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
    /// Probes kept one by one.
    keep: usize,
    rtt: Rtt,
    /// Probes sent so far.
    sent: u64,
    /// The first probe's number.
    first: u64,
    lost: u64,
    corrupt: u64,
    refused: u64,
    errors: u64,
    duplicate: u64,
    reordered: u64,
    bytes: usize,
    /// Probes answered in this turn, for the transport to forget.
    settled_now: Vec<u64>,
}

impl Run {
    /// Take the answers read; the transport frees what settled probes held.
    fn take(
        &mut self,
        answers: &mut Vec<Answer>,
        t: &mut dyn Transport,
        registry: &Registry,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) {
        for a in answers.drain(..) {
            self.answer(a, on_event);
        }
        for seq in std::mem::take(&mut self.settled_now) {
            t.forget(seq, registry);
        }
    }

    /// Take one answer.
    fn answer(&mut self, a: Answer, on_event: &mut dyn FnMut(&Event<'_>)) {
        let seq = a.seq;
        if seq < self.first || seq >= self.first + self.sent {
            return; // never sent: not an answer of ours
        }
        let Some(sent) = self.in_flight.remove(&seq) else {
            if self.first + self.sent - seq <= self.answered.len() && self.answered.get(seq) {
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
        self.settled_now.push(seq);
        let rtt = ms(a.at.saturating_duration_since(sent));
        let mut p = Probe::new(seq, self.bytes, Status::Ok);
        p.from = a.from;
        p.ttl = a.ttl;
        p.offset_s = a.offset_us.map(|o| o as f64 / 1e6);
        match a.kind {
            AnswerKind::Intact => {
                self.rtt.record(rtt);
                p.rtt_ms = Some(rtt);
            }
            AnswerKind::Corrupt { first_difference } => {
                self.corrupt += 1;
                p.status = Status::Corrupt;
                p.first_difference = Some(first_difference);
            }
            AnswerKind::Refused => {
                // A reset is an answer: the time to it is worth showing.
                self.refused += 1;
                p.status = Status::Refused;
                p.rtt_ms = Some(rtt);
            }
            AnswerKind::Error { what } => {
                self.errors += 1;
                p.status = Status::Error;
                p.error = Some(what);
            }
        }
        self.settle(p, on_event);
    }

    fn settle(&mut self, p: Probe, on_event: &mut dyn FnMut(&Event<'_>)) {
        on_event(&Event::Settled(&p));
        if self.keep == 0 {
            return;
        }
        if self.kept.len() == self.keep {
            self.kept.pop_front();
        }
        self.kept.push_back(p);
    }

    fn summary(&self, start: Instant, interrupted: bool) -> Summary {
        let transmitted = self.sent;
        let received = self.rtt.count();
        let mut probes: Vec<Probe> = self.kept.iter().cloned().collect();
        probes.sort_by_key(|p| p.seq);
        Summary {
            transmitted,
            received,
            loss_pct: if transmitted == 0 {
                0.0
            } else {
                transmitted.saturating_sub(received) as f64 * 100.0 / transmitted as f64
            },
            lost: self.lost,
            corrupt: self.corrupt,
            refused: self.refused,
            errors: self.errors,
            duplicate: self.duplicate,
            reordered: self.reordered,
            time_ms: ms(start.elapsed()),
            rtt: self.rtt.summary(),
            interrupted,
            probes,
        }
    }
}

impl Probe {
    fn new(seq: u64, bytes: usize, status: Status) -> Probe {
        Probe {
            seq,
            bytes,
            rtt_ms: None,
            status,
            first_difference: None,
            from: None,
            ttl: None,
            error: None,
            offset_s: None,
        }
    }
}

/// Probes back over which duplicates are told from late answers (as ping's
/// 64 Ki-bit table): older answers count as late.
const WINDOW: u64 = 1 << 16;

/// One bit per probe over the last `len` sequence numbers.
struct Window {
    bits: Vec<u64>,
    len: u64,
}

impl Window {
    /// A window over `len` probes (a multiple of 64).
    fn new(len: u64) -> Window {
        let len = len.max(64).next_multiple_of(64);
        Window {
            bits: vec![0; (len / 64) as usize],
            len,
        }
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn at(&self, seq: u64) -> (usize, u64) {
        let i = seq % self.len;
        ((i / 64) as usize, 1 << (i % 64))
    }
    fn get(&self, seq: u64) -> bool {
        let (w, b) = self.at(seq);
        self.bits.get(w).is_some_and(|x| x & b != 0)
    }
    fn set(&mut self, seq: u64) {
        let (w, b) = self.at(seq);
        if let Some(x) = self.bits.get_mut(w) {
            *x |= b;
        }
    }
    fn clear(&mut self, seq: u64) {
        let (w, b) = self.at(seq);
        if let Some(x) = self.bits.get_mut(w) {
            *x &= !b;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ranges_do_not_overlap_and_name_their_owner() {
        let (a, b) = (Tokens::nth(0), Tokens::nth(7));
        assert_eq!(a, Tokens::ALONE);
        assert_eq!(Tokens::owner(a.token(5)), 0);
        assert_eq!(Tokens::owner(b.token(5)), 7);
        assert_eq!(b.local(b.token(5)), 5);
        // A probe number past the span wraps inside its own range.
        let t = b.token(Tokens::SPAN + 3);
        assert_eq!((Tokens::owner(t), b.local(t)), (7, 3));
        assert_ne!(a.token(Tokens::SPAN - 1), b.token(0));
    }
}
