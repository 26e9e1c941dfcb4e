//! The chat room over real loopback sockets.
//!
//! - raw TCP members (`CHAT <nick>`) against an in-process server
//!   (`common::start_server_with`): joining, every line to every member in
//!   one order, nickname clashes and bad nicknames, `/who`, `/me`, `/help`,
//!   `/nick`, unknown commands, `exit` and `/quit`, replay for newcomers;
//! - limits: a member that never reads is dropped while the others get every
//!   line; one stuck between the resume mark and the cap does not freeze a
//!   paused room; over-long lines are refused and skipped (the refusal in
//!   order with the member's other answers), 4096 bytes pass;
//! - hostile text (escape sequences, control characters, invalid UTF-8,
//!   bidi overrides and invisible characters) arrives neutralised at
//!   members, on the console and in the chat log; the client escapes what a
//!   hostile server sends, its `OK joined as` line included;
//! - impersonation (issue 17): reserved names on every path (`CHAT` and
//!   `/nick`, the operator's name after it left, look-alikes folded), server
//!   notices (`*** `) no member can frame, the operator's `/kick` and `/ban`
//!   (by address from 127.0.0.2/127.0.0.3, and the /64 on `::1`);
//! - the chat log: written before delivery (a `kill -KILL` after delivery
//!   loses nothing), lossless (a real ESC and a typed `\x1b` stay apart),
//!   and a log directory that cannot be created does not stop the room;
//! - the `netsh chat` client: `--send`, `--json`, stdin, `--wait`, a server
//!   that goes away, a refused port, bad words; the operator of a foreground
//!   `netsh serve` (stdin lines; its name cannot be taken) and of a piped
//!   shell's own server; the interactive client on a pseudo-terminal (an
//!   incoming line does not eat the half-typed one).
//!
//! That a foreground server does not keep every room line in memory is a
//! budget (`budgets.rs`), with [`Peer`], [`join`] and [`body`] from here.
//!
//! Every test that uses an in-process server ends by checking that a fresh
//! ECHO client is still served (`common::assert_serves`). No sleeps as
//! synchronisation: members read the lines they expect (with timeouts),
//! other waits poll with a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    DataDir, KillOnDrop, LIMIT, Opts, ServerProc, TestServer, assert_serves, closed_tcp_port,
    expect_exit, kill, line_channel, netsh, netsh_in, recv_until, show, spawn_pty,
    start_server_with, type_keys, wait_for,
};
use serde_json::Value;

/// Longest a member waits for one expected line.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// The room's line limit (bytes before the terminator).
pub(crate) const MAX_LINE: usize = 4096;

// ---------------------------------------------------------------- helpers

/// A raw TCP member (or line client) with buffered reading.
pub(crate) struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
    name: String,
    /// Bytes read from the socket so far.
    got: usize,
}

impl Peer {
    pub(crate) fn connect(addr: SocketAddr, name: &str) -> Peer {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{name}: connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Flow control may hold a writer back for a while, never for ever.
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_nodelay(true).unwrap();
        Peer {
            s,
            buf: Vec::new(),
            name: name.to_string(),
            got: 0,
        }
    }

    /// A second handle on the same connection (for a reader thread).
    pub(crate) fn split(&self, name: &str) -> Peer {
        assert!(
            self.buf.is_empty(),
            "{}: split with unread bytes",
            self.name
        );
        Peer {
            s: self.s.try_clone().expect("clone socket"),
            buf: Vec::new(),
            name: name.to_string(),
            got: 0,
        }
    }

    pub(crate) fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    fn send_raw(&mut self, b: &[u8]) {
        self.s
            .write_all(b)
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
    }

    /// The next line (terminator stripped), or `None` at a clean EOF.
    fn try_raw_line(&mut self) -> Option<Vec<u8>> {
        let end = Instant::now() + READ_LIMIT;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut l: Vec<u8> = self.buf.drain(..=i).collect();
                l.pop();
                return Some(l);
            }
            assert!(
                Instant::now() < end,
                "{}: no whole line within {READ_LIMIT:?}; so far {:?}",
                self.name,
                String::from_utf8_lossy(&self.buf)
            );
            match self.s.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "{}: EOF inside a line: {:?}",
                        self.name,
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
                Ok(n) => {
                    self.got += n;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "{}: read: {e} (unread {:?})",
                    self.name,
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    fn raw_line(&mut self) -> Vec<u8> {
        let name = self.name.clone();
        self.try_raw_line()
            .unwrap_or_else(|| panic!("{name}: EOF where a line was expected"))
    }

    /// The next line, which must be UTF-8 (the room never sends anything else).
    pub(crate) fn line(&mut self) -> String {
        let raw = self.raw_line();
        String::from_utf8(raw).unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", self.name))
    }

    /// The next line is a room line whose text after the time is `want`.
    fn expect(&mut self, want: &str) {
        let l = self.line();
        assert_eq!(body(&l), want, "{}: whole line {l:?}", self.name);
    }

    /// `BYE`, then the server closes.
    fn expect_bye_eof(&mut self) {
        assert_eq!(self.line(), "BYE", "{}", self.name);
        self.expect_eof();
    }

    fn expect_eof(&mut self) {
        if let Some(l) = self.try_raw_line() {
            panic!(
                "{}: expected EOF, got {:?}",
                self.name,
                String::from_utf8_lossy(&l)
            );
        }
    }

    fn local(&self) -> SocketAddr {
        self.s.local_addr().unwrap()
    }
}

/// Connect and send `CHAT nick`; returns the member and its `OK` line.
fn join_raw(addr: SocketAddr, nick: &str) -> (Peer, String) {
    let mut p = Peer::connect(addr, nick);
    p.send(&format!("CHAT {nick}"));
    let ok = p.line();
    (p, ok)
}

/// Join a room without replay (or an empty one): exactly the `OK` line with
/// the member count, then the member's own join notice.
pub(crate) fn join(addr: SocketAddr, nick: &str, in_room: usize) -> Peer {
    let (mut p, ok) = join_raw(addr, nick);
    assert_eq!(ok, format!("OK joined as {nick} ({in_room} in room)"));
    p.expect(&format!("*** {nick} joined"));
    p
}

/// The text of a room line after its `[HH:MM:SS] ` time, which is checked.
pub(crate) fn body(line: &str) -> &str {
    let b = line.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let ok = b.len() >= 11
        && b[0] == b'['
        && digit(1)
        && digit(2)
        && b[3] == b':'
        && digit(4)
        && digit(5)
        && b[6] == b':'
        && digit(7)
        && digit(8)
        && b[9] == b']'
        && b[10] == b' ';
    assert!(ok, "not a [HH:MM:SS] room line: {line:?}");
    &line[11..]
}

/// A server with `replay` lines of replay and an optional chat log.
fn server(replay: usize, log: Option<PathBuf>) -> TestServer {
    start_server_with(
        "127.0.0.1",
        Opts {
            chat_log_dir: log,
            chat_replay: replay,
            ntp: None,
            ..Default::default()
        },
    )
}

/// Every record of the chat log files under `dir`, in order.
fn log_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for l in text.lines() {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l:?}", f.display()));
            out.push(v);
        }
    }
    out
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
}

/// A member's connection read on a thread (with what its [`Peer`] had
/// buffered): every line, for polling.
struct Tap {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Tap {
    fn new(p: &mut Peer) -> Tap {
        let mut s = p.s.try_clone().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let tap = Tap {
            lines: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (lines, stop) = (Arc::clone(&tap.lines), Arc::clone(&tap.stop));
        let mut buf = std::mem::take(&mut p.buf);
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let l: Vec<u8> = buf.drain(..=i).collect();
                    let l = String::from_utf8_lossy(&l[..i]).into_owned();
                    lines.lock().unwrap().push(l);
                }
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match s.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        tap
    }

    fn has(&self, body_is: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.get(11..) == Some(body_is))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A value polled until it stays the same for 50 polls in a row (≤ 5 s).
fn settled(f: impl Fn() -> i64) -> i64 {
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = f();
    let mut same = 0;
    while same < 50 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
        let v = f();
        if v == last {
            same += 1;
        } else {
            (last, same) = (v, 0);
        }
    }
    last
}

// ---------------------------------------------------------------- the room

/// Issue 13: lines for everyone go out as one shared batch per turn; a
/// private reply in the middle of them (here `/who`, in the same read as
/// the lines around it) must still arrive between them, and only to its
/// asker.
#[test]
fn a_private_reply_keeps_its_place_among_shared_lines() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");
    // One write: the room handles all three in one turn.
    a.send_raw(b"one\n/who\ntwo\nthree\n");
    let got: Vec<String> = (0..4).map(|_| body(&a.line()).to_string()).collect();
    assert_eq!(
        got,
        [
            "<a> one",
            "*** in the room (2): a, b",
            "<a> two",
            "<a> three"
        ],
        "the asker's lines in the room's order"
    );
    let got: Vec<String> = (0..3).map(|_| body(&b.line()).to_string()).collect();
    assert_eq!(
        got,
        ["<a> one", "<a> two", "<a> three"],
        "b gets no /who reply"
    );
}

#[test]
fn members_get_every_line_in_one_order_with_their_own_as_acknowledgement() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");
    let mut c = join(srv.addr, "c", 3);
    a.expect("*** c joined");
    b.expect("*** c joined");

    // Everyone talks at once; nobody waits for anything before sending.
    const K: usize = 25;
    for i in 0..K {
        a.send(&format!("from a #{i}"));
        b.send(&format!("from b #{i}"));
        c.send(&format!("from c #{i}"));
    }
    let mut seen: Vec<Vec<String>> = Vec::new();
    for m in [&mut a, &mut b, &mut c] {
        let lines: Vec<String> = (0..3 * K).map(|_| body(&m.line()).to_string()).collect();
        for nick in ["a", "b", "c"] {
            let mine: Vec<String> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("<{nick}> ")))
                .cloned()
                .collect();
            let want: Vec<String> = (0..K)
                .map(|i| format!("<{nick}> from {nick} #{i}"))
                .collect();
            assert_eq!(mine, want, "{}: {nick}'s lines, in order", m.name);
        }
        seen.push(lines);
    }
    // One loop hands out each line to all members at once: one order for all.
    assert_eq!(seen[0], seen[1], "a and b saw different orders");
    assert_eq!(seen[0], seen[2], "a and c saw different orders");

    // A member whose connection just closes has left.
    drop(a);
    b.expect("*** a left");
    c.expect("*** a left");
    b.send("still here");
    b.expect("<b> still here");
    c.expect("<b> still here");
    assert!(
        !srv.lines_with("[CHAT]").is_empty(),
        "the console shows room lines"
    );
    assert_serves(srv.addr);
}

#[test]
fn nicknames_clash_are_checked_and_change() {
    let srv = server(0, None);
    let mut bob = join(srv.addr, "bob", 1);
    let (mut bob2, ok) = join_raw(srv.addr, "bob");
    assert_eq!(ok, "OK joined as bob2 (2 in room)");
    bob2.expect("*** bob2 joined");
    bob.expect("*** bob2 joined");

    // Bad nicknames: refused, and the connection stays a usable line client.
    let mut x = Peer::connect(srv.addr, "x");
    let long = "n".repeat(33);
    for bad in [
        "CHAT".to_string(),
        "CHAT a b".to_string(),
        "CHAT \u{1b}[2J".to_string(),
        format!("CHAT {long}"),
    ] {
        x.send(&bad);
        let l = x.line();
        assert!(l.starts_with("ERR "), "{bad:?} → {l:?}");
        assert!(!l.contains('\u{1b}'), "no raw escape in {l:?}");
    }
    x.send("ECHO still a line client");
    assert_eq!(x.line(), "ECHO_RESPONSE:still a line client");
    let nick32 = "n".repeat(32);
    x.send(&format!("CHAT {nick32}"));
    assert_eq!(x.line(), format!("OK joined as {nick32} (3 in room)"));
    x.expect(&format!("*** {nick32} joined"));
    bob.expect(&format!("*** {nick32} joined"));
    bob2.expect(&format!("*** {nick32} joined"));

    // /nick: taken, invalid, then a free name announced to everyone.
    bob2.send("/nick bob");
    assert_eq!(bob2.line(), "ERR nickname bob is taken");
    bob2.send("/nick b c");
    assert!(bob2.line().starts_with("ERR "), "invalid new nickname");
    bob2.send("/nick rob");
    for m in [&mut bob2, &mut bob, &mut x] {
        m.expect("*** bob2 is now known as rob");
    }
    bob2.send("hi as rob");
    for m in [&mut bob2, &mut bob, &mut x] {
        m.expect("<rob> hi as rob");
    }
    // The old name is free again.
    let (mut again, ok) = join_raw(srv.addr, "bob2");
    assert_eq!(ok, "OK joined as bob2 (4 in room)");
    again.expect("*** bob2 joined");
    assert_serves(srv.addr);
}

#[test]
fn who_me_help_unknown_exit_and_quit() {
    let srv = server(0, None);
    let mut zed = join(srv.addr, "zed", 1);
    let mut amy = join(srv.addr, "amy", 2);
    zed.expect("*** amy joined");
    let mut mia = join(srv.addr, "mia", 3);
    zed.expect("*** mia joined");
    amy.expect("*** mia joined");

    // /who: sorted, to the asker only.
    zed.send("/who");
    zed.expect("*** in the room (3): amy, mia, zed");
    amy.send("after who");
    for m in [&mut zed, &mut amy, &mut mia] {
        m.expect("<amy> after who");
    }

    // /me to all; /help, /bogus and // to the asker (// is a literal slash).
    mia.send("/me waves");
    for m in [&mut zed, &mut amy, &mut mia] {
        m.expect("* mia waves");
    }
    zed.send("/help");
    let help = zed.line();
    assert!(help.starts_with("HELP "), "{help:?}");
    for cmd in ["/me", "/who", "/nick", "/help", "/quit", "exit"] {
        assert!(help.contains(cmd), "help names {cmd}: {help:?}");
    }
    zed.send("/bogus");
    assert_eq!(zed.line(), "ERR unknown command /bogus (try /help)");
    zed.send("//not a command");
    for m in [&mut zed, &mut amy, &mut mia] {
        m.expect("<zed> /not a command");
    }
    // Nobody else got the help or the error: the next line is this one.
    amy.send("sync");
    for m in [&mut zed, &mut amy, &mut mia] {
        m.expect("<amy> sync");
    }

    // exit: the others see the leave; the leaver gets BYE and the close.
    zed.send("exit");
    zed.expect_bye_eof();
    amy.expect("*** zed left");
    mia.expect("*** zed left");
    amy.send("/quit");
    amy.expect_bye_eof();
    mia.expect("*** amy left");
    mia.send("/who");
    mia.expect("*** in the room (1): mia");
    assert!(
        srv.lines_with_at_least("*** zed left", 1).len() == 1,
        "console: {:?}",
        srv.lines_with("[CHAT]")
    );
    assert_serves(srv.addr);
}

#[test]
fn newcomers_get_the_last_lines_replayed() {
    let srv = server(3, None);
    let (mut a, ok) = join_raw(srv.addr, "a");
    assert_eq!(ok, "OK joined as a (1 in room)");
    a.expect("*** a joined");
    for i in 1..=5 {
        a.send(&format!("line {i}"));
        a.expect(&format!("<a> line {i}"));
    }
    // The last 3 lines, right after the OK, then the newcomer's own notice.
    let (mut n, ok) = join_raw(srv.addr, "n");
    assert_eq!(ok, "OK joined as n (2 in room)");
    n.expect("<a> line 3");
    n.expect("<a> line 4");
    n.expect("<a> line 5");
    n.expect("*** n joined");
    a.expect("*** n joined");
    // Notices are room lines too: the window moves on.
    let (mut m, ok) = join_raw(srv.addr, "m");
    assert_eq!(ok, "OK joined as m (3 in room)");
    m.expect("<a> line 4");
    m.expect("<a> line 5");
    m.expect("*** n joined");
    m.expect("*** m joined");
    assert_serves(srv.addr);
}

#[test]
fn a_member_that_never_reads_is_dropped_and_the_others_get_every_line() {
    let srv = server(0, None);
    let mut fast = join(srv.addr, "fast", 1);
    let mut snd = join(srv.addr, "snd", 2);
    fast.expect("*** snd joined");
    // The slow member sends CHAT and never reads a byte.
    let mut slow = Peer::connect(srv.addr, "slow");
    slow.send("CHAT slow");
    fast.expect("*** slow joined");
    snd.expect("*** slow joined");
    assert!(fast.buf.is_empty() && snd.buf.is_empty());

    // 1. Fill what the kernel holds for slow, until the server itself holds
    //    lines for it and that stays so: then no socket buffer still grows
    //    to take back what the server held (which could leave slow under
    //    the cap but over the resume mark; see
    //    `a_member_stuck_under_the_cap_does_not_freeze_a_paused_room`).
    //    Held = made for slow, less written to its socket (all written, less
    //    what fast and snd got); exact when all is read and the server idle.
    let room_line = |text: &str| (11 + text.len() + 1) as i64;
    let made_slow =
        ("OK joined as slow (3 in room)".len() + 1) as i64 + room_line("*** slow joined");
    let (made_fast, made_snd) = (fast.got as i64, snd.got as i64);
    let out = || srv.handle.stats.bytes_out.load(Ordering::SeqCst) as i64;
    // With `l` bytes of lines since: made for the three, less all written.
    let held = |l: i64| (made_slow + l) + (made_fast + l) + (made_snd + l) - out();
    let pad = "x".repeat(MAX_LINE - 16);
    let mut sent = 0;
    let mut l = 0;
    loop {
        assert!(sent < 4000, "no output ever held for slow");
        for k in sent..sent + 32 {
            snd.send(&format!("L{k} {pad}"));
        }
        for k in sent..sent + 32 {
            let text = format!("<snd> L{k} {pad}");
            fast.expect(&text);
            snd.expect(&text);
            l += room_line(&text);
        }
        sent += 32;
        // Never under the truth, so 0 is exact: only then settle.
        if held(l) > 0 && settled(|| held(l)) > 4096 {
            break;
        }
    }
    let first = sent;

    // 2. Lines in bulk until slow is dropped, then some more.
    let dropped = Arc::new(AtomicBool::new(false));
    // Both reading members collect the sender's line numbers until END.
    let reader = |mut p: Peer, dropped: Arc<AtomicBool>| {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut drops = 0;
            loop {
                let l = p.line();
                let t = body(&l).to_string();
                if t == "*** slow was dropped (not reading)" {
                    drops += 1;
                    dropped.store(true, Ordering::SeqCst);
                } else if t == "<snd> END" {
                    break;
                } else if let Some(rest) = t.strip_prefix("<snd> L") {
                    let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
                    got.push(n);
                } else {
                    panic!("{}: unexpected line {l:?}", p.name);
                }
            }
            (got, drops)
        })
    };
    let fast_t = reader(fast.split("fast reader"), Arc::clone(&dropped));
    let snd_t = reader(snd.split("snd reader"), Arc::clone(&dropped));

    // Bounded: 4000 lines of 4 KiB in all.
    const MAX: usize = 4000;
    const AFTER: usize = 50;
    let mut stop_at = None;
    while sent < MAX {
        if stop_at.is_none() && dropped.load(Ordering::SeqCst) {
            stop_at = Some(sent + AFTER);
        }
        if stop_at == Some(sent) {
            break;
        }
        let line = format!("L{sent} {pad}");
        assert!(line.len() <= MAX_LINE);
        snd.send(&line);
        sent += 1;
    }
    assert!(
        stop_at.is_some(),
        "the slow member was not dropped after {MAX} lines of 4 KiB; console: {:?}",
        srv.lines_with("[CHAT]")
    );
    snd.send("END");
    let want: Vec<usize> = (first..sent).collect();
    for (who, t) in [("fast", fast_t), ("snd", snd_t)] {
        let (got, drops) = t.join().expect("reader thread");
        assert_eq!(drops, 1, "{who} saw the drop notice once");
        // (Not assert_eq: thousands of numbers would drown the message.)
        assert!(
            got == want,
            "{who} got {} of {sent} lines, or not in order",
            got.len()
        );
    }
    assert_eq!(
        srv.lines_with_at_least("*** slow was dropped (not reading)", 1)
            .len(),
        1,
        "console says it once"
    );

    // The slow member: what the kernel held, then the close; never END.
    let mut all = Vec::new();
    let end = Instant::now() + READ_LIMIT;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        assert!(Instant::now() < end, "the dropped member was not closed");
        match slow.s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("slow: read: {e}"),
        }
        assert!(all.len() < 64 << 20, "the dropped member got over 64 MiB");
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("OK joined as slow (3 in room)\n"));
    assert!(!text.contains("<snd> END"), "no lines after the drop");

    // The room goes on for the others.
    fast.send("after the drop");
    fast.expect("<fast> after the drop");
    snd.expect("<fast> after the drop");
    assert_serves(srv.addr);
}

/// Regression (d8387ad): room_flow dropped stalled members only over the
/// cap and resumed only when all were under half of it, so a member stuck
/// in between kept a paused room paused for ever.
#[test]
fn a_member_stuck_under_the_cap_does_not_freeze_a_paused_room() {
    const CAP: i64 = 256 * 1024;
    let srv = server(0, None);
    let (mut fast, fast_ok) = join_raw(srv.addr, "fast");
    let fast_tap = Tap::new(&mut fast);
    let (mut holder, ok) = join_raw(srv.addr, "holder");
    assert_eq!(ok, "OK joined as holder (2 in room)");
    holder.expect("*** holder joined");
    assert!(holder.buf.is_empty());
    assert!(wait_for(READ_LIMIT, || fast_tap.has("*** holder joined")));
    // From here holder reads nothing. What the room made for each (room
    // lines: the time, 11 bytes, the text, a newline):
    let room_line = |text: &str| (11 + text.len() + 1) as i64;
    let mut made_holder = holder.got as i64;
    let mut made_fast =
        (fast_ok.len() + 1) as i64 + room_line("*** fast joined") + room_line("*** holder joined");
    let out = || srv.handle.stats.bytes_out.load(Ordering::SeqCst) as i64;
    // Held for holder in the server: made for it, less written to its
    // socket. Exact once fast has all its lines and the server is idle;
    // an overestimate before.
    let held = |made_holder: i64, made_fast: i64| made_holder - (out() - made_fast);

    // 1. fast talks until about 3/4 of the cap waits for holder.
    let pad = "x".repeat(MAX_LINE - 16);
    let mut i = 0;
    let held_now = loop {
        assert!(i < 4000, "holder's queue never grew");
        let n = if held(made_holder, made_fast) + 40 * 4200 < CAP * 3 / 4 {
            32
        } else {
            1
        };
        for _ in 0..n {
            let text = format!("L{i} {pad}");
            fast.send(&text);
            let len = room_line(&format!("<fast> {text}"));
            made_holder += len;
            made_fast += len;
            i += 1;
        }
        let want = format!("<fast> L{} {pad}", i - 1);
        assert!(
            wait_for(READ_LIMIT, || fast_tap.has(&want)),
            "line {}",
            i - 1
        );
        if n == 1 {
            let h = settled(|| held(made_holder, made_fast));
            if h >= CAP * 3 / 4 {
                break h;
            }
        }
    };
    assert!(
        held_now > CAP / 2 + 8192 && held_now <= CAP - 8192,
        "setup: {held_now}"
    );

    // 2. Another member floods itself with error replies (unknown commands
    //    go to it alone) without reading, until its queue passes the cap:
    //    the room pauses, and reads from nobody.
    let mut flood = Peer::connect(srv.addr, "flood");
    flood.send("CHAT flood");
    assert!(wait_for(READ_LIMIT, || fast_tap.has("*** flood joined")));
    let bytes_in = || srv.handle.stats.bytes_in.load(Ordering::SeqCst) as i64;
    let before = settled(bytes_in);
    let mut w = flood.s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let written2 = Arc::clone(&written);
    let bogus = format!("/{}\n", "b".repeat(MAX_LINE - 8));
    let flooder = std::thread::spawn(move || {
        for _ in 0..2000 {
            if w.write_all(bogus.as_bytes()).is_err() {
                break; // held back: the room stopped reading
            }
            written2.fetch_add(bogus.len(), Ordering::SeqCst);
        }
    });
    assert!(
        wait_for(Duration::from_secs(20), || {
            settled(bytes_in) - before < written.load(Ordering::SeqCst) as i64
        }),
        "the room stopped reading the flood"
    );

    // 3. holder waits with about 3/4 of the cap queued and reads nothing.
    //    The room must not stay paused for ever.
    fast.send("are we frozen?");
    let flowed = wait_for(Duration::from_secs(10), || {
        fast_tap.has("<fast> are we frozen?")
    });
    assert!(
        flowed,
        "the room is frozen: holder has {held_now} bytes queued (cap {CAP}), reads nothing, \
         and is never dropped"
    );
    let _ = flooder.join();
    assert_serves(srv.addr);
}

#[test]
fn escapes_controls_and_bad_utf8_arrive_neutralised_everywhere() {
    let dir = DataDir::new();
    let log = dir.path().join("chat");
    let srv = server(0, Some(log.clone()));
    let mut a = join(srv.addr, "a", 1);
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");

    let evil: &[u8] =
        b"cls \x1b[2J bell \x07 bad \xff\xfe csi \xc2\x9b31m cr \r nul \x00 del \x7f end";
    let shown =
        "cls \\x1b[2J bell \\x07 bad \u{fffd}\u{fffd} csi \\x9b31m cr \\r nul \\x00 del \\x7f end";
    let mut line = evil.to_vec();
    line.push(b'\n');
    a.send_raw(&line);
    a.send_raw(b"/me sets \x1b]0;title\x07 \xe2\x28\xa1\n");
    let me_shown = "* a sets \\x1b]0;title\\x07 \u{fffd}(\u{fffd}";
    for m in [&mut b, &mut a] {
        for want in [format!("<a> {shown}"), me_shown.to_string()] {
            let raw = m.raw_line();
            assert!(
                raw.iter().all(|&c| c >= 0x20 && c != 0x7f),
                "{}: a control byte arrived: {raw:?}",
                m.name
            );
            let l = String::from_utf8(raw).expect("UTF-8");
            assert!(!l.chars().any(char::is_control), "C1 control in {l:?}");
            assert_eq!(body(&l), want, "{}", m.name);
        }
    }

    // The console.
    let said = srv.lines_with_at_least(&format!("<a> {shown}"), 1);
    assert_eq!(said.len(), 1, "console: {:?}", srv.lines_with("[CHAT]"));
    assert!(said[0].starts_with("[CHAT] ["), "{:?}", said[0]);
    assert_eq!(srv.lines_with_at_least(me_shown, 1).len(), 1);
    for l in srv.lines.lock().unwrap().iter() {
        assert!(!l.chars().any(char::is_control), "console line {l:?}");
    }

    // The log: JSON lines with the text as it was said (lossless: the
    // invalid bytes in `bytes_hex`), and no raw control byte in the file.
    let recs = log_records(&log);
    let say: Vec<&Value> = recs.iter().filter(|r| s(r, "kind") == "say").collect();
    assert_eq!(say.len(), 1, "{recs:?}");
    assert_eq!(
        s(say[0], "text"),
        String::from_utf8_lossy(evil).trim_end(),
        "{}",
        say[0]
    );
    assert_eq!(s(say[0], "bytes_hex"), hex(evil));
    assert_eq!(s(say[0], "nick"), "a");
    let me: Vec<&Value> = recs.iter().filter(|r| s(r, "kind") == "me").collect();
    assert_eq!(me.len(), 1, "{recs:?}");
    assert_eq!(
        s(me[0], "text"),
        "sets \u{1b}]0;title\u{7} \u{fffd}(\u{fffd}"
    );
    assert_eq!(
        s(me[0], "bytes_hex"),
        hex(b"/me sets \x1b]0;title\x07 \xe2\x28\xa1")
    );
    for e in std::fs::read_dir(&log).unwrap() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        let text = String::from_utf8(raw).expect("the log is UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a raw control character in the log: {text:?}"
        );
    }
    assert_serves(srv.addr);
}

/// Lower-case hex of `b`, as the log's `bytes_hex`.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// True for the invisible and bidi characters the room must never pass on
/// (spelled out, not imported from src/, so a change there has to be a
/// deliberate change here too).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

#[test]
fn bidi_overrides_and_invisible_characters_arrive_escaped_everywhere() {
    let dir = DataDir::new();
    let log = dir.path().join("chat");
    let srv = server(0, Some(log.clone()));
    let mut a = join(srv.addr, "a", 1);
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");

    // "Trojan Source": shows as "pay exe.txt now" in a bidi-aware terminal.
    a.send(
        "pay \u{202e}\u{2066}txt.exe\u{2069}\u{2066} now\u{200b}\u{feff}\u{2028} \
         café 日本 😀",
    );
    a.send("/me hides\u{e0041}\u{00ad}\u{200f}");
    let shown = "pay \\u{202e}\\u{2066}txt.exe\\u{2069}\\u{2066} now\\u{200b}\\u{feff}\\u{2028} \
                 café 日本 😀";
    let me_shown = "* a hides\\u{e0041}\\xad\\u{200f}";
    for m in [&mut b, &mut a] {
        for want in [format!("<a> {shown}"), me_shown.to_string()] {
            let l = m.line();
            assert!(!l.chars().any(invisible), "{}: raw in {l:?}", m.name);
            assert_eq!(body(&l), want, "{}", m.name);
        }
    }

    // The console.
    assert_eq!(srv.lines_with_at_least(&format!("<a> {shown}"), 1).len(), 1);
    assert_eq!(srv.lines_with_at_least(me_shown, 1).len(), 1);
    for l in srv.lines.lock().unwrap().iter() {
        assert!(!l.chars().any(invisible), "console line {l:?}");
    }

    // The log: the JSON text is what was said (the characters \uXXXX-escaped
    // in the JSON), and the file itself holds no raw bidi or invisible
    // character.
    let recs = log_records(&log);
    let say: Vec<&Value> = recs.iter().filter(|r| s(r, "kind") == "say").collect();
    assert_eq!(say.len(), 1, "{recs:?}");
    assert_eq!(
        s(say[0], "text"),
        "pay \u{202e}\u{2066}txt.exe\u{2069}\u{2066} now\u{200b}\u{feff}\u{2028} café 日本 😀"
    );
    assert!(say[0].get("bytes_hex").is_none(), "UTF-8: {}", say[0]);
    let me: Vec<&Value> = recs.iter().filter(|r| s(r, "kind") == "me").collect();
    assert_eq!(me.len(), 1, "{recs:?}");
    assert_eq!(s(me[0], "text"), "hides\u{e0041}\u{00ad}\u{200f}");
    for e in std::fs::read_dir(&log).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!text.chars().any(invisible), "raw in the log: {text:?}");
    }
    assert_serves(srv.addr);
}

#[test]
fn overlong_lines_are_refused_and_skipped_and_4096_bytes_pass() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");
    let refused = format!("ERR line too long (max {MAX_LINE} bytes); not sent");

    // 1 MiB in one line, then a normal one.
    let mut big = vec![b'x'; 1 << 20];
    big.push(b'\n');
    a.send_raw(&big);
    a.send("after the big one");
    assert_eq!(a.line(), refused);
    a.expect("<a> after the big one");
    b.expect("<a> after the big one");

    // Exactly 4096 bytes (with \n, and with \r\n) pass; 4097 do not.
    let exact = "y".repeat(MAX_LINE);
    a.send(&exact);
    a.send_raw(format!("{exact}\r\n").as_bytes());
    for _ in 0..2 {
        b.expect(&format!("<a> {exact}"));
        a.expect(&format!("<a> {exact}"));
    }
    a.send(&"z".repeat(MAX_LINE + 1));
    a.send("after 4097");
    assert_eq!(a.line(), refused);
    a.expect("<a> after 4097");
    b.expect("<a> after 4097");

    // A long line split over many writes is refused too.
    for _ in 0..64 {
        a.send_raw(&[b'w'; 1024]);
    }
    a.send_raw(b"\nafter split\n");
    assert_eq!(a.line(), refused);
    a.expect("<a> after split");
    b.expect("<a> after split");
    b.send("b is fine");
    b.expect("<b> b is fine");
    a.expect("<b> b is fine");
    for l in srv.lines_with("[CHAT]") {
        assert!(
            !l.contains("xxxxxxxx") && !l.contains("wwwwwwww") && !l.contains("zzzzzzzz"),
            "{l:.80}"
        );
    }
    assert_serves(srv.addr);
}

/// Regression (d8387ad): the refusal was queued at once in `Conn::lines`,
/// ahead of the room's answers to earlier lines from the same read.
#[test]
fn a_refused_line_does_not_overtake_earlier_acknowledgements() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    // One write: a good line, then one over the limit, then another good one.
    let mut burst = b"first\n".to_vec();
    burst.extend_from_slice(&[b'z'; MAX_LINE + 1]);
    burst.extend_from_slice(b"\nlast\n");
    a.send_raw(&burst);
    // Replies in the order of the lines they answer.
    a.expect("<a> first");
    assert_eq!(
        a.line(),
        format!("ERR line too long (max {MAX_LINE} bytes); not sent")
    );
    a.expect("<a> last");
    assert_serves(srv.addr);
}

#[test]
fn an_unwritable_log_dir_is_said_once_and_the_room_works() {
    let dir = DataDir::new();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let srv = server(0, Some(file.join("chat")));
    let warn = "cannot write the chat log";
    assert!(
        wait_for(Duration::from_secs(5), || !srv.lines_with(warn).is_empty()),
        "the console says the log cannot be written: {:?}",
        srv.lines.lock().unwrap()
    );
    let mut a = join(srv.addr, "a", 1);
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");
    for i in 0..10 {
        a.send(&format!("unlogged {i}"));
        a.expect(&format!("<a> unlogged {i}"));
        b.expect(&format!("<a> unlogged {i}"));
    }
    b.send("/me is still here");
    a.expect("* b is still here");
    b.expect("* b is still here");
    let warned = srv.lines_with(warn);
    assert_eq!(warned.len(), 1, "said once: {warned:?}");
    assert!(warned[0].starts_with("[CHAT] "), "{warned:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    assert_serves(srv.addr);
}

#[test]
fn a_record_cut_short_by_a_full_disk_does_not_swallow_the_next() {
    // The disk filled mid-record earlier: the file ends without a newline.
    // The next record must start on a line of its own (it used to be glued
    // to the cut one, leaving neither valid JSON).
    let dir = DataDir::new();
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let file = dir.path().join(format!("{day}.jsonl"));
    std::fs::write(&file, b"{\"time\":\"cut\",\"nick\":\"a\",\"te").unwrap();
    let srv = server(0, Some(dir.path().to_path_buf()));
    let mut a = join(srv.addr, "after", 1);
    a.send("whole again");
    a.expect("<after> whole again");
    srv.stop();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("{\"time\":\"cut\",\"nick\":\"a\",\"te"),
        "{text}"
    );
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    assert!(rest.iter().any(|r| s(r, "text") == "whole again"), "{text}");
    assert!(text.ends_with('\n'));
}

#[test]
fn the_log_is_written_before_delivery_and_survives_kill_9() {
    let dir = DataDir::new();
    let mut srv = ServerProc::spawn(dir.path(), "", &["--no-ntp", "--chat-history", "0"]);
    // The foreground server's operator is a member: two in the room.
    let mut a = join(srv.addr(), "a", 2);
    let mut b = join(srv.addr(), "b", 3);
    a.expect("*** b joined");
    const N: usize = 40;
    for i in 0..N {
        a.send(&format!("a says {i}"));
    }
    for i in 0..N {
        b.expect(&format!("<a> a says {i}"));
    }
    for i in 0..N {
        b.send(&format!("b says {i}"));
    }
    for i in 0..N {
        a.expect(&format!("<a> a says {i}"));
    }
    for i in 0..N {
        a.expect(&format!("<b> b says {i}"));
    }
    // Every line was read by another member: now the server dies at once.
    kill("KILL", srv.pid());
    let st = expect_exit(&mut srv.child, Duration::from_secs(10));
    assert!(!st.success(), "killed: {st:?}");

    let recs = log_records(&dir.path().join("logs/chat"));
    let says: Vec<&Value> = recs.iter().filter(|r| s(r, "kind") == "say").collect();
    assert_eq!(says.len(), 2 * N, "{recs:#?}");
    let (a_addr, b_addr) = (a.local().to_string(), b.local().to_string());
    for (i, r) in says.iter().enumerate() {
        let (nick, addr, text) = if i < N {
            ("a", &a_addr, format!("a says {i}"))
        } else {
            ("b", &b_addr, format!("b says {}", i - N))
        };
        assert_eq!(s(r, "nick"), nick, "{r}");
        assert_eq!(s(r, "addr"), addr.as_str(), "{r}");
        assert_eq!(s(r, "text"), text, "{r}");
        let t = chrono::DateTime::parse_from_rfc3339(s(r, "time"))
            .unwrap_or_else(|e| panic!("time in {r}: {e}"));
        assert!(
            (chrono::Utc::now() - t.to_utc()).num_seconds().abs() < 600,
            "{r}"
        );
    }
    let joins: Vec<&str> = recs
        .iter()
        .filter(|r| s(r, "kind") == "join")
        .map(|r| s(r, "nick"))
        .collect();
    assert_eq!(joins, ["operator", "a", "b"]);
    let op = recs.iter().find(|r| s(r, "nick") == "operator").unwrap();
    assert_eq!(s(op, "addr"), "operator");
}

/// A member that says `/quit` and closes at once frees its connection slot;
/// a newcomer accepted into that slot in the same server turn used to be
/// closed by the leaver's `/quit` (handled later, by slot number).
#[test]
fn a_leaver_s_quit_never_closes_the_newcomer_that_took_its_place() {
    let srv = server(0, None);
    let mut stay = join(srv.addr, "stay", 1);
    for i in 0..300 {
        let mut old = join(srv.addr, &format!("old{i}"), 2);
        stay.expect(&format!("*** old{i} joined"));
        old.send_raw(b"last words\n/quit\n");
        drop(old);
        let (mut new, ok) = join_raw(srv.addr, &format!("new{i}"));
        assert!(
            ok.starts_with(&format!("OK joined as new{i} (")),
            "round {i}: {ok:?}"
        );
        new.send("/quit");
        assert_eq!(
            new.line().split_once("] ").map(|x| x.1).unwrap_or(""),
            format!("*** new{i} joined"),
            "round {i}"
        );
        // Everything `stay` sees in this round, until new's leave.
        let mut seen = Vec::new();
        loop {
            let l = stay.line();
            let done = l.ends_with(&format!("*** new{i} left"));
            seen.push(l);
            if done {
                break;
            }
        }
        assert!(
            seen.iter()
                .any(|l| l.ends_with(&format!("<old{i}> last words"))),
            "round {i}: {seen:?}"
        );
    }
    assert_serves(srv.addr);
}

/// Regression (d8387ad): `/nick operator` was allowed though `CHAT operator`
/// is renamed: a member could speak as `<operator>`. Since issue 17 the
/// operator's title is refused outright, variants (`operator2`) included.
#[test]
fn a_member_cannot_rename_itself_to_the_operator() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    // Joining as "operator", or a variant of it, is refused on the join.
    for nick in ["operator", "operator2", "Operator"] {
        let (mut b, ok) = join_raw(srv.addr, nick);
        assert_eq!(
            ok,
            format!("ERR nickname {nick} is reserved for the server's operator")
        );
        b.expect_eof();
    }
    let mut b = join(srv.addr, "b", 2);
    a.expect("*** b joined");
    // …and /nick does not give the name either.
    b.send("/nick operator");
    let l = b.line();
    assert!(l.starts_with("ERR "), "impersonation allowed: {l:?}");
    b.send("still me");
    b.expect("<b> still me");
    a.expect("<b> still me");
    // With the operator in the room, its name is taken as well.
    let _op = srv.handle.attach_operator();
    a.expect("*** operator joined (the server's operator)");
    b.expect("*** operator joined (the server's operator)");
    b.send("/nick operator");
    assert!(b.line().starts_with("ERR "));
    b.send("/who");
    b.expect("*** in the room (3): a, b, operator");
    // Nicknames compare without case: no `OPERATOR`, no second `a` as `A`.
    let (mut c, ok) = join_raw(srv.addr, "A");
    assert_eq!(ok, "OK joined as A2 (4 in room)");
    c.expect("*** A2 joined");
    c.send("/nick OPERATOR");
    assert!(c.line().starts_with("ERR "), "OPERATOR allowed");
    c.send("/nick a");
    assert!(c.line().starts_with("ERR "), "a second 'a' allowed");
    // A member may change the case of its own name.
    c.send("/nick a2");
    let renamed = (0..20)
        .map(|_| c.line())
        .find(|l| !l.contains(" joined") && !l.contains(" left"));
    let renamed = renamed.expect("an answer to /nick");
    assert!(
        renamed.ends_with("*** A2 is now known as a2"),
        "{renamed:?}"
    );
    assert_serves(srv.addr);
}

/// Issue 17: reserved names were checked by `/nick` only, and only exactly:
/// after the operator's `/nick admin` and leaving, `CHAT admin` got the
/// name, and `0perator` or `admin2` passed for the operator.
#[test]
fn reserved_names_hold_on_every_path_with_look_alikes_folded() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    let op = srv.handle.attach_operator();
    a.expect("*** operator joined (the server's operator)");
    assert!(srv.handle.operator_say("/nick admin"));
    a.expect("*** operator is now known as admin");
    // The operator leaves: its name stays its own.
    srv.handle.detach_operator();
    a.expect("*** admin left");
    drop(op);

    let reserved = [
        "admin",
        "ADMIN",
        "Admin",
        "admin2",
        "admin_",
        "Admin.1",
        "adrnin",
        "operator",
        "0perator",
        "0PERAT0R",
        "operator2",
        "operators",
    ];
    for nick in reserved {
        let (mut m, ok) = join_raw(srv.addr, nick);
        assert_eq!(
            ok,
            format!("ERR nickname {nick} is reserved for the server's operator"),
            "CHAT {nick}"
        );
        m.expect_eof();
    }
    // Non-ASCII look-alikes (Cyrillic О, a zero-width space, fullwidth
    // letters) are not nicknames at all: refused, the connection stays a
    // line client.
    let mut x = Peer::connect(srv.addr, "x");
    for nick in [
        "\u{41e}PERATOR",
        "oper\u{200b}ator",
        "\u{ff4f}perator",
        "adm\u{456}n",
    ] {
        x.send(&format!("CHAT {nick}"));
        let l = x.line();
        assert!(
            l.starts_with("ERR a nickname may have only"),
            "{nick:?} → {l:?}"
        );
    }
    x.send("ECHO still a line client");
    assert_eq!(x.line(), "ECHO_RESPONSE:still a line client");

    // The same rule for /nick.
    for nick in reserved {
        a.send(&format!("/nick {nick}"));
        assert_eq!(
            a.line(),
            format!("ERR nickname {nick} is reserved for the server's operator"),
            "/nick {nick}"
        );
    }
    // Names that only begin like the operator's are free.
    let mut adm = join(srv.addr, "administrator", 2);
    a.expect("*** administrator joined");
    // Taken is folded the same way: `A` is `a`, `b0b` is `bob`.
    let mut bob = join(srv.addr, "bob", 3);
    a.expect("*** bob joined");
    adm.expect("*** bob joined");
    let (mut b2, ok) = join_raw(srv.addr, "b0b");
    assert_eq!(ok, "OK joined as b0b2 (4 in room)");
    b2.expect("*** b0b2 joined");
    bob.expect("*** b0b2 joined");
    bob.send("/nick B0B2");
    assert_eq!(bob.line(), "ERR nickname B0B2 is taken");
    assert_serves(srv.addr);
}

/// Issue 17: `/me joined (the server's operator)` looked exactly like the
/// server's notice. Server notices now start `*** `, which no member line
/// can (a member's text follows `<nick>` or `* nick`).
#[test]
fn a_member_cannot_forge_a_server_notice() {
    let srv = server(0, None);
    let mut a = join(srv.addr, "a", 1);
    let mut eve = join(srv.addr, "eve", 2);
    a.expect("*** eve joined");
    eve.send("/me joined (the server's operator)");
    eve.send("*** operator joined (the server's operator)");
    eve.send("/me is now known as operator");
    for m in [&mut a, &mut eve] {
        let forged = [m.line(), m.line(), m.line()];
        assert_eq!(body(&forged[0]), "* eve joined (the server's operator)");
        assert_eq!(
            body(&forged[1]),
            "<eve> *** operator joined (the server's operator)"
        );
        assert_eq!(body(&forged[2]), "* eve is now known as operator");
        for l in &forged {
            assert!(!body(l).starts_with("*** "), "a member framed {l:?}");
        }
    }
    let _op = srv.handle.attach_operator();
    for m in [&mut a, &mut eve] {
        let real = m.line();
        assert_eq!(body(&real), "*** operator joined (the server's operator)");
    }
    // The console tells them apart the same way.
    assert_eq!(
        srv.lines_with_at_least("] *** operator joined (the server's operator)", 1)
            .len(),
        1
    );
    assert_eq!(
        srv.lines_with_at_least("] * eve joined (the server's operator)", 1)
            .len(),
        1
    );
    assert_serves(srv.addr);
}

/// A member connected from a loopback address of our choice (the whole of
/// 127.0.0.0/8 is this machine).
fn join_from(addr: SocketAddr, from: &str, nick: &str) -> (Peer, String) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("local address");
    sock.bind(&local.into()).expect("bind the client address");
    sock.connect_timeout(&addr.into(), READ_LIMIT)
        .unwrap_or_else(|e| panic!("{nick}: connect {addr} from {from}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut p = Peer {
        s,
        buf: Vec::new(),
        name: nick.to_string(),
        got: 0,
    };
    p.send(&format!("CHAT {nick}"));
    let ok = p.line();
    (p, ok)
}

/// Issue 17: the operator had no way to remove a member. `/kick` closes one
/// with a notice to it and the room; `/ban` also refuses its address.
#[test]
fn the_operator_kicks_and_bans_and_members_cannot() {
    let dir = DataDir::new();
    let log = dir.path().join("chat");
    let srv = server(0, Some(log.clone()));
    let op = srv.handle.attach_operator();
    let from_op = |want: &str| {
        let end = Instant::now() + READ_LIMIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match op.recv_timeout(left) {
                Ok(batch) => {
                    if let Some(l) = batch.into_iter().find(|l| l.contains(want)) {
                        return l;
                    }
                }
                Err(e) => panic!("the operator never got {want:?}: {e}"),
            }
        }
    };
    let mut amy = join(srv.addr, "amy", 2);
    let (mut bob, ok) = join_from(srv.addr, "127.0.0.2", "bob");
    assert_eq!(ok, "OK joined as bob (3 in room)");
    bob.expect("*** bob joined");
    amy.expect("*** bob joined");

    // The operator's help names them; a member's cannot use them.
    assert!(srv.handle.operator_say("/help"));
    let help = from_op("HELP ");
    assert!(
        help.contains("/kick NICK") && help.contains("/ban NICK"),
        "{help}"
    );
    amy.send("/kick bob");
    assert_eq!(amy.line(), "ERR /kick is for the server's operator");
    amy.send("/ban bob");
    assert_eq!(amy.line(), "ERR /ban is for the server's operator");
    assert!(srv.handle.operator_say("/kick nobody"));
    assert_eq!(from_op("ERR "), "ERR no member named nobody (try /who)");
    assert!(
        wait_for(READ_LIMIT, || !srv
            .lines_with("ERR no member named nobody")
            .is_empty()),
        "the console shows the operator's errors"
    );

    // Kick: one line to the member, then the close; the room is told.
    assert!(srv.handle.operator_say("/kick BOB too loud"));
    bob.expect("*** bob was kicked by operator (too loud)");
    bob.expect_eof();
    amy.expect("*** bob was kicked by operator (too loud)");
    // A kick is not a ban.
    let (mut bob, ok) = join_from(srv.addr, "127.0.0.2", "bob");
    assert_eq!(ok, "OK joined as bob (3 in room)");
    bob.expect("*** bob joined");
    amy.expect("*** bob joined");

    // Ban: the same, and 127.0.0.2 is refused from now on.
    assert!(srv.handle.operator_say("/ban bob spam"));
    bob.expect("*** bob was banned by operator (spam)");
    bob.expect_eof();
    amy.expect("*** bob was banned by operator (spam)");
    for nick in ["bob", "someone"] {
        let (mut again, ok) = join_from(srv.addr, "127.0.0.2", nick);
        assert_eq!(ok, "ERR banned: this address may not join this room");
        again.expect_eof();
    }
    // Other addresses are not.
    let (mut carl, ok) = join_from(srv.addr, "127.0.0.3", "carl");
    assert_eq!(ok, "OK joined as carl (3 in room)");
    carl.expect("*** carl joined");
    amy.expect("*** carl joined");

    // Logged in the chat log and on the console.
    let recs = log_records(&log);
    for (kind, text) in [
        ("kick", "was kicked by operator (too loud)"),
        ("ban", "was banned by operator (spam)"),
    ] {
        let r: Vec<&Value> = recs.iter().filter(|r| s(r, "kind") == kind).collect();
        assert_eq!(r.len(), 1, "{kind}: {recs:?}");
        assert_eq!(s(r[0], "nick"), "bob");
        assert_eq!(s(r[0], "text"), text);
        assert!(s(r[0], "addr").starts_with("127.0.0.2:"), "{}", r[0]);
    }
    assert_eq!(
        srv.lines_with_at_least("*** bob was kicked by operator", 1)
            .len(),
        1
    );
    let banned = srv.lines_with_at_least("*** bob was banned by operator (spam)", 1);
    assert_eq!(banned.len(), 1);
    assert!(
        banned[0].contains("127.0.0.2 refused until the server stops"),
        "{banned:?}"
    );
    assert_eq!(
        srv.lines_with("127.0.0.2")
            .iter()
            .filter(|l| l.contains("refused: banned"))
            .count(),
        2,
        "{:?}",
        srv.lines_with("[CHAT]")
    );
    drop(op);
    assert_serves(srv.addr);
}

/// On IPv6 a ban refuses the member's /64 (here the loopback's).
#[test]
fn a_ban_over_ipv6_refuses_its_slash_64() {
    let srv = start_server_with(
        "::1",
        Opts {
            ntp: None,
            chat_replay: 0,
            ..Default::default()
        },
    );
    let _op = srv.handle.attach_operator();
    let (mut m, ok) = join_raw(srv.addr, "six");
    assert_eq!(ok, "OK joined as six (2 in room)");
    m.expect("*** six joined");
    assert!(srv.handle.operator_say("/ban six"));
    m.expect("*** six was banned by operator");
    m.expect_eof();
    let (mut again, ok) = join_raw(srv.addr, "seven");
    assert_eq!(ok, "ERR banned: this address may not join this room");
    again.expect_eof();
    assert!(
        wait_for(READ_LIMIT, || !srv
            .lines_with("::/64 refused until the server stops")
            .is_empty()),
        "{:?}",
        srv.lines_with("[CHAT]")
    );
    assert_serves(srv.addr);
}

/// Issue 17: the log escaped the text for display before JSON-escaping it,
/// so a real ESC and a typed `\x1b` became the same record. It now keeps
/// the raw text (JSON-escaped), and only screens get the escaped form.
#[test]
fn the_log_tells_a_real_escape_from_a_typed_one() {
    let dir = DataDir::new();
    let log = dir.path().join("chat");
    let srv = server(0, Some(log.clone()));
    let mut a = join(srv.addr, "a", 1);
    let real = "colour \u{1b}[31mred";
    let typed = "colour \\x1b[31mred";
    a.send(real);
    a.send(typed);
    a.send("/me \u{1b}]0;t\u{7} vs \\x1b]0;t\\x07");
    // On screen both show as the visible form (that is the point of it).
    a.expect("<a> colour \\x1b[31mred");
    a.expect("<a> colour \\x1b[31mred");
    a.expect("* a \\x1b]0;t\\x07 vs \\x1b]0;t\\x07");
    let recs = log_records(&log);
    let said: Vec<&str> = recs
        .iter()
        .filter(|r| s(r, "kind") == "say")
        .map(|r| s(r, "text"))
        .collect();
    assert_eq!(said, [real, typed], "{recs:?}");
    let me: Vec<&str> = recs
        .iter()
        .filter(|r| s(r, "kind") == "me")
        .map(|r| s(r, "text"))
        .collect();
    assert_eq!(me, ["\u{1b}]0;t\u{7} vs \\x1b]0;t\\x07"]);
    for r in &recs {
        assert!(r.get("bytes_hex").is_none(), "all UTF-8: {r}");
    }
    // The file holds the escape as JSON's \u001b, never the byte.
    for e in std::fs::read_dir(&log).unwrap() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        assert!(
            !raw.contains(&0x1b) && !raw.contains(&0x07),
            "a raw control byte in the log"
        );
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("colour \\u001b[31mred"), "{text}");
        assert!(text.contains("colour \\\\x1b[31mred"), "{text}");
    }
    assert_serves(srv.addr);
}

// ---------------------------------------------------------------- the chat client

#[test]
fn the_client_sends_and_prints_non_interactively() {
    let srv = server(0, None);
    let dir = DataDir::new();
    let target = srv.addr.to_string();
    let mut bob = join(srv.addr, "bob", 1);

    let o = netsh_in(
        dir.path(),
        &[
            "chat",
            &target,
            "--nick",
            "ann",
            "--send",
            "hi",
            "--send",
            "/me waves",
        ],
        None,
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines.contains(&"OK joined as ann (2 in room)"),
        "{}",
        show(&o)
    );
    let bodies: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('['))
        .map(|l| body(l))
        .collect();
    assert_eq!(
        bodies,
        ["*** ann joined", "<ann> hi", "* ann waves"],
        "{}",
        show(&o)
    );
    assert!(o.stderr.is_empty(), "{}", show(&o));
    for want in ["*** ann joined", "<ann> hi", "* ann waves", "*** ann left"] {
        bob.expect(want);
    }

    // --json: the report, nothing else on stdout.
    let o = netsh_in(
        dir.path(),
        &[
            "chat", &target, "--nick", "ann", "--send", "one", "--send", "two", "--json",
        ],
        None,
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let v: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(&o)));
    assert_eq!(v["sent"], 2, "{v}");
    assert_eq!(v["nick"], "ann", "{v}");
    assert_eq!(v["server"], target.as_str(), "{v}");
    let got: Vec<&str> = v["received"]
        .as_array()
        .expect("received")
        .iter()
        .map(|x| body(x.as_str().unwrap()))
        .collect();
    assert_eq!(got, ["*** ann joined", "<ann> one", "<ann> two"], "{v}");
    for want in ["*** ann joined", "<ann> one", "<ann> two", "*** ann left"] {
        bob.expect(want);
    }

    // Lines from stdin.
    let o = netsh_in(
        dir.path(),
        &["chat", &target, "--nick", "p"],
        Some(b"a\nb\n"),
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("<p> b"), "{}", show(&o));
    for want in ["*** p joined", "<p> a", "<p> b", "*** p left"] {
        bob.expect(want);
    }

    // --wait: what others say meanwhile is printed.
    let (dir2, target2) = (dir.path().to_path_buf(), target.clone());
    let waiting = std::thread::spawn(move || {
        netsh_in(
            &dir2,
            &["chat", &target2, "--nick", "w", "--wait", "2s"],
            None,
        )
    });
    bob.expect("*** w joined");
    bob.send("while you wait");
    bob.expect("<bob> while you wait");
    bob.expect("*** w left");
    let o = waiting.join().unwrap();
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("<bob> while you wait"), "{}", show(&o));

    // The client's own session log.
    let logs = dir.path().join("logs/chat-client");
    let text: String = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(text.contains("> hi") && text.contains("< ["), "{text}");
    assert_serves(srv.addr);
}

#[test]
fn the_client_escapes_what_a_hostile_server_sends() {
    use std::io::{BufRead, BufReader};
    // A fake room on loopback whose every line is hostile, the OK line too.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || {
        let (sock, _) = l.accept().expect("accept");
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        let mut got = Vec::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        got.push(line.clone());
        w.write_all(
            "OK joined as ev\u{1b}[2Jil\u{202e}\u{1b}]0;pwned\u{7} (1 in room)\n".as_bytes(),
        )
        .unwrap();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            got.push(line.clone());
            if line == "/quit\n" {
                w.write_all("[12:00:00] <x> \u{1b}[31mred\u{2066}\u{200b}\nBYE\n".as_bytes())
                    .unwrap();
                break;
            }
        }
        got
    });
    let dir = DataDir::new();
    let o = netsh_in(
        dir.path(),
        &["chat", &target, "--nick", "c", "--send", "hi"],
        None,
    );
    let got = fake.join().unwrap();
    assert_eq!(got, ["CHAT c\n", "hi\n", "/quit\n"], "{}", show(&o));
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let raw = |t: &str| {
        t.chars()
            .any(|c| c.is_control() && c != '\n' || invisible(c))
    };
    assert!(!raw(&o.stdout) && !raw(&o.stderr), "{}", show(&o));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "OK joined as ev\\x1b[2Jil\\u{202e}\\x1b]0;pwned\\x07 (1 in room)",
            "[12:00:00] <x> \\x1b[31mred\\u{2066}\\u{200b}",
            &*format!(
                "left the chat on {target} as ev\\x1b[2Jil\\u{{202e}}\\x1b]0;pwned\\x07 \
                 (1 line sent)"
            ),
        ],
        "{}",
        show(&o)
    );
    // The client's own session log too.
    let logs = dir.path().join("logs/chat-client");
    let text: String = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(!raw(&text), "{text:?}");
    assert!(
        text.contains("\\u{202e}") && text.contains("\\u{2066}"),
        "{text}"
    );
}

#[test]
fn the_client_fails_clearly() {
    let dir = DataDir::new();

    // A server that goes away while the client waits.
    let mut srv = ServerProc::spawn(dir.path(), "", &["--no-ntp"]);
    let target = srv.addr().to_string();
    let mut c = netsh(dir.path());
    c.args(["chat", &target, "--nick", "d", "--wait", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(c.spawn().expect("spawn netsh chat"));
    let out = line_channel(child.0.stdout.take().unwrap());
    let err = line_channel(child.0.stderr.take().unwrap());
    // It printed the OK line: it is in the room, waiting.
    let mut seen = Vec::new();
    recv_until(&out, "OK joined as d (2 in room)", &mut seen, LIMIT);
    kill("KILL", srv.pid());
    expect_exit(&mut srv.child, Duration::from_secs(10));
    let st = expect_exit(&mut child.0, Duration::from_secs(10));
    let mut errs = Vec::new();
    while let Ok(l) = err.recv_timeout(Duration::from_secs(5)) {
        errs.push(l);
    }
    assert_eq!(st.code(), Some(1), "{st:?} {errs:?}");
    assert_eq!(errs.len(), 1, "one error line: {errs:?}");
    assert!(
        errs[0].starts_with("error[") && errs[0].contains("closed the chat connection"),
        "{errs:?}"
    );

    // Nothing listens.
    let port = closed_tcp_port();
    let o = netsh_in(
        dir.path(),
        &[
            "chat",
            &format!("127.0.0.1:{port}"),
            "--nick",
            "c",
            "--send",
            "hi",
        ],
        None,
    );
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert_eq!(o.stderr.lines().count(), 1, "{}", show(&o));
    assert!(
        o.stderr.starts_with("error[connection-refused]"),
        "{}",
        show(&o)
    );

    // Bad words: refused before connecting (the listener sees no one).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let target = l.local_addr().unwrap().to_string();
    let long = "q".repeat(MAX_LINE + 1);
    for args in [
        vec!["chat", &target, "--nick", "c", "--send", &long],
        vec!["chat", &target, "--nick", "a b", "--send", "hi"],
        vec![
            "chat", &target, "--nick", "c", "--send", "ok", "--send", &long,
        ],
    ] {
        let o = netsh_in(dir.path(), &args, None);
        assert_eq!(o.code, Some(2), "{}", show(&o));
        assert_eq!(o.stderr.lines().count(), 1, "{}", show(&o));
        assert!(o.stderr.starts_with("error[bad-value]"), "{}", show(&o));
    }
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a bad command connected: {other:?}"),
    }
}

// ---------------------------------------------------------------- the operator

/// `netsh serve` in the foreground with its stdin piped to the test.
fn serve_with_stdin(dir: &Path) -> (ServerProc, ChildStdin) {
    let mut c = netsh(dir);
    c.args([
        "serve",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--no-ntp",
        "--chat-history",
        "0",
    ])
    .stdin(Stdio::piped());
    let mut srv = ServerProc::start(c);
    let stdin = srv.child.stdin.take().expect("stdin");
    (srv, stdin)
}

/// Threads of `pid` named `name`.
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim() == name)
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_console_operator_talks_and_the_server_outlives_its_stdin() {
    let dir = DataDir::new();
    let (srv, mut stdin) = serve_with_stdin(dir.path());
    let mut m = join(srv.addr(), "m", 2);
    writeln!(stdin, "hello members").unwrap();
    m.expect("<operator> hello members");
    writeln!(stdin, "/me waves from the console").unwrap();
    m.expect("* operator waves from the console");
    writeln!(stdin, "   ").unwrap(); // blank: nothing
    writeln!(stdin, "\u{1b}[31mred").unwrap();
    m.expect("<operator> \\x1b[31mred");
    srv.expect_line("<operator> hello members", LIMIT);
    // The console shows the room itself: no thread takes a copy of each
    // turn's lines (it used to be `netsh-operator-out`, which dropped them).
    assert_eq!(threads_named(srv.pid(), "netsh-operator-"), 0);

    // End of input: the operator's reader stops, the server goes on.
    drop(stdin);
    assert!(
        wait_for(Duration::from_secs(10), || threads_named(
            srv.pid(),
            "netsh-operator"
        ) == 0),
        "the operator thread ended at EOF"
    );
    m.send("after EOF");
    m.expect("<m> after EOF");
    let mut n = join(srv.addr(), "n", 3);
    m.expect("*** n joined");
    n.send("/who");
    n.expect("*** in the room (3): m, n, operator");
    assert_serves(srv.addr());
}

#[test]
fn the_console_operator_s_bad_lines_are_refused_and_the_rest_goes_on() {
    // The reader used to stop for good at the first invalid UTF-8 line, and
    // to hold a line of any length in memory.
    let dir = DataDir::new();
    let (srv, mut stdin) = serve_with_stdin(dir.path());
    let mut m = join(srv.addr(), "m", 2);
    stdin.write_all(b"before\n").unwrap();
    m.expect("<operator> before");
    stdin.write_all(b"bad \xff byte\n").unwrap();
    m.expect("<operator> bad \u{fffd} byte");
    let long = vec![b'x'; 1 << 20]; // 1 MiB, far over a chat line
    stdin.write_all(&long).unwrap();
    stdin.write_all(b"\nafter\n").unwrap();
    m.expect("<operator> after");
    drop(stdin);
    assert_serves(srv.addr());
}

#[test]
fn the_operator_of_a_piped_shells_own_server() {
    let dir = DataDir::new();
    let mut c = netsh(dir.path());
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn netsh");
    let mut stdin = child.stdin.take().unwrap();
    let out = line_channel(child.stdout.take().unwrap());
    let err = line_channel(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);

    writeln!(stdin, "serve --port 0 --bind 127.0.0.1 --no-ntp --json").unwrap();
    let mut seen = Vec::new();
    recv_until(&out, "{", &mut seen, LIMIT);
    let start = seen.len() - 1;
    loop {
        let l = recv_until(&out, "", &mut seen, LIMIT);
        if l == "}" {
            break;
        }
    }
    let doc: Value = serde_json::from_str(&seen[start..].join("\n")).expect("serve --json");
    let port = doc["port"].as_u64().expect("port") as u16;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let mut m = join(addr, "m", 1);
    writeln!(stdin, "chat --send \"hello from op\"").unwrap();
    m.expect("*** operator joined (the server's operator)");
    m.expect("<operator> hello from op");
    m.expect("*** operator left");
    recv_until(&out, "<operator> hello from op", &mut seen, LIMIT);
    m.send("/who");
    m.expect("*** in the room (1): m");
    // A command, too: its answer is not the line itself, and still ends
    // the wait (it once timed out).
    writeln!(stdin, "chat --send \"/kick m\"").unwrap();
    m.expect("*** operator joined (the server's operator)");
    m.expect("*** m was kicked by operator");
    m.expect_eof();
    recv_until(&out, "*** m was kicked by operator", &mut seen, LIMIT);

    writeln!(stdin, "serve stop").unwrap();
    drop(stdin);
    let st = expect_exit(&mut child.0, LIMIT);
    let rest: Vec<String> = out.try_iter().collect();
    let errs: Vec<String> = err.try_iter().collect();
    assert!(
        st.success(),
        "{st:?}\nstdout {seen:#?} {rest:#?}\nstderr {errs:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("Server stopped")),
        "{seen:#?} {rest:#?}"
    );
    assert!(errs.is_empty(), "{errs:#?}");

    // The same as the brief's one-liner, on stdin all at once.
    let o = netsh_in(
        dir.path(),
        &[],
        Some(b"serve --port 0 --bind 127.0.0.1 --no-ntp\nchat --send \"hello from op\"\nserve stop\n"),
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let said: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with('[') && body(l) == "<operator> hello from op")
        .collect();
    assert_eq!(said.len(), 1, "{}", show(&o));
}

// ---------------------------------------------------------------- the terminal

/// Terminal output without CSI sequences (`ESC [ … final`).
fn strip_csi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn on_a_terminal_an_incoming_line_keeps_the_half_typed_one() {
    use rexpect::process::WaitStatus;

    let srv = server(0, None);
    let dir = DataDir::new();
    let mut ann = join(srv.addr, "ann", 1);

    let target = srv.addr.to_string();
    let mut p = spawn_pty(dir.path(), &["chat", &target, "--nick", "tom"]);
    p.exp_string("OK joined as tom (2 in room)").unwrap();
    ann.expect("*** tom joined");
    p.exp_string("*** tom joined").unwrap();
    p.exp_string("chat> ").unwrap();

    type_keys(&mut p, "half typed");
    p.exp_string("half typed").unwrap();
    ann.send("ping from ann");
    ann.expect("<ann> ping from ann");
    p.exp_string("<ann> ping from ann").unwrap();
    // After the incoming line: the prompt and the unfinished line again.
    let redraw = p.exp_string("half typed").unwrap();
    assert!(
        strip_csi(&redraw).ends_with("chat> "),
        "the prompt is redrawn right before the half line: {redraw:?}"
    );
    type_keys(&mut p, " done\r");
    ann.expect("<tom> half typed done");
    p.exp_string("<tom> half typed done").unwrap();
    type_keys(&mut p, "exit\r");
    ann.expect("*** tom left");
    match p.process().wait().expect("wait for netsh") {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("netsh chat did not exit 0: {other:?}"),
    }
    assert_serves(srv.addr);
}

/// A terminal a test types at: lines given in advance, what arrives
/// printed into a list. The same seam the shell's rustyline uses.
struct TypedTerminal {
    lines: std::collections::VecDeque<String>,
    printed: Arc<Mutex<Vec<String>>>,
}

impl netsh::session::Terminal for TypedTerminal {
    fn interactive(&self) -> bool {
        true
    }
    fn read_line(&mut self, _prompt: &str) -> netsh::session::Input {
        // Type the next line once the previous one came back from the room.
        let want = self.printed.lock().unwrap().len();
        let _ = crate::common::wait_for(Duration::from_secs(5), || {
            self.printed.lock().unwrap().len() > want || want == 0
        });
        match self.lines.pop_front() {
            Some(l) => netsh::session::Input::Line(l),
            None => netsh::session::Input::End,
        }
    }
    fn printer(&mut self) -> netsh::error::Result<netsh::session::Printer> {
        let out = Arc::clone(&self.printed);
        Ok(Box::new(move |l: &str| {
            out.lock().unwrap().push(l.to_string())
        }))
    }
    fn console(
        &self,
    ) -> (
        netsh::server::console::LineSink,
        Option<std::sync::mpsc::Receiver<()>>,
    ) {
        (Box::new(|_: &str| {}), None)
    }
    fn operator_input(&self, _say: Box<dyn Fn(&str) -> bool + Send>) {}
}

#[test]
fn a_chat_is_driven_through_the_sessions_terminal_in_process() {
    let srv = server(0, None);
    let mut watcher = join(srv.addr, "watcher", 1);
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = netsh::session::Session::new(
        dir.path(),
        netsh::paint::Paint { color: false },
        Arc::new(AtomicBool::new(false)),
    );
    s.set_sink(Box::new(|_: &str| Ok(())));
    let printed = Arc::new(Mutex::new(Vec::new()));
    s.terminal = Box::new(TypedTerminal {
        lines: ["hello from a test".to_string(), "/quit".to_string()].into(),
        printed: Arc::clone(&printed),
    });
    let argv: Vec<String> = ["chat", &srv.addr.to_string(), "--nick", "typist"]
        .iter()
        .map(|w| w.to_string())
        .collect();
    let out = netsh::cmd::execute(&argv, &mut s);
    let report = out.result.expect("chat ran");
    let j = serde_json::to_value(&report).unwrap();
    assert_eq!(j["nick"], "typist", "{j}");
    assert_eq!(j["sent"], 1, "{j}");
    // What arrived went to the terminal's printer, in the room's order.
    let got = printed.lock().unwrap().clone();
    let said = got
        .iter()
        .position(|l| l.ends_with("<typist> hello from a test"))
        .unwrap_or_else(|| panic!("{got:#?}"));
    let bye = got
        .iter()
        .position(|l| l == "BYE")
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert!(said < bye, "{got:#?}");
    // The other member heard it too, between the typist's join and leave.
    let mut heard = Vec::new();
    loop {
        let l = watcher.line();
        let left = body(&l) == "*** typist left";
        heard.push(l);
        if left {
            break;
        }
    }
    assert!(
        heard
            .iter()
            .any(|l| body(l) == "<typist> hello from a test"),
        "{heard:#?}"
    );
}

/// Every record of the chat client's logs under `dir`.
fn client_log(dir: &Path) -> Vec<String> {
    let logs = dir.join("logs").join("chat-client");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&logs).unwrap_or_else(|e| panic!("{}: {e}", logs.display())) {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        out.extend(text.lines().map(String::from));
    }
    out
}

#[test]
fn two_clients_of_a_day_are_told_apart_in_the_client_log() {
    let srv = server(0, None);
    let dir = DataDir::new();
    let target = srv.addr.to_string();
    for nick in ["ann", "ben"] {
        let o = netsh_in(
            dir.path(),
            &[
                "chat",
                &target,
                "--nick",
                nick,
                "--send",
                &format!("hi from {nick}"),
            ],
            None,
        );
        assert_eq!(o.code, Some(0), "{}", show(&o));
    }
    let recs = client_log(dir.path());
    // Every record says its session and nickname.
    let tag = |r: &str| {
        let inner = r
            .split_once(" [")
            .and_then(|(_, t)| t.split_once("] "))
            .map(|(t, _)| t);
        inner
            .unwrap_or_else(|| panic!("untagged record {r:?}"))
            .to_string()
    };
    let tags: std::collections::BTreeSet<String> = recs.iter().map(|r| tag(r)).collect();
    assert_eq!(tags.len(), 2, "two sessions, each its own tag: {recs:#?}");
    assert!(tags.iter().any(|t| t.ends_with(" ann")) && tags.iter().any(|t| t.ends_with(" ben")));
    // Each session has its own line once.
    for nick in ["ann", "ben"] {
        let mine: Vec<&String> = recs
            .iter()
            .filter(|r| {
                tag(r).ends_with(&format!(" {nick}"))
                    && r.contains(&format!("<{nick}> hi from {nick}"))
            })
            .collect();
        assert_eq!(mine.len(), 1, "{nick}: {recs:#?}");
    }
}

#[test]
fn a_new_nickname_is_the_one_the_client_leaves_with() {
    let srv = server(0, None);
    let dir = DataDir::new();
    let o = netsh_in(
        dir.path(),
        &[
            "chat",
            &srv.addr.to_string(),
            "--nick",
            "bob",
            "--send",
            "/nick robert",
            "--send",
            "after",
        ],
        None,
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("<robert> after"), "{}", show(&o));
    assert!(
        o.stdout.trim_end().ends_with(&format!(
            "left the chat on {} as robert (2 lines sent)",
            srv.addr
        )),
        "{}",
        show(&o)
    );
    assert!(
        client_log(dir.path())
            .iter()
            .any(|r| r.contains(" robert] left "))
    );
}

#[test]
fn the_servers_shutdown_ends_the_client_cleanly() {
    let srv = server(0, None);
    let dir = DataDir::new();
    let (d, target) = (dir.path().to_path_buf(), srv.addr.to_string());
    let client = std::thread::spawn(move || {
        netsh_in(
            &d,
            &["chat", &target, "--nick", "stayer", "--wait", "15s"],
            None,
        )
    });
    assert!(
        crate::common::wait_for(Duration::from_secs(10), || !srv
            .lines_with("stayer joined")
            .is_empty()),
        "the client joined"
    );
    srv.stop();
    let o = client.join().expect("client thread");
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stderr.is_empty(), "{}", show(&o));
    assert!(
        o.stdout.contains("BYE server shutting down"),
        "{}",
        show(&o)
    );
    let last = o.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("the server shut down; out of the chat on "),
        "{}",
        show(&o)
    );
}
