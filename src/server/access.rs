//! Access control: which source addresses may use the server at all, from
//! `serve --allow CIDR` and `--deny CIDR` (and the settings `serve-allow`,
//! `serve-deny`). Checked before anything else, for every service: a denied
//! TCP peer is closed at accept without a byte read or written, a denied
//! datagram (UDP echo, SNTP) is dropped without a reply.
//!
//! As chrony's `allow`/`deny`: the most specific rule that contains the
//! address wins (an `allow 10.0.0.0/8` with a `deny 10.1.0.0/16` denies
//! 10.1.2.3 and allows 10.2.3.4; on the same network, deny wins). With no
//! rules everyone is allowed; once any allow rule exists, an address no
//! rule contains is denied. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, what
//! a dual-stack socket reports) are matched as the IPv4 address.
//!
//! Matching is one hash probe per prefix length present, longest first, so
//! 1,000 rules cost at most 33 (IPv4) or 129 (IPv6) probes, usually a few.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Whether a rule lets its network in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `--allow`.
    Allow,
    /// `--deny`.
    Deny,
}

/// The rules, indexed by prefix length.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Prefix lengths present, longest first, with the networks of that length.
    v4: Vec<(u8, HashMap<u32, Verdict>)>,
    v6: Vec<(u8, HashMap<u128, Verdict>)>,
    /// Any allow rule: unmatched addresses are denied.
    any_allow: bool,
    rules: usize,
}

/// Parse `CIDR` or a bare address (/32, /128).
///
/// # Errors
/// A line saying what a good value looks like.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "'{}' is not an address or network: give e.g. 192.0.2.0/24, 2001:db8::/32 or 127.0.0.1",
        s.escape_debug()
    ))
}

/// Parse a comma- or space-separated list of networks (the settings form).
///
/// # Errors
/// The first entry that does not parse.
pub fn parse_list(s: &str) -> Result<Vec<IpNet>, String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty() && !w.eq_ignore_ascii_case("none"))
        .map(parse_net)
        .collect()
}

fn mask4(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)
}

fn mask6(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)
}

/// A mapped IPv6 network (`::ffff:0:0/96` and inside) as the IPv4 one.
fn unmap(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(net);
    }
    n
}

fn insert<K: std::hash::Hash + Eq>(
    table: &mut Vec<(u8, HashMap<K, Verdict>)>,
    bits: u8,
    key: K,
    v: Verdict,
) {
    let i = match table.iter().position(|(b, _)| *b == bits) {
        Some(i) => i,
        None => {
            table.push((bits, HashMap::new()));
            table.sort_by_key(|e| std::cmp::Reverse(e.0));
            table.iter().position(|(b, _)| *b == bits).unwrap_or(0)
        }
    };
    let slot = table[i].1.entry(key).or_insert(v);
    // The same network allowed and denied: deny wins.
    if v == Verdict::Deny {
        *slot = Verdict::Deny;
    }
}

impl Access {
    /// Rules from the allow and deny lists.
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> Access {
        let mut a = Access::default();
        for (nets, v) in [(allow, Verdict::Allow), (deny, Verdict::Deny)] {
            for n in nets {
                a.add(*n, v);
            }
        }
        a
    }

    /// Add one rule.
    pub fn add(&mut self, net: IpNet, v: Verdict) {
        match unmap(net.trunc()) {
            IpNet::V4(n) => insert(&mut self.v4, n.prefix_len(), u32::from(n.network()), v),
            IpNet::V6(n) => insert(&mut self.v6, n.prefix_len(), u128::from(n.network()), v),
        }
        self.any_allow |= v == Verdict::Allow;
        self.rules += 1;
    }

    /// True when there are no rules (everyone is let in, nothing to check).
    pub fn is_open(&self) -> bool {
        self.rules == 0
    }

    /// How many rules were given.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// True when no rule was given.
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Whether `ip` may use the server (every service, the TLS port too).
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.rules == 0 {
            return true;
        }
        let found = match ip {
            IpAddr::V4(v4) => self.match4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.match4(v4),
                None => self.match6(v6),
            },
        };
        match found {
            Some(v) => v == Verdict::Allow,
            None => !self.any_allow,
        }
    }

    fn match4(&self, ip: Ipv4Addr) -> Option<Verdict> {
        let a = u32::from(ip);
        self.v4
            .iter()
            .find_map(|(bits, m)| m.get(&(a & mask4(*bits))).copied())
    }

    fn match6(&self, ip: Ipv6Addr) -> Option<Verdict> {
        let a = u128::from(ip);
        self.v6
            .iter()
            .find_map(|(bits, m)| m.get(&(a & mask6(*bits))).copied())
    }
}

/// Each denied source is said on the console at most this often.
const SAY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Denials waiting to be said, at most (the rest are only counted).
const TO_SAY_MAX: usize = 64;

/// The rules as the loop uses them: [`Access`], and which denied sources
/// were said on the console lately (one line per source a minute, in a
/// bounded table, so a flood of forged sources can't flood the log).
#[derive(Default)]
pub struct Gate {
    access: Access,
    said: super::limit::Table<IpAddr, std::time::Instant>,
    to_say: Vec<(&'static str, IpAddr)>,
}

impl Gate {
    /// A gate with these rules.
    pub fn new(access: Access) -> Gate {
        Gate {
            access,
            ..Gate::default()
        }
    }

    /// The rules.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Whether `ip` may use `service`; a denial is queued to be said (once
    /// a minute per source).
    pub fn admit(&mut self, service: &'static str, ip: IpAddr) -> bool {
        if self.access.permits(ip) {
            return true;
        }
        let now = std::time::Instant::now();
        let mut fresh = false;
        let last = self.said.touch(ip, now, || {
            fresh = true;
            now
        });
        if fresh || now.saturating_duration_since(*last) >= SAY_EVERY {
            *last = now;
            if self.to_say.len() < TO_SAY_MAX {
                self.to_say.push((service, ip));
            }
        }
        false
    }

    /// The denials to say now: (service, source).
    pub fn take_said(&mut self) -> std::vec::Drain<'_, (&'static str, IpAddr)> {
        self.to_say.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| parse_net(n).expect("net")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn no_rules_allow_everyone() {
        let a = Access::new(&[], &[]);
        assert!(a.permits(ip("192.0.2.1")) && a.permits(ip("2001:db8::1")));
    }

    #[test]
    fn most_specific_wins_and_allow_closes_the_rest() {
        let a = Access::new(&nets(&["10.0.0.0/8", "10.1.2.3"]), &nets(&["10.1.0.0/16"]));
        assert!(a.permits(ip("10.2.0.1")));
        assert!(!a.permits(ip("10.1.0.1")));
        assert!(a.permits(ip("10.1.2.3")));
        assert!(!a.permits(ip("192.0.2.1")), "unmatched with an allow rule");
        assert!(!a.permits(ip("2001:db8::1")));
        let d = Access::new(&[], &nets(&["192.0.2.0/24"]));
        assert!(!d.permits(ip("192.0.2.9")) && d.permits(ip("192.0.3.9")));
    }

    #[test]
    fn mapped_ipv6_is_ipv4_and_bare_addresses_are_hosts() {
        let a = Access::new(&nets(&["127.0.0.2"]), &nets(&["::ffff:127.0.0.1"]));
        assert!(a.permits(ip("::ffff:127.0.0.2")));
        assert!(!a.permits(ip("127.0.0.1")));
        assert!(!a.permits(ip("127.0.0.3")));
        let v6 = Access::new(&nets(&["2001:db8::/32"]), &nets(&["2001:db8::1"]));
        assert!(v6.permits(ip("2001:db8::2")) && !v6.permits(ip("2001:db8::1")));
        assert!(!v6.permits(ip("::1")));
    }

    #[test]
    fn same_network_allowed_and_denied_is_denied() {
        let a = Access::new(&nets(&["192.0.2.0/24"]), &nets(&["192.0.2.0/24"]));
        assert!(!a.permits(ip("192.0.2.1")));
    }

    #[test]
    fn bad_networks_say_what_fits() {
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example").is_err());
        assert_eq!(parse_list("10.0.0.0/8, ::1").map(|v| v.len()), Ok(2));
        // A host part is cut off, as chrony does.
        assert_eq!(
            parse_net("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
    }

    #[test]
    fn a_thousand_rules_match_by_hash() {
        let allow: Vec<IpNet> = (0..1000u32)
            .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let a = Access::new(&allow, &[]);
        assert_eq!(a.v4.len(), 1, "one table per prefix length");
        assert!(a.permits(ip("10.0.3.231")) && !a.permits(ip("10.0.3.232")));
    }
}
