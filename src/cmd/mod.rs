//! The command registry. Every command is one type implementing [`Command`]
//! and one line in [`COMMANDS`]; the shell (completion, hints, help), the
//! one-shot command line and scripts all reach commands only through here.
//!
//! Each command describes its words as a `clap::Command` (usually derived from
//! an args struct), so `--help`, validation and error wording are the same
//! whether the words came from the keyboard, from argv, or from a script.
//! [`execute`] adds the `--json` flag every command has.

pub mod chat;
pub mod echo;
pub mod exit;
pub mod help;
pub mod info;
pub mod monitor;
pub mod ping;
pub mod probe_args;
pub mod run;
pub mod serve;
pub mod set;
pub mod sntp;
pub mod tcping;
pub mod tls_args;
pub mod trace;

use clap::{Arg, ArgAction, ArgMatches};

use crate::error::{Error, ErrorKind, Result};
use crate::report::Report;
use crate::session::Session;

/// One netsh command.
pub trait Command: Sync {
    /// The word that runs it.
    fn name(&self) -> &'static str;
    /// Other words that run it (`?` for help, `quit` for exit).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// One line for `help` and hints.
    fn summary(&self) -> &'static str;
    /// Its words: arguments, flags, sub-commands, added to `c`, which
    /// [`cli`] made with the command's name.
    fn args(&self, c: clap::Command) -> clap::Command;
    /// Whether scripts get it as a function (`exit` is replaced there by
    /// the script's own `exit(code)`).
    fn in_scripts(&self) -> bool {
        true
    }
    /// Files offered first when completing its file argument, as a
    /// directory and an extension (`run` offers `scripts/*.rhai`).
    fn preferred_files(&self) -> Option<(&'static str, &'static str)> {
        None
    }
    /// Whether it exits as a Nagios plugin does: any error of its own
    /// (bad words included) is 3, UNKNOWN, not netsh's usual status.
    fn nagios(&self) -> bool {
        false
    }
    /// Run with parsed words.
    ///
    /// # Errors
    /// Any failure, as a netsh error with a hint.
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report>;
}

/// Every command, in the order `help` lists them.
pub static COMMANDS: &[&dyn Command] = &[
    &info::Info,
    &echo::Echo,
    &ping::PingCmd,
    &tcping::TcpingCmd,
    &trace::TraceCmd,
    &monitor::Monitor,
    &sntp::Sntp,
    &chat::Chat,
    &serve::Serve,
    &run::Run,
    &set::Set,
    &set::ShowSettings,
    &help::Help,
    &exit::Exit,
];

/// The command named `word` (or one of its aliases).
pub fn find(word: &str) -> Option<&'static dyn Command> {
    COMMANDS
        .iter()
        .copied()
        .find(|c| c.name() == word || c.aliases().contains(&word))
}

/// The closest command name to a mistyped `word`, if any is close.
pub fn suggest(word: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c.name()), c.name()))
        .filter(|(d, name)| *d <= 2 && *d < name.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// The full clap definition of a command, as every front end parses it.
pub fn cli(c: &dyn Command) -> clap::Command {
    c.args(clap::Command::new(c.name()))
        .bin_name(c.name())
        .about(c.summary())
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .color(clap::ColorChoice::Never)
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("Print one JSON document instead of text"),
        )
}

/// What running one line of words produced.
pub struct Outcome {
    /// `--json` was asked for (also when parsing failed, if the word was there).
    pub json: bool,
    /// The command the first word named, if it named one.
    pub command: Option<&'static str>,
    /// The report, or the error.
    pub result: Result<Report>,
}

/// Parse `argv` (command word first) and run the command.
pub fn execute(argv: &[String], s: &mut Session) -> Outcome {
    let json = argv.iter().any(|w| w == "--json");
    let Some(word) = argv.first() else {
        return Outcome {
            json,
            command: None,
            result: Err(Error::usage("no command given")),
        };
    };
    let Some(cmd) = find(word) else {
        return Outcome {
            json,
            command: None,
            result: Err(unknown(word)),
        };
    };
    let matches = match cli(cmd).try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            return Outcome {
                json,
                command: Some(cmd.name()),
                result: clap_outcome(e, cmd).map_err(|e| nagios_status(cmd, e)),
            };
        }
    };
    let json = matches.get_flag("json");
    // Progress lines are off under --json and in scripts (which set it off).
    let streaming = s.streaming;
    s.streaming = streaming && !json;
    s.stream_json = streaming && json;
    let result = cmd.run(&matches, s);
    s.streaming = streaming;
    s.stream_json = false;
    Outcome {
        json,
        command: Some(cmd.name()),
        result: result.map_err(|e| nagios_status(cmd, e)),
    }
}

/// A Nagios-style command's own errors exit 3 (UNKNOWN); Ctrl-C keeps 130.
fn nagios_status(cmd: &dyn Command, e: Error) -> Error {
    if cmd.nagios() && e.status.is_none() && e.kind != ErrorKind::Interrupted {
        e.with_status(3)
    } else {
        e
    }
}

/// `unknown command 'ifno' — did you mean 'info'?`
fn unknown(word: &str) -> Error {
    let shown = crate::proto::escape::escape_controls(word);
    let e = Error::new(
        ErrorKind::UnknownCommand,
        format!("unknown command '{shown}'"),
    );
    match suggest(word) {
        Some(s) => e.with_hint(format!("did you mean '{s}'? (type 'help' for the list)")),
        None => e,
    }
}

/// clap's "errors" that are really output (`--help`) become reports; real
/// errors become one-line usage errors.
fn clap_outcome(e: clap::Error, cmd: &dyn Command) -> Result<Report> {
    use clap::error::ErrorKind as K;
    match e.kind() {
        K::DisplayHelp | K::DisplayHelpOnMissingArgumentOrSubcommand | K::DisplayVersion => {
            Ok(Report::Help(help::HelpReport::command(cmd)))
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let msg = plain_reason(first.strip_prefix("error: ").unwrap_or(first));
            let mut tip = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("tip: "))
                .filter(|t| t.contains("similar"))
                .map(|t| format!("{t}; "))
                .unwrap_or_default();
            if e.kind() == K::InvalidSubcommand && tip.is_empty() {
                // `set colour on`: say what there is.
                let words: Vec<String> = cli(cmd)
                    .get_subcommands()
                    .map(|c| c.get_name().to_string())
                    .collect();
                tip = format!("one of: {}; ", words.join(", "));
            }
            let kind = match e.kind() {
                K::InvalidValue | K::ValueValidation => ErrorKind::BadValue,
                _ => ErrorKind::Usage,
            };
            Err(
                Error::new(kind, format!("{}: {msg}", cmd.name())).with_hint(format!(
                    "{tip}usage: {} (more: help {})",
                    usage(cmd),
                    cmd.name()
                )),
            )
        }
    }
}

/// clap's message with Rust's parse errors said for people: `invalid
/// digit found in string` is a value that is not a whole number.
fn plain_reason(msg: &str) -> String {
    msg.replace(": invalid digit found in string", ": not a whole number")
        .replace(
            ": number too large to fit in target type",
            ": a number too large",
        )
        .replace(": cannot parse integer from empty string", ": empty")
        .replace(": invalid float literal", ": not a number (write e.g. 2.5)")
}

/// The one-line usage of a command, without the `Usage:` label.
pub fn usage(cmd: &dyn Command) -> String {
    // Commands with subcommands have one usage line each: keep one line.
    let u = cli(cmd).render_usage().to_string();
    u.strip_prefix("Usage: ")
        .unwrap_or(&u)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Fetch an argument struct from matches.
///
/// # Errors
/// A usage error if the matches do not fit the struct (a programming error
/// that tests catch, not user input).
pub fn args_of<A: clap::FromArgMatches>(m: &ArgMatches) -> Result<A> {
    A::from_arg_matches(m).map_err(|e| Error::usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_definitions_valid() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            cli(*c).debug_assert();
            for n in std::iter::once(c.name()).chain(c.aliases().iter().copied()) {
                assert!(seen.insert(n), "duplicate command word {n}");
            }
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("ifno"), Some("info"));
        assert_eq!(suggest("hlep"), Some("help"));
        assert_eq!(suggest("zzzzzz"), None);
        let e = unknown("ifno");
        assert_eq!(
            e.to_string(),
            "error[unknown-command]: unknown command 'ifno' — did you mean 'info'? (type 'help' for the list)"
        );
    }
}
