//! The echo wire protocol (see `docs/protocol.md`) as pure functions over
//! bytes: line framing ("need more bytes" is not "garbage"), request parsing,
//! reply encoding, probe payloads that carry their sequence number, and the
//! bulk-test byte pattern. No sockets, no clocks.
//!
//! ```text
//! ECHO <text>\n   →  ECHO_RESPONSE:<text>\n      (byte for byte; many per connection)
//! STREAM\n        →  OK\n, then every byte echoed until the client closes (RFC 862)
//! HELP\n          →  HELP <one line listing the commands>\n
//! QUIT\n          →  BYE\n, and the server closes
//! anything else   →  ERR <reason>\n, the connection stays usable
//! ```
//! Lines end in `\n` or `\r\n`; command words are case-insensitive.

/// Longest request line, terminator excluded. A longer line gets
/// `ERR line too long (max 65536 bytes)` and the connection is closed.
pub const MAX_LINE: usize = 64 * 1024;

/// Prefix of the reply to `ECHO` (the seed's reply form).
pub const ECHO_REPLY_PREFIX: &[u8] = b"ECHO_RESPONSE:";

/// The reply to `HELP`.
pub const HELP_REPLY: &[u8] =
    b"HELP commands: ECHO <text> | STREAM | CHAT <nick> | HELP | QUIT (one per line)\n";

/// Result of looking for one line at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole line (terminator stripped) and how many bytes it used.
    Line(&'a [u8], usize),
    /// No terminator yet and still within the limit: read more.
    Incomplete,
    /// No terminator within `max` bytes: the peer broke the limit.
    TooLong,
}

/// Find the first line in `buf`, at most `max` bytes before its `\n`.
pub fn next_line(buf: &[u8], max: usize) -> Frame<'_> {
    let window = &buf[..buf.len().min(max + 2)];
    match memchr(b'\n', window) {
        Some(i) => {
            let line = &buf[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                Frame::TooLong
            } else {
                Frame::Line(line, i + 1)
            }
        }
        None if buf.len() > max + 1 => Frame::TooLong,
        None => Frame::Incomplete,
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `ECHO <text>`: the text, byte for byte (may be empty).
    Echo(&'a [u8]),
    /// `STREAM`: switch to raw echo.
    Stream,
    /// `CHAT <nick>`: join the chat room (handled by the chat issue).
    Chat(&'a [u8]),
    /// `HELP`.
    Help,
    /// `QUIT`.
    Quit,
    /// An empty line: ignored.
    Empty,
    /// Anything else: the first word, for the error reply.
    Unknown(&'a [u8]),
}

/// Parse one request line (terminator already stripped).
pub fn parse_request(line: &[u8]) -> Request<'_> {
    let (word, rest) = match memchr(b' ', line) {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
    if word.is_empty() && rest.is_none() {
        Request::Empty
    } else if is("ECHO") {
        Request::Echo(rest.unwrap_or(b""))
    } else if is("STREAM") && rest.is_none_or(|r| r.iter().all(u8::is_ascii_whitespace)) {
        Request::Stream
    } else if is("CHAT") {
        Request::Chat(rest.unwrap_or(b""))
    } else if is("HELP") {
        Request::Help
    } else if is("QUIT") {
        Request::Quit
    } else {
        Request::Unknown(word)
    }
}

/// Append `ECHO_RESPONSE:<text>\n` to `out`.
pub fn encode_echo_reply(text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(ECHO_REPLY_PREFIX);
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Append `ERR <reason>\n` for an unknown word (shown escaped, at most 40 bytes).
pub fn encode_unknown(word: &[u8], out: &mut Vec<u8>) {
    let shown = crate::proto::line::display_bytes(&word[..word.len().min(40)]);
    out.extend_from_slice(format!("ERR unknown command '{shown}' (try HELP)\n").as_bytes());
}

/// The reply to a line over [`MAX_LINE`].
pub const TOO_LONG_REPLY: &[u8] = b"ERR line too long (max 65536 bytes)\n";
/// The reply to a client past `--max-clients`.
pub const FULL_REPLY: &[u8] = b"ERR server full\n";
/// Sent to every connected client on shutdown.
pub const SHUTDOWN_REPLY: &[u8] = b"BYE server shutting down\n";

// ---------------------------------------------------------------- probes

/// Probe text for TCP `ECHO`: `seq=<n> ` then a filler derived from `seq`, so a
/// reply says which probe it answers and whether any byte changed. Printable
/// ASCII, no newline; exactly `size` bytes when `size` ≥ the header.
pub fn probe_text(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("seq={seq} ").into_bytes();
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// The sequence number a probe text claims, if it looks like one.
pub fn probe_seq(text: &[u8]) -> Option<u64> {
    let rest = text.strip_prefix(b"seq=")?;
    let end = memchr(b' ', rest).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Magic at the start of a UDP probe datagram.
pub const UDP_MAGIC: &[u8; 4] = b"NSH1";
/// Bytes of a UDP probe header: magic, sequence number (u64, big-endian).
pub const UDP_HEADER: usize = 12;

/// A UDP probe datagram of `size` bytes (at least the header).
pub fn udp_probe(seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(UDP_HEADER));
    v.extend_from_slice(UDP_MAGIC);
    v.extend_from_slice(&seq.to_be_bytes());
    let fill = probe_text(seq, size.saturating_sub(UDP_HEADER));
    v.extend_from_slice(&fill[..size.saturating_sub(UDP_HEADER).min(fill.len())]);
    v
}

/// The sequence number of a UDP probe datagram, if the header is there.
pub fn udp_probe_seq(d: &[u8]) -> Option<u64> {
    if d.len() < UDP_HEADER || &d[..4] != UDP_MAGIC {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[4..12]);
    Some(u64::from_be_bytes(b))
}

/// Offset of the first byte where `got` differs from `want` (a length
/// difference counts at the end of the shorter one); `None` if equal.
pub fn first_difference(want: &[u8], got: &[u8]) -> Option<usize> {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => Some(i),
        None if want.len() == got.len() => None,
        None => Some(want.len().min(got.len())),
    }
}

// ---------------------------------------------------------------- bulk

/// Length of the repeating bulk pattern: prime, so streams at different
/// offsets and chunk sizes never line up.
pub const PATTERN_LEN: usize = 65_521;

/// The bulk-test pattern: all 256 byte values in a pseudo-random order,
/// repeated with period [`PATTERN_LEN`]. Stream `k` starts at offset
/// `k * 7919`, so cross-talk between streams is caught.
pub fn bulk_pattern() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    let mut v: Vec<u8> = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    // Two periods, so a chunk starting anywhere in the first is one slice.
    v.extend_from_within(..);
    v
}

/// Where stream `k` starts in the pattern.
pub fn bulk_offset(stream: usize) -> usize {
    (stream * 7919) % PATTERN_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn framing_exact_bytes() {
        assert_eq!(next_line(b"ECHO hi\nrest", 100), Frame::Line(b"ECHO hi", 8));
        assert_eq!(next_line(b"ECHO hi\r\n", 100), Frame::Line(b"ECHO hi", 9));
        assert_eq!(next_line(b"\n", 100), Frame::Line(b"", 1));
        assert_eq!(next_line(b"ECHO h", 100), Frame::Incomplete);
        assert_eq!(next_line(b"", 100), Frame::Incomplete);
        assert_eq!(next_line(b"12345\n", 5), Frame::Line(b"12345", 6));
        assert_eq!(next_line(b"12345\r\n", 5), Frame::Line(b"12345", 7));
        assert_eq!(next_line(b"123456\n", 5), Frame::TooLong);
        assert_eq!(next_line(b"123456", 5), Frame::Incomplete); // max + 1 bytes: the next byte decides
        assert_eq!(next_line(b"1234567", 5), Frame::TooLong);
    }

    #[test]
    fn requests() {
        assert_eq!(parse_request(b"ECHO Hello"), Request::Echo(b"Hello"));
        assert_eq!(
            parse_request(b"echo  two  spaces "),
            Request::Echo(b" two  spaces ")
        );
        assert_eq!(parse_request(b"ECHO"), Request::Echo(b""));
        assert_eq!(
            parse_request(b"ECHO \0\xff\x1b"),
            Request::Echo(b"\0\xff\x1b")
        );
        assert_eq!(parse_request(b"STREAM"), Request::Stream);
        assert_eq!(parse_request(b"stream "), Request::Stream);
        assert_eq!(parse_request(b"STREAM x"), Request::Unknown(b"STREAM"));
        assert_eq!(parse_request(b"HELP"), Request::Help);
        assert_eq!(parse_request(b"quit"), Request::Quit);
        assert_eq!(parse_request(b""), Request::Empty);
        assert_eq!(parse_request(b"CHAT bob"), Request::Chat(b"bob"));
        assert_eq!(parse_request(b"GET / HTTP/1.1"), Request::Unknown(b"GET"));
        let mut out = Vec::new();
        encode_echo_reply(b"Hello", &mut out);
        assert_eq!(out, b"ECHO_RESPONSE:Hello\n");
        out.clear();
        encode_unknown(b"\x1b[2J", &mut out);
        assert_eq!(out, b"ERR unknown command '\\x1b[2J' (try HELP)\n");
    }

    #[test]
    fn probes() {
        let t = probe_text(42, 64);
        assert_eq!(t.len(), 64);
        assert!(t.starts_with(b"seq=42 "));
        assert!(!t.contains(&b'\n'));
        assert_eq!(probe_seq(&t), Some(42));
        assert_eq!(probe_seq(b"seq=x"), None);
        assert_ne!(probe_text(1, 64), probe_text(2, 64));
        let d = udp_probe(7, 100);
        assert_eq!(d.len(), 100);
        assert_eq!(udp_probe_seq(&d), Some(7));
        assert_eq!(udp_probe_seq(b"NSH1"), None);
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abX"), Some(2));
        assert_eq!(first_difference(b"abc", b"ab"), Some(2));
    }

    #[test]
    fn pattern_has_every_byte() {
        let p = bulk_pattern();
        let mut seen = [false; 256];
        for b in &p[..PATTERN_LEN] {
            seen[*b as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_ne!(bulk_offset(0), bulk_offset(1));
        assert_eq!(p.len(), 2 * PATTERN_LEN);
        assert_eq!(
            p[..PATTERN_LEN],
            p[PATTERN_LEN..],
            "periodic: any slice start mod P sees the same bytes"
        );
    }

    proptest! {
        #[test]
        fn framing_never_panics_and_respects_the_limit(buf in proptest::collection::vec(any::<u8>(), 0..300), max in 1usize..100) {
            match next_line(&buf, max) {
                Frame::Line(l, used) => {
                    prop_assert!(l.len() <= max);
                    prop_assert!(used <= buf.len());
                    prop_assert_eq!(buf[used - 1], b'\n');
                    prop_assert!(!buf[..used - 1].contains(&b'\n'));
                }
                Frame::Incomplete => {
                    prop_assert!(!buf.contains(&b'\n'));
                    prop_assert!(buf.len() <= max + 1);
                }
                Frame::TooLong => prop_assert!(buf.len() > max),
            }
        }

        #[test]
        fn split_input_frames_like_whole_input(lines in proptest::collection::vec("[ -~]{0,20}", 1..10), cut in 0usize..200) {
            let whole: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
            let cut = cut.min(whole.len());
            // Feeding bytes in two pieces yields the same lines as one piece.
            let mut buf = whole[..cut].to_vec();
            let mut got = Vec::new();
            let drain = |buf: &mut Vec<u8>, got: &mut Vec<Vec<u8>>| {
                while let Frame::Line(l, n) = next_line(buf, 64) {
                    got.push(l.to_vec());
                    buf.drain(..n);
                }
            };
            drain(&mut buf, &mut got);
            buf.extend_from_slice(&whole[cut..]);
            drain(&mut buf, &mut got);
            let want: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_line_parses(line in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_request(&line);
        }

        #[test]
        fn probe_seq_round_trips(seq in any::<u64>(), size in 0usize..200) {
            prop_assert_eq!(probe_seq(&probe_text(seq, size)), Some(seq));
            prop_assert_eq!(udp_probe_seq(&udp_probe(seq, size)), Some(seq));
        }
    }
}
