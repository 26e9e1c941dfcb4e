//! netsh's integration tests: one test binary, a module per area, all
//! against the real binary (`CARGO_BIN_EXE_netsh`) or an in-process server,
//! over real sockets on loopback.
//!
//! - `common`: the shared helpers (servers, running the binary, reading
//!   its output, the "a fresh client is still served" check, the pty);
//! - `chat`: the chat room, its log, the `netsh chat` client and the
//!   server's operator;
//! - `cli`: argv, `--json`, exit statuses, settings layers, piped sessions,
//!   broken input and a closed stdout;
//! - `echo`: the echo protocol on exact bytes (TCP, STREAM, UDP) and the
//!   `netsh echo` command (single, probes, bulk) against good and fake
//!   servers;
//! - `hostile`: what a malicious peer can do to everyone else: forged
//!   datagrams that would loop between servers, floods, a locked or erased
//!   chat room, trickling connections;
//! - `info`: `netsh info --json` against iproute2's view of this machine;
//! - `netns`: a fixture of network namespaces (multi-hop chains), with
//!   tests of the fixture itself;
//! - `newcomer`: what a new user tripped over: live output, no flag
//!   accepted and ignored, units, what leaving the shell does;
//! - `probes`: `ping`, `tcping` and `trace` against loopback, real
//!   listeners, iputils' ping, and namespace chains built by the tests;
//! - `schema`: every `--json` document and script map validated against
//!   docs/netsh.schema.json, and the schema shown to reject bad ones;
//! - `scripts`: rhai scripts (`run`, `-e`), their sandbox limits, and the
//!   scripts shipped in scripts/;
//! - `server_limits`: the server's limits (long lines, clients that never
//!   read, churn, idle timeout, `--max-clients`, out of fds, hostile bytes,
//!   shutdown by signal);
//! - `shell`: the interactive shell on a pseudo-terminal;
//! - `sntp`: the SNTP client and responder, against each other, standard
//!   clients, chronyd and fake servers;
//! - `tls`: the TLS port (self-signed or given certificates), the clients'
//!   pins, CAs and trust on first use, `openssl s_client`, stalled and
//!   garbage handshakes;
//! - `budgets`: CPU, memory and speed budgets, `#[ignore]`d so the normal
//!   run skips them (timing on a shared machine); `scripts/test` runs them
//!   serially afterwards.
//!
//! One module: `cargo test --test it echo::`; one test:
//! `cargo test --test it echo::seed_example_end_to_end -- --exact`; the
//! budgets: `cargo test --test it budgets:: -- --ignored --test-threads=1`.

mod access;
mod budgets;
mod bulk;
mod chat;
mod cli;
mod common;
mod echo;
mod hostile;
mod info;
mod metrics;
mod monitor;
mod netns;
mod newcomer;
mod probes;
mod schema;
mod scripts;
mod server_limits;
mod shell;
mod sntp;
mod tls;
