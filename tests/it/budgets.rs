//! Budgets: what the server costs in CPU time and memory in the scenarios
//! of the other modules.
//!
//! These are measurements against a threshold on a machine that other
//! tests (and other users) share: another process busy at the same moment
//! can push a CPU-tick or RSS figure over its line without anything being
//! wrong in netsh. So every test here is `#[ignore]`d, `cargo test` skips
//! them, and `scripts/test` runs them afterwards, alone and one at a time:
//!
//! ```text
//! cargo test --test it budgets:: -- --ignored --test-threads=1
//! ```
//!
//! What goes where:
//!
//! - here: CPU ticks spent over a measuring window (`ticks_over`: "does not
//!   spin", "costs no CPU"), growth of resident or peak memory (`VmRSS`,
//!   `VmHWM`: "memory stays bounded"), and any time limit that is a speed
//!   target, how fast rather than whether (none at the moment);
//! - the normal suite: what the program must do, including time bounds
//!   that are promises or timeouts with slack (a command given
//!   `timeout=300ms` ends in under 3 s, a script timeout stops the script
//!   within seconds, a signalled server exits within the 2 s it promises, a
//!   fresh client is answered within a second or two while another client
//!   floods or stalls), and file descriptors that must all be given back
//!   (an exact count, a leak check, not a budget).
//!
//! Where a test checked both, the behaviour stayed in its module and the
//! budget is here, on the same scenario: the `pub(crate)` scenario
//! functions of `server_limits` ([`send_an_endless_line`],
//! [`flood_without_reading`], [`stalled_stream_client`], [`churn`],
//! [`run_out_of_fds`]), so each is written once. The tests that were only
//! a budget moved here whole, with the helpers of `chat` and `echo` they
//! use.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::chat::{self, Peer, body, join};
use crate::common::{DataDir, ServerProc, assert_serves, client, read_to_eof, retry_eintr};
use crate::echo::expect_bytes;
use crate::server_limits::{
    Spawned, churn, flood_without_reading, recover_from_running_out_of_fds, run_out_of_fds,
    send_an_endless_line, spawn, stalled_stream_client, warmed_up,
};

/// How much a spawned server's peak RSS may grow during one scenario.
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// A fresh `netsh serve -q`, `scenario` on it (given its fds at rest), and
/// its peak RSS meanwhile, which must grow by less than [`RSS_SLACK_KIB`].
/// Returns the server (still running) and what `scenario` returned.
fn assert_peak_rss_bounded<T>(
    what: &str,
    scenario: impl FnOnce(&Spawned, usize) -> T,
) -> (Spawned, T) {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();
    let hwm0 = s.hwm_kib();
    let t = scenario(&s, base);
    let grew = s.hwm_kib().saturating_sub(hwm0);
    eprintln!("{what}: peak RSS grew by {grew} KiB (from {hwm0} KiB)");
    assert!(grew < RSS_SLACK_KIB, "{what}: peak RSS grew by {grew} KiB");
    (s, t)
}

// ------------------------------------------------------------------ memory

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn line_over_64_kib_gets_err_and_memory_stays_bounded() {
    assert_peak_rss_bounded("long line", send_an_endless_line);
}

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn line_client_that_never_reads_leaves_memory_bounded() {
    let (s, ()) = assert_peak_rss_bounded("slow reader", flood_without_reading);
    assert_serves(s.addr());
}

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn stream_client_that_never_reads_leaves_memory_bounded() {
    // The stalled client stays connected until the fresh one is served.
    let (s, (stalled, _)) = assert_peak_rss_bounded("stream", |s, _| stalled_stream_client(s));
    assert_serves(s.addr());
    drop(stalled);
}

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn a_thousand_connect_close_cycles_leave_no_memory_behind() {
    let (s, base) = warmed_up();
    let rss0 = s.rss_kib();
    let resets = churn(&s, base);
    let rss = s.rss_kib();
    eprintln!(
        "churn: fds back to {base}; RSS {rss0} KiB -> {rss} KiB ({resets} resets); peak {} KiB",
        s.hwm_kib()
    );
    assert!(
        rss <= rss0 + 8 * 1024,
        "RSS grew from {rss0} KiB to {rss} KiB over 1000 short connections"
    );
}

/// Regression (d8387ad): the foreground `serve` held the operator's
/// receiver without reading it, so every room line stayed in the channel.
#[test]
#[ignore = "budget: run serially with scripts/test"]
fn a_foreground_server_does_not_keep_every_line_in_memory() {
    let dir = DataDir::new();
    let srv = ServerProc::spawn(
        dir.path(),
        "",
        &["--no-ntp", "--chat-history", "0", "--quiet"],
    );
    let mut m = join(srv.addr(), "m", 2);
    let reader = m.split("m reader");
    let t = std::thread::spawn(move || {
        let mut r = reader;
        let mut n = 0usize;
        loop {
            let l = r.line();
            match body(&l) {
                "<m> END" => return n,
                b if b.starts_with("<m> L") => n += 1,
                b => panic!("unexpected {b:.60}"),
            }
        }
    });
    let pad = "x".repeat(chat::MAX_LINE - 16);
    let mut send = |from: usize, to: usize| {
        for i in from..to {
            m.send(&format!("L{i} {pad}"));
        }
    };
    // Warm up (buffers, allocator), then measure over 24 MB of room lines.
    send(0, 500);
    let mut sync = Peer::connect(srv.addr(), "sync");
    sync.send("ECHO sync");
    assert_eq!(sync.line(), "ECHO_RESPONSE:sync");
    let before = srv.rss_kib();
    send(500, 6500);
    m.send("END");
    assert_eq!(t.join().unwrap(), 6500);
    let after = srv.rss_kib();
    assert!(
        after < before + 12 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 6000 lines of 4 KiB"
    );
}

// --------------------------------------------------------------------- CPU

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn stream_back_pressure_does_not_spin() {
    let s = spawn("", &["-q"]);
    let (c, _) = stalled_stream_client(&s);
    let ticks = s.ticks_over(Duration::from_secs(1));
    eprintln!("stream: {ticks} CPU ticks in 1 s while back-pressured");
    assert!(
        ticks <= 10,
        "server used {ticks}/100 ticks while waiting for a reader"
    );
    assert_serves(s.addr());
    drop(c);
}

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn a_stream_client_that_stops_reading_costs_no_cpu() {
    let dir = DataDir::new();
    let srv = ServerProc::spawn(dir.path(), "", &[]);
    let mut s = client(srv.addr());
    s.write_all(b"STREAM\n").unwrap();
    expect_bytes(&mut s, b"OK\n");
    // Write without reading until nothing more is taken for 300 ms: the
    // server's queue is full and it has stopped reading from us.
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let at = sent % data.len();
        match retry_eintr(|| s.write(&data[at..])) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent > 1 << 20, "only {sent} bytes taken");
    // A measuring window, not synchronisation: the server has nothing to do.
    let spent = srv.ticks_over(Duration::from_secs(1));
    // Reading again drains every byte, in order, then EOF.
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_eof(&mut s);
    assert_eq!(got.len(), sent);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == data[i % data.len()]),
        "the echo differs"
    );
    assert!(
        spent < 20,
        "the server used {spent} clock ticks (of 100) in 1 s with a stalled STREAM client"
    );
}

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn out_of_fds_pauses_accepting_without_spinning_and_recovers() {
    let (mut s, base, clients) = run_out_of_fds();
    let _ = s.lines.try_iter().count();
    let ticks = s.ticks_over(Duration::from_secs(1));
    let notices = s
        .lines
        .try_iter()
        .filter(|l| l.contains("accept paused"))
        .count();
    eprintln!(
        "emfile: {ticks} CPU ticks and {notices} 'accept paused' lines in 1 s while saturated"
    );
    assert!(
        ticks < 30,
        "server used {ticks}/100 ticks while out of fds (spinning?)"
    );
    assert!(s.alive(), "server died out of fds");
    recover_from_running_out_of_fds(&s, base, clients);
}

#[test]
#[ignore = "budget: run serially with scripts/test"]
fn idle_server_with_100_connections_uses_no_cpu() {
    let s = spawn("", &["-q"]);
    let base = s.baseline_fds();
    let cs: Vec<TcpStream> = (0..100).map(|_| client(s.addr())).collect();
    s.expect_fds(base + 100, Duration::from_secs(5), "100 idle clients");
    let ticks = s.ticks_over(Duration::from_secs(1));
    eprintln!("idle: {ticks} CPU ticks in 1 s with 100 idle connections");
    assert!(ticks <= 2, "an idle server used {ticks}/100 ticks");
    assert_serves(s.addr());
    drop(cs);
    s.expect_fds(base, Duration::from_secs(5), "after the idle clients");
}
