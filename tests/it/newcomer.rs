//! What a new user tripped over, each pinned by a test: output that comes
//! while it happens (bulk reports, retries, SNTP samples), no flag accepted
//! and ignored, numbers that add up, units said once, the shell saying what
//! leaving it does.

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{
    DataDir, FullListener, f, json, line_channel, netsh, netsh_tmp, one_err_line, show, spawn_pty,
    start_server,
};

#[test]
fn bulk_reports_come_while_the_run_goes_on_every_i() {
    let srv = start_server("127.0.0.1");
    let d = DataDir::new();
    let mut c = netsh(d.path());
    c.args([
        "echo",
        &srv.addr.to_string(),
        "--bulk",
        "-t",
        "2",
        "-i",
        "500ms",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = c.spawn().expect("spawn netsh");
    let lines = line_channel(child.stdout.take().expect("stdout"));
    let mut reports = Vec::new();
    let mut total_at = None;
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(10)) {
        if l.starts_with("[SUM] total") {
            total_at = Some(start.elapsed());
        } else if l.starts_with("[SUM] ") {
            reports.push((start.elapsed(), l));
        }
    }
    let _ = crate::common::expect_exit(&mut child, Duration::from_secs(10));
    let total_at = total_at.expect("a total line");
    // About one report every 500 ms (the last, a runt, is folded).
    assert!((3..=5).contains(&reports.len()), "{reports:#?}");
    // The first came long before the end: printed live, not at the end.
    assert!(
        reports[0].0 + Duration::from_millis(900) < total_at,
        "{reports:#?} / total at {total_at:?}"
    );
}

#[test]
fn bulk_takes_no_probe_flags_and_a_message_takes_none_either() {
    let srv = start_server("127.0.0.1");
    let target = srv.addr.to_string();
    for flags in [&["-c", "3"][..], &["-s", "100"], &["-w", "2s"]] {
        let mut args = vec!["echo", &target, "--bulk"];
        args.extend_from_slice(flags);
        let o = netsh_tmp(&args);
        assert_eq!(o.code, Some(2), "{flags:?}: {}", show(&o));
        assert!(
            one_err_line(&o).contains("cannot be used with"),
            "{}",
            show(&o)
        );
    }
    for flags in [&["-i", "200ms"][..], &["-s", "100"], &["-w", "2s"]] {
        let mut args = vec!["echo", &target, "hello"];
        args.extend_from_slice(flags);
        let o = netsh_tmp(&args);
        assert_eq!(o.code, Some(2), "{flags:?}: {}", show(&o));
        assert!(
            one_err_line(&o).contains("is for probe mode (-c)"),
            "{}",
            show(&o)
        );
    }
    let o = netsh_tmp(&["echo", &target, "--bulk", "-i", "10ms", "-t", "1"]);
    assert_eq!(o.code, Some(2), "{}", show(&o));
}

#[test]
fn bare_echo_sends_one_hello_and_echo_question_mark_is_help() {
    let srv = start_server("127.0.0.1");
    let o = netsh_tmp(&["echo", &srv.addr.to_string()]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("Sent: Hello\n"), "{}", show(&o));
    assert!(
        o.stdout.contains("Received: ECHO_RESPONSE:Hello\n"),
        "{}",
        show(&o)
    );
    let before = srv.handle.stats.snapshot().requests;
    let o = netsh_tmp(&["-o", &format!("server={}", srv.addr), "echo", "?"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(o.stdout.contains("Usage: echo"), "{}", show(&o));
    assert_eq!(
        srv.handle.stats.snapshot().requests,
        before,
        "nothing was sent"
    );
}

#[test]
fn sizes_are_binary_as_read_and_the_last_runt_interval_is_folded() {
    let srv = start_server("127.0.0.1");
    let o = netsh_tmp(&["echo", &srv.addr.to_string(), "--bulk", "-n", "100M"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert!(
        o.stdout.contains("sent 100.00 MiB  received 100.00 MiB"),
        "{}",
        show(&o)
    );
    let o = netsh_tmp(&[
        "echo",
        &srv.addr.to_string(),
        "--bulk",
        "-t",
        "1",
        "-i",
        "300ms",
        "--json",
    ]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let j = json(&o);
    let ivs = j["intervals"].as_array().expect("intervals");
    assert!(ivs.len() >= 2, "{j}");
    for iv in ivs {
        let len = f(&iv["end_s"]) - f(&iv["start_s"]);
        assert!(len >= 0.15, "no interval under half of -i: {iv}");
    }
}

#[test]
fn a_connect_to_a_full_listen_queue_says_each_attempt_and_the_real_time() {
    let hole = FullListener::new();
    let t = Instant::now();
    let o = netsh_tmp(&[
        "-o",
        "timeout=300ms",
        "-o",
        "retries=1",
        "echo",
        &hole.addr.to_string(),
        "hi",
    ]);
    let took = t.elapsed();
    assert_eq!(o.code, Some(1), "{}", show(&o));
    assert!(
        o.stdout.contains(&format!(
            "connect {}: attempt 1/2: no answer in 300ms",
            hole.addr
        )),
        "{}",
        show(&o)
    );
    let e = one_err_line(&o);
    assert!(e.starts_with("error[timed-out]: "), "{e}");
    assert!(e.contains("(2 attempts of 300ms)"), "{e}");
    assert!(took >= Duration::from_millis(600), "{took:?}");
}

#[test]
fn sntp_to_a_silent_port_says_each_request_as_it_goes() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = silent.local_addr().expect("addr").to_string();
    let d = DataDir::new();
    let mut c = netsh(d.path());
    c.args(["sntp", &target, "-c", "3", "--timeout", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().expect("spawn netsh");
    let lines = line_channel(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        seen.push((start.elapsed(), l));
    }
    let st = crate::common::expect_exit(&mut child, Duration::from_secs(5));
    assert_eq!(st.code(), Some(1));
    let first = seen
        .iter()
        .find(|(_, l)| l == "[SNTP] request 1/3: no valid reply in 300ms")
        .unwrap_or_else(|| panic!("{seen:#?}"));
    let last = seen
        .iter()
        .find(|(_, l)| l == "[SNTP] request 3/3: no valid reply in 300ms")
        .unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(
        first.0 + Duration::from_millis(400) < last.0,
        "the first came as it happened: {seen:#?}"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(err.contains("to 3 requests in "), "{err}");
    assert!(err.contains("(300ms each)"), "{err}");
}

#[test]
fn leaving_the_shell_says_it_stops_its_server_and_what_it_had() {
    let d = DataDir::new();
    let mut p = spawn_pty(d.path(), &[]);
    p.exp_string("> ").expect("a prompt");
    p.send_line("serve --port 0 --no-ntp -q").expect("type");
    p.exp_string("in the background")
        .expect("the server started");
    p.exp_string("> ").expect("the prompt again");
    // Ctrl-D at the prompt.
    p.send_control('d').expect("Ctrl-D");
    p.exp_string("Stopping the server on ")
        .expect("the shell says what leaving does");
    p.exp_string("0 clients connected now, 0 served since it started.")
        .expect("with what the server had");
    p.exp_eof().expect("the shell ends");
}

#[test]
fn small_wording_each_says_what_it_means() {
    // A number that is not one: no Rust parse error leaks out.
    let o = netsh_tmp(&["echo", "127.0.0.1", "-c", "abc"]);
    let e = one_err_line(&o);
    assert!(
        e.contains("'abc' for '--count <COUNT>': not a whole number"),
        "{e}"
    );
    assert!(!e.contains("invalid digit"), "{e}");
    // An unknown key lists the keys; help is not one of them.
    let o = netsh_tmp(&["set", "colour", "on"]);
    let e = one_err_line(&o);
    assert!(e.contains("one of: server, timeout, retries"), "{e}");
    let o = netsh_tmp(&["help", "set"]);
    assert!(
        !o.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("help ")),
        "{}",
        show(&o)
    );
    // A script that is not there says where to look.
    let o = netsh_tmp(&["run", "nosuch.rhai"]);
    let e = one_err_line(&o);
    assert!(
        e.contains("no such file or directory — check the path"),
        "{e}"
    );
    // A warning has one prefix.
    let d = DataDir::new();
    d.write("netsh.conf", "timeout = banana\n");
    let o = d.run(&["settings"]);
    let w = o.stderr.lines().next().unwrap_or_default();
    assert!(w.starts_with("warning[settings]: "), "{w}");
    assert!(!w.contains("error["), "{w}");
}

#[test]
fn colour_keeps_the_columns_of_help_on_a_terminal() {
    let d = DataDir::new();
    let mut c = std::process::Command::new("sh");
    crate::common::scrub_env(&mut c);
    c.arg("-c")
        .arg(r#"stty cols 200 rows 40 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_netsh"))
        .arg("--data-dir")
        .arg(d.path())
        .arg("help")
        .current_dir(d.path())
        .env("TERM", "xterm-256color");
    let mut p = rexpect::session::spawn_command(c, Some(10_000)).expect("spawn on a pty");
    let out = p.exp_eof().expect("help ends");
    assert!(out.contains("\u{1b}["), "coloured on a terminal: {out:?}");
    // Without the escapes, every summary starts in the same column.
    let plain = strip_ansi(&out);
    let cols: Vec<usize> = plain
        .lines()
        .filter(|l| l.starts_with("  ") && l.len() > 14)
        .map(|l| {
            2 + l[2..].find(' ').unwrap_or(0)
                + l[2..]
                    .chars()
                    .skip_while(|c| *c != ' ')
                    .take_while(|c| *c == ' ')
                    .count()
        })
        .collect();
    assert!(cols.len() >= 10, "{plain}");
    assert!(cols.iter().all(|&c| c == cols[0]), "{cols:?}\n{plain}");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}
