//! Start-up benchmark: time from exec to the first prompt of the interactive
//! shell (on a pseudo-terminal), and the wall time of `netsh info --json`,
//! next to `ip -j addr` (iproute2) run the same way as the reference.
//!
//! Run: `cargo bench --bench startup` (release build). Prints one
//! `name=value` figure per line; milliseconds.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 40;

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name}_ms_min={:.2} {name}_ms_p50={:.2} {name}_ms_p90={:.2}",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10])
    );
}

fn time_cmd(prog: &str, args: &[&str]) -> Vec<Duration> {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let st = Command::new(prog)
                .args(args)
                .stdout(Stdio::null())
                .status()
                .expect("run");
            assert!(st.success(), "{prog} failed");
            t.elapsed()
        })
        .collect()
}

fn main() {
    let netsh = env!("CARGO_BIN_EXE_netsh");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 temp path");

    let mut first_prompt = Vec::new();
    for _ in 0..RUNS {
        let mut c = Command::new(netsh);
        c.args(["--data-dir", d]).env("NO_COLOR", "1");
        let t = Instant::now();
        // Read the pty directly: rexpect's reader polls every 100 ms.
        let p = rexpect::process::PtyProcess::new(c).expect("spawn on a pty");
        let mut tty = p.get_file_handle().expect("pty handle");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(2).any(|w| w == b"> ") {
            let n = tty.read(&mut buf).expect("read pty");
            assert!(n > 0, "netsh closed the pty before its prompt");
            seen.extend_from_slice(&buf[..n]);
        }
        first_prompt.push(t.elapsed());
        tty.write_all(b"\x04").expect("ctrl-d");
        let _ = p.wait();
    }
    stats("first_prompt", first_prompt);
    stats(
        "info_json",
        time_cmd(netsh, &["--data-dir", d, "info", "--json"]),
    );
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        stats("ip_addr_json", time_cmd("ip", &["-j", "addr"]));
    }
}
