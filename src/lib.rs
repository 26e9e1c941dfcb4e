//! netsh — a network-diagnostics shell: machine info, echo and throughput
//! tests, SNTP, chat, and the server for them, behind an interactive shell, a
//! one-shot command line and rhai scripts.
//!
//! # Layout
//! ```text
//! main.rs      argv → mode (shell | piped lines | one-shot); exit codes; BrokenPipe = 0
//! cmd/         the COMMANDS registry; one file per command; execute() parses words with clap
//! report.rs    Report: what a command returns; text, --json and (later) rhai renderings
//! session.rs   Session: settings, paths under the data dir, error log, output sink, Ctrl-C flag
//! settings.rs  Key registry, validation, sources (default/file/env/flag/set), netsh.conf
//! error.rs     Error: kind (code, exit status, default hint) + message + hint
//! host.rs      this machine: interfaces (if-addrs + /sys/class/net), routes, DNS
//! net/         addresses and socket options (the mio event loops join here)
//! proto/       pure text/wire functions (escaping untrusted text now; codecs later)
//! shell/       rustyline front end: completion, hints, highlighting, history, the line loop
//! log.rs       size-capped append-only logs under logs/
//! paint.rs     colour policy (tty and NO_COLOR)
//! units.rs     durations, byte counts and switches as users type them
//! ```
//! Data flow: a line of words → `shlex` split → [`cmd::execute`] → the
//! command's `run` → [`report::Report`] → rendered by the front end, or an
//! [`error::Error`] printed as one line, logged, and the front end goes on.

pub mod cmd;
pub mod error;
pub mod files;
pub mod host;
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
pub mod units;
