//! TLS load client for `scripts/bench-tls` (not a test; prints figures).
//!
//! - `rr ADDR CONNS SECS [PIN]`: CONNS connections, each a thread sending a
//!   56-byte line and waiting for the line that answers it, for SECS
//!   seconds; prints requests per second. With PIN, over TLS (the server's
//!   certificate must have that SHA-256).
//! - `bulk ADDR SECS [PIN] [--stream]`: one connection writing a pattern and
//!   reading its echo back, for SECS seconds; prints MB/s of echoed bytes.
//!   `--stream` first says `STREAM` (a netsh server; socat echoes at once).
//!
//! Both go through netsh's own client (`netsh::net::tls`), so what is
//! measured is what `echo --tls` and `chat --tls` use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netsh::net::client::{ClientCtx, LineReader, ReadLine};
use netsh::net::sockopt::SockOpts;
use netsh::net::tls::{Stream, Trust};

fn ctx(stop: &AtomicBool) -> ClientCtx<'_> {
    ClientCtx {
        timeout: Duration::from_secs(5),
        retries: 0,
        opts: SockOpts {
            nodelay: true,
            keepalive: false,
            sndbuf: None,
            rcvbuf: None,
        },
        interrupt: stop,
    }
}

fn open(addr: SocketAddr, pin: Option<[u8; 32]>, stop: &AtomicBool) -> Stream {
    let sock = TcpStream::connect(addr).expect("connect");
    let _ = sock.set_nodelay(true);
    match pin {
        None => Stream::plain(sock),
        Some(p) => {
            let ep = netsh::net::Endpoint::parse(&addr.to_string(), 1).expect("endpoint");
            netsh::net::tls::connect(sock, &ep, addr, &Trust::Pin(p), ctx(stop)).expect("handshake")
        }
    }
}

fn rr(addr: SocketAddr, conns: usize, secs: f64, pin: Option<[u8; 32]>) {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                let mut s = open(addr, pin, &stop);
                let mut r = LineReader::new(4096);
                let line = format!("ECHO {}\n", "x".repeat(50));
                let mut n = 0u64;
                while Instant::now() < until {
                    s.write_all(line.as_bytes()).expect("write");
                    match r.read_line(&mut s, Instant::now() + Duration::from_secs(5), ctx(&stop)) {
                        Ok(ReadLine::Line(_)) => n += 1,
                        other => panic!("no answer: {:?}", other.is_ok()),
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let dt = start.elapsed().as_secs_f64();
    println!("rr_per_s={:.0}", done.load(Ordering::Relaxed) as f64 / dt);
}

/// One connection, one thread, non-blocking: write the pattern while
/// reading the echo (no lock between a reader and a writer to measure).
fn bulk(addr: SocketAddr, secs: f64, pin: Option<[u8; 32]>, stream: bool) {
    use mio::{Events, Interest, Poll, Token};
    let std_sock = TcpStream::connect(addr).expect("connect");
    let _ = std_sock.set_nodelay(true);
    std_sock.set_nonblocking(true).expect("nonblocking");
    let mut sock = mio::net::TcpStream::from_std(std_sock);
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    let mut tls = pin.map(|p| {
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut c =
            rustls::ClientConnection::new(netsh::net::tls::pinned_config(p).expect("config"), name)
                .expect("client");
        c.set_buffer_limit(Some(1 << 20));
        c
    });
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    let mut prefix: Vec<u8> = if stream {
        b"STREAM\n".to_vec()
    } else {
        Vec::new()
    };
    let skip = if stream { 3 } else { 0 }; // "OK\n"
    let (mut sent, mut got) = (0u64, 0u64);
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(8);
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    let hard_end = start + dur + Duration::from_secs(10);
    let mut sending = true;
    while Instant::now() < hard_end {
        if sending && start.elapsed() >= dur {
            sending = false;
        }
        if !sending && got + skip >= sent {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        // Write until the socket is full.
        for _ in 0..64 {
            let data: &[u8] = if !prefix.is_empty() {
                &prefix
            } else if sending {
                &chunk
            } else {
                &[]
            };
            let n = match tls.as_mut() {
                None if data.is_empty() => break,
                None => match sock.write(data) {
                    Ok(n) => n,
                    Err(_) => break,
                },
                Some(c) => {
                    let n = if data.is_empty() {
                        0
                    } else {
                        c.writer().write(data).unwrap_or(0)
                    };
                    let mut blocked = false;
                    while c.wants_write() {
                        match c.write_tls(&mut sock) {
                            Ok(_) => {}
                            Err(_) => {
                                blocked = true;
                                break;
                            }
                        }
                    }
                    if blocked || n == 0 {
                        sent += n as u64;
                        if !prefix.is_empty() {
                            prefix.drain(..n);
                        }
                        break;
                    }
                    n
                }
            };
            sent += n as u64;
            if !prefix.is_empty() {
                prefix.drain(..n);
            }
        }
        // Read until the socket is empty.
        for _ in 0..256 {
            match tls.as_mut() {
                None => match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(_) => break,
                },
                Some(c) => {
                    match c.read_tls(&mut sock) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    c.process_new_packets().expect("TLS records");
                    while let Ok(n) = c.reader().read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        got += n as u64;
                    }
                }
            }
        }
    }
    let dt = start.elapsed().as_secs_f64();
    let echoed = got.saturating_sub(skip);
    println!("bulk_mb_per_s={:.0}", echoed as f64 / dt / 1e6);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let pin = |i: usize| {
        args.get(i)
            .filter(|a| !a.starts_with("--"))
            .map(|p| netsh::tls::parse_pin(p).expect("pin"))
    };
    match args.first().map(String::as_str) {
        Some("rr") => rr(
            args[1].parse().expect("ADDR"),
            args[2].parse().expect("CONNS"),
            args[3].parse().expect("SECS"),
            pin(4),
        ),
        Some("bulk") => bulk(
            args[1].parse().expect("ADDR"),
            args[2].parse().expect("SECS"),
            pin(3),
            args.iter().any(|a| a == "--stream"),
        ),
        _ => eprintln!("usage: tls rr ADDR CONNS SECS [PIN] | bulk ADDR SECS [PIN] [--stream]"),
    }
}
