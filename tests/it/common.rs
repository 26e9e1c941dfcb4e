//! Shared test helpers, one copy each:
//!
//! - a netsh server in-process on an ephemeral loopback port
//!   ([`start_server`]), or the real binary as a separate process
//!   ([`ServerProc`], for fd/memory/CPU/limit checks);
//! - the binary run with a private data dir, a scrubbed environment and a
//!   hard timeout ([`netsh_in`], [`netsh_tmp`], [`DataDir`], [`run`]), and
//!   what a run printed ([`show`], [`json`], [`json_lines`],
//!   [`one_err_line`]);
//! - the echo protocol by hand ([`client`], [`read_line`], [`assert_echo`])
//!   and the check every server test ends with: a fresh client is still
//!   served ([`assert_serves`]);
//! - the binary on a pseudo-terminal ([`spawn_pty`], [`type_keys`]).
//!
//! No sleeps as synchronisation: waits poll a condition with a deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netsh::server::console::{Console, Verbosity};
use netsh::server::{Handle, Server, ServerConfig, StatsSnapshot};
use rexpect::session::{PtySession, spawn_command};
use serde_json::Value;

/// Longest any single netsh run (or peer script) may take before the test
/// fails.
pub const LIMIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------ in-process server

/// A server running on a thread of the test process.
pub struct TestServer {
    /// The bound address (loopback, ephemeral port).
    pub addr: SocketAddr,
    /// The TLS listener's address, if on.
    pub tls_addr: Option<SocketAddr>,
    /// The SNTP responder's address, if on.
    pub ntp_addr: Option<SocketAddr>,
    /// Where it serves `/metrics`, if it does.
    pub metrics_addr: Option<SocketAddr>,
    /// Stops it; live counters.
    pub handle: Handle,
    /// Every console line so far.
    pub lines: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<netsh::error::Result<StatsSnapshot>>>,
}

/// Options for [`start_server_with`].
pub struct Opts {
    pub max_clients: usize,
    /// Per-address limit, loopback included (0: none).
    pub max_per_address: usize,
    pub idle_timeout: Duration,
    pub verbosity: Verbosity,
    /// SNTP responder (on a free port by default).
    pub ntp: Option<netsh::server::sntp::NtpConfig>,
    /// Chat log directory (none by default).
    pub chat_log_dir: Option<PathBuf>,
    /// Chat lines replayed to newcomers.
    pub chat_replay: usize,
    /// Where to serve `/metrics` (nowhere by default).
    pub metrics: Option<std::net::SocketAddr>,
    /// UDP echo budget per source (the server's default unless changed).
    pub udp_rate_limit: Option<netsh::server::limit::Rate>,
    /// A line must be whole this long after its first byte.
    pub line_timeout: Duration,
    /// Chat members silent this long are closed.
    pub chat_idle: Option<Duration>,
    /// What one address may cost the room.
    pub chat_limits: netsh::server::hub::ChatLimits,
    /// The chat room's key, if it needs one.
    pub chat_key: Option<Vec<u8>>,
    /// Echo and chat over TLS too (on a free port).
    pub tls: Option<netsh::server::tls::TlsSetup>,
    /// `--allow`/`--deny` (none by default: everyone).
    pub access: netsh::server::access::Access,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            max_clients: 1000,
            max_per_address: 0,
            idle_timeout: Duration::from_secs(60),
            verbosity: Verbosity::Normal,
            ntp: Some(netsh::server::sntp::NtpConfig {
                port: 0,
                stratum: 10,
                rate_limit: Some(netsh::server::sntp::DEFAULT_NTP_RATE),
                v6_prefix: 64,
            }),
            chat_log_dir: None,
            chat_replay: 20,
            metrics: None,
            tls: None,
            chat_key: None,
            udp_rate_limit: Some(netsh::server::DEFAULT_UDP_RATE),
            line_timeout: netsh::server::DEFAULT_LINE_TIMEOUT,
            chat_idle: Some(netsh::server::DEFAULT_CHAT_IDLE),
            chat_limits: netsh::server::hub::ChatLimits::default(),
            access: netsh::server::access::Access::default(),
        }
    }
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// Start an in-process server on `ip` port 0.
pub fn start_server(ip: &str) -> TestServer {
    start_server_with(ip, Opts::default())
}

pub fn start_server_with(ip: &str, o: Opts) -> TestServer {
    let ip: IpAddr = ip.parse().expect("test ip");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = Arc::clone(&lines);
    let console = Console::new(
        Some(Box::new(move |l: &str| {
            sink_lines.lock().unwrap().push(l.to_string())
        })),
        None,
        o.verbosity,
    );
    let server = Server::bind(ServerConfig {
        bind: vec![ip],
        port: 0,
        max_clients: o.max_clients,
        max_per_address: o.max_per_address,
        limit_loopback: true,
        idle_timeout: o.idle_timeout,
        udp_rate_limit: o.udp_rate_limit,
        v6_prefix: 64,
        line_timeout: o.line_timeout,
        chat_idle: o.chat_idle,
        chat_limits: o.chat_limits,
        chat_log_keep: netsh::server::chat::Retention::default(),
        handle_signals: false,
        ntp: o.ntp,
        chat_log_dir: o.chat_log_dir,
        chat_replay: o.chat_replay,
        console,
        metrics: o.metrics,
        tls: o.tls,
        chat_key: o.chat_key.map(Arc::new),
        access: o.access,
    })
    .expect("bind test server");
    let addr = server.addrs()[0];
    let tls_addr = server.tls_addrs().first().copied();
    let ntp_addr = server.ntp_addrs().first().copied();
    let metrics_addr = server.metrics_addr();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    TestServer {
        addr,
        tls_addr,
        ntp_addr,
        metrics_addr,
        handle,
        lines,
        thread: Some(thread),
    }
}

impl TestServer {
    /// Stop and return the final counters.
    pub fn stop(mut self) -> StatsSnapshot {
        self.handle.stop();
        let t = self.thread.take().expect("running");
        t.join().expect("server thread").expect("server result")
    }

    /// Console lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Console lines containing `needle`, once there are `n` of them or 5 s
    /// have passed: the console prints a turn's lines after its replies
    /// went out, so a client may see a line just before the console does.
    pub fn lines_with_at_least(&self, needle: &str, n: usize) -> Vec<String> {
        wait_for(Duration::from_secs(5), || {
            self.lines_with(needle).len() >= n
        });
        self.lines_with(needle)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.stop();
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- waiting

/// Poll `cond` every millisecond until it holds or `within` passes.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Wait up to `within` for `child` to exit: its status, or `None` if it is
/// still running.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_for(within, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// [`wait_exit`] that must see the exit.
pub fn expect_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let pid = child.id();
    wait_exit(child, within)
        .unwrap_or_else(|| panic!("process {pid} did not exit within {within:?}"))
}

/// The next line containing `needle` from `rx`; what came before is kept in
/// `seen` (and shown if the line does not come within `within`).
pub fn recv_until(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
    within: Duration,
) -> String {
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => {
                seen.push(l.clone());
                return l;
            }
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line containing {needle:?} within {within:?}; saw {seen:#?}"),
        }
    }
}

// ------------------------------------------------------------- the binary

/// Remove every `NETSH_*` variable and `NO_COLOR` from what `c` inherits,
/// so the host's settings cannot change what netsh sees.
pub fn scrub_env(c: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETSH_") {
            c.env_remove(k);
        }
    }
    c.env_remove("NO_COLOR")
}

/// The netsh binary in `dir` with a scrubbed environment ([`scrub_env`]) and
/// no `--data-dir`: the caller adds the words.
pub fn bare_netsh(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netsh"));
    c.current_dir(dir);
    scrub_env(&mut c);
    c
}

/// The netsh binary with `data` as its data dir and working directory, and
/// no `NETSH_*` from the host.
pub fn netsh(data: &Path) -> Command {
    let mut c = bare_netsh(data);
    c.arg("--data-dir").arg(data);
    c
}

/// What one run produced.
#[derive(Debug)]
pub struct Output {
    /// Exit status (always there: [`run`] fails the test on a death by
    /// signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `c` with `stdin` (or /dev/null), stdout and stderr captured, killing
/// it (and failing the test) after `limit`. A child killed by a signal
/// (SIGPIPE on a closed stdout, a crash) fails the test too.
pub fn run(c: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    run_io(c, stdin, Stdio::piped(), limit)
}

/// [`run`] with stdout going to `stdout` (captured only when that is
/// `Stdio::piped()`). Input is written from its own thread, so a child that
/// stops reading early, or writes a lot first, cannot deadlock the test.
pub fn run_io(mut c: Command, stdin: Option<&[u8]>, stdout: Stdio, limit: Duration) -> Output {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(stdout)
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn netsh");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        // A write error (the child stopped reading, after `exit`) is
        // expected; dropping `w` closes the pipe: the child's end of input.
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            s
        })
    };
    let o = child.stdout.take().map(|r| read_all(Box::new(r)));
    let e = read_all(Box::new(child.stderr.take().expect("stderr")));
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} {:?} did not finish within {limit:?}; killed",
                c.get_program(),
                c.get_args()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let out = Output {
        code: status.code(),
        stdout: o
            .map(|o| text(o.join().unwrap_or_default()))
            .unwrap_or_default(),
        stderr: text(e.join().unwrap_or_default()),
    };
    if let Some(sig) = status.signal() {
        panic!(
            "{:?} {:?} was killed by signal {sig}:\n{}",
            c.get_program(),
            c.get_args(),
            show(&out)
        );
    }
    out
}

/// `netsh --data-dir DIR ARGS…` in DIR, with optional stdin, under [`LIMIT`].
pub fn netsh_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = netsh(dir);
    c.args(args);
    run(c, stdin, LIMIT)
}

/// `netsh ARGS…` (no stdin) with a data dir of its own, removed afterwards.
pub fn netsh_tmp(args: &[&str]) -> Output {
    let dir = DataDir::new();
    dir.run(args)
}

/// A private data directory for one test (also netsh's working directory),
/// removed when dropped.
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            dir: tempfile::tempdir().expect("create a temporary data dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The settings file netsh reads and `set` writes.
    pub fn conf(&self) -> PathBuf {
        self.path().join("netsh.conf")
    }

    /// Write `contents` to `name` (relative to the data dir, parents
    /// created); returns `name`.
    pub fn write<'a>(&self, name: &'a str, contents: &str) -> &'a str {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create the file's dir");
        }
        std::fs::write(&p, contents).expect("write the file");
        name
    }

    /// `netsh --data-dir DIR ARGS…` in DIR, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = netsh(self.path());
        c.args(args);
        c
    }

    /// `netsh --data-dir DIR ARGS…` with no stdin, under [`LIMIT`].
    pub fn run(&self, args: &[&str]) -> Output {
        netsh_in(self.path(), args, None)
    }

    /// `netsh --data-dir DIR` (no command words: a piped session) reading
    /// `input`, under [`LIMIT`].
    pub fn piped(&self, input: impl AsRef<[u8]>) -> Output {
        netsh_in(self.path(), &[], Some(input.as_ref()))
    }
}

// ------------------------------------------------------- reading a run

/// Everything about a run, for assertion messages.
pub fn show(o: &Output) -> String {
    let nl = |s: &str| {
        if s.is_empty() || s.ends_with('\n') {
            ""
        } else {
            "\n"
        }
    };
    format!(
        "exit status {:?}\n--- stdout\n{}{}--- stderr\n{}{}---",
        o.code,
        o.stdout,
        nl(&o.stdout),
        o.stderr,
        nl(&o.stderr)
    )
}

/// stdout as one JSON document.
pub fn json(o: &Output) -> Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", show(o)))
}

/// Each stdout line as a JSON document.
pub fn json_lines(o: &Output) -> Vec<Value> {
    o.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}):\n{}", show(o)))
        })
        .collect()
}

/// The only stderr line, which must be there.
pub fn one_err_line(o: &Output) -> &str {
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one stderr line expected\n{}",
        show(o)
    );
    lines[0]
}

/// A JSON number.
pub fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{v} is not a JSON number"))
}

/// A JSON unsigned integer.
pub fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not a JSON unsigned integer"))
}

// -------------------------------------------------------------- processes

/// Send signal `sig` (`TERM`, `KILL`, …) by PID; the `kill` must work.
pub fn kill(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}: {st}");
}

/// A child process killed when dropped (if still running), so a test that
/// fails half-way leaves nothing running; std knows when it has been
/// reaped, so no stray PID is hit.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Lines a child prints, on a channel (read on a thread until EOF).
pub fn line_channel(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The line a server on 127.0.0.1 prints when it is up.
const RUNNING_ON: &str = "[MAIN] Server running on 127.0.0.1:";

/// The port in a server's `[MAIN] Server running on 127.0.0.1:PORT …` line.
pub fn announced_port(line: &str) -> Option<u16> {
    line.strip_prefix(RUNNING_ON)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A value in KiB from `/proc/PID/status` (`key` with its colon, as
/// `VmRSS:`); 0 when it cannot be read.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `netsh serve --port 0 …` as its own process; killed (by PID) on drop.
pub struct ServerProc {
    pub child: Child,
    pub port: u16,
    /// Console lines as they arrive.
    pub lines: mpsc::Receiver<String>,
}

impl ServerProc {
    /// `netsh --data-dir DATA serve --port 0 --bind 127.0.0.1 ARGS…`, via
    /// `sh -c` so a `ulimit` can go first (`prelude`, may be empty).
    pub fn spawn(data: &Path, prelude: &str, args: &[&str]) -> ServerProc {
        let mut script = String::new();
        if !prelude.is_empty() {
            script.push_str(prelude);
            script.push_str(" && ");
        }
        script.push_str(r#"exec "$0" "$@""#);
        let mut c = Command::new("sh");
        scrub_env(&mut c);
        c.current_dir(data)
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_netsh"))
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .args(args)
            .stdin(Stdio::null());
        ServerProc::start(c)
    }

    /// Spawn `c` (a `netsh … serve` on 127.0.0.1; its stdin as the caller
    /// set it) with stdout read line by line, and wait for its address.
    pub fn start(mut c: Command) -> ServerProc {
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn netsh serve");
        let lines = line_channel(child.stdout.take().expect("stdout"));
        let mut seen = Vec::new();
        let line = recv_until(&lines, RUNNING_ON, &mut seen, Duration::from_secs(10));
        let port = announced_port(&line).unwrap_or_else(|| panic!("no port in {line:?}"));
        ServerProc { child, port, lines }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident memory so far, in KiB.
    pub fn hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// CPU time (user + system) in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        g(11) + g(12)
    }

    /// CPU ticks (1/100 s) the server spends over `d` of wall time.
    pub fn ticks_over(&self, d: Duration) -> u64 {
        let before = self.cpu_ticks();
        std::thread::sleep(d); // the measurement window itself
        self.cpu_ticks() - before
    }

    /// Wait for a console line containing `needle`.
    pub fn expect_line(&self, needle: &str, within: Duration) -> String {
        recv_until(&self.lines, needle, &mut Vec::new(), within)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------ protocol by hand

/// `op` again for as long as it fails with EINTR. A socket read or write
/// with a timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`) is not restarted after an
/// interruption, and here one thread spawning and reaping children (which
/// some test always does, in one test binary) interrupts such calls in the
/// others now and then: never a reason to fail a test.
pub fn retry_eintr<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// A blocking client with a read timeout, for talking the protocol by hand.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Read one `\n`-terminated line (terminator stripped), or panic after 5 s.
pub fn read_line(s: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match retry_eintr(|| s.read(&mut b)) {
            Ok(0) => return line,
            Ok(_) if b[0] == b'\n' => return line,
            Ok(_) => line.push(b[0]),
            Err(e) => panic!(
                "read_line: {e} (so far {:?})",
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

/// Read until the server closes (bounded by the client's read timeout).
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    if let Err(e) = s.read_to_end(&mut v) {
        let tail = &v[v.len().saturating_sub(80)..];
        panic!(
            "read to EOF: {e} after {} bytes (ending {:?})",
            v.len(),
            String::from_utf8_lossy(tail)
        );
    }
    v
}

/// `ECHO <text>` on `s`, expecting `ECHO_RESPONSE:<text>`.
pub fn assert_echo(s: &mut TcpStream, text: &str) {
    s.write_all(format!("ECHO {text}\n").as_bytes())
        .expect("send ECHO");
    let got = read_line(s);
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("ECHO_RESPONSE:{text}"),
        "echo round trip"
    );
}

/// A brand-new client is answered byte for byte (ECHO, then QUIT: the echo,
/// `BYE`, and the close) whatever the test did to the server before.
pub fn assert_serves(addr: SocketAddr) {
    let mut s = client(addr);
    s.write_all(b"ECHO still here\nQUIT\n").expect("write");
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut s)),
        "ECHO_RESPONSE:still here\nBYE\n",
        "a fresh client at {addr} must still be served"
    );
}

/// A free loopback port with nothing listening on it (TCP).
pub fn closed_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A free loopback port with no UDP socket on it (bound, then released).
pub fn closed_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

// ---------------------------------------------------------- the terminal

/// `netsh --data-dir DATA ARGS…` in DATA on a pseudo-terminal (rexpect, 10 s
/// per expectation), with no `NETSH_*` variables, `NO_COLOR=1` and
/// `TERM=xterm`. A fresh pty has a 0x0 window, which no real terminal has:
/// it gets 100x40.
pub fn spawn_pty(data: &Path, args: &[&str]) -> PtySession {
    spawn_pty_sized(data, args, 100, 40)
}

/// [`spawn_pty`] on a terminal of `cols` × `rows`.
pub fn spawn_pty_sized(data: &Path, args: &[&str], cols: u16, rows: u16) -> PtySession {
    let mut c = Command::new("sh");
    scrub_env(&mut c);
    c.arg("-c")
        .arg(format!(r#"stty cols {cols} rows {rows} && exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_netsh"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .current_dir(data);
    c.env("NO_COLOR", "1").env("TERM", "xterm");
    spawn_command(c, Some(10_000)).expect("spawn netsh on a pty")
}

/// Type keys without Enter (rexpect's `send` buffers until flushed).
pub fn type_keys(p: &mut PtySession, keys: &str) {
    p.send(keys).unwrap();
    p.flush().unwrap();
}

/// A loopback listener that never accepts, its queue filled: the kernel
/// drops further SYNs, so a connect hears nothing (a black hole that stays
/// on loopback).
pub struct FullListener {
    pub addr: SocketAddr,
    _l: socket2::Socket,
    _held: Vec<TcpStream>,
}

impl FullListener {
    pub fn new() -> FullListener {
        use socket2::{Domain, Protocol, Socket, Type};
        let l = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        l.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
            .expect("bind");
        l.listen(0).expect("listen");
        let addr = l
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("inet");
        // Fill the accept queue (backlog 0 holds one; take a few to be sure).
        let mut held = Vec::new();
        for _ in 0..3 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                held.push(s);
            }
        }
        FullListener {
            addr,
            _l: l,
            _held: held,
        }
    }
}
