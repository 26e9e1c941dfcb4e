//! `netsh`: picks the front end from argv and the terminal, and maps the
//! outcome to an exit status.
//!
//! - `netsh CMD ARGS…` runs one command (`netsh info --json`);
//! - `netsh` with a terminal on stdin and stdout starts the interactive shell;
//! - `netsh` with piped stdin runs each line as a command: no prompt, no
//!   escape codes, no history (rustyline would write its escape codes into a
//!   redirected stdout, so netsh chooses the mode itself).
//!
//! Exit status: 0 success; 1 a command failed; 2 usage error (bad words,
//! unknown command, bad value); 3 echoed data did not match; 130 interrupted.
//! A closed stdout (`netsh info | head -1`) ends quietly with 0.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;

use netsh::cmd::COMMANDS;
use netsh::error::{Error, ErrorKind};
use netsh::paint::Paint;
use netsh::session::{Paths, Session};
use netsh::settings::{Key, Source};
use netsh::shell;

/// netsh — a network-diagnostics shell
#[derive(Debug, Parser)]
#[command(name = "netsh", version, about, disable_help_subcommand = true)]
struct Cli {
    /// Directory for history/, logs/ and netsh.conf [default: the checkout
    /// under cargo run, else $XDG_STATE_HOME/netsh and $XDG_CONFIG_HOME/netsh]
    #[arg(long, value_name = "DIR", env = "NETSH_HOME")]
    data_dir: Option<PathBuf>,

    /// Override a setting for this run only, e.g. -o timeout=500ms (repeatable)
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,

    /// Run rhai CODE (the same functions as 'run FILE.rhai'), e.g. -e 'print(info().hostname)'
    #[arg(
        short = 'e',
        long = "eval",
        value_name = "CODE",
        conflicts_with = "command"
    )]
    eval: Option<String>,

    #[command(flatten, next_help_heading = "Script limits (for -e)")]
    limits: netsh::cmd::run::LimitArgs,

    /// A command and its arguments; without one, netsh reads commands from the
    /// terminal (interactive shell) or from piped standard input
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

fn commands_help() -> String {
    let mut s = String::from("Commands:\n");
    for c in COMMANDS {
        s.push_str(&format!("  {:<10} {}\n", c.name(), c.summary()));
    }
    s.push_str("\n'netsh COMMAND --help' for one command. Every command takes --json.\n");
    s.push_str("Exit status: 0 ok, 1 failed, 2 usage error, 3 data mismatch, 130 interrupted.");
    s.push('\n');
    s.push_str(netsh::cmd::help::FILES);
    s
}

/// netsh's own flags failed to parse: help and version print as clap has
/// them; anything else is one `error[…]` line (or a JSON error document with
/// `--json` anywhere on the line), status 2.
fn top_level_clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if !e.use_stderr() {
        let _ = e.print(); // --help, --version
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("bad arguments");
    let msg = first.strip_prefix("error: ").unwrap_or(first);
    let kind = match e.kind() {
        K::InvalidValue | K::ValueValidation | K::InvalidUtf8 => ErrorKind::BadValue,
        _ => ErrorKind::Usage,
    };
    let err = Error::new(kind, format!("netsh: {msg}"))
        .with_hint("usage: netsh [OPTIONS] [COMMAND]... (more: netsh --help)");
    if std::env::args_os().any(|a| a == "--json") {
        let doc = netsh::report::error_document(None, &err);
        let _ = writeln!(io::stdout(), "{}", netsh::report::pretty(&doc));
    } else {
        let line = netsh::proto::escape::escape_controls(&err.to_string()).into_owned();
        let _ = writeln!(io::stderr(), "{line}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => fatal(&e),
    }
}

/// What stops netsh itself (not a command): a handler it cannot install, a
/// stdout it cannot write. One line, as every error; a closed pipe is a
/// normal way to stop reading.
fn fatal(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<io::Error>()
        .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    {
        return ExitCode::SUCCESS;
    }
    let line = netsh::proto::escape::escape_controls(&format!("{e:#}")).into_owned();
    let _ = writeln!(io::stderr(), "error[io]: {line}");
    ExitCode::from(1)
}

/// Parse argv, pick the front end, run it.
///
/// # Errors
/// Only what stops netsh itself ([`fatal`]); a command's failure is its
/// exit status.
fn run() -> anyhow::Result<ExitCode> {
    let matches = match <Cli as clap::CommandFactory>::command()
        .after_help(commands_help())
        .try_get_matches()
    {
        Ok(m) => m,
        Err(e) => return Ok(top_level_clap_error(&e)),
    };
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return Ok(top_level_clap_error(&e)),
    };
    let dir_from_env =
        matches.value_source("data_dir") == Some(clap::parser::ValueSource::EnvVariable);
    let interactive = cli.command.is_empty() && cli.eval.is_none() && io::stdin().is_terminal();

    // Ctrl-C while a command runs sets the flag; commands that loop poll it and
    // stop early. Outside the interactive shell a second Ctrl-C ends netsh
    // (status 130) in case a command cannot stop by itself. In the shell Ctrl-C
    // never ends netsh: at the prompt rustyline reads it as a key.
    let interrupt = Arc::new(AtomicBool::new(false));
    let shell_mode = interactive && io::stdout().is_terminal();
    if !shell_mode {
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGINT,
            130,
            Arc::clone(&interrupt),
        )
        .context("install the second-Ctrl-C handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupt))
        .context("install the Ctrl-C handler")?;

    let paths = Paths::choose(cli.data_dir.as_deref(), dir_from_env);
    let (mut session, mut warnings) = Session::with_paths(paths, Paint::detect(), interrupt);
    // Ctrl-\ (SIGQUIT) while a probe loop runs prints its statistics so far.
    let _ =
        signal_hook::flag::register(signal_hook::consts::SIGQUIT, Arc::clone(&session.progress));
    for o in &cli.options {
        let applied = match o.split_once('=') {
            Some((k, v)) => match Key::from_name(k) {
                Some(key) => session.settings.apply(key, v, Source::Flag),
                None => Err(
                    Error::usage(format!("-o {o}: unknown setting '{}'", k.trim()))
                        .with_hint("'netsh settings' lists them"),
                ),
            },
            None => Err(Error::usage(format!("-o {o}: expected KEY=VALUE"))),
        };
        if let Err(e) = applied {
            if cli.command.iter().any(|w| w == "--json") {
                let command = cli
                    .command
                    .first()
                    .and_then(|w| netsh::cmd::find(w))
                    .map(|c| c.name());
                let text = netsh::report::pretty(&netsh::report::error_document(command, &e));
                let _ = writeln!(io::stdout(), "{text}");
                let _ = session.log_error(&format!("-o {o}"), &e);
            } else {
                shell::report_error(&mut session, &format!("-o {o}"), &e);
            }
            return Ok(ExitCode::from(2));
        }
    }
    // The terminal is the front end's: commands get it through the session.
    let stdin_tty = io::stdin().is_terminal();
    session.terminal = if cli.command.is_empty() && cli.eval.is_none() {
        if shell_mode {
            Box::new(shell::term::Tty::new(true))
        } else {
            Box::new(shell::term::Commands)
        }
    } else if stdin_tty {
        Box::new(shell::term::Tty::new(io::stdout().is_terminal()))
    } else {
        Box::new(shell::term::Piped)
    };
    shell::report_warnings(&mut session, &warnings);
    warnings.clear();

    let code = if let Some(code) = &cli.eval {
        match netsh::script::run("-e", code, true, &[], &mut session, cli.limits.limits()) {
            Ok(c) => c,
            Err(e) => {
                shell::report_error(&mut session, "-e", &e);
                e.exit_code()
            }
        }
    } else if !cli.command.is_empty() {
        shell::run_words(&cli.command, &mut session)
            .context("write stdout")?
            .code
    } else if shell_mode {
        shell::interactive(&mut session)
    } else {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        // stdin is a terminal but stdout is not: plain mode, prompt on stderr.
        let prompt = interactive.then(|| format!("netsh {}> ", session.settings.server));
        shell::batch(&mut input, &mut session, prompt.as_deref())
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
