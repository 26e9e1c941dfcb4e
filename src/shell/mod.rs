//! The front ends that read lines: the interactive shell (rustyline, history
//! in `history/`, completion and hints from [`helper`]) and the plain line
//! loop for piped input (no prompt, no escape codes, no history). Both run
//! each line through [`run_line`], which the one-shot command line uses too.

pub mod helper;
pub mod term;

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::atomic::Ordering;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor};

use crate::cmd;
use crate::error::Error;
use crate::paint::Paint;
use crate::report::Report;
use crate::session::Session;

/// Longest line the piped loop accepts (the interactive editor has its own).
pub const MAX_LINE: usize = 64 * 1024;

/// What a line asked the front end to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Exit status of the line (0 = success).
    pub code: i32,
    /// The line was `exit`/`quit`.
    pub exit: bool,
}

/// Print an error as one line on stderr (red `error` on a colour terminal) and
/// log it; a failing log adds one warning, once.
pub fn report_error(s: &mut Session, command: &str, e: &Error) {
    let warn = s.log_error(command, e);
    let paint = Paint {
        color: s.paint.color && io::stderr().is_terminal(),
    };
    let mut err = io::stderr().lock();
    // Whatever put text into the error (a setting name, a script's throw, a
    // server's reply), nothing in it reaches the terminal raw; the lines a
    // located script error has stay lines.
    let text = e
        .to_string()
        .split('\n')
        .map(|l| crate::proto::escape::escape_controls(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let text = match text.split_once(']') {
        Some((head, rest)) if paint.color => format!("{}{rest}", paint.red(&format!("{head}]"))),
        _ => text,
    };
    let _ = writeln!(err, "{text}");
    if let Some(w) = warn {
        let _ = writeln!(err, "{}", w.as_warning());
    }
}

/// Largest history file netsh reads: rustyline keeps 10,000 lines, so a
/// bigger file is not one it wrote.
const HISTORY_MAX_BYTES: u64 = 16 << 20;

/// Why the history file can't be used, if it can't (a missing one is fine:
/// it is created on the first line).
fn history_file_problem(path: &std::path::Path) -> Option<Error> {
    let hint =
        "history is kept in memory for this session only; move the file away to start afresh";
    let problem = match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Error::io("read history", path.display(), &e).with_hint(hint)),
        Ok(m) if !m.is_file() => format!("history {} is not a regular file", path.display()),
        Ok(m) if m.len() > HISTORY_MAX_BYTES => format!(
            "history {} is {} bytes, over the {} netsh reads",
            path.display(),
            m.len(),
            crate::units::format_bytes(HISTORY_MAX_BYTES)
        ),
        Ok(_) => return None,
    };
    Some(Error::new(crate::error::ErrorKind::Io, problem).with_hint(hint))
}

/// Show start-up warnings (bad settings lines, unwritable logs) on stderr.
pub fn report_warnings(s: &mut Session, warnings: &[Error]) {
    for w in warnings {
        let _ = s.log_error("startup", w);
        let _ = writeln!(io::stderr(), "{}", w.as_warning());
    }
}

/// Run one command given as words and print its outcome.
///
/// # Errors
/// Only a failed write to stdout (a closed pipe), which ends the front end.
pub fn run_words(argv: &[String], s: &mut Session) -> io::Result<Status> {
    let outcome = cmd::execute(argv, s);
    let shown = argv.join(" ");
    let mut out = io::stdout().lock();
    match outcome.result {
        Ok(report) => {
            if outcome.json {
                writeln!(
                    out,
                    "{}",
                    report.to_json(outcome.command.unwrap_or_default())
                )?;
            } else {
                let text = report.render(&s.paint);
                if !text.is_empty() {
                    writeln!(out, "{text}")?;
                }
            }
            out.flush()?;
            drop(out);
            let mut code = report.exit_status();
            if let Some(e) = report.failure() {
                code = e.exit_code();
                if outcome.json {
                    let _ = s.log_error(&shown, &e);
                } else {
                    report_error(s, &shown, &e);
                }
            }
            Ok(Status {
                code,
                exit: matches!(report, Report::Exit),
            })
        }
        Err(e) => {
            if outcome.json {
                let doc = crate::report::error_document(outcome.command, &e);
                writeln!(out, "{}", crate::report::pretty(&doc))?;
                out.flush()?;
            }
            drop(out);
            if outcome.json {
                let _ = s.log_error(&shown, &e);
            } else {
                report_error(s, &shown, &e);
            }
            Ok(Status {
                code: e.exit_code(),
                exit: false,
            })
        }
    }
}

/// Split a line shell-style and run it. Blank lines and `#` comments do nothing.
///
/// # Errors
/// Only a failed write to stdout.
pub fn run_line(line: &str, s: &mut Session) -> io::Result<Status> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Status {
            code: 0,
            exit: false,
        });
    }
    let Some(words) = shlex::split(trimmed) else {
        let e = Error::usage("unbalanced quote in the line")
            .with_hint("close the quote, or escape it with a backslash");
        report_error(s, trimmed, &e);
        return Ok(Status {
            code: e.exit_code(),
            exit: false,
        });
    };
    if words.is_empty() {
        return Ok(Status {
            code: 0,
            exit: false,
        });
    }
    s.interrupt.store(false, Ordering::Relaxed);
    run_words(&words, s)
}

/// The interactive shell. Returns the process exit status.
pub fn interactive(s: &mut Session) -> i32 {
    s.frontend = crate::session::Frontend::Lines;
    let code = interactive_loop(s);
    if let Some(line) = leaving_note(s) {
        let _ = writeln!(io::stdout(), "{line}");
    }
    s.shutdown();
    code
}

/// What leaving the shell does to a server `serve` started in it: it stops
/// with the shell, and the user should know, with what it had.
fn leaving_note(s: &Session) -> Option<String> {
    let bg = s.server.as_ref()?;
    let st = bg.handle.stats.snapshot();
    let addrs: Vec<String> = bg.addrs.iter().map(ToString::to_string).collect();
    Some(format!(
        "Stopping the server on {} with the shell: {} connected now, {} served since it started.",
        addrs.join(", "),
        crate::units::plural(st.clients, "client"),
        st.clients_total
    ))
}

fn interactive_loop(s: &mut Session) -> i32 {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)
        .and_then(|b| b.max_history_size(10_000))
        .map(|b| {
            b.history_ignore_space(true)
                .completion_type(CompletionType::List)
                .build()
        });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error[io]: cannot configure the line editor: {e}");
            return 1;
        }
    };
    let mut rl: Editor<helper::ShellHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("error[io]: cannot start the line editor: {e} — pipe commands in instead");
            return 1;
        }
    };
    rl.set_helper(Some(helper::ShellHelper::new(s.paint)));
    let hist = s.paths.history_file();
    // rustyline reads the whole file on load and again on every append, so
    // only a regular file of sane size is used (a device, a FIFO or a
    // runaway file would hang the shell or fill memory).
    let keep_history = match history_file_problem(&hist) {
        None => true,
        Some(w) => {
            report_warnings(s, &[w]);
            false
        }
    };
    if keep_history
        && let Err(e) = rl.load_history(&hist)
        && !matches!(&e, ReadlineError::Io(io) if io.kind() == io::ErrorKind::NotFound)
    {
        let w = Error::new(
            crate::error::ErrorKind::Io,
            format!("read history {}: {e}", hist.display()),
        );
        report_warnings(s, &[w]);
    }
    let mut history_warned = false;
    loop {
        let prompt = format!("netsh {}> ", s.settings.server);
        match rl.readline(&prompt) {
            Ok(line) => {
                if rl.add_history_entry(line.as_str()).unwrap_or(false) && keep_history {
                    // Appended on each accepted line, so a crash loses nothing.
                    let saved = std::fs::create_dir_all(&s.paths.history_dir)
                        .map_err(ReadlineError::Io)
                        .and_then(|()| rl.append_history(&hist));
                    if let Err(e) = saved
                        && !history_warned
                    {
                        history_warned = true;
                        let w = Error::new(
                            crate::error::ErrorKind::Io,
                            format!("write history {}: {e}", hist.display()),
                        )
                        .with_hint("history is kept in memory for this session only");
                        report_warnings(s, &[w]);
                    }
                }
                match run_line(&line, s) {
                    Ok(st) if st.exit => return 0,
                    Ok(_) => {}
                    Err(_) => return 0,
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return 0,
            Err(e) => {
                eprintln!("error[io]: reading the terminal failed: {e}");
                return 1;
            }
        }
    }
}

/// The plain line loop for piped (or redirected) input. `prompt` goes to
/// stderr when given (stdin is a terminal but stdout is not). Returns the
/// exit status: the first failing line's status, else 0.
pub fn batch(input: &mut dyn BufRead, s: &mut Session, prompt: Option<&str>) -> i32 {
    s.frontend = crate::session::Frontend::Lines;
    let code = batch_loop(input, s, prompt);
    // End of input: a server started with `serve` stops with the session.
    s.shutdown();
    code
}

fn batch_loop(input: &mut dyn BufRead, s: &mut Session, prompt: Option<&str>) -> i32 {
    let mut status = 0;
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    loop {
        if let Some(p) = prompt {
            let _ = write!(io::stderr(), "{p}");
        }
        buf.clear();
        let n = match read_line_capped(input, &mut buf, MAX_LINE) {
            Ok(n) => n,
            Err(e) => {
                report_error(s, "stdin", &Error::io("read", "stdin", &e));
                return 1;
            }
        };
        if n == 0 {
            return status;
        }
        lineno += 1;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let res = if body.len() > MAX_LINE {
            Err(Error::usage(format!(
                "line {lineno} is longer than {MAX_LINE} bytes; skipped"
            )))
        } else {
            match std::str::from_utf8(body) {
                Ok(t) => Ok(t.to_string()),
                Err(e) => Err(Error::usage(format!(
                    "line {lineno} is not valid UTF-8 (bad byte at offset {}); skipped",
                    e.valid_up_to()
                ))),
            }
        };
        let st = match res {
            Ok(line) => match run_line(&line, s) {
                Ok(st) => st,
                Err(_) => return status,
            },
            Err(e) => {
                report_error(s, &format!("stdin line {lineno}"), &e);
                Status {
                    code: e.exit_code(),
                    exit: false,
                }
            }
        };
        if st.code != 0 && status == 0 {
            status = st.code;
        }
        if st.exit {
            return status;
        }
    }
}

/// Read up to and including `\n`, keeping at most `cap + 1` bytes (so the
/// caller sees "too long") and discarding the rest of an over-long line.
/// Returns the bytes consumed (0 at end of input).
fn read_line_capped(r: &mut dyn BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (cap + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reader_keeps_cap_plus_one_and_resyncs() {
        let data = format!("{}\nnext\n", "x".repeat(100));
        let mut r = io::BufReader::with_capacity(7, data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut r, &mut buf, 10).unwrap(), 101);
        assert_eq!(buf.len(), 11);
        buf.clear();
        read_line_capped(&mut r, &mut buf, 10).unwrap();
        assert_eq!(buf, b"next\n");
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf, 10).unwrap(), 0);
    }
}
