//! rhai scripts: every command of [`COMMANDS`](crate::cmd::COMMANDS) is a
//! script function with the shell's words (`echo("127.0.0.1", "hello")`) or
//! an options map (`echo("127.0.0.1:5050", #{count: 10, udp: true})`). The
//! function builds the same argv the shell would and calls the same
//! [`cmd::execute`]; the report comes back as a map with the fields of
//! `--json` (numbers are i64/f64, as rhai needs). A failing command raises an
//! error the script can catch: `catch (e) { e.code, e.message, e.hint }`.
//!
//! A script is untrusted input: the engine runs with explicit limits
//! (operations, call depth, expression depth, string/array/map sizes, growth
//! of the process's memory, wall clock), Ctrl-C stops it, `eval` is off and modules cannot be imported.
//! Each limit, when hit, names itself and the flag that raises it.
//!
//! Besides the commands: `sleep(ms)`, `now()` (Unix seconds), `to_json(x)`,
//! `exit(code)`, `fixed(x, digits)`, `join(array, sep)`, `pad_right(v, width)`,
//! `pad_left(v, width)`;
//! `print` goes through the session's output. `set(…)` in a script changes
//! the script's settings only; the user's saved settings stay.

//! Files: `args.rs` (script arguments to command words, reports to maps),
//! `engine.rs` (limits, hooks, the registration loop), `errors.rs` (how a
//! script ended, located errors); this file runs a script on its own thread
//! with a watchdog for the wall clock.

mod args;
mod engine;
mod errors;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Position, Scope};

use crate::error::{Error, ErrorKind, Result};
use crate::session::{Frontend, NoTerminal, Session};
use engine::build_engine;
use errors::{located, outcome, timeout_message};

/// The sandbox's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// rhai operations before the script is stopped.
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array.
    pub max_array_size: usize,
    /// Entries in one map.
    pub max_map_size: usize,
    /// Growth of the process's resident memory while the script runs: the
    /// per-object limits above do not bound the total (100,000 strings of
    /// 1 MiB each), and rhai 1.27 does not check `m[k] = v` against the
    /// map limit.
    pub max_memory: u64,
    /// Wall-clock time for the whole script.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000_000,
            max_call_depth: 64,
            max_string_size: 1 << 20,
            max_array_size: 100_000,
            max_map_size: 10_000,
            max_memory: 1 << 30,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Run `source` (named `name` in messages) with `args`, as the session's
/// commands. Returns the exit status the script asked for (0 if none).
///
/// `quote`: whether errors may show the source (its line and caret, rhai's
/// message naming what it found). False for a file that need not be a
/// script at all (not named `*.rhai`): a file that does not parse is then
/// "not a rhai script", and no error echoes any of its text.
///
/// # Errors
/// `script` errors naming the file, line and column (parse errors, uncaught
/// errors, limits), or the uncaught netsh error of a command.
pub fn run(
    name: &str,
    source: &str,
    quote: bool,
    args: &[String],
    s: &mut Session,
    limits: Limits,
) -> Result<i32> {
    // Deep script recursion needs more stack than the main thread has (a
    // debug build needs ~200 KiB per rhai call level); the stack is only
    // reserved, and used as it grows.
    //
    // A watchdog enforces the wall-clock limit while a command runs too
    // (rhai's progress hook only runs between operations, and `echo` with
    // 1000 probes is one operation): at the deadline it raises the session's
    // Ctrl-C flag, which every command obeys, and the script ends with the
    // timeout error.
    let interrupt = std::sync::Arc::clone(&s.interrupt);
    let timed_out = AtomicBool::new(false);
    let timeout_located = AtomicBool::new(false);
    let result = std::thread::scope(|sc| {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (flag, intr) = (&timed_out, &interrupt);
        let watchdog = std::thread::Builder::new()
            .name("netsh-script-watchdog".into())
            .spawn_scoped(sc, move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    done_rx.recv_timeout(limits.timeout)
                {
                    flag.store(true, Ordering::Relaxed);
                    intr.store(true, Ordering::Relaxed);
                }
            });
        let r = std::thread::Builder::new()
            .name("netsh-script".into())
            .stack_size(SCRIPT_STACK)
            .spawn_scoped(sc, || {
                run_here(
                    name,
                    quote.then_some(source),
                    source,
                    args,
                    s,
                    limits,
                    &timeout_located,
                )
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Script,
                    format!("{name}: cannot start the script thread: {e}"),
                )
            })
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        drop(done_tx); // wakes the watchdog if the script ended first
        // Without a watchdog thread the progress hook still stops the
        // script, between operations.
        drop(watchdog);
        r
    });
    if timed_out.load(Ordering::Relaxed) {
        // Our Ctrl-C was for the script only: the shell goes on.
        interrupt.store(false, Ordering::Relaxed);
        if timeout_located.load(Ordering::Relaxed) {
            return result?; // already located by the progress hook
        }
        return Err(located(
            name,
            quote.then_some(source),
            Position::NONE,
            &timeout_message(&limits),
            Some("raise it with --script-timeout".into()),
        ));
    }
    result?
}

/// A file that does not parse, from a path not named `*.rhai`: said in one
/// line with where rhai stopped and nothing of the file's text.
fn not_a_script(name: &str, pos: Position) -> Error {
    let at = match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: syntax error"),
        (Some(l), None) => format!("line {l}: syntax error"),
        _ => "syntax error".to_string(),
    };
    let mut e = Error::new(
        ErrorKind::Script,
        format!("{name} is not a rhai script ({at})"),
    );
    e.hint = Some(
        "'run' takes a rhai script (scripts/*.rhai); if this is one, name it FILE.rhai \
         to see the error with its line"
            .into(),
    );
    e
}

/// Stack reserved for the script thread.
const SCRIPT_STACK: usize = 1 << 30;

/// `shown` is `source` when errors may quote it.
fn run_here(
    name: &str,
    shown: Option<&str>,
    source: &str,
    args: &[String],
    s: &mut Session,
    limits: Limits,
    timeout_located: &AtomicBool,
) -> Result<i32> {
    // What the script changes is its own: settings and a server it started
    // end with it.
    let settings = s.settings.clone();
    let had_server = s.server.is_some();
    let started = Instant::now();
    let mut owned = s.detach();
    owned.frontend = Frontend::Script;
    owned.streaming = false;
    // A script converses with nobody: its commands take no terminal input.
    let terminal = std::mem::replace(&mut owned.terminal, Box::new(NoTerminal));
    let frontend = s.frontend;
    let shared = Rc::new(RefCell::new(owned));
    let result = {
        let engine = build_engine(&shared, limits, started);
        let mut scope = Scope::new();
        let argv: rhai::Array = args.iter().map(|a| Dynamic::from(a.clone())).collect();
        scope.push("args", argv);
        match engine.compile(source) {
            Err(e) if shown.is_none() => Err(not_a_script(name, e.position())),
            Err(e) => {
                let hint = matches!(e.err_type(), rhai::ParseErrorType::ExprTooDeep).then(|| {
                    "split it into smaller expressions with variables (at most 128 levels of nesting)"
                        .to_string()
                });
                Err(located(
                    name,
                    shown,
                    e.position(),
                    &e.err_type().to_string(),
                    hint,
                ))
            }
            Ok(ast) => match engine.run_ast_with_scope(&mut scope, &ast) {
                Ok(()) => Ok(0),
                Err(e) => outcome(name, shown, *e, &limits, timeout_located),
            },
        }
    };
    let back = match Rc::try_unwrap(shared) {
        Ok(cell) => cell.into_inner(),
        Err(rc) => rc.borrow_mut().detach(),
    };
    s.restore(back);
    s.terminal = terminal;
    s.settings = settings;
    if !had_server {
        s.shutdown();
    }
    s.frontend = frontend;
    s.streaming = true;
    result
}
