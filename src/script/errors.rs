//! How a script ended, as netsh errors: exit statuses, limits named with
//! the flag that raises them, and every error located at its file, line and
//! column with the source line and a caret.
//!
//! The source is quoted only when the caller says the text is a script's
//! (`Some(source)`: a `*.rhai` file, `-e CODE`, a pipe). For any other file
//! (`netsh run /etc/shadow`) errors give the file, line, column and the
//! kind of error and nothing of the file's text: no source line, and no
//! rhai message that would echo a token of it (`Variable not found: …`).

use std::sync::atomic::{AtomicBool, Ordering};

use rhai::{EvalAltResult, Map, Position};

use super::Limits;
use crate::cmd;
use crate::error::{Error, ErrorKind, Result};

/// Turn how a script ended into an exit status or an error.
///
/// `timed_out` is set when the script ended at the wall-clock limit (the
/// progress hook or `sleep` saw it), so the caller knows without reading
/// the message.
pub(super) fn outcome(
    name: &str,
    source: Option<&str>,
    e: EvalAltResult,
    limits: &Limits,
    timed_out: &AtomicBool,
) -> Result<i32> {
    let pos = e.position();
    // Errors inside script functions arrive wrapped; the cause is innermost.
    let mut inner = &e;
    while let EvalAltResult::ErrorInFunctionCall(_, _, cause, _) = inner {
        inner = cause;
    }
    let pos = if inner.position().is_none() {
        pos
    } else {
        inner.position()
    };
    match inner {
        EvalAltResult::ErrorTerminated(token, _) => {
            if let Some(m) = token.read_lock::<Map>()
                && let Some(code) = m.get("exit").and_then(|c| c.as_int().ok())
            {
                return Ok(code as i32);
            }
            if token.to_string() == "interrupted" {
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    format!("{name}: stopped by Ctrl-C"),
                ));
            }
            if token.to_string() == "memory" {
                return Err(located(
                    name,
                    source,
                    pos,
                    &format!(
                        "the script's memory grew by more than {} (the memory limit)",
                        crate::units::format_bytes(limits.max_memory)
                    ),
                    Some("raise it with --max-memory".into()),
                ));
            }
            timed_out.store(true, Ordering::Relaxed);
            Err(located(
                name,
                source,
                pos,
                &timeout_message(limits),
                Some("raise it with --script-timeout".into()),
            ))
        }
        EvalAltResult::ErrorRuntime(v, _) if v.is_map() => {
            let m = v.read_lock::<Map>().map(|m| m.clone()).unwrap_or_default();
            let get = |k: &str| m.get(k).filter(|v| !v.is_unit()).map(ToString::to_string);
            let code = get("code").unwrap_or_else(|| "script".into());
            let msg = get("message").unwrap_or_else(|| v.to_string());
            let mut err = located(name, source, pos, &msg, get("hint"));
            if let Some(kind) = ErrorKind::from_code(&code) {
                err.kind = kind;
            }
            Err(err)
        }
        EvalAltResult::ErrorTooManyOperations(_) => Err(located(
            name,
            source,
            pos,
            &format!(
                "the script ran more than {} operations (the operation limit)",
                limits.max_operations
            ),
            Some("raise it with --max-operations".into()),
        )),
        EvalAltResult::ErrorStackOverflow(_) => Err(located(
            name,
            source,
            pos,
            &format!(
                "calls nested deeper than {} (the call-depth limit)",
                limits.max_call_depth
            ),
            Some("raise it with --max-call-depth".into()),
        )),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let (limit, flag) = match what.as_str() {
                w if w.contains("ength of string") || w.contains("tring") => (
                    format!("{} bytes", limits.max_string_size),
                    "--max-string-size",
                ),
                w if w.contains("rray") => (
                    format!("{} items", limits.max_array_size),
                    "--max-array-size",
                ),
                _ => (format!("{} entries", limits.max_map_size), "--max-map-size"),
            };
            Err(located(
                name,
                source,
                pos,
                &format!("{what} grew over the limit of {limit}"),
                Some(format!("raise it with {flag}")),
            ))
        }
        EvalAltResult::ErrorTooManyModules(_) | EvalAltResult::ErrorModuleNotFound(..) => {
            Err(located(
                name,
                source,
                pos,
                "modules cannot be imported in netsh scripts",
                Some("put the code in the script itself".into()),
            ))
        }
        other if source.is_none() && quotes_the_script(other) => {
            Err(located(name, source, pos, kind_only(other), None))
        }
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let fname = sig.split([' ', '(']).next().unwrap_or(sig);
            let hint = cmd::suggest(fname)
                .map(|c| format!("did you mean '{c}'? ('netsh help' lists the commands)"));
            Err(located(
                name,
                source,
                pos,
                &format!("no function {sig}"),
                hint,
            ))
        }
        other => {
            let text = other.to_string();
            let text = match text.rfind(" (line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            Err(located(name, source, pos, &text, None))
        }
    }
}

/// Whether rhai's message for `e` would carry text of the script (a name,
/// a value, a thrown string): all but the errors netsh words itself.
fn quotes_the_script(e: &EvalAltResult) -> bool {
    !matches!(
        e,
        EvalAltResult::ErrorTerminated(..)
            | EvalAltResult::ErrorTooManyOperations(_)
            | EvalAltResult::ErrorStackOverflow(_)
            | EvalAltResult::ErrorDataTooLarge(..)
            | EvalAltResult::ErrorTooManyModules(_)
            | EvalAltResult::ErrorModuleNotFound(..)
    ) && !matches!(e, EvalAltResult::ErrorRuntime(v, _) if v.is_map())
}

/// The kind of a runtime error, in words that quote nothing of the script.
fn kind_only(e: &EvalAltResult) -> &'static str {
    use EvalAltResult as E;
    match e {
        E::ErrorVariableNotFound(..) | E::ErrorForbiddenVariable(..) => "unknown variable",
        E::ErrorVariableExists(..) => "variable defined twice",
        E::ErrorPropertyNotFound(..) => "unknown property",
        E::ErrorFunctionNotFound(..) => "unknown function",
        E::ErrorIndexNotFound(..)
        | E::ErrorArrayBounds(..)
        | E::ErrorStringBounds(..)
        | E::ErrorBitFieldBounds(..) => "index out of range",
        E::ErrorMismatchDataType(..) | E::ErrorMismatchOutputType(..) | E::ErrorFor(_) => {
            "type mismatch"
        }
        E::ErrorIndexingType(..) | E::ErrorDotExpr(..) => "bad indexing or property access",
        E::ErrorArithmetic(..) => "arithmetic error",
        E::ErrorAssignmentToConstant(..) | E::ErrorNonPureMethodCallOnConstant(..) => {
            "change to a constant"
        }
        E::ErrorRuntime(..) => "error thrown",
        E::ErrorParsing(..) => "syntax error",
        _ => "runtime error",
    }
}

/// Said instead of a source line that is not quoted.
const NOT_QUOTED: &str = "its text is not shown, since the file is not named *.rhai";

/// Characters of a source line shown under a located error.
const SOURCE_WINDOW: usize = 120;

/// `FILE:LINE:COL: message — hint`, then the source line and a caret (with
/// `source` none, the first line only, and no text of the file).
pub(super) fn located(
    name: &str,
    source: Option<&str>,
    pos: Position,
    msg: &str,
    hint: Option<String>,
) -> Error {
    let (line, col) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
    let hint = match (source, hint) {
        (None, Some(h)) if line > 0 => Some(format!("{h}; {NOT_QUOTED}")),
        (None, None) if line > 0 => Some(NOT_QUOTED.to_string()),
        (_, h) => h,
    };
    let mut message = if line > 0 {
        format!("{name}:{line}:{col}: {msg}")
    } else {
        format!("{name}: {msg}")
    };
    // The fix goes on the first line; the source and the caret follow.
    if let Some(h) = &hint {
        message.push_str(&format!(" — {h}"));
    }
    if line > 0
        && let Some(src) = source.and_then(|s| s.lines().nth(line - 1))
    {
        // A window of the line around the column: a generated script's
        // one 200 KB line must not become 200 KB of error.
        let chars: Vec<char> = src.chars().collect();
        let from = col.saturating_sub(1).saturating_sub(SOURCE_WINDOW / 2);
        let to = (from + SOURCE_WINDOW).min(chars.len());
        let mut window: String = chars[from.min(to)..to].iter().collect();
        window = crate::proto::escape::escape_controls(&window).into_owned();
        let (lead, trail) = (
            if from > 0 { "…" } else { "" },
            if to < chars.len() { "…" } else { "" },
        );
        let caret = col.saturating_sub(1) - from + lead.chars().count();
        message.push_str(&format!(
            "\n{line:>5} | {lead}{window}{trail}\n      | {}^",
            " ".repeat(caret)
        ));
    }
    let mut e = Error::new(ErrorKind::Script, message);
    e.hint = None;
    e
}

/// The message of the wall-clock limit.
pub(super) fn timeout_message(limits: &Limits) -> String {
    format!(
        "the script ran longer than {} (the wall-clock limit)",
        crate::units::format_duration(limits.timeout)
    )
}
