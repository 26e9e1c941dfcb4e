//! SNTP end to end, with real UDP on loopback only: `netsh sntp` against
//! netsh's own responder (in-process, IPv4 and IPv6), standard clients
//! (ntplib, ntpsec's ntpdig) against that responder, `netsh sntp` against a
//! private chronyd, the responder byte by byte (including its rate limit),
//! and the client against fake servers written here that misbehave on
//! purpose (stale origin, silence, truncation, unsynchronised, kiss-o'-death).
//!
//! No sleeps as synchronisation: waits poll with a deadline, reads have
//! timeouts, every fake server loop is bounded in time.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{
    self, DataDir, LIMIT, Opts, Output, closed_udp_port, f, json, netsh_in, retry_eintr, run, show,
    start_server, start_server_with, u, wait_for,
};
use netsh::server::sntp::NtpConfig;
use serde_json::Value;

/// Seconds from 1900 (NTP epoch) to 1970 (Unix epoch).
const NTP_UNIX: u64 = 2_208_988_800;

// ---------------------------------------------------------------- helpers

/// `netsh --data-dir DIR sntp ARGS…`.
fn sntp(dir: &Path, args: &[&str]) -> Output {
    let mut words = vec!["sntp"];
    words.extend_from_slice(args);
    netsh_in(dir, &words, None)
}

/// Assert a failed run: exit status and `error[CODE]` on stderr; returns stderr.
fn assert_fails(o: &Output, exit: i32, code: &str) -> String {
    assert_eq!(o.code, Some(exit), "{}", show(o));
    assert!(
        o.stderr.contains(&format!("error[{code}]")),
        "want error[{code}]:\n{}",
        show(o)
    );
    o.stderr.clone()
}

/// Now in NTP format (computed here, independently of netsh).
fn now_ntp() -> u64 {
    ntp_of(SystemTime::now())
}

fn ntp_of(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).expect("clock after 1970");
    let secs = (d.as_secs() + NTP_UNIX) & 0xFFFF_FFFF;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Signed difference `a - b` of two NTP timestamps, in seconds.
fn ntp_diff(a: u64, b: u64) -> f64 {
    (a.wrapping_sub(b) as i64) as f64 / 4_294_967_296.0
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A 48-byte client request, LI 0, version `vn`, mode `mode`, transmit `tx`.
fn request(vn: u8, mode: u8, tx: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = (vn << 3) | mode;
    b[2] = 6; // poll 2^6
    b[40..48].copy_from_slice(&tx.to_be_bytes());
    b
}

/// A server reply to `req` with the given header bits, otherwise valid:
/// origin echoed, receive and transmit now, reference 10 s ago.
fn reply(req: &[u8], li: u8, vn: u8, mode: u8, stratum: u8, refid: [u8; 4]) -> Vec<u8> {
    let now = now_ntp();
    let mut b = vec![0u8; 48];
    b[0] = (li << 6) | (vn << 3) | mode;
    b[1] = stratum;
    b[2] = 6;
    b[3] = (-20i8) as u8;
    b[8..12].copy_from_slice(&0x0000_0100u32.to_be_bytes()); // root dispersion ≈ 4 ms
    b[12..16].copy_from_slice(&refid);
    b[16..24].copy_from_slice(&now.wrapping_sub(10 << 32).to_be_bytes());
    b[24..32].copy_from_slice(&req[40..48]);
    b[32..40].copy_from_slice(&now.to_be_bytes());
    b[40..48].copy_from_slice(&now.to_be_bytes());
    b
}

/// A good stratum-2 reply (LI 0, version 4, mode 4, reference 192.0.2.1).
fn good(req: &[u8]) -> Vec<u8> {
    reply(req, 0, 4, 4, 2, [192, 0, 2, 1])
}

/// A kiss-o'-death with `code`, LI `li`.
fn kiss(req: &[u8], li: u8, code: &[u8; 4]) -> Vec<u8> {
    reply(req, li, 4, 4, 0, *code)
}

/// A client socket connected to `to`, bound to `from` (port 0), 2 s read timeout.
fn udp_client(from: &str, to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(format!("{from}:0")).expect("bind client");
    s.connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// The next datagram within `within`, or `None`.
fn recv_within(s: &UdpSocket, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 2048];
    let r = match retry_eintr(|| s.recv(&mut buf)) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    r
}

/// Check the RFC 3339 shape netsh prints and that it parses; the instant in UTC.
fn assert_rfc3339(s: &str) -> chrono::NaiveDateTime {
    // RFC 3339 with microseconds and a numeric offset:
    // 2026-12-02T15:48:39.777375+00:00
    let b = s.as_bytes();
    assert_eq!(b.len(), 32, "{s:?}");
    assert_eq!((b[10], b[19]), (b'T', b'.'), "{s:?}");
    assert!(b[26] == b'+' || b[26] == b'-', "{s:?}: numeric offset");
    assert!(
        b[20..26].iter().all(u8::is_ascii_digit),
        "{s:?}: microseconds"
    );
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .naive_utc()
}

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers")
}

/// Run a peer script with a hard timeout; clear message when it is missing.
fn peer(script: &str, args: &[&str]) -> Output {
    let path = peers().join(script);
    assert!(
        path.exists(),
        "{} missing: the peers folder is ../shared/peers",
        path.display()
    );
    let mut c = if script.ends_with(".py") {
        let mut c = Command::new("python3");
        c.arg(&path);
        c
    } else {
        Command::new(&path)
    };
    c.args(args);
    run(c, None, LIMIT)
}

// ------------------------------------------------------------ fake servers

type Answer = Box<dyn FnMut(usize, &[u8]) -> Vec<Vec<u8>> + Send>;

/// A UDP server on 127.0.0.1:0 answering each datagram with what `answer`
/// returns (given the request's index and bytes). Bounded: stops on drop or
/// after 60 s.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(answer: impl FnMut(usize, &[u8]) -> Vec<Vec<u8>> + Send + 'static) -> Fake {
        let mut answer: Answer = Box::new(answer);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind fake");
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let i = {
                    let mut s = seen2.lock().unwrap();
                    s.push(buf[..n].to_vec());
                    s.len() - 1
                };
                for r in answer(i, &buf[..n]) {
                    let _ = sock.send_to(&r, peer);
                }
            }
        });
        Fake {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------- 1. netsh sntp vs own responder

fn own_responder_json(ip: &str) {
    let srv = start_server(ip);
    let addr = srv.ntp_addr.expect("SNTP responder on");
    let dir = DataDir::new();
    let t0 = Instant::now();
    let o = sntp(dir.path(), &[&addr.to_string(), "--json"]);
    let wall = t0.elapsed();
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    eprintln!(
        "info: 4-sample query to {addr}: {wall:?} wall (process), elapsed {} s in netsh",
        v["time_ms"]
    );
    assert_eq!(v["address"], addr.to_string());
    assert!(f(&v["offset_s"]).abs() < 0.001, "offset {}", v["offset_s"]);
    assert!(
        f(&v["delay_s"]) >= 0.0 && f(&v["delay_s"]) < 0.05,
        "delay {}",
        v["delay_s"]
    );
    assert_eq!(v["stratum"], 10);
    assert_eq!(v["reference"], "LOCL");
    assert_eq!(v["leap"], 0);
    assert_eq!(v["leap_text"], "none");
    assert_eq!(v["version"], 4);
    assert_eq!(v["samples_sent"], 4);
    assert_eq!(v["samples_answered"], 4);
    assert_eq!(v["bad_replies"], 0);
    assert_eq!(v["stale_replies"], 0);
    assert_eq!(v["rate_limited"], false);
    assert_eq!(v["interrupted"], false);
    let p = v["precision_log2_s"].as_i64().expect("precision");
    assert!((-32..=-6).contains(&p), "precision {p}");
    let samples = v["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 4);
    let delays: Vec<f64> = samples.iter().map(|s| f(&s["delay_s"])).collect();
    let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
    let best = u(&v["best_sample"]) as usize - 1;
    assert!(best < 4, "best {best} (0-based here)");
    assert_eq!(
        delays[best], min,
        "best #{best} is not the lowest delay: {delays:?}"
    );
    assert_eq!(
        f(&v["delay_s"]),
        min,
        "top-level delay is the best sample's"
    );
    assert_eq!(
        f(&v["offset_s"]),
        f(&samples[best]["offset_s"]),
        "top-level offset is the best sample's"
    );
    let net = assert_rfc3339(v["network_time"].as_str().unwrap());
    let local = assert_rfc3339(v["local_time"].as_str().unwrap());
    let now = chrono::Utc::now().naive_utc();
    assert!(
        (now - local).num_milliseconds().abs() < 5_000,
        "local_time {local} vs now {now}"
    );
    assert!(
        (net - local).num_milliseconds().abs() < 2,
        "network {net} vs local {local}"
    );
}

#[test]
fn own_responder_ipv4_json() {
    own_responder_json("127.0.0.1");
}

#[test]
fn own_responder_ipv6_json() {
    own_responder_json("::1");
}

#[test]
fn own_responder_text_and_verbose() {
    let srv = start_server("127.0.0.1");
    let addr = srv.ntp_addr.unwrap().to_string();
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&addr]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    for want in [
        "NTP Server",
        "Network Time",
        "Local Time",
        "Time Offset",
        "Round Trip",
        "Stratum",
        "Reference: LOCL",
        "Leap: none",
        "Precision: 2^",
        "4 sent, 4 answered",
    ] {
        assert!(o.stdout.contains(want), "no {want:?}:\n{}", show(&o));
    }
    assert!(o.stdout.contains(&addr), "{}", show(&o));
    assert!(
        !o.stdout.contains("  #0 "),
        "samples listed without -v:\n{}",
        show(&o)
    );
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("Stratum") && l.contains(": 10 ")),
        "{}",
        show(&o)
    );

    let o = sntp(dir.path(), &[&addr, "-v"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    for i in 1..=4 {
        let line = o
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("#{i} ")));
        let line = line.unwrap_or_else(|| panic!("no #{i}:\n{}", show(&o)));
        assert!(line.contains("offset") && line.contains("delay"), "{line}");
    }
    assert!(!o.stdout.contains("#5"), "{}", show(&o));
}

#[test]
fn own_responder_sample_counts() {
    let srv = start_server("127.0.0.1");
    let addr = srv.ntp_addr.unwrap().to_string();
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&addr, "-c", "1", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!(
        (
            u(&v["samples_sent"]),
            u(&v["samples_answered"]),
            u(&v["best_sample"])
        ),
        (1, 1, 1)
    );
    assert_eq!(v["samples"].as_array().unwrap().len(), 1);

    let o = sntp(dir.path(), &[&addr, "-c", "10", "-i", "0", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!((u(&v["samples_sent"]), u(&v["samples_answered"])), (10, 10));
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 10);
    assert!(samples.iter().all(|s| s["delay_s"].is_number()), "{v}");
    // The responder saw exactly 11 requests (1 + 10) and answered them all.
    assert!(wait_for(Duration::from_secs(2), || srv
        .handle
        .stats
        .snapshot()
        .ntp_replies
        == 11));
    let st = srv.stop();
    assert_eq!(
        (st.ntp_requests, st.ntp_replies, st.ntp_ignored, st.ntp_kod),
        (11, 11, 0, 0)
    );
}

#[test]
fn help_says_it_never_sets_the_clock() {
    let dir = DataDir::new();
    for args in [&["help", "sntp"][..], &["sntp", "--help"][..]] {
        let o = dir.run(args);
        assert_eq!(o.code, Some(0), "{args:?}: {}", show(&o));
        assert!(
            o.stdout.contains("never sets the system clock"),
            "{args:?}: {}",
            show(&o)
        );
        assert!(
            o.stdout.contains("--samples") && o.stdout.contains("--timeout"),
            "{}",
            show(&o)
        );
    }
}

// --------------------------------------- 2. standard clients vs responder

#[test]
fn ntplib_accepts_the_responder() {
    let srv = start_server("127.0.0.1");
    let port = srv.ntp_addr.unwrap().port().to_string();
    for version in ["4", "3"] {
        let o = peer(
            "ntp_probe.py",
            &[
                "127.0.0.1",
                &port,
                "--count",
                "3",
                "--interval",
                "0",
                "--version",
                version,
            ],
        );
        assert_eq!(
            o.code,
            Some(0),
            "ntp_probe (run ./scripts/setup if ntplib is missing): {}",
            show(&o)
        );
        let v = json(&o);
        let q = v["queries"].as_array().expect("queries");
        assert_eq!(q.len(), 3, "{v}");
        for r in q {
            assert_eq!(r["orig_time_ok"], true, "{r}");
            assert_eq!(r["stratum"], 10, "{r}");
            assert_eq!(r["mode"], 4, "{r}");
            assert_eq!(r["leap"], 0, "{r}");
            assert_eq!(
                r["version"].to_string(),
                version,
                "reply version follows the request: {r}"
            );
            assert!(f(&r["offset"]).abs() < 0.01, "{r}");
        }
    }
}

#[test]
fn ntpdig_accepts_the_responder() {
    let dir = DataDir::new();
    let srv = common::ServerProc::spawn(dir.path(), "", &[]);
    let line = srv.expect_line("[SNTP] Answering on 127.0.0.1:", Duration::from_secs(10));
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_ne!(port, 123);
    let o = peer("ntpdig-port.sh", &["127.0.0.1", &port.to_string(), "-j"]);
    assert_eq!(
        o.code,
        Some(0),
        "ntpdig (run ./scripts/setup if missing): {}",
        show(&o)
    );
    let v: Value = serde_json::from_str(o.stdout.trim())
        .unwrap_or_else(|e| panic!("ntpdig -j output is not JSON ({e}): {}", show(&o)));
    assert_eq!(v["stratum"], 10, "{v}");
    assert!(f(&v["offset"]).abs() < 0.01, "{v}");
    // netsh's own client agrees with the spawned server too.
    let o = sntp(dir.path(), &[&format!("127.0.0.1:{port}"), "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(json(&o)["reference"], "LOCL");
}

// -------------------------------------------------------- 3. real chronyd

/// Stops the private chronyd (by its recorded PID, via the script) on drop,
/// panic or not. Its state lives in a private folder so other users of the
/// peer scripts on this machine are not disturbed and do not disturb us.
struct Chrony {
    state: tempfile::TempDir,
}

impl Chrony {
    fn script(&self, name: &str, args: &[&str]) -> Output {
        let mut c = Command::new(peers().join(name));
        c.args(args).env("PEERS_STATE", self.state.path());
        run(c, None, LIMIT)
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        // Never a panic out of here: this also runs while a failed test
        // unwinds, and a panic then would abort the whole test binary.
        let down = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.script("chrony-down.sh", &[])
        }));
        match down {
            Ok(o) if o.code == Some(0) => {}
            Ok(o) => eprintln!("chrony-down.sh failed: {}", show(&o)),
            Err(_) => eprintln!("chrony-down.sh could not be run"),
        }
    }
}

fn chronyd_installed() -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("command -v chronyd")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn against_real_chronyd() {
    if !chronyd_installed() {
        if std::env::var("NETSH_SKIP_CHRONY").as_deref() == Ok("1") {
            eprintln!("chronyd not installed; skipped (NETSH_SKIP_CHRONY=1)");
            return;
        }
        panic!(
            "chronyd is not installed: run ./scripts/setup (or set NETSH_SKIP_CHRONY=1 to skip this test)"
        );
    }
    let port = closed_udp_port().to_string();
    let chrony = Chrony {
        state: tempfile::tempdir().expect("temp dir for chronyd"),
    };
    let up = chrony.script("chrony-up.sh", &[&port]);
    assert_eq!(up.code, Some(0), "chrony-up.sh {port}: {}", show(&up));
    let target = format!("127.0.0.1:{port}");
    let dir = DataDir::new();

    // Wait (bounded) until it answers as a synchronised server.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let o = sntp(
            dir.path(),
            &[&target, "-c", "1", "--timeout", "300ms", "--json"],
        );
        if o.code == Some(0) && json(&o)["stratum"] == 10 {
            break;
        }
        assert!(
            Instant::now() < end,
            "chronyd on {target} did not answer in time: {}",
            show(&o)
        );
    }

    let o = sntp(dir.path(), &[&target, "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["stratum"], 10, "{v}");
    assert_eq!(v["reference"], "127.127.1.1", "{v}");
    assert_eq!(v["leap_text"], "none", "{v}");
    assert_eq!(
        (u(&v["samples_sent"]), u(&v["samples_answered"])),
        (4, 4),
        "{v}"
    );
    let ours = f(&v["offset_s"]);
    assert!(ours.abs() < 0.001, "offset {ours}");

    let p = peer(
        "ntp_probe.py",
        &["127.0.0.1", &port, "--count", "5", "--interval", "0"],
    );
    assert_eq!(p.code, Some(0), "{}", show(&p));
    let pv = json(&p);
    let q = pv["queries"].as_array().unwrap();
    // ntplib's sample with the lowest delay, as netsh picks its own.
    let best = q
        .iter()
        .min_by(|a, b| f(&a["delay"]).total_cmp(&f(&b["delay"])))
        .expect("ntp_probe samples");
    assert_eq!(best["stratum"], v["stratum"], "{pv}");
    assert_eq!(best["ref_id"], "127.127.1.1", "{pv}");
    let theirs = f(&best["offset"]);
    assert!(
        (ours - theirs).abs() < 0.001,
        "netsh offset {ours} vs ntplib {theirs}"
    );
    drop(chrony);
}

// ------------------------------------------------ 4. responder, exact bytes

fn responder() -> (common::TestServer, SocketAddr) {
    let srv = start_server("127.0.0.1");
    let addr = srv.ntp_addr.expect("SNTP on");
    (srv, addr)
}

/// A server whose SNTP responder answers `rate` requests a second per
/// source (burst the same), or any number with `None`.
fn limited_responder(rate: Option<f64>) -> common::TestServer {
    start_server_with(
        "127.0.0.1",
        Opts {
            ntp: Some(NtpConfig {
                port: 0,
                stratum: 10,
                rate_limit: rate.map(|r| netsh::server::limit::Rate {
                    per_sec: r,
                    burst: r,
                }),
                v6_prefix: 64,
            }),
            ..Default::default()
        },
    )
}

/// Check a normal reply to `req` from a stratum-10 LOCL responder.
fn assert_reply(r: &[u8], req: &[u8], vn: u8) {
    assert_eq!(r.len(), 48, "{r:?}");
    assert_eq!(r[0], (vn << 3) | 4, "LI 0, VN {vn}, mode 4: {:#04x}", r[0]);
    assert_eq!(r[1], 10, "stratum");
    assert_eq!(&r[12..16], b"LOCL");
    assert_eq!(&r[24..32], &req[40..48], "origin = our transmit");
    let (rx, tx, now) = (be64(r, 32), be64(r, 40), now_ntp());
    assert!(
        ntp_diff(tx, rx) >= 0.0,
        "receive {rx:#x} after transmit {tx:#x}"
    );
    assert!(
        ntp_diff(now, rx).abs() < 1.0 && ntp_diff(now, tx).abs() < 1.0,
        "rx {rx:#x} tx {tx:#x} now {now:#x}"
    );
    let ref_ts = be64(r, 16);
    assert!(
        ref_ts != 0 && ntp_diff(tx, ref_ts) >= 0.0,
        "reference {ref_ts:#x} not before transmit {tx:#x}"
    );
    assert!((r[3] as i8) < 0, "precision {}", r[3] as i8);
}

#[test]
fn responder_v4_and_v3_exact() {
    let (_srv, addr) = responder();
    let c = udp_client("127.0.0.1", addr);
    let req = request(4, 3, 0xDEAD_BEEF_0123_4567);
    c.send(&req).unwrap();
    let r = recv_within(&c, Duration::from_secs(2)).expect("reply to v4");
    assert_reply(&r, &req, 4);
    assert_eq!(r[2], 6, "poll echoed");

    let req3 = request(3, 3, now_ntp());
    c.send(&req3).unwrap();
    let r = recv_within(&c, Duration::from_secs(2)).expect("reply to v3");
    assert_reply(&r, &req3, 3);

    // Version 1 and 2 requests are answered in kind too.
    for vn in [1, 2] {
        let q = request(vn, 3, now_ntp() + u64::from(vn));
        c.send(&q).unwrap();
        assert_reply(
            &recv_within(&c, Duration::from_secs(2)).expect("reply"),
            &q,
            vn,
        );
    }
}

#[test]
fn responder_ignores_what_is_not_a_request() {
    let (srv, addr) = responder();
    let c = udp_client("127.0.0.1", addr);
    let tx = 0x0102_0304_0506_0708u64;
    // 47 bytes: a truncated request.
    c.send(&request(4, 3, tx)[..47]).unwrap();
    assert_eq!(
        recv_within(&c, Duration::from_millis(200)),
        None,
        "47-byte request answered"
    );
    // The responder is still alive.
    let ok = request(4, 3, tx + 1);
    c.send(&ok).unwrap();
    assert_reply(
        &recv_within(&c, Duration::from_secs(2)).expect("alive"),
        &ok,
        4,
    );

    let mut garbage = vec![0u8; 1000];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for b in &mut garbage {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    garbage[0] |= 7; // mode 7: not a client request
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("mode 4", request(4, 4, tx + 2).to_vec()),
        ("mode 1", request(4, 1, tx + 3).to_vec()),
        ("version 0", request(0, 3, tx + 4).to_vec()),
        ("version 7", request(7, 3, tx + 5).to_vec()),
        ("garbage", garbage),
        ("empty", Vec::new()),
    ];
    for (what, d) in &bad {
        c.send(d).unwrap();
        assert_eq!(
            recv_within(&c, Duration::from_millis(200)),
            None,
            "{what} answered"
        );
    }
    // Replies come in order: the first datagram now must answer this request.
    let last = request(4, 3, tx + 6);
    c.send(&last).unwrap();
    assert_reply(
        &recv_within(&c, Duration::from_secs(2)).expect("reply"),
        &last,
        4,
    );
    assert_eq!(
        recv_within(&c, Duration::from_millis(200)),
        None,
        "an extra datagram"
    );
    assert!(wait_for(Duration::from_secs(2), || srv
        .handle
        .stats
        .snapshot()
        .ntp_requests
        == 9));
    let st = srv.stop();
    assert_eq!((st.ntp_replies, st.ntp_ignored), (2, 7), "{st:?}");
}

#[test]
fn responder_answers_extension_data_with_48_bytes() {
    let (_srv, addr) = responder();
    let c = udp_client("127.0.0.1", addr);
    let mut req = request(4, 3, now_ntp()).to_vec();
    req.extend((0..52u8).map(|i| i.wrapping_mul(7)));
    assert_eq!(req.len(), 100);
    c.send(&req).unwrap();
    let r = recv_within(&c, Duration::from_secs(2)).expect("reply");
    assert_eq!(r.len(), 48, "never more than a header back");
    assert_reply(&r, &req, 4);
}

#[test]
fn responder_answers_1000_requests() {
    // 1,000 requests from one source as fast as it answers: no rate limit.
    let srv = limited_responder(None);
    let addr = srv.ntp_addr.expect("SNTP on");
    let c = udp_client("127.0.0.1", addr);
    const N: u64 = 1000;
    const WINDOW: u64 = 32; // in flight at once: no socket buffer overflows
    let base = now_ntp() & !0xFFFF;
    let mut answered = vec![false; N as usize];
    let (mut sent, mut got) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while got < N {
        assert!(Instant::now() < end, "only {got} of {N} replies in time");
        while sent < N && sent - got < WINDOW {
            c.send(&request(4, 3, base + sent)).unwrap();
            sent += 1;
        }
        let n =
            retry_eintr(|| c.recv(&mut buf)).unwrap_or_else(|e| panic!("after {got} replies: {e}"));
        assert_eq!(n, 48);
        assert_eq!((buf[0], buf[1]), (0x24, 10));
        let i = be64(&buf, 24).wrapping_sub(base);
        assert!(i < sent, "reply to a request never sent: origin {i}");
        assert!(!answered[i as usize], "request {i} answered twice");
        answered[i as usize] = true;
        got += 1;
    }
    assert!(answered.iter().all(|a| *a));
    assert_eq!(
        recv_within(&c, Duration::from_millis(100)),
        None,
        "an extra reply"
    );
    let st = srv.stop();
    assert_eq!((st.ntp_requests, st.ntp_replies), (N, N));
}

#[test]
fn responder_rate_limit_kisses_once() {
    let srv = limited_responder(Some(5.0));
    let addr = srv.ntp_addr.unwrap();
    let c = udp_client("127.0.0.1", addr);
    let base = now_ntp() & !0xFF;
    let t0 = Instant::now();
    for i in 0..20 {
        c.send(&request(4, 3, base + i)).unwrap();
    }
    let (mut normal, mut kisses) = (0u32, 0u32);
    let mut last = t0;
    while let Some(r) = recv_within(&c, Duration::from_millis(300)) {
        last = Instant::now();
        assert_eq!(r.len(), 48);
        assert_eq!(r[0] & 0x3f, 0x24, "version 4, mode 4: {:#04x}", r[0]);
        assert!(
            be64(&r, 24).wrapping_sub(base) < 20,
            "origin is one of ours"
        );
        match r[1] {
            10 => {
                normal += 1;
                assert_eq!(&r[12..16], b"LOCL");
            }
            0 => {
                kisses += 1;
                assert_eq!(&r[12..16], b"RATE");
            }
            s => panic!("stratum {s}"),
        }
    }
    let span = (last - t0).as_secs_f64();
    // 5 tokens at start, refilled at 5/s while the burst was being handled.
    let most = 5 + (span * 5.0).ceil() as u32 + 1;
    assert!(
        (5..=most).contains(&normal),
        "{normal} normal replies in {span:.3} s (at most {most})"
    );
    assert!(
        kisses >= 1 && f64::from(kisses) <= 1.0 + span.floor(),
        "{kisses} RATE kisses in {span:.3} s"
    );
    eprintln!("info: rate limit 5/s: {normal} replies, {kisses} RATE in {span:.3} s");

    // Another source address is not limited.
    let other = udp_client("127.0.0.2", addr);
    for i in 0..3 {
        let q = request(4, 3, base + 100 + i);
        other.send(&q).unwrap();
        let r = recv_within(&other, Duration::from_secs(2)).expect("127.0.0.2 answered");
        assert_reply(&r, &q, 4);
    }
    let st = srv.stop();
    assert_eq!(st.ntp_kod, u64::from(kisses));
}

// ------------------------------------------- 5. client vs fake servers

#[test]
fn wrong_origin_is_ignored() {
    let fake = Fake::start(|_, req| {
        let mut r = good(req);
        let o = be64(&r, 24).wrapping_add(1);
        r[24..32].copy_from_slice(&o.to_be_bytes());
        vec![r]
    });
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "300ms", "-c", "2"],
    );
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert!(o.stderr.contains("no valid reply"), "{}", show(&o));
    assert!(o.stderr.contains("2 replies did not match"), "{}", show(&o));
    assert_eq!(fake.count(), 2);
}

#[test]
fn wrong_origin_then_right_one_succeeds() {
    let fake = Fake::start(|_, req| {
        let right = good(req);
        let mut wrong = right.clone();
        wrong[24..32].copy_from_slice(&be64(&right, 24).wrapping_sub(1).to_be_bytes());
        wrong[1] = 3; // tell the replies apart: a stale one would show stratum 3
        vec![wrong, right]
    });
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "2s", "-c", "2", "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["stratum"], 2, "the stale reply was used: {v}");
    assert_eq!(v["reference"], "192.0.2.1");
    assert_eq!((u(&v["samples_sent"]), u(&v["samples_answered"])), (2, 2));
}

#[test]
fn stale_replies_are_counted_even_when_a_good_one_follows() {
    let fake = Fake::start(|_, req| {
        let right = good(req);
        let mut wrong = right.clone();
        wrong[24..32].copy_from_slice(&be64(&right, 24).wrapping_sub(1).to_be_bytes());
        vec![wrong, vec![0u8; 20], right]
    });
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "2s", "-c", "2", "--json", "-v"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["stale_replies"], 2, "{v}");
    assert_eq!(v["bad_replies"], 2, "{v}");
}

#[test]
fn silent_server_times_out() {
    let fake = Fake::start(|_, _| Vec::new());
    let dir = DataDir::new();
    let t0 = Instant::now();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "200ms", "-c", "3"],
    );
    let took = t0.elapsed();
    let err = assert_fails(&o, 1, "timed-out");
    assert!(err.contains("3 requests"), "{}", show(&o));
    assert!(err.contains("no valid reply"), "{}", show(&o));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        wait_for(Duration::from_secs(2), || fake.count() == 3),
        "{} requests",
        fake.count()
    );
    for r in fake.seen.lock().unwrap().iter() {
        assert_eq!(r.len(), 48);
        assert_eq!(r[0] & 0x3f, 0x23, "version 4, mode 3: {:#04x}", r[0]);
        assert_ne!(be64(r, 40), 0, "transmit timestamp set");
    }
}

#[test]
fn truncated_replies_are_a_protocol_error() {
    let fake = Fake::start(|_, req| vec![good(req)[..20].to_vec()]);
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "300ms", "-c", "2"],
    );
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("truncated"), "{}", show(&o));
    assert!(err.contains("20 bytes"), "{}", show(&o));
}

#[test]
fn unsynchronised_server_is_not_a_kiss() {
    // What chrony sends before it has a source: LI 3, stratum 0, refid 0.
    let fake = Fake::start(|_, req| vec![reply(req, 3, 4, 4, 0, [0; 4])]);
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "2"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("not synchronised"), "{}", show(&o));
    assert!(err.contains("stratum 0"), "{}", show(&o));
    assert!(!err.to_lowercase().contains("kiss"), "{}", show(&o));
    assert!(
        !dir.path().join("sntp-kod.list").exists(),
        "an unsynchronised server is not remembered"
    );
}

#[test]
fn kod_deny_is_remembered() {
    // DENY to the first request only; good replies afterwards.
    let fake = Fake::start(|i, req| {
        vec![if i == 0 {
            kiss(req, 0, b"DENY")
        } else {
            good(req)
        }]
    });
    let dir = DataDir::new();
    let list = dir.path().join("sntp-kod.list");
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "3"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("DENY"), "{}", show(&o));
    assert_eq!(fake.count(), 1, "queries stopped after DENY");
    let text = std::fs::read_to_string(&list).expect("sntp-kod.list written");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{} DENY", fake.target()))),
        "{text:?}"
    );

    // A second run refuses without sending.
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("DENY"), "{}", show(&o));
    assert!(err.contains("sntp-kod.list"), "{}", show(&o));
    assert_eq!(fake.count(), 1, "second run sent a request");

    // Forgetting it allows queries again.
    std::fs::remove_file(&list).unwrap();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "2s", "-c", "1", "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    // Loopback delivers in order: had the second run sent anything, the fake
    // would have seen it before this run's request.
    assert_eq!(fake.count(), 2, "requests seen");
}

#[test]
fn kod_rstr_is_remembered_too() {
    let fake = Fake::start(|_, req| vec![kiss(req, 0, b"RSTR")]);
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "2"]);
    assert!(
        assert_fails(&o, 1, "protocol").contains("RSTR"),
        "{}",
        show(&o)
    );
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s"]);
    assert!(
        assert_fails(&o, 1, "protocol").contains("sntp-kod.list"),
        "{}",
        show(&o)
    );
    assert_eq!(fake.count(), 1);
}

#[test]
fn kod_deny_with_alarm_leap_is_a_kiss() {
    let fake = Fake::start(|_, req| vec![kiss(req, 3, b"DENY")]);
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "2"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("DENY"), "{}", show(&o));
    assert!(!err.contains("not synchronised"), "{}", show(&o));
    assert!(dir.path().join("sntp-kod.list").exists(), "DENY remembered");
}

#[test]
fn kod_rate_then_good_replies() {
    let fake = Fake::start(|i, req| {
        vec![if i == 0 {
            kiss(req, 0, b"RATE")
        } else {
            good(req)
        }]
    });
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&fake.target(), "--timeout", "2s", "-c", "2", "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["rate_limited"], true, "{v}");
    assert_eq!(
        (
            u(&v["samples_sent"]),
            u(&v["samples_answered"]),
            u(&v["best_sample"])
        ),
        (2, 1, 2),
        "{v}"
    );
    assert!(v["samples"][0].is_null(), "{v}");
    assert_eq!(v["stratum"], 2);
    assert!(
        !dir.path().join("sntp-kod.list").exists(),
        "RATE is not remembered"
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
}

#[test]
fn own_rate_limited_responder_slows_the_client_down() {
    let srv = limited_responder(Some(1.0));
    let addr = srv.ntp_addr.unwrap().to_string();
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&addr, "-c", "3", "--timeout", "2s", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["rate_limited"], true, "{v}");
    assert!(u(&v["samples_answered"]) >= 2, "{v}");
}

#[test]
fn only_rate_kisses_is_not_a_timeout() {
    let fake = Fake::start(|_, req| vec![kiss(req, 0, b"RATE")]);
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "1"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("RATE"), "{}", show(&o));
}

#[test]
fn unknown_kiss_code_is_a_bad_reply() {
    let fake = Fake::start(|_, req| vec![kiss(req, 0, b"XYZW")]);
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "2"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("kiss-o'-death XYZW"), "{}", show(&o));
    assert!(err.contains("2 bad packets"), "{}", show(&o));
    assert!(!dir.path().join("sntp-kod.list").exists());
    assert_eq!(fake.count(), 2);
}

#[test]
fn a_kiss_code_with_terminal_escapes_is_shown_escaped() {
    // The kiss code is four bytes from the network: ESC [ 2 J would clear
    // the user's screen if printed raw.
    let fake = Fake::start(|_, req| vec![kiss(req, 0, b"\x1b[2J")]);
    let dir = DataDir::new();
    let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "1"]);
    let err = assert_fails(&o, 1, "protocol");
    assert!(err.contains("kiss-o'-death \\x1b[2J"), "{}", show(&o));
    assert!(
        !o.stdout.contains('\x1b') && !o.stderr.contains('\x1b'),
        "a raw ESC reached the terminal: {}",
        show(&o)
    );
}

/// A good reply with explicit receive and transmit timestamps.
fn reply_at(req: &[u8], rx: u64, tx: u64) -> Vec<u8> {
    let mut r = good(req);
    r[16..24].copy_from_slice(&rx.wrapping_sub(10 << 32).to_be_bytes());
    r[32..40].copy_from_slice(&rx.to_be_bytes());
    r[40..48].copy_from_slice(&tx.to_be_bytes());
    r
}

#[test]
fn garbage_timestamps_are_bad_replies_not_an_offset() {
    // A zero receive time, or a transmit time before the receive time, would
    // give a huge bogus offset (the audit saw "+290358930 s" reported as a
    // success). Then a good reply is still taken.
    let fake = Fake::start(|i, req| {
        let now = now_ntp();
        vec![match i {
            0 => reply_at(req, 0, 1),
            1 => reply_at(req, now, now - (1 << 32)),
            _ => good(req),
        }]
    });
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[
            &fake.target(),
            "--timeout",
            "300ms",
            "-c",
            "3",
            "-i",
            "0",
            "--json",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert!(
        f(&j["offset_s"]).abs() < 1.0,
        "offset from a garbage reply: {j}"
    );
    assert_eq!(u(&j["bad_replies"]), 2, "{j}");
    let o = sntp(
        dir.path(),
        &[
            &Fake::start(|_, req| vec![reply_at(req, 0, 1)]).target(),
            "--timeout",
            "300ms",
            "-c",
            "1",
        ],
    );
    let err = assert_fails(&o, 1, "protocol");
    assert!(
        err.contains("receive time is zero or after its transmit time"),
        "{}",
        show(&o)
    );
}

#[test]
fn offset_sign_follows_the_server_clock() {
    // Server clock ahead by 2.5 s, then behind by 3.25 s.
    for shift in [2.5f64, -3.25] {
        let fake = Fake::start(move |_, req| {
            let t = SystemTime::now();
            let t = if shift >= 0.0 {
                t + Duration::from_secs_f64(shift)
            } else {
                t - Duration::from_secs_f64(-shift)
            };
            vec![reply_at(req, ntp_of(t), ntp_of(t))]
        });
        let dir = DataDir::new();
        let o = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "--json"]);
        assert_eq!(o.code, Some(0), "{}", show(&o));
        let v = json(&o);
        let off = f(&v["offset_s"]);
        assert!((off - shift).abs() < 0.05, "shift {shift}: offset {off}");
        let net = assert_rfc3339(v["network_time"].as_str().unwrap());
        let local = assert_rfc3339(v["local_time"].as_str().unwrap());
        let diff = (net - local).num_microseconds().unwrap() as f64 / 1e6;
        assert!(
            (diff - off).abs() < 0.000_002,
            "network - local = {diff}, offset {off}"
        );
        let text = sntp(dir.path(), &[&fake.target(), "--timeout", "2s", "-c", "1"]);
        assert_eq!(text.code, Some(0), "{}", show(&text));
        let shown = text
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Time Offset"))
            .and_then(|r| r.trim_start_matches([' ', ':']).strip_suffix(" s"))
            .unwrap_or_else(|| panic!("no Time Offset line: {}", show(&text)));
        assert!(
            shown.starts_with(if shift > 0.0 { '+' } else { '-' }),
            "{shown:?}"
        );
        let shown: f64 = shown.parse().unwrap_or_else(|e| panic!("{shown:?}: {e}"));
        assert!((shown - shift).abs() < 0.05, "shown {shown}, shift {shift}");
    }
}

#[test]
fn server_hold_time_is_not_round_trip_delay() {
    // Stamped on arrival, held 40 ms, stamped on departure: not delay.
    let held = Fake::start(|_, req| {
        let rx = now_ntp();
        std::thread::sleep(Duration::from_millis(40));
        vec![reply_at(req, rx, now_ntp())]
    });
    // Held 40 ms before both stamps: that is delay (as if on the wire).
    let slow = Fake::start(|_, req| {
        std::thread::sleep(Duration::from_millis(40));
        let t = now_ntp();
        vec![reply_at(req, t, t)]
    });
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&held.target(), "--timeout", "2s", "-c", "2", "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert!(
        f(&v["delay_s"]) < 0.02,
        "server hold time counted as delay: {v}"
    );
    assert!(f(&v["offset_s"]).abs() < 0.01, "{v}");
    let o = sntp(
        dir.path(),
        &[&slow.target(), "--timeout", "2s", "-c", "2", "--json"],
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = json(&o);
    assert!(f(&v["delay_s"]) >= 0.04, "delay {v}");
    // All the delay was before the server stamped: it looks 20 ms ahead.
    assert!(
        (f(&v["offset_s"]) - f(&v["delay_s"]) / 2.0).abs() < 0.01,
        "{v}"
    );
}

#[test]
fn bad_replies_are_named() {
    type Mangle = fn(&mut Vec<u8>);
    let cases: [(&str, Mangle, &str); 5] = [
        ("mode 3", |r| r[0] = (r[0] & !7) | 3, "mode 3"),
        ("version 0", |r| r[0] &= !0x38, "version 0"),
        ("zero transmit", |r| r[40..48].fill(0), "zero transmit"),
        ("stratum 16", |r| r[1] = 16, "stratum 16"),
        (
            "version 5",
            |r| r[0] = (r[0] & !0x38) | (5 << 3),
            "version 5",
        ),
    ];
    let dir = DataDir::new();
    for (what, mangle, want) in cases {
        let fake = Fake::start(move |_, req| {
            let mut r = good(req);
            mangle(&mut r);
            vec![r]
        });
        let o = sntp(
            dir.path(),
            &[&fake.target(), "--timeout", "200ms", "-c", "2"],
        );
        let err = assert_fails(&o, 1, "protocol");
        assert!(
            err.contains("no valid reply") && err.contains("2 bad packets"),
            "{what}: {}",
            show(&o)
        );
        assert!(err.contains(want), "{what}: want {want:?}: {}", show(&o));
        assert_eq!(fake.count(), 2, "{what}");
    }
}

#[test]
fn closed_port_is_refused() {
    let port = closed_udp_port();
    let dir = DataDir::new();
    let o = sntp(
        dir.path(),
        &[&format!("127.0.0.1:{port}"), "--timeout", "2s"],
    );
    let err = assert_fails(&o, 1, "connection-refused");
    assert!(err.contains(&port.to_string()), "{}", show(&o));
}

#[test]
fn dns_family_and_bad_words() {
    let dir = DataDir::new();
    let o = sntp(dir.path(), &["nosuchhost.invalid", "--timeout", "1s"]);
    assert_fails(&o, 1, "dns");
    let o = sntp(dir.path(), &["nosuchhost.invalid", "--json"]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert_eq!(json(&o)["error"]["code"], "dns");
    let o = sntp(dir.path(), &["-4", "[::1]:5123"]);
    assert_fails(&o, 1, "dns");
    let o = sntp(dir.path(), &["-6", "127.0.0.1:5123"]);
    assert_fails(&o, 1, "dns");
    for words in [
        &["host:99999"][..],
        &["127.0.0.1", "-c", "0"],
        &["127.0.0.1", "-c", "65"],
        &["127.0.0.1", "--timeout", "0"],
        &["127.0.0.1", "--timeout", "61s"],
        &["127.0.0.1", "-i", "11m"],
        &["127.0.0.1", "-4", "-6"],
        &["127.0.0.1", "--bogus"],
    ] {
        let o = sntp(dir.path(), words);
        assert_eq!(o.code, Some(2), "{words:?}: {}", show(&o));
        assert!(o.stderr.contains("error["), "{words:?}: {}", show(&o));
    }
}
