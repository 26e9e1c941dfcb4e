//! `exit` / `quit`: leave the shell (Ctrl-D does the same). Outside the shell
//! it does nothing, so a piped session may end with it.

use clap::ArgMatches;

use crate::cmd::Command;
use crate::error::Result;
use crate::report::Report;
use crate::session::Session;

/// The `exit` command.
pub struct Exit;

impl Command for Exit {
    fn name(&self) -> &'static str {
        "exit"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["quit"]
    }
    fn summary(&self) -> &'static str {
        "Leave the shell (or press Ctrl-D)"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        c
    }
    fn in_scripts(&self) -> bool {
        false // scripts have exit(code)
    }
    fn run(&self, _m: &ArgMatches, _s: &mut Session) -> Result<Report> {
        Ok(Report::Exit)
    }
}
