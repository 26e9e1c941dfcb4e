//! `set KEY [VALUE]` and `settings`: change and show the session's settings.
//! The sub-words are generated from [`Key::ALL`], so completion, help and the
//! settings file never list a key twice. `set` also saves the value in the
//! settings file; `set KEY default` restores the built-in value.

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Arg, ArgMatches};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cmd::Command;
use crate::error::{Error, ErrorKind, Result};
use crate::paint::Paint;
use crate::report::Report;
use crate::session::{Frontend, Session};
use crate::settings::{Key, Source};

/// The `set` command.
pub struct Set;

impl Command for Set {
    fn name(&self) -> &'static str {
        "set"
    }
    fn summary(&self) -> &'static str {
        "Change a setting (saved for next time): set timeout 2.5, set server HOST[:PORT]"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        let mut c = c.subcommand_value_name("KEY");
        for k in Key::ALL {
            let mut value = Arg::new("value")
                .value_name(k.value_name())
                .help("New value; 'default' restores the built-in one; omit to show the current value")
                .allow_negative_numbers(true);
            if k.def().switch {
                value = value
                    .value_parser(PossibleValuesParser::new([
                        PossibleValue::new("on").aliases(["true", "yes", "1"]),
                        PossibleValue::new("off").aliases(["false", "no", "0"]),
                        PossibleValue::new("default"),
                    ]))
                    .ignore_case(true);
            }
            c = c.subcommand(clap::Command::new(k.name()).about(k.about()).arg(value));
        }
        c
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let Some((name, sub)) = m.subcommand() else {
            return Ok(Report::Settings(SettingsReport::of(s)));
        };
        let key = Key::from_name(name)
            .ok_or_else(|| Error::usage(format!("set: unknown setting '{name}'")))?;
        let previous = s.settings.get(key);
        let Some(raw) = sub.get_one::<String>("value") else {
            return Ok(Report::Set(SetReport::new(s, key, previous, false, None)));
        };
        s.settings.apply(key, raw, Source::Set)?;
        if s.frontend == Frontend::Script {
            // A script's settings are its own: the user's saved ones stay.
            let note = Some("for this script only; not saved".to_string());
            return Ok(Report::Set(SetReport::new(s, key, previous, true, note)));
        }
        let stored = (!raw.trim().eq_ignore_ascii_case("default")).then(|| s.settings.get(key));
        if let Err(e) = s.settings_file.store(key, stored) {
            return Err(Error::new(
                ErrorKind::Settings,
                format!(
                    "{} = {} applied for this session but not saved: {}",
                    key.name(),
                    s.settings.get(key),
                    e.message
                ),
            )
            .with_hint("check that the data directory is writable (--data-dir, NETSH_HOME)"));
        }
        let note = std::env::var_os(key.env_var()).map(|_| {
            format!(
                "{} is set in the environment and will override this at the next start",
                key.env_var()
            )
        });
        Ok(Report::Set(SetReport::new(s, key, previous, true, note)))
    }
}

/// The `settings` command: every value and where it came from.
pub struct ShowSettings;

impl Command for ShowSettings {
    fn name(&self) -> &'static str {
        "settings"
    }
    fn summary(&self) -> &'static str {
        "Show every setting, its value and where it came from"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        c
    }
    fn run(&self, _m: &ArgMatches, s: &mut Session) -> Result<Report> {
        Ok(Report::Settings(SettingsReport::of(s)))
    }
}

/// Result of `set KEY [VALUE]`.
#[derive(Debug, Serialize)]
pub struct SetReport {
    /// The setting.
    pub key: &'static str,
    /// Its value now (number, boolean, string or null as in `settings --json`).
    pub value: Value,
    /// Its value now, as text.
    pub text: String,
    /// Its value before, as text.
    pub previous: String,
    /// Where the value now comes from.
    pub source: Source,
    /// Whether this call changed it (and saved it).
    pub changed: bool,
    /// A remark, e.g. an environment variable that will override it.
    pub note: Option<String>,
}

impl SetReport {
    fn new(s: &Session, key: Key, previous: String, changed: bool, note: Option<String>) -> Self {
        SetReport {
            key: key.name(),
            value: s.settings.json_value(key),
            text: s.settings.get(key),
            previous,
            source: s.settings.source(key),
            changed,
            note,
        }
    }

    /// Text form.
    pub fn render(&self, p: &Paint) -> String {
        let mut out = format!("{} = {}", p.bold(self.key), p.cyan(&self.text));
        if self.changed && self.note.as_deref() == Some("for this script only; not saved") {
            out.push_str(&p.dim(&format!("  (was {}; this script only)", self.previous)));
            return out;
        }
        if self.changed {
            if self.previous != self.text {
                out.push_str(&p.dim(&format!("  (was {}; saved)", self.previous)));
            } else {
                out.push_str(&p.dim("  (unchanged; saved)"));
            }
        } else {
            out.push_str(&p.dim(&format!("  ({})", self.source.as_str())));
        }
        if let Some(n) = &self.note {
            out.push_str(&format!("\n{} {n}", p.yellow("note:")));
        }
        out
    }
}

/// Every setting: `{"timeout": 3.0, "server": "…", …, "sources": {…}, "file": "…"}`.
#[derive(Debug, Serialize)]
pub struct SettingsReport {
    /// Key → value, typed as in [`crate::settings::Settings::json_value`].
    #[serde(flatten)]
    pub values: Map<String, Value>,
    /// Key → where the value came from.
    pub sources: Map<String, Value>,
    /// The settings file.
    pub file: String,
    /// The shell's history file.
    pub history: String,
    /// The directory of the error, server and chat logs.
    pub logs: String,
    /// Which rule chose where the files are: `flag` (--data-dir), `env`
    /// (NETSH_HOME), `checkout`, `xdg`, `current-dir`.
    pub files_from: crate::session::PathRule,
    #[serde(skip)]
    rows: Vec<(Key, String, Source)>,
}

impl SettingsReport {
    /// The session's settings now.
    pub fn of(s: &Session) -> SettingsReport {
        let mut values = Map::new();
        let mut sources = Map::new();
        let mut rows = Vec::new();
        for k in Key::ALL {
            values.insert(k.name().into(), s.settings.json_value(k));
            sources.insert(k.name().into(), Value::from(s.settings.source(k).as_str()));
            rows.push((k, s.settings.get(k), s.settings.source(k)));
        }
        SettingsReport {
            values,
            sources,
            file: s.settings_file.path().display().to_string(),
            history: s.paths.history_file().display().to_string(),
            logs: s.paths.logs_dir.display().to_string(),
            files_from: s.paths.rule,
            rows,
        }
    }

    /// Text form: a table.
    pub fn render(&self, p: &Paint) -> String {
        let mut out = p.bold(&format!(
            "{:<12} {:<22} {:<8} {}",
            "SETTING", "VALUE", "SOURCE", "MEANING"
        ));
        for (k, v, src) in &self.rows {
            let src = match src {
                Source::Default => p.dim(&format!("{:<8}", src.as_str())),
                _ => p.yellow(&format!("{:<8}", src.as_str())),
            };
            out.push_str(&format!(
                "\n{:<12} {} {src} {}",
                k.name(),
                p.cyan(&format!("{v:<22}")),
                p.dim(k.about())
            ));
        }
        out.push_str(&p.dim(&format!(
            "\nsettings file: {}\nhistory:       {}\nlogs:          {}\n(where: {})",
            self.file,
            self.history,
            self.logs,
            self.files_from.text()
        )));
        out
    }
}
