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

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::units;

/// Default TCP/UDP port of a netsh server (echo, chat).
pub const DEFAULT_PORT: u16 = 5050;
/// The standard NTP port.
pub const NTP_PORT: u16 = 123;
/// A settings file larger than this is not a settings file.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Shortest and longest allowed `timeout`.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
/// Largest `retries`: more than this only hides a broken path.
const MAX_RETRIES: u32 = 10;
/// Allowed socket buffer sizes; the kernel further caps them at `net.core.[rw]mem_max`.
const SOCKBUF_RANGE: (u64, u64) = (1024, 64 << 20);

/// A setting's name. `Key::ALL` is the registry `set`, `settings`, completion
/// and the settings file are all generated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Per-operation timeout (connect, each probe, each SNTP sample).
    Timeout,
    /// The default netsh server for `echo` and `chat`.
    Server,
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
}

impl Key {
    /// Every setting, in the order `settings` shows them.
    pub const ALL: [Key; 8] = [
        Key::Server,
        Key::Timeout,
        Key::Retries,
        Key::SntpServer,
        Key::Nodelay,
        Key::Keepalive,
        Key::Sndbuf,
        Key::Rcvbuf,
    ];

    /// The word users type (`sntp-server`).
    pub fn name(self) -> &'static str {
        match self {
            Key::Timeout => "timeout",
            Key::Server => "server",
            Key::Retries => "retries",
            Key::SntpServer => "sntp-server",
            Key::Nodelay => "nodelay",
            Key::Keepalive => "keepalive",
            Key::Sndbuf => "sndbuf",
            Key::Rcvbuf => "rcvbuf",
        }
    }

    /// Placeholder for the value in usage lines.
    pub fn value_name(self) -> &'static str {
        match self {
            Key::Timeout => "DURATION",
            Key::Server | Key::SntpServer => "HOST[:PORT]",
            Key::Retries => "N",
            Key::Nodelay | Key::Keepalive => "on|off",
            Key::Sndbuf | Key::Rcvbuf => "BYTES|default",
        }
    }

    /// One line for `help set` and `settings`.
    pub fn about(self) -> &'static str {
        match self {
            Key::Timeout => "per-operation timeout: 2.5, 500ms, 1m (1ms-1h)",
            Key::Server => "default netsh server for echo and chat (port 5050 if omitted)",
            Key::Retries => "retries after a failed connection or query (0-10)",
            Key::SntpServer => "default NTP server for sntp (port 123 if omitted)",
            Key::Nodelay => "TCP_NODELAY on client connections",
            Key::Keepalive => "SO_KEEPALIVE on client connections",
            Key::Sndbuf => "SO_SNDBUF of client sockets: 1KiB-64MiB, or default",
            Key::Rcvbuf => "SO_RCVBUF of client sockets: 1KiB-64MiB, or default",
        }
    }

    /// Words offered by completion for the value.
    pub fn choices(self) -> &'static [&'static str] {
        match self {
            Key::Nodelay | Key::Keepalive => &["on", "off", "default"],
            _ => &["default"],
        }
    }

    /// The built-in default, as text.
    pub fn default_text(self) -> &'static str {
        match self {
            Key::Timeout => "3s",
            Key::Server => "127.0.0.1:5050",
            Key::Retries => "1",
            Key::SntpServer => "pool.ntp.org:123",
            Key::Nodelay => "on",
            Key::Keepalive => "off",
            Key::Sndbuf | Key::Rcvbuf => "default",
        }
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
    sources: BTreeMap<Key, Source>,
}

impl Default for Settings {
    fn default() -> Self {
        let mut s = Settings {
            timeout: Duration::from_secs(3),
            server: Endpoint {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
            },
            retries: 1,
            sntp_server: Endpoint {
                host: "pool.ntp.org".into(),
                port: NTP_PORT,
            },
            nodelay: true,
            keepalive: false,
            sndbuf: None,
            rcvbuf: None,
            sources: BTreeMap::new(),
        };
        for k in Key::ALL {
            s.sources.insert(k, Source::Default);
        }
        s
    }
}

impl Settings {
    /// Validate `raw` for `key` and store it, remembering `source`.
    /// The word `default` restores the built-in value.
    ///
    /// # Errors
    /// `bad-value` naming the key, the value and the allowed range.
    pub fn apply(&mut self, key: Key, raw: &str, source: Source) -> Result<()> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("default") {
            let d = Settings::default();
            match key {
                Key::Timeout => self.timeout = d.timeout,
                Key::Server => self.server = d.server,
                Key::Retries => self.retries = d.retries,
                Key::SntpServer => self.sntp_server = d.sntp_server,
                Key::Nodelay => self.nodelay = d.nodelay,
                Key::Keepalive => self.keepalive = d.keepalive,
                Key::Sndbuf => self.sndbuf = d.sndbuf,
                Key::Rcvbuf => self.rcvbuf = d.rcvbuf,
            }
            self.sources.insert(key, source);
            return Ok(());
        }
        let bad = |why: String| {
            Error::bad_value(format!("{}: {why}", key.name())).with_hint(format!(
                "usage: set {} {}; {}",
                key.name(),
                key.value_name(),
                key.about()
            ))
        };
        match key {
            Key::Timeout => {
                let d = units::parse_duration(raw).map_err(bad)?;
                if d < TIMEOUT_RANGE.0 || d > TIMEOUT_RANGE.1 {
                    return Err(bad(format!("'{raw}' is out of range (1ms-1h)")));
                }
                self.timeout = d;
            }
            Key::Server => self.server = endpoint(raw, DEFAULT_PORT, key)?,
            Key::SntpServer => self.sntp_server = endpoint(raw, NTP_PORT, key)?,
            Key::Retries => {
                self.retries = raw
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_RETRIES)
                    .ok_or_else(|| {
                        bad(format!(
                            "'{}' is not a whole number from 0 to 10",
                            raw.escape_debug()
                        ))
                    })?;
            }
            Key::Nodelay => self.nodelay = units::parse_switch(raw).map_err(bad)?,
            Key::Keepalive => self.keepalive = units::parse_switch(raw).map_err(bad)?,
            Key::Sndbuf | Key::Rcvbuf => {
                let n = units::parse_bytes(raw).map_err(bad)?;
                if n < SOCKBUF_RANGE.0 || n > SOCKBUF_RANGE.1 {
                    return Err(bad(format!("'{raw}' is out of range (1KiB-64MiB)")));
                }
                let v = Some(n as u32);
                if key == Key::Sndbuf {
                    self.sndbuf = v;
                } else {
                    self.rcvbuf = v;
                }
            }
        }
        self.sources.insert(key, source);
        Ok(())
    }

    /// The current value as text (the form `set` accepts back).
    pub fn get(&self, key: Key) -> String {
        let buf = |v: Option<u32>| v.map_or("default".into(), |n| units::format_bytes(n.into()));
        let sw = |b: bool| if b { "on" } else { "off" }.to_string();
        match key {
            Key::Timeout => units::format_duration(self.timeout),
            Key::Server => self.server.to_string(),
            Key::Retries => self.retries.to_string(),
            Key::SntpServer => self.sntp_server.to_string(),
            Key::Nodelay => sw(self.nodelay),
            Key::Keepalive => sw(self.keepalive),
            Key::Sndbuf => buf(self.sndbuf),
            Key::Rcvbuf => buf(self.rcvbuf),
        }
    }

    /// The current value for `--json` and rhai: numbers as numbers (timeout in
    /// seconds), switches as booleans, `null` for "kernel default".
    pub fn json_value(&self, key: Key) -> serde_json::Value {
        use serde_json::Value;
        match key {
            Key::Timeout => Value::from(self.timeout.as_secs_f64()),
            Key::Retries => Value::from(self.retries),
            Key::Nodelay => Value::from(self.nodelay),
            Key::Keepalive => Value::from(self.keepalive),
            Key::Sndbuf => self.sndbuf.map_or(Value::Null, Value::from),
            Key::Rcvbuf => self.rcvbuf.map_or(Value::Null, Value::from),
            Key::Server | Key::SntpServer => Value::from(self.get(key)),
        }
    }

    /// Where the current value came from.
    pub fn source(&self, key: Key) -> Source {
        self.sources.get(&key).copied().unwrap_or(Source::Default)
    }
}

fn endpoint(raw: &str, port: u16, key: Key) -> Result<Endpoint> {
    Endpoint::parse(raw, port).map_err(|e| Error {
        message: format!("{}: {}", key.name(), e.message),
        ..e
    })
}

/// The settings file: what it holds (kept verbatim so `set` rewrites only the
/// key it changes) and where it lives.
#[derive(Debug)]
pub struct SettingsFile {
    path: PathBuf,
    values: BTreeMap<Key, String>,
}

impl SettingsFile {
    /// Read the file at `path` into `settings` (missing is fine). Returns the
    /// file and one warning per problem: unreadable file, unknown key, bad
    /// value. Bad lines are skipped, so their keys keep the defaults.
    pub fn load(path: &Path, settings: &mut Settings) -> (SettingsFile, Vec<Error>) {
        let mut file = SettingsFile {
            path: path.to_path_buf(),
            values: BTreeMap::new(),
        };
        let mut warnings = Vec::new();
        let warn = |msg: String| {
            Error::new(ErrorKind::Settings, msg).with_hint(format!(
                "fix or delete {}; the default is used meanwhile",
                path.display()
            ))
        };
        let text = match crate::files::read_capped(path, MAX_FILE_BYTES) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (file, warnings),
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                warnings.push(warn(format!(
                    "settings file {} is over {MAX_FILE_BYTES} bytes, ignored",
                    path.display(),
                )));
                return (file, warnings);
            }
            Err(e) => {
                warnings.push(Error::io("read settings", path.display(), &e));
                return (file, warnings);
            }
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", path.display(), n + 1);
            let Some((k, v)) = line.split_once('=') else {
                warnings.push(warn(format!("{at}: not 'key = value': '{}'", clip(line))));
                continue;
            };
            let Some(key) = Key::from_name(k) else {
                warnings.push(warn(format!("{at}: unknown setting '{}'", clip(k.trim()))));
                continue;
            };
            match settings.apply(key, v, Source::File) {
                Ok(()) => {
                    file.values.insert(key, v.trim().to_string());
                }
                Err(e) => warnings.push(warn(format!("{at}: {}", e.message))),
            }
        }
        (file, warnings)
    }

    /// Store `value` for `key` (`None` removes it) and rewrite the file atomically.
    ///
    /// # Errors
    /// `io` naming the path when the directory or file cannot be written.
    pub fn store(&mut self, key: Key, value: Option<String>) -> Result<()> {
        match value {
            Some(v) => self.values.insert(key, v),
            None => self.values.remove(&key),
        };
        let mut text =
            String::from("# netsh settings, written by 'set'; one 'key = value' per line\n");
        for k in Key::ALL {
            if let Some(v) = self.values.get(&k) {
                text.push_str(&format!("{} = {v}\n", k.name()));
            }
        }
        let tmp = self.path.with_extension("conf.tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            // A full disk leaves a cut temporary file: don't leave it behind
            // (the old netsh.conf is untouched).
            let _ = fs::remove_file(&tmp);
            Error::io("write settings", self.path.display(), &e)
        })
    }

    /// A handle on `path` that has not been read (for a session stand-in).
    pub fn unloaded(path: &Path) -> SettingsFile {
        SettingsFile {
            path: path.to_path_buf(),
            values: BTreeMap::new(),
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// At most 60 characters of untrusted text, escaped for one line.
fn clip(s: &str) -> String {
    let e: String = s
        .chars()
        .take(60)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 60 {
        format!("{e}…")
    } else {
        e
    }
}

/// Apply `NETSH_*` environment variables; returns one warning per bad value.
pub fn apply_env(settings: &mut Settings) -> Vec<Error> {
    let mut warnings = Vec::new();
    for k in Key::ALL {
        if let Some(v) = std::env::var_os(k.env_var()) {
            let v = v.to_string_lossy();
            if let Err(e) = settings.apply(k, &v, Source::Env) {
                warnings.push(Error {
                    message: format!("{}: {}", k.env_var(), e.message),
                    ..e
                });
            }
        }
    }
    warnings
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
        let mut s = Settings::default();
        for k in Key::ALL {
            s.apply(k, k.default_text(), Source::File).unwrap();
            assert_eq!(s.get(k), d.get(k), "{}", k.name());
            assert_eq!(Key::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn file_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("netsh.conf");
        let mut s = Settings::default();
        let (mut f, w) = SettingsFile::load(&p, &mut s);
        assert!(w.is_empty());
        f.store(Key::Server, Some("192.0.2.9:7".into())).unwrap();
        let mut s = Settings::default();
        let (_, w) = SettingsFile::load(&p, &mut s);
        assert!(w.is_empty());
        assert_eq!(s.get(Key::Server), "192.0.2.9:7");
        assert_eq!(s.source(Key::Server), Source::File);

        fs::write(
            &p,
            b"\xff\xfe\x00garbage\nfoo = 1\ntimeout = banana\nretries = 3\n",
        )
        .unwrap();
        let mut s = Settings::default();
        let (_, w) = SettingsFile::load(&p, &mut s);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().all(|e| e.code() == "settings"));
        assert_eq!(s.retries, 3, "good lines still count");
        assert_eq!(s.timeout, Duration::from_secs(3));
    }
}
