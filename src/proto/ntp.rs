//! The 48-byte NTP packet (RFC 5905 §7.3) as pure functions: decode, encode,
//! reply validation for the client, and the reply a server builds for a
//! request. Timestamps are 64-bit NTP format (seconds since 1900 in the high
//! 32 bits, fraction in the low 32); conversion to and from system time
//! assumes the era nearest the local clock.
//!
//! ```text
//!  0      LI(2) VN(3) Mode(3) | Stratum | Poll | Precision
//!  4      Root delay (16.16)
//!  8      Root dispersion (16.16)
//! 12      Reference ID
//! 16      Reference timestamp
//! 24      Origin timestamp      (client's transmit, echoed by the server)
//! 32      Receive timestamp     (server: request arrived)
//! 40      Transmit timestamp    (server: reply left)
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes in a packet without extension fields or MAC.
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Mode 3.
pub const MODE_CLIENT: u8 = 3;
/// Mode 4.
pub const MODE_SERVER: u8 = 4;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    /// Leap indicator: 0 none, 1 +1 s, 2 −1 s, 3 unsynchronised.
    pub leap: u8,
    /// Version, 1–4 in use.
    pub version: u8,
    /// Mode: 3 client, 4 server, …
    pub mode: u8,
    /// Stratum: 0 kiss-o'-death/unspecified, 1 primary, 2–15 secondary, 16 unsynchronised.
    pub stratum: u8,
    /// Poll interval, log2 seconds.
    pub poll: i8,
    /// Clock precision, log2 seconds.
    pub precision: i8,
    /// Root delay, NTP short format.
    pub root_delay: u32,
    /// Root dispersion, NTP short format.
    pub root_dispersion: u32,
    /// Reference ID (or kiss code at stratum 0).
    pub ref_id: [u8; 4],
    /// When the server's clock was last set.
    pub ref_ts: u64,
    /// The client's transmit timestamp, echoed.
    pub origin_ts: u64,
    /// When the request arrived at the server.
    pub receive_ts: u64,
    /// When the reply left the server.
    pub transmit_ts: u64,
}

/// Why a datagram is not a packet at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than 48 bytes.
    Truncated(usize),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Decode the first 48 bytes (extension fields after them are ignored).
///
/// # Errors
/// [`Malformed::Truncated`] for fewer than 48 bytes.
pub fn decode(b: &[u8]) -> Result<Packet, Malformed> {
    if b.len() < PACKET_LEN {
        return Err(Malformed::Truncated(b.len()));
    }
    Ok(Packet {
        leap: b[0] >> 6,
        version: (b[0] >> 3) & 0x7,
        mode: b[0] & 0x7,
        stratum: b[1],
        poll: b[2] as i8,
        precision: b[3] as i8,
        root_delay: be32(b, 4),
        root_dispersion: be32(b, 8),
        ref_id: [b[12], b[13], b[14], b[15]],
        ref_ts: be64(b, 16),
        origin_ts: be64(b, 24),
        receive_ts: be64(b, 32),
        transmit_ts: be64(b, 40),
    })
}

/// Encode to 48 bytes.
pub fn encode(p: &Packet) -> [u8; PACKET_LEN] {
    let mut b = [0u8; PACKET_LEN];
    b[0] = (p.leap << 6) | ((p.version & 7) << 3) | (p.mode & 7);
    b[1] = p.stratum;
    b[2] = p.poll as u8;
    b[3] = p.precision as u8;
    b[4..8].copy_from_slice(&p.root_delay.to_be_bytes());
    b[8..12].copy_from_slice(&p.root_dispersion.to_be_bytes());
    b[12..16].copy_from_slice(&p.ref_id);
    b[16..24].copy_from_slice(&p.ref_ts.to_be_bytes());
    b[24..32].copy_from_slice(&p.origin_ts.to_be_bytes());
    b[32..40].copy_from_slice(&p.receive_ts.to_be_bytes());
    b[40..48].copy_from_slice(&p.transmit_ts.to_be_bytes());
    b
}

/// A client request (mode 3, version 4) with `transmit_ts`.
pub fn request(transmit_ts: u64) -> [u8; PACKET_LEN] {
    encode(&Packet {
        version: 4,
        mode: MODE_CLIENT,
        transmit_ts,
        ..Packet::default()
    })
}

/// System time to NTP format.
pub fn to_ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xFFFF_FFFF;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// NTP format to system time, taking the era (136-year wrap) nearest `near`.
pub fn from_ntp(ts: u64, near: SystemTime) -> SystemTime {
    let near_secs = near
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + NTP_UNIX_OFFSET;
    let era = near_secs >> 32;
    let secs32 = ts >> 32;
    let best = [era.saturating_sub(1), era, era + 1]
        .into_iter()
        .map(|e| (e << 32) | secs32)
        .min_by_key(|s| s.abs_diff(near_secs))
        .unwrap_or(secs32);
    let nanos = ((ts & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
    let unix = best.saturating_sub(NTP_UNIX_OFFSET);
    UNIX_EPOCH + Duration::new(unix, nanos as u32)
}

/// NTP short format (16.16) to seconds.
pub fn short_to_secs(v: u32) -> f64 {
    f64::from(v) / 65_536.0
}

/// Seconds to NTP short format (saturating).
pub fn secs_to_short(s: f64) -> u32 {
    (s * 65_536.0).clamp(0.0, f64::from(u32::MAX)) as u32
}

/// What a reply means to a client that sent `sent_tx` as its transmit timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A usable server reply.
    Good,
    /// Origin differs from what we sent: stale, duplicated or spoofed; ignore and keep waiting.
    WrongOrigin,
    /// Not a server-mode packet (mode given).
    WrongMode(u8),
    /// Version outside 1–4.
    BadVersion(u8),
    /// Transmit timestamp zero.
    ZeroTransmit,
    /// Receive timestamp zero, or the server says it sent before it
    /// received: the timestamps are garbage, and so would the offset be.
    BadTimestamps,
    /// The server says it has no time (LI 3, stratum 0 or 16).
    Unsynchronised,
    /// Kiss-o'-death with its code (stratum 0, LI not 3).
    Kiss([u8; 4]),
    /// Stratum above 15 with LI not 3.
    BadStratum(u8),
}

/// Check a reply the way RFC 4330 §5 and RFC 5905 ask a client to.
pub fn check_reply(p: &Packet, sent_tx: u64) -> Verdict {
    if p.origin_ts != sent_tx {
        return Verdict::WrongOrigin;
    }
    if p.mode != MODE_SERVER {
        return Verdict::WrongMode(p.mode);
    }
    if !(1..=4).contains(&p.version) {
        return Verdict::BadVersion(p.version);
    }
    // ntpd, chrony and netsh send kisses with LI 3: the code decides.
    if p.stratum == 0 && matches!(&p.ref_id, b"DENY" | b"RSTR" | b"RATE") {
        return Verdict::Kiss(p.ref_id);
    }
    if p.leap == 3 && (p.stratum == 0 || p.stratum >= 16) {
        return Verdict::Unsynchronised;
    }
    if p.stratum == 0 {
        return Verdict::Kiss(p.ref_id);
    }
    if p.stratum > 15 {
        return Verdict::BadStratum(p.stratum);
    }
    if p.transmit_ts == 0 {
        return Verdict::ZeroTransmit;
    }
    // Era-safe: the difference of two NTP timestamps as a signed number.
    if p.receive_ts == 0 || (p.transmit_ts.wrapping_sub(p.receive_ts) as i64) < 0 {
        return Verdict::BadTimestamps;
    }
    if p.leap == 3 {
        return Verdict::Unsynchronised;
    }
    Verdict::Good
}

/// A reference ID for people: ASCII at stratum 0–1 (`GPS`, `RATE`) and for
/// all-letter IDs such as `LOCL`; an IPv4 address otherwise.
pub fn ref_id_text(stratum: u8, id: [u8; 4]) -> String {
    // Local clocks (`LOCL`) put letters where an address would be: show them as text.
    if stratum <= 1 || id.iter().all(|b| b.is_ascii_uppercase()) {
        let s: String = id
            .iter()
            .take_while(|b| **b != 0)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        s
    } else {
        std::net::Ipv4Addr::from(id).to_string()
    }
}

/// How a server answers.
#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    /// Stratum to claim (chrony's `local stratum 10` by default).
    pub stratum: u8,
    /// Reference ID (`LOCL`).
    pub ref_id: [u8; 4],
    /// Measured precision, log2 seconds.
    pub precision: i8,
    /// Reference timestamp (when the responder started).
    pub ref_ts: u64,
    /// Root dispersion to claim.
    pub root_dispersion: u32,
}

/// Build the reply to a request, or `None` if it is not a client request
/// this server answers (too short, not mode 3, version outside 1–4). The
/// transmit timestamp is left 0 for the caller to fill in just before send.
pub fn reply_to(req: &[u8], receive_ts: u64, clock: &ServerClock) -> Option<Packet> {
    let r = decode(req).ok()?;
    if r.mode != MODE_CLIENT || !(1..=4).contains(&r.version) {
        return None;
    }
    Some(Packet {
        leap: 0,
        version: r.version,
        mode: MODE_SERVER,
        stratum: clock.stratum,
        poll: r.poll.clamp(4, 17),
        precision: clock.precision,
        root_delay: 0,
        root_dispersion: clock.root_dispersion,
        ref_id: clock.ref_id,
        ref_ts: clock.ref_ts,
        origin_ts: r.transmit_ts,
        receive_ts,
        transmit_ts: 0,
    })
}

/// A kiss-o'-death reply with `code` (e.g. `RATE`).
pub fn kiss_reply(req: &Packet, code: [u8; 4]) -> Packet {
    Packet {
        leap: 3,
        version: req.version,
        mode: MODE_SERVER,
        stratum: 0,
        ref_id: code,
        origin_ts: req.transmit_ts,
        ..Packet::default()
    }
}

/// Write a transmit timestamp into an encoded packet.
pub fn set_transmit(b: &mut [u8; PACKET_LEN], ts: u64) {
    b[40..48].copy_from_slice(&ts.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock() -> ServerClock {
        ServerClock {
            stratum: 10,
            ref_id: *b"LOCL",
            precision: -20,
            ref_ts: 7,
            root_dispersion: 10,
        }
    }

    #[test]
    fn exact_request_bytes() {
        let b = request(0x0102_0304_0506_0708);
        assert_eq!(b[0], 0x23, "LI 0, VN 4, mode 3");
        assert_eq!(&b[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(b[1..40].iter().all(|x| *x == 0));
    }

    #[test]
    fn reply_echoes_origin_and_version() {
        let mut req = request(42);
        req[0] = 0x1b; // LI 0, VN 3, mode 3 (what ntplib sends)
        let r = reply_to(&req, 99, &clock()).unwrap();
        assert_eq!(
            (r.version, r.mode, r.stratum, r.origin_ts, r.receive_ts),
            (3, 4, 10, 42, 99)
        );
        assert_eq!(&encode(&r)[12..16], b"LOCL");
        assert_eq!(
            check_reply(
                &Packet {
                    transmit_ts: 100,
                    ..r
                },
                42
            ),
            Verdict::Good
        );
    }

    #[test]
    fn server_ignores_what_is_not_a_request() {
        assert!(reply_to(&[0u8; 47], 1, &clock()).is_none(), "truncated");
        let mut b = request(1);
        b[0] = 0x24; // mode 4
        assert!(
            reply_to(&b, 1, &clock()).is_none(),
            "a server reply is not answered"
        );
        b[0] = 0x3b; // version 7
        assert!(reply_to(&b, 1, &clock()).is_none());
        let mut long = request(1).to_vec();
        long.extend_from_slice(&[0u8; 100]);
        assert!(
            reply_to(&long, 1, &clock()).is_some(),
            "extension fields are skipped"
        );
    }

    #[test]
    fn client_verdicts() {
        let good = Packet {
            version: 4,
            mode: 4,
            stratum: 2,
            origin_ts: 7,
            receive_ts: 8,
            transmit_ts: 9,
            ..Packet::default()
        };
        assert_eq!(check_reply(&good, 7), Verdict::Good);
        assert_eq!(
            check_reply(
                &Packet {
                    receive_ts: 0,
                    ..good
                },
                7
            ),
            Verdict::BadTimestamps
        );
        assert_eq!(
            check_reply(
                &Packet {
                    receive_ts: 10,
                    ..good
                },
                7
            ),
            Verdict::BadTimestamps,
            "sent before it received"
        );
        // Across the 2036 era boundary the order is still right.
        assert_eq!(
            check_reply(
                &Packet {
                    receive_ts: u64::MAX - 5,
                    transmit_ts: 3,
                    ..good
                },
                7
            ),
            Verdict::Good
        );
        assert_eq!(check_reply(&good, 8), Verdict::WrongOrigin);
        assert_eq!(
            check_reply(&Packet { mode: 3, ..good }, 7),
            Verdict::WrongMode(3)
        );
        assert_eq!(
            check_reply(&Packet { version: 0, ..good }, 7),
            Verdict::BadVersion(0)
        );
        assert_eq!(
            check_reply(
                &Packet {
                    transmit_ts: 0,
                    ..good
                },
                7
            ),
            Verdict::ZeroTransmit
        );
        assert_eq!(
            check_reply(
                &Packet {
                    stratum: 16,
                    ..good
                },
                7
            ),
            Verdict::BadStratum(16)
        );
        let kod = Packet {
            stratum: 0,
            ref_id: *b"RATE",
            ..good
        };
        assert_eq!(check_reply(&kod, 7), Verdict::Kiss(*b"RATE"));
        // chrony with no sources: LI 3, stratum 0, refid 0 — not a kiss.
        let unsync = Packet {
            leap: 3,
            stratum: 0,
            ref_id: [0; 4],
            ..good
        };
        assert_eq!(check_reply(&unsync, 7), Verdict::Unsynchronised);
        let kiss3 = Packet {
            leap: 3,
            stratum: 0,
            ref_id: *b"RATE",
            ..good
        };
        assert_eq!(check_reply(&kiss3, 7), Verdict::Kiss(*b"RATE"));
        assert_eq!(ref_id_text(1, *b"GPS\0"), "GPS");
        assert_eq!(ref_id_text(2, [192, 0, 2, 1]), "192.0.2.1");
        assert_eq!(ref_id_text(10, *b"LOCL"), "LOCL");
        assert_eq!(ref_id_text(10, [127, 127, 1, 1]), "127.127.1.1");
    }

    #[test]
    fn time_conversion() {
        let t = UNIX_EPOCH + Duration::new(1_764_000_000, 500_000_000);
        let n = to_ntp(t);
        assert_eq!(n >> 32, 1_764_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(n & 0xFFFF_FFFF, 1 << 31);
        let back = from_ntp(n, t);
        assert!(back.duration_since(t).unwrap_or_else(|e| e.duration()) < Duration::from_micros(1));
        // After the 2036 era wrap, a small seconds field means era 1.
        let after = UNIX_EPOCH + Duration::from_secs(2_085_978_496 + 100);
        let wrapped = to_ntp(after);
        assert!(wrapped >> 32 < 1000);
        assert_eq!(
            from_ntp(wrapped, after)
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            2_085_978_596
        );
    }

    proptest! {
        #[test]
        fn decode_encode_round_trip(bytes in proptest::collection::vec(any::<u8>(), 48..=48)) {
            let p = decode(&bytes).unwrap();
            prop_assert_eq!(encode(&p).to_vec(), bytes);
        }

        #[test]
        fn any_datagram_is_safe(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode(&bytes);
            if let Some(r) = reply_to(&bytes, 1, &clock()) {
                prop_assert_eq!(r.mode, MODE_SERVER);
                prop_assert!(bytes.len() >= PACKET_LEN, "never answer more bytes than received");
            }
        }
    }
}
