//! The interactive shell on a real pseudo-terminal (rexpect): Tab completion,
//! history across restarts, Ctrl-C at the prompt, Ctrl-D to leave.

use std::path::Path;
use std::time::{Duration, Instant};

use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

use crate::common::{self, DataDir, spawn_pty, type_keys};

const PROMPT: &str = "netsh 127.0.0.1:5050> ";

fn shell(data: &Path) -> PtySession {
    let mut p = spawn_shell(data);
    at_prompt(&mut p);
    p
}

/// The shell on a pty, before its first prompt.
fn spawn_shell(data: &Path) -> PtySession {
    spawn_pty(data, &[])
}

/// Wait for the prompt, then for the shell to go quiet, as a person does
/// before typing: keys that arrive while rustyline is still redrawing, or
/// with a Ctrl-C in one read, are dropped with its read-ahead (rustyline
/// #690), and a prompt string also appears in every redraw of the line.
fn at_prompt(p: &mut PtySession) {
    p.exp_string(PROMPT).expect("a prompt");
    let end = Instant::now() + Duration::from_secs(3);
    let mut quiet_since = Instant::now();
    while Instant::now() < end {
        if p.try_read().is_some() {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(150) {
            return;
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn exits_zero(p: &mut PtySession) {
    match p.process().wait().expect("wait for netsh") {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("netsh did not exit 0: {other:?}"),
    }
}

#[test]
fn tab_completes_a_command_name() {
    let dir = DataDir::new();
    let mut p = shell(dir.path());
    // "inf" alone is not a command: only a completed "info" lists loopback.
    type_keys(&mut p, "inf\t");
    type_keys(&mut p, "lo\r");
    p.exp_string("inet  127.0.0.1/8")
        .expect("info lo ran after Tab completion");
    at_prompt(&mut p);
    type_keys(&mut p, "set sntp\t");
    type_keys(&mut p, "\r");
    p.exp_string("sntp-server = pool.ntp.org:123")
        .expect("sub-word completed");
    at_prompt(&mut p);
    p.send_control('d').unwrap();
    exits_zero(&mut p);
}

#[test]
fn history_survives_a_restart_without_duplicates() {
    let dir = DataDir::new();
    let mut p = shell(dir.path());
    p.send_line("set retries 3").unwrap();
    p.exp_string("retries = 3").unwrap();
    at_prompt(&mut p);
    p.send_line("set retries 3").unwrap();
    p.exp_string("unchanged").unwrap();
    at_prompt(&mut p);
    p.send_line("exit").unwrap();
    exits_zero(&mut p);

    let hist = std::fs::read_to_string(dir.path().join("history/netsh_history")).unwrap();
    assert_eq!(
        hist.matches("set retries 3").count(),
        1,
        "duplicates skipped: {hist:?}"
    );

    // A new shell: Up twice recalls the line before `exit` from the last run.
    let mut p = shell(dir.path());
    type_keys(&mut p, "\x1b[A");
    p.exp_string("exit").unwrap();
    type_keys(&mut p, "\x1b[A");
    type_keys(&mut p, "\r");
    p.exp_string("retries = 3").expect("recalled line ran");
    at_prompt(&mut p);
    p.send_line("quit").unwrap();
    exits_zero(&mut p);
}

#[test]
fn a_history_file_that_is_a_device_or_huge_is_left_alone() {
    // rustyline reads the whole history file on start and on every append:
    // /dev/full reads as endless zeros (the shell used to grow to gigabytes)
    // and refuses writes as a full disk does.
    for (case, warning) in [
        ("device", "is not a regular file"),
        ("huge", "over the 16MiB netsh reads"),
    ] {
        let dir = DataDir::new();
        let hist_dir = dir.path().join("history");
        std::fs::create_dir_all(&hist_dir).unwrap();
        let hist = hist_dir.join("netsh_history");
        if case == "device" {
            std::os::unix::fs::symlink("/dev/full", &hist).unwrap();
        } else {
            let f = std::fs::File::create(&hist).unwrap();
            f.set_len(17 << 20).unwrap(); // sparse: no real 17 MiB written
        }
        let mut p = spawn_shell(dir.path());
        p.exp_string(warning)
            .unwrap_or_else(|e| panic!("{case}: no warning: {e}"));
        p.exp_string("history is kept in memory for this session only")
            .unwrap();
        at_prompt(&mut p);
        p.send_line("set retries 4").unwrap();
        p.exp_string("retries = 4").expect("and works");
        at_prompt(&mut p);
        type_keys(&mut p, "\x1b[A");
        p.exp_string("set retries 4")
            .expect("history still works in memory");
        p.send_control('c').unwrap();
        at_prompt(&mut p);
        p.send_line("exit").unwrap();
        exits_zero(&mut p);
        if case == "huge" {
            assert_eq!(
                std::fs::metadata(&hist).unwrap().len(),
                17 << 20,
                "left as it was"
            );
        }
    }
}

#[test]
fn ctrl_c_clears_the_line_and_keeps_the_shell() {
    let dir = DataDir::new();
    let mut p = shell(dir.path());
    type_keys(&mut p, "set retries 9");
    p.send_control('c').unwrap();
    at_prompt(&mut p);
    p.send_line("settings").unwrap();
    p.exp_string("SETTING").unwrap();
    at_prompt(&mut p);
    assert!(
        p.process()
            .status()
            .is_some_and(|s| s == WaitStatus::StillAlive)
    );
    p.send_line("ifno").unwrap();
    p.exp_string("did you mean 'info'?").unwrap();
    at_prompt(&mut p);
    p.send_control('d').unwrap();
    exits_zero(&mut p);
    let conf = std::fs::read_to_string(dir.path().join("netsh.conf")).unwrap_or_default();
    assert!(
        !conf.contains("retries"),
        "the cleared line did not run: {conf:?}"
    );
}

#[test]
fn ctrl_c_stops_a_running_command_and_keeps_the_shell() {
    let srv = common::start_server("127.0.0.1");
    let dir = DataDir::new();
    let mut p = shell(dir.path());
    // 1,000 probes 100 ms apart would take 100 s; Ctrl-C ends it like ping.
    p.send_line(&format!("echo {} -c 1000 -i 100ms", srv.addr))
        .unwrap();
    p.exp_string("seq=2 ").expect("probes running");
    p.send_control('c').unwrap();
    p.exp_string("(interrupted)")
        .expect("the run stops with its summary");
    at_prompt(&mut p);
    p.send_line("settings").unwrap();
    p.exp_string("SETTING").unwrap();
    at_prompt(&mut p);
    p.send_control('d').unwrap();
    exits_zero(&mut p);
}
