//! The session: settings, paths under the data directory, the error log, the
//! output sink and the Ctrl-C flag. One is built per process and passed to
//! every command, whichever front end (shell, command line, script) runs it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::log::{AppendLog, ERROR_LOG_CAP, error_line};
use crate::paint::Paint;
use crate::settings::{Settings, SettingsFile, apply_env};

/// Which rule chose where netsh keeps its files (see [`Paths::choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathRule {
    /// `--data-dir DIR`.
    Flag,
    /// `NETSH_HOME`.
    Env,
    /// netsh runs from its own checkout (`cargo run`): the checkout.
    Checkout,
    /// The XDG base directories.
    Xdg,
    /// No home directory to put them under: the current directory.
    CurrentDir,
}

impl PathRule {
    /// How `settings` and `help` say it.
    pub fn text(self) -> &'static str {
        match self {
            PathRule::Flag => "--data-dir",
            PathRule::Env => "NETSH_HOME",
            PathRule::Checkout => "netsh's own checkout (cargo run)",
            PathRule::Xdg => "XDG base directories",
            PathRule::CurrentDir => "the current directory (no home directory)",
        }
    }
}

/// Where netsh keeps its files, by one rule ([`Paths::choose`]):
///
/// 1. `--data-dir DIR`, else `NETSH_HOME`: everything under DIR;
/// 2. else, when the binary runs from netsh's own checkout
///    (`<checkout>/target/…/netsh`, as `cargo run` starts it): everything
///    under the checkout (its top-level `history/` and `logs/`);
/// 3. else the XDG base directories: history, logs and the SNTP
///    kiss-o'-death list under `$XDG_STATE_HOME/netsh` (`~/.local/state`),
///    settings in `$XDG_CONFIG_HOME/netsh/netsh.conf` (`~/.config`).
#[derive(Debug, Clone)]
pub struct Paths {
    /// The directory of state files (history, logs, the SNTP kiss-o'-death list).
    pub data_dir: PathBuf,
    /// `history/`: the shell's line history.
    pub history_dir: PathBuf,
    /// `logs/`: errors, server and chat logs.
    pub logs_dir: PathBuf,
    /// `netsh.conf`: persisted settings.
    pub settings_file: PathBuf,
    /// The rule that chose them.
    pub rule: PathRule,
}

impl Paths {
    /// Everything under `data_dir`.
    pub fn new(data_dir: &Path) -> Paths {
        Paths::under(data_dir, PathRule::Flag)
    }

    fn under(data_dir: &Path, rule: PathRule) -> Paths {
        Paths {
            data_dir: data_dir.to_path_buf(),
            history_dir: data_dir.join("history"),
            logs_dir: data_dir.join("logs"),
            settings_file: data_dir.join("netsh.conf"),
            rule,
        }
    }

    /// The rule above: `dir` is `--data-dir` or `NETSH_HOME` (`from_env`
    /// says which), if either was given.
    pub fn choose(dir: Option<&Path>, from_env: bool) -> Paths {
        if let Some(d) = dir {
            return Paths::under(
                d,
                if from_env {
                    PathRule::Env
                } else {
                    PathRule::Flag
                },
            );
        }
        if let Some(root) = checkout_root() {
            return Paths::under(&root, PathRule::Checkout);
        }
        use etcetera::BaseStrategy;
        match etcetera::choose_base_strategy() {
            Ok(base) => {
                let state = base
                    .state_dir()
                    .unwrap_or_else(|| base.data_dir())
                    .join("netsh");
                Paths {
                    history_dir: state.join("history"),
                    logs_dir: state.join("logs"),
                    settings_file: base.config_dir().join("netsh").join("netsh.conf"),
                    data_dir: state,
                    rule: PathRule::Xdg,
                }
            }
            Err(_) => Paths::under(Path::new("."), PathRule::CurrentDir),
        }
    }

    /// The shell's history file.
    pub fn history_file(&self) -> PathBuf {
        self.history_dir.join("netsh_history")
    }
}

/// The checkout the running binary was built in, if it runs from one:
/// `<root>/target/…/netsh` with `<root>/Cargo.toml` naming the package netsh;
/// or, for a `cargo run` with `CARGO_TARGET_DIR` elsewhere, a binary under
/// that directory with `CARGO_MANIFEST_DIR` (which `cargo run` sets) naming
/// the checkout.
fn checkout_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let in_target = exe
        .ancestors()
        .skip(1)
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .filter(|root| names_netsh(root));
    if let Some(root) = in_target {
        return Some(root.to_path_buf());
    }
    let target = std::fs::canonicalize(std::env::var_os("CARGO_TARGET_DIR")?).ok()?;
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    (exe.starts_with(&target) && names_netsh(&root)).then_some(root)
}

/// Whether `root/Cargo.toml` is netsh's.
fn names_netsh(root: &Path) -> bool {
    crate::files::read_capped(&root.join("Cargo.toml"), 64 * 1024).is_ok_and(|m| {
        String::from_utf8_lossy(&m)
            .lines()
            .any(|l| l.replace(' ', "") == "name=\"netsh\"")
    })
}

/// Where streamed output (lines printed while a command runs, such as one
/// line per echo probe) goes: stdout, rustyline's external printer, or a
/// buffer in tests and scripts.
pub type Sink = Box<dyn FnMut(&str) -> io::Result<()> + Send>;

/// Which front end runs the commands, which decides e.g. whether `serve`
/// blocks (one-shot) or runs in the background (shell, piped lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `netsh CMD ARGS…`: one command, then exit.
    OneShot,
    /// The interactive shell or piped lines: more commands follow.
    Lines,
    /// A rhai script.
    Script,
}

/// A line a conversing command (chat) asked the front end for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its terminator.
    Line(String),
    /// No more lines: end of input, Ctrl-D or Ctrl-C.
    End,
}

/// Prints lines from another thread (rustyline's external printer on a
/// terminal, so lines arrive above the prompt while the user types).
pub type Printer = Box<dyn FnMut(&str) + Send>;

/// The process's terminal and standard streams, as the front end hands them
/// to commands that converse or serve in the foreground: only the front end
/// knows whether a person types, whether stdin holds commands, and how to
/// print while a line is being edited. Commands never look at stdin or the
/// terminal themselves, so a test or a script can drive them the same way.
pub trait Terminal: Send {
    /// Whether a person types at it: lines are edited with a prompt and
    /// output may arrive while they type.
    fn interactive(&self) -> bool;
    /// The next line, showing `prompt` when interactive.
    fn read_line(&mut self, prompt: &str) -> Input;
    /// A printer other threads may use while [`Terminal::read_line`] waits.
    ///
    /// # Errors
    /// `io` when the terminal cannot give one.
    fn printer(&mut self) -> crate::error::Result<Printer>;
    /// Where a foreground server's console lines go (a sink that never
    /// blocks the loop), and a channel that closes once all are printed.
    fn console(
        &self,
    ) -> (
        crate::server::console::LineSink,
        Option<std::sync::mpsc::Receiver<()>>,
    );
    /// Feed the lines a foreground server's operator types to `say`, on a
    /// thread of its own, until `say` returns false or the input ends.
    /// Does nothing where stdin holds something else (commands, nothing).
    fn operator_input(&self, say: Box<dyn Fn(&str) -> bool + Send>);

    /// Columns of the terminal, where output goes to one (a live view fits
    /// its lines to it).
    fn width(&self) -> Option<usize> {
        None
    }

    /// Rows of the terminal, where output goes to one (a live view keeps
    /// its frame within them).
    fn height(&self) -> Option<usize> {
        None
    }

    /// Every line left, at most [`MAX_INPUT_LINES`] of them (a one-shot
    /// `chat` with its lines piped in).
    ///
    /// # Errors
    /// `bad-value` when there are more.
    fn all_lines(&mut self) -> crate::error::Result<Vec<String>> {
        let mut out = Vec::new();
        while let Input::Line(l) = self.read_line("") {
            if out.len() >= MAX_INPUT_LINES {
                return Err(Error::bad_value(format!(
                    "more than {MAX_INPUT_LINES} lines to send"
                )));
            }
            out.push(l);
        }
        Ok(out)
    }
}

/// Lines a command may take from its input in one run.
pub const MAX_INPUT_LINES: usize = 10_000;

/// The terminal of a session with none: no lines, output to stdout, no
/// operator input (scripts, tests, piped commands).
pub struct NoTerminal;

impl Terminal for NoTerminal {
    fn interactive(&self) -> bool {
        false
    }
    fn read_line(&mut self, _prompt: &str) -> Input {
        Input::End
    }
    fn printer(&mut self) -> crate::error::Result<Printer> {
        Ok(Box::new(|line: &str| {
            let _ = writeln!(io::stdout().lock(), "{line}");
        }))
    }
    fn console(
        &self,
    ) -> (
        crate::server::console::LineSink,
        Option<std::sync::mpsc::Receiver<()>>,
    ) {
        (
            Box::new(|line: &str| {
                let _ = writeln!(io::stdout().lock(), "{line}");
            }),
            None,
        )
    }
    fn operator_input(&self, _say: Box<dyn Fn(&str) -> bool + Send>) {}
}

/// A server started by `serve` in the background of this session.
pub struct BackgroundServer {
    /// Stops it and reads its counters.
    pub handle: crate::server::Handle,
    /// Where it listens.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Where its SNTP responder listens.
    pub ntp_addrs: Vec<String>,
    /// Where it serves TLS, and its certificate's fingerprint.
    pub tls: (Vec<String>, Option<String>),
    /// Where it serves `/metrics`, if it does.
    pub metrics: Option<std::net::SocketAddr>,
    /// When it started.
    pub started: std::time::Instant,
    /// The thread running its loop.
    pub thread: std::thread::JoinHandle<crate::error::Result<crate::server::StatsSnapshot>>,
}

/// State shared by every command of one process.
pub struct Session {
    /// Current settings (validated).
    pub settings: Settings,
    /// The settings file `set` writes.
    pub settings_file: SettingsFile,
    /// Paths under the data directory.
    pub paths: Paths,
    /// Colour policy for text output.
    pub paint: Paint,
    /// Set by SIGINT (Ctrl-C while a command runs); long commands poll it.
    pub interrupt: Arc<AtomicBool>,
    /// Set by SIGQUIT (Ctrl-\\ while a command runs): a probe loop prints
    /// its statistics so far and goes on, as ping does.
    pub progress: Arc<AtomicBool>,
    /// Whether the running command may stream progress lines (off for `--json`).
    pub streaming: bool,
    /// Whether a `--json` command may stream records, one JSON line each
    /// (`monitor`'s NDJSON): on for `--json` where progress would be on.
    pub stream_json: bool,
    /// Which front end runs the commands.
    pub frontend: Frontend,
    /// The server `serve` started in the background, if any.
    pub server: Option<BackgroundServer>,
    /// The terminal and standard streams, as the front end hands them out.
    pub terminal: Box<dyn Terminal>,
    sink: Sink,
    error_log: AppendLog,
    error_log_failed: bool,
}

impl Session {
    /// Load settings from the file and the environment under `data_dir`.
    /// Returns the session and the warnings found while loading (bad file
    /// lines, bad environment values), for the caller to show.
    pub fn new(data_dir: &Path, paint: Paint, interrupt: Arc<AtomicBool>) -> (Session, Vec<Error>) {
        Session::with_paths(Paths::new(data_dir), paint, interrupt)
    }

    /// As [`Session::new`], with the files where `paths` says.
    pub fn with_paths(
        paths: Paths,
        paint: Paint,
        interrupt: Arc<AtomicBool>,
    ) -> (Session, Vec<Error>) {
        let mut settings = Settings::default();
        let (settings_file, mut warnings) = SettingsFile::load(&paths.settings_file, &mut settings);
        warnings.extend(apply_env(&mut settings));
        let error_log = AppendLog::new(paths.logs_dir.join("errors.log"), ERROR_LOG_CAP);
        let session = Session {
            settings,
            settings_file,
            paths,
            paint,
            interrupt,
            progress: Arc::new(AtomicBool::new(false)),
            streaming: true,
            stream_json: false,
            frontend: Frontend::OneShot,
            server: None,
            terminal: Box::new(NoTerminal),
            sink: Box::new(|line: &str| {
                let mut out = io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }),
            error_log,
            error_log_failed: false,
        };
        (session, warnings)
    }

    /// Move the session out, leaving a stand-in with the same settings and
    /// paths that writes nothing (scripts hold the real one in an `Rc` while
    /// they run, then [`Session::restore`] puts it back).
    pub fn detach(&mut self) -> Session {
        let stand_in = Session {
            settings: self.settings.clone(),
            settings_file: SettingsFile::unloaded(&self.paths.settings_file),
            paths: self.paths.clone(),
            paint: self.paint,
            interrupt: Arc::clone(&self.interrupt),
            progress: Arc::clone(&self.progress),
            streaming: self.streaming,
            stream_json: false,
            frontend: self.frontend,
            server: None,
            terminal: Box::new(NoTerminal),
            sink: Box::new(|_: &str| Ok(())),
            error_log: self.error_log.clone(),
            error_log_failed: true,
        };
        std::mem::replace(self, stand_in)
    }

    /// Put back a session taken with [`Session::detach`].
    pub fn restore(&mut self, s: Session) {
        *self = s;
    }

    /// Write a line through the sink even while streaming is off (script `print`).
    ///
    /// # Errors
    /// The sink's error.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        (self.sink)(line)
    }

    /// Stop a background server, if one runs (at the end of a session).
    pub fn shutdown(&mut self) {
        if let Some(bg) = self.server.take() {
            bg.handle.stop();
            let _ = bg.thread.join();
        }
    }

    /// Send streamed output somewhere else (external printer, capture buffer).
    pub fn set_sink(&mut self, sink: Sink) {
        self.sink = sink;
    }

    /// Print one progress line through the sink, unless streaming is off.
    ///
    /// # Errors
    /// The sink's error (a closed pipe), so a command can stop early.
    pub fn emit(&mut self, line: &str) -> io::Result<()> {
        if self.streaming {
            (self.sink)(line)
        } else {
            Ok(())
        }
    }

    /// Print one JSON record (a line of NDJSON) through the sink, where
    /// [`Session::stream_json`] allows.
    ///
    /// # Errors
    /// The sink's error (a closed pipe).
    pub fn emit_record(&mut self, line: &str) -> io::Result<()> {
        if self.stream_json {
            (self.sink)(line)
        } else {
            Ok(())
        }
    }

    /// True once Ctrl-C was pressed during the current command.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    /// Record an error in `logs/errors.log`. If the log cannot be written,
    /// returns a warning the first time only (the caller shows it); logging
    /// never fails a command.
    pub fn log_error(&mut self, command: &str, err: &Error) -> Option<Error> {
        match self.error_log.append(&error_line(command, err)) {
            Ok(()) => None,
            Err(_) if self.error_log_failed => None,
            Err(e) => {
                self.error_log_failed = true;
                Some(
                    Error::io("write error log", self.error_log.path().display(), &e)
                        .with_hint("errors are still shown here; check the logs/ directory"),
                )
            }
        }
    }
}
