//! `serve`: run the server side (echo over TCP and UDP, SNTP, the chat
//! room). One-shot (`netsh serve`) runs it in the foreground until SIGINT or
//! SIGTERM; inside the shell it runs in the background, with `serve status`
//! and `serve stop`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use clap::{ArgMatches, Args, Subcommand};
use serde::Serialize;

use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::log::AppendLog;
use crate::paint::Paint;
use crate::report::Report;
use crate::server::console::{Console, SERVER_LOG_CAP, Verbosity};
use crate::server::limit::Rate;
use crate::server::sntp::{DEFAULT_NTP_RATE, NtpConfig};
use crate::server::{self, Server, ServerConfig, StatsSnapshot};
use crate::session::{BackgroundServer, Frontend, Session};
use crate::settings::DEFAULT_PORT;

/// Default UDP port of the SNTP responder (123 needs privileges).
pub const DEFAULT_NTP_PORT: u16 = 5123;
use crate::units;

/// `serve` words.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ServeArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Address to listen on (repeatable) [default: 0.0.0.0 and ::]
    #[arg(long, value_name = "ADDR")]
    bind: Vec<IpAddr>,
    /// TCP and UDP port; 0 picks a free one and prints it
    #[arg(long, short = 'p', default_value_t = DEFAULT_PORT)]
    port: u16,
    /// UDP port of the SNTP responder; 0 picks a free one (123 needs privileges)
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_NTP_PORT)]
    ntp_port: u16,
    /// Do not answer SNTP
    #[arg(long, conflicts_with_all = ["ntp_port", "stratum", "ntp_rate_limit"])]
    no_ntp: bool,
    /// Stratum the SNTP responder claims (like chrony's 'local stratum')
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=15))]
    stratum: u8,
    /// SNTP requests per second per source, RATE[/BURST] or off; beyond, a RATE kiss-o'-death
    /// at most once a second [default: 2/16]
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    ntp_rate_limit: Option<RateArg>,
    /// UDP datagrams echoed per second per source, RATE[/BURST] or off [default: 1000/2000]
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    udp_rate_limit: Option<RateArg>,
    /// No per-source rate limits: UDP, SNTP, chat lines (for benchmarks on a network you trust)
    #[arg(long, conflicts_with_all = ["ntp_rate_limit", "udp_rate_limit", "chat_rate", "chat_bytes"])]
    no_rate_limit: bool,
    /// Chat lines a second one address may say, RATE[/BURST] or off; lines over it are
    /// refused with a notice [default: 5/20, loopback exempt unless given]
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    chat_rate: Option<RateArg>,
    /// Chat bytes a second one address may say, RATE[/BURST] or off [default: 1024/16384,
    /// loopback exempt unless given]
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    chat_bytes: Option<RateArg>,
    /// Chat members one address (IPv4, IPv6 /64) may be; 0: no limit [default: 50,
    /// loopback exempt unless given]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    chat_per_ip: Option<u32>,
    /// Close chat members that sent nothing (not even /ping) this long: 30m, 2h, off
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_off_duration)]
    chat_idle: OffDuration,
    /// A line must be whole this long after its first byte, or the connection is closed
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_idle)]
    line_timeout: Duration,
    /// Delete chat log days older than this many days; 0: keep every day
    #[arg(long, value_name = "DAYS", default_value_t = crate::server::chat::DEFAULT_LOG_DAYS,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    chat_log_days: u32,
    /// Most disk the chat log may use, oldest files deleted first: 1G, 500M; 0: no cap
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    chat_log_max: u64,
    /// Per-source limits count an IPv6 address under this prefix (one site)
    #[arg(long, value_name = "BITS", default_value_t = crate::server::limit::DEFAULT_V6_PREFIX,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    ipv6_prefix: u8,
    /// Chat lines replayed to someone who joins
    #[arg(long, value_name = "N", default_value_t = crate::server::chat::DEFAULT_REPLAY as u32,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    chat_history: u32,
    /// Clients beyond this many get "ERR server full"
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CLIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_clients: u32,
    /// Connections one address may hold; 0: no limit [default: 64, loopback
    /// exempt; given explicitly it applies to loopback too]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    max_per_ip: Option<u32>,
    /// Close connections idle this long: 30s, 5m
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_idle)]
    idle_timeout: Duration,
    /// Print only start, stop and problems
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    quiet: bool,
    /// Also print why connections close and each UDP datagram (rate-limited)
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Run in the foreground even inside the shell (Ctrl-C stops it)
    #[arg(long)]
    foreground: bool,
    /// Also serve echo and chat over TLS with this certificate (PEM; with --tls-key)
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Also serve TLS with this server's own certificate (made in DATA/tls on first use, then
    /// kept); prints its SHA-256 fingerprint for clients' --pin
    #[arg(long)]
    tls_self_signed: bool,
    /// Chat members must prove they hold this key (HMAC-SHA-256 challenge, never sent);
    /// clients: chat --key FILE [setting: serve-chat-key]
    #[arg(long, value_name = "FILE")]
    chat_key: Option<std::path::PathBuf>,
    /// TCP port of the TLS listener; 0 picks a free one
    #[arg(long, value_name = "PORT", default_value_t = crate::tls::DEFAULT_TLS_PORT)]
    tls_port: u16,
    /// Let only these sources in (CIDR or address, repeatable; every service); once any
    /// --allow is given, addresses no rule matches are denied; the most specific rule wins
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    allow: Vec<ipnet::IpNet>,
    /// Keep these sources out (CIDR or address, repeatable): TCP is closed at accept
    /// without a byte, datagrams get no reply
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    deny: Vec<ipnet::IpNet>,
    /// Serve Prometheus metrics on http://ADDR/metrics: PORT (loopback), :PORT (every address) or HOST:PORT
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics)]
    metrics: Option<std::net::SocketAddr>,
}

/// A duration or `off` (`None`).
#[derive(Debug, Clone, Copy)]
struct OffDuration(Option<Duration>);

fn parse_off_duration(s: &str) -> std::result::Result<OffDuration, String> {
    if s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(OffDuration(None));
    }
    units::duration_in(s, Duration::from_secs(1), Duration::from_secs(30 * 86_400))
        .map(|d| OffDuration(Some(d)))
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    units::parse_bytes(s)
}

/// A per-source rate as given: `None` is `off`.
#[derive(Debug, Clone, Copy)]
struct RateArg(Option<Rate>);

fn parse_rate(s: &str) -> std::result::Result<RateArg, String> {
    Rate::parse(s).map(RateArg)
}

fn parse_net(s: &str) -> std::result::Result<ipnet::IpNet, String> {
    server::access::parse_net(s)
}

fn parse_metrics(s: &str) -> std::result::Result<std::net::SocketAddr, String> {
    crate::server::metrics::parse_addr(s).map_err(|e| {
        let hint = e.hint.map(|h| format!(" ({h})")).unwrap_or_default();
        format!("{}{hint}", e.message)
    })
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Show the background server: address, uptime, clients, bytes, requests
    Status,
    /// Stop the background server (clients are told "BYE server shutting down")
    Stop,
}

fn parse_idle(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_secs(1), Duration::from_secs(86_400))
}

/// How to put the server on a network you don't trust, under `help serve`.
const EXPOSE_HELP: &str = "\
Exposing the server beyond loopback, in four steps:
  1. Who may reach it: --allow 192.0.2.0/24 --deny 192.0.2.66 (setting serve-allow)
  2. Who may chat:     --chat-key room.key; members: chat --key room.key
  3. Encryption:       --tls-self-signed prints the pin; clients: echo/chat --pin SHA256
  4. Budgets:          on by default: --max-per-ip, --chat-rate, --chat-bytes, --chat-log-max";

/// The `serve` command.
pub struct Serve;

impl Command for Serve {
    fn name(&self) -> &'static str {
        "serve"
    }
    fn summary(&self) -> &'static str {
        "Run the netsh server (echo, SNTP, chat); in the shell: serve status|stop"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        ServeArgs::augment_args(c).after_help(EXPOSE_HELP)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: ServeArgs = args_of(m)?;
        match a.action {
            Some(Action::Status) => Ok(Report::Serve(status(s))),
            Some(Action::Stop) => stop(s),
            None => start(a, s),
        }
    }
}

/// The chat room's per-address limits from the flags: defaults spare
/// loopback (local load tests), a limit given explicitly applies to it too.
fn chat_limits(a: &ServeArgs) -> server::hub::ChatLimits {
    let d = server::hub::ChatLimits::default();
    let pick = |given: Option<RateArg>, default: Option<Rate>| {
        if a.no_rate_limit {
            None
        } else {
            given.map_or(default, |r| r.0)
        }
    };
    server::hub::ChatLimits {
        per_address: a.chat_per_ip.map_or(d.per_address, |n| n as usize),
        lines: pick(a.chat_rate, d.lines),
        bytes: pick(a.chat_bytes, d.bytes),
        v6_prefix: a.ipv6_prefix,
        limit_loopback: a.chat_per_ip.is_some() || a.chat_rate.is_some() || a.chat_bytes.is_some(),
    }
}

/// The rules from the flags and the settings (`serve-allow`, `serve-deny`):
/// both lists add up.
fn access_rules(a: &ServeArgs, s: &Session) -> server::access::Access {
    let allow: Vec<ipnet::IpNet> = s
        .settings
        .serve_allow
        .iter()
        .chain(&a.allow)
        .copied()
        .collect();
    let deny: Vec<ipnet::IpNet> = s
        .settings
        .serve_deny
        .iter()
        .chain(&a.deny)
        .copied()
        .collect();
    server::access::Access::new(&allow, &deny)
}

fn verbosity(a: &ServeArgs) -> Verbosity {
    if a.quiet {
        Verbosity::Quiet
    } else if a.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    }
}

fn start(a: ServeArgs, s: &mut Session) -> Result<Report> {
    let foreground = a.foreground || s.frontend == Frontend::OneShot;
    if let Some(bg) = &s.server {
        return Err(Error::new(
            ErrorKind::AddrInUse,
            format!(
                "a server already runs in this session on {}",
                list(&bg.addrs)
            ),
        )
        .with_hint("'serve status' shows it; 'serve stop' stops it"));
    }
    let log = AppendLog::new(s.paths.logs_dir.join("server.log"), SERVER_LOG_CAP);
    let (sink, pump_done) = if foreground && s.streaming {
        let (sink, done) = s.terminal.console();
        (Some(sink), done)
    } else {
        (None, None)
    };
    let cfg = ServerConfig {
        bind: a.bind.clone(),
        port: a.port,
        max_clients: a.max_clients as usize,
        max_per_address: a
            .max_per_ip
            .map_or(server::DEFAULT_MAX_PER_ADDRESS, |n| n as usize),
        limit_loopback: a.max_per_ip.is_some(),
        idle_timeout: a.idle_timeout,
        udp_rate_limit: if a.no_rate_limit {
            None
        } else {
            a.udp_rate_limit
                .map_or(Some(server::DEFAULT_UDP_RATE), |r| r.0)
        },
        v6_prefix: a.ipv6_prefix,
        line_timeout: a.line_timeout,
        chat_idle: a.chat_idle.0,
        chat_limits: chat_limits(&a),
        handle_signals: foreground,
        ntp: (!a.no_ntp).then_some(NtpConfig {
            // With --port 0 (tests, several servers on one machine) the
            // responder picks a free port too unless one was asked for.
            port: if a.port == 0 && a.ntp_port == DEFAULT_NTP_PORT {
                0
            } else {
                a.ntp_port
            },
            stratum: a.stratum,
            rate_limit: if a.no_rate_limit {
                None
            } else {
                a.ntp_rate_limit.map_or(Some(DEFAULT_NTP_RATE), |r| r.0)
            },
            v6_prefix: a.ipv6_prefix,
        }),
        chat_log_dir: Some(s.paths.logs_dir.join("chat")),
        chat_log_keep: crate::server::chat::Retention {
            days: a.chat_log_days,
            max_bytes: a.chat_log_max,
        },
        chat_replay: a.chat_history as usize,
        console: Console::new(sink, Some(log.clone()), verbosity(&a)),
        metrics: a.metrics,
        tls: tls_setup(&a, s)?,
        chat_key: match a.chat_key.as_ref().or(s.settings.serve_chat_key.as_ref()) {
            Some(f) => Some(std::sync::Arc::new(
                crate::proto::chat::read_key(f).map_err(Error::bad_value)?,
            )),
            None => None,
        },
        access: access_rules(&a, s),
    };
    let server = Server::bind(cfg)?;
    let addrs = server.addrs().to_vec();
    let ntp_addrs: Vec<String> = server.ntp_addrs().iter().map(ToString::to_string).collect();
    let metrics = server.metrics_addr();
    let tls = (
        server
            .tls_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        server.tls_fingerprint().map(str::to_string),
    );
    let started = Instant::now();
    if foreground {
        // The console's operator is in the chat room: lines typed on stdin
        // are its messages. At end of input the server goes on serving.
        let handle = server.handle();
        // The console shows the room's lines already: nothing else to send.
        handle.attach_operator_console();
        let h = handle.clone();
        s.terminal
            .operator_input(Box::new(move |line: &str| h.operator_say(line)));
        let stats = server.run();
        // The server (and the console sink in it) is gone: let the pump
        // print what it holds, but never wait long on a stdout nobody reads.
        if let Some(done) = pump_done {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        let stats = stats?;
        if s.frontend == Frontend::OneShot {
            // The process ends once this report is printed. If stdout is a
            // pipe nobody reads, that print would block for ever, and SIGTERM
            // (handled by the server, not the default) could not end it.
            let _ = std::thread::Builder::new()
                .name("netsh-exit-guard".into())
                .spawn(|| {
                    std::thread::sleep(Duration::from_secs(2));
                    std::process::exit(0);
                });
        }
        return Ok(Report::Serve(ServeReport {
            action: ServeAction::Stopped,
            running: false,
            addresses: addrs.iter().map(ToString::to_string).collect(),
            ntp_addresses: ntp_addrs.clone(),
            tls_addresses: tls.0.clone(),
            tls_fingerprint: tls.1.clone(),
            port: addrs.first().map(|a| a.port()),
            uptime_s: Some(started.elapsed().as_secs_f64()),
            stats: Some(stats),
            metrics: metrics_url(metrics),
            log: log.path().display().to_string(),
        }));
    }
    let handle = server.handle();
    let thread = std::thread::Builder::new()
        .name("netsh-server".into())
        .spawn(move || server.run())
        .map_err(|e| Error::io("start server thread", "serve", &e))?;
    s.server = Some(BackgroundServer {
        handle,
        addrs: addrs.clone(),
        ntp_addrs: ntp_addrs.clone(),
        tls: tls.clone(),
        metrics,
        started,
        thread,
    });
    Ok(Report::Serve(ServeReport {
        action: ServeAction::Started,
        running: true,
        addresses: addrs.iter().map(ToString::to_string).collect(),
        ntp_addresses: ntp_addrs,
        tls_addresses: tls.0,
        tls_fingerprint: tls.1,
        port: addrs.first().map(|a| a.port()),
        uptime_s: Some(0.0),
        stats: None,
        metrics: metrics_url(metrics),
        log: log.path().display().to_string(),
    }))
}

/// The TLS listener's certificate, if one was asked for.
fn tls_setup(a: &ServeArgs, s: &Session) -> Result<Option<server::tls::TlsSetup>> {
    // With --port 0 (tests, several servers) the TLS port is free too
    // unless one was asked for.
    let port = if a.port == 0 && a.tls_port == crate::tls::DEFAULT_TLS_PORT {
        0
    } else {
        a.tls_port
    };
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        return server::tls::from_files(cert, key, port).map(Some);
    }
    if !a.tls_self_signed {
        return Ok(None);
    }
    let mut names: Vec<String> = a.bind.iter().map(ToString::to_string).collect();
    if let Ok(h) = hostname::get() {
        names.push(h.to_string_lossy().into_owned());
    }
    server::tls::self_signed(&s.paths.data_dir.join("tls"), &names, port).map(Some)
}

fn metrics_url(a: Option<std::net::SocketAddr>) -> Option<String> {
    a.map(|a| format!("http://{a}/metrics"))
}

fn list(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn status(s: &Session) -> ServeReport {
    let log = s.paths.logs_dir.join("server.log").display().to_string();
    match &s.server {
        Some(bg) => ServeReport {
            action: ServeAction::Status,
            running: !bg.thread.is_finished(),
            addresses: bg.addrs.iter().map(ToString::to_string).collect(),
            ntp_addresses: bg.ntp_addrs.clone(),
            tls_addresses: bg.tls.0.clone(),
            tls_fingerprint: bg.tls.1.clone(),
            port: bg.addrs.first().map(|a| a.port()),
            uptime_s: Some(bg.started.elapsed().as_secs_f64()),
            stats: Some(bg.handle.stats.snapshot()),
            metrics: metrics_url(bg.metrics),
            log,
        },
        None => ServeReport {
            action: ServeAction::Status,
            running: false,
            addresses: Vec::new(),
            ntp_addresses: Vec::new(),
            tls_addresses: Vec::new(),
            tls_fingerprint: None,
            port: None,
            uptime_s: None,
            stats: None,
            metrics: None,
            log,
        },
    }
}

fn stop(s: &mut Session) -> Result<Report> {
    let Some(bg) = s.server.take() else {
        return Err(
            Error::usage("no server runs in this session").with_hint("start one with 'serve'")
        );
    };
    let uptime = bg.started.elapsed().as_secs_f64();
    bg.handle.stop();
    let stats = match bg.thread.join() {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => return Err(e),
        Err(_) => bg.handle.stats.snapshot(),
    };
    Ok(Report::Serve(ServeReport {
        action: ServeAction::Stopped,
        running: false,
        addresses: bg.addrs.iter().map(ToString::to_string).collect(),
        ntp_addresses: bg.ntp_addrs.clone(),
        tls_addresses: bg.tls.0.clone(),
        tls_fingerprint: bg.tls.1.clone(),
        port: bg.addrs.first().map(|a| a.port()),
        uptime_s: Some(uptime),
        stats: Some(stats),
        metrics: metrics_url(bg.metrics),
        log: s.paths.logs_dir.join("server.log").display().to_string(),
    }))
}

/// What a `serve` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServeAction {
    /// A server started (in the background, or ended in the foreground).
    Started,
    /// The background server stopped.
    Stopped,
    /// `serve status`.
    Status,
}

/// What `serve` reports.
#[derive(Debug, Serialize)]
pub struct ServeReport {
    /// `started`, `stopped` or `status`.
    pub action: ServeAction,
    /// Whether a server runs now.
    pub running: bool,
    /// Listening addresses.
    pub addresses: Vec<String>,
    /// SNTP responder addresses (empty when off or unknown).
    pub ntp_addresses: Vec<String>,
    /// Where echo and chat are served over TLS (empty without TLS).
    pub tls_addresses: Vec<String>,
    /// The TLS certificate's SHA-256 fingerprint (for clients' `--pin`).
    pub tls_fingerprint: Option<String>,
    /// The port (the same on every address); `null` if none runs.
    pub port: Option<u16>,
    /// Seconds since start; `null` if none runs.
    pub uptime_s: Option<f64>,
    /// Counters; `null` when just started or none runs.
    pub stats: Option<StatsSnapshot>,
    /// The Prometheus endpoint (`http://ADDR/metrics`); `null` without `--metrics`.
    pub metrics: Option<String>,
    /// The server log.
    pub log: String,
}

impl ServeReport {
    /// Text form.
    pub fn render(&self, p: &Paint) -> String {
        let addrs = self.addresses.join(", ");
        let mut out = match (self.action, self.running) {
            (ServeAction::Started, _) => {
                let mut t = format!(
                    "{} on {} (TCP and UDP echo) in the background; 'serve status', 'serve stop'; log: {}",
                    p.green("Server running"),
                    p.cyan(&addrs),
                    self.log
                );
                if !self.ntp_addresses.is_empty() {
                    t.push_str(&format!(
                        "\nSNTP on {}",
                        p.cyan(&self.ntp_addresses.join(", "))
                    ));
                }
                t
            }
            (ServeAction::Status, false) => {
                p.dim("No server runs in this session ('serve' starts one).")
            }
            (ServeAction::Status, true) => {
                format!("{} on {}", p.green("Server running"), p.cyan(&addrs))
            }
            _ => format!("{} ({})", p.bold("Server stopped"), addrs),
        };
        if self.running && !self.tls_addresses.is_empty() {
            out.push_str(&format!(
                "\nTLS (echo, chat) on {}, certificate SHA-256 {}",
                p.cyan(&self.tls_addresses.join(", ")),
                self.tls_fingerprint.as_deref().unwrap_or("?")
            ));
        }
        if let Some(m) = self.metrics.as_deref().filter(|_| self.running) {
            out.push_str(&format!("\nPrometheus metrics on {}", p.cyan(m)));
        }
        if let (Some(up), Some(st)) = (self.uptime_s, &self.stats) {
            out.push_str(&format!(
                "\n  uptime {:.1} s, clients {} now / {} total ({} refused), requests {}, datagrams {}, bytes in {} / out {}, SNTP replies {}",
                up, st.clients, st.clients_total, st.refused, st.requests, st.datagrams, st.bytes_in, st.bytes_out, st.ntp_replies
            ));
            let denied = st.denied_tcp + st.denied_udp + st.denied_ntp;
            if denied > 0 {
                out.push_str(&format!(
                    "\n  denied by --allow/--deny: {} TCP connections, {} UDP datagrams, {} SNTP requests",
                    st.denied_tcp, st.denied_udp, st.denied_ntp
                ));
            }
        }
        out
    }
}
