//! Making untrusted text safe for one line of a terminal or a log: control
//! characters and escape sequences are shown visibly (`\x1b[2J`), never passed
//! to the terminal; invalid UTF-8 becomes U+FFFD.

use std::borrow::Cow;

/// Escape every control character (C0, DEL, C1) so the text prints on one line
/// and cannot move the cursor, change colours or retitle the window.
/// Tabs are kept as `\t` too, so column layout stays predictable.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{n:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes to text for display: invalid UTF-8 replaced, controls escaped.
pub fn display_bytes(b: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(b)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_sequences() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("\u{1b}[2Jhi\u{7}"), "\\x1b[2Jhi\\x07");
        assert_eq!(escape_controls("a\r\nb\0"), "a\\r\\nb\\x00");
        assert_eq!(escape_controls("\u{9b}31m"), "\\x9b31m");
        assert_eq!(display_bytes(b"ok\xff\x1b"), "ok\u{fffd}\\x1b");
    }
}
