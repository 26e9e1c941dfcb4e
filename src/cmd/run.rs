//! `run FILE.rhai [ARGS…]`: run a rhai script whose functions are netsh's
//! commands (see [`crate::script`]). The script's arguments arrive as `args`.
//!
//! A file that is not a script (`run /etc/shadow`) gets one line that says
//! so and quotes nothing of it: not UTF-8, or binary (NUL or other control
//! bytes a script never has), or, for a file not named `*.rhai`, one that
//! does not parse. Errors quote a script's lines only for `*.rhai` files
//! and `/dev/stdin` (text the user pipes in); see [`quotes_source`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, ValueHint};
use serde::Serialize;

use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::paint::Paint;
use crate::report::Report;
use crate::script::{self, Limits};
use crate::session::{Frontend, Session};
use crate::units;

/// Largest script file read.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// `run` words (the limits are shared with `netsh -e`).
#[derive(Debug, Args)]
struct RunArgs {
    /// The script
    #[arg(value_name = "FILE.rhai", value_hint = ValueHint::FilePath)]
    file: PathBuf,
    /// Arguments for the script, as the array `args`
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Sandbox limits as flags.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Stop the script after this long: 30s, 5m
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub script_timeout: Duration,
    /// Stop the script after this many rhai operations
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_operations)]
    pub max_operations: u64,
    /// Deepest nesting of function calls
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_call_depth: u16,
    /// Largest string, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_string_size)]
    pub max_string_size: usize,
    /// Largest array, in items
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_array_size)]
    pub max_array_size: usize,
    /// Largest map, in entries
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_map_size)]
    pub max_map_size: usize,
    /// Most the process's memory may grow while the script runs: 512MiB, 2GiB
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = parse_memory)]
    pub max_memory: u64,
}

impl LimitArgs {
    /// The sandbox bounds these flags give.
    pub fn limits(&self) -> Limits {
        Limits {
            max_operations: self.max_operations,
            max_call_depth: usize::from(self.max_call_depth),
            max_string_size: self.max_string_size,
            max_array_size: self.max_array_size,
            max_map_size: self.max_map_size,
            max_memory: self.max_memory,
            timeout: self.script_timeout,
        }
    }
}

fn parse_memory(s: &str) -> std::result::Result<u64, String> {
    match units::parse_bytes(s)? {
        n if n >= 1 << 20 => Ok(n),
        _ => Err(format!(
            "'{}' is under 1MiB, too little to run a script",
            s.escape_debug()
        )),
    }
}

fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(86_400))
}

/// The `run` command.
pub struct Run;

impl Command for Run {
    fn name(&self) -> &'static str {
        "run"
    }
    fn summary(&self) -> &'static str {
        "Run a rhai script whose functions are these commands (scripts/diagnose.rhai, …)"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        RunArgs::augment_args(c)
    }
    fn preferred_files(&self) -> Option<(&'static str, &'static str)> {
        Some(("scripts", "rhai"))
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: RunArgs = args_of(m)?;
        if s.frontend == Frontend::Script {
            return Err(Error::usage("run: a script cannot run another script")
                .with_hint("call its functions directly"));
        }
        let source = read_script(&a.file)?;
        let name = a.file.display().to_string();
        let quote = quotes_source(&a.file);
        let code = script::run(&name, &source, quote, &a.args, s, a.limits.limits())?;
        Ok(Report::Run(RunReport {
            script: name,
            exit_code: code,
        }))
    }
}

/// Whether errors about `path` may quote its lines: a file named `*.rhai`
/// is meant as a script, and `/dev/stdin` holds what the user piped in;
/// any other file may be something else (a password file, a key) whose
/// text must not end up on a screen or in `logs/errors.log`.
pub fn quotes_source(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("rhai"))
        || path == std::path::Path::new("/dev/stdin")
}

/// The hint for a file that is not a script.
const NOT_A_SCRIPT_HINT: &str = "'run' takes a rhai script (scripts/*.rhai)";

/// Read a script file, bounded in size, as UTF-8 text.
///
/// # Errors
/// `io` naming the path; `bad-value` for a file too large; `script` for
/// one that is not text (not UTF-8, or with NUL or other control bytes
/// besides tab, newline, carriage return and form feed), in a message that
/// quotes nothing of the file.
pub fn read_script(path: &std::path::Path) -> Result<String> {
    let bytes = crate::files::read_capped(path, MAX_SCRIPT_BYTES).map_err(|e| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            Error::bad_value(format!(
                "{} is over 1 MiB; scripts are at most 1 MiB",
                path.display()
            ))
        } else if e.kind() == std::io::ErrorKind::NotFound {
            let shipped = crate::files::preferred_files("scripts", "rhai", "scripts/");
            let hint = if shipped.is_empty() {
                "check the path (relative to the current directory)".to_string()
            } else {
                format!("check the path; scripts here: {}", shipped.join(", "))
            };
            Error::io("read script", path.display(), &e).with_hint(hint)
        } else {
            Error::io("read script", path.display(), &e)
        }
    })?;
    let not_a_script = |why: String| {
        Error::new(
            ErrorKind::Script,
            format!("{} is not a rhai script ({why})", path.display()),
        )
        .with_hint(NOT_A_SCRIPT_HINT)
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        not_a_script(format!(
            "not UTF-8 text: bad byte at offset {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if let Some(at) = text
        .bytes()
        .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c)) || b == 0x7f)
    {
        return Err(not_a_script(format!("binary data at offset {at}")));
    }
    Ok(text)
}

/// What `run` reports.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The script.
    pub script: String,
    /// The status it asked for with `exit(code)`, else 0.
    pub exit_code: i32,
}

impl RunReport {
    /// Text form: nothing when all went well (the script printed what it wanted).
    pub fn render(&self, p: &Paint) -> String {
        if self.exit_code == 0 {
            String::new()
        } else {
            p.yellow(&format!(
                "{} exited with status {}",
                self.script, self.exit_code
            ))
        }
    }
}
