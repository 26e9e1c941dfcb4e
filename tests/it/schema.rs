//! Every `--json` document and every script map against
//! docs/netsh.schema.json: each command run for real (loopback, a
//! namespace chain for trace), its output validated, and the schema shown
//! to reject what it should, so a field renamed, added or dropped in the
//! code without the schema fails here.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{DataDir, Output, show, start_server};
use crate::netns::{Chain, netsh_in_ns};

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/netsh.schema.json");
        let text = std::fs::read_to_string(path).expect("read docs/netsh.schema.json");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("docs/netsh.schema.json is not a valid schema: {e}"))
    })
}

/// The schema's complaints about `doc`, one per line; empty when valid.
fn complaints(doc: &Value) -> String {
    validator()
        .iter_errors(doc)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_valid(what: &str, doc: &Value) {
    let c = complaints(doc);
    assert!(
        c.is_empty(),
        "{what}: not as docs/netsh.schema.json says:\n{c}\n{doc:#}"
    );
}

fn assert_invalid(what: &str, doc: &Value) {
    assert!(
        !complaints(doc).is_empty(),
        "the schema accepts {what}:\n{doc:#}"
    );
}

/// Every JSON document on stdout (pretty-printed ones follow each other).
fn documents(o: &Output) -> Vec<Value> {
    serde_json::Deserializer::from_str(&o.stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON documents ({e}):\n{}", show(o)))
}

/// Run `netsh ARGS… --json`, expect `status`, validate the one document;
/// returns it.
fn check(d: &DataDir, args: &[&str], status: i32) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = d.run(&a);
    assert_eq!(o.code, Some(status), "{a:?}: {}", show(&o));
    let docs = documents(&o);
    assert_eq!(docs.len(), 1, "{a:?}: one document: {}", show(&o));
    assert_valid(&a.join(" "), &docs[0]);
    docs[0].clone()
}

/// A TCP "echo server" that answers every line with `reply`.
fn wrong_echo_server(reply: &'static str) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let t = std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut w = s;
        let mut line = String::new();
        if r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = w.write_all(reply.as_bytes());
        }
    });
    (addr, t)
}

#[test]
fn every_command_prints_what_the_schema_says() {
    let srv = start_server("127.0.0.1");
    let a = srv.addr.to_string();
    let ntp = srv.ntp_addr.expect("SNTP responder").to_string();
    let d = DataDir::new();

    check(&d, &["info"], 0);
    check(&d, &["info", "lo"], 0);

    let e = check(&d, &["echo", &a, "hello"], 0);
    assert_eq!(
        (&e["mode"], &e["failure"]),
        (&json!("single"), &Value::Null)
    );
    check(&d, &["echo", &a, "-c", "3", "-i", "0"], 0);
    check(&d, &["echo", &a, "-c", "3", "-i", "0", "--udp"], 0);
    check(&d, &["echo", &a, "--bulk", "-n", "1M"], 0);
    check(&d, &["echo", &a, "--bulk", "--send", "-n", "1M"], 0);
    check(
        &d,
        &["echo", &a, "--bulk", "-R", "-n", "1M", "--no-verify"],
        0,
    );
    check(
        &d,
        &["echo", &a, "--bulk", "--udp", "-b", "10M", "-n", "100K"],
        0,
    );

    // Reports that fail still report, and say why in `failure`.
    let (wrong, t) = wrong_echo_server("ECHO_RESPONSE:hellp\n");
    let e = check(&d, &["echo", &wrong, "hello"], 3);
    t.join().expect("fake server");
    assert_eq!(e["failure"]["code"], "mismatch", "{e:#}");
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let quiet = silent.local_addr().expect("addr").to_string();
    let e = check(
        &d,
        &[
            "-o",
            "timeout=100ms",
            "echo",
            &quiet,
            "--udp",
            "-c",
            "2",
            "-i",
            "0",
        ],
        1,
    );
    assert_eq!(e["failure"]["code"], "timed-out", "{e:#}");
    assert!(e["rtt"].is_null(), "{e:#}");

    check(&d, &["ping", "127.0.0.1", "-c", "2", "-i", "0.01"], 0);
    check(&d, &["ping", "::1", "-c", "2", "-i", "0.01"], 0);
    check(&d, &["tcping", &a, "-c", "2", "-i", "0.01"], 0);
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let e = check(&d, &["tcping", &closed, "-c", "2", "-i", "0.01"], 1);
    assert_eq!(e["failure"]["code"], "connection-refused", "{e:#}");
    // monitor --json: NDJSON records, the summary last; every one valid.
    let silent_addr = silent.local_addr().expect("addr");
    let o = d.run(&[
        "-o",
        "timeout=100ms",
        "monitor",
        &format!("echo://{a}"),
        &format!("udp://{silent_addr}"),
        &format!("sntp://{ntp}"),
        "icmp://127.0.0.1",
        &format!("tcp://{closed}"),
        "-c",
        "2",
        "-i",
        "20ms",
        "--warn",
        "100ms/10%",
        "--json",
    ]);
    assert_eq!(o.code, Some(2), "{}", show(&o));
    let recs = crate::common::json_lines(&o);
    assert_eq!(recs.len(), 5 * 2 + 1, "{}", show(&o));
    for r in &recs {
        assert_valid("monitor record", r);
    }
    assert_eq!(recs[recs.len() - 1]["failure"]["code"], "critical");
    check(&d, &["trace", "127.0.0.1", "-q", "1"], 0);
    check(&d, &["trace", "::1", "--report", "-c", "2"], 0);

    let t = check(&d, &["sntp", &ntp, "-c", "2", "-i", "0"], 0);
    assert_eq!(
        t["best_sample"],
        t["samples"][u(&t["best_sample"]) - 1]["sample"]
    );

    let o = crate::common::netsh_in(
        d.path(),
        &["chat", &a, "--nick", "schema", "--json"],
        Some(b"hello\n"),
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    assert_valid("chat", &documents(&o)[0]);

    check(&d, &["serve", "status"], 0);
    d.write("t.rhai", "print(\"from the script\");\n");
    let o = d.run(&["run", "t.rhai", "--json"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let json_part = o
        .stdout
        .strip_prefix("from the script\n")
        .unwrap_or_else(|| panic!("the script prints first: {}", show(&o)));
    assert_valid("run", &serde_json::from_str(json_part).expect("JSON"));

    check(&d, &["set", "timeout", "2s"], 0);
    check(&d, &["set", "nodelay", "off"], 0);
    check(&d, &["set", "sndbuf", "64K"], 0);
    check(&d, &["set", "timeout"], 0);
    assert_eq!(check(&d, &["set"], 0)["command"], "settings");
    check(&d, &["settings"], 0);
    check(&d, &["help"], 0);
    assert_eq!(check(&d, &["help", "echo"], 0)["topic"], "echo");
    assert_eq!(check(&d, &["echo", "--help"], 0)["command"], "help");
    check(&d, &["exit"], 0);

    // Errors, with and without a command.
    let e = check(&d, &["echo", &closed, "x"], 1);
    assert_eq!(e["error"]["code"], "connection-refused");
    assert_eq!(e["command"], "echo");
    let e = check(&d, &["bogus"], 2);
    assert!(e["command"].is_null(), "{e:#}");
    check(&d, &["echo", "--bogus"], 2);
    check(&d, &["set", "timeout", "soon"], 2);
    check(&d, &["ping", "-c", "0", "127.0.0.1"], 2);
    check(&d, &["run", "missing.rhai"], 1);
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count")) as usize
}

#[test]
fn a_background_server_and_a_session_print_what_the_schema_says() {
    let d = DataDir::new();
    let o = d.piped(
        "serve --port 0 --metrics 0 --json\nserve status --json\nserve stop --json\nexit --json\n",
    );
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let docs = documents(&o);
    let actions: Vec<&Value> = docs.iter().map(|v| &v["action"]).collect();
    assert_eq!(
        actions,
        [
            &json!("started"),
            &json!("status"),
            &json!("stopped"),
            &Value::Null
        ]
    );
    for (i, doc) in docs.iter().enumerate() {
        assert_valid(&format!("session document {}", i + 1), doc);
    }
    assert!(
        docs[1]["metrics"]
            .as_str()
            .is_some_and(|m| m.starts_with("http://127.0.0.1:") && m.ends_with("/metrics")),
        "{:#}",
        docs[1]
    );
}

#[test]
fn script_maps_are_the_documents() {
    let srv = start_server("127.0.0.1");
    let a = srv.addr.to_string();
    let ntp = srv.ntp_addr.expect("SNTP responder").to_string();
    let d = DataDir::new();
    let calls = [
        "info()".to_string(),
        format!("echo(\"{a}\", \"hi\")"),
        format!("echo(\"{a}\", #{{count: 2, interval: \"0\"}})"),
        format!("echo(\"{a}\", #{{bulk: true, bytes: \"256K\"}})"),
        format!("bulk(\"{a}\", #{{mode: \"send\", bytes: \"256K\"}})"),
        format!("bulk(\"{a}\", #{{mode: \"send\", udp: true, rate: \"100M\", bytes: \"256K\"}})"),
        "ping(\"127.0.0.1\", #{count: 2, interval: \"0.01\"})".to_string(),
        format!("tcping(\"{a}\", #{{count: 2, interval: \"0.01\"}})"),
        "trace(\"127.0.0.1\", #{queries: 1})".to_string(),
        format!("sntp(\"{ntp}\", #{{count: 1}})"),
        format!("monitor([\"udp://{a}\"], #{{count: 2, interval: \"20ms\"}})"),
        "settings()".to_string(),
    ];
    let src: String = calls
        .iter()
        .map(|c| format!("print(to_json({c}));\n"))
        .collect();
    d.write("maps.rhai", &src);
    let o = d.run(&["run", "maps.rhai"]);
    assert_eq!(o.code, Some(0), "{}", show(&o));
    let maps: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(maps.len(), calls.len(), "{}", show(&o));
    for (c, m) in calls.iter().zip(&maps) {
        assert_valid(c, m);
    }
}

#[test]
fn a_multi_hop_trace_prints_what_the_schema_says() {
    let Some(chain) = Chain::new(3) else { return };
    // The middle router stays silent: a hop of nulls in the document.
    chain.drop_icmp_from(1);
    let d = DataDir::new();
    for (target, method) in [
        (chain.target_addr_v4().to_string(), "udp"),
        (chain.target_addr_v6().to_string(), "icmp"),
        (chain.target_addr_v4().to_string(), "tcp"),
    ] {
        let args = [
            "-o",
            "timeout=300ms",
            "trace",
            &target,
            "-M",
            method,
            "-q",
            "2",
            "-n",
            "--json",
        ];
        let o = netsh_in_ns(&chain, chain.client(), d.path(), &args);
        assert_eq!(o.code, Some(0), "{args:?}: {}", show(&o));
        let doc = documents(&o).remove(0);
        assert_valid(&format!("trace -M {method}"), &doc);
        let silent = &doc["hops"][1];
        assert_eq!(silent["received"], 0, "{doc:#}");
        assert!(
            silent["rtt"].is_null() && silent["last_ms"].is_null(),
            "{doc:#}"
        );
    }
}

#[test]
fn the_schema_rejects_what_netsh_must_not_print() {
    let srv = start_server("127.0.0.1");
    let a = srv.addr.to_string();
    let d = DataDir::new();
    let good = check(&d, &["echo", &a, "-c", "2", "-i", "0"], 0);

    let mut v = good.clone();
    v["bogus"] = json!(1);
    assert_invalid("an undocumented field", &v);
    let mut v = good.clone();
    v.as_object_mut().map(|m| m.remove("failure"));
    assert_invalid("a missing field", &v);
    let mut v = good.clone();
    v["probes"][0]["seq"] = json!(0);
    assert_invalid("a sequence number from 0", &v);
    let mut v = good.clone();
    v["rtt"]["min"] = v["rtt"]["min_ms"].take();
    assert_invalid("a duration without its unit", &v);
    let mut v = good.clone();
    v["received"] = json!(1.5);
    assert_invalid("a count that is not a whole number", &v);
    let mut v = good.clone();
    v["schema"] = json!("netsh/0");
    assert_invalid("another schema version", &v);
    let mut v = good;
    v["command"] = json!("ping");
    assert_invalid("an echo report called ping", &v);

    let t = check(&d, &["trace", "127.0.0.1", "-q", "1"], 0);
    let mut v = t.clone();
    v["hops"][0]["probes"][0]["outcome"] = json!("maybe");
    assert_invalid("an unknown trace outcome", &v);

    let e = check(&d, &["bogus"], 2);
    let mut v = e.clone();
    v["error"]["code"] = json!("oops");
    assert_invalid("an unknown error code", &v);
    let mut v = e;
    v["transmitted"] = json!(1);
    assert_invalid("an error with report fields", &v);

    let ntp = srv.ntp_addr.expect("SNTP responder").to_string();
    let s = check(&d, &["sntp", &ntp, "-c", "1"], 0);
    let mut v = s.clone();
    v["network_time"] = json!("2026-12-02 15:48:39.777375 UTC");
    assert_invalid("a time that is not RFC 3339", &v);
    let mut v = s;
    v["address"] = json!("not an address");
    assert_invalid("an address that is not one", &v);
}
