//! `netsh info --json` against iproute2's own view of this machine
//! (`ip -j addr`, `ip -j route`, `ip -6 -j route`): same interfaces, indexes,
//! MTUs, MACs, flags, operational states, addresses and default gateways.
//!
//! Needs `ip` (iproute2) on PATH. Without it the test fails and says how to
//! install it, unless `NETSH_SKIP_IP_TEST=1` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{DataDir, json, netsh_in, show};

/// `netsh --data-dir DIR ARGS…`, which must succeed; stdout as JSON.
fn netsh_json(dir: &Path, args: &[&str]) -> Value {
    let o = netsh_in(dir, args, None);
    assert_eq!(o.code, Some(0), "netsh {args:?} failed:\n{}", show(&o));
    json(&o)
}

/// `ip ARGS…` as JSON, or `None` when `ip` is missing and the test may be
/// skipped. Panics with the fix when `ip` is missing otherwise.
fn ip_json(args: &[&str]) -> Option<Value> {
    let out: Output = match Command::new("ip").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if std::env::var_os("NETSH_SKIP_IP_TEST").is_some_and(|v| v == "1") {
                eprintln!(
                    "note: `ip` is not on PATH and NETSH_SKIP_IP_TEST=1: skipping the comparison with iproute2"
                );
                return None;
            }
            panic!(
                "`ip` (iproute2) is not on PATH, so `netsh info` cannot be checked against it.\n\
                 Install it with `../shared/peers/install.sh` (it installs iproute2), \
                 or set NETSH_SKIP_IP_TEST=1 to skip this test."
            );
        }
        Err(e) => panic!("cannot run `ip {}`: {e}", args.join(" ")),
    };
    assert!(
        out.status.success(),
        "`ip {}` failed ({:?}): {} — an iproute2 with JSON output (-j, 4.13 or newer) is needed; \
         `../shared/peers/install.sh` installs one",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Some iproute2 versions print nothing at all for an empty list.
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Some(Value::Array(Vec::new()));
    }
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`ip {}`: not JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

/// What both sides agree an address is: (family, address, prefix length).
type Addr = (String, IpAddr, u64);
/// A default route: (family, next hop, device).
type Gw = (String, IpAddr, String);

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn ip(v: &Value) -> IpAddr {
    s(v).parse()
        .unwrap_or_else(|e| panic!("not an IP address ({e}): {v}"))
}

/// ip prints the link-layer address of IP tunnels (ipip, sit, gre, ip6tnl, …)
/// as an IP address, where sysfs (netsh) has the same bytes in hex: compare
/// those as the hex form.
fn mac_form(ip_address: &str) -> String {
    match ip_address.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => hex_colons(&a.octets()),
        Ok(IpAddr::V6(a)) => hex_colons(&a.octets()),
        Err(_) => ip_address.to_ascii_lowercase(),
    }
}

fn hex_colons(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Default routes with a next hop in the output of `ip -j route`.
fn ip_defaults(routes: &Value, family: &str, out: &mut BTreeSet<Gw>) {
    for r in routes.as_array().expect("ip route: an array") {
        if r["dst"] != "default" {
            continue;
        }
        // A default route without a next hop ("default dev wg0") has no
        // gateway to show: netsh lists next hops only (RTF_GATEWAY), by design.
        // Multipath defaults ("nexthops") are not in /proc/net/route in full.
        if let (Some(g), Some(dev)) = (r["gateway"].as_str(), r["dev"].as_str()) {
            let g = g.parse().unwrap_or_else(|e| panic!("gateway {g}: {e}"));
            out.insert((family.to_string(), g, dev.to_string()));
        }
    }
}

/// Every difference between netsh's view and ip's, as readable lines.
/// `None` when `ip` is missing and the test is skipped.
fn differences(dir: &Path) -> Option<Vec<String>> {
    let addrs = ip_json(&["-j", "addr"])?;
    let routes4 = ip_json(&["-j", "route"])?;
    let routes6 = ip_json(&["-6", "-j", "route"])?;
    // `table all`: /proc/net/ipv6_route (netsh's IPv6 source) holds every
    // routing table, `ip -6 route` only the main one.
    let all4 = ip_json(&["-4", "-j", "route", "show", "table", "all"])?;
    let all6 = ip_json(&["-6", "-j", "route", "show", "table", "all"])?;
    let info = netsh_json(dir, &["info", "--json"]);

    let mut diff = Vec::new();
    let ours: BTreeMap<String, &Value> = info["interfaces"]
        .as_array()
        .expect("netsh: interfaces array")
        .iter()
        .map(|i| (s(&i["name"]), i))
        .collect();
    let theirs: BTreeMap<String, &Value> = addrs
        .as_array()
        .expect("ip addr: an array")
        .iter()
        .map(|i| (s(&i["ifname"]), i))
        .collect();
    let (a, b): (BTreeSet<&String>, BTreeSet<&String>) =
        (ours.keys().collect(), theirs.keys().collect());
    if a != b {
        diff.push(format!("interfaces: netsh {a:?}, ip {b:?}"));
    }

    for (name, t) in &theirs {
        let Some(o) = ours.get(name) else { continue };
        let mut check = |what: &str, netsh: Value, ip: Value| {
            if netsh != ip {
                diff.push(format!("{name}: {what}: netsh {netsh}, ip {ip}"));
            }
        };
        check("index", o["index"].clone(), t["ifindex"].clone());
        check("mtu", o["mtu"].clone(), t["mtu"].clone());
        check(
            "oper_state",
            o["oper_state"].clone(),
            t["operstate"].as_str().map(str::to_ascii_lowercase).into(),
        );
        // netsh names the ARPHRD types it knows and prints the number of the
        // others (documented); compare the names only.
        if let Some(lt) = o["link_type"].as_str()
            && lt.parse::<u32>().is_err()
        {
            check("link_type", o["link_type"].clone(), t["link_type"].clone());
        }
        if t["link_type"] != "none" {
            check(
                "mac",
                o["mac"].as_str().map(str::to_ascii_lowercase).into(),
                t["address"].as_str().map(mac_form).into(),
            );
        }
        // Flags as sets (the order is `ip link`'s on both sides, but that is
        // not the point). netsh reads sysfs `flags`, which is the kernel's
        // `dev->flags`, plus `carrier` for LOWER_UP; ip prints netlink's
        // `ifi_flags`, which is `dev_get_flags()`. They legitimately differ in:
        // - PROMISC and ALLMULTI: `dev->flags` has them whenever anything made
        //   the device promiscuous / all-multicast (tcpdump, a bridge port, a
        //   multicast router); `dev_get_flags()` reports only what the admin
        //   asked for (`ip link set … promisc on`). So netsh may show them when
        //   ip does not — never the other way round.
        // - M-DOWN: ip's note that the *master* device is down, not a flag of
        //   this interface.
        // Everything else must match, including NO-CARRIER (ip: UP without
        // IFF_RUNNING), DORMANT and ECHO: a difference there is a netsh bug.
        let set = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .expect("flags array")
                .iter()
                .map(s)
                .filter(|f| f.trim_start_matches(',') != "M-DOWN")
                .collect()
        };
        let (nf, tf) = (set(&o["flags"]), set(&t["flags"]));
        let only_netsh: BTreeSet<&String> = nf.difference(&tf).collect();
        let only_ip: BTreeSet<&String> = tf.difference(&nf).collect();
        if !only_ip.is_empty()
            || only_netsh
                .iter()
                .any(|f| *f != "PROMISC" && *f != "ALLMULTI")
        {
            diff.push(format!("{name}: flags: netsh {nf:?}, ip {tf:?}"));
        }
        let na: BTreeSet<Addr> = o["addresses"]
            .as_array()
            .expect("addresses array")
            .iter()
            .map(|a| {
                (
                    s(&a["family"]),
                    ip(&a["address"]),
                    a["prefix"].as_u64().expect("prefix"),
                )
            })
            .collect();
        let ta: BTreeSet<Addr> = t["addr_info"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    s(&a["family"]),
                    ip(&a["local"]),
                    a["prefixlen"].as_u64().expect("prefixlen"),
                )
            })
            .collect();
        for a in ta.difference(&na) {
            diff.push(format!("{name}: address {a:?} in ip, not in netsh"));
        }
        for a in na.difference(&ta) {
            diff.push(format!("{name}: address {a:?} in netsh, not in ip"));
        }
    }

    let gws: BTreeSet<Gw> = info["gateways"]
        .as_array()
        .expect("netsh: gateways array")
        .iter()
        .map(|g| (s(&g["family"]), ip(&g["address"]), s(&g["interface"])))
        .collect();
    let mut main = BTreeSet::new();
    ip_defaults(&routes4, "inet", &mut main);
    ip_defaults(&routes6, "inet6", &mut main);
    for g in main.difference(&gws) {
        diff.push(format!(
            "default gateway {g:?} in `ip route`, not in netsh's gateways {gws:?}"
        ));
    }
    let mut all = BTreeSet::new();
    ip_defaults(&all4, "inet", &mut all);
    ip_defaults(&all6, "inet6", &mut all);
    for g in gws.difference(&all) {
        diff.push(format!(
            "netsh gateway {g:?} is no default route in any table of `ip route`"
        ));
    }
    Some(diff)
}

#[test]
fn info_json_agrees_with_iproute2() {
    let dir = DataDir::new();
    let Some(first) = differences(dir.path()) else {
        return;
    };
    if first.is_empty() {
        return;
    }
    // Interfaces and addresses may change between the two reads (an address
    // finishing duplicate detection, a container starting): one more try, and
    // only a difference that shows both times fails the test.
    let second = differences(dir.path()).unwrap_or_default();
    assert!(
        second.is_empty(),
        "netsh info --json disagrees with ip:\n  {}",
        second.join("\n  ")
    );
}

#[test]
fn info_lo_has_the_loopback_address() {
    let dir = DataDir::new();
    let v = netsh_json(dir.path(), &["info", "lo", "--json"]);
    let ifs = v["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 1, "{v}");
    let lo = &ifs[0];
    assert_eq!(lo["name"], "lo");
    assert_eq!(lo["link_type"], "loopback");
    assert_eq!(lo["up"], true);
    assert!(
        lo["flags"].as_array().unwrap().contains(&"LOOPBACK".into()),
        "{lo}"
    );
    let has = |family: &str, addr: &str, prefix: u64| {
        lo["addresses"].as_array().unwrap().iter().any(|a| {
            a["family"] == family
                && a["address"] == addr
                && a["prefix"] == prefix
                && a["scope"] == "host"
        })
    };
    assert!(has("inet", "127.0.0.1", 8), "{lo}");
}
