//! Script arguments to command words: each positional argument is one word
//! (an array, one word per item), a trailing options map becomes flags (`#{count: 5, udp: true}` →
//! `--count 5 --udp`), and the call goes through [`cmd::execute`] like a
//! line typed in the shell. The report comes back as a map with the fields
//! of `--json`; a failing command raises `#{code, message, hint}`.

use std::cell::RefCell;
use std::rc::Rc;

use rhai::{Dynamic, EvalAltResult, Map, Position};

use crate::cmd;
use crate::error::Error;
use crate::session::Session;

/// Arities registered for each command (positional words; a trailing map
/// counts as one).
pub(super) const MAX_ARGS: usize = 6;

/// A rhai error carrying a netsh error as `#{code, message, hint}`.
pub(super) fn raise(e: &Error) -> Box<EvalAltResult> {
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
pub(super) fn words(
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
    if let Some(items) = arg.read_lock::<rhai::Array>() {
        // A list of words: `monitor(["udp://a", "icmp://b"], #{count: 3})`.
        let mut out = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            if item.is_string() || item.is_int() || item.is_float() {
                out.push(item.to_string());
            } else {
                return Err(raise(&Error::usage(format!(
                    "{name}(): item {} of argument {} is {}; expected strings or numbers",
                    j + 1,
                    i + 1,
                    item.type_name()
                ))));
            }
        }
        return Ok(out);
    }
    if arg.is_blob() || arg.is_fnptr() {
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
pub(super) fn call(
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
            // The --json document itself: the same fields, the same rounding.
            rhai::serde::to_dynamic(report.to_value(outcome.command.unwrap_or(name)))
        }
        Err(e) => {
            let _ = s.log_error(&argv.join(" "), &e);
            Err(raise(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::{Dynamic, Map};

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
        let list: rhai::Array = vec![Dynamic::from("udp://a"), Dynamic::from(5_i64)];
        assert_eq!(
            words("monitor", 0, &Dynamic::from(list), false).unwrap(),
            ["udp://a", "5"]
        );
        let nested: rhai::Array = vec![Dynamic::from(Map::new())];
        assert!(words("echo", 0, &Dynamic::from(nested), false).is_err());
        assert_eq!(
            words("echo", 0, &Dynamic::from(1.5_f64), false).unwrap(),
            ["1.5"]
        );
    }
}
