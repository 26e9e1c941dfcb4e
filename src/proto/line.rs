//! Line framing, shared by both ends of every line protocol (echo, chat):
//! find one `\n`-terminated line at the front of a buffer, telling "need more
//! bytes" ([`Frame::Incomplete`]) from "the peer broke the limit"
//! ([`Frame::TooLong`]). A `\r` before the `\n` is dropped.

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

/// Position of the first `b` in `s`.
pub fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
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
    }
}
