//! This machine: host name, interfaces, default gateways and DNS servers.
//!
//! Addresses come from `if-addrs` (getifaddrs). What it lacks — index for
//! address-less interfaces, MAC, MTU, flags, operational state, carrier — is
//! read from `/sys/class/net/<if>/`; default routes from `/proc/net/route` and
//! `/proc/net/ipv6_route`; DNS servers from `/etc/resolv.conf`, and behind a
//! local stub resolver (systemd-resolved's 127.0.0.53) from the file it keeps
//! with the upstream servers. The parsers are pure functions over the text of
//! those files, tested on exact input; on systems without `/sys` or `/proc`
//! the fields they fill are `null`.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Serialize;

/// Everything `info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    /// The host name.
    pub hostname: String,
    /// Every interface, by index.
    pub interfaces: Vec<Interface>,
    /// Default gateways, IPv4 then IPv6, lowest metric first.
    pub gateways: Vec<Gateway>,
    /// DNS configuration.
    pub dns: Dns,
}

/// One network interface.
#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    /// Name, e.g. `eth0`.
    pub name: String,
    /// Kernel interface index; `null` if unknown.
    pub index: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Link detected (`carrier`); `null` when the kernel does not say (interface down).
    pub carrier: Option<bool>,
    /// RFC 2863 operational state, lower case: `up`, `down`, `unknown`, …
    pub oper_state: Option<String>,
    /// Link type: `ether`, `loopback`, `none`, … or the ARPHRD number.
    pub link_type: Option<String>,
    /// Hardware address, `null` where there is none.
    pub mac: Option<String>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Flags in `ip link` style: `BROADCAST`, `MULTICAST`, `UP`, `LOWER_UP`, …
    pub flags: Vec<String>,
    /// Every address with its prefix length.
    pub addresses: Vec<Address>,
}

/// An address on an interface.
#[derive(Debug, Clone, Serialize)]
pub struct Address {
    /// `inet` or `inet6` (as `ip` names them).
    pub family: &'static str,
    /// The address.
    pub address: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
    /// IPv4 broadcast address, if any.
    pub broadcast: Option<IpAddr>,
    /// `host`, `link` or `global`.
    pub scope: &'static str,
}

/// A default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    /// `inet` or `inet6`.
    pub family: &'static str,
    /// Next-hop address.
    pub address: IpAddr,
    /// Outgoing interface.
    pub interface: String,
    /// Route metric (lower wins).
    pub metric: u32,
}

/// DNS resolver configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dns {
    /// `nameserver` lines of /etc/resolv.conf, in order.
    pub servers: Vec<IpAddr>,
    /// `search` domains.
    pub search: Vec<String>,
    /// True when every server is a local stub (loopback address).
    pub stub: bool,
    /// The servers behind the stub, when they could be found; `null` otherwise.
    pub upstream: Option<Vec<IpAddr>>,
}

/// Gather everything; never fails as a whole: a part that cannot be read is
/// left empty (a machine with no /proc still has a host name).
pub fn gather() -> HostInfo {
    let hostname = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "(unknown)".into());
    HostInfo {
        hostname,
        interfaces: interfaces(Path::new("/sys/class/net")),
        gateways: gateways(),
        dns: dns(),
    }
}

/// Interfaces from /sys/class/net merged with if-addrs' addresses.
fn interfaces(sys: &Path) -> Vec<Interface> {
    let mut by_index: BTreeMap<(u32, String), Interface> = BTreeMap::new();
    if let Ok(dir) = fs::read_dir(sys) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let iface = sys_interface(&entry.path(), &name);
            by_index.insert((iface.index.unwrap_or(u32::MAX), name), iface);
        }
    }
    let addrs = if_addrs::get_if_addrs().unwrap_or_default();
    for a in addrs {
        // IPv4 aliases carry a label ("eth0:1") as their name: match by index first.
        let key = by_index
            .keys()
            .find(|(idx, n)| Some(*idx) == a.index || *n == a.name)
            .cloned();
        let iface = match key {
            Some(k) => by_index.get_mut(&k),
            None => {
                let k = (a.index.unwrap_or(u32::MAX), a.name.clone());
                by_index.entry(k.clone()).or_insert_with(|| Interface {
                    name: a.name.clone(),
                    index: a.index,
                    up: a.is_oper_up(),
                    carrier: None,
                    oper_state: None,
                    link_type: None,
                    mac: None,
                    mtu: None,
                    flags: Vec::new(),
                    addresses: Vec::new(),
                });
                by_index.get_mut(&k)
            }
        };
        let Some(iface) = iface else { continue };
        let addr = match &a.addr {
            if_addrs::IfAddr::V4(v4) => Address {
                family: "inet",
                address: IpAddr::V4(v4.ip),
                prefix: v4.prefixlen,
                broadcast: v4.broadcast.map(IpAddr::V4),
                scope: scope(IpAddr::V4(v4.ip)),
            },
            if_addrs::IfAddr::V6(v6) => Address {
                family: "inet6",
                address: IpAddr::V6(v6.ip),
                prefix: v6.prefixlen,
                broadcast: None,
                scope: scope(IpAddr::V6(v6.ip)),
            },
        };
        iface.addresses.push(addr);
    }
    let mut list: Vec<Interface> = by_index.into_values().collect();
    for i in &mut list {
        // `ip addr` lists IPv4 before IPv6; keep the kernel's order within a family.
        i.addresses.sort_by_key(|a| a.family != "inet");
    }
    list
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn sys_interface(dir: &Path, name: &str) -> Interface {
    let num = |f: &str| read_trim(&dir.join(f)).and_then(|s| parse_sys_number(&s));
    let flags_bits = num("flags").unwrap_or(0) as u32;
    // Reading `carrier` of a down interface fails with EINVAL: that is "unknown".
    let carrier = read_trim(&dir.join("carrier")).map(|s| s == "1");
    let mac = read_trim(&dir.join("address")).filter(|s| !s.is_empty());
    let link_type = num("type").map(|t| arphrd_name(t as u32));
    Interface {
        name: name.to_string(),
        index: num("ifindex").map(|n| n as u32),
        up: flags_bits & IFF_UP != 0,
        carrier,
        oper_state: read_trim(&dir.join("operstate")),
        link_type,
        mac,
        mtu: num("mtu").map(|n| n as u32),
        flags: with_no_carrier(
            decode_flags(flags_bits, carrier == Some(true)),
            flags_bits & IFF_UP != 0,
            carrier,
        ),
        addresses: Vec::new(),
    }
}

/// Numbers in /sys are decimal, or hex with a `0x` prefix (`flags`).
fn parse_sys_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

const IFF_UP: u32 = 0x1;

/// Decode `IFF_*` flags in the order and spelling `ip link` uses; `LOWER_UP`
/// (not in the sysfs flags word) comes from the carrier.
pub fn decode_flags(bits: u32, lower_up: bool) -> Vec<String> {
    const NAMES: [(u32, &str); 15] = [
        (0x8, "LOOPBACK"),
        (0x2, "BROADCAST"),
        (0x10, "POINTOPOINT"),
        (0x1000, "MULTICAST"),
        (0x80, "NOARP"),
        (0x200, "ALLMULTI"),
        (0x100, "PROMISC"),
        (0x20, "NOTRAILERS"),
        (0x4, "DEBUG"),
        (0x8000, "DYNAMIC"),
        (0x4000, "AUTOMEDIA"),
        (0x2000, "PORTSEL"),
        (0x400, "MASTER"),
        (0x800, "SLAVE"),
        (IFF_UP, "UP"),
    ];
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    if lower_up && bits & IFF_UP != 0 {
        out.push("LOWER_UP".into());
    }
    out
}

/// `ip link` puts `NO-CARRIER` first for an interface that is up without a link.
fn with_no_carrier(mut flags: Vec<String>, up: bool, carrier: Option<bool>) -> Vec<String> {
    if up && carrier == Some(false) {
        flags.insert(0, "NO-CARRIER".into());
    }
    flags
}

/// ARPHRD_* numbers (linux/if_arp.h) to the names `ip` prints.
fn arphrd_name(t: u32) -> String {
    match t {
        1 => "ether".into(),
        772 => "loopback".into(),
        776 => "sit".into(),
        768 => "ipip".into(),
        778 => "gre".into(),
        823 => "ip6gre".into(),
        65534 => "none".into(),
        512 => "ppp".into(),
        801 => "ieee802.11".into(),
        n => n.to_string(),
    }
}

fn scope(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(a) if a.is_loopback() => "host",
        IpAddr::V4(a) if a.is_link_local() => "link",
        IpAddr::V6(a) if a.is_loopback() => "host",
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => "link",
        _ => "global",
    }
}

fn gateways() -> Vec<Gateway> {
    let mut gw = fs::read_to_string("/proc/net/route")
        .map(|t| parse_route_v4(&t))
        .unwrap_or_default();
    gw.extend(
        fs::read_to_string("/proc/net/ipv6_route")
            .map(|t| parse_route_v6(&t))
            .unwrap_or_default(),
    );
    gw
}

/// Default routes from the text of `/proc/net/route` (IPv4, addresses in
/// little-endian hex).
pub fn parse_route_v4(text: &str) -> Vec<Gateway> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let mut out: Vec<Gateway> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gw, flags, metric, mask) =
                (hex(f[1])?, hex(f[2])?, hex(f[3])?, f[6], hex(f[7])?);
            if dest != 0 || mask != 0 || flags & RTF_UP == 0 || flags & RTF_GATEWAY == 0 {
                return None;
            }
            Some(Gateway {
                family: "inet",
                address: IpAddr::V4(Ipv4Addr::from(u32::from_be(gw))),
                interface: f[0].to_string(),
                metric: metric.parse().ok()?,
            })
        })
        .collect();
    out.sort_by_key(|g| g.metric);
    out
}

/// Default routes from the text of `/proc/net/ipv6_route`: destination ::/0
/// with a non-zero next hop (the loopback "unreachable" routes have none).
pub fn parse_route_v6(text: &str) -> Vec<Gateway> {
    const RTF_REJECT: u32 = 0x200;
    let mut out: Vec<Gateway> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[0] != "0".repeat(32) || f[1] != "00" {
                return None;
            }
            let next = u128::from_str_radix(f[4], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if next == 0 || flags & RTF_REJECT != 0 {
                return None;
            }
            Some(Gateway {
                family: "inet6",
                address: IpAddr::V6(Ipv6Addr::from(next)),
                interface: f[9].to_string(),
                metric: u32::from_str_radix(f[5], 16).ok()?,
            })
        })
        .collect();
    out.sort_by_key(|g| g.metric);
    out
}

/// Where systemd-resolved keeps the real upstream servers behind its stub.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

fn dns() -> Dns {
    let mut d = fs::read_to_string("/etc/resolv.conf")
        .map(|t| parse_resolv_conf(&t))
        .unwrap_or_default();
    if d.stub {
        d.upstream = fs::read_to_string(RESOLVED_UPSTREAM)
            .ok()
            .map(|t| parse_resolv_conf(&t).servers)
            .filter(|s| !s.is_empty() && !s.iter().all(IpAddr::is_loopback));
    }
    d
}

/// `nameserver` and `search` lines of a resolv.conf text. A server with a
/// zone suffix (`fe80::1%eth0`) keeps the address part.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut d = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(ip) = w.next().and_then(|a| a.split('%').next()?.parse().ok()) {
                    d.servers.push(ip);
                }
            }
            Some("search") | Some("domain") => {
                d.search = w.map(str::to_string).collect();
            }
            _ => {}
        }
    }
    d.stub = !d.servers.is_empty() && d.servers.iter().all(IpAddr::is_loopback);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_v4() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 wlan0\t00000000\t0101A8C0\t0003\t0\t0\t50\t00000000\t0\t0\t0\n";
        let g = parse_route_v4(t);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].address, "192.168.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(g[0].interface, "wlan0");
        assert_eq!(g[1].address, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert!(parse_route_v4("garbage\nx y z\n").is_empty());
    }

    #[test]
    fn route_v6() {
        let z = "0".repeat(32);
        let t = format!(
            "{z} 00 {z} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
             {z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200 lo\n\
             fd000000000000000000000000000000 40 {z} 00 {z} 00000100 00000001 00000000 00000001 eth0\n"
        );
        let g = parse_route_v6(&t);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].address, "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(g[0].metric, 1024);
    }

    #[test]
    fn resolv_conf() {
        let d = parse_resolv_conf(
            "# generated\nnameserver 127.0.0.53\noptions edns0\nsearch lan example.org\n",
        );
        assert!(d.stub);
        assert_eq!(d.search, ["lan", "example.org"]);
        let d = parse_resolv_conf(
            "nameserver 192.0.2.53 ; c\nnameserver fe80::1%eth0\nnameserver bogus\n",
        );
        assert!(!d.stub);
        assert_eq!(d.servers.len(), 2);
    }

    #[test]
    fn flags_like_ip_link() {
        assert_eq!(decode_flags(0x9, true), ["LOOPBACK", "UP", "LOWER_UP"]);
        assert_eq!(
            decode_flags(0x1003, true),
            ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"]
        );
        assert_eq!(decode_flags(0x82, false), ["BROADCAST", "NOARP"]);
        assert_eq!(parse_sys_number("0x1003"), Some(0x1003));
        assert_eq!(
            with_no_carrier(decode_flags(0x1003, false), true, Some(false)),
            ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"]
        );
    }
}
