//! Colour policy: colour only when stdout is a terminal, `NO_COLOR` is unset
//! and `TERM` is not `dumb`. Renderers ask a [`Paint`] for styled text, so the
//! same code prints plain text into pipes and files.

use std::io::IsTerminal;

use owo_colors::OwoColorize;

/// Styles text when colour is on, passes it through when off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    /// Whether escape codes may be written.
    pub color: bool,
}

impl Paint {
    /// No colour at all.
    pub const PLAIN: Paint = Paint { color: false };

    /// Decide from the environment and whether stdout is a terminal.
    pub fn detect() -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Paint {
            color: std::io::stdout().is_terminal() && !no_color && !dumb,
        }
    }

    /// Headings and names.
    pub fn bold(&self, s: &str) -> String {
        if self.color {
            s.bold().to_string()
        } else {
            s.to_string()
        }
    }
    /// Good news: up, OK, match.
    pub fn green(&self, s: &str) -> String {
        if self.color {
            s.green().to_string()
        } else {
            s.to_string()
        }
    }
    /// Errors and down states.
    pub fn red(&self, s: &str) -> String {
        if self.color {
            s.red().to_string()
        } else {
            s.to_string()
        }
    }
    /// Warnings.
    pub fn yellow(&self, s: &str) -> String {
        if self.color {
            s.yellow().to_string()
        } else {
            s.to_string()
        }
    }
    /// Addresses and values.
    pub fn cyan(&self, s: &str) -> String {
        if self.color {
            s.cyan().to_string()
        } else {
            s.to_string()
        }
    }
    /// Secondary detail.
    pub fn dim(&self, s: &str) -> String {
        if self.color {
            s.dimmed().to_string()
        } else {
            s.to_string()
        }
    }
}
