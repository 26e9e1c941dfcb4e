//! The rustyline helper: Tab completion, usage hints and highlighting, all
//! derived from the clap definitions in [`COMMANDS`](crate::cmd::COMMANDS),
//! so a new command gets them with no edits here.

use std::borrow::Cow;

use clap::ValueHint;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::{Context, Helper, Validator};

use crate::cmd::{self, COMMANDS};
use crate::paint::Paint;

/// What completion offers at the cursor.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    /// Byte offset where the word being completed starts.
    pub start: usize,
    /// Whole-word candidates.
    pub words: Vec<String>,
    /// Whether file names fit here too.
    pub files: bool,
    /// Files offered first, as a directory and an extension (the command's
    /// [`preferred_files`](crate::cmd::Command::preferred_files)).
    pub preferred: Option<(&'static str, &'static str)>,
}

/// Completion for `line` (the text before the cursor). Pure: tested without a terminal.
pub fn complete(line: &str) -> Completion {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at_word_end = !line.is_empty() && !line.ends_with(char::is_whitespace);
    let (prefix, done) = match (at_word_end, words.split_last()) {
        (true, Some((last, rest))) => (*last, rest),
        _ => ("", &words[..]),
    };
    let start = line.len() - prefix.len();
    let mut c = Completion {
        start,
        words: Vec::new(),
        files: false,
        preferred: None,
    };
    let Some((first, args)) = done.split_first() else {
        let mut names: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c.name()).chain(c.aliases().iter().copied()))
            .filter(|n| n.starts_with(prefix) && *n != "?")
            .collect();
        names.sort_unstable();
        c.words = names.into_iter().map(String::from).collect();
        return c;
    };
    let Some(command) = cmd::find(first) else {
        return c;
    };
    c.preferred = command.preferred_files();
    let mut clap_cmd = cmd::cli(command);
    // Walk into sub-commands (`set timeout`), counting positionals after the last one.
    let mut positional = 0;
    let mut pending_flag: Option<clap::Arg> = None;
    for w in args {
        if let Some(flag) = pending_flag.take()
            && !w.starts_with('-')
        {
            let _ = flag;
            continue;
        }
        if let Some(sub) = clap_cmd.find_subcommand(w).cloned() {
            clap_cmd = sub;
            positional = 0;
        } else if let Some(long) = w.strip_prefix("--") {
            pending_flag = clap_cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long) && takes_value(a))
                .cloned();
        } else if let Some(short) = w.strip_prefix('-').and_then(|s| s.chars().next()) {
            pending_flag = clap_cmd
                .get_arguments()
                .find(|a| a.get_short() == Some(short) && takes_value(a))
                .cloned();
        } else {
            positional += 1;
        }
    }
    let offer = |c: &mut Completion, arg: &clap::Arg| {
        c.words.extend(
            arg.get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .filter(|v| v.starts_with(prefix)),
        );
        c.files |= matches!(
            arg.get_value_hint(),
            ValueHint::FilePath | ValueHint::AnyPath | ValueHint::DirPath
        );
    };
    if prefix.starts_with('-') {
        let mut flags: Vec<String> = clap_cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .chain(["--help".to_string(), "--json".to_string()])
            .filter(|f| f.starts_with(prefix))
            .collect();
        flags.sort();
        flags.dedup();
        c.words = flags;
    } else if let Some(flag) = pending_flag {
        offer(&mut c, &flag);
    } else {
        if positional == 0 {
            c.words.extend(
                clap_cmd
                    .get_subcommands()
                    .map(|s| s.get_name().to_string())
                    .filter(|n| n.starts_with(prefix)),
            );
        }
        if let Some(arg) = clap_cmd.get_positionals().nth(positional) {
            offer(&mut c, arg);
        }
    }
    c
}

fn takes_value(a: &clap::Arg) -> bool {
    a.get_num_args().is_some_and(|n| n.takes_values())
        || matches!(
            a.get_action(),
            clap::ArgAction::Set | clap::ArgAction::Append
        )
}

/// The hint shown after the cursor: the rest of a command name, then what the
/// command expects next.
pub fn hint(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let ends_space = line.ends_with(char::is_whitespace);
    match (words.as_slice(), ends_space) {
        ([w], false) => {
            let mut m = COMMANDS.iter().filter(|c| c.name().starts_with(w));
            match (m.next(), m.next()) {
                (Some(c), None) if c.name() != *w => Some(c.name()[w.len()..].to_string()),
                _ => None,
            }
        }
        ([w], true) => {
            let c = cmd::find(w)?;
            let clap_cmd = cmd::cli(c);
            if clap_cmd.has_subcommands() {
                let subs: Vec<&str> = clap_cmd.get_subcommands().map(|s| s.get_name()).collect();
                return Some(subs.join("|"));
            }
            let u = cmd::usage(c);
            let rest = u.strip_prefix(c.name()).unwrap_or(&u).trim().to_string();
            (!rest.is_empty()).then_some(rest)
        }
        ([w, sub], true) => {
            let clap_cmd = cmd::cli(cmd::find(w)?);
            let s = clap_cmd.find_subcommand(sub)?;
            let arg = s.get_positionals().next()?;
            let name = arg.get_value_names()?.first()?.to_string();
            Some(format!(
                "{name}  — {}",
                s.get_about().map(|a| a.to_string()).unwrap_or_default()
            ))
        }
        _ => None,
    }
}

/// The rustyline helper of the interactive shell.
#[derive(Helper, Validator)]
pub struct ShellHelper {
    paint: Paint,
    files: FilenameCompleter,
}

impl ShellHelper {
    /// A helper that colours only when `paint` allows.
    pub fn new(paint: Paint) -> Self {
        ShellHelper {
            paint,
            files: FilenameCompleter::new(),
        }
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let c = complete(&line[..pos]);
        let mut out: Vec<Pair> = c
            .words
            .into_iter()
            .map(|w| Pair {
                display: w.clone(),
                replacement: format!("{w} "),
            })
            .collect();
        let mut start = c.start;
        if c.files {
            // The command's own files first: `run ⇥` offers scripts/*.rhai.
            let prefix = &line[c.start..pos];
            if let Some((dir, ext)) = c.preferred {
                out.extend(
                    crate::files::preferred_files(dir, ext, prefix)
                        .into_iter()
                        .map(|f| Pair {
                            display: f.clone(),
                            replacement: format!("{f} "),
                        }),
                );
            }
            let (fstart, files) = self.files.complete_path(line, pos)?;
            if out.is_empty() {
                start = fstart;
                out.extend(files);
            } else if fstart == c.start {
                let have: Vec<String> = out.iter().map(|o| o.display.clone()).collect();
                out.extend(files.into_iter().filter(|f| !have.contains(&f.replacement)));
            }
        }
        Ok((start, out))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        hint(line)
    }
}

impl Highlighter for ShellHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.paint.color {
            return Cow::Borrowed(line);
        }
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let word = &trimmed[..end];
        if word.is_empty() {
            return Cow::Borrowed(line);
        }
        let styled = if cmd::find(word).is_some() {
            self.paint.green(word)
        } else if COMMANDS.iter().any(|c| c.name().starts_with(word)) {
            word.to_string()
        } else {
            self.paint.red(word)
        };
        Cow::Owned(format!("{}{styled}{}", &line[..lead], &trimmed[end..]))
    }

    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        default: bool,
    ) -> Cow<'b, str> {
        if self.paint.color && default {
            Cow::Owned(self.paint.bold(prompt))
        } else {
            Cow::Borrowed(prompt)
        }
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.paint.color {
            Cow::Owned(self.paint.dim(hint))
        } else {
            Cow::Borrowed(hint)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.paint.color
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names() {
        assert_eq!(complete("inf").words, ["info"]);
        assert_eq!(complete("se").words, ["serve", "set", "settings"]);
        assert!(complete("").words.contains(&"help".to_string()));
        assert!(complete("zz").words.is_empty());
    }

    #[test]
    fn sub_words_and_values() {
        let c = complete("set ");
        assert!(c.words.contains(&"timeout".to_string()), "{c:?}");
        assert_eq!(c.start, 4);
        assert_eq!(complete("set snt").words, ["sntp-server"]);
        assert_eq!(complete("set nodelay o").words, ["on", "off"]);
        assert_eq!(complete("help se").words.len(), 0, "help takes free text");
    }

    #[test]
    fn flags() {
        assert_eq!(complete("info --j").words, ["--json"]);
        assert!(complete("info -").words.contains(&"--help".to_string()));
    }

    #[test]
    fn run_completes_files() {
        let c = complete("run ");
        assert!(c.files, "run takes a file");
        assert_eq!(c.start, 4);
        // Tests run in the crate root, where scripts/ holds the shipped scripts.
        assert_eq!(c.preferred, Some(("scripts", "rhai")));
        assert_eq!(complete("echo ").preferred, None);
        assert!(
            crate::files::preferred_files("scripts", "rhai", "")
                .contains(&"scripts/diagnose.rhai".to_string())
        );
        assert_eq!(
            crate::files::preferred_files("scripts", "rhai", "scripts/dia"),
            ["scripts/diagnose.rhai"]
        );
    }

    #[test]
    fn hints() {
        assert_eq!(hint("inf").as_deref(), Some("o"));
        assert_eq!(hint("info ").as_deref(), Some("[OPTIONS] [IFACE]"));
        assert!(hint("set ").unwrap().contains("timeout|"));
        assert!(hint("set timeout ").unwrap().starts_with("DURATION"));
        assert_eq!(hint("nothing"), None);
    }
}
