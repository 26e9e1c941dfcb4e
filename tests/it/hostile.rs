//! What an anonymous, malicious peer can do to everyone else (issue
//! "A hostile network"): reflection loops between servers, floods, the
//! chat room locked or its log erased, trickling connections. Every case
//! here failed on the code before the fix; each shows the damage stops and
//! a fresh client is still served.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use netsh::server::limit::Rate;

use crate::common::*;

/// Send one UDP datagram that claims to come from `from`, through a raw
/// socket (the header built here, as a spoofer would).
fn forge_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw socket (tests run as root)");
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, DF, TTL, UDP, checksum (kernel's)
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
    p.extend_from_slice(payload);
    s.send_to(&p, &SockAddr::from(to))
        .expect("send forged datagram");
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("{a} is not IPv4"),
    }
}

/// Datagrams echoed by both servers, once the count stops moving (or after 3 s).
fn settled_echoes(a: &TestServer, b: &TestServer) -> u64 {
    let count = || {
        a.handle.stats.datagrams.load(Ordering::Relaxed)
            + b.handle.stats.datagrams.load(Ordering::Relaxed)
    };
    let end = Instant::now() + Duration::from_secs(3);
    let mut last = count();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn a_forged_datagram_between_two_servers_dies_out() {
    // Two servers on different ports (the same port is refused by the own-
    // port rule already), no rate limit: only the loop rule may stop it.
    let opts = || Opts {
        udp_rate_limit: None,
        ..Opts::default()
    };
    let a = start_server_with("127.0.0.1", opts());
    let b = start_server_with("127.0.0.1", opts());
    // One datagram "from A's echo port" to B, and 50 more with other bytes.
    forge_udp(v4(a.addr), v4(b.addr), b"seq 0 hello from nobody");
    for i in 1..=50 {
        forge_udp(v4(a.addr), v4(b.addr), format!("seq {i} x").as_bytes());
    }
    let echoed = settled_echoes(&a, &b);
    // Each datagram: B echoes to A, A echoes to B, B sees its own echo back.
    assert!(
        echoed <= 2 * 51,
        "{echoed} echoes: the datagrams still bounce"
    );
    let stopped = settled_echoes(&a, &b);
    assert_eq!(stopped, echoed, "the exchange goes on");
    let ignored = a.handle.stats.datagrams_ignored.load(Ordering::Relaxed)
        + b.handle.stats.datagrams_ignored.load(Ordering::Relaxed);
    assert!(ignored >= 51, "{ignored} reflections ignored");
    // Both still echo a real client, and its repeated payloads too once
    // they are not back within the mirror window... a fresh payload at once.
    for s in [&a, &b] {
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        c.send_to(b"real client", s.addr).expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).expect("a real client is echoed");
        assert_eq!(&buf[..n], b"real client");
    }
}

#[test]
fn a_loop_with_a_third_party_echo_service_dies_out() {
    // socat as a plain UDP echo service on a high port: it echoes anything.
    assert!(
        on_path("socat"),
        "socat is missing: run ./scripts/setup (Debian's socat package)"
    );
    let port = closed_udp_port();
    let mut peer = KillOnDrop(
        std::process::Command::new("socat")
            .args([
                &format!("UDP4-RECVFROM:{port},bind=127.0.0.1,fork,reuseaddr"),
                "EXEC:cat",
            ])
            .spawn()
            .expect("start socat"),
    );
    // Wait until socat echoes.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let socat_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let up = wait_for(Duration::from_secs(5), || {
        let _ = probe.send_to(b"up?", socat_addr);
        probe.recv_from(&mut [0u8; 16]).is_ok()
    });
    assert!(up, "socat echo did not come up");
    let a = start_server_with(
        "127.0.0.1",
        Opts {
            udp_rate_limit: None,
            ..Opts::default()
        },
    );
    forge_udp(v4(socat_addr), v4(a.addr), b"bounce me");
    let end = Instant::now() + Duration::from_secs(3);
    let mut last = u64::MAX;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(300));
        let now = a.handle.stats.datagrams.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let echoed = a.handle.stats.datagrams.load(Ordering::Relaxed);
    assert!(echoed <= 2, "netsh echoed socat {echoed} times");
    assert!(a.handle.stats.datagrams_ignored.load(Ordering::Relaxed) >= 1);
    let _ = peer.0.kill();
    let _ = peer.0.wait();
}

#[test]
fn well_known_service_ports_get_no_echo_and_no_sntp_reply() {
    let s = start_server("127.0.0.1");
    let ntp = s.ntp_addr.expect("sntp on");
    let mut request = [0u8; 48];
    request[0] = 0x23; // v4, client
    for port in [7u16, 13, 17, 19, 1023, 11211] {
        let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        forge_udp(from, v4(s.addr), b"reflect me");
        forge_udp(from, v4(ntp), &request);
    }
    let ok = wait_for(Duration::from_secs(3), || {
        s.handle.stats.datagrams_ignored.load(Ordering::Relaxed) >= 6
            && s.handle.stats.ntp_ignored.load(Ordering::Relaxed) >= 6
    });
    let snap = s.handle.stats.snapshot();
    assert!(ok, "{snap:?}");
    assert_eq!(snap.datagrams, 0, "{snap:?}");
    assert_eq!(snap.ntp_replies, 0, "{snap:?}");
    // ntpd asks from port 123: that one is answered (no NTP server answers
    // a reply, so no loop can start). A forged one can't be read back, so
    // check the counter.
    forge_udp(
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 123),
        v4(ntp),
        &request,
    );
    assert!(wait_for(Duration::from_secs(3), || {
        s.handle.stats.ntp_replies.load(Ordering::Relaxed) == 1
    }));
}

#[test]
fn sntp_floods_are_limited_by_default_with_one_kiss_a_second() {
    let d = DataDir::new();
    let srv = ServerProc::spawn(d.path(), "", &[]);
    let line = srv.expect_line("[SNTP] Answering on 127.0.0.1:", Duration::from_secs(5));
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
    c.connect(("127.0.0.1", port)).expect("connect");
    c.set_nonblocking(true).expect("nonblocking");
    let mut request = [0u8; 48];
    request[0] = 0x23;
    let (mut replies, mut kisses) = (0u32, 0u32);
    let take = |replies: &mut u32, kisses: &mut u32| {
        let mut buf = [0u8; 64];
        while let Ok(n) = c.recv(&mut buf) {
            if n >= 48 && buf[1] == 0 && &buf[12..16] == b"RATE" {
                *kisses += 1;
            } else if n >= 48 {
                *replies += 1;
            }
        }
    };
    let start = Instant::now();
    for i in 0..20_000u32 {
        let _ = c.send(&request);
        if i % 64 == 0 {
            take(&mut replies, &mut kisses);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    take(&mut replies, &mut kisses);
    let secs = start.elapsed().as_secs_f64();
    // Burst 16, then 2 a second: 16 + 2 × elapsed, and a kiss a second.
    let most = 16.0 + 2.0 * secs + 2.0;
    assert!(
        f64::from(replies) <= most,
        "{replies} replies in {secs:.1} s"
    );
    assert!(replies >= 16, "{replies} replies: the burst was refused");
    assert!(
        kisses >= 1 && f64::from(kisses) <= secs + 2.0,
        "{kisses} kisses in {secs:.1} s"
    );
    // Another source is not punished for it.
    let other = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    other.send_to(&request, ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 64];
    let n = other.recv(&mut buf).expect("another source is answered");
    assert_eq!(n, 48);
    assert_ne!(buf[1], 0, "a kiss for a source that sent one request");
}

#[test]
fn udp_echo_floods_are_limited_by_default_and_others_still_served() {
    let s = start_server("127.0.0.1");
    let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
    c.connect(s.addr).expect("connect");
    c.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    let mut got = 0u64;
    let mut buf = [0u8; 64];
    for i in 0..30_000u32 {
        let _ = c.send(format!("flood {i}").as_bytes());
        if i % 32 == 0 {
            while c.recv(&mut buf).is_ok() {
                got += 1;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    while c.recv(&mut buf).is_ok() {
        got += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let most = 2000.0 + 1000.0 * secs + 50.0;
    assert!((got as f64) <= most, "{got} echoes in {secs:.2} s");
    let limited = s.handle.stats.datagrams_limited.load(Ordering::Relaxed);
    assert!(limited > 0, "nothing counted as limited");
    let other = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    other.send_to(b"me too", s.addr).expect("send");
    let n = other.recv(&mut buf).expect("another source is echoed");
    assert_eq!(&buf[..n], b"me too");
}

#[test]
fn no_rate_limit_turns_both_limits_off_and_the_start_says_so() {
    let d = DataDir::new();
    let limited = ServerProc::spawn(d.path(), "", &[]);
    limited.expect_line(
        "Per source: UDP echo 1000/s (burst 2000), SNTP 2/s (burst 16)",
        Duration::from_secs(5),
    );
    let d2 = DataDir::new();
    let free = ServerProc::spawn(d2.path(), "", &["--no-rate-limit"]);
    free.expect_line(
        "Per source: UDP echo no limit, SNTP no limit",
        Duration::from_secs(5),
    );
    let o = netsh_tmp(&["serve", "--ntp-rate-limit", "fast"]);
    assert_eq!(o.code, Some(2), "{}", show(&o));
    assert!(o.stderr.contains("is not a rate"), "{}", show(&o));
}

// ------------------------------------------------------------ TCP and chat

/// A TCP connection to `to` from `from` (any free port): 127.0.0.0/8 is all
/// loopback, so each 127.x address is another source.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("{from}:0").parse().expect("source address");
    s.bind(&SockAddr::from(src)).expect("bind source");
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5))
        .expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Everything the server sends until it closes (or 5 s of silence).
fn rest_of(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines from `s` until one contains `needle` (which is returned), or panic
/// after 5 s.
fn line_with(r: &mut BufReader<TcpStream>, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < end {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) => break,
            Ok(_) if l.contains(needle) => return l.trim_end().to_string(),
            Ok(_) => seen.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; saw {seen:?}");
}

/// Join the room as `nick` from `from`; the reader after the OK line.
fn member(from: &str, to: SocketAddr, nick: &str) -> (TcpStream, BufReader<TcpStream>, String) {
    let mut s = connect_from(from, to);
    s.write_all(format!("CHAT {nick}\n").as_bytes())
        .expect("join");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut ok = String::new();
    r.read_line(&mut ok).expect("first line");
    (s, r, ok.trim_end().to_string())
}

#[test]
fn trickling_connections_are_closed_and_fresh_clients_served() {
    let s = start_server_with(
        "127.0.0.1",
        Opts {
            line_timeout: Duration::from_secs(1),
            ..Opts::default()
        },
    );
    // 250 slowloris peers: a byte each every 200 ms, never a newline.
    let mut peers: Vec<TcpStream> = (0..250)
        .map(|_| {
            let c = TcpStream::connect(s.addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_millis(1)))
                .expect("timeout");
            c
        })
        .collect();
    let mut open = vec![true; peers.len()];
    let mut told = 0;
    let end = Instant::now() + Duration::from_secs(8);
    while open.iter().any(|&o| o) && Instant::now() < end {
        for (i, p) in peers.iter_mut().enumerate() {
            if !open[i] {
                continue;
            }
            if p.write_all(b"E").is_err() {
                open[i] = false;
                continue;
            }
            let mut buf = [0u8; 256];
            match p.read(&mut buf) {
                Ok(0) => open[i] = false,
                Ok(n) => {
                    if String::from_utf8_lossy(&buf[..n])
                        .contains("ERR line not finished within 1s")
                    {
                        told += 1;
                    }
                }
                Err(_) => {}
            }
        }
        // A fresh client is served while they trickle.
        assert_serves(s.addr);
        std::thread::sleep(Duration::from_millis(200));
    }
    let still = open.iter().filter(|&&o| o).count();
    assert_eq!(
        still, 0,
        "{still} trickling connections still open after 8 s"
    );
    assert!(told >= 200, "only {told} of 250 were told why");
    let snap = s.handle.stats.snapshot();
    assert!(snap.refusals["slow-line"] >= 250, "{:?}", snap.refusals);
    // A slow but whole line within the limit is answered.
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    for b in b"ECHO slow\n".chunks(3) {
        c.write_all(b).expect("write");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut r = BufReader::new(c);
    let mut l = String::new();
    r.read_line(&mut l).expect("answer");
    assert_eq!(l, "ECHO_RESPONSE:slow\n");
}

#[test]
fn silent_members_are_closed_and_ping_keeps_a_member() {
    let s = start_server_with(
        "127.0.0.1",
        Opts {
            chat_idle: Some(Duration::from_secs(1)),
            ..Opts::default()
        },
    );
    let (mut quiet, _qr, ok) = member("127.0.0.1", s.addr, "quiet");
    assert!(ok.starts_with("OK joined as quiet"), "{ok}");
    let (mut alive, mut ar, ok) = member("127.0.0.1", s.addr, "alive");
    assert!(ok.starts_with("OK joined as alive"), "{ok}");
    for _ in 0..8 {
        alive.write_all(b"/ping\n").expect("ping");
        std::thread::sleep(Duration::from_millis(300));
    }
    let said = rest_of(&mut quiet);
    assert!(
        said.contains("ERR nothing heard from you in 1s (send /ping to stay); closing"),
        "{said:?}"
    );
    // alive got its PONGs, saw quiet leave, and is still in the room.
    line_with(&mut ar, "PONG");
    line_with(&mut ar, "* quiet left (silent too long)");
    alive.write_all(b"still here\n").expect("say");
    line_with(&mut ar, "<alive> still here");
    assert!(s.handle.stats.snapshot().refusals["chat-idle"] >= 1);
}

#[test]
fn one_address_gets_a_share_of_the_room_not_all_of_it() {
    let s = start_server_with(
        "127.0.0.1",
        Opts {
            chat_limits: netsh::server::hub::ChatLimits {
                per_address: 3,
                limit_loopback: true,
                ..Default::default()
            },
            ..Opts::default()
        },
    );
    let mut held = Vec::new();
    for i in 0..3 {
        let (c, _r, ok) = member("127.0.0.2", s.addr, &format!("squat{i}"));
        assert!(ok.starts_with("OK joined"), "{ok}");
        held.push(c);
    }
    let (mut fourth, _r, err) = member("127.0.0.2", s.addr, "squat3");
    assert!(
        err.starts_with("ERR room: 3 members from 127.0.0.2 already (max 3 per address)"),
        "{err}"
    );
    assert_eq!(rest_of(&mut fourth), "", "closed after the error");
    // Another address still gets in.
    let (_c, _r, ok) = member("127.0.0.3", s.addr, "newcomer");
    assert!(ok.starts_with("OK joined as newcomer"), "{ok}");
    assert!(s.handle.stats.snapshot().refusals["room-share"] >= 1);
}

#[test]
fn a_chat_flood_is_refused_with_one_notice_and_never_reaches_the_log() {
    let d = DataDir::new();
    let logs = d.path().join("logs").join("chat");
    let s = start_server_with(
        "127.0.0.1",
        Opts {
            chat_log_dir: Some(logs.clone()),
            chat_limits: netsh::server::hub::ChatLimits {
                lines: Some(Rate {
                    per_sec: 2.0,
                    burst: 5.0,
                }),
                limit_loopback: true,
                ..Default::default()
            },
            ..Opts::default()
        },
    );
    let (mut loud, mut lr, ok) = member("127.0.0.2", s.addr, "loud");
    assert!(ok.starts_with("OK joined"), "{ok}");
    let (_c, mut other, ok) = member("127.0.0.3", s.addr, "other");
    assert!(ok.starts_with("OK joined"), "{ok}");
    let flood: String = (0..200).map(|i| format!("flood {i}\n")).collect();
    loud.write_all(flood.as_bytes()).expect("flood");
    loud.write_all(b"/quit\n").expect("quit");
    let said = {
        let mut all = String::new();
        let _ = lr.read_to_string(&mut all);
        all
    };
    let notices = said.matches("ERR slow down").count();
    assert_eq!(notices, 1, "one notice for the burst: {said}");
    assert!(said.contains("ERR slow down: at most 2 lines/s"), "{said}");
    let delivered = said.matches("<loud> flood").count();
    assert!(
        (5..=7).contains(&delivered),
        "{delivered} lines went through"
    );
    // The others saw only those, and the log holds only those.
    line_with(&mut other, "loud left");
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let log = std::fs::read_to_string(logs.join(format!("{day}.jsonl"))).expect("chat log");
    let logged = log.lines().filter(|l| l.contains("flood")).count();
    assert_eq!(logged, delivered, "{log}");
    assert!(s.handle.stats.snapshot().refusals["chat-rate"] >= 190);
}

#[test]
fn chat_log_retention_deletes_old_days_and_the_oldest_past_the_cap() {
    let d = DataDir::new();
    let dir = d.path().join("logs").join("chat");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let today = chrono::Utc::now().date_naive();
    let day = |n: u64| {
        (today - chrono::Days::new(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    let kib = |k: usize| "x".repeat(k * 1024);
    let files = [
        (format!("{}.jsonl", day(400)), kib(1)), // past 30 days: goes
        (format!("{}.jsonl.1", day(5)), kib(20)), // oldest in the window: goes for size
        (format!("{}.jsonl", day(5)), kib(20)),  // goes for size too
        (format!("{}.jsonl", day(2)), kib(20)),  // kept: 20 + 20 ≤ 48 KiB
        (format!("{}.jsonl", day(1)), kib(20)),  // kept
        ("notes.txt".to_string(), kib(1)),       // not a chat log: never touched
    ];
    for (name, body) in &files {
        std::fs::write(dir.join(name), body).expect("write");
    }
    let srv = ServerProc::spawn(
        d.path(),
        "",
        &["--chat-log-days", "30", "--chat-log-max", "48K"],
    );
    drop(srv);
    let left: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    };
    let today_file = format!("{}.jsonl", today.format("%Y-%m-%d"));
    let mut want = vec![
        format!("{}.jsonl", day(2)),
        format!("{}.jsonl", day(1)),
        today_file,
        "notes.txt".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
}

/// A chat member from `from` (an address of the calling thread's namespace).
fn member_v6(from: std::net::Ipv6Addr, to: SocketAddr, nick: &str) -> (TcpStream, String) {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
    s.bind(&SockAddr::from(SocketAddr::from((from, 0))))
        .expect("bind source");
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5))
        .expect("connect");
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("CHAT {nick}\n").as_bytes())
        .expect("join");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut ok = String::new();
    let _ = r.read_line(&mut ok);
    (s, ok.trim_end().to_string())
}

#[test]
fn off_loopback_the_defaults_hold_and_an_ipv6_slash_64_is_one_address() {
    // A real link (a veth pair between two namespaces this test makes):
    // nothing is loopback, so the default chat limits apply unasked.
    let Some(chain) = crate::netns::Chain::new(0) else {
        return;
    };
    let (a, b) = (chain.client_addr_v6(), chain.add_client_addr_v6(0x10));
    let target = chain.target_addr_v6();
    let d = DataDir::new();
    let mut c = chain.exec(
        chain.target(),
        env!("CARGO_BIN_EXE_netsh"),
        &[
            "--data-dir",
            d.path().to_str().expect("utf-8"),
            "serve",
            "--bind",
            &target.to_string(),
            "--port",
            "0",
            "--no-ntp",
        ],
    );
    scrub_env(&mut c);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut child = KillOnDrop(c.spawn().expect("spawn serve in the namespace"));
    let lines = line_channel(child.0.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    let up = recv_until(
        &lines,
        "Server running on [",
        &mut seen,
        Duration::from_secs(10),
    );
    let port: u16 = up
        .split("]:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {up:?}"));
    let server = SocketAddr::from((target, port));
    let (joined, refused, flood) = chain.in_ns(chain.client(), move || {
        // 50 members (the default share) from two addresses of one /64.
        let mut held = Vec::new();
        for i in 0..50 {
            let from = if i % 2 == 0 { a } else { b };
            let (s, ok) = member_v6(from, server, &format!("m{i}"));
            assert!(ok.starts_with("OK joined"), "member {i}: {ok}");
            held.push(s);
        }
        let (_s, refused) = member_v6(b, server, "m50");
        // The first member floods: 5 lines/s with a burst of 20 by default.
        let mut loud = held.remove(0);
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        loud.write_all(text.as_bytes()).expect("flood");
        loud.write_all(b"/quit\n").expect("quit");
        let mut said = String::new();
        let _ = BufReader::new(loud).read_to_string(&mut said);
        (held.len() + 1, refused, said)
    });
    assert_eq!(joined, 50);
    let prefix = format!("{}/64", crate::netns::Chain::slash_64(a));
    assert!(
        refused.starts_with(&format!(
            "ERR room: 50 members from {prefix} already (max 50 per address)"
        )),
        "{refused}"
    );
    assert_eq!(flood.matches("ERR slow down").count(), 1, "{flood}");
    let delivered = flood.matches("<m0> line").count();
    assert!(
        (20..=22).contains(&delivered),
        "{delivered} of 100 lines went through"
    );
    drop(child);
}
