//! `/metrics` for Prometheus, from `serve --metrics` and `monitor
//! --metrics`: the values are what the clients did, `promtool check
//! metrics` accepts the exposition, the endpoint survives bad and slow
//! scrapers, and a real Prometheus server (started here on a loopback port
//! with a temporary store, stopped by PID) scrapes both and answers queries
//! with the same numbers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DataDir, Opts, netsh_tmp, scrub_env, show, start_server_with, wait_for};

/// A response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection, read to its end.
fn http(addr: SocketAddr, request: &str) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Response {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// `name{labels} value` lines of a text exposition, keyed by everything
/// before the value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut c = Command::new("promtool");
    c.args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("promtool (Debian's prometheus package; run ./scripts/setup)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn metrics_server() -> crate::common::TestServer {
    start_server_with(
        "127.0.0.1",
        Opts {
            metrics: Some("127.0.0.1:0".parse().expect("addr")),
            ..Opts::default()
        },
    )
}

#[test]
fn serve_metrics_count_what_the_clients_did() {
    let srv = metrics_server();
    let m = srv.metrics_addr.expect("metrics endpoint");
    let target = srv.addr.to_string();
    let ntp = srv.ntp_addr.expect("SNTP").to_string();
    let o = netsh_tmp(&["echo", &target, "-c", "100", "-i", "0"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let o = netsh_tmp(&["echo", &target, "--udp", "-c", "10", "-i", "0"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let o = netsh_tmp(&["sntp", &ntp, "-c", "3", "-i", "0"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    // A chat member with two lines, and a word the protocol does not know.
    let mut chat = TcpStream::connect(srv.addr).expect("connect");
    chat.set_read_timeout(Some(Duration::from_secs(5))).ok();
    chat.write_all(b"CHAT bob\nhi\nthere\n").expect("chat");
    let mut bogus = TcpStream::connect(srv.addr).expect("connect");
    bogus.write_all(b"BOGUS\n").expect("send");
    assert!(wait_for(Duration::from_secs(5), || {
        let s = srv.handle.stats.snapshot();
        s.chat_lines == 2 && s.refusals.get("unknown-command") == Some(&1)
    }));

    let r = get(m, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers
    );
    let s = samples(&r.body);
    assert_eq!(value(&s, "netsh_echo_requests_total"), 100.0);
    assert_eq!(value(&s, "netsh_udp_datagrams_total"), 10.0);
    assert_eq!(value(&s, "netsh_sntp_replies_total"), 3.0);
    assert_eq!(value(&s, "netsh_chat_lines_total"), 2.0);
    assert_eq!(value(&s, "netsh_chat_members"), 1.0, "bob");
    assert_eq!(value(&s, "netsh_server_connections_open"), 2.0);
    // echo, chat, bogus (UDP and SNTP have no connections).
    assert_eq!(value(&s, "netsh_server_connections_accepted_total"), 3.0);
    assert_eq!(
        value(&s, r#"netsh_server_errors_total{code="unknown-command"}"#),
        1.0
    );
    assert_eq!(
        value(&s, r#"netsh_server_errors_total{code="server-full"}"#),
        0.0
    );
    let (ok, said) = promtool(&r.body);
    assert!(ok, "promtool check metrics: {said}\n{}", r.body);

    // OpenMetrics when asked for, as Prometheus asks.
    let r = http(
        m,
        "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"].starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    assert_eq!(value(&samples(&r.body), "netsh_echo_requests_total"), 100.0);
}

#[test]
fn the_endpoint_answers_bad_and_slow_scrapers_and_goes_on() {
    let srv = metrics_server();
    let m = srv.metrics_addr.expect("metrics endpoint");
    let r = http(m, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(
        r.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );
    assert_eq!(get(m, "/nope").status, 404);
    assert_eq!(get(m, "/").status, 200);
    let r = http(m, "HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "", "HEAD has no body");
    assert!(r.headers["content-length"].parse::<usize>().unwrap_or(0) > 100);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let r = http(m, &huge);
    assert_eq!(r.status, 431);
    // Silent connections hold slots; a scrape beside them is answered, and
    // they are closed after the request timeout.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(m).expect("connect"))
        .collect();
    let t = Instant::now();
    assert_eq!(get(m, "/metrics").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let mut first = idle.into_iter().next().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let t = Instant::now();
    let n = first.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "closed after the request timeout, not never: {:?}",
        t.elapsed()
    );
    // And the server it lives in served all along.
    crate::common::assert_serves(srv.addr);
}

/// `netsh monitor ARGS…` in the background; its stdout lines as they come.
fn monitor_child(d: &DataDir, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut c = d.cmd(&["monitor"]);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn monitor");
    let lines = crate::common::line_channel(child.stdout.take().expect("stdout"));
    (child, lines)
}

/// The metrics address from monitor's first line (`…, metrics on http://A/metrics`).
fn metrics_from_head(lines: &mpsc::Receiver<String>) -> SocketAddr {
    let head = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("monitor's first line");
    head.split("metrics on http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {head:?}"))
}

fn stop(mut child: Child) {
    crate::common::kill("TERM", child.id());
    let _ = crate::common::wait_exit(&mut child, Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn monitor_metrics_follow_the_probes_and_linger_for_the_last_scrape() {
    let srv = crate::common::start_server("127.0.0.1");
    let d = DataDir::new();
    let name = format!("udp://{}", srv.addr);
    let (child, lines) = monitor_child(
        &d,
        &[
            &name,
            "-c",
            "20",
            "-i",
            "10ms",
            "--metrics",
            "127.0.0.1:0",
            "--linger",
            "20s",
        ],
    );
    let m = metrics_from_head(&lines);
    let key = |metric: &str| format!(r#"{metric}{{target="{name}",kind="udp"}}"#);
    let mut last = HashMap::new();
    let done = wait_for(Duration::from_secs(10), || {
        last = samples(&get(m, "/metrics").body);
        last.get(&key("netsh_probes_sent_total")) == Some(&20.0)
    });
    assert!(done, "20 probes: {last:#?}");
    let body = get(m, "/metrics").body;
    let s = samples(&body);
    assert_eq!(value(&s, &key("netsh_probes_received_total")), 20.0);
    assert_eq!(value(&s, &key("netsh_probes_lost_total")), 0.0);
    assert_eq!(value(&s, &key("netsh_probe_rtt_seconds_count")), 20.0);
    assert_eq!(value(&s, &key("netsh_target_up")), 1.0);
    let inf = format!(r#"netsh_probe_rtt_seconds_bucket{{target="{name}",kind="udp",le="+Inf"}}"#);
    assert_eq!(value(&s, &inf), 20.0, "{body}");
    let (ok, said) = promtool(&body);
    assert!(ok, "promtool check metrics: {said}\n{body}");
    // The server counted the same datagrams.
    assert_eq!(srv.handle.stats.snapshot().datagrams, 20);
    stop(child);
}

// ------------------------------------------------------ a real Prometheus

/// Prometheus on a loopback port with a temporary store, scraping
/// `targets` every second; stopped (by PID) when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(jobs: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, addr) in jobs {
            cfg.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).expect("write the config");
        let addr = free_port();
        let mut c = Command::new("prometheus");
        scrub_env(&mut c);
        c.arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .expect("prometheus (Debian's prometheus package; run ./scripts/setup)");
        let stderr = child.stderr.take().expect("stderr");
        // Keep its complaints for a failure message, without blocking it.
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("prometheus: {l}");
            }
        });
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && get(addr, "/-/ready").status == 200
        });
        assert!(ready, "prometheus did not become ready on {addr}");
        p
    }

    /// The value of an instant query with one result; `None` until it has one.
    fn query(&self, q: &str) -> Option<f64> {
        let r = get(self.addr, &format!("/api/v1/query?query={}", encode(q)));
        let v: Value = serde_json::from_str(&r.body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Wait until `q` equals `want`; the last value seen.
    fn wait_for_value(&self, q: &str, want: f64) -> Option<f64> {
        let mut seen = None;
        wait_for(Duration::from_secs(20), || {
            seen = self.query(q);
            seen == Some(want)
        });
        seen
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        crate::common::kill("TERM", self.child.id());
        if crate::common::wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Percent-encode a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_serve_and_monitor_and_agrees_with_them() {
    assert!(
        Path::new("/usr/bin/prometheus").exists() || crate::common::on_path("prometheus"),
        "prometheus is missing: run ./scripts/setup (Debian's prometheus package)"
    );
    let srv = metrics_server();
    let serve_m = srv.metrics_addr.expect("metrics endpoint");
    let d = DataDir::new();
    let name = format!("udp://{}", srv.addr);
    let (child, lines) = monitor_child(
        &d,
        &[
            &name,
            "-c",
            "50",
            "-i",
            "20ms",
            "--metrics",
            "127.0.0.1:0",
            "--linger",
            "60s",
        ],
    );
    let mon_m = metrics_from_head(&lines);
    let prom = Prometheus::start(&[("netsh-serve", serve_m), ("netsh-monitor", mon_m)]);
    // 100 echoes, as a client does them.
    let o = netsh_tmp(&["echo", &srv.addr.to_string(), "-c", "100", "-i", "0"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_eq!(
        prom.wait_for_value("netsh_echo_requests_total", 100.0),
        Some(100.0)
    );
    // The monitor's 50 UDP probes: in its own figures and in the server's.
    let sel = format!(r#"{{job="netsh-monitor",target="{name}"}}"#);
    assert_eq!(
        prom.wait_for_value(&format!("netsh_probes_sent_total{sel}"), 50.0),
        Some(50.0)
    );
    assert_eq!(
        prom.query(&format!("netsh_probe_rtt_seconds_count{sel}")),
        Some(50.0)
    );
    assert_eq!(
        prom.query(&format!("netsh_probes_received_total{sel}")),
        Some(50.0)
    );
    assert_eq!(
        prom.wait_for_value(r#"netsh_udp_datagrams_total{job="netsh-serve"}"#, 50.0),
        Some(50.0)
    );
    // Both scraped cleanly.
    assert_eq!(prom.query(r#"up{job="netsh-serve"}"#), Some(1.0));
    assert_eq!(prom.query(r#"up{job="netsh-monitor"}"#), Some(1.0));
    // A quantile Prometheus computes from netsh's buckets is a round trip.
    let p50 = prom
        .query(&format!(
            "histogram_quantile(0.5, sum by (le) (netsh_probe_rtt_seconds_bucket{sel}))"
        ))
        .expect("a median");
    assert!(p50 > 0.0 && p50 < 0.1, "p50 {p50} s");
    stop(child);
    drop(prom);
}
