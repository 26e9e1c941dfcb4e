//! `chat [HOST[:PORT]] [--nick NAME]`: join the chat room of a netsh server.
//!
//! - At a terminal (the session's [`Terminal`](crate::session::Terminal)),
//!   incoming lines appear above the prompt while you type; Enter sends; `exit`, `/quit`, Ctrl-D or
//!   Ctrl-C leave. A dropped connection is reported and the shell goes on.
//! - With `serve` running in this shell and no HOST, you join as the
//!   server's operator, in-process.
//! - Otherwise (pipes, scripts, `--send`): send each line, print what
//!   arrives, then leave once the room has answered `/quit` with `BYE` —
//!   which it does only after every earlier line was logged and delivered.
//!
//! The session is also logged on this side, in `logs/chat-client/DATE.log`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{ArgMatches, Args};
use serde::Serialize;

use crate::cmd::{Command, args_of};
use crate::error::{Error, ErrorKind, Result};
use crate::log::AppendLog;
use crate::net::Endpoint;
use crate::net::client::{self, ClientCtx, LineReader, ReadLine};
use crate::net::sockopt::SockOpts;
use crate::net::tls::Stream;
use crate::paint::Paint;
use crate::proto::chat::{self, MAX_CHAT_LINE, valid_nick};
use crate::proto::echo::{Reply, Request, parse_reply};
use crate::proto::escape::display_bytes;
use crate::proto::escape::escape_controls;
use crate::report::Report;
use crate::session::{Frontend, Input, Session};
use crate::units;

/// Size cap of one day's client log.
const CLIENT_LOG_CAP: u64 = 16 << 20;

/// `chat` words.
#[derive(Debug, Args)]
struct ChatArgs {
    /// Server [default: the shell's own server as operator, else 'set server']
    #[arg(value_name = "HOST[:PORT]")]
    server: Option<String>,
    /// Nickname (1-32 of letters, digits, _ - .) [default: $USER]
    #[arg(short = 'n', long, value_name = "NAME")]
    nick: Option<String>,
    /// Send this line and leave (repeatable); no interactive prompt
    #[arg(short = 's', long = "send", value_name = "LINE")]
    send: Vec<String>,
    /// Stay this long before leaving, printing what arrives (non-interactive)
    #[arg(short = 'w', long, value_name = "DURATION", default_value = "0", value_parser = parse_wait)]
    wait: Duration,
    /// The room's key file, when the server asks for one (serve --chat-key) [setting: chat-key]
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: crate::cmd::tls_args::TlsArgs,
}

fn parse_wait(s: &str) -> std::result::Result<Duration, String> {
    units::duration_in(s, Duration::ZERO, Duration::from_secs(3600))
}

/// The `chat` command.
pub struct Chat;

impl Command for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }
    fn summary(&self) -> &'static str {
        "Join a netsh server's chat room (exit leaves); lines arrive while you type"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        ChatArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, s: &mut Session) -> Result<Report> {
        let a: ChatArgs = args_of(m)?;
        let nick = a
            .nick
            .clone()
            .or_else(|| std::env::var("USER").ok().filter(|u| valid_nick(u).is_ok()))
            .unwrap_or_else(|| "guest".into());
        valid_nick(&nick).map_err(|why| {
            Error::bad_value(format!("nickname '{}': {why}", escape_controls(&nick)))
        })?;
        for l in &a.send {
            check_line(l)?;
        }
        // A person at a terminal converses; otherwise the lines are given.
        let interactive = a.send.is_empty() && s.streaming && s.terminal.interactive();
        let log = ChatLog::new(&s.paths.logs_dir, &nick);

        // The shell's own server: join as its operator.
        if a.server.is_none()
            && let Some(bg) = &s.server
        {
            let handle = bg.handle.clone();
            return operator(handle, interactive, &a, s, &log);
        }
        let ep = match &a.server {
            Some(w) => Endpoint::parse(w, a.tls.default_port())?,
            None => a.tls.default_server(s),
        };
        let interrupt = Arc::clone(&s.interrupt);
        let base = s.settings.client_ctx(&interrupt);
        // Chat lines are small and interactive: never held back by Nagle.
        let ctx = ClientCtx {
            opts: SockOpts {
                nodelay: true,
                ..base.opts
            },
            ..base
        };
        let (mut sock, addr, _) = crate::cmd::tls_args::connect(&ep, ctx, &a.tls, s)?;
        let mut reader = LineReader::new(MAX_CHAT_LINE * 2);
        let req = Request::Chat(nick.as_bytes());
        let mut line = client::request(&mut sock, &mut reader, &req, addr, ctx)?;
        if let Some(nonce) = line
            .strip_prefix(chat::AUTH.as_bytes())
            .and_then(|r| chat::unhex(r.trim_ascii()))
        {
            let Some(file) = a.key.as_ref().or(s.settings.chat_key.as_ref()) else {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{addr}'s chat room needs a key"),
                )
                .with_hint(
                    "pass --key FILE (the key file its operator gave you), or set chat-key FILE",
                ));
            };
            let key = chat::read_key(file).map_err(Error::bad_value)?;
            let proof = format!(
                "{} {}\n",
                chat::AUTH,
                chat::hex(&chat::auth_mac(&key, &nonce, &nick))
            );
            client::write_all(&mut sock, proof.as_bytes(), ctx)?;
            line = match reader.read_line(&mut sock, Instant::now() + ctx.timeout, ctx)? {
                ReadLine::Line(l) => l,
                ReadLine::TimedOut | ReadLine::Closed => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{addr} did not answer the chat key's proof"),
                    ));
                }
            };
            if let Reply::Err(why) = parse_reply(&line) {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{addr} refused the chat key: {}", display_bytes(why)),
                )
                .with_hint("check that --key (or the chat-key setting) is the file the server's --chat-key reads"));
            }
        }
        // From the network: escaped before it is printed, logged or shown.
        let Reply::Joined { nick: given, .. } = parse_reply(&line) else {
            return Err(client::unexpected(addr, &req, &line));
        };
        let joined = display_bytes(&line);
        let me = display_bytes(given);
        log.set_nick(&me);
        log.event(&format!("joined {addr} as {me}"));
        s.emit(&joined).ok();
        if interactive {
            interactive_tcp(sock, reader, &addr.to_string(), &log, s)
        } else {
            let lines = if a.send.is_empty() && s.frontend == Frontend::OneShot {
                s.terminal.all_lines()?
            } else {
                a.send.clone()
            };
            scripted_tcp(
                sock,
                reader,
                &addr.to_string(),
                &lines,
                a.wait,
                ctx,
                &log,
                s,
            )
        }
    }
}

fn stamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

/// The client's log, `logs/chat-client/DATE.log`: one line per event, each
/// with the session and the nickname of the moment, so two clients of one
/// day are told apart and each line is there once per session.
#[derive(Clone)]
struct ChatLog {
    log: AppendLog,
    session: String,
    nick: Arc<std::sync::Mutex<String>>,
}

impl ChatLog {
    fn new(logs_dir: &std::path::Path, nick: &str) -> ChatLog {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let file = format!("{}.log", chrono::Local::now().format("%Y-%m-%d"));
        ChatLog {
            log: AppendLog::new(logs_dir.join("chat-client").join(file), CLIENT_LOG_CAP),
            session: format!(
                "{}.{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed) + 1
            ),
            nick: Arc::new(std::sync::Mutex::new(nick.to_string())),
        }
    }

    fn nick(&self) -> String {
        self.nick.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn set_nick(&self, n: &str) {
        if let Ok(mut g) = self.nick.lock() {
            *g = n.to_string();
        }
    }

    fn event(&self, what: &str) {
        let _ = self.log.append(&format!(
            "{} [{} {}] {what}",
            stamp(),
            self.session,
            self.nick()
        ));
    }

    /// A line from the room (escaped): logged, and our nickname followed
    /// when the room says it changed.
    fn heard(&self, line: &str) {
        self.event(&format!("< {line}"));
        if let Some((old, new)) = chat::renamed(line)
            && old == self.nick()
        {
            self.set_nick(new);
        }
    }
}

/// Whether a line from the server ends the session for us: `BYE` after
/// our `/quit`, or the server shutting down.
fn is_goodbye(l: &[u8]) -> Option<Goodbye> {
    match parse_reply(l) {
        Reply::Bye(b"") => Some(Goodbye::Quit),
        Reply::Bye(_) => Some(Goodbye::Server),
        _ => None,
    }
}

/// How a chat session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Goodbye {
    /// We left (`/quit` answered with `BYE`).
    Quit,
    /// The server shut down (`BYE server shutting down`).
    Server,
}

fn check_line(line: &str) -> Result<()> {
    if line.len() > MAX_CHAT_LINE {
        return Err(Error::bad_value(format!(
            "a chat line is at most {MAX_CHAT_LINE} bytes; this one is {}",
            line.len()
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// Non-interactive: send, then `/quit`, then read until `BYE` (or the
/// server's own goodbye, which ends the session as well).
fn scripted_tcp(
    mut sock: Stream,
    mut reader: LineReader,
    addr: &str,
    lines: &[String],
    wait: Duration,
    ctx: ClientCtx<'_>,
    log: &ChatLog,
    s: &mut Session,
) -> Result<Report> {
    let mut received = Vec::new();
    for l in lines {
        check_line(l)?;
        client::write_all(&mut sock, format!("{l}\n").as_bytes(), ctx)?;
        log.event(&format!("> {}", escape_controls(l)));
    }
    let mut ended = None;
    if !wait.is_zero() {
        let until = Instant::now() + wait;
        while ended.is_none() {
            match reader.read_line(&mut sock, until, ctx)? {
                ReadLine::Line(l) => ended = take(&l, &mut received, log, s),
                ReadLine::TimedOut => break,
                ReadLine::Closed => return Err(dropped(addr)),
            }
        }
    }
    if ended.is_none() {
        client::write_all(&mut sock, format!("{}\n", chat::QUIT).as_bytes(), ctx)?;
    }
    // Every earlier line is handled before the room answers /quit.
    let deadline = Instant::now() + ctx.timeout + Duration::from_millis(lines.len() as u64);
    while ended.is_none() {
        match reader.read_line(&mut sock, deadline, ctx)? {
            ReadLine::Line(l) if is_goodbye(&l) == Some(Goodbye::Quit) => {
                ended = Some(Goodbye::Quit);
            }
            ReadLine::Line(l) => ended = take(&l, &mut received, log, s),
            ReadLine::TimedOut => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("{addr} did not confirm the lines sent (no BYE)"),
                ));
            }
            ReadLine::Closed => return Err(dropped(addr)),
        }
    }
    log.event(&format!("left {addr}"));
    Ok(Report::Chat(ChatReport {
        server: addr.to_string(),
        nick: log.nick(),
        sent: lines.len() as u64,
        received,
        ended: ended.unwrap_or(Goodbye::Quit),
    }))
}

/// A line from the room: shown, logged, kept; the server's goodbye ends.
fn take(l: &[u8], received: &mut Vec<String>, log: &ChatLog, s: &mut Session) -> Option<Goodbye> {
    let line = display_bytes(l);
    log.heard(&line);
    s.emit(&line).ok();
    received.push(line);
    is_goodbye(l)
}

fn dropped(addr: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{addr} closed the chat connection"),
    )
    .with_hint("the server went away or dropped this client; 'chat' joins again")
}

/// Interactive over TCP: a reader thread prints through the external printer.
/// How often an interactive member says `/ping`.
const KEEPALIVE: Duration = Duration::from_secs(60);

fn interactive_tcp(
    sock: Stream,
    mut reader: LineReader,
    addr: &str,
    log: &ChatLog,
    s: &mut Session,
) -> Result<Report> {
    let mut printer = s.terminal.printer()?;
    let mut note = s.terminal.printer()?;
    let closed = Arc::new(AtomicBool::new(false));
    let server_left = Arc::new(AtomicBool::new(false));
    let mut rsock = sock
        .try_clone()
        .map_err(|e| Error::io("clone socket", addr, &e))?;
    let (closed2, left2, log2, addr2) = (
        Arc::clone(&closed),
        Arc::clone(&server_left),
        log.clone(),
        addr.to_string(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let received = Arc::new(std::sync::Mutex::new(0u64));
    let received2 = Arc::clone(&received);
    let thread = std::thread::spawn(move || {
        let ctx = ClientCtx {
            timeout: Duration::from_secs(1),
            retries: 0,
            opts: SockOpts {
                nodelay: true,
                keepalive: false,
                sndbuf: None,
                rcvbuf: None,
            },
            interrupt: &stop2,
        };
        // A keep-alive each minute, so `serve --chat-idle` keeps a quiet
        // reader; the server's PONG is not shown.
        let mut next_ping = Instant::now() + KEEPALIVE;
        loop {
            if Instant::now() >= next_ping {
                next_ping = Instant::now() + KEEPALIVE;
                let _ = rsock.write_all(format!("{}\n", chat::PING).as_bytes());
            }
            match reader.read_line(&mut rsock, Instant::now() + Duration::from_millis(200), ctx) {
                Ok(ReadLine::Line(l)) if l == chat::PONG.as_bytes() => {}
                Ok(ReadLine::Line(l)) => {
                    let line = display_bytes(&l);
                    log2.heard(&line);
                    if let Ok(mut n) = received2.lock() {
                        *n += 1;
                    }
                    printer(&line);
                    match is_goodbye(&l) {
                        Some(Goodbye::Quit) => break,
                        Some(Goodbye::Server) => {
                            left2.store(true, Ordering::Relaxed);
                            closed2.store(true, Ordering::Relaxed);
                            printer("[chat] the server shut down; press Enter");
                            break;
                        }
                        None => {}
                    }
                }
                Ok(ReadLine::TimedOut) => {}
                Ok(ReadLine::Closed) | Err(_) => {
                    if !stop2.load(Ordering::Relaxed) {
                        printer(&format!(
                            "[chat] {addr2} closed the connection; press Enter"
                        ));
                    }
                    closed2.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    });
    let mut wsock = sock;
    let mut sent = 0u64;
    let mut failure = None;
    loop {
        if closed.load(Ordering::Relaxed) {
            failure = Some(dropped(addr));
            break;
        }
        match s.terminal.read_line("chat> ") {
            Input::Line(line) => {
                if closed.load(Ordering::Relaxed) {
                    failure = Some(dropped(addr));
                    break;
                }
                if let Err(e) = check_line(&line) {
                    note(&e.to_string());
                    continue;
                }
                let quit = chat::parse(line.as_bytes()) == chat::Action::Quit;
                let out = if quit {
                    format!("{}\n", chat::QUIT)
                } else {
                    format!("{line}\n")
                };
                if wsock.write_all(out.as_bytes()).is_err() {
                    failure = Some(dropped(addr));
                    break;
                }
                log.event(&format!("> {}", escape_controls(&line)));
                if quit {
                    break;
                }
                sent += 1;
            }
            Input::End => {
                let _ = wsock.write_all(format!("{}\n", chat::QUIT).as_bytes());
                break;
            }
        }
    }
    // Give the reader a moment to print BYE, then stop it.
    let end = Instant::now() + Duration::from_secs(2);
    while !thread.is_finished() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    wsock.shutdown(std::net::Shutdown::Both);
    let _ = thread.join();
    log.event(&format!("left {addr}"));
    let ended = if server_left.load(Ordering::Relaxed) {
        Goodbye::Server
    } else {
        if let Some(e) = failure {
            return Err(e);
        }
        Goodbye::Quit
    };
    let n = received.lock().map(|n| *n).unwrap_or(0);
    Ok(Report::Chat(ChatReport {
        server: addr.to_string(),
        nick: log.nick(),
        sent,
        received: vec![format!("{} received", units::plural(n, "line"))],
        ended,
    }))
}

/// As the operator of this shell's own server.
fn operator(
    handle: crate::server::Handle,
    interactive: bool,
    a: &ChatArgs,
    s: &mut Session,
    log: &ChatLog,
) -> Result<Report> {
    let rx = handle.attach_operator();
    let mut received = Vec::new();
    let mut sent = 0u64;
    let result = if interactive {
        let mut printer = s.terminal.printer()?;
        let mut note = s.terminal.printer()?;
        let log2 = log.clone();
        let thread = std::thread::spawn(move || {
            // Ends when the server drops the sender (detach or shutdown).
            while let Ok(batch) = rx.recv() {
                for line in batch {
                    let line = escape_controls(&line).into_owned();
                    log2.heard(&line);
                    printer(&line);
                }
            }
        });
        while let Input::Line(line) = s.terminal.read_line("chat (operator)> ") {
            if chat::parse(line.as_bytes()) == chat::Action::Quit {
                break;
            }
            if let Err(e) = check_line(&line) {
                note(&e.to_string());
                continue;
            }
            if !handle.operator_say(&line) {
                break;
            }
            log.event(&format!("> {}", escape_controls(&line)));
            sent += 1;
        }
        handle.detach_operator();
        let end = Instant::now() + Duration::from_secs(2);
        while !thread.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    } else {
        for l in &a.send {
            check_line(l)?;
            handle.operator_say(l);
            sent += 1;
        }
        // The operator's own lines come back once handled: wait for the last.
        // A command (`/kick bob`, `/who`) comes back as its answer instead,
        // so for one the next line the room sends, other than the notice of
        // the operator's own arrival, is the confirmation (the room handles
        // the operator's lines in order, after that notice; in a busy room a
        // member's line may come first, and `-w` waits longer).
        let want = a.send.last().cloned();
        let want_answer = want.as_deref().is_some_and(|w| w.starts_with('/'));
        let until = Instant::now() + a.wait.max(Duration::from_millis(200)) + s.settings.timeout;
        let quiet_after = Instant::now() + a.wait;
        let mut seen_last = want.is_none();
        while Instant::now() < until && !(seen_last && Instant::now() >= quiet_after) {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(batch) => {
                    for line in batch {
                        if (want_answer && !line.ends_with(crate::server::chat::OPERATOR_JOINED))
                            || want
                                .as_ref()
                                .is_some_and(|w| line.ends_with(&escape_controls(w).into_owned()))
                        {
                            seen_last = true;
                        }
                        let line = escape_controls(&line).into_owned();
                        s.emit(&line).ok();
                        received.push(line);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        handle.detach_operator();
        if seen_last {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::TimedOut,
                "the room did not confirm the operator's lines",
            ))
        }
    };
    result?;
    Ok(Report::Chat(ChatReport {
        server: "this shell's server".into(),
        nick: "operator".into(),
        sent,
        received,
        ended: Goodbye::Quit,
    }))
}

/// What `chat` reports.
#[derive(Debug, Serialize)]
pub struct ChatReport {
    /// The server.
    pub server: String,
    /// The nickname used (the room may have added a number).
    pub nick: String,
    /// Lines sent.
    pub sent: u64,
    /// Lines received (non-interactive), escaped for display.
    pub received: Vec<String>,
    /// `quit`: we left; `server`: the server shut down.
    pub ended: Goodbye,
}

impl ChatReport {
    /// Text form: received lines were already printed as they came.
    pub fn render(&self, p: &Paint) -> String {
        let why = match self.ended {
            Goodbye::Quit => "left the chat",
            Goodbye::Server => "the server shut down; out of the chat",
        };
        p.dim(&format!(
            "{why} on {} as {} ({} sent)",
            self.server,
            self.nick,
            units::plural(self.sent, "line")
        ))
    }
}
