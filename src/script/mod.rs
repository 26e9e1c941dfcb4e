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
//! `exit(code)`, `fixed(x, digits)`, `pad_right(v, width)`, `pad_left(v, width)`;
//! `print` goes through the session's output. `set(…)` in a script changes
//! the script's settings only; the user's saved settings stay.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Map, Position, Scope};

use crate::cmd::{self, COMMANDS};
use crate::error::{Error, ErrorKind, Result};
use crate::session::{Frontend, NoTerminal, Session};

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

/// Arities registered for each command (positional words; a trailing map
/// counts as one).
const MAX_ARGS: usize = 6;

/// A rhai error carrying a netsh error as `#{code, message, hint}`.
fn raise(e: &Error) -> Box<EvalAltResult> {
    let mut m = Map::new();
    m.insert("code".into(), e.code().into());
    m.insert("message".into(), e.message.clone().into());
    m.insert(
        "hint".into(),
        e.hint.clone().map_or(Dynamic::UNIT, Into::into),
    );
    EvalAltResult::ErrorRuntime(m.into(), Position::NONE).into()
}

/// Words for one script argument; a map becomes flags.
fn words(
    name: &str,
    i: usize,
    arg: &Dynamic,
    last: bool,
) -> std::result::Result<Vec<String>, Box<EvalAltResult>> {
    if arg.is_unit() {
        return Ok(Vec::new());
    }
    if let Some(m) = arg.read_lock::<Map>() {
        if !last {
            return Err(raise(
                &Error::usage(format!(
                    "{name}(): the options map must be the last argument (argument {} is a map)",
                    i + 1
                ))
                .with_hint(format!("e.g. {name}(\"127.0.0.1:5050\", #{{count: 5}})")),
            ));
        }
        let mut out = Vec::new();
        for (k, v) in m.iter() {
            let flag = if k.len() == 1 {
                format!("-{k}")
            } else {
                format!("--{}", k.replace('_', "-"))
            };
            if let Some(b) = v.clone().try_cast::<bool>() {
                if b {
                    out.push(flag);
                }
            } else if v.is_unit() {
            } else if let Some(a) = v.read_lock::<rhai::Array>() {
                for item in a.iter() {
                    out.push(flag.clone());
                    out.push(item.to_string());
                }
            } else {
                out.push(flag);
                out.push(v.to_string());
            }
        }
        return Ok(out);
    }
    if arg.is_array() || arg.is_blob() || arg.is_fnptr() {
        return Err(raise(&Error::usage(format!(
            "{name}(): argument {} is {}; expected a string or a number (or an options map last)",
            i + 1,
            arg.type_name()
        ))
        .with_hint(format!("e.g. {name}(\"127.0.0.1:5050\", \"hello\") or {name}(\"127.0.0.1:5050\", #{{count: 5}})"))));
    }
    Ok(vec![arg.to_string()])
}

/// Run `name` with script arguments through the registry; the report as a map.
fn call(
    session: &Rc<RefCell<Session>>,
    name: &str,
    args: &[Dynamic],
) -> std::result::Result<Dynamic, Box<EvalAltResult>> {
    let mut argv = vec![name.to_string()];
    for (i, a) in args.iter().enumerate() {
        argv.extend(words(name, i, a, i + 1 == args.len())?);
    }
    let mut s = session.borrow_mut();
    let outcome = cmd::execute(&argv, &mut s);
    match outcome.result {
        Ok(report) => {
            // Straight from the report's serde form: the same fields as --json.
            rhai::serde::to_dynamic(&report)
        }
        Err(e) => {
            let _ = s.log_error(&argv.join(" "), &e);
            Err(raise(&e))
        }
    }
}

/// How often a running script's memory is looked at.
const MEMORY_CHECK_EVERY: Duration = Duration::from_millis(2);

/// This process's resident memory, where the system says (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Build an engine bound to `session` with `limits`.
fn build_engine(session: &Rc<RefCell<Session>>, limits: Limits, started: Instant) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(128, 64)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(10_000)
        .set_max_functions(1_000)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval");
    let interrupt = session.borrow().interrupt.clone();
    let rss_at_start = resident_bytes();
    let next_memory_check = std::cell::Cell::new(Duration::ZERO);
    engine.on_progress(move |_| {
        let elapsed = started.elapsed();
        if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            Some("interrupted".into())
        } else if elapsed > limits.timeout {
            Some("timeout".into())
        } else if elapsed >= next_memory_check.get() {
            // Every 2 ms (a /proc read costs a few µs): at memcpy speed a
            // script can add only some tens of MB between two looks.
            next_memory_check.set(elapsed + MEMORY_CHECK_EVERY);
            let grown = rss_at_start
                .zip(resident_bytes())
                .map_or(0, |(a, b)| b.saturating_sub(a));
            (grown > limits.max_memory).then(|| "memory".into())
        } else {
            None
        }
    });
    let out = Rc::clone(session);
    engine.on_print(move |text| {
        let _ = out.borrow_mut().write_line(text);
    });
    let out = Rc::clone(session);
    engine.on_debug(move |text, _, pos| {
        let _ = out
            .borrow_mut()
            .write_line(&format!("[debug {pos}] {text}"));
    });

    // Every command, at every arity, from the registry: no second list.
    for c in COMMANDS {
        let name = c.name();
        if !c.in_scripts() {
            continue;
        }
        macro_rules! reg {
            ($($a:ident),*) => {{
                let s = Rc::clone(session);
                engine.register_fn(name, move |$($a: Dynamic),*| call(&s, name, &[$($a),*]));
            }};
        }
        reg!();
        reg!(a);
        reg!(a, b);
        reg!(a, b, c);
        reg!(a, b, c, d);
        reg!(a, b, c, d, e);
        reg!(a, b, c, d, e, f);
        const _: () = assert!(MAX_ARGS == 6);
    }
    engine.register_fn("sleep", move |ms: i64| pause(ms as f64, started, limits));
    engine.register_fn("sleep", move |ms: f64| pause(ms, started, limits));
    // Formatting helpers: rhai's own `pad` works in place and rounding needs
    // a feature netsh does not build.
    engine.register_fn("fixed", |x: f64, digits: i64| {
        format!("{x:.*}", digits.clamp(0, 12) as usize)
    });
    engine.register_fn("fixed", |x: i64, digits: i64| {
        format!("{:.*}", digits.clamp(0, 12) as usize, x as f64)
    });
    engine.register_fn("pad_right", |v: Dynamic, width: i64| {
        format!("{:<w$}", v.to_string(), w = width.clamp(0, 200) as usize)
    });
    engine.register_fn("pad_left", |v: Dynamic, width: i64| {
        format!("{:>w$}", v.to_string(), w = width.clamp(0, 200) as usize)
    });
    engine.register_fn("now", || -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
    engine.register_fn("to_json", |v: Dynamic| -> String {
        serde_json::to_string(&v).unwrap_or_else(|e| format!("\"<{e}>\""))
    });
    engine.register_fn(
        "exit",
        |code: i64| -> std::result::Result<(), Box<EvalAltResult>> {
            let mut m = Map::new();
            m.insert("exit".into(), code.clamp(0, 255).into());
            Err(EvalAltResult::ErrorTerminated(m.into(), Position::NONE).into())
        },
    );
    engine.register_fn("exit", || -> std::result::Result<(), Box<EvalAltResult>> {
        let mut m = Map::new();
        m.insert("exit".into(), Dynamic::from(0_i64));
        Err(EvalAltResult::ErrorTerminated(m.into(), Position::NONE).into())
    });
    engine
}

/// `sleep(ms)`: bounded by the script's wall-clock limit, and Ctrl-C ends
/// it through the progress check once it returns.
fn pause(ms: f64, started: Instant, limits: Limits) -> std::result::Result<(), Box<EvalAltResult>> {
    let end = Instant::now() + Duration::from_secs_f64((ms / 1e3).clamp(0.0, 86_400.0));
    while Instant::now() < end {
        if started.elapsed() > limits.timeout {
            return Err(EvalAltResult::ErrorTerminated("timeout".into(), Position::NONE).into());
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }
    Ok(())
}

/// Run `source` (named `name` in messages) with `args`, as the session's
/// commands. Returns the exit status the script asked for (0 if none).
///
/// # Errors
/// `script` errors naming the file, line and column (parse errors, uncaught
/// errors, limits), or the uncaught netsh error of a command.
pub fn run(
    name: &str,
    source: &str,
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
            .spawn_scoped(sc, || run_here(name, source, args, s, limits))
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
        if let Err(e) = &result
            && e.message.contains("(the wall-clock limit)")
        {
            return result?; // already located by the progress hook
        }
        return Err(located(
            name,
            source,
            Position::NONE,
            &timeout_message(&limits),
            Some("raise it with --script-timeout".into()),
        ));
    }
    result?
}

fn timeout_message(limits: &Limits) -> String {
    format!(
        "the script ran longer than {} (the wall-clock limit)",
        crate::units::format_duration(limits.timeout)
    )
}

/// Stack reserved for the script thread.
const SCRIPT_STACK: usize = 1 << 30;

fn run_here(
    name: &str,
    source: &str,
    args: &[String],
    s: &mut Session,
    limits: Limits,
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
            Err(e) => {
                let hint = matches!(e.err_type(), rhai::ParseErrorType::ExprTooDeep).then(|| {
                    "split it into smaller expressions with variables (at most 128 levels of nesting)"
                        .to_string()
                });
                Err(located(
                    name,
                    source,
                    e.position(),
                    &e.err_type().to_string(),
                    hint,
                ))
            }
            Ok(ast) => match engine.run_ast_with_scope(&mut scope, &ast) {
                Ok(()) => Ok(0),
                Err(e) => outcome(name, source, *e, &limits),
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

/// Turn how a script ended into an exit status or an error.
fn outcome(name: &str, source: &str, e: EvalAltResult, limits: &Limits) -> Result<i32> {
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

/// `FILE:LINE:COL: message — hint`, then the source line and a caret.
/// Characters of a source line shown under a located error.
const SOURCE_WINDOW: usize = 120;

fn located(name: &str, source: &str, pos: Position, msg: &str, hint: Option<String>) -> Error {
    let (line, col) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
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
        && let Some(src) = source.lines().nth(line - 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_become_flags() {
        let mut m = Map::new();
        m.insert("count".into(), Dynamic::from(10_i64));
        m.insert("udp".into(), Dynamic::from(true));
        m.insert("bulk".into(), Dynamic::from(false));
        m.insert("c".into(), Dynamic::from(2_i64));
        m.insert("idle_timeout".into(), Dynamic::from("5s"));
        let w = words("echo", 1, &Dynamic::from(m), true).unwrap();
        assert_eq!(
            w,
            ["-c", "2", "--count", "10", "--idle-timeout", "5s", "--udp"]
        );
        assert!(words("echo", 0, &Dynamic::from(rhai::Array::new()), false).is_err());
        assert_eq!(
            words("echo", 0, &Dynamic::from(1.5_f64), false).unwrap(),
            ["1.5"]
        );
    }
}
