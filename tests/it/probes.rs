//! `ping`, `tcping` and `trace` against hosts that know nothing of netsh:
//! the loopback addresses, real listeners (netsh's own server, socat), and
//! chains of network namespaces this test builds (see `netns`), whose
//! addresses exist only inside them. Every packet stays on this machine.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    DataDir, LIMIT, Output, f, json, netsh, netsh_tmp, one_err_line, run, scrub_env, show,
    start_server, u, wait_for,
};
use crate::netns::{Chain, netsh_in_ns};

fn probes(j: &Value) -> &Vec<Value> {
    j["probes"].as_array().expect("probes")
}

/// iputils' ping, as a peer to compare with; `None` when it is missing.
fn iputils_ping(args: &[&str]) -> Option<std::process::Output> {
    let ping = ["/usr/bin/ping", "/bin/ping"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    Command::new(ping).args(args).output().ok()
}

/// `rtt min/avg/max/mdev = a/b/c/d ms` → avg.
fn iputils_avg(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("min/avg/max"))?;
    let nums = line.split('=').nth(1)?.trim().split(' ').next()?;
    nums.split('/').nth(1)?.parse().ok()
}

// ------------------------------------------------------------------ ping

fn ping_loopback(addr: &str) {
    let o = netsh_tmp(&["ping", "-c", "5", "-i", "0.05", addr, "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["address"], addr);
    assert_eq!(u(&j["transmitted"]), 5);
    assert_eq!(u(&j["received"]), 5);
    assert_eq!(f(&j["loss_pct"]), 0.0);
    let ps = probes(&j);
    let seqs: Vec<u64> = ps.iter().map(|p| u(&p["seq"])).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "icmp_seq counts from 1");
    for p in ps {
        assert_eq!(p["status"], "ok", "{p}");
        assert!(f(&p["rtt_ms"]) > 0.0, "{p}");
        assert_eq!(u(&p["ttl"]), 64, "loopback replies keep TTL 64: {p}");
    }
    let rtt = &j["rtt"];
    assert!(f(&rtt["min_ms"]) <= f(&rtt["avg_ms"]) && f(&rtt["avg_ms"]) <= f(&rtt["max_ms"]));
    assert!(f(&rtt["p99_9_ms"]) <= f(&rtt["max_ms"]) + 1e-9);

    // The text form is iputils'.
    let o = netsh_tmp(&["ping", "-c", "3", "-i", "0.05", addr]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout.starts_with(&format!("PING {addr} ({addr}) 56")),
        "{}",
        show(&o)
    );
    for seq in 1..=3 {
        assert!(
            o.stdout.contains(&format!(
                "64 bytes from {addr}: icmp_seq={seq} ttl=64 time="
            )),
            "{}",
            show(&o)
        );
    }
    assert!(
        o.stdout
            .contains(&format!("--- {addr} ping statistics ---"))
    );
    assert!(
        o.stdout
            .contains("3 packets transmitted, 3 received, 0% packet loss, time "),
        "{}",
        show(&o)
    );
    assert!(o.stdout.contains("rtt min/avg/max/mdev = "));
    assert!(o.stdout.contains("rtt p50/p90/p99/p99.9 = "));
}

#[test]
fn ping_loopback_v4() {
    ping_loopback("127.0.0.1");
}

#[test]
fn ping_loopback_v6() {
    ping_loopback("::1");
}

#[test]
fn ping_agrees_with_iputils_on_the_same_host_and_count() {
    let Some(peer) = iputils_ping(&["-c", "10", "-i", "0.05", "127.0.0.1"]) else {
        eprintln!("skipping: iputils ping is not installed (scripts/setup installs it)");
        return;
    };
    let peer_text = String::from_utf8_lossy(&peer.stdout);
    assert!(
        peer_text.contains("10 packets transmitted, 10 received, 0% packet loss"),
        "{peer_text}"
    );
    let o = netsh_tmp(&["ping", "-c", "10", "-i", "0.05", "127.0.0.1"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout
            .contains("10 packets transmitted, 10 received, 0% packet loss"),
        "{}",
        show(&o)
    );
    let theirs = iputils_avg(&peer_text).expect("iputils' rtt line");
    let ours = iputils_avg(&o.stdout).expect("netsh's rtt line");
    // Same order of magnitude on loopback (a few µs to a fraction of a ms).
    let floor = 0.05;
    assert!(
        ours <= 10.0 * theirs.max(floor) && theirs <= 10.0 * ours.max(floor),
        "netsh avg {ours} ms, iputils avg {theirs} ms"
    );
}

#[test]
fn ping_a_host_with_a_port_is_a_usage_error_pointing_to_tcping() {
    let o = netsh_tmp(&["ping", "127.0.0.1:80", "-c", "1"]);
    assert_eq!(o.code, Some(2), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.contains("tcping"), "{e}");
}

/// A namespace of its own with only loopback, for sysctls that are per
/// namespace (`ping_group_range`).
struct LoneNs(String);

impl LoneNs {
    fn new(tag: &str) -> Option<LoneNs> {
        let name = format!("nsht-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: cannot create a network namespace here");
            return None;
        }
        let ns = LoneNs(name);
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    fn sh(&self, cmd: &[&str]) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .status()
            .expect("ip netns exec");
        assert!(st.success(), "{cmd:?} in {}", self.0);
    }

    /// netsh as the unprivileged user `nobody`, with no capabilities.
    fn netsh_as_nobody(&self, dir: &Path, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0])
            .args([
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_netsh"))
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .current_dir(dir);
        scrub_env(&mut c);
        run(c, None, LIMIT)
    }
}

impl Drop for LoneNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A data dir `nobody` may write.
fn world_writable_dir() -> DataDir {
    use std::os::unix::fs::PermissionsExt;
    let d = DataDir::new();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    d
}

#[test]
fn ping_without_any_icmp_socket_says_both_fixes_in_one_line() {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: setpriv is missing");
        return;
    }
    let Some(ns) = LoneNs::new("priv") else {
        return;
    };
    // Nobody's group outside the range, and no CAP_NET_RAW.
    ns.sh(&["sysctl", "-qw", "net.ipv4.ping_group_range=1 0"]);
    let d = world_writable_dir();
    let o = ns.netsh_as_nobody(d.path(), &["ping", "-c", "1", "127.0.0.1"]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[permission-denied]: "), "{e}");
    assert!(e.contains("ping_group_range"), "{e}");
    assert!(e.contains("setcap cap_net_raw+ep"), "{e}");
    assert!(o.stdout.is_empty(), "{}", show(&o));
}

#[test]
fn ping_uses_the_unprivileged_datagram_socket_where_the_range_allows() {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: setpriv is missing");
        return;
    }
    let Some(ns) = LoneNs::new("dgram") else {
        return;
    };
    ns.sh(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]);
    let d = world_writable_dir();
    for addr in ["127.0.0.1", "::1"] {
        let o = ns.netsh_as_nobody(d.path(), &["ping", "-c", "3", "-i", "0.02", addr, "--json"]);
        assert_eq!(o.code, Some(0), "{addr}: {}", show(&o));
        let j = json(&o);
        assert_eq!(j["socket"], "datagram", "{j}");
        assert_eq!(u(&j["received"]), 3, "{j}");
        assert!(probes(&j).iter().all(|p| p["ttl"] == 64), "{j}");
    }
    // An unprivileged user may not flood.
    let o = ns.netsh_as_nobody(d.path(), &["ping", "-c", "3", "-i", "0", "127.0.0.1"]);
    assert_eq!(o.code, Some(2), "{}", show(&o));
    assert!(one_err_line(&o).contains("2ms"), "{}", show(&o));
}

#[test]
fn ping_sigquit_prints_the_statistics_so_far_and_goes_on() {
    let d = DataDir::new();
    let mut c = netsh(d.path());
    c.args(["ping", "-c", "20", "-i", "0.05", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn netsh ping");
    let out = child.stdout.take().expect("stdout");
    let lines = crate::common::line_channel(out);
    // After a few replies, ask for the statistics.
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match lines.recv_timeout(Duration::from_secs(5)) {
            Ok(l) => {
                let third = l.contains("icmp_seq=3 ");
                seen.push(l);
                if third {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    crate::common::kill("QUIT", child.id());
    let st = crate::common::expect_exit(&mut child, Duration::from_secs(10));
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
        seen.push(l);
    }
    assert!(st.success(), "{st:?}\n{seen:#?}");
    let progress = seen
        .iter()
        .position(|l| l.contains(" packets, ") && l.contains("% loss"))
        .unwrap_or_else(|| panic!("no progress line: {seen:#?}"));
    let last = seen
        .iter()
        .position(|l| l.contains("icmp_seq=20 "))
        .unwrap_or_else(|| panic!("the run did not go on to the end: {seen:#?}"));
    assert!(progress < last, "{seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.contains("20 packets transmitted, 20 received"))
    );
}

#[test]
fn ping_ctrl_c_ends_with_the_summary_of_what_was_sent() {
    let d = DataDir::new();
    let mut c = netsh(d.path());
    c.args(["ping", "-i", "0.05", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn netsh ping");
    let lines = crate::common::line_channel(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        let third = l.contains("icmp_seq=3 ");
        seen.push(l);
        if third {
            break;
        }
    }
    crate::common::kill("INT", child.id());
    let st = crate::common::expect_exit(&mut child, Duration::from_secs(10));
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
        seen.push(l);
    }
    assert!(
        st.success(),
        "replies came, so success as iputils: {st:?}\n{seen:#?}"
    );
    let sum = seen
        .iter()
        .find(|l| l.contains(" packets transmitted, "))
        .unwrap_or_else(|| panic!("no summary: {seen:#?}"));
    let sent: u64 = sum
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(sent >= 3, "{sum}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("rtt min/avg/max/mdev = ")),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|l| l == "(interrupted)"), "{seen:#?}");
}

// ---------------------------------------------------------------- tcping

#[test]
fn tcping_a_netsh_server_a_closed_port_and_a_black_hole_are_told_apart() {
    // A real listener: netsh's own server.
    let srv = start_server("127.0.0.1");
    let target = srv.addr.to_string();
    let o = netsh_tmp(&["tcping", &target, "-c", "4", "-i", "0.05", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!((u(&j["transmitted"]), u(&j["received"])), (4, 4), "{j}");
    assert_eq!((u(&j["refused"]), u(&j["lost"])), (0, 0), "{j}");
    assert!(
        probes(&j)
            .iter()
            .all(|p| p["status"] == "ok" && f(&p["rtt_ms"]) > 0.0)
    );
    drop(srv);

    // A closed port: every connect gets a reset, at once.
    let closed = crate::common::closed_tcp_port();
    let t = Instant::now();
    let o = netsh_tmp(&[
        "tcping",
        &format!("127.0.0.1:{closed}"),
        "-c",
        "3",
        "-i",
        "0.05",
    ]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert!(
        o.stdout
            .contains("3 connects, 0 connected, 3 refused, 0 timed out"),
        "{}",
        show(&o)
    );
    assert!(o.stdout.contains("refused by 127.0.0.1:"), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[connection-refused]: "), "{e}");
    assert!(e.contains("nothing listens"), "{e}");

    // A black hole: a listener whose queue is full drops every SYN.
    let hole = crate::common::FullListener::new();
    let o = netsh_tmp(&[
        "-o",
        "timeout=300ms",
        "tcping",
        &hole.addr.to_string(),
        "-c",
        "2",
        "-i",
        "0.05",
        "--json",
    ]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["lost"]), 2, "{j}");
    assert_eq!(u(&j["refused"]) + u(&j["received"]), 0, "{j}");
    assert!(probes(&j).iter().all(|p| p["status"] == "lost"), "{j}");
    let o = netsh_tmp(&[
        "-o",
        "timeout=300ms",
        "tcping",
        &hole.addr.to_string(),
        "-c",
        "1",
    ]);
    let e = one_err_line(&o);
    assert!(e.starts_with("error[timed-out]: "), "{e}");
    assert!(o.stdout.contains("no answer from "), "{}", show(&o));
}

#[test]
fn tcping_a_third_party_listener() {
    if Command::new("socat").arg("-V").output().is_err() {
        eprintln!("skipping: socat is not installed (scripts/setup installs it)");
        return;
    }
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut socat = crate::common::KillOnDrop(
        Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg("EXEC:/bin/cat")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat"),
    );
    assert!(
        wait_for(Duration::from_secs(5), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "socat did not listen"
    );
    let o = netsh_tmp(&[
        "tcping",
        &format!("127.0.0.1:{port}"),
        "-c",
        "3",
        "-i",
        "0.05",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout
            .contains("3 connects, 3 connected, 0 refused, 0 timed out"),
        "{}",
        show(&o)
    );
    let _ = socat.0.kill();
}

// ----------------------------------------------------------------- trace

fn hop_addresses(j: &Value) -> Vec<String> {
    j["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            h["addresses"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string()
        })
        .collect()
}

#[test]
fn trace_finds_every_hop_in_order_with_each_method_v4() {
    let Some(chain) = Chain::new(3) else { return };
    let d = DataDir::new();
    let target = chain.target_addr_v4().to_string();
    let want: Vec<String> = chain
        .hop_addrs_v4()
        .iter()
        .map(ToString::to_string)
        .collect();
    for method in ["udp", "icmp", "tcp"] {
        let o = netsh_in_ns(
            &chain,
            chain.client(),
            d.path(),
            &["trace", "-n", "-M", method, &target, "--json"],
        );
        assert_eq!(o.code, Some(0), "{method}: {}", show(&o));
        let j = json(&o);
        assert_eq!(j["reached"], true, "{method}: {j}");
        assert_eq!(hop_addresses(&j), want, "{method}");
        for h in j["hops"].as_array().expect("hops") {
            assert_eq!(u(&h["received"]), 3, "{method}: {h}");
            let last = h["ttl"] == want.len() as u64;
            for p in h["probes"].as_array().expect("probes") {
                assert_eq!(
                    p["outcome"],
                    if last { "reached" } else { "hop" },
                    "{method}: {h}"
                );
            }
        }
        // traceroute's table.
        let o = netsh_in_ns(
            &chain,
            chain.client(),
            d.path(),
            &["trace", "-n", "-M", method, &target],
        );
        assert_eq!(o.code, Some(0), "{method}: {}", show(&o));
        for (i, a) in want.iter().enumerate() {
            let line = o
                .stdout
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} ", i + 1)))
                .unwrap_or_else(|| panic!("{method}: no hop {}\n{}", i + 1, show(&o)));
            assert!(
                line.contains(a.as_str()) && line.matches(" ms").count() == 3,
                "{method}: {line}"
            );
        }
    }
}

#[test]
fn trace_needs_no_privileges_for_udp_and_tcp_nor_for_icmp_where_ping_may() {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: setpriv is missing");
        return;
    }
    let Some(chain) = Chain::new(2) else { return };
    let d = world_writable_dir();
    let target = chain.target_addr_v4().to_string();
    let want: Vec<String> = chain
        .hop_addrs_v4()
        .iter()
        .map(ToString::to_string)
        .collect();
    let as_nobody = |args: &[&str]| {
        let mut words = vec![
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            env!("CARGO_BIN_EXE_netsh"),
            "--data-dir",
            d.path().to_str().expect("utf-8 temp dir"),
        ];
        words.extend_from_slice(args);
        let mut c = chain.exec(chain.client(), "setpriv", &words);
        scrub_env(&mut c);
        c.current_dir(d.path());
        run(c, None, LIMIT)
    };
    let sysctl = |range: &str| {
        let st = chain
            .exec(
                chain.client(),
                "sysctl",
                &["-qw", &format!("net.ipv4.ping_group_range={range}")],
            )
            .status()
            .expect("sysctl");
        assert!(st.success());
    };
    // The error queue carries the hops' answers to any user.
    sysctl("1 0");
    for method in ["udp", "tcp"] {
        let o = as_nobody(&["trace", "-n", "-M", method, &target, "--json"]);
        assert_eq!(o.code, Some(0), "{method}: {}", show(&o));
        assert_eq!(hop_addresses(&json(&o)), want, "{method}");
    }
    let o = as_nobody(&["trace", "-n", "-M", "icmp", &target]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert!(
        one_err_line(&o).starts_with("error[permission-denied]: "),
        "{}",
        show(&o)
    );
    // Where unprivileged ping may, so may trace -M icmp (datagram socket).
    sysctl("0 2147483647");
    let o = as_nobody(&["trace", "-n", "-M", "icmp", &target, "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(hop_addresses(&json(&o)), want);
}

#[test]
fn trace_finds_every_hop_in_order_with_each_method_v6() {
    let Some(chain) = Chain::new(3) else { return };
    let d = DataDir::new();
    let target = chain.target_addr_v6().to_string();
    let want: Vec<String> = chain
        .hop_addrs_v6()
        .iter()
        .map(ToString::to_string)
        .collect();
    for method in ["udp", "icmp", "tcp"] {
        let o = netsh_in_ns(
            &chain,
            chain.client(),
            d.path(),
            &["trace", "-n", "-M", method, &target, "--json"],
        );
        assert_eq!(o.code, Some(0), "{method}: {}", show(&o));
        let j = json(&o);
        assert_eq!(j["reached"], true, "{method}: {j}");
        assert_eq!(hop_addresses(&j), want, "{method}");
    }
}

#[test]
fn a_hop_that_sends_no_icmp_shows_as_stars_and_loss_not_as_an_error() {
    let Some(chain) = Chain::new(3) else { return };
    chain.drop_icmp_from(1);
    let d = DataDir::new();
    let target = chain.target_addr_v4().to_string();
    let mut want: Vec<String> = chain
        .hop_addrs_v4()
        .iter()
        .map(ToString::to_string)
        .collect();
    want[1] = "*".into();
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &["-o", "timeout=500ms", "trace", "-n", &target, "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(hop_addresses(&j), want);
    let hop2 = &j["hops"][1];
    assert_eq!((u(&hop2["sent"]), u(&hop2["received"])), (3, 0), "{hop2}");
    assert_eq!(f(&hop2["loss_pct"]), 100.0);
    assert!(
        hop2["probes"]
            .as_array()
            .expect("probes")
            .iter()
            .all(|p| p["outcome"] == "lost")
    );
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &["-o", "timeout=500ms", "trace", "-n", &target],
    );
    assert!(
        o.stdout.lines().any(|l| l.trim() == "2  * * *"),
        "{}",
        show(&o)
    );
    // mtr's report: the silent hop is 100 % loss, the others 0 %.
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &[
            "-o",
            "timeout=300ms",
            "trace",
            "-n",
            &target,
            "--report",
            "-c",
            "3",
            "-i",
            "0.1",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let row = |ttl: &str| {
        o.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ttl))
            .unwrap_or_else(|| panic!("no row {ttl}\n{}", show(&o)))
            .to_string()
    };
    assert!(
        row("2").contains("???") && row("2").contains("100.0%"),
        "{}",
        row("2")
    );
    for ttl in ["1", "3", "4"] {
        assert!(
            row(ttl).contains(" 0.0%") && row(ttl).contains(" 3 "),
            "{}",
            row(ttl)
        );
    }
}

#[test]
fn trace_to_an_address_no_router_knows_ends_with_its_mark() {
    let Some(chain) = Chain::new(2) else { return };
    let d = DataDir::new();
    // TEST-NET-3: the client's default route sends it to r1, which has no
    // route for it and says so (net unreachable). It stays in the chain.
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &["trace", "-n", "-M", "icmp", "203.0.113.7", "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    let hops = j["hops"].as_array().expect("hops");
    assert_eq!(hops.len(), 1, "the path ends at r1: {j}");
    let p = &hops[0]["probes"][0];
    assert_eq!(p["outcome"], "unreachable", "{j}");
    assert_eq!(p["mark"], "!N", "{j}");
    assert_eq!(p["address"], chain.hop_addrs_v4()[0].to_string());
    // ping hears the same error and counts it.
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &["ping", "-c", "2", "-i", "0.05", "203.0.113.7"],
    );
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert!(
        o.stdout.contains("From ") && o.stdout.contains("Destination Net Unreachable"),
        "{}",
        show(&o)
    );
    assert!(
        o.stdout.contains("+2 errors, 100% packet loss"),
        "{}",
        show(&o)
    );
    assert!(
        one_err_line(&o).starts_with("error[unreachable]: "),
        "{}",
        show(&o)
    );
}

#[test]
fn ping_across_a_chain_sees_the_ttl_each_router_took() {
    let Some(chain) = Chain::new(3) else { return };
    let d = DataDir::new();
    for target in [
        chain.target_addr_v4().to_string(),
        chain.target_addr_v6().to_string(),
    ] {
        let o = netsh_in_ns(
            &chain,
            chain.client(),
            d.path(),
            &["ping", "-c", "3", "-i", "0.05", &target, "--json"],
        );
        assert_eq!(o.code, Some(0), "{}", show(&o));
        let j = json(&o);
        assert_eq!(u(&j["received"]), 3, "{j}");
        for p in probes(&j) {
            assert_eq!(u(&p["ttl"]), 64 - 3, "three routers on the way back: {p}");
        }
    }
}

#[test]
fn trace_looks_up_names_in_the_background() {
    let Some(chain) = Chain::new(2) else { return };
    // `ip netns exec` reads /etc/netns/NAME/hosts in place of /etc/hosts;
    // a resolv.conf that points nowhere keeps lookups off any network.
    let etc = Path::new("/etc/netns").join(chain.client());
    std::fs::create_dir_all(&etc).expect("create /etc/netns/NAME");
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(etc.clone());
    let hops = chain.hop_addrs_v4();
    std::fs::write(
        etc.join("hosts"),
        format!("{} first-hop.test\n{} target.test\n", hops[0], hops[2]),
    )
    .expect("write hosts");
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .expect("write resolv.conf");
    let d = DataDir::new();
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &["trace", &chain.target_addr_v4().to_string()],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout
            .contains(&format!(" 1  first-hop.test ({})", hops[0])),
        "{}",
        show(&o)
    );
    assert!(
        o.stdout.contains(&format!(" 2  {}", hops[1])),
        "{}",
        show(&o)
    );
    assert!(
        o.stdout.contains(&format!(" 3  target.test ({})", hops[2])),
        "{}",
        show(&o)
    );
}

#[test]
fn trace_live_redraws_in_place_on_a_terminal_then_reports() {
    let Some(chain) = Chain::new(2) else { return };
    let d = DataDir::new();
    let mut c = Command::new("ip");
    scrub_env(&mut c);
    c.args(["netns", "exec", chain.client(), "sh", "-c"])
        .arg(r#"stty cols 100 rows 40 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_netsh"))
        .arg("--data-dir")
        .arg(d.path())
        .args(["trace", "-n", "--live", "-c", "3", "-i", "0.1"])
        .arg(chain.target_addr_v4().to_string())
        .current_dir(d.path())
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(c, Some(10_000)).expect("spawn on a pty");
    let all = p.exp_eof().expect("the live view ends after 3 rounds");
    // Three frames; each after the first goes back up over the last.
    assert!(all.matches("Loss%").count() >= 3, "{all:?}");
    // Back to the first line of the last frame (5 lines), rewritten.
    assert!(all.contains("\x1b[5F"), "redrawn in place: {all:?}");
    assert!(
        all.contains("3 rounds; reached the host at hop 3"),
        "{all:?}"
    );
    // Without a terminal it says what to use instead.
    let o = netsh_in_ns(
        &chain,
        chain.client(),
        d.path(),
        &["trace", "--live", &chain.target_addr_v4().to_string()],
    );
    assert_eq!(o.code, Some(2), "{}", show(&o));
    assert!(one_err_line(&o).contains("--report"), "{}", show(&o));
}

// -------------------------------------------------------- scripts, rhai

#[test]
fn ping_and_tcping_from_rhai_return_the_json_maps() {
    let srv = start_server("127.0.0.1");
    let code = format!(
        r#"let p = ping("127.0.0.1", #{{count: 2, interval: "0.05s"}});
print(to_json(p));
let t = tcping("{}", #{{count: 2, interval: "0.05s"}});
print(to_json(t));"#,
        srv.addr
    );
    let o = netsh_tmp(&["-e", &code]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let maps = crate::common::json_lines(&o);
    assert_eq!(maps.len(), 2, "{}", show(&o));
    assert_eq!(u(&maps[0]["received"]), 2);
    assert_eq!(maps[0]["address"], "127.0.0.1");
    assert_eq!(u(&maps[1]["received"]), 2);
    assert_eq!(maps[1]["address"], srv.addr.to_string());
    // The same fields as --json.
    let j = json(&netsh_tmp(&["ping", "-c", "1", "127.0.0.1", "--json"]));
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("map").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&maps[0]), keys(&j));
}

#[test]
fn the_tcping_target_is_an_address_of_the_family_asked_for() {
    let srv = start_server("127.0.0.1");
    let port = srv.addr.port();
    let o = netsh_tmp(&[
        "tcping",
        &format!("localhost:{port}"),
        "-4",
        "-c",
        "1",
        "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    let a: SocketAddr = j["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("addr");
    assert!(matches!(a.ip(), IpAddr::V4(_)), "{j}");
    // An address of the other family is a clear error, not a connect.
    let o = netsh_tmp(&["tcping", &format!("[::1]:{port}"), "-4", "-c", "1"]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[dns]: ::1 has no IPv4 address"), "{e}");
}

#[test]
fn ping_from_an_interface_or_a_source_address() {
    for args in [&["-I", "lo"][..], &["-I", "127.0.0.1"][..]] {
        let mut words = vec!["ping", "-c", "2", "-i", "0.05"];
        words.extend_from_slice(args);
        words.extend_from_slice(&["127.0.0.1", "--json"]);
        let o = netsh_tmp(&words);
        assert_eq!(o.code, Some(0), "{args:?}: {}", show(&o));
        assert_eq!(u(&json(&o)["received"]), 2, "{args:?}");
    }
    let o = netsh_tmp(&["ping", "-c", "1", "-I", "nosuch0", "127.0.0.1"]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(
        e.contains("nosuch0") && e.contains("'info' lists the interfaces"),
        "{e}"
    );
    let o = netsh_tmp(&["ping", "-c", "1", "-I", "::1", "127.0.0.1"]);
    assert_eq!(o.code, Some(2), "{}", show(&o));
}

#[test]
fn trace_from_rhai_returns_the_json_map() {
    let Some(chain) = Chain::new(2) else { return };
    let d = DataDir::new();
    let code = format!(
        r#"let t = trace("{}", #{{n: true, method: "icmp"}});
print(`${{t.reached}} ${{t.hops.len()}} ${{t.hops[0].addresses[0]}}`);"#,
        chain.target_addr_v4()
    );
    let o = netsh_in_ns(&chain, chain.client(), d.path(), &["-e", &code]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(
        o.stdout.trim(),
        format!("true 3 {}", chain.hop_addrs_v4()[0]),
        "{}",
        show(&o)
    );
}

#[test]
fn ping_takes_no_reply_from_another_host_that_carries_its_identifier() {
    // Every raw socket sees every reply, and identifiers are 16 bits: in
    // namespaces of this test's own, the target never answers and replies
    // under every identifier come from 127.0.0.1 instead.
    let Some(chain) = Chain::new(0) else {
        return;
    };
    crate::netns::run(&mut chain.exec(
        chain.target(),
        "sysctl",
        &["-qw", "net.ipv4.icmp_echo_ignore_all=1"],
    ))
    .expect("silence the target");
    let target = chain.target_addr_v4().to_string();
    let d = DataDir::new();
    let mut c = chain.exec(
        chain.client(),
        env!("CARGO_BIN_EXE_netsh"),
        &[
            "--data-dir",
            d.path().to_str().expect("utf-8"),
            "-o",
            "timeout=500ms",
            "ping",
            "-c",
            "3",
            "-i",
            "0.3",
            &target,
            "--json",
        ],
    );
    crate::common::scrub_env(&mut c);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn ping in the namespace");
    std::thread::sleep(Duration::from_millis(100));
    chain.in_ns(chain.client(), || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw socket");
        let to = SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0)));
        // Probe 1 is out: a "reply" to it under every identifier.
        for ident in 0..=u16::MAX {
            let _ = s.send_to(&crate::monitor::echo_reply(ident, 1), &to);
        }
    });
    let out = child.wait_with_output().expect("wait");
    let o = crate::common::Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let j = json(&o);
    assert_eq!((u(&j["transmitted"]), u(&j["received"])), (3, 0), "{j}");
    // Not even a corrupt answer: the forged one is nobody's.
    assert_eq!((u(&j["lost"]), u(&j["corrupt"])), (3, 0), "{j}");
}
