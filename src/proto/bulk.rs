//! UDP bulk tests (`echo --bulk --udp`), both ends: the control lines on a
//! TCP connection and the datagrams. No sockets, no clocks.
//!
//! ```text
//! UDPBULK\n          →  OK <token>\n   (a flow the server's UDP port now counts)
//! (datagrams to the server's UDP port: NSB1 | token u32 | seq u64 | sent_ns u64 | payload)
//! END <sent>\n       →  UDPDONE received=… bytes=… lost=… total=… ooo=… bad=… jitter_us=… elapsed_us=…\n
//! ```
//! Numbers are big-endian. The payload is the bulk pattern from an offset
//! that depends on the sequence number, checked in place by the server.

use crate::proto::echo::{PATTERN_LEN, PATTERN_SPAN, check_pattern, pattern_at};

/// First bytes of a bulk datagram.
pub const MAGIC: &[u8; 4] = b"NSB1";
/// Magic, token, sequence number, send time.
pub const HEADER: usize = 24;
/// Largest datagram the client sends.
pub const MAX_DATAGRAM: usize = 65_507;
const _: () = assert!(MAX_DATAGRAM - HEADER <= PATTERN_SPAN);

/// A bulk datagram's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The flow's token, from `OK <token>`.
    pub token: u32,
    /// From 0.
    pub seq: u64,
    /// The sender's clock, nanoseconds from its own start.
    pub sent_ns: u64,
}

fn payload_start(seq: u64) -> u64 {
    seq.wrapping_mul(7919) % PATTERN_LEN as u64
}

/// Fill `buf` (at least [`HEADER`] bytes) as datagram `h`.
pub fn encode(buf: &mut [u8], h: Header) {
    buf[..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&h.token.to_be_bytes());
    buf[8..16].copy_from_slice(&h.seq.to_be_bytes());
    buf[16..24].copy_from_slice(&h.sent_ns.to_be_bytes());
    let n = buf.len() - HEADER;
    buf[HEADER..].copy_from_slice(pattern_at(payload_start(h.seq), n));
}

/// The header, if `d` is a bulk datagram.
pub fn header(d: &[u8]) -> Option<Header> {
    if d.len() < HEADER || &d[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Some(Header {
        token: u32_at(4),
        seq: u64_at(8),
        sent_ns: u64_at(16),
    })
}

/// Whether the payload after the header is the pattern for `seq`.
pub fn payload_ok(seq: u64, d: &[u8]) -> bool {
    d.len() >= HEADER && check_pattern(payload_start(seq), &d[HEADER..]).0 == 0
}

/// `OK <token>`: the token, if that is the line.
pub fn parse_ok(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line.strip_prefix(b"OK ")?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The first word of the answer to `END`.
pub const DONE: &str = "UDPDONE";
/// The first word of the answer to `STATS`.
pub const STATS: &str = "UDPSTATS";

/// The server's count of one flow, the answer to `END` (and, so far, to
/// `STATS`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Datagrams received (each sequence number once).
    pub received: u64,
    /// Bytes in them (headers included, as iperf3 counts).
    pub bytes: u64,
    /// Datagrams sent but never received.
    pub lost: u64,
    /// Datagrams sent (the client's count, from `END`).
    pub total: u64,
    /// Datagrams that came after a later one.
    pub out_of_order: u64,
    /// Datagrams whose payload was not the pattern.
    pub bad: u64,
    /// RFC 3550 inter-arrival jitter, microseconds.
    pub jitter_us: f64,
    /// First to last datagram, microseconds.
    pub elapsed_us: u64,
}

impl Summary {
    /// The `UDPDONE` line, terminator included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(DONE, out);
    }

    /// The line `word …`, terminator included: [`DONE`] at the end,
    /// [`STATS`] while the flow goes on.
    pub fn encode_as(&self, word: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "{word} received={} bytes={} lost={} total={} ooo={} bad={} jitter_us={:.3} elapsed_us={}\n",
                self.received,
                self.bytes,
                self.lost,
                self.total,
                self.out_of_order,
                self.bad,
                self.jitter_us,
                self.elapsed_us
            )
            .as_bytes(),
        );
    }

    /// Parse a `UDPDONE` line (terminator stripped).
    pub fn parse(line: &[u8]) -> Option<Summary> {
        Summary::parse_as(DONE, line)
    }

    /// Parse a line that starts with `word`.
    pub fn parse_as(word: &str, line: &[u8]) -> Option<Summary> {
        let text = line.strip_prefix(word.as_bytes())?.strip_prefix(b" ")?;
        let text = std::str::from_utf8(text).ok()?;
        let mut s = Summary::default();
        let mut seen = 0;
        for kv in text.split_ascii_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "received" => s.received = v.parse().ok()?,
                "bytes" => s.bytes = v.parse().ok()?,
                "lost" => s.lost = v.parse().ok()?,
                "total" => s.total = v.parse().ok()?,
                "ooo" => s.out_of_order = v.parse().ok()?,
                "bad" => s.bad = v.parse().ok()?,
                "jitter_us" => s.jitter_us = v.parse().ok()?,
                "elapsed_us" => s.elapsed_us = v.parse().ok()?,
                _ => continue,
            }
            seen += 1;
        }
        (seen >= 8).then_some(s)
    }
}

/// The receiving end's count of one flow: bounded memory (a 1024-datagram
/// window of seen sequence numbers for duplicates), RFC 3550 jitter.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Totals so far.
    pub sum: Summary,
    next_seq: u64,
    last_transit: Option<i64>,
    jitter_ns: f64,
    first_ns: Option<u64>,
    last_ns: u64,
    seen: [u64; 16],
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            sum: Summary::default(),
            next_seq: 0,
            last_transit: None,
            jitter_ns: 0.0,
            first_ns: None,
            last_ns: 0,
            seen: [0; 16],
        }
    }
}

impl Counter {
    /// Count datagram `d` (header `h`) that arrived at `arrival_ns` on the
    /// receiver's clock.
    pub fn datagram(&mut self, h: Header, d: &[u8], arrival_ns: u64) {
        // Duplicates within the window are not counted twice.
        if h.seq.saturating_add(1024) > self.next_seq || self.next_seq == 0 {
            let bit = (h.seq % 1024) as usize;
            let (w, b) = (bit / 64, bit % 64);
            if h.seq < self.next_seq && self.seen[w] & (1 << b) != 0 {
                return;
            }
            if h.seq >= self.next_seq {
                // Clear the bits of the sequence numbers skipped over.
                let from = self.next_seq.max(h.seq.saturating_sub(1023));
                for s in from..h.seq {
                    let i = (s % 1024) as usize;
                    self.seen[i / 64] &= !(1 << (i % 64));
                }
            }
            self.seen[w] |= 1 << b;
        }
        if h.seq < self.next_seq {
            self.sum.out_of_order += 1;
        } else {
            self.next_seq = h.seq.saturating_add(1);
        }
        self.sum.received += 1;
        self.sum.bytes += d.len() as u64;
        if !payload_ok(h.seq, d) {
            self.sum.bad += 1;
        }
        // RFC 3550 §6.4.1: J += (|D| - J) / 16, D the transit difference.
        let transit = (arrival_ns as i64).wrapping_sub(h.sent_ns as i64);
        if let Some(prev) = self.last_transit {
            let d = transit.wrapping_sub(prev).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit = Some(transit);
        self.first_ns.get_or_insert(arrival_ns);
        self.last_ns = arrival_ns;
    }

    /// The count so far, the flow going on: as iperf3's receiver counts
    /// an interval, a datagram is lost once a later one has come (one that
    /// then comes late is taken back off).
    pub fn so_far(&self) -> Summary {
        self.finish(self.next_seq)
    }

    /// The summary once the sender says it sent `total`.
    pub fn finish(&self, total: u64) -> Summary {
        let mut s = self.sum;
        s.total = total.max(self.next_seq);
        s.lost = s.total.saturating_sub(s.received);
        s.jitter_us = self.jitter_ns / 1e3;
        s.elapsed_us = self
            .last_ns
            .saturating_sub(self.first_ns.unwrap_or(self.last_ns))
            / 1000;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(seq: u64, sent: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        encode(
            &mut b,
            Header {
                token: 7,
                seq,
                sent_ns: sent,
            },
        );
        b
    }

    #[test]
    fn datagrams_round_trip_and_check() {
        let d = dgram(5, 99, 1448);
        assert_eq!(
            header(&d),
            Some(Header {
                token: 7,
                seq: 5,
                sent_ns: 99
            })
        );
        assert!(payload_ok(5, &d));
        assert!(!payload_ok(6, &d));
        let mut bad = d.clone();
        bad[100] ^= 1;
        assert!(!payload_ok(5, &bad));
        assert_eq!(header(b"NSB1"), None);
        assert_eq!(parse_ok(b"OK 1234"), Some(1234));
        assert_eq!(parse_ok(b"OK"), None);
    }

    #[test]
    fn summary_line_round_trips() {
        let s = Summary {
            received: 9,
            bytes: 900,
            lost: 1,
            total: 10,
            out_of_order: 2,
            bad: 0,
            jitter_us: 12.5,
            elapsed_us: 1000,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(Summary::parse(&out[..out.len() - 1]), Some(s));
        assert_eq!(Summary::parse(b"UDPDONE received=1"), None);
        let mut out = Vec::new();
        s.encode_as(STATS, &mut out);
        assert!(out.starts_with(b"UDPSTATS received=9 "), "{out:?}");
        assert_eq!(Summary::parse_as(STATS, &out[..out.len() - 1]), Some(s));
        assert_eq!(Summary::parse(&out[..out.len() - 1]), None);
    }

    #[test]
    fn counter_loss_order_duplicates_jitter() {
        let mut c = Counter::default();
        // Every 10th lost, seq 3 and 4 swapped, seq 6 twice.
        let mut t = 0;
        for seq in [0u64, 1, 2, 4, 3, 5, 6, 6, 7, 8, 10, 11] {
            t += 1000;
            c.datagram(
                header(&dgram(seq, seq * 1000, 100)).unwrap(),
                &dgram(seq, seq * 1000, 100),
                t,
            );
        }
        // So far: seq 9 is missing behind 10 and 11.
        let now = c.so_far();
        assert_eq!((now.total, now.received, now.lost), (12, 11, 1));
        let s = c.finish(12);
        assert_eq!(s.received, 11);
        assert_eq!(s.lost, 1);
        assert_eq!(s.total, 12);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.bad, 0);
        // Steady spacing gives no jitter; the swaps and the gap some.
        assert!(s.jitter_us > 0.0 && s.jitter_us < 1.0, "{s:?}");
        let mut steady = Counter::default();
        for seq in 0..100u64 {
            let d = dgram(seq, seq * 1000, 64);
            steady.datagram(header(&d).unwrap(), &d, 5_000 + seq * 1000);
        }
        assert_eq!(steady.finish(100).jitter_us, 0.0);
        // A forged sequence number at the very end of the range: no overflow.
        let mut c = Counter::default();
        for (seq, sent) in [(u64::MAX, u64::MAX), (u64::MAX - 1, 1 << 63), (0, 0)] {
            let d = dgram(seq, sent, 64);
            c.datagram(header(&d).unwrap(), &d, 0);
        }
        assert_eq!(c.finish(u64::MAX).total, u64::MAX);
        assert_eq!(steady.finish(100).lost, 0);
    }
}
