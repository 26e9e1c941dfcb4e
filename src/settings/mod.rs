//! Settings: the only mutable state a shell session carries between commands.
//!
//! Each value comes from one of five layers, lowest first: the built-in
//! default, the settings file under the data directory (`netsh.conf`), an
//! environment variable (`NETSH_TIMEOUT`, `NETSH_SNTP_SERVER`, …), a
//! `-o KEY=VALUE` flag on the command line, and `set` during the session. `set`
//! also writes the file, so a value survives a restart. A file that cannot be
//! read or parsed is reported and its bad lines fall back to the defaults; it
//! never stops netsh.
//!
//! The file format is one `key = value` per line, `#` comments, written
//! atomically (temporary file + rename), so an interrupted write leaves the
//! old file.

mod file;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::net::Endpoint;
use crate::net::client::ClientCtx;
use crate::net::sockopt::SockOpts;
use crate::units;

pub use file::{SettingsFile, apply_env};

/// Default TCP/UDP port of a netsh server (echo, chat).
pub const DEFAULT_PORT: u16 = 5050;
/// The standard NTP port.
pub const NTP_PORT: u16 = 123;
/// Shortest and longest allowed `timeout`.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
/// Largest `retries`: more than this only hides a broken path.
const MAX_RETRIES: u32 = 10;
/// Allowed socket buffer sizes; the kernel further caps them at `net.core.[rw]mem_max`.
const SOCKBUF_RANGE: (u64, u64) = (1024, 64 << 20);

/// A setting's name. [`KEYS`] describes each one; `set`, `settings`,
/// completion, the settings file and the environment are all generated
/// from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// The default netsh server for `echo` and `chat`.
    Server,
    /// Per-operation timeout (connect, each probe, each SNTP sample).
    Timeout,
    /// How many times a failed connection or query is retried.
    Retries,
    /// The default NTP server for `sntp`.
    SntpServer,
    /// `TCP_NODELAY` on client connections.
    Nodelay,
    /// `SO_KEEPALIVE` on client connections.
    Keepalive,
    /// `SO_SNDBUF` on client connections.
    Sndbuf,
    /// `SO_RCVBUF` on client connections.
    Rcvbuf,
    /// Time between two probes of one `monitor` target.
    MonitorInterval,
    /// What `monitor` watches when it is given no targets.
    MonitorTargets,
    /// Networks `serve` lets in (as `--allow`).
    ServeAllow,
    /// Networks `serve` keeps out (as `--deny`).
    ServeDeny,
    /// The key file `serve` makes chat members prove (as `--chat-key`).
    ServeChatKey,
    /// The key file `chat` proves to a room that asks (as `--key`).
    ChatKey,
}

/// Everything about one setting, in one row of [`KEYS`].
pub struct KeyDef {
    /// Which setting.
    pub key: Key,
    /// The word users type (`sntp-server`).
    pub name: &'static str,
    /// Placeholder for the value in usage lines.
    pub value_name: &'static str,
    /// One line for `help set` and `settings`.
    pub about: &'static str,
    /// Words offered by completion for the value (`default` always fits).
    pub choices: &'static [&'static str],
    /// The built-in default, as text: the only place it is written.
    pub default: &'static str,
    /// A switch (`on`/`off`): `set` offers and checks the words.
    pub switch: bool,
    /// Validate the text (trimmed, not `default`) and store it.
    set: fn(&mut Settings, &str) -> std::result::Result<(), String>,
    /// The current value as text (the form `set` accepts back).
    get: fn(&Settings) -> String,
    /// The current value for `--json` and rhai: numbers as numbers
    /// (durations in seconds), switches as booleans, `null` for "kernel
    /// default".
    json: fn(&Settings) -> Value,
}

/// Every setting, in the order `settings` shows them (the order of [`Key`]).
pub static KEYS: [KeyDef; 14] = [
    KeyDef {
        key: Key::Server,
        name: "server",
        value_name: "HOST[:PORT]",
        about: "default netsh server for echo and chat (port 5050 if omitted)",
        choices: &["default"],
        default: "127.0.0.1:5050",
        switch: false,
        set: |s, v| {
            s.server = endpoint(v, DEFAULT_PORT)?;
            Ok(())
        },
        get: |s| s.server.to_string(),
        json: |s| Value::from(s.server.to_string()),
    },
    KeyDef {
        key: Key::Timeout,
        name: "timeout",
        value_name: "DURATION",
        about: "per-operation timeout: 2.5, 500ms, 1m (1ms-1h)",
        choices: &["default"],
        default: "3s",
        switch: false,
        set: |s, v| {
            let d = units::parse_duration(v)?;
            if d < TIMEOUT_RANGE.0 || d > TIMEOUT_RANGE.1 {
                return Err(format!("'{v}' is out of range (1ms-1h)"));
            }
            s.timeout = d;
            Ok(())
        },
        get: |s| units::format_duration(s.timeout),
        json: |s| Value::from(s.timeout.as_secs_f64()),
    },
    KeyDef {
        key: Key::Retries,
        name: "retries",
        value_name: "N",
        about: "retries after a failed connection or query (0-10)",
        choices: &["default"],
        default: "1",
        switch: false,
        set: |s, v| {
            s.retries = v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .ok_or_else(|| {
                    format!(
                        "'{}' is not a whole number from 0 to {MAX_RETRIES}",
                        v.escape_debug()
                    )
                })?;
            Ok(())
        },
        get: |s| s.retries.to_string(),
        json: |s| Value::from(s.retries),
    },
    KeyDef {
        key: Key::SntpServer,
        name: "sntp-server",
        value_name: "HOST[:PORT]",
        about: "default NTP server for sntp (port 123 if omitted)",
        choices: &["default"],
        default: "pool.ntp.org:123",
        switch: false,
        set: |s, v| {
            s.sntp_server = endpoint(v, NTP_PORT)?;
            Ok(())
        },
        get: |s| s.sntp_server.to_string(),
        json: |s| Value::from(s.sntp_server.to_string()),
    },
    KeyDef {
        key: Key::Nodelay,
        name: "nodelay",
        value_name: "on|off",
        about: "TCP_NODELAY on client connections",
        choices: &["on", "off", "default"],
        default: "on",
        switch: true,
        set: |s, v| {
            s.nodelay = units::parse_switch(v)?;
            Ok(())
        },
        get: |s| switch_text(s.nodelay),
        json: |s| Value::from(s.nodelay),
    },
    KeyDef {
        key: Key::Keepalive,
        name: "keepalive",
        value_name: "on|off",
        about: "SO_KEEPALIVE on client connections",
        choices: &["on", "off", "default"],
        default: "off",
        switch: true,
        set: |s, v| {
            s.keepalive = units::parse_switch(v)?;
            Ok(())
        },
        get: |s| switch_text(s.keepalive),
        json: |s| Value::from(s.keepalive),
    },
    KeyDef {
        key: Key::Sndbuf,
        name: "sndbuf",
        value_name: "BYTES|default",
        about: "SO_SNDBUF of client sockets: 1KiB-64MiB, or default",
        choices: &["default"],
        default: "default",
        switch: false,
        set: |s, v| {
            s.sndbuf = sockbuf(v)?;
            Ok(())
        },
        get: |s| sockbuf_text(s.sndbuf),
        json: |s| s.sndbuf.map_or(Value::Null, Value::from),
    },
    KeyDef {
        key: Key::Rcvbuf,
        name: "rcvbuf",
        value_name: "BYTES|default",
        about: "SO_RCVBUF of client sockets: 1KiB-64MiB, or default",
        choices: &["default"],
        default: "default",
        switch: false,
        set: |s, v| {
            s.rcvbuf = sockbuf(v)?;
            Ok(())
        },
        get: |s| sockbuf_text(s.rcvbuf),
        json: |s| s.rcvbuf.map_or(Value::Null, Value::from),
    },
    KeyDef {
        key: Key::MonitorInterval,
        name: "monitor-interval",
        value_name: "DURATION",
        about: "time between two probes of one monitor target: 1s, 250ms (10ms-1h)",
        choices: &["default"],
        default: "1s",
        switch: false,
        set: |s, v| {
            let d = units::parse_duration(v)?;
            if d < MONITOR_INTERVAL_RANGE.0 || d > MONITOR_INTERVAL_RANGE.1 {
                return Err(format!("'{v}' is out of range (10ms-1h)"));
            }
            s.monitor_interval = d;
            Ok(())
        },
        get: |s| units::format_duration(s.monitor_interval),
        json: |s| Value::from(s.monitor_interval.as_secs_f64()),
    },
    KeyDef {
        key: Key::MonitorTargets,
        name: "monitor-targets",
        value_name: "TARGET,...",
        about: "what monitor watches when given no targets, comma-separated: udp://10.0.0.1,icmp://gw",
        choices: &["default"],
        default: "none",
        switch: false,
        set: |s, v| {
            s.monitor_targets = monitor_targets(v)?;
            Ok(())
        },
        get: |s| {
            if s.monitor_targets.is_empty() {
                "none".into()
            } else {
                s.monitor_targets.join(",")
            }
        },
        json: |s| Value::from(s.monitor_targets.clone()),
    },
    KeyDef {
        key: Key::ServeAllow,
        name: "serve-allow",
        value_name: "CIDR,...",
        about: "networks serve lets in, as --allow (none: everyone)",
        choices: &["default", "none"],
        default: "none",
        switch: false,
        set: |s, v| {
            s.serve_allow = crate::server::access::parse_list(v)?;
            Ok(())
        },
        get: |s| nets_text(&s.serve_allow),
        json: |s| {
            Value::from(
                s.serve_allow
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
        },
    },
    KeyDef {
        key: Key::ServeDeny,
        name: "serve-deny",
        value_name: "CIDR,...",
        about: "networks serve keeps out, as --deny",
        choices: &["default", "none"],
        default: "none",
        switch: false,
        set: |s, v| {
            s.serve_deny = crate::server::access::parse_list(v)?;
            Ok(())
        },
        get: |s| nets_text(&s.serve_deny),
        json: |s| {
            Value::from(
                s.serve_deny
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
        },
    },
    KeyDef {
        key: Key::ServeChatKey,
        name: "serve-chat-key",
        value_name: "FILE",
        about: "key file chat members must prove they hold, as serve --chat-key (none: open room)",
        choices: &["default", "none"],
        default: "none",
        switch: false,
        set: |s, v| {
            s.serve_chat_key = key_file(v)?;
            Ok(())
        },
        get: |s| path_text(s.serve_chat_key.as_deref()),
        json: |s| path_json(s.serve_chat_key.as_deref()),
    },
    KeyDef {
        key: Key::ChatKey,
        name: "chat-key",
        value_name: "FILE",
        about: "key file chat proves to a room that asks for one, as chat --key",
        choices: &["default", "none"],
        default: "none",
        switch: false,
        set: |s, v| {
            s.chat_key = key_file(v)?;
            Ok(())
        },
        get: |s| path_text(s.chat_key.as_deref()),
        json: |s| path_json(s.chat_key.as_deref()),
    },
];

/// A key file's path, `none` for no key. The file is read when it is used,
/// so a key rotated on disk takes effect at the next join.
fn key_file(v: &str) -> std::result::Result<Option<std::path::PathBuf>, String> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if v.chars().any(char::is_control) {
        return Err("a file name without control characters".into());
    }
    Ok(Some(std::path::PathBuf::from(v)))
}

fn path_text(p: Option<&std::path::Path>) -> String {
    p.map_or_else(|| "none".into(), |p| p.display().to_string())
}

fn path_json(p: Option<&std::path::Path>) -> Value {
    p.map_or(Value::Null, |p| Value::from(p.display().to_string()))
}

fn nets_text(v: &[ipnet::IpNet]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Allowed `monitor-interval`.
const MONITOR_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(3600));

/// A comma- or space-separated list of monitor targets, each checked.
fn monitor_targets(v: &str) -> std::result::Result<Vec<String>, String> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let words: Vec<String> = v
        .split([',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    if words.len() > crate::net::monitor::MAX_TARGETS {
        return Err(format!(
            "more than {} targets",
            crate::net::monitor::MAX_TARGETS
        ));
    }
    for w in &words {
        crate::net::monitor::Target::parse(w).map_err(|e| e.message)?;
    }
    Ok(words)
}

fn endpoint(v: &str, port: u16) -> std::result::Result<Endpoint, String> {
    Endpoint::parse(v, port).map_err(|e| e.message)
}

fn switch_text(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

/// A socket buffer size, or `default` for the kernel's (`None`).
fn sockbuf(v: &str) -> std::result::Result<Option<u32>, String> {
    if v.eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    let n = units::parse_bytes(v)?;
    if n < SOCKBUF_RANGE.0 || n > SOCKBUF_RANGE.1 {
        return Err(format!("'{v}' is out of range (1KiB-64MiB)"));
    }
    Ok(Some(n as u32))
}

fn sockbuf_text(v: Option<u32>) -> String {
    v.map_or("default".into(), |n| units::format_bytes(n.into()))
}

impl Key {
    /// Every setting, in the order `settings` shows them.
    pub const ALL: [Key; 14] = [
        Key::Server,
        Key::Timeout,
        Key::Retries,
        Key::SntpServer,
        Key::Nodelay,
        Key::Keepalive,
        Key::Sndbuf,
        Key::Rcvbuf,
        Key::MonitorInterval,
        Key::MonitorTargets,
        Key::ServeAllow,
        Key::ServeDeny,
        Key::ServeChatKey,
        Key::ChatKey,
    ];

    /// This setting's row of [`KEYS`].
    pub fn def(self) -> &'static KeyDef {
        &KEYS[self as usize]
    }

    /// The word users type (`sntp-server`).
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// Placeholder for the value in usage lines.
    pub fn value_name(self) -> &'static str {
        self.def().value_name
    }

    /// One line for `help set` and `settings`.
    pub fn about(self) -> &'static str {
        self.def().about
    }

    /// Words offered by completion for the value.
    pub fn choices(self) -> &'static [&'static str] {
        self.def().choices
    }

    /// The built-in default, as text.
    pub fn default_text(self) -> &'static str {
        self.def().default
    }

    /// The environment variable that overrides the file (`NETSH_SNTP_SERVER`).
    pub fn env_var(self) -> String {
        format!(
            "NETSH_{}",
            self.name().to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Look a key up by the word users type (also accepts `sntp_server`).
    pub fn from_name(s: &str) -> Option<Key> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Key::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Where a setting's current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Built into netsh.
    Default,
    /// The settings file.
    File,
    /// An environment variable.
    Env,
    /// `-o KEY=VALUE` on the command line.
    Flag,
    /// `set` in this session.
    Set,
}

impl Source {
    /// Lower-case word for display.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
            Source::Set => "set",
        }
    }
}

/// Validated settings. Fields are public for reading; change them through
/// [`Settings::apply`] so validation and the source stay right.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Default netsh server.
    pub server: Endpoint,
    /// Retries after a failure.
    pub retries: u32,
    /// Default NTP server.
    pub sntp_server: Endpoint,
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `SO_SNDBUF`, `None` = kernel default.
    pub sndbuf: Option<u32>,
    /// `SO_RCVBUF`, `None` = kernel default.
    pub rcvbuf: Option<u32>,
    /// Time between two probes of one `monitor` target.
    pub monitor_interval: Duration,
    /// `monitor`'s targets when it is given none.
    pub monitor_targets: Vec<String>,
    /// `serve-allow`.
    pub serve_allow: Vec<ipnet::IpNet>,
    /// `serve-deny`.
    pub serve_deny: Vec<ipnet::IpNet>,
    /// `serve-chat-key`.
    pub serve_chat_key: Option<std::path::PathBuf>,
    /// `chat-key`.
    pub chat_key: Option<std::path::PathBuf>,
    sources: BTreeMap<Key, Source>,
}

impl Default for Settings {
    /// Every key at its [`KeyDef::default`] text.
    fn default() -> Self {
        let mut s = Settings {
            timeout: Duration::ZERO,
            server: Endpoint {
                host: String::new(),
                port: DEFAULT_PORT,
            },
            retries: 0,
            sntp_server: Endpoint {
                host: String::new(),
                port: NTP_PORT,
            },
            nodelay: false,
            keepalive: false,
            sndbuf: None,
            rcvbuf: None,
            monitor_interval: Duration::ZERO,
            monitor_targets: Vec::new(),
            serve_allow: Vec::new(),
            serve_deny: Vec::new(),
            serve_chat_key: None,
            chat_key: None,
            sources: BTreeMap::new(),
        };
        for d in &KEYS {
            // The table's defaults are tested to parse (every_default_text_parses).
            let _ = (d.set)(&mut s, d.default);
            s.sources.insert(d.key, Source::Default);
        }
        s
    }
}

impl Settings {
    /// Validate `raw` for `key` and store it, remembering `source`.
    /// The word `default` restores the built-in value.
    ///
    /// # Errors
    /// `bad-value` naming the key, the value and the allowed range; nothing
    /// changes then.
    pub fn apply(&mut self, key: Key, raw: &str, source: Source) -> Result<()> {
        let d = key.def();
        let raw = raw.trim();
        let text = if raw.eq_ignore_ascii_case("default") {
            d.default
        } else {
            raw
        };
        let mut next = self.clone();
        (d.set)(&mut next, text).map_err(|why| {
            Error::bad_value(format!("{}: {why}", d.name)).with_hint(format!(
                "usage: set {} {}; {}",
                d.name, d.value_name, d.about
            ))
        })?;
        *self = next;
        self.sources.insert(key, source);
        Ok(())
    }

    /// The current value as text (the form `set` accepts back).
    pub fn get(&self, key: Key) -> String {
        (key.def().get)(self)
    }

    /// The current value for `--json` and rhai: numbers as numbers (timeout in
    /// seconds), switches as booleans, `null` for "kernel default".
    pub fn json_value(&self, key: Key) -> Value {
        (key.def().json)(self)
    }

    /// Where the current value came from.
    pub fn source(&self, key: Key) -> Source {
        self.sources.get(&key).copied().unwrap_or(Source::Default)
    }

    /// What a client needs of the settings, with the Ctrl-C flag.
    pub fn client_ctx<'a>(&self, interrupt: &'a AtomicBool) -> ClientCtx<'a> {
        ClientCtx {
            timeout: self.timeout,
            retries: self.retries,
            opts: self.sock_opts(),
            interrupt,
        }
    }

    /// The socket options client connections get.
    pub fn sock_opts(&self) -> SockOpts {
        SockOpts {
            nodelay: self.nodelay,
            keepalive: self.keepalive,
            sndbuf: self.sndbuf,
            rcvbuf: self.rcvbuf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_validates_and_tracks_source() {
        let mut s = Settings::default();
        s.apply(Key::Timeout, "500ms", Source::Set).unwrap();
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.source(Key::Timeout), Source::Set);
        let e = s.apply(Key::Timeout, "2h", Source::Set).unwrap_err();
        assert!(
            e.message.contains("2h") && e.message.contains("1ms-1h"),
            "{}",
            e.message
        );
        assert_eq!(
            s.timeout,
            Duration::from_millis(500),
            "a bad value changes nothing"
        );
        let e = s.apply(Key::Retries, "11", Source::Set).unwrap_err();
        assert!(e.message.contains("0 to 10"));
        s.apply(Key::Server, "10.1.2.3", Source::Set).unwrap();
        assert_eq!(s.get(Key::Server), "10.1.2.3:5050");
        s.apply(Key::Sndbuf, "64k", Source::Set).unwrap();
        assert_eq!(s.sndbuf, Some(65536));
        assert!(s.apply(Key::Sndbuf, "10", Source::Set).is_err());
        s.apply(Key::Sndbuf, "default", Source::Set).unwrap();
        assert_eq!(s.sndbuf, None);
        assert_eq!(s.source(Key::Sndbuf), Source::Set);
        s.apply(Key::Timeout, "DEFAULT", Source::File).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(3));
    }

    #[test]
    fn every_default_text_parses_to_the_default() {
        let d = Settings::default();
        assert_eq!(d.timeout, Duration::from_secs(3));
        assert_eq!(d.server.to_string(), "127.0.0.1:5050");
        let mut s = Settings::default();
        for (i, k) in Key::ALL.into_iter().enumerate() {
            assert_eq!(KEYS[i].key, k, "KEYS is in the order of Key");
            assert!((KEYS[i].set)(&mut Settings::default(), KEYS[i].default).is_ok());
            s.apply(k, k.default_text(), Source::File).unwrap();
            assert_eq!(s.get(k), d.get(k), "{}", k.name());
            assert_eq!(Key::from_name(k.name()), Some(k));
        }
    }
}
