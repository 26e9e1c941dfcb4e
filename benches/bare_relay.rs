//! The chat benchmark's reference: a bare line relay, the least a
//! one-thread epoll chat server can do (no log, no names, no flow control,
//! no limits), driven by the same client as `scripts/bench-chat` drives
//! netsh and ncat with, to show what that client can take at all.
//!
//! Each member's first line is its hello (answered `OK`); every later
//! complete line goes to every other member, one write per member per
//! loop turn. The relay runs on a thread of this process on 127.0.0.1;
//! `../shared/tools/netload` (built into `target/netload` by
//! `scripts/bench-chat`, or `$NETLOAD`) runs against it: 50 clients ×
//! 1000 lines three times, then 10 clients × 20 lines/s.
//!
//! Run: `cargo bench --bench bare_relay` (what `scripts/bench-chat` does).
//! Prints one `relay_name=value` figure per line.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::process::Command;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// A member whose unsent output passes this is dropped.
const OUT_CAP: usize = 16 << 20;

struct Member {
    sock: TcpStream,
    input: Vec<u8>,
    out: Vec<u8>,
    joined: bool,
}

fn main() -> std::io::Result<()> {
    let netload = std::env::var("NETLOAD").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/netload/release/netload"
        )
        .into()
    });
    let listener = TcpListener::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
    let addr = listener.local_addr()?;
    // The relay ends with this process.
    std::thread::spawn(move || {
        if let Err(e) = relay(listener) {
            eprintln!("bare relay: {e}");
        }
    });
    let hello = ["--hello", "CHAT u{i}", "--hello-replies", "1"];
    let runs: [(&str, &[&str]); 4] = [
        ("50x1000", &["--clients", "50", "--messages", "1000"]),
        ("50x1000", &["--clients", "50", "--messages", "1000"]),
        ("50x1000", &["--clients", "50", "--messages", "1000"]),
        (
            "paced10",
            &["--clients", "10", "--messages", "100", "--rate", "20"],
        ),
    ];
    let mut rates = Vec::new();
    for (name, args) in runs {
        let out = Command::new(&netload)
            .arg("chat")
            .arg(addr.to_string())
            .args(args)
            .args(hello)
            .output()
            .map_err(|e| std::io::Error::other(format!("{netload}: {e}")))?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            match (name, k) {
                ("50x1000", "deliveries_per_s") => rates.push(v.parse::<f64>().unwrap_or(0.0)),
                ("50x1000", "missing") | ("paced10", "missing" | "lat_us_p50" | "lat_us_p99") => {
                    println!("relay_{name}_{k}={v}");
                }
                _ => {}
            }
        }
    }
    rates.sort_by(f64::total_cmp);
    if let Some(m) = rates.get(rates.len() / 2) {
        println!("relay_50x1000_deliveries_per_s_median={m:.0}");
    }
    Ok(())
}

fn relay(mut listener: TcpListener) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut members: HashMap<usize, Member> = HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut said: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut gone = Vec::new();
        for ev in &events {
            if ev.token() == LISTENER {
                while let Ok((mut sock, _)) = listener.accept() {
                    let _ = sock.set_nodelay(true);
                    let t = next;
                    next += 1;
                    let i = Interest::READABLE | Interest::WRITABLE;
                    if poll.registry().register(&mut sock, Token(t), i).is_ok() {
                        let m = Member {
                            sock,
                            input: Vec::new(),
                            out: Vec::new(),
                            joined: false,
                        };
                        members.insert(t, m);
                    }
                }
                continue;
            }
            let t = ev.token().0;
            let Some(m) = members.get_mut(&t) else {
                continue;
            };
            if !ev.is_readable() {
                continue;
            }
            loop {
                match m.sock.read(&mut buf) {
                    Ok(0) => {
                        gone.push(t);
                        break;
                    }
                    Ok(n) => {
                        m.input.extend_from_slice(&buf[..n]);
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone.push(t);
                        break;
                    }
                }
            }
            let Some(end) = m.input.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let mut lines: Vec<u8> = m.input.drain(..=end).collect();
            if !m.joined {
                let hello = lines.iter().position(|&b| b == b'\n').unwrap_or(0);
                lines.drain(..=hello);
                m.joined = true;
                m.out.extend_from_slice(b"OK joined\n");
            }
            if !lines.is_empty() {
                said.push((t, lines));
            }
        }
        for (from, lines) in &said {
            for (t, m) in members.iter_mut() {
                if t != from && m.joined {
                    m.out.extend_from_slice(lines);
                }
            }
        }
        for (t, m) in members.iter_mut() {
            while !m.out.is_empty() {
                match m.sock.write(&m.out) {
                    Ok(n) => {
                        m.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone.push(*t);
                        break;
                    }
                }
            }
            if m.out.len() > OUT_CAP {
                gone.push(*t);
            }
        }
        for t in gone {
            if let Some(mut m) = members.remove(&t) {
                let _ = poll.registry().deregister(&mut m.sock);
            }
        }
    }
}
