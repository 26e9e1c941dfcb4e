//! The one error type of netsh: a kind (which gives the stable `code`, the exit
//! status and a default fix), a message that names the operation and the address,
//! and a hint that says how to fix it.
//!
//! The core (`net`, `host`, `settings`) builds errors with context; the edge
//! (`shell`, `main`, `script`) prints them as one line, logs them and carries on.

use std::fmt;
use std::io;

use serde::Serialize;

/// Result alias used across netsh.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in broad classes. The `code` of each is stable: scripts
/// and `--json` consumers match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Bad words on the command line: missing argument, unknown flag, unbalanced quote.
    Usage,
    /// The first word is not a netsh command.
    UnknownCommand,
    /// A value was out of range or malformed (`set timeout -1`).
    BadValue,
    /// Name resolution failed.
    Dns,
    /// The peer actively refused the connection (nothing listens there).
    ConnectionRefused,
    /// No reply before the deadline.
    TimedOut,
    /// The address is already in use by another socket.
    AddrInUse,
    /// The address cannot be bound or reached from this machine.
    Unreachable,
    /// The peer sent something netsh did not expect.
    Protocol,
    /// Data came back different from what was sent.
    Mismatch,
    /// The settings file could not be read or written.
    Settings,
    /// Any other operating-system error.
    Io,
    /// Ctrl-C stopped the command.
    Interrupted,
    /// A script failed (syntax, runtime, or a sandbox limit).
    Script,
    /// The system refused this process something it needs (a raw socket).
    Permission,
    /// A watched figure crossed its warning threshold (`monitor --warn`).
    Warning,
    /// A watched figure crossed its critical threshold (`monitor --crit`).
    Critical,
}

impl ErrorKind {
    /// Every kind, for looking one up by its code.
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::Usage,
        ErrorKind::UnknownCommand,
        ErrorKind::BadValue,
        ErrorKind::Dns,
        ErrorKind::ConnectionRefused,
        ErrorKind::TimedOut,
        ErrorKind::AddrInUse,
        ErrorKind::Unreachable,
        ErrorKind::Protocol,
        ErrorKind::Mismatch,
        ErrorKind::Settings,
        ErrorKind::Io,
        ErrorKind::Interrupted,
        ErrorKind::Script,
        ErrorKind::Permission,
        ErrorKind::Warning,
        ErrorKind::Critical,
    ];

    /// The kind with this code.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The stable machine-readable code, as printed in `error[CODE]`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::UnknownCommand => "unknown-command",
            ErrorKind::BadValue => "bad-value",
            ErrorKind::Dns => "dns",
            ErrorKind::ConnectionRefused => "connection-refused",
            ErrorKind::TimedOut => "timed-out",
            ErrorKind::AddrInUse => "addr-in-use",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Settings => "settings",
            ErrorKind::Io => "io",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Script => "script",
            ErrorKind::Permission => "permission-denied",
            ErrorKind::Warning => "warning",
            ErrorKind::Critical => "critical",
        }
    }

    /// Process exit status for this kind (documented in `docs/errors.md`).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage | ErrorKind::UnknownCommand | ErrorKind::BadValue => 2,
            ErrorKind::Mismatch => 3,
            // As Nagios plugins exit: 1 WARNING, 2 CRITICAL.
            ErrorKind::Critical => 2,
            ErrorKind::Interrupted => 130,
            _ => 1,
        }
    }

    /// The fix to suggest when the code that raised the error gave none.
    fn default_hint(self) -> Option<&'static str> {
        Some(match self {
            ErrorKind::Usage => "type 'help COMMAND' for its usage",
            ErrorKind::UnknownCommand => "type 'help' for the list of commands",
            ErrorKind::Dns => "check the host name, or use an IP address",
            ErrorKind::ConnectionRefused => {
                "is 'netsh serve' running there? start it, or check the port"
            }
            ErrorKind::TimedOut => {
                "check the address and any firewall, or raise the limit with 'set timeout'"
            }
            ErrorKind::AddrInUse => "choose another port, or stop the program using it",
            ErrorKind::Unreachable => "check the address and this machine's routes ('info')",
            ErrorKind::Interrupted => return None,
            _ => return None,
        })
    }
}

/// A netsh error: `error[CODE]: message — hint`.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    /// Stable code, e.g. `connection-refused`.
    #[serde(rename = "code", serialize_with = "ser_code")]
    pub kind: ErrorKind,
    /// What happened, naming the operation and the address where there is one.
    pub message: String,
    /// How to fix it; `null` when there is nothing useful to say.
    pub hint: Option<String>,
    /// An exit status other than the kind's (`monitor` exits as Nagios
    /// plugins do: 3, UNKNOWN, for any error of its own).
    #[serde(skip)]
    pub status: Option<i32>,
}

fn ser_code<S: serde::Serializer>(k: &ErrorKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(k.code())
}

impl Error {
    /// An error of `kind` with the kind's default hint.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: kind.default_hint().map(str::to_owned),
            status: None,
        }
    }

    /// Bad words on the command line.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// A malformed or out-of-range value.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadValue, message)
    }

    /// Exit with `status` rather than the kind's.
    pub fn with_status(mut self, status: i32) -> Self {
        self.status = Some(status);
        self
    }

    /// Replace the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// An operating-system error during `op` on `target` (an address, a path),
    /// classified so the hint fits: refused, timed out, address in use, …
    pub fn io(op: &str, target: impl fmt::Display, e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::TimedOut,
            io::ErrorKind::AddrInUse => ErrorKind::AddrInUse,
            io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown => ErrorKind::Unreachable,
            io::ErrorKind::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Io,
        };
        let mut err = Self::new(kind, format!("{op} {target}: {}", io_reason(e)));
        if err.hint.is_none() {
            err.hint = match e.kind() {
                io::ErrorKind::PermissionDenied => {
                    Some("check the permissions (ports below 1024 need privileges)".into())
                }
                io::ErrorKind::StorageFull => Some("free some disk space".into()),
                _ => None,
            };
        }
        err
    }

    /// The same line as a warning: `warning[CODE]: message — hint` (the
    /// command goes on).
    pub fn as_warning(&self) -> String {
        let mut s = format!("warning[{}]: {}", self.code(), self.message);
        if let Some(h) = &self.hint {
            s.push_str(&format!(" — {h}"));
        }
        s
    }

    /// The code, e.g. `timed-out`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Exit status for a process that ends with this error.
    pub fn exit_code(&self) -> i32 {
        self.status.unwrap_or_else(|| self.kind.exit_code())
    }
}

/// The OS message without Rust's " (os error N)" suffix, lower-cased first letter.
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.code(), self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " — {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_gets_the_serve_hint() {
        let e = Error::io(
            "connect",
            "127.0.0.1:9",
            &io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(e.code(), "connection-refused");
        let line = e.to_string();
        assert!(
            line.starts_with("error[connection-refused]: connect 127.0.0.1:9: "),
            "{line}"
        );
        assert!(line.contains("netsh serve"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn os_error_suffix_is_dropped() {
        let e = Error::io("open", "/x", &io::Error::from_raw_os_error(2));
        assert_eq!(e.message, "open /x: no such file or directory");
    }

    #[test]
    fn json_shape() {
        let e = Error::bad_value("timeout '-1' is not a duration").with_hint("use 2.5 or 500ms");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["code"], "bad-value");
        assert_eq!(v["hint"], "use 2.5 or 500ms");
    }
}
