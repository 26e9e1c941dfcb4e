//! Reports: what a command returns. One value, three renderings: text for
//! people ([`Report::render`]), `--json` ([`Report::to_json`]), and a rhai map
//! (from the same serde form).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cmd;
use crate::error::Error;
use crate::host::HostInfo;
use crate::paint::Paint;

/// The result of one command.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    /// `info`.
    Info(HostInfo),
    /// `settings`, or `set` with no arguments.
    Settings(cmd::set::SettingsReport),
    /// `set KEY VALUE`.
    Set(cmd::set::SetReport),
    /// `help`, `help CMD`, `CMD --help`.
    Help(cmd::help::HelpReport),
    /// `echo`.
    Echo(cmd::echo::EchoReport),
    /// `ping`.
    Ping(cmd::ping::PingReport),
    /// `tcping`.
    Tcping(cmd::tcping::TcpingReport),
    /// `trace`.
    Trace(cmd::trace::TraceReport),
    /// `sntp`.
    Sntp(cmd::sntp::SntpReport),
    /// `chat`.
    Chat(cmd::chat::ChatReport),
    /// `run FILE.rhai`.
    Run(cmd::run::RunReport),
    /// `serve`, `serve status`, `serve stop`.
    Serve(cmd::serve::ServeReport),
    /// `monitor`.
    Monitor(cmd::monitor::MonitorReport),
    /// `exit`: the shell leaves after printing nothing.
    Exit,
}

impl Report {
    /// Text for people; colour only if `p` says so. Ends without a newline.
    pub fn render(&self, p: &Paint) -> String {
        match self {
            Report::Info(r) => cmd::info::render(r, p),
            Report::Settings(r) => r.render(p),
            Report::Set(r) => r.render(p),
            Report::Help(r) => r.render(p),
            Report::Serve(r) => r.render(p),
            Report::Echo(r) => r.render(p),
            Report::Ping(r) => r.render(p),
            Report::Tcping(r) => r.render(p),
            Report::Trace(r) => r.render(p),
            Report::Sntp(r) => r.render(p),
            Report::Run(r) => r.render(p),
            Report::Chat(r) => r.render(p),
            Report::Monitor(r) => r.render(p),
            Report::Exit => String::new(),
        }
    }

    /// A failure the report still carries (data mismatch, nothing echoed):
    /// the front end prints the report, then this error, and exits with its
    /// status.
    pub fn failure(&self) -> Option<crate::error::Error> {
        match self {
            Report::Echo(r) => r.failure(),
            Report::Ping(r) => r.failure(),
            Report::Tcping(r) => r.failure(),
            Report::Monitor(r) => r.failure(),
            _ => None,
        }
    }

    /// The exit status the report asks for when it is not an error (a
    /// script's `exit(code)`).
    pub fn exit_status(&self) -> i32 {
        match self {
            Report::Run(r) => r.exit_code,
            _ => 0,
        }
    }

    /// The JSON document of this report from `command`: `schema` and
    /// `command` first, then the report's fields, floats rounded (see
    /// [`document`]).
    ///
    /// `command` is the command whose report this is: `echo --help` gives
    /// help's document (about echo), `set` alone the settings'. Reports that
    /// can fail while still reporting (echo, ping, tcping) carry `failure`:
    /// the error the exit status stands for, or `null`.
    pub fn to_value(&self, command: &str) -> Value {
        let command = match self {
            Report::Help(_) => "help",
            Report::Settings(_) => "settings",
            _ => command,
        };
        let mut fields = serde_json::to_value(self).unwrap_or(Value::Null);
        if let (
            Report::Echo(_) | Report::Ping(_) | Report::Tcping(_) | Report::Monitor(_),
            Value::Object(m),
        ) = (self, &mut fields)
        {
            let failure = self.failure().map_or(Value::Null, |e| {
                serde_json::to_value(e).unwrap_or(Value::Null)
            });
            m.insert("failure".into(), failure);
        }
        document(command, fields)
    }

    /// One JSON document, pretty-printed; on one line for a command
    /// that streams NDJSON records (`monitor`), whose last line it is.
    pub fn to_json(&self, command: &str) -> String {
        let v = self.to_value(command);
        match self {
            Report::Monitor(_) => serde_json::to_string(&v).unwrap_or_else(|_| pretty(&v)),
            _ => pretty(&v),
        }
    }
}

/// The version of netsh's JSON (`docs/protocol.md`, `docs/netsh.schema.json`).
pub const SCHEMA: &str = "netsh/1";

/// Every JSON document netsh prints (and every rhai map): `{"schema":
/// "netsh/1", "command": …, <fields>}`, with each float rounded to what it
/// can mean: fields in ms to the nanosecond (6 decimals), in s to the
/// nanosecond (9), percentages to 4 decimals, anything else to 12
/// significant digits, so `0.06684999999999999` prints as `0.06685`.
pub fn document(command: &str, fields: Value) -> Value {
    let mut doc = Map::new();
    doc.insert("schema".into(), Value::from(SCHEMA));
    doc.insert("command".into(), Value::from(command));
    match fields {
        Value::Object(m) => doc.extend(m),
        Value::Null => {}
        other => {
            doc.insert("value".into(), other);
        }
    }
    let mut v = Value::Object(doc);
    round_floats(&mut v, "");
    v
}

/// The JSON document of an error from `command` (none when the first word
/// was not a command).
pub fn error_document(command: Option<&str>, e: &Error) -> Value {
    let mut doc = Map::new();
    doc.insert("schema".into(), Value::from(SCHEMA));
    doc.insert("command".into(), command.map_or(Value::Null, Value::from));
    doc.insert(
        "error".into(),
        serde_json::to_value(e).unwrap_or(Value::Null),
    );
    Value::Object(doc)
}

/// Pretty-printed, as `--json` prints.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| {
        // Serialising a Value cannot fail; keep the contract anyway.
        format!(r#"{{"schema":"{SCHEMA}","command":null,"error":{{"code":"internal","message":"{e}","hint":null}}}}"#)
    })
}

fn round_floats(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                round_floats(x, k);
            }
        }
        Value::Array(a) => {
            for x in a {
                round_floats(x, key);
            }
        }
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                let r = if key.ends_with("_ms") {
                    round_to(f, 6)
                } else if key.ends_with("_s") {
                    round_to(f, 9)
                } else if key.ends_with("_pct") {
                    round_to(f, 4)
                } else {
                    significant(f, 12)
                };
                if let Some(n) = serde_json::Number::from_f64(r) {
                    *v = Value::Number(n);
                }
            }
        }
        _ => {}
    }
}

fn round_to(f: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    let r = (f * m).round() / m;
    if r.is_finite() { r } else { f }
}

fn significant(f: f64, digits: i32) -> f64 {
    if f == 0.0 || !f.is_finite() {
        return f;
    }
    let mag = f.abs().log10().floor() as i32;
    round_to(f, (digits - 1 - mag).clamp(0, 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_start_with_schema_and_command_and_round_their_floats() {
        let v = document(
            "x",
            serde_json::json!({"rtt_ms": 0.06684999999999999, "offset_s": -4.000000001e-6,
                               "loss_pct": 33.33333333333333, "ratio": 0.1 + 0.2,
                               "nested": {"p50_ms": 1.0000004}, "list": [{"a_ms": 2.0000000001}]}),
        );
        let text = serde_json::to_string(&v).unwrap();
        assert!(
            text.starts_with(r#"{"schema":"netsh/1","command":"x","#),
            "{text}"
        );
        assert!(text.contains(r#""rtt_ms":0.06685"#), "{text}");
        // Small values print as serde_json prints them (-4e-6): still the
        // rounded number.
        assert_eq!(v["offset_s"].as_f64(), Some(-0.000004), "{text}");
        assert!(text.contains(r#""loss_pct":33.3333"#), "{text}");
        assert!(text.contains(r#""ratio":0.3"#), "{text}");
        assert!(text.contains(r#""p50_ms":1.0"#), "{text}");
        assert!(text.contains(r#""a_ms":2.0"#), "{text}");
        let e = error_document(None, &Error::usage("no"));
        assert_eq!(e["command"], Value::Null);
        assert_eq!(e["error"]["code"], "usage");
    }
}
