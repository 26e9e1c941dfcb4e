//! Shared test helpers: a netsh server in-process on an ephemeral loopback
//! port, or the real binary as a separate process (for fd/memory/limit
//! checks), and running the binary with a hard timeout. No sleeps as
//! synchronisation: waits poll a condition with a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netsh::server::console::{Console, Verbosity};
use netsh::server::{Handle, Server, ServerConfig, StatsSnapshot};

/// A server running on a thread of the test process.
pub struct TestServer {
    /// The bound address (loopback, ephemeral port).
    pub addr: SocketAddr,
    /// The SNTP responder's address, if on.
    pub ntp_addr: Option<SocketAddr>,
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
    pub chat_log_dir: Option<std::path::PathBuf>,
    /// Chat lines replayed to newcomers.
    pub chat_replay: usize,
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
                rate_limit: None,
            }),
            chat_log_dir: None,
            chat_replay: 20,
        }
    }
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
        handle_signals: false,
        ntp: o.ntp,
        chat_log_dir: o.chat_log_dir,
        chat_replay: o.chat_replay,
        console,
    })
    .expect("bind test server");
    let addr = server.addrs()[0];
    let ntp_addr = server.ntp_addrs().first().copied();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    TestServer {
        addr,
        ntp_addr,
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
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.stop();
            let _ = t.join();
        }
    }
}

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

/// The netsh binary with a private data dir and no NETSH_* from the host.
pub fn netsh(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netsh"));
    c.arg("--data-dir").arg(data).current_dir(data);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETSH_") {
            c.env_remove(k);
        }
    }
    c.env_remove("NO_COLOR");
    c
}

/// Exit status, stdout, stderr.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run with optional stdin, killing it after `limit`.
pub fn run(mut c: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn netsh");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netsh did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        code: status.code(),
        stdout: String::from_utf8_lossy(&o.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned(),
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

/// `netsh serve --port 0 …` as its own process; killed (by PID) on drop.
pub struct ServerProc {
    pub child: Child,
    pub port: u16,
    /// Console lines as they arrive.
    pub lines: mpsc::Receiver<String>,
}

impl ServerProc {
    /// Spawn via `sh -c` so a `ulimit` can go first (`prelude`, may be empty).
    pub fn spawn(data: &Path, prelude: &str, args: &[&str]) -> ServerProc {
        let bin = env!("CARGO_BIN_EXE_netsh");
        let mut script = String::new();
        if !prelude.is_empty() {
            script.push_str(prelude);
            script.push_str(" && ");
        }
        script.push_str("exec \"$0\" --data-dir \"$1\" serve --port 0 --bind 127.0.0.1");
        for a in args {
            script.push(' ');
            script.push_str(a);
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(bin)
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn netsh serve");
        let rx = line_channel(child.stdout.take().expect("stdout"));
        let end = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("server prints its address");
            if let Some(rest) = line.strip_prefix("[MAIN] Server running on 127.0.0.1:") {
                break rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        ServerProc {
            child,
            port,
            lines: rx,
        }
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
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time (user + system) in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        g(11) + g(12)
    }

    /// Wait for a console line containing `needle`.
    pub fn expect_line(&self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no server line containing {needle:?} within {within:?}"),
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client with a read timeout, for talking the protocol by hand.
pub fn client(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Read one `\n`-terminated line (terminator stripped), or panic after 5 s.
pub fn read_line(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
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
