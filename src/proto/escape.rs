//! Making untrusted text safe for one line of a terminal or a log: control
//! characters, escape sequences and invisible formatting characters are shown
//! visibly (`\x1b[2J`, `\u{202e}`), never passed to the terminal; invalid
//! UTF-8 becomes U+FFFD.

use std::borrow::Cow;

/// True for a character that must not reach a terminal or log as itself:
///
/// - every control character (Unicode category Cc: C0, DEL, C1);
/// - bidirectional controls, which make text display in another order than
///   it is ("Trojan Source"): U+061C, U+200E/U+200F, the embeddings and
///   overrides U+202A–U+202E, the isolates U+2066–U+2069;
/// - invisible and zero-width characters that hide or join text: U+00AD,
///   U+180E, U+200B–U+200D, U+2060–U+2064 and the rest of U+2060–U+206F,
///   U+FEFF, the interlinear annotation controls U+FFF9–U+FFFB, and the tag
///   characters U+E0000–U+E007F;
/// - the line and paragraph separators U+2028/U+2029, which some terminals
///   and viewers treat as line breaks.
///
/// Ordinary non-ASCII text (é, 日本, emoji) is not affected. Note that
/// U+200D ZERO WIDTH JOINER is escaped too, so emoji sequences built with it
/// (👨‍👩‍👧) show as their parts joined by `\u{200d}`: an accepted cost.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// Whether any character of `s` is one [`needs_escape`] names. Printable
/// ASCII (all of most chat) is checked a word at a time; only text with
/// other bytes is looked at character by character.
pub fn has_escape(s: &str) -> bool {
    !printable_ascii(s.as_bytes()) && s.chars().any(needs_escape)
}

/// Whether every byte is printable ASCII (space to `~`): nothing in it can
/// need escaping.
pub fn printable_ascii(b: &[u8]) -> bool {
    b.iter().all(|b| (0x20..0x7f).contains(b))
}

/// Escape every character [`needs_escape`] names, so the text prints on one
/// line, cannot move the cursor, change colours or retitle the window, and
/// displays as what it is (no bidi reordering, no hidden characters).
/// Tabs are kept as `\t` too, so column layout stays predictable.
/// Text with nothing to escape is returned borrowed.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !has_escape(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
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

/// A JSON document made safe to `cat` without changing what it says: every
/// character [`needs_escape`] names is written as its `\uXXXX` escape
/// (a surrogate pair past U+FFFF), which a JSON reader decodes back to the
/// same character. serde_json already escapes U+0000–U+001F; this adds DEL,
/// the C1 controls (U+009B is a CSI to some terminals), bidi and invisible
/// characters. Only string contents can hold such characters, so the
/// document's structure is untouched.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    if !has_escape(json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if needs_escape(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
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
    fn the_ascii_fast_path_agrees_with_the_character_check() {
        for s in [
            "plain text, all printable ~!",
            "",
            "tab\there",
            "del\u{7f}",
            "esc\u{1b}[2J",
            "caf\u{e9}",
            "c1\u{85}",
            "bidi\u{202e}",
            "\u{1f600} emoji",
            "nul\0",
        ] {
            assert_eq!(has_escape(s), s.chars().any(needs_escape), "{s:?}");
        }
    }

    #[test]
    fn escapes_terminal_sequences() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("\u{1b}[2Jhi\u{7}"), "\\x1b[2Jhi\\x07");
        assert_eq!(escape_controls("a\r\nb\0"), "a\\r\\nb\\x00");
        assert_eq!(escape_controls("\u{9b}31m"), "\\x9b31m");
        assert_eq!(display_bytes(b"ok\xff\x1b"), "ok\u{fffd}\\x1b");
    }

    #[test]
    fn json_is_made_safe_and_still_says_the_same() {
        for text in [
            "plain",
            "esc \u{1b}[2J bell \u{7} del \u{7f} csi \u{9b}31m",
            "typed \\x1b[2J",
            "bidi \u{202e}abc\u{2066} zw \u{200b} tag \u{e0041} bom \u{feff}",
            "é 日本 😀",
        ] {
            let json = serde_json::to_string(&serde_json::json!({ "text": text })).unwrap();
            let safe = json_safe(&json);
            assert!(!safe.chars().any(needs_escape), "{safe}");
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back["text"], text, "{safe}");
        }
        assert!(matches!(json_safe("{\"a\":\"é\"}"), Cow::Borrowed(_)));
        assert_eq!(
            json_safe("\"\u{7f}\u{e0041}\""),
            "\"\\u007f\\udb40\\udc41\""
        );
    }

    #[test]
    fn escapes_bidi_controls() {
        // The classic Trojan Source shape: an override hiding the real order.
        assert_eq!(
            escape_controls("access\u{202e}\u{2066}admin\u{2069}\u{2066}"),
            "access\\u{202e}\\u{2066}admin\\u{2069}\\u{2066}"
        );
        for (c, shown) in [
            ('\u{202a}', "\\u{202a}"),
            ('\u{202b}', "\\u{202b}"),
            ('\u{202c}', "\\u{202c}"),
            ('\u{202d}', "\\u{202d}"),
            ('\u{202e}', "\\u{202e}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2067}', "\\u{2067}"),
            ('\u{2068}', "\\u{2068}"),
            ('\u{2069}', "\\u{2069}"),
            ('\u{200e}', "\\u{200e}"),
            ('\u{200f}', "\\u{200f}"),
            ('\u{061c}', "\\u{61c}"),
        ] {
            assert!(needs_escape(c), "{shown}");
            assert_eq!(escape_controls(&format!("a{c}b")), format!("a{shown}b"));
        }
    }

    #[test]
    fn escapes_invisible_and_separator_characters() {
        for (c, shown) in [
            ('\u{200b}', "\\u{200b}"),
            ('\u{200c}', "\\u{200c}"),
            ('\u{200d}', "\\u{200d}"),
            ('\u{2060}', "\\u{2060}"),
            ('\u{2061}', "\\u{2061}"),
            ('\u{2064}', "\\u{2064}"),
            ('\u{206f}', "\\u{206f}"),
            ('\u{feff}', "\\u{feff}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
            ('\u{00ad}', "\\xad"),
            ('\u{180e}', "\\u{180e}"),
            ('\u{fff9}', "\\u{fff9}"),
            ('\u{fffb}', "\\u{fffb}"),
            ('\u{e0001}', "\\u{e0001}"),
            ('\u{e0041}', "\\u{e0041}"),
            ('\u{e007f}', "\\u{e007f}"),
        ] {
            assert!(needs_escape(c), "{shown}");
            assert_eq!(escape_controls(&format!("a{c}b")), format!("a{shown}b"));
        }
        // Invalid UTF-8 and a BOM in bytes from the network.
        assert_eq!(
            display_bytes(b"\xef\xbb\xbfhi\xe2\x80\xaeyo\xff"),
            "\\u{feff}hi\\u{202e}yo\u{fffd}"
        );
    }

    #[test]
    fn ordinary_text_passes_unchanged_and_borrowed() {
        for s in [
            "",
            "plain ascii ~!@#$%^&*()",
            "café naïve résumé",
            "日本語のテキスト",
            "Ελληνικά русский עברית العربية",
            "emoji 😀🎉👍🏽🇫🇷",
            "\u{fffd} replacement",
            "\u{2010}\u{2027}\u{202f}\u{2070}\u{fff8}\u{fffc}",
            "\u{dffff}\u{e0080}\u{e0100}",
        ] {
            assert!(
                matches!(escape_controls(s), Cow::Borrowed(b) if b == s),
                "{s:?} was changed"
            );
        }
        // Neighbours of the escaped ranges are kept.
        for c in [
            '\u{00ac}', '\u{00ae}', '\u{061b}', '\u{061d}', '\u{180d}', '\u{180f}', '\u{200a}',
            '\u{2010}', '\u{2027}', '\u{202f}', '\u{205f}', '\u{2070}', '\u{fefe}', '\u{ff00}',
            '\u{fff8}', '\u{fffc}',
        ] {
            assert!(!needs_escape(c), "U+{:04X}", c as u32);
        }
        // Escaping is idempotent: its output has nothing left to escape.
        let once = escape_controls("x\u{1b}\u{202e}\u{200d}\u{e0041}y").into_owned();
        assert!(matches!(escape_controls(&once), Cow::Borrowed(_)));
    }
}
