//! Per-source budgets: what one address (an IPv4 address, or an IPv6
//! prefix, /64 by default) may cost the server, for the services an
//! anonymous peer can reach.
//!
//! - [`Limiter`]: a token bucket per source (`RATE/BURST`, as chrony's
//!   `ratelimit` and iptables' `hashlimit`), kept in a [`Table`] of bounded
//!   size. When the table is full the source touched longest ago in the same
//!   set makes room; nobody else's state is reset, so a flood of forged
//!   sources can't wipe the budget of the source that floods.
//! - [`Mirror`]: the last echo sent to each peer, so a datagram that is our
//!   own echo coming back (another echo service reflecting it) is not echoed
//!   again: that is how a loop between two echo servers starts and never
//!   ends (RFC 862, CVE-1999-0103).
//! - [`could_reflect`]: source ports an echo or an SNTP reply must never go to.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Default prefix length an IPv6 source is counted under (one site, one
/// subscriber: RFC 6177 hands out at least a /64).
pub const DEFAULT_V6_PREFIX: u8 = 64;
/// Sets in a [`Table`]; each holds [`WAYS`] sources.
const SETS: usize = 1024;
/// Sources per set.
const WAYS: usize = 8;
/// Sources a [`Table`] remembers at once.
pub const TABLE_SOURCES: usize = SETS * WAYS;
/// At most one notice (a kiss-o'-death, a chat warning) per source this often.
const NOTICE_EVERY: Duration = Duration::from_secs(1);
/// An echo that comes back this soon, byte for byte, is our own reflected.
pub const MIRROR_WINDOW: Duration = Duration::from_secs(2);

/// The address a source is counted under: IPv4 (or IPv4-mapped IPv6) as
/// it is, IPv6 cut to `v6_prefix` bits.
pub fn source_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A sustained rate with a burst, parsed from `RATE[/BURST]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Most tokens held (what a quiet source may spend at once).
    pub burst: f64,
}

impl Rate {
    /// `RATE[/BURST]` (e.g. `1000`, `2/16`, `0.5/8`) or `off`; `None` = off.
    /// Without a burst, one second's worth (at least 1).
    ///
    /// # Errors
    /// A line saying what a good value looks like.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(None);
        }
        let bad =
            || format!("'{s}' is not a rate: give RATE[/BURST] per second, e.g. 2/16, or off");
        let (rate, burst) = match s.split_once('/') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let per_sec: f64 = rate.trim().parse().map_err(|_| bad())?;
        if !per_sec.is_finite() || per_sec <= 0.0 || per_sec > 1e9 {
            return Err(bad());
        }
        let burst = match burst {
            Some(b) => {
                let b: u32 = b.trim().parse().map_err(|_| bad())?;
                if b == 0 {
                    return Err(bad());
                }
                f64::from(b)
            }
            None => per_sec.max(1.0),
        };
        Ok(Some(Rate { per_sec, burst }))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.per_sec, self.burst)
    }
}

/// A bounded, set-associative map: a key lives in one of [`SETS`] sets
/// (by a hash seeded at random, so a peer can't aim at one set), and a full
/// set gives up the entry touched longest ago. Memory is allocated on first
/// use and never grows.
pub struct Table<K, V> {
    slots: Vec<Option<(K, V, Instant)>>,
    hasher: RandomState,
}

impl<K: Hash + Eq + Copy, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq + Copy, V> Table<K, V> {
    fn set_of(&self, key: &K) -> std::ops::Range<usize> {
        let set = (self.hasher.hash_one(key) as usize) % SETS;
        set * WAYS..(set + 1) * WAYS
    }

    /// The entry for `key`, if remembered.
    pub fn get(&self, key: &K) -> Option<&V> {
        if self.slots.is_empty() {
            return None;
        }
        self.slots[self.set_of(key)]
            .iter()
            .flatten()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v)
    }

    /// The entry for `key`, marked as touched at `now`; made with `make`
    /// (in place of the set's stalest entry if the set is full).
    pub fn touch(&mut self, key: K, now: Instant, make: impl FnOnce() -> V) -> &mut V {
        if self.slots.is_empty() {
            self.slots.resize_with(SETS * WAYS, || None);
        }
        let range = self.set_of(&key);
        let set = &mut self.slots[range];
        let i = match set
            .iter()
            .position(|e| matches!(e, Some((k, _, _)) if *k == key))
        {
            Some(i) => i,
            None => {
                let i = set.iter().position(Option::is_none).unwrap_or_else(|| {
                    let mut oldest = 0;
                    for (j, e) in set.iter().enumerate() {
                        if let (Some((_, _, t)), Some((_, _, best))) = (e, &set[oldest])
                            && t < best
                        {
                            oldest = j;
                        }
                    }
                    oldest
                });
                set[i] = None; // the evicted entry, if any
                i
            }
        };
        let (_, v, t) = set[i].get_or_insert_with(|| (key, make(), now));
        *t = now;
        v
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|e| e.is_some()).count()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    last_notice: Option<Instant>,
}

/// What a bucket says about one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget.
    Pass,
    /// Over it; `notice`: tell the source (at most once a second).
    Over { notice: bool },
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            last: now,
            last_notice: None,
        }
    }

    /// Spend `cost` tokens if there are that many.
    pub fn take(&mut self, rate: Rate, cost: f64, now: Instant) -> Verdict {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_sec).min(rate.burst);
        self.last = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            return Verdict::Pass;
        }
        let notice = self
            .last_notice
            .is_none_or(|t| now.saturating_duration_since(t) >= NOTICE_EVERY);
        if notice {
            self.last_notice = Some(now);
        }
        Verdict::Over { notice }
    }
}

/// Token buckets per source, bounded in memory.
pub struct Limiter {
    rate: Rate,
    v6_prefix: u8,
    table: Table<IpAddr, Bucket>,
}

impl Limiter {
    /// A limiter at `rate` per source.
    pub fn new(rate: Rate, v6_prefix: u8) -> Limiter {
        Limiter {
            rate,
            v6_prefix,
            table: Table::default(),
        }
    }

    /// The rate it applies.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// One request from `ip` now.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        self.check_cost(ip, 1.0, now)
    }

    /// A request costing `cost` tokens (bytes, say) from `ip` now.
    pub fn check_cost(&mut self, ip: IpAddr, cost: f64, now: Instant) -> Verdict {
        let rate = self.rate;
        // A request larger than the burst could never pass: it costs the burst.
        let cost = cost.min(rate.burst);
        self.table
            .touch(source_key(ip, self.v6_prefix), now, || {
                Bucket::new(rate, now)
            })
            .take(rate, cost, now)
    }

    /// Sources remembered.
    pub fn sources(&self) -> usize {
        self.table.len()
    }
}

/// The echoes sent lately (peer and a digest of the bytes, and when), to
/// see one come back. Keyed by both, so any number of datagrams bouncing
/// at once are each seen on their first return (up to [`TABLE_SOURCES`] at
/// once; beyond that the per-source rate limit drops the rest, and a
/// dropped datagram is a loop ended).
#[derive(Default)]
pub struct Mirror {
    table: Table<(SocketAddr, u64), Instant>,
    hasher: RandomState,
}

impl Mirror {
    /// Whether the datagram with `digest` from `peer` is an echo we sent
    /// `peer` within [`MIRROR_WINDOW`]: a reflection, not a request.
    pub fn is_reflection(&self, peer: SocketAddr, digest: u64, now: Instant) -> bool {
        self.table
            .get(&(peer, digest))
            .is_some_and(|&at| now.saturating_duration_since(at) < MIRROR_WINDOW)
    }

    /// The datagram with `digest` was just echoed to `peer`.
    pub fn sent(&mut self, peer: SocketAddr, digest: u64, now: Instant) {
        *self.table.touch((peer, digest), now, || now) = now;
    }

    /// A digest of the length and up to 256 leading and 64 trailing bytes:
    /// enough to tell datagrams apart (sequence numbers sit near the front),
    /// cheap at 64 KiB.
    pub fn digest(&self, data: &[u8]) -> u64 {
        let head = &data[..data.len().min(256)];
        let tail = &data[data.len().saturating_sub(64)..];
        self.hasher.hash_one((data.len(), head, tail))
    }
}

/// Source ports an echo (or an SNTP reply) must not go to: a datagram from
/// one is either forged or from a service that answers everything, and
/// answering it starts a loop that never ends. Ports below 1024 (echo 7,
/// daytime 13, qotd 17, chargen 19, NTP 123…), our own port, netsh's
/// default ports, and well-known UDP services above 1023 that answer what
/// they are sent (SSDP, mDNS, WS-Discovery, CoAP, memcached, SIP…).
pub fn could_reflect(peer: SocketAddr, own_port: u16) -> bool {
    const SERVICES: [u16; 12] = [
        1900,  // SSDP
        3283,  // Apple Remote Desktop
        3702,  // WS-Discovery
        5050,  // netsh echo
        5060,  // SIP
        5123,  // netsh SNTP
        5353,  // mDNS
        5683,  // CoAP
        10001, // Ubiquiti discovery
        11211, // memcached
        27015, // game query (Source engine)
        37810, // DVR discovery
    ];
    let p = peer.port();
    p < 1024 || p == own_port || SERVICES.contains(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn rates_parse_with_and_without_a_burst() {
        assert_eq!(
            Rate::parse("2/16"),
            Ok(Some(Rate {
                per_sec: 2.0,
                burst: 16.0
            }))
        );
        assert_eq!(
            Rate::parse("1000"),
            Ok(Some(Rate {
                per_sec: 1000.0,
                burst: 1000.0
            }))
        );
        assert_eq!(
            Rate::parse("0.5").map(|r| r.map(|r| r.burst)),
            Ok(Some(1.0))
        );
        assert_eq!(Rate::parse("off"), Ok(None));
        for bad in ["", "x", "-1", "1/0", "1/x", "nan", "inf"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bucket_spends_its_burst_then_refills_at_the_rate() {
        let rate = Rate {
            per_sec: 10.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let mut b = Bucket::new(rate, t0);
        for _ in 0..3 {
            assert_eq!(b.take(rate, 1.0, t0), Verdict::Pass);
        }
        assert_eq!(b.take(rate, 1.0, t0), Verdict::Over { notice: true });
        assert_eq!(
            b.take(rate, 1.0, at(t0, 50)),
            Verdict::Over { notice: false }
        );
        // 100 ms at 10/s is one token.
        assert_eq!(b.take(rate, 1.0, at(t0, 150)), Verdict::Pass);
        assert_eq!(
            b.take(rate, 1.0, at(t0, 150)),
            Verdict::Over { notice: false }
        );
        // A second later the bucket is full again; the first refusal
        // after it notices again, the next does not.
        for _ in 0..3 {
            assert_eq!(b.take(rate, 1.0, at(t0, 1100)), Verdict::Pass);
        }
        let first = b.take(rate, 1.0, at(t0, 1100));
        let second = b.take(rate, 1.0, at(t0, 1100));
        assert_eq!(first, Verdict::Over { notice: true });
        assert_eq!(second, Verdict::Over { notice: false });
    }

    #[test]
    fn ipv6_sources_count_per_prefix_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a, 64), source_key(b, 64));
        assert_ne!(source_key(a, 64), source_key(c, 64));
        assert_ne!(source_key(a, 128), source_key(b, 128));
        assert_eq!(source_key(a, 0), source_key(c, 0));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(
            source_key(mapped, 64),
            "10.1.2.3".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn a_flood_of_new_sources_does_not_reset_a_busy_one() {
        let rate = Rate {
            per_sec: 1.0,
            burst: 2.0,
        };
        let mut l = Limiter::new(rate, 64);
        let t0 = Instant::now();
        let flooder: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut passed = 0;
        for i in 0..200_000u32 {
            let now = at(t0, u64::from(i / 1000));
            // Forged sources, each new, between the flooder's requests.
            let forged = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(forged, now);
            if l.check(flooder, now) == Verdict::Pass {
                passed += 1;
            }
        }
        // 200 s of flooding at 1/s with a burst of 2: about 202, not 200,000.
        assert!(passed <= 205, "{passed} passed");
        assert!(l.sources() <= TABLE_SOURCES);
    }

    #[test]
    fn a_mirror_knows_its_own_echo_but_not_new_bytes() {
        let mut m = Mirror::default();
        let p: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let q: SocketAddr = "192.0.2.7:40001".parse().expect("addr");
        let t0 = Instant::now();
        let d = |m: &Mirror, b: &[u8]| m.digest(b);
        let (one, two, three) = (
            d(&m, b"seq 1 hello"),
            d(&m, b"seq 2 hello"),
            d(&m, b"seq 3 hello"),
        );
        m.sent(p, one, t0);
        m.sent(p, three, t0);
        assert!(m.is_reflection(p, one, at(t0, 1)));
        assert!(m.is_reflection(p, three, at(t0, 1)));
        assert!(!m.is_reflection(p, two, at(t0, 1)));
        assert!(!m.is_reflection(q, one, at(t0, 1)));
        assert!(!m.is_reflection(p, one, at(t0, 2500)));
    }

    #[test]
    fn reflecting_ports_are_refused() {
        let own = 6000;
        for port in [7, 13, 17, 19, 123, 1023, 6000, 5050, 11211, 1900] {
            let p = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(could_reflect(p, own), "{port}");
        }
        for port in [1024, 40000, 60999] {
            let p = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(!could_reflect(p, own), "{port}");
        }
    }
}
