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

/// Where netsh keeps its files. Everything lives under one data directory:
/// the current directory by default, or `--data-dir` / `NETSH_HOME`.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data directory itself.
    pub data_dir: PathBuf,
    /// `history/`: the shell's line history.
    pub history_dir: PathBuf,
    /// `logs/`: errors, server and chat logs.
    pub logs_dir: PathBuf,
    /// `netsh.conf`: persisted settings.
    pub settings_file: PathBuf,
}

impl Paths {
    /// The layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            data_dir: data_dir.to_path_buf(),
            history_dir: data_dir.join("history"),
            logs_dir: data_dir.join("logs"),
            settings_file: data_dir.join("netsh.conf"),
        }
    }

    /// The shell's history file.
    pub fn history_file(&self) -> PathBuf {
        self.history_dir.join("netsh_history")
    }
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

/// A server started by `serve` in the background of this session.
pub struct BackgroundServer {
    /// Stops it and reads its counters.
    pub handle: crate::server::Handle,
    /// Where it listens.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Where its SNTP responder listens.
    pub ntp_addrs: Vec<String>,
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
    /// Whether the running command may stream progress lines (off for `--json`).
    pub streaming: bool,
    /// Which front end runs the commands.
    pub frontend: Frontend,
    /// The server `serve` started in the background, if any.
    pub server: Option<BackgroundServer>,
    sink: Sink,
    error_log: AppendLog,
    error_log_failed: bool,
}

impl Session {
    /// Load settings from the file and the environment under `data_dir`.
    /// Returns the session and the warnings found while loading (bad file
    /// lines, bad environment values), for the caller to show.
    pub fn new(data_dir: &Path, paint: Paint, interrupt: Arc<AtomicBool>) -> (Session, Vec<Error>) {
        let paths = Paths::new(data_dir);
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
            streaming: true,
            frontend: Frontend::OneShot,
            server: None,
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
            streaming: self.streaming,
            frontend: self.frontend,
            server: None,
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
