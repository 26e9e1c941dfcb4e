//! The server's limits, end to end over loopback: over-long lines, clients that
//! never read (line and STREAM mode), connection churn, the idle timeout,
//! `--max-clients`, running out of file descriptors, half-closed and reset
//! sockets, hostile bytes on the console and in the log, and shutdown by
//! signal.
//!
//! Every test checks the limit itself and that the server still serves a
//! fresh client afterwards (`common::assert_serves`); the tests on a spawned
//! server also check its file descriptors (`/proc/PID/fd`) are all given
//! back. What the same scenarios cost in memory (`VmRSS`, `VmHWM`) and CPU,
//! and an idle server's CPU use, are budgets: `budgets.rs`, which runs the
//! scenarios written here (the `pub(crate)` functions). Waits poll a
//! condition with a deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{
    DataDir, KillOnDrop, Opts, ServerProc, announced_port, assert_echo, assert_serves, client,
    kill, netsh, read_line, retry_eintr, start_server_with, wait_exit, wait_for,
};
use netsh::server::console::Verbosity;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The limits as documented in docs/protocol.md (spelled out, not imported,
/// so a change in src/ has to be a deliberate change here too).
const MAX_LINE: usize = 65_536;
const TOO_LONG: &[u8] = b"ERR line too long (max 65536 bytes)\n";
const FULL: &[u8] = b"ERR server full\n";
const BYE: &[u8] = b"BYE server shutting down\n";

// ------------------------------------------------------------------ helpers

/// A spawned `netsh serve` and its data dir. Fields drop in order: the server
/// is killed (by PID, in `ServerProc::drop`) before its directory goes.
pub(crate) struct Spawned {
    p: ServerProc,
    dir: DataDir,
}

impl Deref for Spawned {
    type Target = ServerProc;
    fn deref(&self) -> &ServerProc {
        &self.p
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut ServerProc {
        &mut self.p
    }
}

pub(crate) fn spawn(prelude: &str, args: &[&str]) -> Spawned {
    let dir = DataDir::new();
    let p = ServerProc::spawn(dir.path(), prelude, args);
    Spawned { p, dir }
}

impl Spawned {
    /// The fd count at rest: the least of a few samples (the server log is
    /// held open from the start; the least still hides a passing fd).
    pub(crate) fn baseline_fds(&self) -> usize {
        let mut least = usize::MAX;
        for _ in 0..20 {
            least = least.min(self.fds());
            thread::sleep(Duration::from_millis(2));
        }
        assert!(least > 0, "cannot read /proc/{}/fd", self.pid());
        least
    }

    /// Wait until the server holds exactly `want` fds; panics with the count.
    pub(crate) fn expect_fds(&self, want: usize, within: Duration, what: &str) {
        let ok = wait_for(within, || self.fds() == want);
        assert!(
            ok,
            "{what}: server holds {} fds, expected {want}",
            self.fds()
        );
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.p.child.try_wait(), Ok(None))
    }

    /// Every console line still to come, until stdout closes (bounded).
    fn rest_of_output(&self, within: Duration) -> Vec<String> {
        let end = Instant::now() + within;
        let mut v = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => v.push(l),
                Err(_) => return v,
            }
        }
    }
}

/// [`assert_serves`]: a fresh client is still served; and how long that took.
fn round_trip(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    assert_serves(addr);
    t.elapsed()
}

/// How a read loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    TimedOut,
    TooMuch,
    Other(io::ErrorKind),
}

/// Read until EOF, an error, `max` bytes or `within`; keeps at most `keep`
/// bytes and counts them all.
fn read_all(s: &mut TcpStream, keep: usize, max: usize, within: Duration) -> (Vec<u8>, usize, End) {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, total, End::TimedOut);
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return (got, total, End::Eof),
            Ok(n) => {
                total += n;
                let room = keep.saturating_sub(got.len()).min(n);
                got.extend_from_slice(&buf[..room]);
                if total > max {
                    return (got, total, End::TooMuch);
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return (got, total, End::TimedOut);
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    return (got, total, End::Reset);
                }
                k => return (got, total, End::Other(k)),
            },
        }
    }
}

/// A writer thread sending `chunk` over and over (never splitting the byte
/// sequence: a short write continues where it stopped), bounded by bytes and
/// time. A write blocked for `stall` ends it with `WouldBlock`/`TimedOut`.
struct Pump {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Option<io::ErrorKind>)>,
}

impl Pump {
    fn start(s: &TcpStream, chunk: Vec<u8>, max: usize, within: Duration, stall: Duration) -> Pump {
        let mut w = s.try_clone().expect("clone stream");
        w.set_write_timeout(Some(stall)).expect("write timeout");
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (sent2, done2) = (Arc::clone(&sent), Arc::clone(&done));
        let thread = thread::spawn(move || {
            let end = Instant::now() + within;
            let mut off = 0;
            let mut total = 0u64;
            let result = loop {
                if total >= max as u64 || Instant::now() >= end {
                    break None;
                }
                match w.write(&chunk[off..]) {
                    Ok(0) => break Some(io::ErrorKind::WriteZero),
                    Ok(n) => {
                        total += n as u64;
                        off = (off + n) % chunk.len();
                        sent2.store(total, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e.kind()),
                }
            };
            done2.store(true, Ordering::SeqCst);
            (total, result)
        });
        Pump { sent, done, thread }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    fn join(self) -> (u64, Option<io::ErrorKind>) {
        self.thread.join().expect("writer thread")
    }
}

fn is_disconnect(k: io::ErrorKind) -> bool {
    matches!(
        k,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

fn is_stall(k: io::ErrorKind) -> bool {
    matches!(k, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn reset_on_close(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// The server is stopped (SIGSTOP) while this lives, and continued (SIGCONT)
/// when it drops, even on a failed assertion. While it is frozen the kernel
/// still completes handshakes and queues bytes, so a test can decide exactly
/// what waits in a socket before the server looks at it.
struct Frozen(u32);

fn freeze(s: &Spawned) -> Frozen {
    kill("STOP", s.pid());
    let pid = s.pid();
    let stopped = wait_for(Duration::from_secs(2), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    });
    assert!(stopped, "server did not stop on SIGSTOP");
    Frozen(pid)
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.to_string())
            .status();
    }
}

/// Write `byte` without blocking until the kernel takes no more (bounded);
/// returns how many bytes are queued towards the peer.
fn fill_nonblocking(c: &TcpStream, byte: u8, max: usize) -> usize {
    c.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![byte; 64 * KIB];
    let mut queued = 0;
    while queued < max {
        match (&*c).write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write while the server is frozen: {e}"),
        }
    }
    c.set_nonblocking(false).expect("blocking");
    queued
}

// -------------------------------------------------------------- 1. long lines

/// 10 MiB and never a newline: the server must answer and close after
/// about 64 KiB, not buffer the rest; then its fds are back to `base`.
pub(crate) fn send_an_endless_line(s: &Spawned, base: usize) {
    let mut c = client(s.addr());
    let pump = Pump::start(
        &c,
        vec![b'a'; 64 * KIB],
        10 * MIB,
        Duration::from_secs(10),
        Duration::from_secs(5),
    );
    let (got, _, end) = read_all(&mut c, 4 * KIB, 64 * KIB, Duration::from_secs(10));
    let (sent, werr) = pump.join();
    eprintln!("long line: client wrote {sent} bytes before {werr:?}; read ended with {end:?}");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(TOO_LONG),
        "reply to a line over the limit"
    );
    // EOF is what the protocol promises; a reset happens when the server
    // closes with the client's unread bytes in its socket (a race here; made
    // deterministic in `over_long_line_ends_in_eof_not_a_reset`).
    assert!(
        matches!(end, End::Eof | End::Reset),
        "after the ERR line the connection must end, got {end:?}"
    );
    drop(c);
    s.expect_fds(base, Duration::from_secs(5), "after the long-line client");
}

/// The peak memory of this is a budget:
/// `budgets::line_over_64_kib_gets_err_and_memory_stays_bounded`.
#[test]
fn line_over_64_kib_gets_err_and_max_line_is_the_boundary() {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();
    send_an_endless_line(&s, base);

    // The boundary: a line of exactly MAX_LINE bytes is a line (with `\n` or
    // `\r\n`); one byte more is not.
    for term in ["\n", "\r\n"] {
        let text = "x".repeat(MAX_LINE - "ECHO ".len());
        let mut c = client(s.addr());
        c.write_all(format!("ECHO {text}{term}").as_bytes())
            .expect("send max line");
        let reply = read_line(&mut c);
        assert_eq!(reply.len(), "ECHO_RESPONSE:".len() + text.len(), "{term:?}");
        assert!(reply.starts_with(b"ECHO_RESPONSE:xxx") && reply.ends_with(b"xxx"));
        assert_echo(&mut c, "after the longest line"); // still usable
    }
    let mut c = client(s.addr());
    c.write_all(format!("ECHO {}\n", "x".repeat(MAX_LINE - 4)).as_bytes())
        .expect("send max+1 line");
    let (got, _, end) = read_all(&mut c, 4 * KIB, 64 * KIB, Duration::from_secs(5));
    assert_eq!(got, TOO_LONG, "a line of MAX_LINE + 1 bytes");
    assert_eq!(
        end,
        End::Eof,
        "nothing unread in the server's socket: a clean close"
    );

    let t = round_trip(s.addr());
    assert!(t < Duration::from_secs(2), "fresh client took {t:?}");
    s.expect_fds(base, Duration::from_secs(5), "at the end");
}

#[test]
fn over_long_line_ends_in_eof_not_a_reset() {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();
    let (mut c, queued) = {
        let _frozen = freeze(&s);
        let c = client(s.addr());
        let queued = fill_nonblocking(&c, b'a', 16 * MIB);
        (c, queued)
    };
    // The server reads at most two 64 KiB chunks before it knows.
    assert!(queued > 512 * KIB, "only {queued} bytes queued");
    let (got, _, end) = read_all(&mut c, 4 * KIB, 64 * KIB, Duration::from_secs(10));
    eprintln!("long line after {queued} queued bytes: read ended with {end:?}");
    assert_eq!(got, TOO_LONG);
    assert_eq!(end, End::Eof, "ERR line, then a clean close");
    drop(c);
    s.expect_fds(base, Duration::from_secs(5), "after the long line");
    assert_serves(s.addr());
}

// ------------------------------------------------ 2. line client not reading

/// A line client that sends and never reads: others are served meanwhile,
/// it is disconnected, and the server's fds are back to `base`.
pub(crate) fn flood_without_reading(s: &Spawned, base: usize) {
    let slow = client(s.addr());
    let line = format!("ECHO {}\n", "y".repeat(KIB));
    let pump = Pump::start(
        &slow,
        line.repeat(64).into_bytes(),
        64 * MIB,
        Duration::from_secs(15),
        Duration::from_secs(5),
    );
    // Once it is well into its pumping, another client is served promptly.
    assert!(
        wait_for(Duration::from_secs(10), || pump.sent() >= 512 * KIB as u64
            || pump.finished()),
        "the slow client could not even send 512 KiB"
    );
    let still_pumping = !pump.finished();
    let t = round_trip(s.addr());
    eprintln!(
        "slow reader: fresh round trip in {t:?} (slow client still pumping: {still_pumping})"
    );
    assert!(t < Duration::from_secs(2), "round trip took {t:?}");

    let (sent, werr) = pump.join();
    eprintln!("slow reader: wrote {sent} bytes, then {werr:?}");
    let werr =
        werr.expect("the server never disconnected a client that does not read (64 MiB sent)");
    assert!(
        is_disconnect(werr),
        "writes ended with {werr:?}, not a disconnect (the server stopped reading but kept the client)"
    );
    // Reading now: whatever was in flight, then the end of the connection.
    let mut slow = slow;
    let (_, total, end) = read_all(&mut slow, 0, 128 * MIB, Duration::from_secs(10));
    eprintln!("slow reader: {total} bytes were still readable, then {end:?}");
    assert!(
        matches!(end, End::Eof | End::Reset),
        "the slow client's connection ended with {end:?}"
    );
    drop(slow);

    s.expect_fds(base, Duration::from_secs(5), "after the slow client");
}

/// Its peak memory is a budget:
/// `budgets::line_client_that_never_reads_leaves_memory_bounded`.
#[test]
fn line_client_that_never_reads_is_disconnected() {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();
    flood_without_reading(&s, base);
    assert_serves(s.addr());
}

// ---------------------------------------------- 3. STREAM client not reading

/// A STREAM client that pumps and never reads, until its writes stall.
/// Returns the connection and the bytes it got in.
pub(crate) fn stalled_stream_client(s: &Spawned) -> (TcpStream, u64) {
    let mut c = client(s.addr());
    c.write_all(b"STREAM\n").expect("send STREAM");
    assert_eq!(read_line(&mut c), b"OK");
    let pump = Pump::start(
        &c,
        vec![b'z'; 64 * KIB],
        256 * MIB,
        Duration::from_secs(15),
        Duration::from_millis(500),
    );
    let (sent, werr) = pump.join();
    eprintln!("stream: wrote {sent} bytes, then {werr:?}");
    let werr = werr.expect("256 MiB went into a STREAM connection nobody reads");
    assert!(
        is_stall(werr),
        "writes ended with {werr:?}: the server should apply back-pressure, not disconnect"
    );
    (c, sent)
}

/// Its peak memory and CPU use are budgets:
/// `budgets::stream_client_that_never_reads_leaves_memory_bounded`,
/// `budgets::stream_back_pressure_does_not_spin`.
#[test]
fn stream_client_that_never_reads_gets_back_pressure() {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();

    let (abandoned, sent) = stalled_stream_client(&s);
    assert!(
        sent < 128 * MIB as u64,
        "{sent} bytes taken in before the stall"
    );

    // Others are served promptly meanwhile, and the stalled one is kept.
    let t = round_trip(s.addr());
    assert!(t < Duration::from_secs(1), "round trip took {t:?}");
    s.expect_fds(
        base + 1,
        Duration::from_secs(2),
        "the stalled stream is kept",
    );

    // Closing it with its echo unread (the kernel resets) releases it.
    drop(abandoned);
    s.expect_fds(
        base,
        Duration::from_secs(5),
        "after the stalled stream closed",
    );

    // Back-pressure loses nothing: a stalled client that starts reading gets
    // every byte back (the server resumes reading what waited), then EOF.
    let (mut late, sent) = stalled_stream_client(&s);
    late.shutdown(Shutdown::Write).expect("shutdown");
    let (head, total, end) = read_all(&mut late, 64 * KIB, 256 * MIB, Duration::from_secs(20));
    eprintln!("stream: {total} of {sent} bytes came back, then {end:?}");
    assert!(head.iter().all(|&b| b == b'z'), "echoed bytes differ");
    assert_eq!(total as u64, sent, "echoed byte count");
    assert_eq!(end, End::Eof);
    drop(late);
    s.expect_fds(base, Duration::from_secs(5), "after the streams");
    assert_serves(s.addr());
}

// ------------------------------------------------------- 4. connection churn

/// A warmed-up server (fds at `base`) takes 1000 short connections of four
/// kinds (close, partial line then FIN, reply never read, partial line then
/// RST) and gives every fd back. Returns how many were reset.
pub(crate) fn churn(s: &Spawned, base: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut resets = 0;
    for i in 0..1000 {
        assert!(Instant::now() < deadline, "only {i} cycles in 20 s");
        let mut c = TcpStream::connect(s.addr()).expect("connect");
        match i % 4 {
            0 => {}                                                   // connect, close
            1 => c.write_all(b"ECHO a partial li").expect("partial"), // partial line, FIN
            2 => c.write_all(b"ECHO x\n").expect("echo"),             // reply never read
            _ => {
                c.write_all(b"ECHO reset mid-li").expect("partial"); // partial line, RST
                reset_on_close(&c);
                resets += 1;
            }
        }
        drop(c);
    }
    s.expect_fds(base, Duration::from_secs(10), "after 1000 cycles");
    resets
}

/// A server warmed up by one client, its fds at rest.
pub(crate) fn warmed_up() -> (Spawned, usize) {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();
    assert_serves(s.addr());
    s.expect_fds(base, Duration::from_secs(5), "after warm-up");
    (s, base)
}

/// What churn leaves in memory is a budget:
/// `budgets::a_thousand_connect_close_cycles_leave_no_memory_behind`.
#[test]
fn a_thousand_connect_close_cycles_leave_nothing_behind() {
    let (s, base) = warmed_up();
    let resets = churn(&s, base);
    eprintln!("churn: fds back to {base} ({resets} resets)");
    let t = round_trip(s.addr());
    assert!(t < Duration::from_secs(1), "round trip took {t:?}");
}

// --------------------------------------------------------- 5. idle timeout

#[test]
fn idle_connection_is_closed_and_active_one_stays() {
    let s = spawn("", &["-q", "--idle-timeout", "1s"]);
    let base = s.baseline_fds();
    let mut idle = client(s.addr());
    let mut active = client(s.addr());
    assert_echo(&mut idle, "then silence");
    let idle_since = Instant::now();
    assert_echo(&mut active, "first");

    // Keep `active` busy; pace the loop with short reads on `idle`, which
    // must see nothing until the server closes it.
    let mut pings = 0;
    let mut b = [0u8; 64];
    let closed_after = loop {
        assert!(
            idle_since.elapsed() < Duration::from_secs(4),
            "idle connection still open after {:?}",
            idle_since.elapsed()
        );
        idle.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        match retry_eintr(|| idle.read(&mut b)) {
            Ok(0) => break idle_since.elapsed(),
            Ok(n) => panic!("idle client got {:?}", String::from_utf8_lossy(&b[..n])),
            Err(e) if is_stall(e.kind()) => {}
            Err(e) => panic!("idle client: {e} (expected a clean close)"),
        }
        assert_echo(&mut active, &format!("ping {pings}"));
        pings += 1;
    };
    eprintln!("idle: closed after {closed_after:?}; {pings} pings on the active one");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after only {closed_after:?} with --idle-timeout 1s"
    );
    assert!(
        closed_after <= Duration::from_secs(3),
        "closed only after {closed_after:?}"
    );

    // The active one outlives two timeouts while it keeps talking.
    while idle_since.elapsed() < Duration::from_millis(2500) {
        assert_echo(&mut active, &format!("ping {pings}"));
        pings += 1;
        active
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        match retry_eintr(|| active.read(&mut b)) {
            Err(e) if is_stall(e.kind()) => {}
            other => panic!("active client got {other:?} between pings"),
        }
    }
    assert_echo(&mut active, "still here");
    s.expect_fds(base + 1, Duration::from_secs(2), "only the active one left");
    assert_serves(s.addr());
}

// -------------------------------------------------------- 6. --max-clients

#[test]
fn max_clients_refuses_the_fourth_and_admits_after_a_leave() {
    let s = spawn("", &["-q", "--max-clients", "3"]);
    let base = s.baseline_fds();
    let mut cs: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = client(s.addr());
            assert_echo(&mut c, &format!("client {i}"));
            c
        })
        .collect();

    let mut fourth = client(s.addr());
    let (got, _, end) = read_all(&mut fourth, KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(FULL));
    assert_eq!(end, End::Eof, "the refused client is closed cleanly");
    for (i, c) in cs.iter_mut().enumerate() {
        assert_echo(c, &format!("client {i} unaffected"));
    }
    s.expect_fds(base + 3, Duration::from_secs(2), "three clients");

    drop(cs.remove(0));
    s.expect_fds(base + 2, Duration::from_secs(5), "after one left");
    let mut newcomer = client(s.addr());
    assert_echo(&mut newcomer, "let in after a leave");
    cs.push(newcomer);

    // Full again.
    let mut fifth = client(s.addr());
    let (got, _, end) = read_all(&mut fifth, KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(got, FULL);
    assert_eq!(end, End::Eof);

    drop(cs);
    s.expect_fds(base, Duration::from_secs(5), "all gone");
    assert_serves(s.addr());
}

#[test]
fn the_per_address_limit_exempts_loopback_unless_asked() {
    // Default: 64 per remote address, loopback exempt (local load tests
    // hold thousands): 80 from 127.0.0.1 are all served.
    let s = spawn("", &["-q"]);
    let mut cs: Vec<TcpStream> = (0..80)
        .map(|i| {
            let mut c = client(s.addr());
            assert_echo(&mut c, &format!("loopback {i}"));
            c
        })
        .collect();
    assert_echo(&mut cs[0], "all still here");
    drop(cs);
    // Given explicitly, the limit applies to loopback too.
    let s = spawn("", &["-q", "--max-per-ip", "2"]);
    let mut a = client(s.addr());
    assert_echo(&mut a, "a");
    let mut b = client(s.addr());
    assert_echo(&mut b, "b");
    let mut c = client(s.addr());
    let (got, _, end) = read_all(&mut c, KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "ERR too many connections from 127.0.0.1 (max 2 per address)\n"
    );
    assert_eq!(end, End::Eof, "the refused client is closed cleanly");
    assert_echo(&mut a, "a unaffected");
}

#[test]
fn refused_client_that_already_sent_gets_eof_not_a_reset() {
    let s = spawn("", &["-q", "--max-clients", "1"]);
    let mut first = client(s.addr());
    assert_echo(&mut first, "the only one");
    // As a real client does: connect and send at once, before the server
    // has accepted (made certain by freezing it).
    let mut late = {
        let _frozen = freeze(&s);
        let mut late = client(s.addr());
        late.write_all(b"ECHO hello\n").expect("send");
        late
    };
    let (got, _, end) = read_all(&mut late, KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(FULL));
    assert_eq!(end, End::Eof, "ERR server full, then a clean close");
    assert_echo(&mut first, "still served");
}

// ------------------------------------------------- 7. out of file descriptors

/// A server under `ulimit -n 64` (fds at rest: the `usize`), flooded with
/// up to 200 connections: it takes what its 64 fds allow, then pauses
/// accepting. Returns the server and every client (all still open).
pub(crate) fn run_out_of_fds() -> (Spawned, usize, Vec<Option<TcpStream>>) {
    let s = spawn("ulimit -n 64", &["-q"]);
    let base = s.baseline_fds();
    assert_serves(s.addr());

    let mut clients: Vec<Option<TcpStream>> = Vec::new();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients.len() + refused < 200 && Instant::now() < deadline {
        match TcpStream::connect_timeout(&s.addr(), Duration::from_millis(500)) {
            Ok(c) => clients.push(Some(c)),
            Err(_) => refused += 1,
        }
        if refused > 20 {
            break;
        }
    }
    let connected = clients.len();
    eprintln!("emfile: {connected} connected, {refused} connect() failures");
    assert!(connected >= 100, "only {connected} of 200 could connect");

    // The server takes what its 64 fds allow, then pauses accepting.
    s.expect_line("accept paused", Duration::from_secs(5));
    let held = s.fds();
    assert!(
        held >= 60,
        "server holds only {held} fds under `ulimit -n 64`"
    );
    eprintln!("emfile: server holds {held} fds");
    (s, base, clients)
}

/// After [`run_out_of_fds`]: keep a few early clients (accepted) and the
/// last 20 (still in the backlog), close the rest. The backlog must then be
/// served, and every fd given back at the end.
pub(crate) fn recover_from_running_out_of_fds(
    s: &Spawned,
    base: usize,
    mut clients: Vec<Option<TcpStream>>,
) {
    let connected = clients.len();
    let keep: Vec<usize> = (0..3).chain(connected - 20..connected).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        if !keep.contains(&i) {
            *c = None;
        }
    }
    for &i in &keep {
        let c = clients[i].as_mut().expect("kept");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_echo(c, &format!("kept client {i}"));
    }
    assert_serves(s.addr());
    drop(clients);
    s.expect_fds(base, Duration::from_secs(5), "after the flood");
}

/// That it does not spin meanwhile is a budget:
/// `budgets::out_of_fds_pauses_accepting_without_spinning_and_recovers`.
#[test]
fn out_of_fds_pauses_accepting_and_recovers() {
    let (mut s, base, clients) = run_out_of_fds();
    assert!(s.alive(), "server died out of fds");
    recover_from_running_out_of_fds(&s, base, clients);
}

// ------------------------------------------- 8. half-close, resets, garbage

#[test]
fn half_closed_and_reset_connections() {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();

    // Half-close: every whole line is answered, then EOF.
    let mut c = client(s.addr());
    c.write_all(b"ECHO a\nECHO b\n").expect("send");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let (got, _, end) = read_all(&mut c, 4 * KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "ECHO_RESPONSE:a\nECHO_RESPONSE:b\n"
    );
    assert_eq!(end, End::Eof);

    // A last line without a newline still counts (docs/protocol.md).
    let mut c = client(s.addr());
    c.write_all(b"ECHO a\nECHO tail").expect("send");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let (got, _, end) = read_all(&mut c, 4 * KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "ECHO_RESPONSE:a\nECHO_RESPONSE:tail\n"
    );
    assert_eq!(end, End::Eof);

    // Half-close in STREAM mode: the rest is echoed, then EOF.
    let mut c = client(s.addr());
    c.write_all(b"STREAM\nraw bytes \x00\xff").expect("send");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let (got, _, end) = read_all(&mut c, 4 * KIB, 4 * KIB, Duration::from_secs(5));
    assert_eq!(got, b"OK\nraw bytes \x00\xff");
    assert_eq!(end, End::Eof);

    // Resets: mid-line, with replies unread, mid-stream.
    let c = client(s.addr());
    (&c).write_all(b"ECHO reset in the midd").expect("send");
    reset_on_close(&c);
    drop(c);
    let c = client(s.addr());
    (&c).write_all(&b"ECHO unread\n".repeat(200)).expect("send");
    reset_on_close(&c);
    drop(c);
    let mut c = client(s.addr());
    c.write_all(b"STREAM\n").expect("send");
    assert_eq!(read_line(&mut c), b"OK");
    c.write_all(&[7u8; 200 * KIB]).expect("send");
    reset_on_close(&c);
    drop(c);
    // Garbage and an unknown command keep the connection usable.
    let mut c = client(s.addr());
    c.write_all(b"\x00\x01\x02 GET / HTTP/1.1\r\n")
        .expect("send");
    let err = read_line(&mut c);
    assert!(
        err.starts_with(b"ERR unknown command"),
        "{:?}",
        String::from_utf8_lossy(&err)
    );
    assert_echo(&mut c, "after garbage");
    drop(c);

    s.expect_fds(base, Duration::from_secs(5), "after resets");
    assert_serves(s.addr());
}

// -------------------------------------------------- 9. bad bytes on console

/// Raw control characters a terminal would act on (anything but the line
/// structure of the log itself).
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

#[test]
fn hostile_bytes_are_escaped_on_the_console() {
    let srv = start_server_with(
        "127.0.0.1",
        Opts {
            verbosity: Verbosity::Normal,
            ..Opts::default()
        },
    );
    let mut c = client(srv.addr);
    c.write_all(b"ECHO \x1b[2J\x07bell\0nul\xff\n")
        .expect("send");
    // The echo itself is byte for byte.
    assert_eq!(read_line(&mut c), b"ECHO_RESPONSE:\x1b[2J\x07bell\0nul\xff");
    c.write_all(b"ECHO cr\rover\xc2\x9bcsi\n").expect("send");
    assert_eq!(read_line(&mut c), b"ECHO_RESPONSE:cr\rover\xc2\x9bcsi");
    let long = "L".repeat(1000);
    assert_echo(&mut c, &long);
    assert!(
        wait_for(Duration::from_secs(5), || srv
            .lines_with("Client says")
            .len()
            >= 3),
        "console lines: {:?}",
        srv.lines.lock().unwrap()
    );
    let says = srv.lines_with("Client says");
    assert_eq!(
        says[0],
        "[ECHO] Client says: \\x1b[2J\\x07bell\\x00nul\u{fffd}"
    );
    assert_eq!(says[1], "[ECHO] Client says: cr\\rover\\x9bcsi");
    assert!(
        says[2].ends_with("… (1000 bytes)") && says[2].len() < 300,
        "long text is cut: {}",
        says[2]
    );
    for l in srv.lines.lock().unwrap().iter() {
        assert!(
            raw_controls(l).is_empty(),
            "raw control in console line {l:?}"
        );
    }
    drop(c);
    assert_serves(srv.addr);
    srv.stop();
}

#[test]
fn hostile_bytes_are_escaped_in_the_server_log() {
    let s = spawn("", &["-v"]);
    let mut c = client(s.addr());
    c.write_all(b"ECHO \x1b[2J\x07bell\0nul\xff\n")
        .expect("send");
    assert_eq!(read_line(&mut c), b"ECHO_RESPONSE:\x1b[2J\x07bell\0nul\xff");
    // An unknown command word is shown too (verbose), and in the reply.
    c.write_all(b"\x1b]0;pwned\x07 x\n").expect("send");
    let err = read_line(&mut c);
    assert_eq!(
        String::from_utf8_lossy(&err),
        "ERR unknown command '\\x1b]0;pwned\\x07' (try HELP)"
    );
    s.expect_line("Client says", Duration::from_secs(5));
    s.expect_line("sent unknown", Duration::from_secs(5));
    let log_path = s.dir.path().join("logs").join("server.log");
    let mut log = String::new();
    assert!(
        wait_for(Duration::from_secs(5), || {
            log =
                String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
            log.contains("sent unknown")
        }),
        "server.log: {log:?}"
    );
    assert!(
        log.contains("Client says: \\x1b[2J\\x07bell\\x00nul\u{fffd}"),
        "server.log: {log}"
    );
    assert!(log.contains("'\\x1b]0;pwned\\x07'"), "server.log: {log}");
    let bytes = std::fs::read(&log_path).expect("read log");
    assert!(!bytes.contains(&0x1b), "raw ESC in server.log");
    assert!(!bytes.contains(&0x07), "raw BEL in server.log");
    assert!(!bytes.contains(&0x00), "raw NUL in server.log");
    assert!(raw_controls(&log).is_empty(), "raw controls in server.log");
    drop(c);
    assert_serves(s.addr());
}

// ---------------------------------------------------------- 10. shutdown

#[test]
fn a_stdout_nobody_reads_does_not_stall_the_server() {
    // `netsh serve | less` left paused: the pipe fills, and writing the
    // console to it must not block the event loop (it did: echo, SNTP and
    // SIGTERM all hung until the reader went away).
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = DataDir::new();
    let mut child = netsh(dir.path())
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--ntp-port",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn netsh serve");
    let pid = child.id();
    let mut out = io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut child = KillOnDrop(child);
    let mut port = None;
    for _ in 0..10 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        port = announced_port(&line);
        if port.is_some() {
            break;
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port.expect("the server says its port")));
    // From here on nobody reads `out`. Fill the pipe with room lines: about
    // 50 console lines a second of 3,000 bytes each, far past 64 KiB.
    let mut member = client(addr);
    member.write_all(b"CHAT flooder\n").unwrap();
    let filler = "z".repeat(3000);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let _ = member.write_all(format!("{filler}\n").as_bytes());
        thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    let mut c = client(addr);
    assert_echo(&mut c, "still answering");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "echo took {:?}",
        t0.elapsed()
    );
    kill("TERM", pid);
    let ok = wait_for(Duration::from_secs(5), || {
        matches!(child.0.try_wait(), Ok(Some(_)))
    });
    assert!(ok, "SIGTERM did not stop a server whose stdout is full");
    drop(out);
}

fn shutdown_by_signal(sig: &str) {
    let mut s = spawn("", &["-q"]);
    let mut cs: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = client(s.addr());
            assert_echo(&mut c, &format!("client {i}"));
            c
        })
        .collect();
    // stdin is /dev/null (EOF from the start): the server does not care.
    assert!(s.alive(), "the server stopped on its own (stdin at EOF?)");

    let t = Instant::now();
    kill(sig, s.pid());
    for (i, c) in cs.iter_mut().enumerate() {
        let (got, _, end) = read_all(c, KIB, 4 * KIB, Duration::from_secs(3));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(BYE),
            "client {i} on SIG{sig}"
        );
        assert_eq!(end, End::Eof, "client {i} on SIG{sig}");
    }
    let status = wait_exit(&mut s.child, Duration::from_secs(2));
    let took = t.elapsed();
    eprintln!("SIG{sig}: exited {status:?} after {took:?}");
    let status = status.unwrap_or_else(|| panic!("still running 2 s after SIG{sig}"));
    assert!(took <= Duration::from_millis(2100), "exit took {took:?}");
    assert_eq!(status.code(), Some(0), "exit status on SIG{sig}");
    let out = s.rest_of_output(Duration::from_secs(2));
    let last_main = out.iter().rev().find(|l| l.starts_with("[MAIN]"));
    assert!(
        last_main.is_some_and(|l| l.starts_with("[MAIN] Server stopped")),
        "last console line: {out:?}"
    );
    let last = out.iter().rev().find(|l| !l.trim().is_empty());
    eprintln!("SIG{sig}: output after the signal: {out:?}");
    assert!(
        out.iter().any(|l| l.starts_with("Server stopped")),
        "no final report; last line {last:?}"
    );
    drop(cs);
}

#[test]
fn sigterm_says_bye_and_exits_zero() {
    shutdown_by_signal("TERM");
}

#[test]
fn sigint_says_bye_and_exits_zero() {
    shutdown_by_signal("INT");
}

#[test]
fn shutdown_is_bounded_when_a_client_does_not_read() {
    let mut s = spawn("", &["-q"]);
    let (stalled, _) = stalled_stream_client(&s);
    let mut reader = client(s.addr());
    assert_echo(&mut reader, "reader");
    // A third client is mid-line when the signal comes.
    let mut partial = client(s.addr());
    assert_echo(&mut partial, "about to");
    partial.write_all(b"ECHO never fini").expect("send");

    let t = Instant::now();
    kill("TERM", s.pid());
    for (name, c) in [("reader", &mut reader), ("mid-line", &mut partial)] {
        let (got, _, end) = read_all(c, KIB, 4 * KIB, Duration::from_secs(3));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(BYE),
            "{name}"
        );
        assert_eq!(end, End::Eof, "{name}");
    }
    let status = wait_exit(&mut s.child, Duration::from_secs(3));
    let took = t.elapsed();
    eprintln!("shutdown with a stalled client: exited {status:?} after {took:?}");
    assert_eq!(status.and_then(|st| st.code()), Some(0), "exit status");
    assert!(
        took <= Duration::from_secs(2),
        "exit took {took:?} (promised: within 2 s)"
    );
    drop(stalled);
}
