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
//! server → client   OK joined as <nick> (<n> in room)
//!                   [HH:MM:SS] <nick> text
//!                   [HH:MM:SS] * nick action | joined | left | is now known as …
//!                   ERR <reason>
//!                   BYE
//! ```
//! A nickname is 1–32 of `A-Z a-z 0-9 _ - .`; a taken one gets a number
//! appended (`bob` → `bob2`). Text is shown with control characters escaped.

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

/// Text made safe to show: control characters and escape sequences visible.
pub fn clean(text: &str) -> String {
    escape_controls(text).into_owned()
}

/// `[HH:MM:SS] <nick> text`
pub fn say_line(time: &str, nick: &str, text: &str) -> String {
    format!("[{time}] <{nick}> {}", clean(text))
}

/// `[HH:MM:SS] * nick text`
pub fn notice_line(time: &str, nick: &str, text: &str) -> String {
    format!("[{time}] * {nick} {}", clean(text))
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

/// The change of nickname a room line announces: `(old, new)` of
/// `[HH:MM:SS] * old is now known as new`.
pub fn renamed(line: &str) -> Option<(&str, &str)> {
    let rest = line.split_once("] * ")?.1;
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
        let l = notice_line("12:00:00", "bob", "is now known as robert");
        assert_eq!(renamed(&l), Some(("bob", "robert")));
        assert_eq!(renamed("[12:00:00] <bob> is now known as robert"), None);
        assert_eq!(renamed("[12:00:00] * bob joined"), None);
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
            notice_line("12:00:00", "bob", "joined"),
            "[12:00:00] * bob joined"
        );
    }
}
