//! The echo wire protocol (see `docs/protocol.md`), both ends of it, as pure
//! functions over bytes: the client's requests ([`encode_request`]) and the
//! server's parsing of them ([`parse_request`]); the server's replies
//! ([`encode_reply`]) and the client's parsing of them ([`parse_reply`]);
//! probe payloads that carry their sequence number, and the bulk-test byte
//! pattern. Line framing is [`crate::proto::line`]. No sockets, no clocks.
//!
//! ```text
//! ECHO <text>\n   →  ECHO_RESPONSE:<text>\n      (byte for byte; many per connection)
//! STREAM\n        →  OK\n, then every byte echoed until the client closes (RFC 862)
//! CHAT <nick>\n   →  OK joined as <nick> (<n> in room)\n, then chat lines (proto::chat)
//! HELP\n          →  HELP <one line listing the commands>\n
//! QUIT\n          →  BYE\n, and the server closes
//! anything else   →  ERR <reason>\n, the connection stays usable
//! (refused)       →  ERR server full\n | ERR too many connections from …\n, then close
//! (shutdown)      →  BYE server shutting down\n, then close
//! ```
//! Lines end in `\n` or `\r\n`; command words are case-insensitive.

use crate::proto::line::memchr;

/// Longest request line, terminator excluded. A longer line gets
/// `ERR line too long (max 65536 bytes)` and the connection is closed.
pub const MAX_LINE: usize = 64 * 1024;

/// Prefix of the reply to `ECHO`.
pub const ECHO_REPLY_PREFIX: &[u8] = b"ECHO_RESPONSE:";

/// The text of the reply to `HELP` (after the word `HELP `).
const HELP_TEXT: &[u8] =
    b"commands: ECHO <text> | STREAM | CHAT <nick> | HELP | QUIT (one per line)";

/// The goodbye word, alone after `QUIT` and `/quit`, with a reason at shutdown.
pub const BYE: &str = "BYE";

/// What a full server says.
const FULL_TEXT: &[u8] = b"server full";
/// What a server shutting down says after `BYE`.
pub const SHUTDOWN_TEXT: &[u8] = b"server shutting down";
/// The start of the refusal for an address over its connection limit.
const TOO_MANY_TEXT: &[u8] = b"too many connections from ";

/// A request line, as the client sends it and the server reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `ECHO <text>`: the text, byte for byte (may be empty).
    Echo(&'a [u8]),
    /// `STREAM`: switch to raw echo.
    Stream,
    /// `SINK <start> VERIFY|NOVERIFY`: the server reads (and checks) the
    /// pattern from `start` until the client's half-close, then answers one
    /// [`SinkSummary`] line.
    Sink {
        /// Offset of the first byte in the pattern.
        start: usize,
        /// Check every byte.
        verify: bool,
    },
    /// `SOURCE <start> BYTES <n>` or `SOURCE <start> MS <n>`: the server
    /// writes the pattern from `start`, that many bytes or for that long, then
    /// closes its side.
    Source {
        /// Offset of the first byte in the pattern.
        start: usize,
        /// How much.
        limit: SourceLimit,
    },
    /// `UDPBULK`: open a UDP bulk flow (see [`crate::proto::bulk`]).
    UdpBulk,
    /// `END <sent>`: the UDP bulk flow's sender is done, having sent that many.
    End(u64),
    /// `STATS`: the UDP bulk flow's count so far (`UDPSTATS …`), the flow
    /// going on: the sender's interval reports.
    Stats,
    /// `CHAT <nick>`: join the chat room.
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
    } else if is("SINK") {
        parse_sink(rest.unwrap_or(b"")).unwrap_or(Request::Unknown(word))
    } else if is("SOURCE") {
        parse_source(rest.unwrap_or(b"")).unwrap_or(Request::Unknown(word))
    } else if is("UDPBULK") && rest.is_none_or(|r| r.iter().all(u8::is_ascii_whitespace)) {
        Request::UdpBulk
    } else if is("END")
        && let Some(n) = rest
            .and_then(|r| std::str::from_utf8(r).ok())
            .and_then(|r| r.trim().parse().ok())
    {
        Request::End(n)
    } else if is("STATS") && rest.is_none_or(|r| r.iter().all(u8::is_ascii_whitespace)) {
        Request::Stats
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

/// Append the request's line, terminator included, to `out`. `Unknown(w)`
/// sends the word as it is (for tests of the server's answer).
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    match req {
        Request::Echo(text) => {
            out.extend_from_slice(b"ECHO ");
            out.extend_from_slice(text);
        }
        Request::Stream => out.extend_from_slice(b"STREAM"),
        Request::Sink { start, verify } => {
            let v = if *verify { "VERIFY" } else { "NOVERIFY" };
            out.extend_from_slice(format!("SINK {start} {v}").as_bytes());
        }
        Request::Source { start, limit } => {
            let l = match limit {
                SourceLimit::Bytes(n) => format!("BYTES {n}"),
                SourceLimit::Millis(n) => format!("MS {n}"),
            };
            out.extend_from_slice(format!("SOURCE {start} {l}").as_bytes());
        }
        Request::UdpBulk => out.extend_from_slice(b"UDPBULK"),
        Request::End(n) => out.extend_from_slice(format!("END {n}").as_bytes()),
        Request::Stats => out.extend_from_slice(b"STATS"),
        Request::Chat(nick) => {
            out.extend_from_slice(b"CHAT ");
            out.extend_from_slice(nick);
        }
        Request::Help => out.extend_from_slice(b"HELP"),
        Request::Quit => out.extend_from_slice(b"QUIT"),
        Request::Empty => {}
        Request::Unknown(w) => out.extend_from_slice(w),
    }
    out.push(b'\n');
}

/// How much a `SOURCE` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceLimit {
    /// This many bytes.
    Bytes(u64),
    /// For this many milliseconds.
    Millis(u64),
}

/// Most a `SOURCE` may ask for: 1 TiB, or an hour.
pub const SOURCE_MAX_BYTES: u64 = 1 << 40;
/// See [`SOURCE_MAX_BYTES`].
pub const SOURCE_MAX_MS: u64 = 3_600_000;

fn words_of(rest: &[u8]) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(rest).ok()?;
    Some(text.split_ascii_whitespace().collect())
}

fn parse_sink(rest: &[u8]) -> Option<Request<'static>> {
    let w = words_of(rest)?;
    let start: usize = w.first()?.parse().ok()?;
    if start >= PATTERN_LEN {
        return None;
    }
    let verify = match w.get(1).map(|s| s.to_ascii_uppercase()).as_deref() {
        None | Some("VERIFY") => true,
        Some("NOVERIFY") => false,
        _ => return None,
    };
    (w.len() <= 2).then_some(Request::Sink { start, verify })
}

fn parse_source(rest: &[u8]) -> Option<Request<'static>> {
    let w = words_of(rest)?;
    if w.len() != 3 {
        return None;
    }
    let start: usize = w[0].parse().ok()?;
    let n: u64 = w[2].parse().ok()?;
    if start >= PATTERN_LEN || n == 0 {
        return None;
    }
    let limit = match w[1].to_ascii_uppercase().as_str() {
        "BYTES" if n <= SOURCE_MAX_BYTES => SourceLimit::Bytes(n),
        "MS" if n <= SOURCE_MAX_MS => SourceLimit::Millis(n),
        _ => return None,
    };
    Some(Request::Source { start, limit })
}

/// What a `SINK` server answers after the client's half-close:
/// `DONE bytes=<n> mismatched=<n> first=<offset>|- elapsed_us=<n> verified=0|1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkSummary {
    /// Bytes read.
    pub bytes: u64,
    /// Bytes that differed from the pattern (0 when not verified).
    pub mismatched: u64,
    /// Offset of the first differing byte.
    pub first: Option<u64>,
    /// From the `SINK` line to the last byte read, microseconds.
    pub elapsed_us: u64,
    /// Whether the server checked the bytes.
    pub verified: bool,
}

impl SinkSummary {
    /// The line, terminator included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let first = self.first.map_or("-".to_string(), |f| f.to_string());
        out.extend_from_slice(
            format!(
                "DONE bytes={} mismatched={} first={first} elapsed_us={} verified={}\n",
                self.bytes,
                self.mismatched,
                self.elapsed_us,
                u8::from(self.verified)
            )
            .as_bytes(),
        );
    }

    /// Parse the line (terminator stripped).
    pub fn parse(line: &[u8]) -> Option<SinkSummary> {
        let text = std::str::from_utf8(line.strip_prefix(b"DONE ")?).ok()?;
        let mut s = SinkSummary {
            bytes: 0,
            mismatched: 0,
            first: None,
            elapsed_us: 0,
            verified: false,
        };
        let mut seen = 0;
        for kv in text.split_ascii_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "bytes" => s.bytes = v.parse().ok()?,
                "mismatched" => s.mismatched = v.parse().ok()?,
                "first" if v == "-" => s.first = None,
                "first" => s.first = Some(v.parse().ok()?),
                "elapsed_us" => s.elapsed_us = v.parse().ok()?,
                "verified" => s.verified = v == "1",
                _ => continue, // a later server may say more
            }
            seen += 1;
        }
        (seen >= 5).then_some(s)
    }
}

/// A reply line, as the server sends it and the client reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `ECHO_RESPONSE:<text>`.
    Echo(&'a [u8]),
    /// `OK`: a stream starts.
    Ok,
    /// `OK joined as <nick> (<n> in room)`: the chat join succeeded.
    Joined {
        /// The nickname the room gave (a number may have been added).
        nick: &'a [u8],
        /// Members in the room, the newcomer included.
        members: u64,
    },
    /// `HELP <text>`.
    Help(&'a [u8]),
    /// `BYE`, or `BYE <reason>` (`server shutting down`).
    Bye(&'a [u8]),
    /// `ERR server full`.
    Full,
    /// `ERR too many connections from <addr> (max <n> per address)`: the rest
    /// after `from `.
    TooMany(&'a [u8]),
    /// `ERR <reason>`, any other.
    Err(&'a [u8]),
    /// Not a line of this protocol.
    Other(&'a [u8]),
}

/// Parse one reply line (terminator already stripped).
pub fn parse_reply(line: &[u8]) -> Reply<'_> {
    if let Some(text) = line.strip_prefix(ECHO_REPLY_PREFIX) {
        return Reply::Echo(text);
    }
    if line == b"OK" {
        return Reply::Ok;
    }
    if let Some((nick, members)) = crate::proto::chat::parse_joined(line) {
        return Reply::Joined { nick, members };
    }
    if let Some(rest) = line.strip_prefix(BYE.as_bytes()) {
        if rest.is_empty() {
            return Reply::Bye(b"");
        }
        if let Some(why) = rest.strip_prefix(b" ") {
            return Reply::Bye(why);
        }
    }
    if let Some(text) = line.strip_prefix(b"HELP ") {
        return Reply::Help(text);
    }
    if let Some(why) = line.strip_prefix(b"ERR ") {
        if why == FULL_TEXT {
            return Reply::Full;
        }
        if let Some(rest) = why.strip_prefix(TOO_MANY_TEXT) {
            return Reply::TooMany(rest);
        }
        return Reply::Err(why);
    }
    Reply::Other(line)
}

/// Append the reply's line, terminator included, to `out`.
pub fn encode_reply(reply: &Reply<'_>, out: &mut Vec<u8>) {
    match reply {
        Reply::Echo(text) => {
            out.extend_from_slice(ECHO_REPLY_PREFIX);
            out.extend_from_slice(text);
        }
        Reply::Ok => out.extend_from_slice(b"OK"),
        Reply::Joined { nick, members } => {
            out.extend_from_slice(crate::proto::chat::joined_line(nick, *members).as_bytes());
        }
        Reply::Help(text) => {
            out.extend_from_slice(b"HELP ");
            out.extend_from_slice(text);
        }
        Reply::Bye(why) => {
            out.extend_from_slice(BYE.as_bytes());
            if !why.is_empty() {
                out.push(b' ');
                out.extend_from_slice(why);
            }
        }
        Reply::Full => {
            out.extend_from_slice(b"ERR ");
            out.extend_from_slice(FULL_TEXT);
        }
        Reply::TooMany(rest) => {
            out.extend_from_slice(b"ERR ");
            out.extend_from_slice(TOO_MANY_TEXT);
            out.extend_from_slice(rest);
        }
        Reply::Err(why) => {
            out.extend_from_slice(b"ERR ");
            out.extend_from_slice(why);
        }
        Reply::Other(line) => out.extend_from_slice(line),
    }
    out.push(b'\n');
}

/// A reply as one line of bytes, terminator included.
pub fn reply_bytes(reply: &Reply<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    encode_reply(reply, &mut v);
    v
}

/// The reply to `HELP`.
pub fn help_reply() -> Reply<'static> {
    Reply::Help(HELP_TEXT)
}

/// The refusal for an address at its connection limit.
pub fn too_many_reply(ip: std::net::IpAddr, max: usize) -> Vec<u8> {
    let rest = format!("{ip} (max {max} per address)");
    reply_bytes(&Reply::TooMany(rest.as_bytes()))
}

/// Append `ERR unknown command '<word>' (try HELP)` (the word shown escaped,
/// at most 40 bytes of it).
pub fn encode_unknown(word: &[u8], out: &mut Vec<u8>) {
    let shown = crate::proto::escape::display_bytes(&word[..word.len().min(40)]);
    let why = format!("unknown command '{shown}' (try HELP)");
    encode_reply(&Reply::Err(why.as_bytes()), out);
}

/// The reply to a line over [`MAX_LINE`].
pub const TOO_LONG_REPLY: &[u8] = b"ERR line too long (max 65536 bytes)\n";
const _: () = assert!(MAX_LINE == 65_536);

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

/// Periods in [`pattern`]: a slice of up to [`PATTERN_SPAN`] bytes starting
/// anywhere in the first period is one contiguous slice.
const PATTERN_PERIODS: usize = 6;
/// Longest slice [`pattern`] gives from any start.
pub const PATTERN_SPAN: usize = (PATTERN_PERIODS - 1) * PATTERN_LEN;

/// The bulk pattern over [`PATTERN_PERIODS`] periods, built once per process
/// (384 KiB), shared by every connection of the server and every stream of
/// the client.
pub fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let one = bulk_pattern();
        let mut v = Vec::with_capacity(PATTERN_PERIODS * PATTERN_LEN);
        for _ in 0..PATTERN_PERIODS {
            v.extend_from_slice(&one[..PATTERN_LEN]);
        }
        v
    })
}

/// The pattern bytes at stream position `pos` (from a start offset already
/// added), `len` of them (at most [`PATTERN_SPAN`]).
pub fn pattern_at(pos: u64, len: usize) -> &'static [u8] {
    let i = (pos % PATTERN_LEN as u64) as usize;
    &pattern()[i..i + len.min(PATTERN_SPAN)]
}

/// Check `data`, which sits at stream position `pos` (start offset added),
/// against the pattern, in place: a `memcmp` against the shared pattern per
/// span, no copy. Returns (bytes that differ, offset in `data` of the first).
pub fn check_pattern(pos: u64, data: &[u8]) -> (u64, Option<usize>) {
    let mut bad = 0u64;
    let mut first = None;
    let mut done = 0usize;
    while done < data.len() {
        let len = (data.len() - done).min(PATTERN_SPAN);
        let want = pattern_at(pos + done as u64, len);
        let got = &data[done..done + len];
        if want != got {
            if first.is_none() {
                first = first_difference(want, got).map(|i| done + i);
            }
            bad += want.iter().zip(got).filter(|(a, b)| a != b).count() as u64;
        }
        done += len;
    }
    (bad, first)
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
        encode_reply(&Reply::Echo(b"Hello"), &mut out);
        assert_eq!(out, b"ECHO_RESPONSE:Hello\n");
        out.clear();
        encode_unknown(b"\x1b[2J", &mut out);
        assert_eq!(out, b"ERR unknown command '\\x1b[2J' (try HELP)\n");
    }

    #[test]
    fn both_ends_agree_on_every_request_and_reply() {
        for req in [
            Request::Echo(b"hi there"),
            Request::Echo(b""),
            Request::Stream,
            Request::Chat(b"bob"),
            Request::Help,
            Request::Quit,
        ] {
            let mut wire = Vec::new();
            encode_request(&req, &mut wire);
            let line = wire.strip_suffix(b"\n").expect("one line");
            assert_eq!(parse_request(line), req, "{wire:?}");
        }
        let mut wire = Vec::new();
        encode_request(&Request::Stream, &mut wire);
        assert_eq!(wire, b"STREAM\n");
        for (reply, text) in [
            (Reply::Echo(b"x y"), &b"ECHO_RESPONSE:x y"[..]),
            (Reply::Ok, b"OK"),
            (
                Reply::Joined {
                    nick: b"bob2",
                    members: 3,
                },
                b"OK joined as bob2 (3 in room)",
            ),
            (
                help_reply(),
                b"HELP commands: ECHO <text> | STREAM | CHAT <nick> | HELP | QUIT (one per line)",
            ),
            (Reply::Bye(b""), b"BYE"),
            (Reply::Bye(SHUTDOWN_TEXT), b"BYE server shutting down"),
            (Reply::Full, b"ERR server full"),
            (
                Reply::TooMany(b"10.0.0.1 (max 64 per address)"),
                b"ERR too many connections from 10.0.0.1 (max 64 per address)",
            ),
            (
                Reply::Err(b"nickname x is taken"),
                b"ERR nickname x is taken",
            ),
            (Reply::Other(b"SSH-2.0-OpenSSH"), b"SSH-2.0-OpenSSH"),
        ] {
            let wire = reply_bytes(&reply);
            assert_eq!(wire.strip_suffix(b"\n"), Some(text), "{reply:?}");
            assert_eq!(parse_reply(text), reply);
        }
        assert_eq!(
            too_many_reply("::1".parse().unwrap(), 2),
            b"ERR too many connections from ::1 (max 2 per address)\n"
        );
        assert_eq!(parse_reply(b"OK joined as"), Reply::Other(b"OK joined as"));
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

    #[test]
    fn sink_and_source() {
        for req in [
            Request::Sink {
                start: 7919,
                verify: true,
            },
            Request::Sink {
                start: 0,
                verify: false,
            },
            Request::Source {
                start: 3,
                limit: SourceLimit::Bytes(1 << 20),
            },
            Request::Source {
                start: 0,
                limit: SourceLimit::Millis(5000),
            },
            Request::UdpBulk,
            Request::End(12345),
            Request::Stats,
        ] {
            let mut wire = Vec::new();
            encode_request(&req, &mut wire);
            let line = wire.strip_suffix(b"\n").expect("one line");
            assert_eq!(parse_request(line), req, "{wire:?}");
        }
        let mut wire = Vec::new();
        encode_request(
            &Request::Source {
                start: 5,
                limit: SourceLimit::Millis(250),
            },
            &mut wire,
        );
        assert_eq!(wire, b"SOURCE 5 MS 250\n");
        assert_eq!(parse_request(b"SINK 65521"), Request::Unknown(b"SINK"));
        assert_eq!(parse_request(b"SINK x"), Request::Unknown(b"SINK"));
        assert_eq!(
            parse_request(b"sink 1"),
            Request::Sink {
                start: 1,
                verify: true
            }
        );
        assert_eq!(
            parse_request(b"SOURCE 0 BYTES 0"),
            Request::Unknown(b"SOURCE")
        );
        assert_eq!(
            parse_request(b"SOURCE 0 MS 3600001"),
            Request::Unknown(b"SOURCE")
        );
        let s = SinkSummary {
            bytes: 100,
            mismatched: 1,
            first: Some(42),
            elapsed_us: 1234,
            verified: true,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(
            out,
            b"DONE bytes=100 mismatched=1 first=42 elapsed_us=1234 verified=1\n"
        );
        assert_eq!(SinkSummary::parse(&out[..out.len() - 1]), Some(s));
        assert_eq!(SinkSummary::parse(b"DONE bytes=1"), None);
        assert_eq!(SinkSummary::parse(b"OK"), None);
    }

    #[test]
    fn pattern_checks_in_place() {
        let data = pattern_at(100, 200_000).to_vec();
        assert_eq!(check_pattern(100, &data), (0, None));
        let mut bad = data.clone();
        bad[150_000] ^= 1;
        assert_eq!(check_pattern(100, &bad), (1, Some(150_000)));
        let mut long = Vec::new();
        let mut pos = 9u64;
        while long.len() < 1_000_000 {
            long.extend_from_slice(pattern_at(pos, 100_000));
            pos += 100_000;
        }
        assert_eq!(check_pattern(9, &long), (0, None));
        assert!(check_pattern(10, &long).0 > 0);
    }

    proptest! {
        #[test]
        fn any_line_parses(line in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_request(&line);
            let _ = parse_reply(&line);
        }

        #[test]
        fn probe_seq_round_trips(seq in any::<u64>(), size in 0usize..200) {
            prop_assert_eq!(probe_seq(&probe_text(seq, size)), Some(seq));
            prop_assert_eq!(udp_probe_seq(&udp_probe(seq, size)), Some(seq));
        }
    }
}
