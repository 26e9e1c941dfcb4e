//! `help` (also `?`): the list of commands, or one command's full help —
//! both generated from [`COMMANDS`](crate::cmd::COMMANDS), never written twice.

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{COMMANDS, Command, args_of, cli, find, usage};
use crate::error::Result;
use crate::paint::Paint;
use crate::report::Report;
use crate::session::Session;

/// `help` words.
#[derive(Debug, Args)]
struct HelpArgs {
    /// Show the full help of this command
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

/// Where netsh keeps its files, as `help` says it (the rule of
/// [`crate::session::Paths::choose`]).
pub const FILES: &str =
    "Files: under --data-dir DIR or NETSH_HOME; else, run from its checkout (cargo run),
the checkout's history/ and logs/; else history and logs in $XDG_STATE_HOME/netsh (~/.local/state)
and settings in $XDG_CONFIG_HOME/netsh/netsh.conf (~/.config). 'settings' shows where.";

/// The `help` command.
pub struct Help;

impl Command for Help {
    fn name(&self) -> &'static str {
        "help"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["?"]
    }
    fn summary(&self) -> &'static str {
        "List the commands, or show one command's help"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        HelpArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, _s: &mut Session) -> Result<Report> {
        let a: HelpArgs = args_of(m)?;
        match a.command {
            None => Ok(Report::Help(HelpReport::list())),
            Some(w) => match find(&w) {
                Some(c) => Ok(Report::Help(HelpReport::command(c))),
                None => Err(super::unknown(&w)),
            },
        }
    }
}

/// One line of the command list.
#[derive(Debug, Serialize)]
pub struct CommandSummary {
    /// The command word.
    pub name: &'static str,
    /// Other words for it.
    pub aliases: &'static [&'static str],
    /// One-line usage.
    pub usage: String,
    /// What it does.
    pub summary: &'static str,
}

/// What `help` shows.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum HelpReport {
    /// Every command.
    List {
        /// The commands, in registry order.
        commands: Vec<CommandSummary>,
    },
    /// One command in full.
    Command {
        /// The command it is about.
        topic: &'static str,
        /// One-line usage.
        usage: String,
        /// Full help text (plain).
        help: String,
    },
}

impl HelpReport {
    /// The list of all commands.
    pub fn list() -> HelpReport {
        HelpReport::List {
            commands: COMMANDS
                .iter()
                .map(|c| CommandSummary {
                    name: c.name(),
                    aliases: c.aliases(),
                    usage: usage(*c),
                    summary: c.summary(),
                })
                .collect(),
        }
    }

    /// The full help of one command.
    pub fn command(c: &dyn Command) -> HelpReport {
        HelpReport::Command {
            topic: c.name(),
            usage: usage(c),
            help: cli(c).render_long_help().to_string().trim_end().to_string(),
        }
    }

    /// Text form.
    pub fn render(&self, p: &Paint) -> String {
        match self {
            HelpReport::List { commands } => {
                let mut out = p.bold("Commands:");
                for c in commands {
                    // Pad, then paint: escape codes have no width on screen.
                    out.push_str(&format!(
                        "\n  {} {}",
                        p.green(&format!("{:<10}", c.name)),
                        c.summary
                    ));
                    if !c.aliases.is_empty() {
                        out.push_str(&p.dim(&format!(" (also: {})", c.aliases.join(", "))));
                    }
                }
                out.push_str(&format!(
                    "\n\n{}",
                    p.dim("'help COMMAND' or 'COMMAND --help' for details; every command takes --json.")
                ));
                out.push_str(&format!("\n{}", p.dim(FILES)));
                out
            }
            HelpReport::Command { help, .. } => help.clone(),
        }
    }
}
