//! Reports: what a command returns. One value, three renderings: text for
//! people ([`Report::render`]), `--json` ([`Report::to_json`]), and a rhai map
//! (from the same serde form).

use serde::Serialize;

use crate::cmd;
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

    /// One JSON document, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Serialising plain data structs cannot fail; keep the contract anyway.
            format!(r#"{{"error":{{"code":"internal","message":"{e}","hint":null}}}}"#)
        })
    }
}
