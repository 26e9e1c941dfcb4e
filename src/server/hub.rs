//! The chat room's side of the loop: [`ChatHub`] owns the [`Room`], the
//! room events waiting to be handled, the deliveries made between rounds,
//! and flow control. The loop hands it events from connections and asks it,
//! once per turn, which connections got output and which must be dropped.
//!
//! Flow control instead of dropping bursts: while any member has more than
//! [`MEMBER_OUT_CAP`] queued, the room stops reading members' lines (they
//! wait in the senders' socket buffers; nothing is lost) and resumes below
//! half of it. A member over the cap whose socket takes no bytes for
//! [`MEMBER_STALL`], or over [`MEMBER_HARD_CAP`] at all, has stopped reading:
//! it is dropped with a notice to the others.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chat::{ChatIn, Deliver, OPERATOR, Room};
use super::conn::Mode;
use super::conns::Conns;
use super::console::{Console, Level};
use super::handle::{OperatorInput, OperatorView, Refusal, Stats};
use super::limit::{self, Limiter, Rate, Verdict};

/// Output queued for one member above which the room stops reading new
/// lines from everyone (senders wait; nothing is lost) until it drains.
pub const MEMBER_OUT_CAP: usize = 256 * 1024;
/// A member over [`MEMBER_OUT_CAP`] whose socket took no bytes for this
/// long has stopped reading: it is dropped with a notice.
pub const MEMBER_STALL: Duration = Duration::from_secs(2);
/// Output queued for one member that drops it at once, stalled or not.
pub const MEMBER_HARD_CAP: usize = 4 << 20;

/// Broadcast bytes gathered before they are handed to the members as one
/// shared chunk (each member's queue holds a reference, not a copy).
const BATCH_MAX: usize = 64 * 1024;

/// Rounds of events handled in one turn: a drop's leave notice feeds back
/// into the room, so a turn may need a few, but never without end.
const ROUNDS_PER_TURN: usize = 4;

/// Default share of the room one address (IPv4, IPv6 /64) may hold.
pub const DEFAULT_MEMBERS_PER_ADDRESS: usize = 50;
/// Default chat budget per address: lines a second, burst (a paste).
pub const DEFAULT_CHAT_LINES: Rate = Rate {
    per_sec: 5.0,
    burst: 20.0,
};
/// Default chat budget per address: bytes a second, burst. 1 KiB/s is
/// 84 MiB a day: one address can't rotate a day's log (64 MiB, four kept)
/// away before the day ends.
pub const DEFAULT_CHAT_BYTES: Rate = Rate {
    per_sec: 1024.0,
    burst: 16_384.0,
};

/// What one address may cost the room (see `serve --help`).
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// Members one address may be (0: no limit).
    pub per_address: usize,
    /// Lines a second one address may say; `None`: no limit.
    pub lines: Option<Rate>,
    /// Bytes a second one address may say; `None`: no limit.
    pub bytes: Option<Rate>,
    /// Prefix an IPv6 address is counted under.
    pub v6_prefix: u8,
    /// Whether the limits apply to loopback members (off unless asked
    /// for, as `--max-per-ip`: local load tests hold hundreds of members).
    pub limit_loopback: bool,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            per_address: DEFAULT_MEMBERS_PER_ADDRESS,
            lines: Some(DEFAULT_CHAT_LINES),
            bytes: Some(DEFAULT_CHAT_BYTES),
            v6_prefix: limit::DEFAULT_V6_PREFIX,
            limit_loopback: false,
        }
    }
}

/// What one turn of the room asks of the loop.
#[derive(Default)]
pub struct Turn {
    /// Connections that got output: write it.
    pub flush: Vec<usize>,
    /// Connections that may have input waiting (the room resumed): drive them.
    pub drive: Vec<usize>,
    /// Members dropped for not reading: close them.
    pub close: Vec<usize>,
}

/// The chat room with its queues and flow control.
pub struct ChatHub {
    room: Room,
    /// Members' lines are not read while a member is congested.
    paused: bool,
    /// Deliveries produced outside a round (operator joins), sent with the next.
    early: Vec<Deliver>,
    /// Room events waiting to be handled: member, its address, the event.
    events: Vec<(usize, Option<SocketAddr>, ChatIn)>,
    limits: ChatLimits,
    lines: Option<Limiter>,
    bytes: Option<Limiter>,
    /// The operator's lines of this turn, sent as one batch after the log
    /// is written (one wake-up of the operator's side per turn, not per line).
    to_operator: Vec<String>,
    /// Turns so far: a connection's mark says it is in this turn's list.
    turn_no: u64,
    /// Lines for everyone not yet handed to the members: each line is
    /// formatted once, and every member's queue gets one reference to the
    /// batch ([`ChatHub::seal`]) instead of a copy of each line.
    batch: Vec<u8>,
    /// The members the batch is for: the room's members when it began
    /// (any change of membership seals the batch first).
    members: Vec<usize>,
    /// The room's [`Room::generation`] that `members` was taken at.
    members_gen: Option<u64>,
}

impl ChatHub {
    /// A room logging under `log_dir` (none: no log) that replays `replay`
    /// lines to newcomers.
    pub fn new(
        log_dir: Option<PathBuf>,
        keep: super::chat::Retention,
        replay: usize,
        limits: ChatLimits,
    ) -> ChatHub {
        let mut room = Room::new(log_dir, replay);
        room.keep = keep;
        ChatHub {
            room,
            paused: false,
            early: Vec::new(),
            events: Vec::new(),
            limits,
            lines: limits.lines.map(|r| Limiter::new(r, limits.v6_prefix)),
            bytes: limits.bytes.map(|r| Limiter::new(r, limits.v6_prefix)),
            to_operator: Vec::new(),
            turn_no: 0,
            batch: Vec::new(),
            members: Vec::new(),
            members_gen: None,
        }
    }

    /// The room's limits.
    pub fn limits(&self) -> ChatLimits {
        self.limits
    }

    /// Whether the per-address limits apply to `ip`.
    fn limited(&self, ip: IpAddr) -> bool {
        self.limits.limit_loopback || !ip.is_loopback()
    }

    /// Check an event against the address's budget before the room sees
    /// it: a join past the address's share of the room is refused; a line
    /// over the address's rate is refused with a notice (at most one a
    /// second), never dropped silently. `None`: the event is spent.
    fn admit(
        &mut self,
        who: usize,
        addr: Option<SocketAddr>,
        ev: ChatIn,
        deliver: &mut Vec<Deliver>,
        stats: &Stats,
        console: &mut Console,
    ) -> Option<ChatIn> {
        let Some(peer) = addr.filter(|a| self.limited(a.ip())) else {
            return Some(ev);
        };
        match &ev {
            ChatIn::Join(_) if self.limits.per_address > 0 => {
                let prefix = self.limits.v6_prefix;
                let key = limit::source_key(peer.ip(), prefix);
                let held = self
                    .room
                    .member_addrs()
                    .filter(|a| limit::source_key(a.ip(), prefix) == key)
                    .count();
                if held >= self.limits.per_address {
                    stats.refuse(Refusal::RoomShare);
                    deliver.push(Deliver::One(
                        who,
                        format!(
                            "ERR room: {held} members from {} already (max {} per address); ask the server's operator for --chat-per-ip",
                            shown_key(key, self.limits.v6_prefix),
                            self.limits.per_address
                        ),
                    ));
                    deliver.push(Deliver::Close(who));
                    console.say(
                        Level::Info,
                        &format!("[CHAT] Refused {peer}: {held} members from that address already"),
                    );
                    return None;
                }
                Some(ev)
            }
            // Leaving is never refused.
            ChatIn::Line(text)
                if crate::proto::chat::parse(text) == crate::proto::chat::Action::Quit =>
            {
                Some(ev)
            }
            ChatIn::Line(text) => {
                let now = Instant::now();
                let lines = self.lines.as_mut().map(|l| l.check(peer.ip(), now));
                let bytes = self
                    .bytes
                    .as_mut()
                    .map(|l| l.check_cost(peer.ip(), text.len() as f64 + 1.0, now));
                let mut over = false;
                let mut notice = false;
                for v in [lines, bytes].into_iter().flatten() {
                    if let Verdict::Over { notice: n } = v {
                        over = true;
                        notice |= n;
                    }
                }
                if !over {
                    return Some(ev);
                }
                stats.refuse(Refusal::ChatRate);
                if notice {
                    deliver.push(Deliver::One(who, self.rate_notice()));
                }
                None
            }
            _ => Some(ev),
        }
    }

    fn rate_notice(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.limits.lines {
            parts.push(format!("{} lines/s", r.per_sec));
        }
        if let Some(r) = self.limits.bytes {
            parts.push(format!("{} bytes/s", r.per_sec));
        }
        format!(
            "ERR slow down: at most {} from one address; lines over it are not sent",
            parts.join(" and ")
        )
    }

    /// Open today's log (so a problem shows at start).
    pub fn open_log(&mut self, console: &mut Console) {
        self.room.open_log();
        self.say_log_failure(console);
    }

    /// Queue events a connection produced.
    pub fn push(&mut self, slot: usize, addr: SocketAddr, events: impl Iterator<Item = ChatIn>) {
        self.events.extend(events.map(|e| (slot, Some(addr), e)));
    }

    /// Whether the room, or an event waiting for it, still names `slot`.
    pub fn names(&self, slot: usize) -> bool {
        self.room.contains(slot) || self.events.iter().any(|e| e.0 == slot)
    }

    /// `slot`'s connection closed: a member leaves, with `why`.
    pub fn gone(&mut self, slot: usize, addr: SocketAddr, why: &str) {
        if self.room.contains(slot) {
            let why = if why == "client closed" { "left" } else { why };
            self.events
                .push((slot, Some(addr), ChatIn::Gone(static_reason(why))));
        }
    }

    /// Members in the room now, the operator included.
    pub fn members(&self) -> usize {
        self.room.len()
    }

    /// True while room events wait to be handled.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Take what the operator typed and any change of attachment.
    pub fn operator(&mut self, (lines, attach): OperatorInput, console: &mut Console) {
        if let Some(out) = attach {
            // Attachment notices are delivered with the next round.
            if let Some(line) = self.room.set_operator(out, &mut self.early) {
                console.say(Level::Info, &format!("[CHAT] {line}"));
            }
        }
        for l in lines {
            if self.room.contains(OPERATOR) {
                self.events
                    .push((OPERATOR, None, ChatIn::Line(l.into_bytes())));
            }
        }
    }

    /// One turn: handle the waiting events (log, then queue for the
    /// members), then flow control. The loop writes the members in
    /// `Turn::flush` right after, and never blocks on them.
    pub fn turn(&mut self, conns: &mut Conns, stats: &Stats, console: &mut Console) -> Turn {
        let mut t = Turn::default();
        if !self.events.is_empty() || !self.early.is_empty() {
            let touched = self.rounds(conns, stats, console, &mut t.close);
            t.flush.extend(touched);
        } else if !self.paused {
            return t;
        }
        t.drive.extend(self.flow(conns, console, &mut t.close));
        self.end_turn(console);
        t
    }

    /// The turn's records go to the log in one write, and only then is
    /// anything of the turn sent: the operator's batch now, members' queues
    /// when the loop drives them after this turn.
    fn end_turn(&mut self, console: &mut Console) {
        self.room.flush_log();
        self.say_log_failure(console);
        if self.to_operator.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.to_operator);
        if let Some(OperatorView::Lines(tx)) = &self.room.operator_out
            && tx.send(batch).is_err()
        {
            // The operator's side went away without detaching: leave for it.
            let mut d = Vec::new();
            if let Some(l) = self.room.set_operator(None, &mut d) {
                console.say(Level::Info, &format!("[CHAT] {l}"));
            }
            self.early.extend(d);
        }
    }

    /// Handle queued room events; returns the connection slots that got
    /// output. Each event's lines go to the members of that moment, so a
    /// member who says something and leaves in one read still gets its own
    /// line.
    fn rounds(
        &mut self,
        conns: &mut Conns,
        stats: &Stats,
        console: &mut Console,
        close: &mut Vec<usize>,
    ) -> Vec<usize> {
        self.turn_no += 1;
        let turn = self.turn_no;
        self.room.start_turn();
        let mut touched = Vec::new();
        let mut deliver: Vec<Deliver> = std::mem::take(&mut self.early);
        self.apply(&mut deliver, conns, &mut touched, turn);
        for _ in 0..ROUNDS_PER_TURN {
            for (who, addr, ev) in std::mem::take(&mut self.events) {
                let Some(ev) = self.admit(who, addr, ev, &mut deliver, stats, console) else {
                    self.apply(&mut deliver, conns, &mut touched, turn);
                    continue;
                };
                if let Some(line) = self.room.handle(who, addr, ev, &mut deliver) {
                    console.say_with(Level::Info, || format!("[CHAT] {line}"));
                }
                self.apply(&mut deliver, conns, &mut touched, turn);
            }
            self.seal(conns, &mut touched, turn);
            self.say_log_failure(console);
            // Members past the hard cap: dropped at once, and the others told.
            let over: Vec<usize> = touched
                .iter()
                .copied()
                .filter(|&s| {
                    self.room.contains(s)
                        && conns.get(s).is_some_and(|c| c.queued() > MEMBER_HARD_CAP)
                })
                .collect();
            for slot in over {
                self.drop_member(slot, &mut deliver, console, close);
                touched.retain(|&s| s != slot);
                self.apply(&mut deliver, conns, &mut touched, turn);
            }
            self.seal(conns, &mut touched, turn);
            if self.events.is_empty() {
                break;
            }
        }
        touched
    }

    /// Drop a member that stopped reading: out of the room now, with a
    /// notice to the others; its connection is for the loop to close.
    fn drop_member(
        &mut self,
        slot: usize,
        deliver: &mut Vec<Deliver>,
        console: &mut Console,
        close: &mut Vec<usize>,
    ) {
        if let Some(line) = self.room.drop_slow(slot, deliver) {
            console.say(Level::Main, &format!("[CHAT] {line}"));
        }
        close.push(slot);
    }

    /// Flow control for the room: stop reading members' lines while any
    /// member has more than [`MEMBER_OUT_CAP`] queued; resume (and drive
    /// every member, since input may wait with no new edge) once all are
    /// below half of it. Members stalled over the cap are dropped. Returns
    /// the slots to drive again.
    fn flow(
        &mut self,
        conns: &mut Conns,
        console: &mut Console,
        close: &mut Vec<usize>,
    ) -> Vec<usize> {
        let now = Instant::now();
        let mut most = 0;
        let mut stalled = Vec::new();
        for slot in self.room.member_slots() {
            if close.contains(&slot) {
                continue;
            }
            if let Some(c) = conns.get(slot) {
                let q = c.queued();
                most = most.max(q);
                // While the room is paused, a member that holds it above the
                // resume mark and takes nothing is as stuck as one over the cap.
                let mark = if self.paused {
                    MEMBER_OUT_CAP / 2
                } else {
                    MEMBER_OUT_CAP
                };
                if q > mark && now.duration_since(c.last_progress) > MEMBER_STALL {
                    stalled.push(slot);
                }
            }
        }
        for slot in stalled {
            let mut d = Vec::new();
            self.drop_member(slot, &mut d, console, close);
            self.early.extend(d);
        }
        let congested = most > MEMBER_OUT_CAP;
        let calm = most <= MEMBER_OUT_CAP / 2;
        let mut wake = Vec::new();
        if congested && !self.paused {
            self.paused = true;
            for slot in self.room.member_slots() {
                if let Some(c) = conns.get_mut(slot) {
                    c.paused = true;
                }
            }
        } else if calm && self.paused {
            self.paused = false;
            for slot in self.room.member_slots() {
                if let Some(c) = conns.get_mut(slot) {
                    c.paused = false;
                    wake.push(slot);
                }
            }
        }
        wake
    }

    /// Send out what the room produced for one event, to the members now
    /// in it. Lines for everyone gather in the batch; a private line, a
    /// close or a change of membership seals it first, so each member gets
    /// its lines in the order the room made them.
    fn apply(
        &mut self,
        deliver: &mut Vec<Deliver>,
        conns: &mut Conns,
        touched: &mut Vec<usize>,
        turn: u64,
    ) {
        if deliver.is_empty() {
            return;
        }
        let generation = self.room.generation();
        if self.members_gen != Some(generation) {
            self.seal(conns, touched, turn);
            self.members.clear();
            self.members.extend(self.room.member_slots());
            self.members_gen = Some(generation);
        }
        for d in deliver.drain(..) {
            match d {
                Deliver::One(OPERATOR, line) => self.send_operator(line),
                Deliver::One(slot, line) => {
                    self.seal(conns, touched, turn);
                    // A slot freed and reused in this turn is not the member.
                    if let Some(c) = conns.get_mut(slot)
                        && c.mode == Mode::Chat
                    {
                        c.queue_line(&line);
                        touch(c, slot, turn, touched);
                    }
                }
                Deliver::All(line) => {
                    self.batch.extend_from_slice(line.as_bytes());
                    self.batch.push(b'\n');
                    if self.batch.len() >= BATCH_MAX {
                        self.seal(conns, touched, turn);
                    }
                    self.send_operator(line);
                }
                Deliver::Close(slot) => {
                    self.seal(conns, touched, turn);
                    if let Some(c) = conns.get_mut(slot) {
                        c.close_with(b"");
                        touch(c, slot, turn, touched);
                    }
                }
            }
        }
    }

    /// Hand the batch to its members: one shared chunk, one reference in
    /// each member's queue.
    fn seal(&mut self, conns: &mut Conns, touched: &mut Vec<usize>, turn: u64) {
        if self.batch.is_empty() {
            return;
        }
        let chunk: Arc<[u8]> = Arc::from(self.batch.as_slice());
        self.batch.clear();
        for &slot in &self.members {
            if let Some(c) = conns.get_mut(slot)
                && c.mode == Mode::Chat
            {
                c.queue_shared(&chunk);
                touch(c, slot, turn, touched);
            }
        }
    }

    fn send_operator(&mut self, line: String) {
        if let Some(OperatorView::Lines(_)) = self.room.operator_out {
            self.to_operator.push(line);
        }
    }

    fn say_log_failure(&mut self, console: &mut Console) {
        if self.room.take_log_failure() {
            console.say(
                Level::Main,
                "[CHAT] cannot write the chat log under logs/chat; the room goes on without it",
            );
        }
    }
}

/// Put `slot` on the turn's list of connections with output, once.
fn touch(c: &mut super::conn::Conn, slot: usize, turn: u64, touched: &mut Vec<usize>) {
    if c.touched_in != turn {
        c.touched_in = turn;
        touched.push(slot);
    }
}

/// An address key as people write it: `10.1.2.3`, `2001:db8:1:2::/64`.
fn shown_key(key: IpAddr, v6_prefix: u8) -> String {
    match key {
        IpAddr::V4(_) => key.to_string(),
        IpAddr::V6(_) if v6_prefix >= 128 => key.to_string(),
        IpAddr::V6(_) => format!("{key}/{v6_prefix}"),
    }
}

/// Close reasons as `'static` text for room notices.
fn static_reason(why: &str) -> &'static str {
    match why {
        "left" => "left",
        "idle timeout" => "idle timeout",
        "silent in the room too long" => "silent too long",
        "line not finished in time" => "line not finished in time",
        "not reading" => "not reading",
        "server shutting down" => "server shutting down",
        "connection reset by client" => "connection reset",
        "client went away" => "connection lost",
        _ => "connection closed",
    }
}
