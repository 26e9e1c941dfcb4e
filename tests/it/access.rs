//! `serve --allow/--deny`: denied sources get nothing from any service
//! (TCP closed at accept with no byte, UDP echo and SNTP unanswered), allowed
//! ones are served, the most specific rule wins, and the counters move.
//! Real sockets on loopback; a second source address is 127.0.0.2 (all of
//! 127.0.0.0/8 is loopback).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use netsh::server::access::{Access, parse_net};

use crate::common::{DataDir, Opts, TestServer, start_server_with, wait_for};

fn rules(allow: &[&str], deny: &[&str]) -> Access {
    let p = |v: &[&str]| -> Vec<_> { v.iter().map(|n| parse_net(n).expect("net")).collect() };
    Access::new(&p(allow), &p(deny))
}

fn server(ip: &str, access: Access) -> TestServer {
    start_server_with(
        ip,
        Opts {
            access,
            ..Opts::default()
        },
    )
}

/// A TCP connection from `from` to `to`: true if it was echoed, false if the
/// server closed it with no byte.
fn tcp_echoed(from: &str, to: SocketAddr) -> bool {
    let local: IpAddr = from.parse().expect("ip");
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.bind(&SocketAddr::new(local, 0).into())
        .expect("bind source");
    sock.connect_timeout(&to.into(), Duration::from_secs(3))
        .expect("connect (the kernel accepts before the server decides)");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    // The request may or may not get in before the close: either way no
    // byte comes back.
    let _ = s.write_all(b"ECHO hello\n");
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            assert!(
                String::from_utf8_lossy(&buf[..n]).contains("hello"),
                "an allowed client is echoed"
            );
            true
        }
    }
}

/// One datagram from `from` to `to`: whether anything came back in 500 ms.
fn udp_answered(from: &str, to: SocketAddr, payload: &[u8]) -> bool {
    let c = UdpSocket::bind(SocketAddr::new(from.parse().expect("ip"), 0)).expect("bind");
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    c.send_to(payload, to).expect("send");
    let mut buf = [0u8; 1024];
    c.recv_from(&mut buf).is_ok()
}

fn sntp_request() -> [u8; 48] {
    let mut r = [0u8; 48];
    r[0] = (4 << 3) | 3; // version 4, client
    r[40..48].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
    r
}

#[test]
fn denied_ipv4_sources_get_nothing_from_any_service_and_allowed_ones_are_served() {
    let s = server("127.0.0.1", rules(&["127.0.0.0/8"], &["127.0.0.1"]));
    let ntp = s.ntp_addr.expect("sntp on");
    // Denied: 127.0.0.1 (/32 beats the /8).
    assert!(!tcp_echoed("127.0.0.1", s.addr), "denied TCP gets no byte");
    assert!(
        !udp_answered("127.0.0.1", s.addr, b"ping"),
        "denied UDP echo unanswered"
    );
    assert!(
        !udp_answered("127.0.0.1", ntp, &sntp_request()),
        "denied SNTP unanswered"
    );
    // Allowed by the /8.
    assert!(tcp_echoed("127.0.0.2", s.addr));
    assert!(udp_answered("127.0.0.2", s.addr, b"ping"));
    assert!(udp_answered("127.0.0.2", ntp, &sntp_request()));
    let st = s.handle.stats.snapshot();
    assert_eq!((st.denied_tcp, st.denied_udp, st.denied_ntp), (1, 1, 1));
    assert!(
        wait_for(Duration::from_secs(2), || !s
            .lines_with("[ACCESS] Denied TCP from 127.0.0.1")
            .is_empty()),
        "one console line per denied source"
    );
    s.stop();
}

#[test]
fn with_an_allow_rule_unmatched_sources_are_denied() {
    let s = server("127.0.0.1", rules(&["127.0.0.2"], &[]));
    assert!(tcp_echoed("127.0.0.2", s.addr));
    assert!(
        !tcp_echoed("127.0.0.3", s.addr),
        "no rule matches 127.0.0.3"
    );
    assert!(!udp_answered("127.0.0.1", s.addr, b"x"));
    // Repeated denials from one source: one line a minute, all counted.
    assert!(!tcp_echoed("127.0.0.3", s.addr));
    assert_eq!(s.handle.stats.snapshot().denied_tcp, 2);
    assert!(wait_for(Duration::from_secs(2), || {
        !s.lines_with("Denied TCP from 127.0.0.3").is_empty()
    }));
    assert_eq!(s.lines_with("Denied TCP from 127.0.0.3").len(), 1);
    s.stop();
}

#[test]
fn ipv6_rules_apply_on_ipv6() {
    let denied = server("::1", rules(&[], &["::1/128"]));
    let ntp = denied.ntp_addr.expect("sntp");
    assert!(!tcp_echoed("::1", denied.addr));
    assert!(!udp_answered("::1", denied.addr, b"ping"));
    assert!(!udp_answered("::1", ntp, &sntp_request()));
    let st = denied.stop();
    assert_eq!((st.denied_tcp, st.denied_udp, st.denied_ntp), (1, 1, 1));
    // An IPv4 allow-list says nothing for ::1, which is then denied...
    let v4_only = server("::1", rules(&["127.0.0.0/8"], &[]));
    assert!(!tcp_echoed("::1", v4_only.addr));
    v4_only.stop();
    // ...and the most specific rule wins on IPv6 too.
    let allowed = server("::1", rules(&["::1"], &["::/0"]));
    assert!(tcp_echoed("::1", allowed.addr));
    assert!(udp_answered("::1", allowed.addr, b"ping"));
    allowed.stop();
}

#[test]
fn settings_file_rules_and_flags_apply_to_serve() {
    let d = DataDir::new();
    std::fs::write(
        d.conf(),
        "serve-deny = 127.0.0.1\nserve-allow = 127.0.0.0/8\n",
    )
    .expect("conf");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut child = d
        .cmd(&[
            "serve",
            "--bind",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--no-ntp",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let up = wait_for(Duration::from_secs(10), || tcp_probe_up(addr));
    let results = up.then(|| (tcp_echoed("127.0.0.1", addr), tcp_echoed("127.0.0.2", addr)));
    // The netsh client from 127.0.0.1 says what happened, in one line.
    let o = up.then(|| d.run(&["echo", &addr.to_string(), "hi"]));
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "server came up");
    assert_eq!(
        results,
        Some((false, true)),
        "settings: deny 127.0.0.1, allow the /8"
    );
    let o = o.expect("ran");
    assert_ne!(o.code, Some(0), "{o:?}");
    assert!(o.stderr.contains("may not allow your address"), "{o:?}");
}

fn tcp_probe_up(addr: SocketAddr) -> bool {
    let local: SocketAddr = "127.0.0.2:0".parse().expect("a");
    let sock = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
        Ok(s) => s,
        Err(_) => return false,
    };
    sock.bind(&local.into()).is_ok()
        && sock
            .connect_timeout(&addr.into(), Duration::from_millis(200))
            .is_ok()
}
