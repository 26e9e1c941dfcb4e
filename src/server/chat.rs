//! The chat room on the server's loop. Members are connections that sent
//! `CHAT <nick>` (see [`crate::proto::chat`]) plus the operator (the console
//! of `netsh serve`, or `chat` in the shell that runs the server). Each line
//! is written to `logs/chat/DATE.jsonl` before anyone is sent it, so a crash
//! after a line was delivered still has it on disk; then it goes to every
//! member, the sender included (that copy is the sender's acknowledgement),
//! prefix and text in one buffer so the whole line leaves in one write.
//!
//! Names: a member may not take a name that is taken or reserved for the
//! operator, on any path (`CHAT <nick>` and `/nick`); see
//! [`chat::same_nick`] and [`chat::reserved_nick`] for the rules. The
//! operator may `/kick` a member and `/ban` one, which also refuses its
//! address (IPv6: its /64) until the server stops ([`MAX_BANS`] at most).
//!
//! The log keeps what was said, not what was shown: the raw text, JSON
//! escaped (see [`Record`]); the members' screens and the console get the
//! escaped form.
//!
//! Bounds: member count ([`MAX_MEMBERS`]), bans ([`MAX_BANS`]) and line
//! length (4 KiB, over-long lines are refused and dropped). The output
//! queues and flow control are the loop's side of the room, in
//! [`super::hub`].

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use super::handle::OperatorView;
use crate::proto::chat::{self, Action, NickKey};

/// Most members at once (the operator included).
pub const MAX_MEMBERS: usize = 1000;
/// Lines replayed to a newcomer by default.
pub const DEFAULT_REPLAY: usize = 20;
/// Size of one day's chat log before it rotates to `.1`.
const LOG_CAP: u64 = 64 << 20;
/// Default for `serve --chat-log-days`.
pub const DEFAULT_LOG_DAYS: u32 = 90;

/// How much chat log is kept (`serve --chat-log-days`, `--chat-log-max`):
/// whole days older than `days` go, then the oldest files until the
/// directory fits `max_bytes`. Today's open file is never deleted. So
/// history is lost by this policy, and by a day's own rotation (five files
/// of 64 MiB), never by one peer: a peer's lines are rate-limited per address.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Days kept (0: every day).
    pub days: u32,
    /// Bytes the directory may hold (0: no cap).
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            days: DEFAULT_LOG_DAYS,
            max_bytes: 1 << 30,
        }
    }
}

/// The operator's member id (connections use their slot number).
pub const OPERATOR: usize = usize::MAX;
/// What the room says when the operator comes in (after its nickname).
pub const OPERATOR_JOINED: &str = "joined (the server's operator)";
/// Addresses banned at once; a ban past this lifts the oldest.
pub const MAX_BANS: usize = 1024;

/// What a connection (or the operator) did in the room.
#[derive(Debug, Clone)]
pub enum ChatIn {
    /// `CHAT <nick>`, already checked for syntax.
    Join(String),
    /// A line from a member.
    Line(Vec<u8>),
    /// The member's connection went away.
    Gone(&'static str),
    /// A line of the member's was refused (too long); the reason, for it
    /// alone, in order with the room's answers to its earlier lines.
    Refused(String),
}

/// Where the room sends a line.
#[derive(Debug)]
pub enum Deliver {
    /// To one connection (by slot).
    One(usize, String),
    /// To everyone in the room.
    All(String),
    /// Close this connection after what it was sent.
    Close(usize),
}

/// One chat log record (JSON line). `text` is what the member said, as it
/// was (an escape byte is `\u001b` in the JSON, a typed backslash `\\`),
/// so it reads back losslessly; every character that must not reach a
/// terminal is `\uXXXX`-escaped in the line
/// ([`crate::proto::escape::json_safe`]), so `cat` of the log is safe too.
/// A line that was not valid UTF-8 has its text with U+FFFD for the bad
/// bytes (as everyone saw it) and `bytes_hex`: the line's bytes as received.
#[derive(Debug, Serialize)]
struct Record<'a> {
    time: &'a str,
    nick: &'a str,
    addr: Source,
    kind: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_hex: Option<String>,
}

impl Record<'_> {
    /// Append the record as serde_json writes it, when every string in it
    /// is printable ASCII with no `"` or `\\` (nothing to escape). False,
    /// with nothing written, for any other record.
    fn write_plain(&self, out: &mut Vec<u8>) -> bool {
        let plain = |s: &str| {
            crate::proto::escape::printable_ascii(s.as_bytes())
                && !s.bytes().any(|b| b == b'"' || b == b'\\')
        };
        if self.bytes_hex.is_some()
            || ![self.time, self.nick, self.kind, self.text]
                .iter()
                .all(|s| plain(s))
        {
            return false;
        }
        let field = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(value);
        };
        field(out, "{\"time\":\"", self.time.as_bytes());
        field(out, "\",\"nick\":\"", self.nick.as_bytes());
        out.extend_from_slice(b"\",\"addr\":\"");
        match self.addr.0 {
            // An address's text is ASCII with nothing to escape.
            Some(SocketAddr::V4(a)) => {
                // By hand: the formatting machinery is a good part of a
                // record otherwise.
                for (i, o) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    push_decimal(out, u32::from(o));
                }
                out.push(b':');
                push_decimal(out, u32::from(a.port()));
            }
            Some(a) => {
                let _ = write!(out, "{a}");
            }
            None => out.extend_from_slice(b"operator"),
        }
        field(out, "\",\"kind\":\"", self.kind.as_bytes());
        field(out, "\",\"text\":\"", self.text.as_bytes());
        out.extend_from_slice(b"\"}");
        true
    }
}

/// `n` in decimal, as `Display` writes it.
fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// What a member's line is: said, or `/me`.
#[derive(Clone, Copy)]
enum Said {
    Say,
    Me,
}

/// Where a record's line came from: a member's address or the operator,
/// written straight into the record (no string made per line).
#[derive(Debug)]
struct Source(Option<SocketAddr>);

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.collect_str(&a),
            None => s.serialize_str("operator"),
        }
    }
}

struct Member {
    nick: String,
    addr: Option<SocketAddr>,
    /// The nickname's folded forms, for "taken" checks without refolding
    /// every member's name on every join.
    key: NickKey,
}

impl Member {
    fn new(nick: String, addr: Option<SocketAddr>) -> Member {
        let key = NickKey::of(&nick);
        Member { nick, addr, key }
    }

    fn rename(&mut self, nick: String) {
        self.key = NickKey::of(&nick);
        self.nick = nick;
    }
}

/// The room.
pub struct Room {
    members: BTreeMap<usize, Member>,
    /// Changes of membership so far (a copy of the member list is good
    /// while this stays the same).
    generation: u64,
    replay: VecDeque<String>,
    replay_max: usize,
    log_dir: Option<PathBuf>,
    log: Option<(String, File)>,
    /// Bytes in today's open file (kept here, not asked of the file system
    /// per line).
    log_len: u64,
    /// Records of this turn not yet written, and their day: one write per
    /// turn ([`Room::flush_log`]), before anything of the turn is sent.
    pending: Vec<u8>,
    pending_day: String,
    clock: Clock,
    log_failed: bool,
    log_warned: bool,
    /// Lines for the operator (the shell's `chat`, or the console).
    pub operator_out: Option<OperatorView>,
    operator_nick: String,
    /// How much log is kept.
    pub keep: Retention,
    /// Banned addresses (IPv6 by /64, see [`ban_key`]), oldest first.
    bans: VecDeque<IpAddr>,
}

impl Room {
    /// A turn of the room's loop begins: its members' lines have the time
    /// read now (one clock read and format a turn, not one a line; a turn
    /// handles what one wake-up read, within a few milliseconds). Notices,
    /// which can come between turns, read the clock themselves.
    pub fn start_turn(&mut self) {
        self.clock.tick();
    }

    /// An empty room logging under `log_dir` (none: no log).
    pub fn new(log_dir: Option<PathBuf>, replay_max: usize) -> Room {
        Room {
            members: BTreeMap::new(),
            generation: 0,
            replay: VecDeque::new(),
            replay_max,
            log_dir,
            log: None,
            log_len: 0,
            pending: Vec::new(),
            pending_day: String::new(),
            clock: Clock::started(),
            log_failed: false,
            log_warned: false,
            operator_out: None,
            operator_nick: chat::OPERATOR_NICK.into(),
            keep: Retention::default(),
            bans: VecDeque::new(),
        }
    }

    /// Members in the room now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `slot` is a member.
    pub fn contains(&self, slot: usize) -> bool {
        self.members.contains_key(&slot)
    }

    /// Addresses of the connected members (not the operator).
    pub fn member_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.members.values().filter_map(|m| m.addr)
    }

    /// Changes of membership so far: while it stays the same, so does
    /// [`Room::member_slots`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `slot` joins (every change of membership goes through here or
    /// [`Room::leave`], so [`Room::generation`] counts them all).
    fn enter(&mut self, slot: usize, m: Member) {
        self.generation += 1;
        self.members.insert(slot, m);
    }

    /// `slot` is no longer a member; its entry, if it was one.
    fn leave(&mut self, slot: usize) -> Option<Member> {
        self.generation += 1;
        self.members.remove(&slot)
    }

    /// Slots of the connected members (not the operator).
    pub fn member_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.keys().copied().filter(|k| *k != OPERATOR)
    }

    /// Let the operator in (or out with `None`); says so to the room.
    pub fn set_operator(
        &mut self,
        out: Option<OperatorView>,
        deliver: &mut Vec<Deliver>,
    ) -> Option<String> {
        let was = self.operator_out.is_some() || self.members.contains_key(&OPERATOR);
        self.operator_out = out;
        let now = self.operator_out.is_some();
        match (was, now) {
            (false, true) => {
                let nick = self.operator_nick.clone();
                self.enter(OPERATOR, Member::new(nick.clone(), None));
                Some(self.notice(&nick, None, "join", OPERATOR_JOINED, deliver))
            }
            (true, false) => {
                let nick = self.leave(OPERATOR).map(|m| m.nick).unwrap_or_default();
                Some(self.notice(&nick, None, "leave", "left", deliver))
            }
            _ => None,
        }
    }

    /// Handle one event from member `who` at `addr`. Deliveries are appended
    /// to `out`; the returned line (if any) is for the console.
    pub fn handle(
        &mut self,
        who: usize,
        addr: Option<SocketAddr>,
        ev: ChatIn,
        out: &mut Vec<Deliver>,
    ) -> Option<String> {
        match ev {
            ChatIn::Join(nick) => {
                if self.members.len() >= MAX_MEMBERS {
                    out.push(Deliver::One(who, chat::room_full_line(MAX_MEMBERS)));
                    out.push(Deliver::Close(who));
                    return None;
                }
                if let Some(why) = self.refuse_join(&nick, addr) {
                    out.push(Deliver::One(who, format!("ERR {why}")));
                    out.push(Deliver::Close(who));
                    return Some(format!("{} refused: {why}", shown_addr(addr)));
                }
                let Some(nick) = self.unique(&nick) else {
                    out.push(Deliver::One(who, format!("ERR nickname {nick} is taken")));
                    out.push(Deliver::Close(who));
                    return None;
                };
                self.enter(who, Member::new(nick.clone(), addr));
                out.push(Deliver::One(
                    who,
                    chat::joined_line(nick.as_bytes(), self.members.len() as u64),
                ));
                for l in &self.replay {
                    out.push(Deliver::One(who, l.clone()));
                }
                Some(self.notice(&nick, addr, "join", "joined", out))
            }
            ChatIn::Refused(why) => {
                out.push(Deliver::One(who, why));
                None
            }
            ChatIn::Gone(why) => {
                let m = self.leave(who)?;
                let text = if why == "left" {
                    "left".to_string()
                } else {
                    format!("left ({why})")
                };
                Some(self.notice(&m.nick, m.addr, "leave", &text, out))
            }
            ChatIn::Line(bytes) => {
                if !self.members.contains_key(&who) {
                    return None;
                }
                // Kept for the log when the line is not UTF-8 (lossless).
                let raw = std::str::from_utf8(&bytes).is_err().then_some(&bytes[..]);
                match chat::parse(&bytes) {
                    Action::Nothing => None,
                    Action::Say(text) => self.say(who, addr, Said::Say, &text, raw, out),
                    Action::Me(text) => self.say(who, addr, Said::Me, &text, raw, out),
                    Action::Who => {
                        let mut nicks: Vec<&str> =
                            self.members.values().map(|m| m.nick.as_str()).collect();
                        nicks.sort_unstable();
                        let line = chat::server_line(
                            self.clock.hms(),
                            &format!("in the room ({}): {}", nicks.len(), nicks.join(", ")),
                        );
                        reply(who, line, out)
                    }
                    Action::Help if who == OPERATOR => {
                        reply(who, chat::OPERATOR_HELP.to_string(), out)
                    }
                    Action::Help => reply(who, chat::HELP.to_string(), out),
                    Action::Kick(target, reason) => {
                        self.remove_member(who, &target, &reason, false, out)
                    }
                    Action::Ban(target, reason) => {
                        self.remove_member(who, &target, &reason, true, out)
                    }
                    Action::Nick(new) => {
                        if let Err(why) = chat::valid_nick(&new) {
                            return reply(who, format!("ERR {why}"), out);
                        }
                        if who != OPERATOR && chat::reserved_nick(&new, &self.operator_nick) {
                            return reply(
                                who,
                                format!("ERR nickname {new} is reserved for the server's operator"),
                                out,
                            );
                        }
                        let key = NickKey::of(&new);
                        if self
                            .members
                            .iter()
                            .any(|(id, m)| *id != who && m.key.same(&key))
                        {
                            return reply(who, format!("ERR nickname {new} is taken"), out);
                        }
                        // The operator takes no name a member would then
                        // seem to be a variant of (`admin` with `admin2` in).
                        if who == OPERATOR
                            && let Some(m) = self.members.iter().find(|(id, m)| {
                                **id != OPERATOR && chat::reserved_nick(&m.nick, &new)
                            })
                        {
                            return reply(
                                who,
                                format!("ERR nickname {new} is too close to member {}'s", m.1.nick),
                                out,
                            );
                        }
                        let m = self.members.get_mut(&who)?;
                        let nick = m.nick.clone();
                        m.rename(new.clone());
                        if who == OPERATOR {
                            self.operator_nick = new.clone();
                        }
                        Some(self.notice(
                            &nick,
                            addr,
                            "nick",
                            &format!("is now known as {new}"),
                            out,
                        ))
                    }
                    Action::Quit => {
                        let m = self.leave(who)?;
                        let line = self.notice(&m.nick, addr, "leave", "left", out);
                        out.push(Deliver::One(who, crate::proto::echo::BYE.into()));
                        out.push(Deliver::Close(who));
                        Some(line)
                    }
                    Action::Unknown(w) => reply(
                        who,
                        format!("ERR unknown command /{} (try /help)", chat::clean(&w)),
                        out,
                    ),
                }
            }
        }
    }

    /// A member's line (`/me` or not) to everyone, logged. The member's
    /// name is lent out of its entry for the line, not copied.
    fn say(
        &mut self,
        who: usize,
        addr: Option<SocketAddr>,
        said: Said,
        text: &str,
        raw: Option<&[u8]>,
        out: &mut Vec<Deliver>,
    ) -> Option<String> {
        let nick = std::mem::take(&mut self.members.get_mut(&who)?.nick);
        let (line, kind) = match said {
            Said::Say => (chat::say_line(self.clock.hms(), &nick, text), "say"),
            Said::Me => (chat::action_line(self.clock.hms(), &nick, text), "me"),
        };
        self.record(&nick, addr, kind, text, raw);
        if let Some(m) = self.members.get_mut(&who) {
            m.nick = nick;
        }
        self.remember(&line);
        out.push(Deliver::All(line.clone()));
        Some(line)
    }

    /// A member dropped because it stopped reading.
    pub fn drop_slow(&mut self, who: usize, out: &mut Vec<Deliver>) -> Option<String> {
        let m = self.leave(who)?;
        Some(self.notice(&m.nick, m.addr, "drop", "was dropped (not reading)", out))
    }

    /// The operator's `/kick` (or `/ban`, which also refuses the member's
    /// address): the member gets the notice and is closed, the room gets
    /// the notice; both are logged.
    fn remove_member(
        &mut self,
        who: usize,
        target: &str,
        reason: &str,
        ban: bool,
        out: &mut Vec<Deliver>,
    ) -> Option<String> {
        let cmd = if ban { "ban" } else { "kick" };
        if who != OPERATOR {
            return reply(who, format!("ERR /{cmd} is for the server's operator"), out);
        }
        if chat::valid_nick(target).is_err() {
            return reply(who, format!("ERR usage: /{cmd} NICK [REASON]"), out);
        }
        let Some(slot) = self
            .members
            .iter()
            .find(|(id, m)| **id != OPERATOR && same_nick(&m.nick, target))
            .map(|(id, _)| *id)
        else {
            return reply(who, format!("ERR no member named {target} (try /who)"), out);
        };
        let m = self.leave(slot)?;
        let mut banned = String::new();
        if ban && let Some(key) = m.addr.map(|a| ban_key(a.ip())) {
            if !self.bans.contains(&key) {
                if self.bans.len() >= MAX_BANS
                    && let Some(old) = self.bans.pop_front()
                {
                    banned = format!(
                        " (the oldest ban, {}, was lifted: at most {MAX_BANS})",
                        shown_ban(old)
                    );
                }
                self.bans.push_back(key);
            }
            banned = format!(
                "; {} refused until the server stops{banned}",
                shown_ban(key)
            );
        }
        let by = if ban { "banned" } else { "kicked" };
        let mut text = format!("was {by} by {}", self.operator_nick);
        if !reason.is_empty() {
            text.push_str(&format!(" ({reason})"));
        }
        let line = self.notice(&m.nick, m.addr, cmd, &text, out);
        out.push(Deliver::One(slot, line.clone()));
        out.push(Deliver::Close(slot));
        Some(format!("{line}{banned}"))
    }

    /// Why a join as `nick` from `addr` is refused, if it is: a banned
    /// address, or a name reserved for the operator.
    fn refuse_join(&self, nick: &str, addr: Option<SocketAddr>) -> Option<String> {
        if let Some(a) = addr
            && self.bans.contains(&ban_key(a.ip()))
        {
            return Some("banned: this address may not join this room".into());
        }
        chat::reserved_nick(nick, &self.operator_nick)
            .then(|| format!("nickname {nick} is reserved for the server's operator"))
    }

    /// A server notice about `nick` (`*** nick text`) to everyone, logged.
    fn notice(
        &mut self,
        nick: &str,
        addr: Option<SocketAddr>,
        kind: &str,
        text: &str,
        out: &mut Vec<Deliver>,
    ) -> String {
        let line = chat::server_line(self.clock.tick().hms(), &format!("{nick} {text}"));
        self.record(nick, addr, kind, text, None);
        self.remember(&line);
        out.push(Deliver::All(line.clone()));
        line
    }

    fn remember(&mut self, line: &str) {
        if self.replay_max == 0 {
            return;
        }
        if self.replay.len() == self.replay_max {
            self.replay.pop_front();
        }
        self.replay.push_back(line.to_string());
    }

    /// `want`, or `want` with the lowest number from 2 on that makes it
    /// free (taken names are compared by [`same_nick`]). None if no such
    /// name is free (the member count bounds the search) or allowed.
    fn unique(&self, want: &str) -> Option<String> {
        // Every member's forms once, so each candidate is a few look-ups.
        let taken: std::collections::HashSet<&str> =
            self.members.values().flat_map(|m| m.key.forms()).collect();
        let free = |n: &str| {
            !NickKey::of(n).forms().any(|f| taken.contains(f))
                && !chat::reserved_nick(n, &self.operator_nick)
        };
        if free(want) {
            return Some(want.to_string());
        }
        (2..=MAX_MEMBERS + 1)
            .map(|i| format!("{want}{i}"))
            .find(|n| free(n))
    }

    /// Add a record to this turn's part of today's log; it is written by
    /// [`Room::flush_log`] before any line of the turn goes out. A failure
    /// is remembered for [`Room::take_log_failure`] and the room goes on.
    /// The record has the time of the clock's last tick: the turn's (see
    /// [`Room::start_turn`]) or the notice's.
    fn record(
        &mut self,
        nick: &str,
        addr: Option<SocketAddr>,
        kind: &str,
        text: &str,
        raw: Option<&[u8]>,
    ) {
        if self.log_dir.is_none() {
            return;
        }
        if self.clock.day != self.pending_day {
            // Midnight within a turn: the earlier records go to their own day.
            self.flush_log();
            self.pending_day.clone_from(&self.clock.day);
        }
        let rec = Record {
            time: self.clock.stamp(),
            nick,
            addr: Source(addr),
            kind,
            text,
            bytes_hex: raw.map(hex),
        };
        // The common record (printable ASCII with nothing JSON escapes) is
        // written by hand, as serde_json would write it; others go through
        // serde_json, and one with something to escape for the terminal
        // (rare: printable ASCII is checked a word at a time) is redone.
        if rec.write_plain(&mut self.pending) {
            self.pending.push(b'\n');
            return;
        }
        let start = self.pending.len();
        if serde_json::to_writer(&mut self.pending, &rec).is_err() {
            self.pending.truncate(start);
            return;
        }
        let written = &self.pending[start..];
        if !crate::proto::escape::printable_ascii(written) {
            let safe = std::str::from_utf8(written)
                .map(|t| crate::proto::escape::json_safe(t).into_owned())
                .ok();
            self.pending.truncate(start);
            match safe {
                Some(t) => self.pending.extend_from_slice(t.as_bytes()),
                None => return,
            }
        }
        self.pending.push(b'\n');
    }

    /// Write this turn's records: one write, unbuffered, so every line is
    /// on disk (in the kernel: it survives the server's SIGKILL) before it
    /// is sent to anyone. The hub calls it at the end of each turn, before
    /// the loop writes to any member.
    pub fn flush_log(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(dir) = self.log_dir.clone() else {
            self.pending.clear();
            return;
        };
        let day = std::mem::take(&mut self.pending_day);
        let res = self
            .ensure_log(&dir, &day)
            .and_then(|()| match &mut self.log {
                Some((_, f)) => f.write_all(&self.pending),
                None => Ok(()),
            });
        match res {
            Ok(()) => self.log_len += self.pending.len() as u64,
            Err(_) => {
                self.log = None;
                self.log_failed = true;
            }
        }
        self.pending_day = day;
        self.pending.clear();
        // A burst's buffer is not kept for a quiet room.
        if self.pending.capacity() > 1 << 20 {
            self.pending = Vec::new();
        }
    }

    /// Open today's log now (at server start), so a problem shows at once
    /// and the file descriptor count is steady from the first line.
    pub fn open_log(&mut self) {
        if let Some(dir) = self.log_dir.clone() {
            let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
            if self.ensure_log(&dir, &day).is_err() {
                self.log = None;
                self.log_failed = true;
            }
        }
    }

    /// Today's log file open for appending, rotated past its size cap.
    fn ensure_log(&mut self, dir: &std::path::Path, day: &str) -> std::io::Result<()> {
        let path = dir.join(format!("{day}.jsonl"));
        let reopen = match &self.log {
            Some((d, _)) => d != day,
            None => true,
        };
        if reopen {
            fs::create_dir_all(dir)?;
            self.open_at(&path, day)?;
            prune(dir, day, self.keep);
        }
        if self.log_len >= LOG_CAP {
            rotate(&path)?;
            self.open_at(&path, day)?;
            prune(dir, day, self.keep);
        }
        Ok(())
    }

    /// Open (append) `path` as today's file and learn its size.
    fn open_at(&mut self, path: &std::path::Path, day: &str) -> std::io::Result<()> {
        let f = open_log_file(path)?;
        self.log_len = f.metadata()?.len();
        self.log = Some((day.to_string(), f));
        Ok(())
    }

    /// True once, the first time the log failed, so it is reported once;
    /// the room keeps trying (the disk may get room again) and keeps working.
    pub fn take_log_failure(&mut self) -> bool {
        if self.log_failed && !self.log_warned {
            self.log_warned = true;
            return true;
        }
        false
    }
}

impl Drop for Room {
    /// Records not yet written (a room dropped mid-turn) still reach the log.
    fn drop(&mut self) {
        self.flush_log();
    }
}

/// Nicknames compare without case and with confusables folded: `Operator`
/// and `0perator`, `a` and `A` would otherwise pass for one another on screen.
fn same_nick(a: &str, b: &str) -> bool {
    chat::same_nick(a, b)
}

/// A reply to one member only (`ERR`, `HELP`, `/who`); the operator's is on
/// the console too, since a foreground server's operator reads the console.
fn reply(who: usize, line: String, out: &mut Vec<Deliver>) -> Option<String> {
    let console = (who == OPERATOR).then(|| line.clone());
    out.push(Deliver::One(who, line));
    console
}

/// What a ban refuses for `ip`: an IPv4 address as it is (an IPv4-mapped
/// IPv6 one as its IPv4 address), an IPv6 address by its /64, since one
/// host usually has a whole /64 to pick addresses from.
fn ban_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// A ban as people write it: `192.0.2.7`, `2001:db8::/64`.
fn shown_ban(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

fn shown_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "operator".into(), |a| a.to_string())
}

/// Lower-case hex of `b`.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Rotated generations kept of one day's log (`.1` newest): a flood costs at
/// most (1 + LOG_KEEP) × LOG_CAP of disk a day, and only the oldest lines.
const LOG_KEEP: u32 = 4;

/// Shift `path.1 … path.(KEEP-1)` up by one (the oldest is replaced), then
/// `path` becomes `path.1`.
fn rotate(path: &std::path::Path) -> std::io::Result<()> {
    let generation = |n: u32| {
        let mut p = path.as_os_str().to_os_string();
        p.push(format!(".{n}"));
        std::path::PathBuf::from(p)
    };
    for n in (1..LOG_KEEP).rev() {
        let from = generation(n);
        if from.exists() {
            fs::rename(&from, generation(n + 1))?;
        }
    }
    fs::rename(path, generation(1))
}

/// Apply `keep` to the chat logs in `dir` (`DATE.jsonl`, `DATE.jsonl.N`);
/// `today.jsonl` stays. Returns the files deleted. Best effort: a file that
/// can't be removed is left for the next time.
pub fn prune(dir: &std::path::Path, today: &str, keep: Retention) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    // (date, generation, size, path); generation 0 is the day's live file.
    let mut files: Vec<(chrono::NaiveDate, u32, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (date, rest) = name.split_once(".jsonl")?;
            let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
            let generation = match rest {
                "" => 0,
                r => r.strip_prefix('.')?.parse().ok()?,
            };
            let size = e.metadata().ok()?.len();
            Some((date, generation, size, e.path()))
        })
        .collect();
    let Ok(today_date) = chrono::NaiveDate::parse_from_str(today, "%Y-%m-%d") else {
        return 0;
    };
    let live = |d: &chrono::NaiveDate, g: u32| *d == today_date && g == 0;
    // Oldest first: earlier days, and in a day the highest generation.
    files.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut deleted = 0;
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    let oldest_kept = if keep.days > 0 {
        today_date - chrono::Days::new(u64::from(keep.days))
    } else {
        chrono::NaiveDate::MIN
    };
    for (date, generation, size, path) in &files {
        if live(date, *generation) {
            continue;
        }
        let too_old = *date < oldest_kept;
        let too_big = keep.max_bytes > 0 && total > keep.max_bytes;
        if !(too_old || too_big) {
            continue;
        }
        if fs::remove_file(path).is_ok() {
            total = total.saturating_sub(*size);
            deleted += 1;
        }
    }
    deleted
}

/// Open a log for appending. A record cut short earlier (the disk filled
/// mid-write) is ended with a newline first, so the next record starts on a
/// line of its own and every complete line stays valid JSON.
fn open_log_file(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::FileExt;
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut last = [0u8; 1];
    if len > 0 && f.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
        f.write_all(b"\n")?;
    }
    Ok(f)
}

/// The room's clock, formatted once a second rather than once a line:
/// `HH:MM:SS` (local) for the lines, the UTC day for the log's file and
/// the log's RFC 3339 time to the millisecond.
#[derive(Default)]
struct Clock {
    second: i64,
    hms: String,
    day: String,
    /// `YYYY-MM-DDTHH:MM:SS.` in UTC, then the last tick's `mmmZ`.
    stamp: String,
    /// The length of the part of `stamp` that changes once a second.
    head: usize,
}

impl Clock {
    /// A clock read once, so a line always has a time.
    fn started() -> Clock {
        let mut c = Clock::default();
        c.tick();
        c
    }

    /// Now.
    fn tick(&mut self) -> &Clock {
        // Seconds and milliseconds straight from the system clock; chrono's
        // date arithmetic and formatting run only when the second changes
        // (they were most of a tick, which starts every turn of the room).
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let second = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        let millis = since.subsec_millis().min(999);
        if second != self.second || self.hms.is_empty() {
            let now = chrono::DateTime::from_timestamp(second, 0).unwrap_or_default();
            self.second = second;
            self.hms = now
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string();
            self.day = now.format("%Y-%m-%d").to_string();
            self.stamp = now.format("%Y-%m-%dT%H:%M:%S.").to_string();
            self.head = self.stamp.len();
        }
        self.stamp.truncate(self.head);
        for d in [millis / 100, millis / 10 % 10, millis % 10] {
            self.stamp.push(char::from(b'0' + d as u8));
        }
        self.stamp.push('Z');
        self
    }

    fn hms(&self) -> &str {
        &self.hms
    }

    /// The time of the last tick as the log writes it: `…T12:34:56.789Z`.
    fn stamp(&self) -> &str {
        &self.stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_stamps_to_the_millisecond_and_names_the_same_second() {
        for _ in 0..50 {
            let before = chrono::Utc::now();
            let mut c = Clock::started();
            let stamp = c.tick().stamp().to_string();
            let after = chrono::Utc::now();
            let t = chrono::DateTime::parse_from_rfc3339(&stamp).expect("RFC 3339");
            assert_eq!(stamp.len(), "2026-12-04T01:02:03.456Z".len(), "{stamp}");
            assert!(stamp.ends_with('Z'), "{stamp}");
            let ms = chrono::Duration::milliseconds(1);
            assert!(t >= before - ms && t <= after, "{before} {stamp} {after}");
            let local = t
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string();
            assert_eq!(c.hms(), local);
            assert_eq!(c.day, t.format("%Y-%m-%d").to_string());
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }

    #[test]
    fn a_plain_record_is_written_as_serde_json_writes_it() {
        let addrs = [
            Some("127.0.0.1:40000".parse().unwrap()),
            Some("0.0.0.0:0".parse().unwrap()),
            Some("255.255.255.255:65535".parse().unwrap()),
            Some("10.20.3.199:8".parse().unwrap()),
            Some("[::1]:5".parse().unwrap()),
            Some("[fe80::1%2]:65535".parse().unwrap()),
            None,
        ];
        let mut plain = 0;
        for addr in addrs {
            for (nick, text) in [
                ("alice", "hello, world ~ {}[]"),
                ("bob", ""),
                ("eve", "say \"hi\""),
                ("eve", "back\\slash"),
                ("zoë", "non-ASCII nick"),
                ("tab", "a\tb"),
                ("esc", "\u{1b}[2J"),
            ] {
                let rec = Record {
                    time: "2026-12-04T01:02:03.456Z",
                    nick,
                    addr: Source(addr),
                    kind: "say",
                    text,
                    bytes_hex: None,
                };
                let mut by_hand = Vec::new();
                if rec.write_plain(&mut by_hand) {
                    plain += 1;
                    assert_eq!(by_hand, serde_json::to_vec(&rec).unwrap(), "{nick} {text}");
                } else {
                    assert!(by_hand.is_empty());
                    assert!(
                        !(nick.is_ascii()
                            && text
                                .bytes()
                                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'))
                    );
                }
            }
        }
        // Only the two plain pairs take the hand-written path, at every address.
        assert_eq!(plain, 2 * addrs.len());
        let with_hex = Record {
            time: "t",
            nick: "n",
            addr: Source(None),
            kind: "say",
            text: "x",
            bytes_hex: Some("ff".into()),
        };
        assert!(!with_hex.write_plain(&mut Vec::new()));
    }

    #[test]
    fn bans_are_by_ipv4_address_and_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ban_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(ban_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            ban_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            ban_key(ip("2001:db8:1:2::1")),
            ban_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ban_key(ip("2001:db8:1:2::1")),
            ban_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            shown_ban(ban_key(ip("2001:db8:1:2::1"))),
            "2001:db8:1:2::/64"
        );
        assert_eq!(shown_ban(ban_key(ip("::1"))), "::/64");
    }

    #[test]
    fn bans_are_bounded_and_lift_the_oldest() {
        let mut room = Room::new(None, 0);
        let mut out = Vec::new();
        room.set_operator(Some(OperatorView::Console), &mut out);
        for i in 0..=MAX_BANS {
            let addr: SocketAddr = format!("10.0.{}.{}:4000", i / 256, i % 256)
                .parse()
                .unwrap();
            let slot = i;
            room.handle(slot, Some(addr), ChatIn::Join(format!("m{i}")), &mut out);
            assert!(room.contains(slot), "m{i} joined");
            let said = room.handle(
                OPERATOR,
                None,
                ChatIn::Line(format!("/ban m{i}").into_bytes()),
                &mut out,
            );
            assert!(!room.contains(slot), "m{i} banned");
            let said = said.unwrap_or_default();
            assert_eq!(
                said.contains("was lifted"),
                i == MAX_BANS,
                "ban {i}: {said}"
            );
        }
        assert_eq!(room.bans.len(), MAX_BANS);
        // The first ban was lifted; the second holds.
        let first: SocketAddr = "10.0.0.0:4001".parse().unwrap();
        let second: SocketAddr = "10.0.0.1:4001".parse().unwrap();
        assert!(room.refuse_join("x", Some(first)).is_none());
        assert!(room.refuse_join("x", Some(second)).is_some());
    }

    #[test]
    fn rotation_keeps_generations_and_drops_only_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day.jsonl");
        let read = |suffix: &str| {
            let mut p = path.as_os_str().to_os_string();
            p.push(suffix);
            fs::read_to_string(std::path::PathBuf::from(p)).ok()
        };
        for round in 0..=LOG_KEEP + 1 {
            fs::write(&path, format!("round {round}\n")).unwrap();
            rotate(&path).unwrap();
        }
        // After rounds 0..=KEEP+1, .1 holds the newest and .KEEP the oldest kept.
        let last = LOG_KEEP + 1;
        for n in 1..=LOG_KEEP {
            assert_eq!(
                read(&format!(".{n}")),
                Some(format!("round {}\n", last + 1 - n)),
                "generation {n}"
            );
        }
        assert_eq!(
            read(&format!(".{}", LOG_KEEP + 1)),
            None,
            "no more than {LOG_KEEP} kept"
        );
        assert_eq!(read(""), None, "the live file moved to .1");
    }

    #[test]
    fn a_log_ending_mid_record_gets_its_newline_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day.jsonl");
        fs::write(&path, b"{\"cut").unwrap();
        let mut f = open_log_file(&path).unwrap();
        f.write_all(b"{}\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"cut\n{}\n");
        // A whole file is left as it is.
        drop(open_log_file(&path).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"{\"cut\n{}\n");
    }
}
