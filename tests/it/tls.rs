//! TLS on its own port: `serve --tls-self-signed` / `--tls-cert`, the
//! clients' `--tls`, `--pin`, `--ca` and trust on first use, a real
//! third-party client (`openssl s_client`), and what a TLS peer that
//! misbehaves cannot do to the others.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, DataDir, ServerProc, on_path, show};

/// The port in `[TLS] Serving echo and chat over TLS on 127.0.0.1:PORT`.
fn tls_port(line: &str) -> u16 {
    line.rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A server with `--tls-self-signed`: its TLS address and the fingerprint it printed.
fn tls_server(data: &DataDir, extra: &[&str]) -> (ServerProc, SocketAddr, String) {
    let mut args = vec!["--tls-self-signed"];
    args.extend_from_slice(extra);
    let s = ServerProc::spawn(data.path(), "", &args);
    let line = s.expect_line("[TLS] Serving", Duration::from_secs(10));
    let port = tls_port(&line);
    let fp = s.expect_line("[TLS] Certificate SHA-256", Duration::from_secs(5));
    let fp = fp
        .split_whitespace()
        .nth(3)
        .expect("fingerprint word")
        .to_string();
    (s, SocketAddr::from(([127, 0, 0, 1], port)), fp)
}

fn openssl_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    s.trim()
        .split('=')
        .nth(1)
        .unwrap_or_default()
        .to_uppercase()
}

#[test]
fn echo_and_chat_are_byte_exact_over_tls_with_the_printed_pin() {
    assert!(on_path("openssl"), "openssl is installed by scripts/setup");
    let data = DataDir::new();
    let (_s, tls, fp) = tls_server(&data, &[]);
    // The fingerprint printed is the certificate's, as openssl computes it.
    assert_eq!(fp, openssl_fingerprint(&data.path().join("tls/cert.pem")));
    let addr = tls.to_string();
    let msg = "héllo ✓ over TLS";
    let o = data.run(&["echo", "--pin", &fp, &addr, msg, "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v = common::json(&o);
    assert_eq!(v["received"], msg, "{v:#}");
    assert_eq!(v["matches"], true);

    // Chat: a TLS member's line reaches a plain member byte for byte.
    let mut plain = common::client(SocketAddr::from(([127, 0, 0, 1], _s.port)));
    plain.write_all(b"CHAT carol\n").expect("join");
    let joined = common::read_line(&mut plain);
    assert!(joined.starts_with(b"OK joined"), "{joined:?}");
    let o = data.run(&["chat", "--pin", &fp, &addr, "-n", "dave", "-s", msg]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let end = Instant::now() + Duration::from_secs(5);
    let mut heard = String::new();
    while Instant::now() < end && !heard.contains("<dave>") {
        heard = String::from_utf8_lossy(&common::read_line(&mut plain)).into_owned();
    }
    assert!(heard.ends_with(&format!("<dave> {msg}")), "{heard:?}");
}

#[test]
fn a_wrong_pin_or_a_changed_certificate_is_one_line_with_the_fix() {
    let data = DataDir::new();
    let (_s, tls, fp) = tls_server(&data, &[]);
    let addr = tls.to_string();
    let other = format!("00{}", &fp[2..]);
    let o = data.run(&["echo", "--pin", &other, &addr, "x"]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    let line = common::one_err_line(&o);
    assert!(
        line.contains("not the pinned") && line.contains(&fp.replace(':', "")),
        "{line}"
    );

    // Trust on first use: stored, then required.
    let client = DataDir::new();
    let o = client.run(&["echo", "--tls", &addr, "first"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout.contains("trusting its certificate"),
        "{}",
        show(&o)
    );
    let known = std::fs::read_to_string(client.path().join("known_hosts")).expect("known_hosts");
    assert!(known.contains(&fp.replace(':', "")), "{known}");
    let o = client.run(&["echo", "--tls", &addr, "second"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(!o.stdout.contains("trusting"), "asked once: {}", show(&o));
    // Another certificate at the same HOST:PORT (a stored line that differs).
    client.write("known_hosts", &format!("{addr} {}\n", "AB".repeat(32)));
    let o = client.run(&["echo", "--tls", &addr, "third"]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    let line = common::one_err_line(&o);
    assert!(
        line.contains("certificate changed") && line.contains("delete that line"),
        "{line}"
    );
}

/// A certificate from rcgen with these dates, written as PEM files in `dir`.
fn make_cert(dir: &Path, name: &str, not_after_year: i32) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    let cert = p.self_signed(&key).expect("sign");
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c.display().to_string(), k.display().to_string())
}

#[test]
fn ca_checks_dates_and_issuer_and_accepts_the_right_certificate() {
    let data = DataDir::new();
    let (good, good_key) = make_cert(data.path(), "good", 2090);
    let (expired, expired_key) = make_cert(data.path(), "expired", 2001);
    let (stranger, _) = make_cert(data.path(), "stranger", 2090);

    let s = ServerProc::spawn(
        data.path(),
        "",
        &["--tls-cert", &good, "--tls-key", &good_key],
    );
    let port = tls_port(&s.expect_line("[TLS] Serving", Duration::from_secs(10)));
    let addr = format!("127.0.0.1:{port}");
    let o = data.run(&["echo", "--ca", &good, &addr, "signed"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let o = data.run(&["echo", "--ca", &stranger, &addr, "x"]);
    assert_ne!(o.code, Some(0));
    let line = common::one_err_line(&o);
    assert!(
        line.contains("failed the check") && line.contains("--ca"),
        "{line}"
    );
    drop(s);

    let s = ServerProc::spawn(
        data.path(),
        "",
        &["--tls-cert", &expired, "--tls-key", &expired_key],
    );
    let port = tls_port(&s.expect_line("[TLS] Serving", Duration::from_secs(10)));
    let o = data.run(&["echo", "--ca", &expired, &format!("127.0.0.1:{port}"), "x"]);
    assert_ne!(o.code, Some(0));
    let line = common::one_err_line(&o);
    assert!(line.to_lowercase().contains("expired"), "{line}");

    // A key that is not the certificate's: one line at start.
    let o = data.run(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        &good,
        "--tls-key",
        &expired_key,
    ]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    assert!(
        common::one_err_line(&o).contains("--tls-key"),
        "{}",
        show(&o)
    );
}

#[test]
fn openssl_s_client_is_answered_on_the_tls_port() {
    assert!(on_path("openssl"), "openssl is installed by scripts/setup");
    let data = DataDir::new();
    let (_s, tls, _) = tls_server(&data, &[]);
    let child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &tls.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut c = common::KillOnDrop(child);
    let mut stdin = c.0.stdin.take().expect("stdin");
    stdin
        .write_all(b"ECHO from openssl\nQUIT\n")
        .expect("write to s_client");
    let mut out = String::new();
    let mut stdout = c.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = common::wait_exit(&mut c.0, Duration::from_secs(10));
    drop(stdin);
    let out = reader.join().expect("reader");
    assert!(status.is_some(), "s_client ended when the server closed");
    assert_eq!(out, "ECHO_RESPONSE:from openssl\nBYE\n");
}

#[test]
fn a_stalled_handshake_is_closed_and_garbage_leaves_others_served() {
    let data = DataDir::new();
    let (s, tls, fp) = tls_server(&data, &["--line-timeout", "1s"]);
    // Half a handshake: connect, say nothing.
    let mut stalled = TcpStream::connect(tls).expect("connect");
    stalled
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    // 10 MiB of garbage on another connection.
    let garbage = std::thread::spawn(move || {
        let mut g = TcpStream::connect(tls).expect("connect");
        let chunk = vec![0x5Au8; 64 * 1024];
        let mut sent = 0usize;
        while sent < 10 << 20 {
            match g.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => return true, // closed by the server: what we expect
            }
        }
        // All written (socket buffers are large): the server must still
        // have closed it.
        g.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 16];
        matches!(g.read(&mut b), Ok(0) | Err(_))
    });
    let t = Instant::now();
    let mut b = [0u8; 64];
    let n = common::retry_eintr(|| stalled.read(&mut b)).unwrap_or(0);
    assert_eq!(
        n, 0,
        "the server sends nothing to a client that never says hello"
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    assert!(
        garbage.join().expect("garbage thread"),
        "the server closed the garbage connection"
    );
    // One console line says why that connection went.
    let why = s.expect_line("[TLS] 127.0.0.1:", Duration::from_secs(5));
    assert!(why.contains("closing it"), "{why}");
    // Everyone else: served, plain and TLS.
    common::assert_serves(s.addr());
    let o = data.run(&["echo", "--pin", &fp, &tls.to_string(), "still"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
}

#[test]
fn a_tls_stream_echoes_a_megabyte_byte_for_byte() {
    // In-process: the library's TLS client against the server's TLS port.
    let dir = DataDir::new();
    let setup = netsh::server::tls::self_signed(&dir.path().join("tls"), &[], 0).expect("cert");
    let pin = netsh::tls::parse_pin(&setup.fingerprint).expect("pin");
    let server = common::start_server_with(
        "127.0.0.1",
        common::Opts {
            tls: Some(setup),
            ..Default::default()
        },
    );
    let addr = server.tls_addr.expect("TLS address");
    let sock = TcpStream::connect(addr).expect("connect");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ctx = netsh::net::client::ClientCtx {
        timeout: Duration::from_secs(5),
        retries: 0,
        opts: netsh::net::sockopt::SockOpts {
            nodelay: true,
            keepalive: false,
            sndbuf: None,
            rcvbuf: None,
        },
        interrupt: &stop,
    };
    let ep = netsh::net::Endpoint::parse(&addr.to_string(), 1).expect("endpoint");
    let mut s = netsh::net::tls::connect(sock, &ep, addr, &netsh::net::tls::Trust::Pin(pin), ctx)
        .expect("handshake");
    let mut reader = netsh::net::client::LineReader::new(1024);
    let ok = netsh::net::client::request(
        &mut s,
        &mut reader,
        &netsh::proto::echo::Request::Stream,
        addr,
        ctx,
    )
    .expect("STREAM");
    assert_eq!(ok, b"OK");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = s.try_clone().expect("clone");
    let send = data.clone();
    let writer = std::thread::spawn(move || {
        for c in send.chunks(16 * 1024) {
            w.write_all(c).expect("write");
        }
    });
    use netsh::net::client::LineStream;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < data.len() {
        let n = s.read(&mut buf).expect("read the echo");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    writer.join().expect("writer");
    assert!(got == data, "echoed bytes differ");
    let st = server.stop();
    assert_eq!(st.refusals["tls-handshake"], 0);
}

#[test]
fn a_denied_address_gets_no_tls_byte_and_one_line_saying_why() {
    let data = DataDir::new();
    let (_s, tls, fp) = tls_server(&data, &["--deny", "127.0.0.1"]);
    let mut c = TcpStream::connect(tls).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 16];
    let n = common::retry_eintr(|| c.read(&mut b)).unwrap_or(0);
    assert_eq!(n, 0, "a denied peer gets not a byte");
    let o = data.run(&["echo", "--pin", &fp, &tls.to_string(), "x"]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    let line = common::one_err_line(&o);
    assert!(
        line.contains("may not allow your address") && line.contains("--allow"),
        "{line}"
    );
}

// ------------------------------------------------------------ the chat key

/// A hand-made member of a keyed room: `CHAT nick`, the challenge's nonce.
fn challenged(addr: SocketAddr, nick: &str) -> (TcpStream, Vec<u8>) {
    let mut c = common::client(addr);
    c.write_all(format!("CHAT {nick}\n").as_bytes())
        .expect("CHAT");
    let line = String::from_utf8_lossy(&common::read_line(&mut c)).into_owned();
    let hex = line
        .strip_prefix("AUTH ")
        .unwrap_or_else(|| panic!("no challenge: {line:?}"));
    (
        c,
        netsh::proto::chat::unhex(hex.as_bytes()).expect("hex nonce"),
    )
}

fn prove(c: &mut TcpStream, key: &[u8], nonce: &[u8], nick: &str) -> String {
    let mac = netsh::proto::chat::auth_mac(key, nonce, nick);
    c.write_all(format!("AUTH {}\n", netsh::proto::chat::hex(&mac)).as_bytes())
        .expect("AUTH");
    String::from_utf8_lossy(&common::read_line(c)).into_owned()
}

#[test]
fn a_keyed_room_admits_the_key_only_and_a_captured_proof_is_worth_nothing() {
    let key = b"correct horse battery staple 42".to_vec();
    let s = common::start_server_with(
        "127.0.0.1",
        common::Opts {
            chat_key: Some(key.clone()),
            ..Default::default()
        },
    );
    // Right key: joined.
    let (mut alice, n1) = challenged(s.addr, "alice");
    let mac1 = netsh::proto::chat::auth_mac(&key, &n1, "alice");
    assert!(prove(&mut alice, &key, &n1, "alice").starts_with("OK joined"));
    // Wrong key: one ERR line, then the close.
    let (mut eve, n2) = challenged(s.addr, "eve");
    let said = prove(&mut eve, b"not the key, but long enough", &n2, "eve");
    assert!(said.starts_with("ERR wrong chat key"), "{said}");
    assert!(common::read_to_eof(&mut eve).is_empty());
    // Replay: alice's proof on a new connection (a new nonce) fails.
    let (mut replay, _) = challenged(s.addr, "alice2");
    replay
        .write_all(format!("AUTH {}\n", netsh::proto::chat::hex(&mac1)).as_bytes())
        .expect("replay");
    let said = String::from_utf8_lossy(&common::read_line(&mut replay)).into_owned();
    assert!(said.starts_with("ERR wrong chat key"), "{said}");
    // No proof at all: the next line is not AUTH.
    let (mut bare, _) = challenged(s.addr, "bob");
    bare.write_all(b"hello room\n").expect("line");
    assert!(common::read_line(&mut bare).starts_with(b"ERR wrong chat key"));
    // With the key, alice's name and the operator's stay theirs.
    let (mut twin, n3) = challenged(s.addr, "alice");
    let said = prove(&mut twin, &key, &n3, "alice");
    assert!(
        !said.contains("as alice "),
        "impersonation of a member: {said}"
    );
    let (mut op, n4) = challenged(s.addr, "operator");
    let said = prove(&mut op, &key, &n4, "operator");
    assert!(
        said.starts_with("ERR"),
        "impersonation of the operator: {said}"
    );
    let st = s.stop();
    assert_eq!(st.refusals["chat-auth"], 3, "wrong key, replay, no proof");
}

#[test]
fn netsh_chat_key_joins_and_without_it_says_what_to_pass() {
    let data = DataDir::new();
    data.write("room.key", "a shared secret of some length\n");
    let s = ServerProc::spawn(data.path(), "", &["--chat-key", "room.key"]);
    let addr = s.addr().to_string();
    let o = data.run(&[
        "chat",
        &addr,
        "-n",
        "kim",
        "--key",
        "room.key",
        "-s",
        "keyed hello",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("<kim> keyed hello"), "{}", show(&o));
    let o = data.run(&["chat", &addr, "-n", "lee", "-s", "x"]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    let line = common::one_err_line(&o);
    assert!(
        line.contains("needs a key") && line.contains("--key"),
        "{line}"
    );
    data.write("wrong.key", "another secret, also long enough");
    let o = data.run(&["chat", &addr, "-n", "lee", "--key", "wrong.key", "-s", "x"]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    assert!(
        common::one_err_line(&o).contains("refused the chat key"),
        "{}",
        show(&o)
    );
    // A key too short to be one: the server will not start with it.
    data.write("short.key", "tiny");
    let o = data.run(&["serve", "--port", "0", "--chat-key", "short.key"]);
    assert_ne!(o.code, Some(0));
    assert!(
        common::one_err_line(&o).contains("at least 16"),
        "{}",
        show(&o)
    );
}

#[test]
fn the_chat_key_can_live_in_the_settings_file_for_both_sides() {
    let data = DataDir::new();
    data.write("room.key", "a shared secret of some length\n");
    data.write(
        "netsh.conf",
        "serve-chat-key = room.key\nchat-key = room.key\n",
    );
    let s = ServerProc::spawn(data.path(), "", &[]);
    let addr = s.addr().to_string();
    let o = data.run(&["chat", &addr, "-n", "kim", "-s", "keyed by settings"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("<kim> keyed by settings"), "{}", show(&o));
    // The server really asks: a client without any key is refused.
    let (mut bare, _) = challenged(s.addr(), "lee");
    bare.write_all(b"hello\n").expect("line");
    assert!(common::read_line(&mut bare).starts_with(b"ERR wrong chat key"));
    // `--key` given on the line wins over the setting.
    data.write("wrong.key", "another secret, also long enough");
    let o = data.run(&["chat", &addr, "-n", "lee", "--key", "wrong.key", "-s", "x"]);
    assert!(
        common::one_err_line(&o).contains("refused the chat key"),
        "{}",
        show(&o)
    );
    let o = data.run(&["settings", "--json"]);
    let v = common::json(&o);
    assert_eq!(v["chat-key"], "room.key", "{}", o.stdout);
    assert_eq!(v["serve-chat-key"], "room.key", "{}", o.stdout);
}

/// Issue 16: `echo --bulk` over TLS, each way and round trip, every byte
/// checked (by the server for --send, by the client otherwise), with the
/// streams' TLS sessions driven from the bulk test's one poll.
#[test]
fn bulk_over_tls_is_byte_exact_each_way_and_round_trip() {
    let data = DataDir::new();
    let (_s, tls, fp) = tls_server(&data, &[]);
    let addr = tls.to_string();
    for dir in ["--send", "-R", "--echo"] {
        let o = data.run(&[
            "echo", "--pin", &fp, &addr, "--bulk", dir, "-n", "24M", "-P", "2", "--json",
        ]);
        assert_eq!(o.code, Some(0), "{dir}: {}", show(&o));
        let j = common::json(&o);
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
        assert_eq!(j["mode"], "bulk", "{j:#}");
        assert_eq!(j["verified"], true);
        assert_eq!(n(&j["bytes_sent"]), 24 << 20, "{dir}: {j:#}");
        assert_eq!(n(&j["bytes_received"]), 24 << 20, "{dir}: {j:#}");
        assert_eq!(n(&j["mismatched_bytes"]), 0, "{dir}: {j:#}");
    }
    // The same from a script: bulk() with the pin, its summary map.
    let script = data.write(
        "tls-bulk.rhai",
        &format!(
            "let r = bulk(\"{addr}\", #{{mode: \"recv\", pin: \"{fp}\", bytes: \"3M\"}});\n\
             print(`${{r.bytes_received}} ${{r.mismatched_bytes}}`);"
        ),
    );
    let o = data.run(&["run", script]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(
        o.stdout.trim().lines().last(),
        Some("3145728 0"),
        "{}",
        show(&o)
    );
    // A plain client on the TLS port gets a clear line, not a hang.
    let o = data.run(&[
        "echo",
        &format!("127.0.0.1:{}", _s.port),
        "--pin",
        &fp,
        "--bulk",
        "-n",
        "1M",
    ]);
    assert_ne!(o.code, Some(0), "{}", show(&o));
    assert!(common::one_err_line(&o).contains("TLS"), "{}", show(&o));
}
