//! `echo --bulk` one way (`--send`, `-R`) and over UDP (`--udp`), against the
//! in-process server, through small relays in the test that corrupt a byte
//! or drop every tenth datagram, and against a fake that stops reading.
//! Loopback only; every thread and wait has a deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{
    DataDir, f, json, netsh_tmp, one_err_line, retry_eintr, run, show, start_server, u, wait_for,
};

/// Longest a relay thread lives.
const RELAY_LIFE: Duration = Duration::from_secs(30);

/// A one-connection TCP relay on 127.0.0.1 to `to`, which XORs the byte at
/// wire offset `up_flip` (client → server) or `down_flip` (server → client).
fn tcp_relay(
    l: TcpListener,
    to: SocketAddr,
    up_flip: Option<u64>,
    down_flip: Option<u64>,
) -> JoinHandle<()> {
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut conn = None;
        if !wait_for(Duration::from_secs(15), || match l.accept() {
            Ok((s, _)) => {
                conn = Some(s);
                true
            }
            Err(_) => false,
        }) {
            return;
        }
        let client = conn.expect("accepted");
        client.set_nonblocking(false).expect("blocking");
        let server = TcpStream::connect(to).expect("connect upstream");
        let pipe = |mut from: TcpStream, mut to: TcpStream, flip: Option<u64>| {
            std::thread::spawn(move || {
                from.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let start = Instant::now();
                let mut buf = vec![0u8; 64 * 1024];
                let mut at = 0u64;
                while start.elapsed() < RELAY_LIFE {
                    let n = match retry_eintr(|| from.read(&mut buf)) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(x) = flip
                        && (at..at + n as u64).contains(&x)
                    {
                        buf[(x - at) as usize] ^= 0x20;
                    }
                    at += n as u64;
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        let a = pipe(
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
            up_flip,
        );
        let b = pipe(server, client, down_flip);
        let _ = a.join();
        let _ = b.join();
    })
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

#[test]
fn send_and_recv_are_byte_exact_with_both_sides_reported() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    for dir in ["--send", "-R"] {
        let o = netsh_tmp(&[
            "echo", &target, "--bulk", dir, "-n", "20M", "-P", "2", "--json",
        ]);
        assert_eq!(o.code, Some(0), "{}", show(&o));
        let j = json(&o);
        assert_eq!(j["mode"], "bulk");
        assert_eq!(j["direction"], if dir == "-R" { "recv" } else { "send" });
        assert_eq!(j["verified"], true);
        assert_eq!(u(&j["bytes_sent"]), 20 << 20);
        assert_eq!(u(&j["bytes_received"]), 20 << 20);
        assert_eq!(u(&j["sender"]["bytes"]), 20 << 20);
        assert_eq!(u(&j["receiver"]["bytes"]), 20 << 20);
        assert_eq!(u(&j["mismatched_bytes"]), 0);
        assert!(j["first_mismatch"].is_null());
        assert!(f(&j["receiver"]["gbit_per_s"]) > 0.0);
        let iv = j["intervals"].as_array().expect("intervals");
        assert_eq!(iv.iter().map(|i| u(&i["bytes"])).sum::<u64>(), 20 << 20);
    }
    // The server sums up each sink on its console, both streams.
    assert!(wait_for(Duration::from_secs(5), || srv
        .lines_with("bytes in")
        .iter()
        .filter(|l| l.contains("every byte verified"))
        .count()
        >= 2));
    let text = netsh_tmp(&[
        "echo",
        &target,
        "--bulk",
        "--send",
        "-t",
        "1",
        "--no-verify",
    ]);
    assert_eq!(text.code, Some(0), "{}", show(&text));
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("Sending to {target} with 1 stream, bytes not checked ...")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[SUM] 0.00-") && l.ends_with("  sender")),
        "{}",
        show(&text)
    );
    assert!(
        lines.iter().any(|l| l.ends_with("  receiver")),
        "{}",
        show(&text)
    );
    assert_eq!(lines.last(), Some(&"bytes not verified (--no-verify)"));
}

#[test]
fn a_flipped_byte_is_found_at_its_offset_both_ways() {
    let srv = start_server("127.0.0.1");
    // Client → server: the wire starts with the request line.
    let line = b"SINK 0 VERIFY\n".len() as u64;
    let (l, port) = listener();
    let relay = tcp_relay(l, srv.addr, Some(line + 1000), None);
    let target = format!("127.0.0.1:{port}");
    let o = netsh_tmp(&["echo", &target, "--bulk", "--send", "-n", "300K", "--json"]);
    relay.join().expect("relay");
    assert_eq!(o.code, Some(3), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["mismatched_bytes"]), 1);
    assert_eq!(
        j["first_mismatch"],
        serde_json::json!({"stream": 1, "offset": 1000})
    );
    let e = j["failure"]["message"].as_str().expect("failure");
    assert!(e.starts_with("1 of 307200 bytes sent to"), "{e}");
    assert!(e.ends_with("first at byte 1000 of stream 1"), "{e}");

    // Server → client: after the OK line.
    let (l, port) = listener();
    let relay = tcp_relay(l, srv.addr, None, Some(3 + 5000));
    let target = format!("127.0.0.1:{port}");
    let o = netsh_tmp(&["echo", &target, "--bulk", "-R", "-n", "300K"]);
    relay.join().expect("relay");
    assert_eq!(o.code, Some(3), "{}", show(&o));
    assert!(
        o.stdout.contains(
            "MISMATCH: 1 bytes differed or were missing (first at byte 5000 of stream 1)"
        ),
        "{}",
        show(&o)
    );
}

#[test]
fn a_server_that_stops_reading_is_a_stall_not_a_hang() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let fake = std::thread::spawn(move || {
        l.set_nonblocking(true).expect("nonblocking");
        let mut conn = None;
        wait_for(Duration::from_secs(15), || match l.accept() {
            Ok((s, _)) => {
                conn = Some(s);
                true
            }
            Err(_) => false,
        });
        let Some(mut s) = conn else { return };
        s.set_nonblocking(false).expect("blocking");
        let mut b = [0u8; 1];
        let mut line = Vec::new();
        while s.read(&mut b).is_ok_and(|n| n == 1) && b[0] != b'\n' {
            line.push(b[0]);
        }
        assert!(line.starts_with(b"SINK "), "{line:?}");
        s.write_all(b"OK\n").expect("ok");
        // Never read again; hold the connection until the client gives up.
        wait_for(Duration::from_secs(20), || stop2.load(Ordering::Relaxed));
    });
    let d = DataDir::new();
    let mut c = d.cmd(&[
        "echo",
        &format!("127.0.0.1:{port}"),
        "--bulk",
        "--send",
        "-n",
        "1G",
    ]);
    c.env("NETSH_TIMEOUT", "1");
    let t = Instant::now();
    let o = run(c, None, Duration::from_secs(20));
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    fake.join().expect("fake");
    assert_ne!(o.code, Some(0), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(
        e.starts_with("error[timed-out]: sending to 127.0.0.1:"),
        "{e}"
    );
    assert!(e.contains("stalled: no bytes for 1s"), "{e}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn udp_at_a_fixed_rate_loses_nothing_and_reports_jitter() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&[
        "echo", &target, "--bulk", "--udp", "-b", "20M", "-l", "1000", "-n", "2000000", "-i",
        "200ms", "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["mode"], "bulk_udp");
    // Each interval has the server's side too (STATS), and they add up.
    let ivs = j["intervals"].as_array().expect("intervals");
    assert!(ivs.len() >= 3, "{j}");
    let sum = |k: &str| ivs.iter().map(|iv| u(&iv[k])).sum::<u64>();
    assert_eq!(
        (sum("datagrams"), sum("received"), sum("lost")),
        (2000, 2000, 0),
        "{j}"
    );
    assert!(ivs.iter().all(|iv| f(&iv["jitter_ms"]) < 5.0), "{j}");
    assert_eq!(u(&j["datagrams_sent"]), 2000);
    assert_eq!(u(&j["datagrams_received"]), 2000);
    assert_eq!(u(&j["lost"]), 0);
    assert_eq!(u(&j["bad"]), 0);
    assert_eq!(u(&j["out_of_order"]), 0);
    let jitter = f(&j["jitter_ms"]);
    assert!((0.0..5.0).contains(&jitter), "{jitter}");
    assert_eq!(u(&j["receiver"]["bytes"]), 2_000_000);
    // 2000 datagrams of 8000 bits at 20 Mbit/s: 0.8 s of pacing.
    let secs = f(&j["sender"]["time_s"]);
    assert!((0.7..3.0).contains(&secs), "{secs}");
    assert!(
        srv.lines_with("UDP: 2000 of 2000 datagrams (0.00% lost)")
            .len()
            == 1,
        "{:?}",
        srv.lines_with("[BULK]")
    );
    // Far over the anonymous UDP echo budget (1000/s), and not throttled by it.
    assert_eq!(
        srv.handle.stats.datagrams_limited.load(Ordering::Relaxed),
        0
    );
}

#[test]
fn udp_through_a_path_that_drops_every_tenth_reports_ten_percent() {
    let srv = start_server("127.0.0.1");
    // The relay's TCP and UDP share a port, as the server's do.
    let (l, port) = listener();
    let udp = UdpSocket::bind(("127.0.0.1", port)).expect("bind udp relay");
    udp.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let tcp = tcp_relay(l, srv.addr, None, None);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let to = srv.addr;
    let udp_thread = std::thread::spawn(move || {
        let out = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let start = Instant::now();
        let mut buf = vec![0u8; 65_536];
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) && start.elapsed() < RELAY_LIFE {
            let Ok(len) = udp.recv(&mut buf) else {
                continue;
            };
            n += 1;
            if !n.is_multiple_of(10) {
                let _ = out.send_to(&buf[..len], to);
            }
        }
    });
    let target = format!("127.0.0.1:{port}");
    let o = netsh_tmp(&[
        "echo", &target, "--bulk", "--udp", "-b", "10M", "-l", "1000", "-n", "1000000", "-i",
        "200ms",
    ]);
    stop.store(true, Ordering::Relaxed);
    udp_thread.join().expect("udp relay");
    tcp.join().expect("tcp relay");
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("100/1000 (10.00%) lost"), "{}", show(&o));
    assert!(
        o.stdout
            .contains("every datagram received verified by the server"),
        "{}",
        show(&o)
    );
    // Interval lines carry the server's count: a tenth lost in each (the
    // very last datagram, dropped, has no later one to show it).
    let ivs: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.contains(" datagrams  | server: "))
        .collect();
    assert!(ivs.len() >= 3, "{}", show(&o));
    let lost_total: (u64, u64) = ivs
        .iter()
        .map(|l| {
            let frac = l
                .split(" jitter  ")
                .nth(1)
                .and_then(|r| r.split(' ').next());
            let (lost, total) = frac.and_then(|f| f.split_once('/')).expect("lost/total");
            (
                lost.parse::<u64>().expect("lost"),
                total.parse::<u64>().expect("total"),
            )
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(lost_total, (99, 999), "{}", show(&o));
}

#[test]
fn two_clients_at_once_each_get_full_results() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let t1 = {
        let target = target.clone();
        std::thread::spawn(move || {
            netsh_tmp(&["echo", &target, "--bulk", "--send", "-t", "1", "--json"])
        })
    };
    let t2 = {
        let target = target.clone();
        std::thread::spawn(move || {
            netsh_tmp(&[
                "echo", &target, "--bulk", "--udp", "-b", "50M", "-t", "1", "--json",
            ])
        })
    };
    let o3 = netsh_tmp(&["echo", &target, "--bulk", "-R", "-t", "1", "--json"]);
    let o1 = t1.join().expect("client 1");
    let o2 = t2.join().expect("client 2");
    for o in [&o1, &o2, &o3] {
        assert_eq!(o.code, Some(0), "{}", show(o));
    }
    let (j1, j2, j3) = (json(&o1), json(&o2), json(&o3));
    assert!(u(&j1["bytes_received"]) > 0);
    assert_eq!(u(&j1["bytes_received"]), u(&j1["bytes_sent"]));
    assert_eq!(u(&j1["mismatched_bytes"]), 0);
    assert!(u(&j3["bytes_received"]) > 0);
    assert_eq!(u(&j3["mismatched_bytes"]), 0);
    assert!(u(&j2["datagrams_received"]) > 0);
    assert_eq!(u(&j2["bad"]), 0);
    assert!(wait_for(Duration::from_secs(5), || srv
        .lines_with("[BULK]")
        .len()
        >= 5));
}

#[test]
fn udp_at_full_speed_leaves_in_gso_batches_and_the_server_splits_them() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&[
        "echo", &target, "--bulk", "--udp", "-b", "0", "-l", "1448", "-n", "20M", "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    let sent = u(&j["datagrams_sent"]);
    let got = u(&j["datagrams_received"]);
    assert_eq!(sent, (20u64 << 20).div_ceil(1448), "{j}");
    assert!(u(&j["gso_sends"]) > 0, "{j}");
    // A GRO buffer counted as one datagram would fail the pattern after
    // its first 1448 bytes, and the byte count would not be per datagram.
    assert_eq!(u(&j["bad"]), 0, "{j}");
    assert!(got > 0, "{j}");
    assert_eq!(got + u(&j["lost"]), sent, "{j}");
    assert_eq!(u(&j["receiver"]["bytes"]), got * 1448, "{j}");
    assert_eq!(u(&j["out_of_order"]), 0, "{j}");

    let o = netsh_tmp(&[
        "echo", &target, "--bulk", "--udp", "-b", "0", "-n", "1M", "--no-gso", "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["gso_sends"]), 0, "{j}");
    assert_eq!(u(&j["bad"]), 0, "{j}");
}

#[test]
fn loopback_hands_a_gso_buffer_to_a_gro_socket_whole() {
    use netsh::net::gso;
    use std::os::fd::AsRawFd;
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    gso::enable_gro(rx.as_raw_fd()).expect("UDP_GRO (Linux 5.0+)");
    rx.set_nonblocking(true).expect("nonblocking");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    let buf: Vec<u8> = (0..350u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        gso::send_segments(tx.as_raw_fd(), &buf, 100).expect("GSO send"),
        350
    );
    let mut got = vec![0u8; gso::GRO_BUFFER];
    let mut r = None;
    assert!(wait_for(Duration::from_secs(5), || {
        r = gso::recv_from(rx.as_raw_fd(), &mut got).ok();
        r.is_some()
    }));
    let r = r.expect("read");
    assert_eq!((r.len, r.segment), (350, 100));
    assert_eq!(r.from, tx.local_addr().expect("addr"));
    let parts: Vec<&[u8]> = r.datagrams(&got).collect();
    assert_eq!(parts, buf.chunks(100).collect::<Vec<_>>());
}

#[test]
fn udp_echo_answers_each_datagram_of_a_gso_buffer_on_its_own() {
    use std::os::fd::AsRawFd;
    let srv = start_server("127.0.0.1");
    let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
    c.connect(srv.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    // Four 100-byte datagrams and a 30-byte one in one send.
    let buf: Vec<u8> = (0..430u32).map(|i| b'a' + (i / 100) as u8).collect();
    netsh::net::gso::send_segments(c.as_raw_fd(), &buf, 100).expect("GSO send");
    let mut echoes = Vec::new();
    let mut b = [0u8; 2048];
    for _ in 0..5 {
        let n = retry_eintr(|| c.recv(&mut b)).expect("an echo per datagram");
        echoes.push(b[..n].to_vec());
    }
    assert_eq!(
        echoes,
        buf.chunks(100).map(<[u8]>::to_vec).collect::<Vec<_>>()
    );
}
