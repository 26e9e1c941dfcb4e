//! `/metrics` for Prometheus: a small HTTP/1.1 endpoint that lives in a
//! mio loop someone else owns (the server's, or `monitor`'s), and the
//! metrics it serves, encoded by `prometheus-client` (the OpenMetrics
//! reference client): [`ServerCollector`] reads the server's live counters
//! at scrape time; [`MonitorMetrics`] are the families `monitor` updates as
//! probes settle.
//!
//! The endpoint answers `GET /metrics` (and `HEAD`) with the Prometheus
//! text format 0.0.4, or OpenMetrics 1.0 when the scraper's `Accept` asks
//! for it (as Prometheus does); `/` gets a line pointing at `/metrics`;
//! anything else 404 or 405. One request per connection (`Connection:
//! close`), requests bounded to [`MAX_REQUEST`] bytes and
//! [`REQUEST_TIMEOUT`], at most [`MAX_CONNS`] at once: a scraper that
//! hangs or floods costs a slot for a few seconds, never the loop.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as Metrics;

use crate::error::{Error, Result};
use crate::server::handle::{Refusal, Stats};

/// Largest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a connection may take to send its request and take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more are closed on accept.
pub const MAX_CONNS: usize = 64;
/// Tokens an endpoint takes from its base: the listener and one per
/// connection slot.
pub const TOKENS: usize = 1 + MAX_CONNS;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parse `--metrics ADDR`: `HOST:PORT`, `:PORT` (every address, as
/// Prometheus' own exporters write it) or `PORT` (loopback only).
///
/// # Errors
/// `bad-value` naming the forms.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    let bad = || {
        Error::bad_value(format!("--metrics {s}: not an address to listen on")).with_hint(
            "give PORT (loopback), :PORT (every address) or HOST:PORT, e.g. 127.0.0.1:9464",
        )
    };
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    s.parse::<SocketAddr>().map_err(|_| bad())
}

/// One scrape in progress.
struct Conn {
    sock: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    since: Instant,
    answered: bool,
}

/// An HTTP endpoint for `/metrics` on a poll it does not own.
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Metrics,
    conns: HashMap<usize, Conn>,
    base: usize,
    scrapes: u64,
}

impl Endpoint {
    /// Listen on `addr` for scrapes of `metrics`.
    ///
    /// # Errors
    /// `addr-in-use` or the OS error naming the address.
    pub fn bind(addr: SocketAddr, metrics: Metrics) -> Result<Endpoint> {
        let std = bind_listener(addr)?;
        let addr = std
            .local_addr()
            .map_err(|e| Error::io("read the address of", addr, &e))?;
        Ok(Endpoint {
            listener: TcpListener::from_std(std),
            addr,
            metrics,
            conns: HashMap::new(),
            base: 0,
            scrapes: 0,
        })
    }

    /// Where it listens (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scrapes answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes
    }

    /// Put the listener in the poll: tokens `base .. base + TOKENS`.
    ///
    /// # Errors
    /// The registry's.
    pub fn register(&mut self, registry: &Registry, base: usize) -> Result<()> {
        self.base = base;
        registry
            .register(&mut self.listener, Token(base), Interest::READABLE)
            .map_err(|e| Error::io("register", self.addr, &e))
    }

    /// Whether `token` is one of this endpoint's.
    pub fn owns(&self, token: Token) -> bool {
        (self.base..self.base + TOKENS).contains(&token.0)
    }

    /// The poll reported `token` (one of ours): accept, read, answer.
    pub fn ready(&mut self, token: Token, registry: &Registry) {
        if token.0 == self.base {
            self.accept(registry);
        } else {
            self.drive(token.0 - self.base - 1, registry);
        }
    }

    /// When [`Endpoint::sweep`] must next run (a scrape's deadline).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.since + REQUEST_TIMEOUT).min()
    }

    /// Close scrapes past [`REQUEST_TIMEOUT`].
    pub fn sweep(&mut self, now: Instant, registry: &Registry) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now >= c.since + REQUEST_TIMEOUT)
            .map(|(&k, _)| k)
            .collect();
        for k in late {
            self.close(k, registry);
        }
    }

    fn accept(&mut self, registry: &Registry) {
        // Bounded: a flood of connects yields to the rest of the loop.
        for _ in 0..MAX_CONNS * 2 {
            let (mut sock, _peer) = match self.listener.accept() {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Out of descriptors or the like: the next connect retries.
                Err(_) => return,
            };
            let Some(slot) = (0..MAX_CONNS).find(|k| !self.conns.contains_key(k)) else {
                let _ = sock.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            };
            let token = Token(self.base + 1 + slot);
            if registry
                .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.conns.insert(
                slot,
                Conn {
                    sock,
                    head: Vec::new(),
                    out: Vec::new(),
                    written: 0,
                    since: Instant::now(),
                    answered: false,
                },
            );
            self.drive(slot, registry);
        }
    }

    fn drive(&mut self, slot: usize, registry: &Registry) {
        let Some(c) = self.conns.get_mut(&slot) else {
            return;
        };
        if !c.answered {
            let mut buf = [0u8; 2048];
            loop {
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        self.close(slot, registry);
                        return;
                    }
                    Ok(n) => {
                        c.head.extend_from_slice(&buf[..n]);
                        if head_end(&c.head).is_some() || c.head.len() > MAX_REQUEST {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.close(slot, registry);
                        return;
                    }
                }
            }
            let end = head_end(&c.head);
            let too_big = end.map_or(c.head.len() > MAX_REQUEST, |e| e > MAX_REQUEST);
            if end.is_none() && !too_big {
                return; // more to come
            }
            c.out = if !too_big {
                let (out, scraped) = answer(&c.head, &self.metrics);
                self.scrapes += u64::from(scraped);
                out
            } else {
                response(
                    431,
                    "Request Header Fields Too Large",
                    "text/plain",
                    b"request too large\n",
                    true,
                )
            };
            c.answered = true;
        }
        while c.written < c.out.len() {
            match c.sock.write(&c.out[c.written..]) {
                Ok(0) => break,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close(slot, registry);
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut c) = self.conns.remove(&slot) {
            let _ = registry.deregister(&mut c.sock);
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A listener with the usual server options (address reuse, IPv6-only for
/// `[::]` so IPv4 can be bound beside it).
fn bind_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| Error::io("open a socket for", addr, &e))?;
    let _ = s.set_reuse_address(true);
    if addr.is_ipv6() {
        // `:PORT` means every address, IPv4 included (dual stack).
        let _ = s.set_only_v6(false);
    }
    s.set_nonblocking(true)
        .map_err(|e| Error::io("set non-blocking", addr, &e))?;
    s.bind(&addr.into())
        .map_err(|e| Error::io("bind", addr, &e))?;
    s.listen(128)
        .map_err(|e| Error::io("listen on", addr, &e))?;
    Ok(s.into())
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| {
        // Bare-LF clients (curl never, netcat often).
        b.windows(2).position(|w| w == b"\n\n")
    })
}

/// The response to a complete request head, and whether it was a scrape.
fn answer(head: &[u8], metrics: &Metrics) -> (Vec<u8>, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let mut words = first.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let wants_openmetrics = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let mut r = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Type: text/plain\r\nContent-Length: 18\r\nConnection: close\r\n\r\n".to_vec();
        r.extend_from_slice(b"only GET and HEAD\n");
        return (r, false);
    }
    match path {
        "/metrics" => {
            let mut body = String::new();
            let (ok, kind) = if wants_openmetrics {
                (
                    prometheus_client::encoding::text::encode(&mut body, metrics),
                    OPENMETRICS,
                )
            } else {
                (
                    prometheus_client::encoding::prometheus_text::encode(&mut body, metrics),
                    PROMETHEUS_TEXT,
                )
            };
            if ok.is_err() {
                return (
                    response(
                        500,
                        "Internal Server Error",
                        "text/plain",
                        b"encoding failed\n",
                        head_only,
                    ),
                    false,
                );
            }
            (response(200, "OK", kind, body.as_bytes(), head_only), true)
        }
        "/" => (
            response(
                200,
                "OK",
                "text/plain; charset=utf-8",
                b"netsh: metrics at /metrics\n",
                head_only,
            ),
            false,
        ),
        _ => (
            response(
                404,
                "Not Found",
                "text/plain",
                b"not found: try /metrics\n",
                head_only,
            ),
            false,
        ),
    }
}

fn response(code: u16, reason: &str, kind: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

// ------------------------------------------------------------ the server

/// The server's counters, read at each scrape.
#[derive(Debug)]
pub struct ServerCollector {
    stats: Arc<Stats>,
}

impl ServerCollector {
    /// A registry with the server's metrics (`netsh_server_*`,
    /// `netsh_echo_*`, `netsh_udp_*`, `netsh_sntp_*`, `netsh_chat_*`).
    pub fn registry(stats: Arc<Stats>) -> Metrics {
        let mut r = Metrics::default();
        r.register_collector(Box::new(ServerCollector { stats }));
        r
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

impl Collector for ServerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let s = &self.stats;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 17] = [
            (
                "netsh_server_connections_accepted",
                "TCP connections accepted",
                g(&s.clients_total),
            ),
            (
                "netsh_server_connections_refused",
                "TCP connections refused (server full, too many from one address)",
                g(&s.refused),
            ),
            (
                "netsh_server_received_bytes",
                "Bytes read from clients, TCP and UDP",
                g(&s.bytes_in),
            ),
            (
                "netsh_server_sent_bytes",
                "Bytes written to clients, TCP and UDP",
                g(&s.bytes_out),
            ),
            (
                "netsh_server_requests",
                "Request lines answered (echo, help, chat lines, ...)",
                g(&s.requests),
            ),
            (
                "netsh_echo_requests",
                "ECHO requests answered",
                g(&s.echo_requests),
            ),
            (
                "netsh_udp_datagrams",
                "UDP datagrams echoed",
                g(&s.datagrams),
            ),
            (
                "netsh_udp_datagrams_ignored",
                "UDP datagrams not echoed (their source could loop)",
                g(&s.datagrams_ignored),
            ),
            (
                "netsh_udp_datagrams_limited",
                "UDP datagrams not echoed (their source was over its rate limit)",
                g(&s.datagrams_limited),
            ),
            (
                "netsh_denied_tcp",
                "TCP connections closed at accept: source not allowed (--allow/--deny)",
                g(&s.denied_tcp),
            ),
            (
                "netsh_denied_udp",
                "UDP echo datagrams dropped: source not allowed (--allow/--deny)",
                g(&s.denied_udp),
            ),
            (
                "netsh_denied_sntp",
                "SNTP requests dropped: source not allowed (--allow/--deny)",
                g(&s.denied_ntp),
            ),
            (
                "netsh_sntp_requests",
                "Datagrams that reached the SNTP port",
                g(&s.ntp_requests),
            ),
            (
                "netsh_sntp_replies",
                "SNTP replies sent, kiss-o'-death included",
                g(&s.ntp_replies),
            ),
            (
                "netsh_sntp_kiss_of_death",
                "RATE kiss-o'-death replies sent",
                g(&s.ntp_kod),
            ),
            (
                "netsh_sntp_ignored",
                "Datagrams on the SNTP port not answered",
                g(&s.ntp_ignored),
            ),
            (
                "netsh_chat_lines",
                "Lines members sent to the chat room",
                g(&s.chat_lines),
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, u64); 2] = [
            (
                "netsh_server_connections_open",
                "TCP connections open now",
                g(&s.clients),
            ),
            (
                "netsh_chat_members",
                "Members in the chat room now, the operator included",
                g(&s.chat_members),
            ),
        ];
        for (name, help, v) in gauges {
            let c = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let mut family = e.encode_descriptor(
            "netsh_server_errors",
            "Clients refused or cut short, by code",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (r, a) in Refusal::ALL.iter().zip(&s.refusals) {
            let c = ConstCounter::new(g(a));
            c.encode(family.encode_family(&CodeLabel { code: r.code() })?)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ monitor

/// The labels of one monitored target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The target as given (`udp://127.0.0.1:5050`).
    pub target: String,
    /// `echo`, `udp`, `sntp`, `icmp` or `tcp`.
    pub kind: &'static str,
}

/// What `monitor --metrics` exports, updated as probes settle.
#[derive(Clone)]
pub struct MonitorMetrics {
    /// Round trips of answered probes.
    pub rtt: Family<TargetLabels, Histogram, fn() -> Histogram>,
    /// Probes sent.
    pub sent: Family<TargetLabels, Counter>,
    /// Probes answered intact.
    pub received: Family<TargetLabels, Counter>,
    /// Probes with no answer in time.
    pub lost: Family<TargetLabels, Counter>,
    /// Probes answered by an error (refused, unreachable, corrupt, ...).
    pub failed: Family<TargetLabels, Counter>,
    /// Whether the last probe was answered (1) or not (0).
    pub up: Family<TargetLabels, Gauge>,
    /// SNTP offset of the last answer, seconds.
    pub offset: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// Histogram buckets for round trips: 50 µs to 7.5 s, × 2.5 each (14
/// buckets: loopback to a slow WAN, and a scrape of 1,000 targets stays
/// near 1.8 MB).
fn rtt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.5, 14))
}

impl MonitorMetrics {
    /// The families, and a registry that serves them.
    pub fn new() -> (MonitorMetrics, Metrics) {
        let m = MonitorMetrics {
            rtt: Family::new_with_constructor(rtt_histogram),
            sent: Family::default(),
            received: Family::default(),
            lost: Family::default(),
            failed: Family::default(),
            up: Family::default(),
            offset: Family::default(),
        };
        let mut r = Metrics::default();
        r.register(
            "netsh_probe_rtt_seconds",
            "Round-trip time of answered probes",
            m.rtt.clone(),
        );
        r.register("netsh_probes_sent", "Probes sent", m.sent.clone());
        r.register(
            "netsh_probes_received",
            "Probes answered intact in time",
            m.received.clone(),
        );
        r.register(
            "netsh_probes_lost",
            "Probes with no answer in time",
            m.lost.clone(),
        );
        r.register(
            "netsh_probes_failed",
            "Probes answered by an error (refused, unreachable, corrupt, kiss-o'-death)",
            m.failed.clone(),
        );
        r.register(
            "netsh_target_up",
            "1 if the target's last probe was answered, else 0",
            m.up.clone(),
        );
        r.register(
            "netsh_sntp_offset_seconds",
            "Server clock minus this machine's, at the last SNTP answer",
            m.offset.clone(),
        );
        (m, r)
    }
}
