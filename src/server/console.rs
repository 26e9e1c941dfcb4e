//! The server's console and `logs/server.log`: lines tagged by service
//! (`[MAIN] …`, `[ECHO] Client says: …`), with levels and a rate limit so a
//! busy server does not spend its time printing. Untrusted text is escaped.

use std::time::{Duration, Instant};

use crate::log::AppendLog;

/// How much the server says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Start, stop and problems only.
    Quiet,
    /// Also connects, disconnects and client messages (rate-limited).
    Normal,
    /// Also why connections closed and UDP datagrams (rate-limited).
    Verbose,
}

/// What a line is about, which decides whether it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Always shown (start, stop, refusals, errors).
    Main,
    /// Shown at `Normal` and above.
    Info,
    /// Shown at `Verbose`.
    Debug,
}

/// Console lines per second before the rest are counted instead of printed.
const LINES_PER_SECOND: u32 = 50;
/// Size cap of `server.log` before it rotates.
pub const SERVER_LOG_CAP: u64 = 8 << 20;

/// Receives each console line (stdout in the foreground).
pub type LineSink = Box<dyn FnMut(&str) + Send>;

/// Where the server's lines go.
pub struct Console {
    sink: Option<LineSink>,
    log: Option<AppendLog>,
    log_failed: bool,
    verbosity: Verbosity,
    window: Instant,
    in_window: u32,
    suppressed: u64,
    /// Lines held during a turn of the loop (see [`Console::hold`]).
    held: Option<Vec<String>>,
}

impl Console {
    /// Lines go to `sink` (if any) and to `log` (if any).
    /// The log file is opened now, so the server's file descriptors are
    /// steady from its first line (a failure shows with the first line).
    pub fn new(
        sink: Option<LineSink>,
        mut log: Option<AppendLog>,
        verbosity: Verbosity,
    ) -> Console {
        if let Some(l) = log.as_mut() {
            l.open_kept();
        }
        Console {
            sink,
            log,
            log_failed: false,
            verbosity,
            window: Instant::now(),
            in_window: 0,
            suppressed: 0,
            held: None,
        }
    }

    /// Hold lines until [`Console::release`]: the loop holds them while a
    /// turn runs, so printing and `server.log` come after the turn's
    /// replies are on their way, not before (a chat line's console copy
    /// must not delay its delivery). What is shown and counted is decided
    /// when the line is said, as without holding.
    pub fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(Vec::new());
        }
    }

    /// Write the held lines, in order, and stop holding.
    pub fn release(&mut self) {
        if let Some(lines) = self.held.take() {
            for l in &lines {
                self.emit(l);
            }
        }
    }

    /// Say `text` at `level`. `Main` lines are never rate-limited.
    pub fn say(&mut self, level: Level, text: &str) {
        if self.admit(level) {
            self.write(text);
        }
    }

    /// [`Console::say`] with the line made only if it is shown: a busy
    /// room's lines past the rate limit cost no formatting.
    pub fn say_with(&mut self, level: Level, text: impl FnOnce() -> String) {
        if self.admit(level) {
            self.write(&text());
        }
    }

    /// Whether a line at `level` is shown now (counted against the rate
    /// limit if so, counted as held back if not).
    fn admit(&mut self, level: Level) -> bool {
        let shown = match level {
            Level::Main => true,
            Level::Info => self.verbosity >= Verbosity::Normal,
            Level::Debug => self.verbosity >= Verbosity::Verbose,
        };
        if !shown {
            return false;
        }
        if level != Level::Main {
            self.roll_window();
            if self.in_window >= LINES_PER_SECOND {
                self.suppressed += 1;
                return false;
            }
            self.in_window += 1;
        }
        true
    }

    /// Start a new rate window if a second has passed, reporting what was held back.
    pub fn roll_window(&mut self) {
        if self.window.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.window = Instant::now();
        self.in_window = 0;
        if self.suppressed > 0 {
            let n = std::mem::take(&mut self.suppressed);
            self.write(&format!(
                "[MAIN] ({n} more lines not shown: over {LINES_PER_SECOND}/s)"
            ));
        }
    }

    fn write(&mut self, text: &str) {
        match self.held.as_mut() {
            Some(h) => h.push(text.to_string()),
            None => self.emit(text),
        }
    }

    fn emit(&mut self, text: &str) {
        if let Some(s) = self.sink.as_mut() {
            s(text);
        }
        if let Some(log) = &mut self.log {
            let line = format!(
                "{} {text}",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            if let Err(e) = log.append_kept(&line)
                && !self.log_failed
            {
                self.log_failed = true;
                let msg = format!(
                    "[MAIN] cannot write {}: {e}; going on without it",
                    log.path().display()
                );
                if let Some(s) = self.sink.as_mut() {
                    s(&msg);
                }
            }
        }
    }
}
