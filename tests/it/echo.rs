//! The echo protocol and the `echo` command over real loopback sockets.
//!
//! - the wire protocol on exact bytes against an in-process server
//!   (`common::start_server`), IPv4 and IPv6: ECHO, `\r\n`, pipelining,
//!   binary text, HELP, QUIT, unknown words, STREAM with all 256 byte
//!   values, half-close, requests split byte by byte, a last line without
//!   a newline;
//! - UDP echo (empty, binary and 60,000-byte datagrams) on the same port;
//! - the `netsh echo` binary end to end: the seed's single exchange, probe
//!   mode (TCP and UDP), bulk mode, and a piped session;
//! - failures against fake servers written here (wrong echo, another
//!   protocol, silence, late and corrupt replies, a bad STREAM), refused
//!   ports, DNS failure and bad words: exit status and the one-line error.
//!
//! Every test that uses an in-process server ends by checking that a fresh
//! client is still served after whatever the test threw at it
//! (`common::assert_serves`). No sleeps as synchronisation: fake servers
//! sleep only to simulate a slow reply. The CPU cost of a stalled STREAM
//! client is a budget (`budgets.rs`).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{
    self, DataDir, LIMIT, assert_echo, assert_serves, client, closed_tcp_port, closed_udp_port, f,
    json, netsh_tmp, one_err_line, read_line, read_to_eof, retry_eintr, run, show, start_server, u,
    wait_for,
};

/// Longest a fake server waits for netsh to connect or send.
const FAKE_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- helpers

/// Read exactly `want.len()` bytes and compare them.
pub(crate) fn expect_bytes(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "reading {:?}: {e}",
            String::from_utf8_lossy(want).escape_debug()
        )
    });
    assert_eq!(
        got,
        want,
        "got {:?}, want {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want)
    );
}

/// A one-connection fake server on 127.0.0.1: `serve` gets the accepted
/// (blocking, 10 s read timeout) stream. Join it to see its panics.
struct Fake {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Fake {
    fn start(serve: impl FnOnce(TcpStream) + Send + 'static) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = l.local_addr().expect("addr");
        l.set_nonblocking(true).expect("nonblocking");
        let thread = std::thread::spawn(move || {
            let mut conn = None;
            // Poll accept with a deadline so a netsh that never connects
            // cannot leave this thread behind forever.
            let accepted = wait_for(FAKE_WAIT, || match l.accept() {
                Ok((s, _)) => {
                    conn = Some(s);
                    true
                }
                Err(_) => false,
            });
            if !accepted {
                return;
            }
            let s = conn.expect("accepted");
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            serve(s);
        });
        Fake { addr, thread }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn join(self) {
        self.thread.join().expect("fake server thread panicked");
    }
}

/// Read one `\n`-terminated line (terminator kept off) from a fake server's
/// stream, or a client's; `None` on EOF or error before any byte.
fn fake_line(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match retry_eintr(|| s.read(&mut b)) {
            Ok(1) if b[0] == b'\n' => return Some(line),
            Ok(1) => line.push(b[0]),
            _ => return if line.is_empty() { None } else { Some(line) },
        }
    }
}

/// Drain until the peer closes (or 10 s pass): keeps a fake connection open.
fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(retry_eintr(|| s.read(&mut buf)), Ok(n) if n > 0) {}
}

// ------------------------------------------------- protocol on exact bytes

#[test]
fn echo_hello_exact_bytes() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    s.write_all(b"ECHO Hello\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:Hello\n");
    // Lines may end in \r\n; the word is case-insensitive; the text is kept
    // byte for byte, spaces included.
    s.write_all(b"ECHO crlf\r\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:crlf\n");
    s.write_all(b"echo  two  spaces \r\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE: two  spaces \n");
    s.write_all(b"ECHO\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:\n");
    // Empty lines are ignored: the next reply is the next ECHO's.
    s.write_all(b"\n\r\n\nECHO after blanks\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:after blanks\n");
    s.write_all(b"QUIT\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"BYE\n");
    assert_serves(srv.addr);
}

#[test]
fn echo_over_ipv6() {
    let srv = start_server("::1");
    assert!(srv.addr.is_ipv6());
    let mut s = client(srv.addr);
    s.write_all(b"ECHO Hello\r\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:Hello\n");
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"BYE\n");
    assert_serves(srv.addr);
}

#[test]
fn many_echoes_on_one_connection() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    for i in 0..300 {
        let text = format!("message {i} {}", "x".repeat(i % 50));
        s.write_all(format!("ECHO {text}\n").as_bytes()).unwrap();
        expect_bytes(&mut s, format!("ECHO_RESPONSE:{text}\n").as_bytes());
    }
    assert_serves(srv.addr);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        req.extend_from_slice(format!("ECHO {i}\n").as_bytes());
        want.extend_from_slice(format!("ECHO_RESPONSE:{i}\n").as_bytes());
        if i == 250 {
            req.extend_from_slice(b"bogus\r\n");
            want.extend_from_slice(b"ERR unknown command 'bogus' (try HELP)\n");
        }
    }
    req.extend_from_slice(b"QUIT\n");
    want.extend_from_slice(b"BYE\n");
    // One write with everything in it; the transcript is exactly the replies.
    s.write_all(&req).unwrap();
    let got = read_to_eof(&mut s);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "pipelined replies differ or are out of order");
    assert_serves(srv.addr);
}

#[test]
fn binary_text_is_echoed_byte_for_byte() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    let texts: [&[u8]; 5] = [
        b"nul\0in\0the\0middle",
        b"invalid utf8 \xff\xfe\xc3\x28 \xed\xa0\x80",
        b"\x1b[2J\x1b]0;title\x07escape",
        b"\xe2\x9c\x93 caf\xc3\xa9",
        b"\0",
    ];
    for t in texts {
        let mut req = b"ECHO ".to_vec();
        req.extend_from_slice(t);
        req.push(b'\n');
        s.write_all(&req).unwrap();
        let mut want = b"ECHO_RESPONSE:".to_vec();
        want.extend_from_slice(t);
        want.push(b'\n');
        expect_bytes(&mut s, &want);
    }
    assert_serves(srv.addr);
}

#[test]
fn help_is_one_line_and_quit_says_bye_then_closes() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    s.write_all(b"HELP\n").unwrap();
    let help = read_line(&mut s);
    assert!(
        help.starts_with(b"HELP "),
        "{:?}",
        String::from_utf8_lossy(&help)
    );
    for word in ["ECHO", "STREAM", "HELP", "QUIT"] {
        assert!(
            String::from_utf8_lossy(&help).contains(word),
            "HELP should name {word}"
        );
    }
    // Exactly one line: the next bytes are the next request's reply.
    s.write_all(b"help\r\nECHO next\n").unwrap();
    let mut want = help.clone();
    want.push(b'\n');
    want.extend_from_slice(b"ECHO_RESPONSE:next\n");
    expect_bytes(&mut s, &want);
    s.write_all(b"quit\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"BYE\n", "BYE, then EOF");
    assert_serves(srv.addr);
}

#[test]
fn unknown_word_gets_an_error_and_the_connection_stays_usable() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    s.write_all(b"X\n").unwrap();
    expect_bytes(&mut s, b"ERR unknown command 'X' (try HELP)\n");
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    expect_bytes(&mut s, b"ERR unknown command 'GET' (try HELP)\n");
    // Control bytes in the word come back escaped, never raw.
    s.write_all(b"\x1b[2J\n").unwrap();
    expect_bytes(&mut s, b"ERR unknown command '\\x1b[2J' (try HELP)\n");
    s.write_all(b"STREAM now\n").unwrap();
    expect_bytes(&mut s, b"ERR unknown command 'STREAM' (try HELP)\n");
    s.write_all(b"ECHO still usable\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:still usable\n");
    assert_serves(srv.addr);
}

#[test]
fn stream_echoes_every_byte_value_including_those_in_the_first_write() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    let all: Vec<u8> = (0..=255u8).collect();
    // STREAM\n and binary data (with \n, \r, NUL) in one write.
    let mut first = b"STREAM\n".to_vec();
    first.extend_from_slice(&all);
    s.write_all(&first).unwrap();
    expect_bytes(&mut s, b"OK\n");
    expect_bytes(&mut s, &all);
    // Lines mean nothing any more: ECHO and QUIT are just bytes.
    s.write_all(b"QUIT\nECHO x\n").unwrap();
    expect_bytes(&mut s, b"QUIT\nECHO x\n");
    let rev: Vec<u8> = (0..=255u8).rev().collect();
    s.write_all(&rev).unwrap();
    expect_bytes(&mut s, &rev);
    // Half-close: the server echoes what it has, then closes.
    s.write_all(&all).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), all, "the last bytes, then EOF");
    assert_serves(srv.addr);
}

#[test]
fn stream_half_close_returns_every_byte_of_a_large_transfer_then_eof() {
    let srv = start_server("127.0.0.1");
    let s = client(srv.addr);
    // 3 MiB: more than the socket buffers and the server's 1 MiB queue, so
    // the writer and the reader must run at the same time.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = s.try_clone().unwrap();
    let to_send = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(b"STREAM\n").unwrap();
        // Odd chunk sizes, so writes and reads never line up.
        for chunk in to_send.chunks(7919) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut r = s;
    let got = read_to_eof(&mut r);
    writer.join().expect("writer");
    assert_eq!(&got[..3], b"OK\n");
    assert_eq!(got.len() - 3, data.len(), "every byte came back, then EOF");
    assert!(got[3..] == data[..], "the echo differs from what was sent");
    assert_serves(srv.addr);
}

#[test]
fn a_request_split_byte_by_byte_is_answered() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    s.set_nodelay(true).unwrap();
    for b in b"ECHO split into single bytes\r\n" {
        s.write_all(&[*b]).unwrap();
    }
    expect_bytes(&mut s, b"ECHO_RESPONSE:split into single bytes\n");
    // A reply arrives only when the line is complete.
    s.write_all(b"ECHO part").unwrap();
    s.write_all(b"ial\n").unwrap();
    expect_bytes(&mut s, b"ECHO_RESPONSE:partial\n");
    for b in b"STREAM\n" {
        s.write_all(&[*b]).unwrap();
    }
    expect_bytes(&mut s, b"OK\n");
    assert_serves(srv.addr);
}

#[test]
fn a_last_line_without_newline_is_answered_before_close() {
    let srv = start_server("127.0.0.1");
    let mut s = client(srv.addr);
    s.write_all(b"ECHO first\nECHO tail").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_to_eof(&mut s),
        b"ECHO_RESPONSE:first\nECHO_RESPONSE:tail\n"
    );
    // Half-close after whole lines only: every answer, then EOF.
    let mut s = client(srv.addr);
    s.write_all(b"ECHO a\nHELP\nECHO b\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_eof(&mut s);
    assert!(got.starts_with(b"ECHO_RESPONSE:a\nHELP "));
    assert!(got.ends_with(b")\nECHO_RESPONSE:b\n"));
    assert_eq!(got.iter().filter(|b| **b == b'\n').count(), 3);
    assert_serves(srv.addr);
}

#[test]
fn rude_clients_do_not_disturb_the_server() {
    let srv = start_server("127.0.0.1");
    // Connect and leave at once; leave mid-line; leave with unread replies
    // (the close becomes a reset); leave in the middle of a stream.
    drop(client(srv.addr));
    let mut s = client(srv.addr);
    s.write_all(b"ECHO never fini").unwrap();
    drop(s);
    let mut s = client(srv.addr);
    s.write_all(&b"ECHO unread\n".repeat(1000)).unwrap();
    drop(s);
    let mut s = client(srv.addr);
    s.write_all(b"STREAM\n").unwrap();
    s.write_all(&[0xAA; 100_000]).unwrap();
    drop(s);
    // A client that is still connected keeps working alongside a new one.
    let mut keep = client(srv.addr);
    keep.write_all(b"ECHO kept\n").unwrap();
    expect_bytes(&mut keep, b"ECHO_RESPONSE:kept\n");
    assert_serves(srv.addr);
    keep.write_all(b"ECHO kept again\n").unwrap();
    expect_bytes(&mut keep, b"ECHO_RESPONSE:kept again\n");
    // Every one of them is let go: only `keep` is left.
    let stats = &srv.handle.stats;
    assert!(
        wait_for(Duration::from_secs(5), || stats
            .clients
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1),
        "closed clients should be released, {:?}",
        stats.snapshot()
    );
}

// ---------------------------------------------------------------- UDP

fn udp_exchange(server: SocketAddr) {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let u = UdpSocket::bind(local).expect("bind UDP client");
    u.connect(server).expect("connect UDP");
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let all: Vec<u8> = (0..=255u8).collect();
    let datagrams: [&[u8]; 5] = [b"hello", b"ECHO not a command\n", &all, &[], &big];
    let mut buf = vec![0u8; 70_000];
    for d in datagrams {
        u.send(d).expect("send");
        let n = retry_eintr(|| u.recv(&mut buf))
            .unwrap_or_else(|e| panic!("no echo of a {}-byte datagram: {e}", d.len()));
        assert_eq!(n, d.len(), "echoed datagram length");
        assert!(
            buf[..n] == *d,
            "a {}-byte datagram came back changed",
            d.len()
        );
    }
}

#[test]
fn udp_datagrams_are_echoed_verbatim_on_the_same_port_v4() {
    let srv = start_server("127.0.0.1");
    udp_exchange(srv.addr);
    assert_serves(srv.addr);
    let stats = srv.stop();
    // The empty datagram is echoed too (the server sends back what it got).
    assert_eq!(stats.datagrams, 5);
}

#[test]
fn a_full_server_is_reported_as_full_not_as_a_stranger() {
    let srv = common::start_server_with(
        "127.0.0.1",
        common::Opts {
            max_clients: 1,
            ..Default::default()
        },
    );
    let mut holder = client(srv.addr);
    holder.write_all(b"ECHO hold\n").unwrap();
    assert_eq!(read_line(&mut holder), b"ECHO_RESPONSE:hold");
    let target = srv.addr.to_string();
    let o = netsh_tmp(&["echo", &target, "hi"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let first = o.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("is full"), "{first}");
    assert!(
        first.contains("raise --max-clients on the server"),
        "{first}"
    );
    assert!(!first.contains("is it a netsh server"), "{first}");
    drop(holder);
    srv.stop();
}

#[test]
fn one_address_cannot_take_every_slot() {
    let srv = common::start_server_with(
        "127.0.0.1",
        common::Opts {
            max_per_address: 2,
            ..Default::default()
        },
    );
    let mut c1 = client(srv.addr);
    assert_echo(&mut c1, "one");
    let mut c2 = client(srv.addr);
    assert_echo(&mut c2, "two");
    // The third from 127.0.0.1 is refused with a reason, then closed.
    let mut c3 = client(srv.addr);
    let mut got = Vec::new();
    c3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c3.read_to_end(&mut got);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "ERR too many connections from 127.0.0.1 (max 2 per address)\n"
    );
    // The client says what happened and what to do.
    let o = netsh_tmp(&["echo", &srv.addr.to_string(), "hi"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("too many connections from 127.0.0.1"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("raise --max-per-ip on the server"),
        "{}",
        o.stderr
    );
    // Another address is still served.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .expect("bind 127.0.0.2");
    other.connect(&srv.addr.into()).unwrap();
    let mut other: TcpStream = other.into();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_echo(&mut other, "from elsewhere");
    // When one of the two leaves, 127.0.0.1 may connect again.
    c1.write_all(b"QUIT\n").unwrap();
    drop(c1);
    let ok = wait_for(Duration::from_secs(5), || {
        let mut c = client(srv.addr);
        c.write_all(b"ECHO again\n").is_ok() && read_line_or_eof(&mut c) == b"ECHO_RESPONSE:again"
    });
    assert!(
        ok,
        "127.0.0.1 still refused after one of its connections left"
    );
    assert_echo(&mut c2, "two still");
    let stats = srv.stop();
    assert!(stats.refused >= 1);
}

/// The next line, or empty at EOF (a refused connection).
fn read_line_or_eof(c: &mut TcpStream) -> Vec<u8> {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    fake_line(c).unwrap_or_default()
}

#[test]
fn udp_datagrams_that_could_loop_are_not_echoed() {
    // A datagram from the server's own port (here from 127.0.0.2, which is
    // loopback too, as another netsh server on the default port would be, or
    // a packet spoofed from the server itself) would be echoed back and forth
    // for ever: the audit saw one spoofed datagram hold a core at 100 %.
    let srv = start_server("127.0.0.1");
    let twin = UdpSocket::bind(("127.0.0.2", srv.addr.port()))
        .expect("bind 127.0.0.2 on the server's port");
    twin.connect(srv.addr).unwrap();
    twin.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    twin.send(b"loop?").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        retry_eintr(|| twin.recv(&mut buf)).is_err(),
        "a datagram from the server's own port was echoed"
    );
    // A well-known service port (below 1024) is refused too, where this
    // process may bind one (root).
    let mut expected_ignored = 1;
    if let Ok(svc) = UdpSocket::bind("127.0.0.1:19") {
        svc.connect(srv.addr).unwrap();
        svc.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        svc.send(b"chargen?").unwrap();
        assert!(
            retry_eintr(|| svc.recv(&mut buf)).is_err(),
            "a datagram from port 19 was echoed"
        );
        expected_ignored += 1;
    }
    udp_exchange(srv.addr); // ordinary clients are still answered
    let stats = srv.stop();
    assert_eq!(
        (stats.datagrams, stats.datagrams_ignored),
        (5, expected_ignored)
    );
}

#[test]
fn udp_datagrams_are_echoed_verbatim_on_the_same_port_v6() {
    let srv = start_server("::1");
    udp_exchange(srv.addr);
    assert_serves(srv.addr);
    assert_eq!(srv.stop().datagrams, 5);
}

// ------------------------------------------------ the binary: single echo

#[test]
fn seed_example_end_to_end() {
    let srv = start_server("127.0.0.1");
    let port = srv.addr.port();
    let target = format!("127.0.0.1:{port}");
    let o = netsh_tmp(&["echo", &target, "Hello"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(o.stderr, "", "{}", show(&o));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", show(&o));
    assert_eq!(lines[0], format!("Connecting to 127.0.0.1:{port} ..."));
    assert_eq!(lines[1], "Connected to server.");
    assert_eq!(lines[2], "Sent: Hello");
    assert_eq!(lines[3], "Received: ECHO_RESPONSE:Hello");
    assert!(
        lines[4].starts_with("Connection successful, data matches."),
        "{}",
        show(&o)
    );
    // The server saw it.
    assert!(wait_for(Duration::from_secs(5), || !srv
        .lines_with("[ECHO] Client says: Hello")
        .is_empty()));
    assert_serves(srv.addr);
}

#[test]
fn single_echo_json() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "Hello", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["mode"], "single");
    assert_eq!(j["target"], target.as_str());
    assert_eq!(j["address"], target.as_str());
    assert_eq!(j["sent"], "Hello");
    assert_eq!(j["received"], "Hello");
    assert_eq!(j["matches"], true);
    assert!(j["first_difference"].is_null());
    assert!(f(&j["connect_ms"]) >= 0.0);
    assert!(f(&j["rtt_ms"]) > 0.0);
    assert_serves(srv.addr);
}

#[test]
fn multi_word_message_and_escaped_display() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "Hello", "big", "wide", "world"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("\nSent: Hello big wide world\n"));
    assert!(
        o.stdout
            .contains("\nReceived: ECHO_RESPONSE:Hello big wide world\n")
    );
    // Non-ASCII survives; an escape byte is shown escaped, never raw.
    let o = netsh_tmp(&["echo", &target, "caf\u{e9} \u{2713}", "\u{1b}[2J", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["sent"], "caf\u{e9} \u{2713} \u{1b}[2J");
    assert_eq!(j["received"], "caf\u{e9} \u{2713} \u{1b}[2J");
    assert_eq!(j["matches"], true);
    let o = netsh_tmp(&["echo", &target, "a\u{1b}[2Jb"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        !o.stdout.contains('\u{1b}'),
        "raw ESC on stdout: {}",
        show(&o)
    );
    assert!(o.stdout.contains("Sent: a\\x1b[2Jb\n"), "{}", show(&o));
    assert_serves(srv.addr);
}

#[test]
fn single_echo_over_ipv6() {
    let srv = start_server("::1");
    let port = srv.addr.port();
    let target = format!("[::1]:{port}");
    let o = netsh_tmp(&["echo", &target, "Hello", "six"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], format!("Connecting to [::1]:{port} ..."));
    assert_eq!(lines[3], "Received: ECHO_RESPONSE:Hello six");
    assert!(lines[4].starts_with("Connection successful, data matches."));
    let o = netsh_tmp(&["echo", &target, "Hello", "--json"]);
    assert_eq!(json(&o)["address"], target.as_str());
    assert_serves(srv.addr);
}

// ------------------------------------------ the binary: failures, one line

/// A fake that reads one ECHO line and answers `reply`.
fn fake_answering(reply: &'static [u8]) -> Fake {
    Fake::start(move |mut s| {
        let line = fake_line(&mut s).expect("a request");
        assert_eq!(line, b"ECHO Hello");
        s.write_all(reply).unwrap();
        drain(s);
    })
}

#[test]
fn mismatched_echo_exits_3_and_names_the_byte() {
    let fake = fake_answering(b"ECHO_RESPONSE:Hexlo\n");
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "Hello"]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[mismatch]: "), "{e}");
    assert!(e.contains("first at byte 2"), "{e}");
    assert!(o.stdout.contains("Received: ECHO_RESPONSE:Hexlo\n"));
    assert!(
        o.stdout
            .contains("Data does not match: first difference at byte 2")
    );

    let fake = fake_answering(b"ECHO_RESPONSE:Hexlo\n");
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "Hello", "--json"]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["matches"], false);
    assert_eq!(j["first_difference"], 2);
    assert_eq!(j["received"], "Hexlo");

    // A shorter echo differs where it ends.
    let fake = fake_answering(b"ECHO_RESPONSE:Hell\n");
    let o = netsh_tmp(&[
        "echo",
        &format!("127.0.0.1:{}", fake.port()),
        "Hello",
        "--json",
    ]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    assert_eq!(json(&o)["first_difference"], 4);
}

#[test]
fn another_protocol_is_a_protocol_error() {
    // SSH servers speak first.
    let fake = Fake::start(|mut s| {
        s.write_all(b"SSH-2.0-x\r\n").unwrap();
        drain(s);
    });
    let o = netsh_tmp(&["echo", &format!("127.0.0.1:{}", fake.port()), "Hello"]);
    fake.join();
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[protocol]: "), "{e}");
    assert!(e.contains("SSH-2.0-x"), "{e}");
}

#[test]
fn a_silent_server_times_out_per_set_timeout() {
    let fake = Fake::start(drain);
    let t = Instant::now();
    let o = netsh_tmp(&[
        "-o",
        "timeout=300ms",
        "echo",
        &format!("127.0.0.1:{}", fake.port()),
        "Hello",
    ]);
    let took = t.elapsed();
    fake.join();
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[timed-out]: "), "{e}");
    assert!(e.contains("300ms") || e.contains("0.3"), "{e}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "timeout not respected: {took:?}"
    );
}

#[test]
fn connection_refused_is_one_line_with_the_serve_hint() {
    let port = closed_tcp_port();
    let o = netsh_tmp(&["echo", &format!("127.0.0.1:{port}"), "Hello"]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(
        e.starts_with(&format!(
            "error[connection-refused]: connect 127.0.0.1:{port}: "
        )),
        "{e}"
    );
    assert!(e.contains("netsh serve"), "{e}");
    let o = netsh_tmp(&["echo", &format!("127.0.0.1:{port}"), "Hello", "--json"]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert_eq!(json(&o)["error"]["code"], "connection-refused");
}

/// `cmd` run inside a private network namespace (`unshare -rn`), so not even
/// a DNS query can leave the machine; `None` where that is not allowed.
fn without_network(cmd: &Command) -> Option<Command> {
    let ok = Command::new("unshare")
        .args(["-rn", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    let mut c = Command::new("unshare");
    c.arg("-rn")
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    Some(c)
}

#[test]
fn dns_failure_is_a_dns_error() {
    // RFC 6761: `.invalid` never resolves. With a plain resolver (no
    // systemd-resolved) glibc would still ask the configured DNS server, so
    // the run goes into an empty network namespace: no packet leaves.
    let dir = DataDir::new();
    let c = dir.cmd(&["echo", "netsh-test.invalid:5050", "Hello"]);
    let Some(c) = without_network(&c) else {
        eprintln!("skipped: no unprivileged network namespace (unshare -rn) here");
        return;
    };
    let o = run(c, None, LIMIT);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(
        e.starts_with("error[dns]: resolve netsh-test.invalid: "),
        "{e}"
    );
}

#[test]
fn bad_host_or_port_words_exit_2() {
    for target in [
        "bad!host:5050",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "127.0.0.1:port",
        "[::1:5050",
        "[nothex]:5",
        "1:2:3",
    ] {
        let o = netsh_tmp(&["echo", target, "Hello"]);
        assert_eq!(o.code, Some(2), "{target}: {}", show(&o));
        let e = one_err_line(&o);
        assert!(e.starts_with("error[bad-value]: "), "{target}: {e}");
        assert_eq!(o.stdout, "", "{target}: nothing runs");
    }
}

// ------------------------------------------------- the binary: probe mode

#[test]
fn tcp_probes_json() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "-c", "20", "-i", "0", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["mode"], "probe");
    assert_eq!(j["protocol"], "tcp");
    assert_eq!(j["address"], target.as_str());
    assert_eq!(u(&j["transmitted"]), 20);
    assert_eq!(u(&j["received"]), 20);
    assert_eq!(f(&j["loss_pct"]), 0.0);
    assert_eq!(u(&j["corrupt"]), 0);
    assert_eq!(u(&j["duplicate"]), 0);
    assert_eq!(u(&j["reordered"]), 0);
    assert_eq!(j["interrupted"], false);
    assert!(f(&j["connect_ms"]) >= 0.0);
    let r = &j["rtt"];
    let (min, avg, max) = (f(&r["min_ms"]), f(&r["avg_ms"]), f(&r["max_ms"]));
    let (p50, p90, p99) = (f(&r["p50_ms"]), f(&r["p90_ms"]), f(&r["p99_ms"]));
    assert!(min > 0.0);
    assert!(min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{r}");
    assert!(min <= avg && avg <= max, "{r}");
    assert!(f(&r["mdev_ms"]) >= 0.0);
    let probes = j["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), 20);
    let mut rtts = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        assert_eq!(u(&p["seq"]), i as u64 + 1, "sequence numbers start at 1");
        assert_eq!(p["status"], "ok", "{p}");
        assert_eq!(u(&p["bytes"]), 56);
        assert!(p["first_difference"].is_null());
        rtts.push(f(&p["rtt_ms"]));
    }
    // The summary is of these very probes.
    let lo = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rtts.iter().copied().fold(0.0, f64::max);
    assert_eq!((lo, hi), (min, max));
    assert_serves(srv.addr);
}

#[test]
fn tcp_probes_text() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "-c", "20", "-i", "0"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(o.stderr, "");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("ECHO {target} ({target}) over tcp: 20 probes of 56 bytes")
    );
    for (i, l) in (1..=20).zip(&lines[1..]) {
        let rtt = l
            .strip_prefix(&format!("seq={i} bytes=56 rtt="))
            .and_then(|r| r.strip_suffix(" ms"))
            .unwrap_or_else(|| panic!("probe line {i}: {l:?}"));
        assert!(rtt.parse::<f64>().is_ok_and(|v| v >= 0.0), "{l:?}");
    }
    assert_eq!(lines[21], format!("--- {target} echo statistics (tcp) ---"));
    assert!(
        lines[22]
            .starts_with("20 sent, 20 received, 0.0% loss, 0 corrupt, 0 duplicate, 0 reordered"),
        "{:?}",
        lines[22]
    );
    assert!(
        lines[23].starts_with("rtt min/avg/max/mdev = "),
        "{:?}",
        lines[23]
    );
    assert!(
        lines[24].starts_with("rtt p50/p90/p99/p99.9 = "),
        "{:?}",
        lines[24]
    );
    assert_eq!(lines.len(), 25, "{}", show(&o));
    assert_serves(srv.addr);
}

#[test]
fn tcp_probes_of_1000_bytes() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&[
        "echo", &target, "-c", "5", "-i", "0", "-s", "1000", "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["received"]), 5);
    for p in j["probes"].as_array().unwrap() {
        assert_eq!(u(&p["bytes"]), 1000);
        assert_eq!(p["status"], "ok");
    }
    assert_serves(srv.addr);

    // On the wire: `ECHO seq=N <filler>` with exactly 1000 bytes of text.
    let fake = Fake::start(|mut s| {
        for i in 1..=3 {
            let line = fake_line(&mut s).expect("probe line");
            let text = line.strip_prefix(b"ECHO ").expect("an ECHO request");
            assert_eq!(text.len(), 1000, "probe {i} text length");
            let head = format!("seq={i} ");
            assert!(text.starts_with(head.as_bytes()), "probe {i}");
            assert!(text[head.len()..].iter().all(u8::is_ascii_lowercase));
            let mut reply = b"ECHO_RESPONSE:".to_vec();
            reply.extend_from_slice(text);
            reply.push(b'\n');
            s.write_all(&reply).unwrap();
        }
        drain(s);
    });
    let o = netsh_tmp(&[
        "echo",
        &format!("127.0.0.1:{}", fake.port()),
        "-c",
        "3",
        "-i",
        "0",
        "-s",
        "1000",
        "--json",
    ]);
    fake.join();
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(u(&json(&o)["received"]), 3);
}

fn udp_probes(ip: &str, target: impl Fn(u16) -> String) {
    let srv = start_server(ip);
    let target = target(srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "--udp", "-c", "10", "-i", "0", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["protocol"], "udp");
    assert!(j["connect_ms"].is_null());
    assert_eq!(u(&j["transmitted"]), 10);
    assert_eq!(u(&j["received"]), 10);
    assert_eq!(f(&j["loss_pct"]), 0.0);
    assert_eq!(
        u(&j["corrupt"]) + u(&j["duplicate"]) + u(&j["reordered"]),
        0
    );
    let probes = j["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 10);
    for (i, p) in probes.iter().enumerate() {
        assert_eq!(u(&p["seq"]), i as u64 + 1, "sequence numbers start at 1");
        assert_eq!(p["status"], "ok");
    }
    let o = netsh_tmp(&["echo", &target, "--udp", "-c", "3", "-i", "0"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout
            .contains("3 sent, 3 received, 0.0% loss, 0 corrupt, 0 duplicate, 0 reordered"),
        "{}",
        show(&o)
    );
    assert!(
        o.stdout
            .contains(&format!("--- {target} echo statistics (udp) ---"))
    );
    assert_serves(srv.addr);
    assert_eq!(srv.stop().datagrams, 13, "one echo per probe");
}

#[test]
fn udp_probes_v4() {
    udp_probes("127.0.0.1", |p| format!("127.0.0.1:{p}"));
}

#[test]
fn udp_probes_v6() {
    udp_probes("::1", |p| format!("[::1]:{p}"));
}

#[test]
fn udp_probes_to_a_silent_socket_are_lost() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let t = Instant::now();
    let o = netsh_tmp(&[
        "-o",
        "timeout=100ms",
        "echo",
        &target,
        "--udp",
        "-c",
        "3",
        "-i",
        "0",
    ]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[timed-out]: "), "{e}");
    for i in 1..=3 {
        assert!(
            o.stdout
                .contains(&format!("seq={i} bytes=56 lost (no echo in 100ms)\n")),
            "{}",
            show(&o)
        );
    }
    assert!(o.stdout.contains("3 sent, 0 received, 100.0% loss"));
    assert!(!o.stdout.contains("rtt min"), "no RTT without echoes");
    // The probes reached the socket, in the documented format.
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..3u64 {
        let n = retry_eintr(|| silent.recv(&mut buf)).expect("probe datagram");
        assert_eq!(n, 56);
        assert_eq!(&buf[..4], b"NSH1");
        assert_eq!(u64::from_be_bytes(buf[4..12].try_into().unwrap()), i + 1);
    }

    let o = netsh_tmp(&[
        "-o",
        "timeout=100ms",
        "echo",
        &target,
        "--udp",
        "-c",
        "3",
        "-i",
        "0",
        "--json",
    ]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["transmitted"]), 3);
    assert_eq!(u(&j["received"]), 0);
    assert_eq!(f(&j["loss_pct"]), 100.0);
    assert!(j["rtt"].is_null());
    for p in j["probes"].as_array().unwrap() {
        assert_eq!(p["status"], "lost");
        assert!(p["rtt_ms"].is_null());
    }
}

#[test]
fn udp_probes_to_a_closed_port_are_refused() {
    let port = closed_udp_port();
    let o = netsh_tmp(&[
        "echo",
        &format!("127.0.0.1:{port}"),
        "--udp",
        "-c",
        "3",
        "-i",
        "0",
    ]);
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[connection-refused]: "), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.contains("netsh serve"), "{e}");
}

#[test]
fn corrupt_tcp_echoes_are_counted_and_exit_3() {
    // Echo each probe with its last byte changed.
    let corrupting = || {
        Fake::start(|mut s| {
            while let Some(line) = fake_line(&mut s) {
                let Some(text) = line.strip_prefix(b"ECHO ") else {
                    break;
                };
                let mut reply = b"ECHO_RESPONSE:".to_vec();
                reply.extend_from_slice(text);
                *reply.last_mut().unwrap() ^= 0x01;
                reply.push(b'\n');
                if s.write_all(&reply).is_err() {
                    break;
                }
            }
        })
    };
    let fake = corrupting();
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "-c", "3", "-i", "0", "--json"]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["transmitted"]), 3);
    assert_eq!(u(&j["corrupt"]), 3);
    assert_eq!(u(&j["received"]), 0);
    // As ping counts: a corrupt answer is not received, though not lost.
    assert_eq!(f(&j["loss_pct"]), 100.0, "{j}");
    assert_eq!(u(&j["lost"]), 0, "{j}");
    for p in j["probes"].as_array().unwrap() {
        assert_eq!(p["status"], "corrupt");
        assert_eq!(p["first_difference"], 55);
        assert!(p["rtt_ms"].is_null());
    }

    let fake = corrupting();
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "-c", "3", "-i", "0"]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    assert!(
        o.stdout
            .contains("seq=1 bytes=56 corrupt: first difference at byte 55\n"),
        "{}",
        show(&o)
    );
    assert!(
        o.stdout
            .contains("3 sent, 0 received, 100.0% loss, 3 corrupt"),
        "{}",
        show(&o)
    );
    let e = one_err_line(&o);
    assert!(e.starts_with("error[mismatch]: 3 of 3 echoes"), "{e}");
}

#[test]
fn a_late_echo_is_lost_then_counted_as_reordered() {
    // Probe 0's echo comes 750 ms late with a 500 ms timeout: probe 0 is lost,
    // and its echo arrives while probe 1 waits; later probes are prompt.
    let fake = Fake::start(|mut s| {
        let mut first = true;
        while let Some(line) = fake_line(&mut s) {
            if first {
                std::thread::sleep(Duration::from_millis(750));
                first = false;
            }
            let text = line.strip_prefix(b"ECHO ").expect("an ECHO request");
            let mut reply = b"ECHO_RESPONSE:".to_vec();
            reply.extend_from_slice(text);
            reply.push(b'\n');
            if s.write_all(&reply).is_err() {
                break;
            }
        }
    });
    let target = format!("127.0.0.1:{}", fake.port());
    let t = Instant::now();
    let o = netsh_tmp(&[
        "-o",
        "timeout=500ms",
        "echo",
        &target,
        "-c",
        "3",
        "-i",
        "0",
        "--json",
    ]);
    let took = t.elapsed();
    fake.join();
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let j = json(&o);
    assert_eq!(u(&j["transmitted"]), 3);
    assert_eq!(u(&j["received"]), 2);
    assert!(u(&j["reordered"]) >= 1, "{j}");
    assert_eq!(u(&j["duplicate"]), 0);
    assert_eq!(u(&j["corrupt"]), 0);
    let pct = f(&j["loss_pct"]);
    assert!((pct - 100.0 / 3.0).abs() < 0.01, "{pct}");
    let status: Vec<&str> = j["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["lost", "ok", "ok"]);
}

#[test]
fn deadline_stops_probing_early() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let t = Instant::now();
    let o = netsh_tmp(&[
        "echo", &target, "-c", "1000", "-i", "100ms", "-w", "300ms", "--json",
    ]);
    let took = t.elapsed();
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let j = json(&o);
    let sent = u(&j["transmitted"]);
    assert!((1..10).contains(&sent), "transmitted {sent}");
    assert!(u(&j["received"]) >= 1);
    assert!(f(&j["time_ms"]) < 1000.0, "{}", j["time_ms"]);
    assert_serves(srv.addr);
}

#[test]
fn deadline_does_not_report_a_phantom_lost_probe() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    for udp in [false, true] {
        let mut args = vec![
            "echo", &target, "-c", "1000", "-i", "100ms", "-w", "300ms", "--json",
        ];
        if udp {
            args.push("--udp");
        }
        let o = netsh_tmp(&args);
        assert_eq!(o.code, Some(0), "{}", show(&o));
        let j = json(&o);
        for p in j["probes"].as_array().unwrap() {
            assert_eq!(p["status"], "ok", "udp={udp}: {p}");
        }
        assert_eq!(f(&j["loss_pct"]), 0.0, "udp={udp}: {j}");
        assert_eq!(j["received"], j["transmitted"]);
    }
    assert_serves(srv.addr);
}

// ------------------------------------------------- the binary: bulk mode

#[test]
fn bulk_bytes_with_three_streams_json() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "--bulk", "-n", "20M", "-P", "3", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    assert_eq!(j["mode"], "bulk");
    assert_eq!(u(&j["streams"]), 3);
    assert_eq!(u(&j["bytes_sent"]), 20_971_520);
    assert_eq!(u(&j["bytes_received"]), 20_971_520);
    assert_eq!(u(&j["mismatched_bytes"]), 0);
    assert!(j["first_mismatch"].is_null());
    assert!(f(&j["gbit_per_s"]) > 0.0);
    let iv = j["intervals"].as_array().expect("intervals");
    assert!(!iv.is_empty());
    assert_eq!(
        iv.iter().map(|i| u(&i["bytes"])).sum::<u64>(),
        20_971_520,
        "the intervals add up to the total"
    );
    assert_serves(srv.addr);
}

#[test]
fn bulk_for_one_second_text() {
    let srv = start_server("127.0.0.1");
    let target = format!("127.0.0.1:{}", srv.addr.port());
    let o = netsh_tmp(&["echo", &target, "--bulk", "-t", "1"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(o.stderr, "");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("Streaming to {target} with 1 stream, every byte checked ...")
    );
    let intervals = lines
        .iter()
        .filter(|l| l.starts_with("[SUM] ") && l.ends_with(" Gbit/s") && !l.contains("total"))
        .count();
    assert!(intervals >= 1, "{}", show(&o));
    let total = lines
        .iter()
        .find(|l| l.starts_with("[SUM] total "))
        .unwrap_or_else(|| panic!("no total line\n{}", show(&o)));
    assert!(total.ends_with("(1 stream)"), "{total}");
    assert_eq!(lines.last(), Some(&"every echoed byte verified"));
    assert_serves(srv.addr);
}

/// A STREAM server that answers OK, then echoes with the byte at stream
/// offset `flip_at` changed.
fn flipping_stream_server(flip_at: u64) -> Fake {
    Fake::start(move |mut s| {
        let line = fake_line(&mut s).expect("STREAM");
        assert_eq!(line, b"STREAM");
        s.write_all(b"OK\n").unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        loop {
            let n = match retry_eintr(|| s.read(&mut buf)) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (at..at + n as u64).contains(&flip_at) {
                buf[(flip_at - at) as usize] ^= 0x20;
            }
            at += n as u64;
            if s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

#[test]
fn bulk_detects_a_flipped_byte() {
    let fake = flipping_stream_server(1000);
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "--bulk", "-n", "200K", "--json"]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    let j = json(&o);
    assert_eq!(u(&j["bytes_sent"]), 204_800);
    assert_eq!(u(&j["bytes_received"]), 204_800);
    assert_eq!(u(&j["mismatched_bytes"]), 1);
    assert_eq!(
        j["first_mismatch"],
        serde_json::json!({"stream": 1, "offset": 1000})
    );

    let fake = flipping_stream_server(5);
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "--bulk", "-n", "100K"]);
    fake.join();
    assert_eq!(o.code, Some(3), "{}", show(&o));
    assert!(
        o.stdout
            .contains("MISMATCH: 1 bytes differed or were missing"),
        "{}",
        show(&o)
    );
    let e = one_err_line(&o);
    assert!(
        e.starts_with("error[mismatch]: 1 of 102400 echoed bytes"),
        "{e}"
    );
}

#[test]
fn bulk_refused_stream_is_a_protocol_error() {
    let fake = Fake::start(|mut s| {
        assert_eq!(fake_line(&mut s).as_deref(), Some(&b"STREAM"[..]));
        s.write_all(b"ERR nope\n").unwrap();
        drain(s);
    });
    let target = format!("127.0.0.1:{}", fake.port());
    let o = netsh_tmp(&["echo", &target, "--bulk", "-n", "1M"]);
    fake.join();
    assert_eq!(o.code, Some(1), "{}", show(&o));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[protocol]: "), "{e}");
    assert!(e.contains("answered STREAM with 'ERR nope'"), "{e}");
}

// ------------------------------------------------- piped session

#[test]
fn piped_session_runs_every_line_and_exits_with_the_first_failure() {
    let srv = start_server("127.0.0.1");
    let port = srv.addr.port();
    let input = format!("echo 127.0.0.1:{port} hi\nbogus\necho 127.0.0.1:{port} -c 2 -i 0\n");
    let o = DataDir::new().piped(&input);
    assert_eq!(o.code, Some(2), "{}", show(&o));
    let first = o
        .stdout
        .find("Received: ECHO_RESPONSE:hi\n")
        .unwrap_or_else(|| panic!("first echo missing\n{}", show(&o)));
    assert!(o.stdout.contains("Connection successful, data matches."));
    let second = o
        .stdout
        .find("2 sent, 2 received, 0.0% loss, 0 corrupt, 0 duplicate, 0 reordered")
        .unwrap_or_else(|| panic!("probe summary missing\n{}", show(&o)));
    assert!(first < second, "in order");
    assert!(o.stdout.contains("seq=1 bytes=56 rtt="));
    assert!(o.stdout.contains("seq=2 bytes=56 rtt="));
    let e = one_err_line(&o);
    assert!(e.starts_with("error[unknown-command]: "), "{e}");
    assert!(e.contains("'bogus'"), "{e}");
    assert_serves(srv.addr);
}

#[test]
fn udp_replies_on_the_wildcard_leave_from_the_address_asked() {
    // A host of two addresses, the server on 0.0.0.0 / ::, the client on
    // 127.0.0.1 / ::1 asking the other one: the route back prefers the
    // loopback address, and a reply from it would be dropped by a
    // connected client (and by chronyd). In a namespace of this test's own,
    // so the wildcard is open nowhere else.
    let Some(chain) = crate::netns::Chain::new(0) else {
        return;
    };
    let (v4, v6) = (chain.client_addr_v4(), chain.client_addr_v6());
    let got = chain.in_ns(chain.client(), move || {
        let mut seen = Vec::new();
        for (wild, from, to) in [
            ("0.0.0.0", "127.0.0.1", IpAddr::V4(v4)),
            ("::", "::1", IpAddr::V6(v6)),
        ] {
            let srv = start_server(wild);
            let ntp = srv.ntp_addr.expect("SNTP responder").port();
            let u = UdpSocket::bind((from, 0)).expect("bind the client");
            u.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut request = [0u8; 48];
            request[0] = 0x23; // version 4, client
            for (port, what) in [(srv.addr.port(), &b"where from?"[..]), (ntp, &request[..])] {
                u.send_to(what, (to, port)).expect("send");
                let mut b = [0u8; 512];
                let r = retry_eintr(|| u.recv_from(&mut b)).map(|(_, a)| a);
                seen.push((to, port, r.map_err(|e| e.to_string())));
            }
            srv.stop();
        }
        seen
    });
    for (to, port, r) in got {
        assert_eq!(r, Ok(SocketAddr::new(to, port)), "the reply to {to}:{port}");
    }
}
