//! The chat protocol's text as pure functions: nickname rules, parsing a
//! member's line into an action, and formatting what the room sends.
//!
//! ```text
//! client → server   CHAT <nick>             join (on a fresh connection)
//!                   <text>                  a message to everyone
//!                   /me <action>            an action: "* nick action"
//!                   /who                    who is in the room (to you only)
//!                   /nick <new>             change nickname
//!                   /help                   the commands (to you only)
//!                   /ping                   keep-alive: PONG (to you only)
//!                   /quit  or  exit         leave
//! operator only     /kick NICK [reason]     close that member's connection
//!                   /ban NICK [reason]      the same, and refuse its address from then on
//! server → client   OK joined as <nick> (<n> in room)
//!                   [HH:MM:SS] <nick> text                 a member's message
//!                   [HH:MM:SS] * nick action               a member's /me
//!                   [HH:MM:SS] *** nick joined | left | is now known as … | was kicked …
//!                   ERR <reason>
//!                   BYE
//! ```
//!
//! Who said what is in the framing: after the time, a member's text starts
//! with `<` (message) or `* ` followed by its nickname (action), and a
//! nickname never contains `*`, so only the server can start a line with
//! `***` ([`server_line`]): `/me joined (the server's operator)` shows as
//! `* bob joined (the server's operator)`, never as a server notice.
//!
//! A nickname is 1–32 of `A-Z a-z 0-9 _ - .`; a taken one gets a number
//! appended (`bob` → `bob2`). Names are compared by [`same_nick`] (case and
//! Unicode confusables folded) and some are reserved for the server's
//! operator ([`reserved_nick`]). Text is shown with control characters escaped.

use crate::proto::escape::escape_controls;

/// Longest chat line from a member, terminator excluded.
pub const MAX_CHAT_LINE: usize = 4096;
/// Longest nickname.
pub const MAX_NICK: usize = 32;

/// What a member's line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A message.
    Say(String),
    /// `/me …`.
    Me(String),
    /// `/who`.
    Who,
    /// `/nick NEW`.
    Nick(String),
    /// `/help`.
    Help,
    /// `/quit` or `exit`.
    Quit,
    /// An empty line: nothing.
    Nothing,
    /// `/kick NICK [reason]` (the operator's).
    Kick(String, String),
    /// `/ban NICK [reason]` (the operator's).
    Ban(String, String),
    /// An unknown `/command`.
    Unknown(String),
}

/// Parse a member's line (bytes; invalid UTF-8 is replaced, never passed on).
pub fn parse(line: &[u8]) -> Action {
    let text = String::from_utf8_lossy(line);
    let t = text.trim_end();
    if t.trim().is_empty() {
        return Action::Nothing;
    }
    if t.trim() == "exit" {
        return Action::Quit;
    }
    let Some(cmd) = t.strip_prefix('/') else {
        return Action::Say(t.to_string());
    };
    if cmd.starts_with('/') {
        // "//text" sends "/text" literally.
        return Action::Say(cmd.to_string());
    }
    let (word, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    match word.to_ascii_lowercase().as_str() {
        "me" => Action::Me(rest.trim().to_string()),
        "who" | "names" => Action::Who,
        "nick" => Action::Nick(rest.trim().to_string()),
        "help" => Action::Help,
        "quit" | "exit" | "leave" => Action::Quit,
        "kick" | "ban" => {
            let rest = rest.trim();
            let (nick, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let (nick, reason) = (nick.to_string(), reason.trim().to_string());
            if word.eq_ignore_ascii_case("kick") {
                Action::Kick(nick, reason)
            } else {
                Action::Ban(nick, reason)
            }
        }
        _ => Action::Unknown(word.to_string()),
    }
}

/// Check a nickname.
///
/// # Errors
/// A reason naming the rule broken.
pub fn valid_nick(n: &str) -> Result<(), String> {
    if n.is_empty() {
        return Err("a nickname is needed: CHAT <nick>".into());
    }
    if n.len() > MAX_NICK {
        return Err(format!("nickname longer than {MAX_NICK} characters"));
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("a nickname may have only letters, digits, '_', '-' and '.'".into());
    }
    Ok(())
}

/// The forms in which a nickname is compared: case folded, and mapped to
/// its UTS #39 "skeleton" (`unicode_security::skeleton`: NFD, invisible
/// default-ignorable characters dropped, each character replaced by the
/// prototype of its confusable class: `0`→`O`, `1`/`I`→`l`, `rn`→`m`,
/// Cyrillic `о`→`o`, fullwidth `ａ`→`a`). Two forms, because case folding
/// and the skeleton do not commute (`I` lower-cases to `i`, but looks like
/// `l`): lower-case then skeleton, and skeleton then lower-case, each
/// repeated until it settles.
fn nick_forms(n: &str) -> NickKey {
    fn settle(mut s: String) -> String {
        for _ in 0..4 {
            let next: String = unicode_security::skeleton(&s)
                .collect::<String>()
                .to_lowercase();
            if next == s {
                break;
            }
            s = next;
        }
        s
    }
    let visible: String = n
        .chars()
        .filter(|c| !crate::proto::escape::needs_escape(*c))
        .collect();
    let skeleton_first: String = unicode_security::skeleton(&visible).collect();
    NickKey([
        settle(visible.to_lowercase()),
        settle(skeleton_first.to_lowercase()),
    ])
}

/// A nickname's folded forms, computed once (a room compares each new name
/// with every member's, so members keep theirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NickKey([String; 2]);

impl NickKey {
    /// The key of `n`.
    pub fn of(n: &str) -> NickKey {
        nick_forms(n)
    }

    /// Whether the two names are one for the room ([`same_nick`]).
    pub fn same(&self, other: &NickKey) -> bool {
        self.0.iter().any(|x| other.0.contains(x))
    }

    /// The forms: two names are one when they share a form.
    pub fn forms(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    fn starts_with(&self, prefix: &NickKey) -> bool {
        self.0
            .iter()
            .any(|f| prefix.0.iter().any(|p| f.starts_with(p.as_str())))
    }
}

/// Whether two nicknames are the same name for the room: equal once case
/// and Unicode confusables are folded ([`nick_forms`]): `bob`, `BOB`, `b0b`
/// and `B0B` are one name, and so are `Bill` and `BiII`, so no two of them
/// can be in the room at once. (Nicknames are ASCII today; the folding holds
/// if that widens.)
pub fn same_nick(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    nick_forms(a).same(&nick_forms(b))
}

/// `n` without its trailing digits and `_ - .`: `admin2`, `admin_` and
/// `admin.1` all have the stem `admin` (a name of only those keeps itself).
fn nick_stem(n: &str) -> &str {
    let stem = n.trim_end_matches(|c: char| c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if stem.is_empty() { n } else { stem }
}

/// The name the operator has until it takes another.
pub const OPERATOR_NICK: &str = "operator";

/// Whether a member (not the operator) may not use `n` because it would pass
/// for the server's operator, whose nickname is now `operator_nick`. The
/// rule, on every path to a name (`CHAT <nick>` and `/nick`):
///
/// - anything that *starts* with `operator` once folded ([`same_nick`]'s
///   forms): `operator`, `Operator`, `0perator`, `operator2`, `operators`,
///   `OPERAT0R_x`; the word is the operator's title, so no variant is
///   anyone else's;
/// - the operator's current nickname and its decorated variants: the same
///   name once folded, after trailing digits and `_ - .` are taken off both
///   (with the operator as `admin`: `ADMIN`, `adrnin`, `admin2`, `admin_`,
///   `Admin.1`). Names that merely begin with it (`administrator`) stay
///   free: an operator called `al` must not take `alice` from everyone.
///
/// The operator's nickname stays reserved while the operator is away.
pub fn reserved_nick(n: &str, operator_nick: &str) -> bool {
    if nick_forms(n).starts_with(&nick_forms(OPERATOR_NICK)) {
        return true;
    }
    same_nick(nick_stem(n), nick_stem(operator_nick))
}

/// Text made safe to show: control characters and escape sequences visible.
pub fn clean(text: &str) -> String {
    escape_controls(text).into_owned()
}

/// `[HH:MM:SS] <nick> text`
pub fn say_line(time: &str, nick: &str, text: &str) -> String {
    room_line(time, &["<", nick, "> "], text)
}

/// `[HH:MM:SS] * nick text`: a member's `/me`.
pub fn action_line(time: &str, nick: &str, text: &str) -> String {
    room_line(time, &["* ", nick, " "], text)
}

/// `[time] ` then `parts` then `text` cleaned: one allocation of the right
/// size (this runs for every line of the room).
fn room_line(time: &str, parts: &[&str; 3], text: &str) -> String {
    let text = escape_controls(text);
    let len = time.len() + 3 + parts.iter().map(|p| p.len()).sum::<usize>() + text.len();
    let mut line = String::with_capacity(len);
    line.push('[');
    line.push_str(time);
    line.push_str("] ");
    for p in parts {
        line.push_str(p);
    }
    line.push_str(&text);
    line
}

/// What starts the text of a server notice, after the time: no member's
/// line can start so (see the module doc).
pub const SERVER_MARK: &str = "*** ";

/// `[HH:MM:SS] *** text`: the server's notice (joins, leaves, renames,
/// kicks, `/who`), which no member can produce.
pub fn server_line(time: &str, text: &str) -> String {
    format!("[{time}] {SERVER_MARK}{}", clean(text))
}

/// Whether a room line is the server's notice (`[HH:MM:SS] *** …`).
pub fn is_server_line(line: &str) -> bool {
    line.split_once("] ")
        .is_some_and(|(time, rest)| time.starts_with('[') && rest.starts_with(SERVER_MARK))
}

/// The line a client sends to leave; the room answers `BYE` once every
/// earlier line of the member was handled.
pub const QUIT: &str = "/quit";
/// A member's keep-alive; the server answers [`PONG`] to it alone. The
/// netsh client sends one a minute, so `serve --chat-idle` never closes it.
pub const PING: &str = "/ping";
/// The answer to [`PING`].
pub const PONG: &str = "PONG";

/// The start of the answer to a successful `CHAT <nick>`.
const JOINED: &[u8] = b"OK joined as ";

/// `OK joined as <nick> (<n> in room)`, the answer to a successful join.
pub fn joined_line(nick: &[u8], members: u64) -> String {
    format!(
        "OK joined as {} ({members} in room)",
        String::from_utf8_lossy(nick)
    )
}

/// The nickname and member count of a [`joined_line`].
pub fn parse_joined(line: &[u8]) -> Option<(&[u8], u64)> {
    let rest = line.strip_prefix(JOINED)?;
    let sp = crate::proto::line::memchr(b' ', rest)?;
    let (nick, tail) = (&rest[..sp], &rest[sp..]);
    let n = tail.strip_prefix(b" (")?.strip_suffix(b" in room)")?;
    let members = std::str::from_utf8(n).ok()?.parse().ok()?;
    (!nick.is_empty()).then_some((nick, members))
}

/// The change of nickname a room line announces: `(old, new)` of the
/// server's `[HH:MM:SS] *** old is now known as new` (a member's `/me is
/// now known as …` is no such notice).
pub fn renamed(line: &str) -> Option<(&str, &str)> {
    let (time, rest) = line.split_once("] ")?;
    if !time.starts_with('[') {
        return None;
    }
    let rest = rest.strip_prefix(SERVER_MARK)?;
    let (old, tail) = rest.split_once(' ')?;
    let new = tail.strip_prefix("is now known as ")?;
    (valid_nick(old).is_ok() && valid_nick(new).is_ok()).then_some((old, new))
}

/// The answer to a join when the room has `max` members.
pub fn room_full_line(max: usize) -> String {
    format!("ERR room full ({max} members)")
}

/// The reply to `/help`.
pub const HELP: &str =
    "HELP chat: text to say it, /me ACTION, /who, /nick NEW, /ping, /help, /quit or exit";

/// The reply to the operator's `/help`: the members' commands and its own.
pub const OPERATOR_HELP: &str = "HELP chat: text to say it, /me ACTION, /who, /nick NEW, /help, /quit or exit; \
     operator: /kick NICK [REASON] closes a member, /ban NICK [REASON] also refuses its address \
     (IPv6: its /64) until the server stops";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(parse(b"hello"), Action::Say("hello".into()));
        assert_eq!(parse(b"/me waves"), Action::Me("waves".into()));
        assert_eq!(parse(b"/who"), Action::Who);
        assert_eq!(parse(b"/nick bob"), Action::Nick("bob".into()));
        assert_eq!(parse(b"/QUIT"), Action::Quit);
        assert_eq!(parse(b"exit"), Action::Quit);
        assert_eq!(parse(b"   "), Action::Nothing);
        assert_eq!(parse(b"/bogus x"), Action::Unknown("bogus".into()));
        assert_eq!(parse(b"//slash"), Action::Say("/slash".into()));
        assert_eq!(
            parse(b"bad \xff byte"),
            Action::Say("bad \u{fffd} byte".into())
        );
    }

    #[test]
    fn join_reply_round_trips() {
        let l = joined_line(b"bob2", 3);
        assert_eq!(l, "OK joined as bob2 (3 in room)");
        assert_eq!(parse_joined(l.as_bytes()), Some((&b"bob2"[..], 3)));
        assert_eq!(parse_joined(b"OK joined as bob (x in room)"), None);
        assert_eq!(parse_joined(b"OK joined as  (3 in room)"), None);
        assert_eq!(parse_joined(b"OK"), None);
    }

    #[test]
    fn a_rename_is_read_back_from_its_notice() {
        let l = server_line("12:00:00", "bob is now known as robert");
        assert_eq!(l, "[12:00:00] *** bob is now known as robert");
        assert_eq!(renamed(&l), Some(("bob", "robert")));
        assert_eq!(renamed("[12:00:00] <bob> is now known as robert"), None);
        assert_eq!(renamed("[12:00:00] *** bob joined"), None);
        // A member's /me that reads like a rename is not one.
        let forged = action_line("12:00:00", "eve", "is now known as operator");
        assert_eq!(renamed(&forged), None);
        assert_eq!(renamed("[12:00:00] * eve is now known as operator"), None);
    }

    #[test]
    fn kick_and_ban_parse_with_an_optional_reason() {
        assert_eq!(
            parse(b"/kick bob"),
            Action::Kick("bob".into(), String::new())
        );
        assert_eq!(
            parse(b"/KICK bob  too loud  "),
            Action::Kick("bob".into(), "too loud".into())
        );
        assert_eq!(
            parse(b"/ban eve spam"),
            Action::Ban("eve".into(), "spam".into())
        );
        assert_eq!(parse(b"/ban"), Action::Ban(String::new(), String::new()));
    }

    #[test]
    fn a_member_cannot_frame_a_server_notice() {
        // Whatever a member sends, its line starts with `<nick>` or `* nick`.
        for text in [
            "joined (the server's operator)",
            "*** operator joined",
            "] *** x",
            "\n[12:00:00] *** operator joined",
        ] {
            for nick in ["bob", "operator", "x.y-z_9"] {
                assert!(!is_server_line(&say_line("12:00:00", nick, text)));
                assert!(!is_server_line(&action_line("12:00:00", nick, text)));
            }
        }
        assert!(is_server_line(&server_line("12:00:00", "bob joined")));
        assert!(!is_server_line("*** bob joined"));
    }

    #[test]
    fn confusable_nicknames_are_one_name() {
        for (a, b) in [
            ("bob", "BOB"),
            ("bob", "b0b"),
            ("B0B", "bob"),
            ("Bill", "BiII"),
            ("admIn", "admln"),
            ("admin", "adrnin"),
            ("operator", "0PERAT0R"),
            // Beyond today's ASCII rule, should it ever widen:
            ("operator", "\u{41e}PERATOR"),         // Cyrillic О
            ("operator", "oper\u{200b}ator"),       // zero-width space
            ("operator", "\u{ff4f}\u{ff50}erator"), // fullwidth ｏｐ
        ] {
            assert!(same_nick(a, b), "{a:?} and {b:?} should be one name");
            assert!(same_nick(b, a), "{b:?} and {a:?} should be one name");
        }
        for (a, b) in [
            ("bob", "rob"),
            ("alice", "al"),
            ("admin", "adm1n"),
            ("amy", "ann"),
        ] {
            assert!(!same_nick(a, b), "{a:?} and {b:?} are different names");
        }
    }

    #[test]
    fn reserved_names_cover_the_title_and_the_operators_nickname() {
        for n in [
            "operator",
            "Operator",
            "OPERATOR",
            "0perator",
            "0PERAT0R",
            "operator2",
            "operators",
            "operator_x",
            "\u{41e}PERATOR",
        ] {
            assert!(reserved_nick(n, OPERATOR_NICK), "{n:?} must be reserved");
            assert!(reserved_nick(n, "admin"), "{n:?} must stay reserved");
        }
        for n in [
            "admin", "ADMIN", "adrnin", "admin2", "admin_", "Admin.1", "admIn",
        ] {
            assert!(
                reserved_nick(n, "admin"),
                "{n:?} passes for the operator admin"
            );
            assert!(
                !reserved_nick(n, OPERATOR_NICK),
                "{n:?} is free while the operator is operator"
            );
        }
        for n in ["administrator", "bob", "op", "opera", "adm", "alice"] {
            assert!(!reserved_nick(n, "admin"), "{n:?} is free");
        }
        // A short operator name does not take longer names from everyone.
        assert!(reserved_nick("al2", "al"));
        assert!(!reserved_nick("alice", "al"));
        // An operator named only by digits keeps just that name.
        assert!(reserved_nick("007", "007"));
        assert!(!reserved_nick("008", "007"));
    }

    #[test]
    fn nicks() {
        assert!(valid_nick("bob_2.x-y").is_ok());
        assert!(valid_nick("").is_err());
        assert!(valid_nick("a b").is_err());
        assert!(valid_nick("\u{1b}[2J").is_err());
        assert!(valid_nick(&"x".repeat(33)).is_err());
    }

    #[test]
    fn lines_are_neutralised() {
        assert_eq!(
            say_line("12:00:00", "bob", "hi\u{1b}[2J"),
            "[12:00:00] <bob> hi\\x1b[2J"
        );
        assert_eq!(
            action_line("12:00:00", "bob", "waves\u{1b}[2J"),
            "[12:00:00] * bob waves\\x1b[2J"
        );
        assert_eq!(
            server_line("12:00:00", "bob joined"),
            "[12:00:00] *** bob joined"
        );
    }
}

/// The server's challenge to `CHAT nick` when the room needs a key:
/// `AUTH <32 hex digits>`, a nonce fresh for this connection.
pub const AUTH: &str = "AUTH";
/// Bytes in a chat challenge's nonce.
pub const NONCE_LEN: usize = 16;
/// Shortest chat key accepted (bytes, after trimming).
pub const MIN_KEY_LEN: usize = 16;

/// The proof a member sends for `nonce`: HMAC-SHA-256 under the room's
/// key over a label, the nonce and the nickname. A fresh nonce per
/// connection makes a captured answer useless later (replay), and the
/// nickname in it makes it useless for another name.
pub fn auth_mac(key: &[u8], nonce: &[u8], nick: &str) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, &auth_message(nonce, nick))
        .as_ref()
        .to_vec()
}

/// Whether `mac` proves the key for `nonce` and `nick` (constant time).
pub fn auth_ok(key: &[u8], nonce: &[u8], nick: &str, mac: &[u8]) -> bool {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, &auth_message(nonce, nick), mac).is_ok()
}

fn auth_message(nonce: &[u8], nick: &str) -> Vec<u8> {
    let mut m = b"netsh-chat-v1\n".to_vec();
    m.extend_from_slice(nonce);
    m.push(b'\n');
    m.extend_from_slice(nick.as_bytes());
    m
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of hex digits, if that is what `s` is.
pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// A chat key from its file: the contents, trimmed, at least
/// [`MIN_KEY_LEN`] bytes.
///
/// # Errors
/// A message naming the file and what is wrong.
pub fn read_key(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    let raw = crate::files::read_capped(path, 64 * 1024)
        .map_err(|e| format!("chat key {}: {e}", path.display()))?;
    let key = raw.trim_ascii().to_vec();
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "chat key {}: {} bytes; a key needs at least {MIN_KEY_LEN} (e.g. head -c 32 /dev/urandom | base64 > FILE)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_nonce_and_name_only() {
        let key = b"0123456789abcdef-key";
        let mac = auth_mac(key, b"nonce-1", "alice");
        assert!(auth_ok(key, b"nonce-1", "alice", &mac));
        assert!(!auth_ok(key, b"nonce-2", "alice", &mac), "replayed");
        assert!(!auth_ok(key, b"nonce-1", "mallory", &mac), "another name");
        assert!(!auth_ok(b"another key of 16+", b"nonce-1", "alice", &mac));
        assert_eq!(unhex(hex(&mac).as_bytes()), Some(mac));
        assert_eq!(unhex(b"zz"), None);
    }
}
