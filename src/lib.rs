//! netsh — a network-diagnostics shell: machine info, echo and throughput
//! tests, SNTP, chat, and the server for them, behind an interactive shell, a
//! one-shot command line and rhai scripts.
//!
//! # Layout
//! ```text
//! main.rs      argv → mode (shell | piped lines | one-shot | -e); the session's Terminal; exit codes
//! cmd/         the COMMANDS registry; one file per command; execute() parses words with clap
//! report.rs    Report: what a command returns; text, --json and rhai maps from one serde form
//! session.rs   Session: settings, paths, error log, output sink, Ctrl-C flag, Terminal
//! settings/    the KEYS table, validation, layers (default/file/env/flag/set); file.rs: netsh.conf, NETSH_*
//! error.rs     Error: kind (code, exit status, default hint) + message + hint
//! host.rs      this machine: interfaces (if-addrs + /sys/class/net), routes, DNS
//! net/         the client side: endpoints, connects with deadlines, the probe loop (probe.rs), monitor.rs
//!              and its transports (echo.rs), bulk throughput, the SNTP client
//! proto/       wire formats, both ends, as pure functions: line framing, echo, chat, NTP, escaping
//! server/      the server: one mio loop for echo, chat and SNTP (mod.rs is its table of contents)
//! script/      rhai: arguments, engine and limits, located errors, the script thread
//! shell/       rustyline front end: completion, hints, history, the line loops, terminals
//! tls.rs       what TLS server and clients share: the rustls provider, fingerprints, pins
//! stats.rs     RTT summaries; log.rs capped logs; paint.rs colour; units.rs durations and bytes
//! ```
//! Data flow: a line of words → `shlex` split → [`cmd::execute`] → the
//! command's `run` → [`report::Report`] → rendered by the front end, or an
//! [`error::Error`] printed as one line, logged, and the front end goes on.
//! `net`, `proto` and `server` never print; commands never touch the
//! terminal (they get [`session::Terminal`]).

pub mod cmd;
pub mod error;
pub mod files;
pub mod host;
pub mod live;
pub mod log;
pub mod net;
pub mod paint;
pub mod proto;
pub mod report;
pub mod script;
pub mod server;
pub mod session;
pub mod settings;
pub mod shell;
pub mod stats;
pub mod tls;
pub mod units;
