//! The real `netsh` binary driven through argv, pipes and files: one-shot
//! commands, `--json`, exit statuses, settings layers (file, env, flag, set),
//! piped sessions, broken input and a closed stdout.
//!
//! Every test gets its own data directory (also the working directory) and a
//! scrubbed environment, so neither the host's `NETSH_*` variables nor files
//! left by another test can change what netsh sees.

use std::process::Command;

use serde_json::Value;

use crate::common::{DataDir, LIMIT, Output, bare_netsh, json, run, run_io, scrub_env};

impl DataDir {
    /// `settings --json` in a new process.
    fn settings(&self) -> Value {
        let r = self.run(&["settings", "--json"]);
        assert_eq!(r.code, Some(0), "{r:#?}");
        json(&r)
    }
}

/// Command words netsh has (more may be added: tests check these are there).
const COMMANDS: [&str; 5] = ["info", "set", "settings", "help", "exit"];
/// Settings netsh has, in `settings` order (more may be added).
const KEYS: [&str; 8] = [
    "server",
    "timeout",
    "retries",
    "sntp-server",
    "nodelay",
    "keepalive",
    "sndbuf",
    "rcvbuf",
];

/// The lines of `text` after the line `heading`, up to the next blank line.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| l.trim_end() != heading)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// The first word of each line of a `Commands:`-style section.
fn first_words<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// Every word of [`COMMANDS`] is in `listed`, each once.
fn assert_lists_commands(listed: &[&str]) {
    for c in COMMANDS {
        assert_eq!(
            listed.iter().filter(|w| **w == c).count(),
            1,
            "{c} in {listed:?}"
        );
    }
}

fn assert_ok_quiet(r: &Output) {
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.stderr, "", "{r:#?}");
}

/// One stderr line starting with `prefix`, nothing on stdout, exit status 2.
fn assert_usage_failure(r: &Output, prefix: &str) {
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert_eq!(r.stdout, "", "{r:#?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {r:#?}");
    assert!(lines[0].starts_with(prefix), "expected {prefix:?}…: {r:#?}");
}

/// `{"schema": "netsh/1", "command": …, "error": {"code": CODE, "message": "…",
/// "hint": …}}` and nothing else.
fn assert_json_error(r: &Output, code: &str) -> Value {
    assert_ne!(r.code, Some(0), "{r:#?}");
    let v = json(r);
    let top: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(top, ["schema", "command", "error"], "{v}");
    assert_eq!(v["schema"], "netsh/1", "{v}");
    assert!(v["command"].is_string() || v["command"].is_null(), "{v}");
    let e = &v["error"];
    let keys: Vec<&String> = e.as_object().expect("error is an object").keys().collect();
    assert_eq!(keys, ["code", "message", "hint"], "{v}");
    assert_eq!(e["code"], code, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["hint"].is_string() || e["hint"].is_null(), "{v}");
    e.clone()
}

// ---- help and version ---------------------------------------------------

#[test]
fn version() {
    let d = DataDir::new();
    let r = d.run(&["--version"]);
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, format!("netsh {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn top_level_help_lists_every_command() {
    let d = DataDir::new();
    let r = d.run(&["--help"]);
    assert_ok_quiet(&r);
    assert!(
        r.stdout.contains("Usage: netsh [OPTIONS] [COMMAND]..."),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("--data-dir <DIR>"), "{}", r.stdout);
    assert!(
        r.stdout.contains("-o, --option <KEY=VALUE>"),
        "{}",
        r.stdout
    );
    assert_lists_commands(&first_words(&section(&r.stdout, "Commands:")));
    assert!(
        r.stdout
            .contains("Exit status: 0 ok, 1 failed, 2 usage error"),
        "{}",
        r.stdout
    );
}

#[test]
fn command_help_flag() {
    let d = DataDir::new();
    let r = d.run(&["info", "--help"]);
    assert_ok_quiet(&r);
    assert!(
        r.stdout.starts_with("This machine: host name"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Usage: info [OPTIONS] [IFACE]"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("--json"), "{}", r.stdout);
    // Same text as `help info`.
    assert_eq!(d.run(&["help", "info"]).stdout, r.stdout);
}

#[test]
fn help_lists_every_command() {
    let d = DataDir::new();
    let r = d.run(&["help"]);
    assert_ok_quiet(&r);
    assert!(r.stdout.starts_with("Commands:\n"), "{}", r.stdout);
    assert_lists_commands(&first_words(&section(&r.stdout, "Commands:")));
    let help_line = r.stdout.lines().find(|l| l.starts_with("  help ")).unwrap();
    assert!(help_line.ends_with("(also: ?)"), "{help_line}");

    let v = json(&d.run(&["help", "--json"]));
    let names: Vec<&str> = v["commands"]
        .as_array()
        .expect("commands array")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_lists_commands(&names);
    for c in v["commands"].as_array().unwrap() {
        assert!(
            c["usage"]
                .as_str()
                .unwrap()
                .starts_with(c["name"].as_str().unwrap()),
            "{c}"
        );
        assert!(c["summary"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    }
}

#[test]
fn help_for_one_command() {
    let d = DataDir::new();
    // Issue 16: `help serve` says how to expose the server, in four steps,
    // each naming flags that exist.
    let r = d.run(&["help", "serve"]);
    assert_ok_quiet(&r);
    let steps = section(
        &r.stdout,
        "Exposing the server beyond loopback, in four steps:",
    )
    .join("\n");
    assert_eq!(steps.lines().count(), 4, "{}", r.stdout);
    for (flag, option) in [
        ("--allow", "--allow <CIDR>"),
        ("--chat-key", "--chat-key <FILE>"),
        ("--tls-self-signed", "--tls-self-signed"),
        ("--max-per-ip", "--max-per-ip <N>"),
        ("--chat-rate", "--chat-rate <RATE>"),
    ] {
        assert!(steps.contains(flag), "{flag} in: {steps}");
        assert!(
            r.stdout.contains(option),
            "{option} is a serve option: {}",
            r.stdout
        );
    }
    let r = d.run(&["help", "set"]);
    assert_ok_quiet(&r);
    assert!(
        r.stdout.contains("Usage: set [OPTIONS] [KEY]"),
        "{}",
        r.stdout
    );
    let subs = first_words(&section(&r.stdout, "Commands:"));
    for k in KEYS {
        assert!(subs.contains(&k), "help set lists {k}: {}", r.stdout);
    }
    // The alias works too.
    assert_eq!(d.run(&["?", "set"]).stdout, r.stdout);

    let v = json(&d.run(&["help", "set", "--json"]));
    assert_eq!(
        (&v["command"], &v["topic"]),
        (&"help".into(), &"set".into())
    );
    assert_eq!(v["usage"], "set [OPTIONS] [KEY]");
    assert!(v["help"].as_str().unwrap().contains("sntp-server"), "{v}");

    let r = d.run(&["help", "nosuch"]);
    assert_usage_failure(&r, "error[unknown-command]: unknown command 'nosuch'");
}

// ---- info -----------------------------------------------------------------

#[test]
fn info_one_shot() {
    let d = DataDir::new();
    let r = d.run(&["info"]);
    assert_ok_quiet(&r);
    let labels: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    for want in ["Host name", "Interfaces", "Gateways", "DNS servers"] {
        assert!(labels.contains(&want), "{want} in {}", r.stdout);
    }
    assert!(r.stdout.contains(" lo "), "{}", r.stdout);
}

#[test]
fn info_one_interface() {
    let d = DataDir::new();
    let r = d.run(&["info", "lo"]);
    assert_ok_quiet(&r);
    // Interface heads look like "   1: lo         UP  loopback …".
    let heads: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(heads.len(), 1, "{}", r.stdout);
    assert_eq!(
        heads[0].split_whitespace().nth(1),
        Some("lo"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("inet  127.0.0.1/8 scope host"),
        "{}",
        r.stdout
    );
}

#[test]
fn info_unknown_interface() {
    let d = DataDir::new();
    let r = d.run(&["info", "no-such-iface"]);
    assert_usage_failure(&r, "error[bad-value]: no interface named 'no-such-iface'");
    // The hint lists the interfaces there are.
    assert!(
        r.stderr.contains("this machine has: ") && r.stderr.contains("lo"),
        "{r:#?}"
    );
}

#[test]
fn info_interface_name_with_escape_codes_is_shown_escaped() {
    let d = DataDir::new();
    let r = d.run(&["info", "\u{1b}[2Jx"]);
    assert_usage_failure(&r, "error[bad-value]: no interface named '\\x1b[2Jx'");
    assert!(!r.stderr.contains('\u{1b}'), "{r:#?}");
    let log = std::fs::read_to_string(d.path().join("logs/errors.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn info_json() {
    let d = DataDir::new();
    let r = d.run(&["info", "--json"]);
    assert_ok_quiet(&r);
    let v = json(&r);
    assert!(v["hostname"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
    let ifs = v["interfaces"].as_array().expect("interfaces");
    assert!(ifs.iter().any(|i| i["name"] == "lo"), "{v}");
    assert!(
        v["gateways"].is_array() && v["dns"]["servers"].is_array(),
        "{v}"
    );

    let v = json(&d.run(&["info", "lo", "--json"]));
    let ifs = v["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 1, "{v}");
    assert_eq!(ifs[0]["name"], "lo");
    // --json may come before the interface name too.
    assert_eq!(
        json(&d.run(&["info", "--json", "lo"]))["interfaces"],
        v["interfaces"]
    );
}

#[test]
fn json_errors_are_json() {
    let d = DataDir::new();
    let r = d.run(&["info", "nosuch", "--json"]);
    assert_eq!(r.code, Some(2));
    let e = assert_json_error(&r, "bad-value");
    assert_eq!(e["message"], "no interface named 'nosuch'");

    let r = d.run(&["info", "--bogus", "--json"]);
    assert_eq!(r.code, Some(2));
    let e = assert_json_error(&r, "usage");
    assert!(e["message"].as_str().unwrap().contains("--bogus"), "{e}");

    let r = d.run(&["ifno", "--json"]);
    assert_eq!(r.code, Some(2));
    let e = assert_json_error(&r, "unknown-command");
    assert_eq!(e["hint"], "did you mean 'info'? (type 'help' for the list)");

    let r = d.run(&["set", "retries", "99", "--json"]);
    assert_eq!(r.code, Some(2));
    assert_json_error(&r, "bad-value");

    // Every one of them is in the error log, too.
    let log = std::fs::read_to_string(d.path().join("logs/errors.log")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
}

// ---- unknown command and the error log ----------------------------------

#[test]
fn unknown_command_suggests_and_is_logged() {
    let d = DataDir::new();
    let before = chrono::Utc::now();
    let r = d.run(&["ifno"]);
    let after = chrono::Utc::now();
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "error[unknown-command]: unknown command 'ifno' — did you mean 'info'? (type 'help' for the list)\n"
    );

    let log = std::fs::read_to_string(d.path().join("logs/errors.log")).expect("logs/errors.log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    let (stamp, rest) = lines[0].split_once(' ').unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("timestamp {stamp:?}: {e}"))
        .with_timezone(&chrono::Utc);
    let slack = chrono::Duration::seconds(1);
    assert!(
        before - slack <= t && t <= after + slack,
        "{t} not in [{before}, {after}]"
    );
    assert_eq!(rest, format!("[ifno] {}", r.stderr.trim_end()));
}

// ---- settings -------------------------------------------------------------

#[test]
fn set_timeout_persists_across_processes() {
    let d = DataDir::new();
    let r = d.run(&["set", "timeout", "2.5"]);
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, "timeout = 2.5s  (was 3s; saved)\n");
    let conf = std::fs::read_to_string(d.conf()).unwrap();
    assert!(conf.lines().any(|l| l == "timeout = 2.5s"), "{conf}");

    let v = d.settings();
    assert_eq!(v["timeout"], 2.5);
    assert_eq!(v["sources"]["timeout"], "file");
    assert_eq!(v["sources"]["retries"], "default");
    assert_eq!(v["file"], d.conf().display().to_string());
    let keys: Vec<&str> = v["sources"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let known: Vec<&str> = keys.iter().copied().filter(|k| KEYS.contains(k)).collect();
    assert_eq!(known, KEYS, "every setting, in order");

    let r = d.run(&["set", "timeout", "500ms"]);
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, "timeout = 500ms  (was 2.5s; saved)\n");
    assert_eq!(d.settings()["timeout"], 0.5);

    // `set KEY` alone shows the value and where it came from.
    let r = d.run(&["set", "timeout"]);
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, "timeout = 500ms  (file)\n");
}

#[test]
fn set_server_survives_with_default_port() {
    let d = DataDir::new();
    let v = json(&d.run(&["set", "server", "10.1.2.3", "--json"]));
    assert_eq!(v["key"], "server");
    assert_eq!(v["value"], "10.1.2.3:5050");
    assert_eq!(v["previous"], "127.0.0.1:5050");
    assert_eq!(v["source"], "set");
    assert_eq!(v["changed"], true);
    let v = d.settings();
    assert_eq!(v["server"], "10.1.2.3:5050");
    assert_eq!(v["sources"]["server"], "file");
}

#[test]
fn bad_values_are_rejected_and_change_nothing() {
    let d = DataDir::new();
    // Nothing is created by a failed `set` in an empty data dir.
    let r = d.run(&["set", "retries", "99"]);
    assert_usage_failure(
        &r,
        "error[bad-value]: retries: '99' is not a whole number from 0 to 10",
    );
    assert!(
        !d.conf().exists(),
        "a rejected value wrote {}",
        d.conf().display()
    );

    assert_eq!(d.run(&["set", "timeout", "2.5"]).code, Some(0));
    let before = std::fs::read(d.conf()).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["timeout", "-1"], "'-1'"),
        (&["timeout", "banana"], "'banana'"),
        (&["retries", "99"], "'99'"),
        (&["server", "a b"], "'a b'"),
        (&["sndbuf", "12"], "'12'"),
        (&["nodelay", "maybe"], "'maybe'"),
    ];
    for (words, shown) in cases {
        let mut args = vec!["set"];
        args.extend_from_slice(words);
        let r = d.run(&args);
        assert_usage_failure(&r, "error[");
        assert!(
            r.stderr.contains(shown),
            "set {words:?} names {shown}: {r:#?}"
        );
        assert_eq!(
            std::fs::read(d.conf()).unwrap(),
            before,
            "set {words:?} changed the file"
        );
    }
    let v = d.settings();
    assert_eq!(v["timeout"], 2.5);
    for k in KEYS.iter().filter(|k| **k != "timeout") {
        assert_eq!(v["sources"][k], "default", "{k}: {v}");
    }
}

#[test]
fn set_default_removes_the_key_from_the_file() {
    let d = DataDir::new();
    assert_eq!(d.run(&["set", "timeout", "2.5"]).code, Some(0));
    assert_eq!(d.run(&["set", "retries", "3"]).code, Some(0));
    let r = d.run(&["set", "timeout", "default"]);
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, "timeout = 3s  (was 2.5s; saved)\n");
    let conf = std::fs::read_to_string(d.conf()).unwrap();
    assert!(!conf.contains("timeout"), "{conf}");
    assert!(conf.lines().any(|l| l == "retries = 3"), "{conf}");
    let v = d.settings();
    assert_eq!(v["timeout"], 3.0);
    assert_eq!(v["sources"]["timeout"], "default");
    assert_eq!(v["retries"], 3);
}

#[test]
fn environment_and_flag_layers() {
    let d = DataDir::new();
    assert_eq!(d.run(&["set", "timeout", "2.5"]).code, Some(0));
    let conf = std::fs::read(d.conf()).unwrap();

    let mut c = d.cmd(&[]);
    c.env("NETSH_TIMEOUT", "750ms").args(["settings", "--json"]);
    let r = run(c, None, LIMIT);
    assert_ok_quiet(&r);
    let v = json(&r);
    assert_eq!(v["timeout"], 0.75);
    assert_eq!(v["sources"]["timeout"], "env");

    // A flag beats the environment, which beats the file.
    let mut c = d.cmd(&[]);
    c.env("NETSH_TIMEOUT", "750ms")
        .args(["-o", "timeout=1s", "settings", "--json"]);
    let v = json(&run(c, None, LIMIT));
    assert_eq!(v["timeout"], 1.0);
    assert_eq!(v["sources"]["timeout"], "flag");

    let v = json(&d.run(&[
        "-o",
        "retries=4",
        "--option",
        "nodelay=off",
        "settings",
        "--json",
    ]));
    assert_eq!(
        (v["retries"].clone(), v["nodelay"].clone()),
        (4.into(), false.into())
    );
    assert_eq!(v["sources"]["retries"], "flag");
    assert_eq!(v["timeout"], 2.5, "the file still counts");
    assert_eq!(
        std::fs::read(d.conf()).unwrap(),
        conf,
        "-o and env write nothing"
    );

    // `set` while the environment overrides the key says so.
    let mut c = d.cmd(&[]);
    c.env("NETSH_TIMEOUT", "750ms")
        .args(["set", "timeout", "2", "--json"]);
    let v = json(&run(c, None, LIMIT));
    assert_eq!(v["value"], 2.0);
    assert!(
        v["note"]
            .as_str()
            .is_some_and(|n| n.contains("NETSH_TIMEOUT")),
        "{v}"
    );
}

#[test]
fn bad_flags_and_environment() {
    let d = DataDir::new();
    let r = d.run(&["-o", "bogus=1", "settings"]);
    assert_usage_failure(&r, "error[usage]: -o bogus=1: unknown setting 'bogus'");
    let r = d.run(&["-o", "timeout", "settings"]);
    assert_usage_failure(&r, "error[usage]: -o timeout: expected KEY=VALUE");
    let r = d.run(&["-o", "timeout=zz", "settings"]);
    assert_usage_failure(&r, "error[bad-value]: timeout: 'zz' is not a duration");

    // A bad environment value is a warning; the default stays.
    let mut c = d.cmd(&[]);
    c.env("NETSH_RETRIES", "99").args(["settings", "--json"]);
    let r = run(c, None, LIMIT);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(json(&r)["retries"], 1);
    assert_eq!(json(&r)["sources"]["retries"], "default");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(
        lines[0].starts_with("warning[bad-value]: ") && lines[0].contains("NETSH_RETRIES"),
        "{r:#?}"
    );
}

#[test]
fn a_full_disk_on_set_keeps_the_old_settings_and_no_debris() {
    // The temporary file lands on /dev/full: every write is ENOSPC, as on a
    // full disk.
    let d = DataDir::new();
    std::fs::write(d.conf(), "retries = 4\n").unwrap();
    let tmp = d.path().join("netsh.conf.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let r = d.piped("set retries 2\nsettings --json\n");
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr.lines().any(|l| l
            .starts_with("error[settings]: retries = 2 applied for this session but not saved")
            && l.contains("no space left on device")),
        "{r:#?}"
    );
    assert_eq!(std::fs::read_to_string(d.conf()).unwrap(), "retries = 4\n");
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "the cut temporary file is left behind"
    );
}

#[test]
fn netsh_own_bad_flags_are_one_line_or_json() {
    use std::os::unix::ffi::OsStrExt;
    let d = DataDir::new();
    let r = d.run(&["--max-operations", "abc", "-e", "1"]);
    assert_usage_failure(
        &r,
        "error[bad-value]: netsh: invalid value 'abc' for '--max-operations <N>'",
    );
    let mut c = bare_netsh(d.path());
    c.arg("--data-dir");
    let r = run(c, None, LIMIT);
    assert_usage_failure(
        &r,
        "error[bad-value]: netsh: a value is required for '--data-dir <DIR>'",
    );
    // Invalid UTF-8 in an argument, with --json: a JSON error on stdout.
    let mut c = d.cmd(&[]);
    c.arg("echo")
        .arg(std::ffi::OsStr::from_bytes(b"\xff"))
        .arg("--json");
    let r = run(c, None, LIMIT);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert_eq!(json(&r)["error"]["code"], "bad-value", "{r:#?}");
    // A command with subcommands keeps its usage on the one line.
    let r = d.run(&["serve", "--port", "abc"]);
    assert_usage_failure(
        &r,
        "error[bad-value]: serve: invalid value 'abc' for '--port <PORT>'",
    );
}

#[test]
fn netsh_home_is_the_data_dir() {
    let home = DataDir::new();
    let cwd = DataDir::new();
    let mut c = bare_netsh(cwd.path());
    c.env("NETSH_HOME", home.path())
        .args(["set", "retries", "5"]);
    assert_ok_quiet(&run(c, None, LIMIT));
    assert!(home.conf().exists());
    assert!(!cwd.conf().exists());
    assert_eq!(home.settings()["retries"], 5);

    let mut c = bare_netsh(cwd.path());
    c.env("NETSH_HOME", home.path())
        .args(["settings", "--json"]);
    assert_eq!(json(&run(c, None, LIMIT))["files_from"], "env");
    assert_eq!(home.settings()["files_from"], "flag");
}

/// A copy of the binary outside the checkout, as an installed netsh is.
fn installed_netsh(dir: &DataDir) -> std::path::PathBuf {
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let exe = bin.join("netsh");
    std::fs::copy(env!("CARGO_BIN_EXE_netsh"), &exe).expect("copy netsh");
    exe
}

#[test]
fn an_installed_netsh_keeps_its_files_in_the_xdg_directories_not_the_working_one() {
    let root = DataDir::new();
    let exe = installed_netsh(&root);
    let home = root.path().join("home");
    let cwd = root.path().join("elsewhere");
    std::fs::create_dir_all(&cwd).expect("cwd");
    let netsh = |env: &[(&str, std::path::PathBuf)], args: &[&str]| {
        let mut c = Command::new(&exe);
        scrub_env(&mut c)
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", &home)
            .current_dir(&cwd)
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(c, None, LIMIT)
    };
    // A failing one-shot command logs where the state lives.
    let r = netsh(&[], &["ifno"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(home.join(".local/state/netsh/logs/errors.log").is_file());
    let r = netsh(&[], &["set", "retries", "4"]);
    assert_ok_quiet(&r);
    assert!(home.join(".config/netsh/netsh.conf").is_file());
    assert!(
        std::fs::read_dir(&cwd).expect("cwd").next().is_none(),
        "nothing in the working directory"
    );
    // Another working directory sees the same settings.
    let r = netsh(&[], &["settings", "--json"]);
    let j = json(&r);
    assert_eq!(j["retries"], 4, "{j}");
    assert_eq!(j["files_from"], "xdg", "{j}");
    assert_eq!(
        j["history"],
        home.join(".local/state/netsh/history/netsh_history")
            .display()
            .to_string()
    );
    // XDG_STATE_HOME and XDG_CONFIG_HOME move them.
    let (state, config) = (root.path().join("state"), root.path().join("config"));
    let env = [
        ("XDG_STATE_HOME", state.clone()),
        ("XDG_CONFIG_HOME", config.clone()),
    ];
    let r = netsh(&env, &["set", "retries", "7"]);
    assert_ok_quiet(&r);
    assert!(config.join("netsh/netsh.conf").is_file());
    let r = netsh(&env, &["bogus"]);
    assert_eq!(r.code, Some(2));
    assert!(state.join("netsh/logs/errors.log").is_file());
}

#[test]
fn netsh_run_from_its_checkout_keeps_its_files_in_the_checkout() {
    // `cargo run` starts target/…/netsh: the checkout's history/ and logs/.
    let cwd = DataDir::new();
    let mut c = bare_netsh(cwd.path());
    c.args(["settings", "--json"]);
    let r = run(c, None, LIMIT);
    let j = json(&r);
    assert_eq!(j["files_from"], "checkout", "{j}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(j["logs"], root.join("logs").display().to_string(), "{j}");
    assert_eq!(
        j["file"],
        root.join("netsh.conf").display().to_string(),
        "{j}"
    );
}

#[test]
fn garbage_settings_file_warns_and_keeps_good_lines() {
    let d = DataDir::new();
    let mut junk: Vec<u8> = Vec::new();
    junk.extend_from_slice(b"\xff\xfe\x00\x01garbage\x00\n");
    junk.extend_from_slice(b"\x80\x81 = \xc3\x28\n");
    junk.extend_from_slice(b"retries = 4\n");
    junk.extend_from_slice(b"=\n  ==  \n");
    junk.extend_from_slice(b"timeout = \x00\x1b[2J\x07\n");
    junk.extend_from_slice(b"server = a b c\n");
    // Deterministic pseudo-random bytes (no newline inside, so one bad line).
    let mut x: u32 = 0x9e37_79b9;
    let noise: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .map(|b| if b == b'\n' { 0 } else { b })
        .collect();
    junk.extend_from_slice(&noise);
    junk.extend_from_slice(b"\n\x00\x00\x00");
    std::fs::write(d.conf(), &junk).unwrap();

    let r = d.run(&["settings", "--json"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    let v = json(&r);
    assert_eq!(v["retries"], 4);
    assert_eq!(v["sources"]["retries"], "file");
    for k in KEYS.iter().filter(|k| **k != "retries") {
        assert_eq!(v["sources"][k], "default", "{k}: {v}");
    }
    assert_eq!(v["timeout"], 3.0);
    assert_eq!(v["server"], "127.0.0.1:5050");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.len() >= 5, "{r:#?}");
    for l in &lines {
        assert!(
            l.starts_with("warning[settings]: "),
            "one prefix, not two: {l:?}"
        );
        assert!(l.contains("netsh.conf"), "warning names the file: {l:?}");
    }
    assert!(
        !r.stderr.chars().any(|c| c.is_control() && c != '\n'),
        "control bytes from the file reached stderr: {:?}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(d.conf()).unwrap(),
        junk,
        "reading changed the file"
    );
}

#[test]
fn escape_sequences_in_a_bad_option_are_not_echoed_raw() {
    let d = DataDir::new();
    let r = d.run(&["-o", "\x1b[2J=1", "info"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(!r.stderr.contains('\x1b'), "{r:#?}");
    assert!(r.stderr.contains("unknown setting '\\x1b[2J'"), "{r:#?}");
}

#[test]
fn a_settings_path_that_never_ends_warns_and_runs() {
    // /dev/zero has no length to check up front and reads forever: only a
    // capped read stops it.
    let d = DataDir::new();
    std::os::unix::fs::symlink("/dev/zero", d.conf()).unwrap();
    let r = d.run(&["settings", "--json"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    let v = json(&r);
    for k in KEYS {
        assert_eq!(v["sources"][k], "default", "{k}: {v}");
    }
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(
        lines[0].starts_with("warning[settings]: settings file ")
            && lines[0].contains("netsh.conf is over 65536 bytes, ignored"),
        "{r:#?}"
    );
}

#[test]
fn unreadable_settings_path_warns_and_runs() {
    let d = DataDir::new();
    std::fs::create_dir(d.conf()).unwrap();
    let r = d.run(&["settings", "--json"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    let v = json(&r);
    for k in KEYS {
        assert_eq!(v["sources"][k], "default", "{k}: {v}");
    }
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(
        lines[0].starts_with("warning[io]: ") && lines[0].contains("netsh.conf"),
        "{r:#?}"
    );

    // `set` applies for the session but cannot save: status 1, says why.
    let r = d.piped("set retries 2\nsettings --json\n");
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr.lines().any(|l| l
            .starts_with("error[settings]: retries = 2 applied for this session but not saved")),
        "{r:#?}"
    );
    assert_eq!(json(&r)["retries"], 2);
}

// ---- piped sessions -------------------------------------------------------

/// The JSON document at the end of a session's stdout (it starts at a line
/// that is exactly `{`).
fn last_json(stdout: &str) -> Value {
    let start = stdout.rfind("\n{\n").map_or(0, |i| i + 1);
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn piped_session_runs_every_line_plainly() {
    let d = DataDir::new();
    let r = d.piped("info lo\nset retries 2\nsettings --json\n");
    assert_ok_quiet(&r);
    assert!(
        r.stdout.contains("inet  127.0.0.1/8 scope host"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\nretries = 2  (was 1; saved)\n"),
        "{}",
        r.stdout
    );
    let v = last_json(&r.stdout);
    assert_eq!(v["retries"], 2);
    assert_eq!(v["sources"]["retries"], "set");
    assert!(
        !r.stdout.contains("netsh 127.0.0.1:5050>"),
        "a prompt: {}",
        r.stdout
    );
    assert!(
        !r.stdout.lines().any(|l| l.starts_with("netsh")),
        "a prompt: {}",
        r.stdout
    );
    assert!(!r.stdout.contains('\u{1b}'), "escape codes: {:?}", r.stdout);
    // Piped mode keeps no history.
    assert!(!d.path().join("history/netsh_history").exists());
    assert!(!d.path().join("history").exists());
}

#[test]
fn piped_session_goes_on_after_a_failing_line() {
    let d = DataDir::new();
    let r = d.piped("ifno\nset retries 5\n");
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert_eq!(
        r.stderr,
        "error[unknown-command]: unknown command 'ifno' — did you mean 'info'? (type 'help' for the list)\n"
    );
    assert_eq!(r.stdout, "retries = 5  (was 1; saved)\n");
    assert_eq!(d.settings()["retries"], 5);
}

#[test]
fn piped_unbalanced_quote() {
    let d = DataDir::new();
    let r = d.piped("set server \"10.0.0.1\nset retries 6\n");
    assert_eq!(r.code, Some(2), "{r:#?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(
        lines[0].starts_with("error[usage]: unbalanced quote"),
        "{r:#?}"
    );
    assert_eq!(r.stdout, "retries = 6  (was 1; saved)\n");
    assert_eq!(d.settings()["server"], "127.0.0.1:5050");
    // A balanced quote is one word.
    let r = d.piped("set server \"10.0.0.1\"\n");
    assert_ok_quiet(&r);
    assert_eq!(d.settings()["server"], "10.0.0.1:5050");
}

#[test]
fn piped_invalid_utf8_line_is_skipped() {
    let d = DataDir::new();
    let r = d.piped(b"\xff\xfe info\nset retries 7\n");
    assert_eq!(r.code, Some(2), "{r:#?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(
        lines[0].starts_with("error[usage]: line 1 is not valid UTF-8"),
        "{r:#?}"
    );
    assert_eq!(r.stdout, "retries = 7  (was 1; saved)\n");
}

#[test]
fn piped_over_long_line_is_skipped() {
    let d = DataDir::new();
    let mut input = b"set retries 3\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100 * 1024));
    input.extend_from_slice(b"\nset retries 8\n");
    let r = d.piped(&input);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert_eq!(
        r.stdout,
        "retries = 3  (was 1; saved)\nretries = 8  (was 3; saved)\n"
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(
        lines[0].starts_with("error[usage]: line 2 is longer than 65536 bytes; skipped"),
        "{r:#?}"
    );
    // Neither the message nor the log repeats the line.
    assert!(lines[0].len() < 200, "{}", lines[0].len());
    let log = std::fs::read_to_string(d.path().join("logs/errors.log")).unwrap();
    assert!(log.len() < 400 && log.contains("line 2 is longer"), "{log}");
}

#[test]
fn piped_blank_lines_and_comments_do_nothing() {
    let d = DataDir::new();
    let r = d.piped("\n   \n# set retries 9\n\t# another\n  #\nset retries 4\r\n\n");
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, "retries = 4  (was 1; saved)\n");
    assert_eq!(d.settings()["retries"], 4);
    // No input at all is a fine, empty session.
    let r = d.piped("");
    assert_ok_quiet(&r);
    assert_eq!(r.stdout, "");
}

#[test]
fn piped_exit_stops_reading() {
    for word in ["exit", "quit"] {
        let d = DataDir::new();
        let r = d.piped(format!("set retries 3\n{word}\nset retries 9\nifno\n"));
        assert_ok_quiet(&r);
        assert_eq!(r.stdout, "retries = 3  (was 1; saved)\n", "{word}");
        assert_eq!(d.settings()["retries"], 3, "{word}");
    }
    // `exit` keeps the status of an earlier failure.
    let d = DataDir::new();
    let r = d.piped("ifno\nexit\n");
    assert_eq!(r.code, Some(2), "{r:#?}");
}

// ---- output plumbing ------------------------------------------------------

#[test]
fn closed_stdout_ends_quietly() {
    let d = DataDir::new();
    let cases: [(&[&str], Option<&[u8]>); 5] = [
        (&["info"], None),
        (&["info", "--json"], None),
        (&["help"], None),
        (&["--help"], None),
        (&[], Some(b"info\nhelp\nsettings\n")),
    ];
    for (args, input) in cases {
        // The reading end is gone before netsh starts: every write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = d.cmd(&[]);
        c.args(args);
        let r = run_io(c, input, writer.into(), LIMIT);
        assert_eq!(r.code, Some(0), "netsh {args:?}: {r:#?}");
        assert!(!r.stderr.contains("panicked"), "netsh {args:?}: {r:#?}");
        assert_eq!(r.stderr, "", "netsh {args:?}");
    }
}

#[test]
fn stdout_through_head() {
    let d = DataDir::new();
    let mut sh = Command::new("sh");
    scrub_env(&mut sh)
        .current_dir(d.path())
        .env("NETSH_HOME", d.path())
        .arg("-c")
        .arg(r#"{ "$0" info; echo "netsh-status=$?" >&2; } | head -1"#)
        .arg(env!("CARGO_BIN_EXE_netsh"));
    let r = run(sh, None, LIMIT);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stdout.starts_with("Host name"), "{r:#?}");
    assert_eq!(r.stdout.lines().count(), 1, "{r:#?}");
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
    assert!(r.stderr.lines().any(|l| l == "netsh-status=0"), "{r:#?}");
}

#[test]
fn no_escape_codes_without_a_terminal() {
    let d = DataDir::new();
    for no_color in [None, Some("1")] {
        let mut c = d.cmd(&[]);
        c.env("TERM", "xterm-256color").args(["info"]);
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let r = run(c, None, LIMIT);
        assert_ok_quiet(&r);
        assert!(
            !r.stdout.contains('\u{1b}'),
            "NO_COLOR={no_color:?}: {:?}",
            r.stdout
        );

        let mut c = d.cmd(&[]);
        c.env("TERM", "xterm-256color").args(["ifno"]);
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let r = run(c, None, LIMIT);
        assert_eq!(r.code, Some(2));
        assert!(
            !r.stderr.contains('\u{1b}'),
            "NO_COLOR={no_color:?}: {:?}",
            r.stderr
        );
    }
}

// ---- once known bugs (see the report that added this file) ---------------
// Each of these states the behaviour netsh should have; they were `ignore`d
// until the fix.

#[test]
fn socket_buffer_default_does_not_crash() {
    let d = DataDir::new();
    assert_eq!(d.run(&["set", "sndbuf", "64k"]).code, Some(0));
    assert_eq!(d.settings()["sndbuf"], 65536);
    let r = d.run(&["set", "sndbuf", "default"]);
    assert_ok_quiet(&r);
    let v = d.settings();
    assert_eq!(v["sndbuf"], Value::Null);
    assert!(
        !std::fs::read_to_string(d.conf())
            .unwrap()
            .contains("sndbuf")
    );

    let r = d.run(&["-o", "rcvbuf=default", "settings", "--json"]);
    assert_ok_quiet(&r);
    let mut c = d.cmd(&[]);
    c.env("NETSH_SNDBUF", "default")
        .args(["settings", "--json"]);
    assert_ok_quiet(&run(c, None, LIMIT));
    // The word `set` documents (BYTES|default) in the file must not stop netsh.
    std::fs::write(d.conf(), "rcvbuf = default\n").unwrap();
    let r = d.run(&["info", "lo"]);
    assert_ok_quiet(&r);
}

#[test]
fn piped_line_of_exactly_max_line_bytes_is_accepted() {
    let d = DataDir::new();
    // A 65536-byte comment line, then a command.
    let mut input = b"#".to_vec();
    input.extend(std::iter::repeat_n(b'x', 64 * 1024 - 1));
    input.extend_from_slice(b"\nset retries 2\n");
    let r = d.piped(&input);
    assert_ok_quiet(&r);
}

#[test]
fn help_names_each_alias_once() {
    let d = DataDir::new();
    let r = d.run(&["help"]);
    let exit = r.stdout.lines().find(|l| l.starts_with("  exit ")).unwrap();
    assert_eq!(exit.matches("quit").count(), 1, "{exit}");
}

#[test]
fn negative_timeout_is_a_bad_value() {
    let d = DataDir::new();
    let r = d.run(&["set", "timeout", "-1"]);
    assert_usage_failure(&r, "error[bad-value]: timeout: '-1' is not a duration");
}

#[test]
fn set_switch_accepts_what_the_file_accepts() {
    let d = DataDir::new();
    assert_eq!(
        json(&d.run(&["-o", "nodelay=no", "settings", "--json"]))["nodelay"],
        false
    );
    for word in ["no", "false", "0", "OFF"] {
        let r = d.run(&["set", "nodelay", word]);
        assert_ok_quiet(&r);
        assert_eq!(d.settings()["nodelay"], false, "set nodelay {word}");
    }
    // A bad switch is a bad value, like every other bad setting value.
    let r = d.run(&["set", "nodelay", "maybe"]);
    assert_usage_failure(&r, "error[bad-value]: ");
    assert!(r.stderr.contains("'maybe'"), "{r:#?}");
}

#[test]
fn bad_option_with_json_is_a_json_error() {
    let d = DataDir::new();
    let r = d.run(&["-o", "bogus=1", "settings", "--json"]);
    assert_eq!(r.code, Some(2));
    assert_json_error(&r, "usage");
}
