//! The rhai engine of a script: the sandbox's limits, the progress hook
//! (Ctrl-C, the wall clock, the process's memory), `print`, and one
//! registration loop over [`COMMANDS`] plus netsh's few helpers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};

use super::Limits;
use super::args::{MAX_ARGS, call};
use crate::cmd::COMMANDS;
use crate::session::Session;

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
pub(super) fn build_engine(
    session: &Rc<RefCell<Session>>,
    limits: Limits,
    started: Instant,
) -> Engine {
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
    // `bulk(addr, #{mode: "send", udp: true, rate: "100M"})`: echo --bulk
    // with iperf3's words; the summary map is echo's document.
    let s = Rc::clone(session);
    engine.register_fn("bulk", move |addr: Dynamic| {
        call(&s, "echo", &[addr, bulk_options(Map::new())?.into()])
    });
    let s = Rc::clone(session);
    engine.register_fn("bulk", move |addr: Dynamic, opts: Map| {
        call(&s, "echo", &[addr, bulk_options(opts)?.into()])
    });
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
    engine.register_fn("join", |items: rhai::Array, sep: &str| {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(sep)
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

/// `bulk()`'s options as `echo`'s flags: `mode` (echo|send|recv) becomes
/// `--echo`/`--send`/`--recv`, `rate` `--bitrate`, `verify: false`
/// `--no-verify`; the rest pass as they are.
fn bulk_options(mut m: Map) -> std::result::Result<Map, Box<EvalAltResult>> {
    m.insert("bulk".into(), Dynamic::from(true));
    if let Some(mode) = m.remove("mode") {
        let mode = mode.to_string();
        match mode.as_str() {
            "echo" | "send" | "recv" => {
                m.insert(mode.as_str().into(), Dynamic::from(true));
            }
            _ => {
                return Err(super::args::raise(&crate::error::Error::usage(format!(
                    "bulk(): mode '{}' is not echo, send or recv",
                    crate::proto::escape::escape_controls(&mode)
                ))));
            }
        }
    }
    if let Some(rate) = m.remove("rate") {
        m.insert("bitrate".into(), rate);
    }
    if let Some(v) = m.remove("verify")
        && v.as_bool() == Ok(false)
    {
        m.insert("no_verify".into(), Dynamic::from(true));
    }
    Ok(m)
}
