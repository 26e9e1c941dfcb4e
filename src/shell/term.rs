//! The [`Terminal`]s the front ends hand to commands: [`Tty`] when a person
//! types at a terminal (rustyline for chat lines, its external printer for
//! lines that arrive meanwhile), [`Piped`] when stdin is a pipe or a file
//! that holds a one-shot command's input (a chat's lines), [`Commands`]
//! when stdin holds the commands themselves. All print a foreground
//! server's console through a writer thread; the first two feed its
//! operator from stdin.

use std::io::{self, BufRead, IsTerminal, Read, Write};

use crate::error::{Error, ErrorKind, Result};
use crate::proto::chat::MAX_CHAT_LINE;
use crate::server::console::LineSink;
use crate::session::{Input, Printer, Terminal};

/// Stdin is a terminal: a person types. Lines are edited (rustyline) only
/// when stdout is a terminal too; otherwise rustyline would write its escape
/// codes into the redirected output, and conversing commands do not read.
pub struct Tty {
    edit: bool,
    editor: Option<rustyline::DefaultEditor>,
}

impl Tty {
    /// The terminal on stdin; `edit` when stdout is a terminal too.
    pub fn new(edit: bool) -> Tty {
        Tty { edit, editor: None }
    }

    fn editor(&mut self) -> Result<&mut rustyline::DefaultEditor> {
        if self.editor.is_none() {
            let ed = rustyline::DefaultEditor::new().map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot start the line editor: {e}"))
            })?;
            self.editor = Some(ed);
        }
        self.editor
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Io, "no line editor"))
    }
}

impl Tty {
    /// Columns and rows of stdout's terminal, when lines are edited there.
    fn size(&self) -> Option<(usize, usize)> {
        if !self.edit {
            return None;
        }
        // SAFETY: TIOCGWINSZ fills the winsize we own; fd 1 is stdout.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
        (r == 0 && ws.ws_col > 0 && ws.ws_row > 0)
            .then_some((usize::from(ws.ws_col), usize::from(ws.ws_row)))
    }
}

impl Terminal for Tty {
    fn interactive(&self) -> bool {
        self.edit
    }

    fn read_line(&mut self, prompt: &str) -> Input {
        if !self.edit {
            return Input::End;
        }
        match self.editor() {
            // Ctrl-C and Ctrl-D leave, as end of input does.
            Ok(ed) => match ed.readline(prompt) {
                Ok(line) => Input::Line(line),
                Err(_) => Input::End,
            },
            Err(_) => Input::End,
        }
    }

    fn printer(&mut self) -> Result<Printer> {
        use rustyline::ExternalPrinter;
        let mut p = self
            .editor()?
            .create_external_printer()
            .map_err(|e| Error::new(ErrorKind::Io, format!("terminal printer: {e}")))?;
        Ok(Box::new(move |line: &str| {
            let _ = p.print(format!("{line}\n"));
        }))
    }

    fn console(&self) -> (LineSink, Option<std::sync::mpsc::Receiver<()>>) {
        stdout_sink()
    }

    fn operator_input(&self, say: Box<dyn Fn(&str) -> bool + Send>) {
        if stdin_is_ours() {
            spawn_operator(say);
        }
    }

    fn width(&self) -> Option<usize> {
        self.size().map(|(cols, _)| cols)
    }

    fn height(&self) -> Option<usize> {
        self.size().map(|(_, rows)| rows)
    }
}

/// Stdin is not a terminal: it holds the one-shot command's input.
pub struct Piped;

impl Terminal for Piped {
    fn interactive(&self) -> bool {
        false
    }

    fn read_line(&mut self, _prompt: &str) -> Input {
        let mut buf = Vec::new();
        match io::stdin()
            .lock()
            .take(MAX_CHAT_LINE as u64 * 4)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => Input::End,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                Input::Line(text.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }

    fn printer(&mut self) -> Result<Printer> {
        Ok(Box::new(|line: &str| {
            let _ = writeln!(io::stdout().lock(), "{line}");
        }))
    }

    fn console(&self) -> (LineSink, Option<std::sync::mpsc::Receiver<()>>) {
        stdout_sink()
    }

    fn operator_input(&self, say: Box<dyn Fn(&str) -> bool + Send>) {
        spawn_operator(say);
    }
}

/// Stdin holds commands (piped into the shell): nothing in it is a
/// command's own input.
pub struct Commands;

impl Terminal for Commands {
    fn interactive(&self) -> bool {
        false
    }

    fn read_line(&mut self, _prompt: &str) -> Input {
        Input::End
    }

    fn printer(&mut self) -> Result<Printer> {
        Piped.printer()
    }

    fn console(&self) -> (LineSink, Option<std::sync::mpsc::Receiver<()>>) {
        stdout_sink()
    }

    fn operator_input(&self, _say: Box<dyn Fn(&str) -> bool + Send>) {}
}

fn spawn_operator(say: Box<dyn Fn(&str) -> bool + Send>) {
    let _ = std::thread::Builder::new()
        .name("netsh-operator".into())
        .spawn(move || operator_input(&*say));
}

/// Lines queued for stdout before more are counted as dropped.
const STDOUT_QUEUE: usize = 4096;

/// A console sink that hands lines to a writer thread, so a stdout nobody
/// reads (`serve | less` left paused, Ctrl-S in a terminal, a full pipe)
/// cannot stall the event loop: when the queue is full, lines are counted
/// and the count is printed once stdout moves again. Also returns a channel
/// that closes when the writer has printed everything (after the sink is
/// dropped).
pub fn stdout_sink() -> (LineSink, Option<std::sync::mpsc::Receiver<()>>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{self, TrySendError};
    let (tx, rx) = mpsc::sync_channel::<String>(STDOUT_QUEUE);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let dropped = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&dropped);
    let writer = std::thread::Builder::new()
        .name("netsh-console".into())
        .spawn(move || {
            let mut out = std::io::stdout();
            for line in rx {
                let n = seen.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "[MAIN] ({n} console lines dropped: stdout was not being read)"
                    );
                }
                let _ = writeln!(out, "{line}");
            }
            drop(done_tx);
        });
    if writer.is_err() {
        // No thread: write directly, as before.
        return (
            Box::new(|line: &str| {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }),
            None,
        );
    }
    let sink = Box::new(move |line: &str| {
        if let Err(TrySendError::Full(_)) = tx.try_send(line.to_string()) {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    (sink, Some(done_rx))
}

/// The foreground operator's lines from stdin into the room, each at most a
/// chat line long (longer ones are refused whole, with a note on stderr; the
/// rest of the input goes on), invalid UTF-8 shown as U+FFFD. Memory stays
/// bounded whatever stdin holds.
fn operator_input(say: &dyn Fn(&str) -> bool) {
    let max = crate::proto::chat::MAX_CHAT_LINE;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = match input
            .by_ref()
            .take(max as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => return, // end of input: the server goes on
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if buf.last() != Some(&b'\n') && n > max {
            // Over-long: skip to the end of this line, a bounded chunk at a time.
            let mut skip = Vec::with_capacity(4096);
            loop {
                skip.clear();
                match input.by_ref().take(4096).read_until(b'\n', &mut skip) {
                    Ok(0) => break,
                    Ok(_) if skip.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            eprintln!("[CHAT] not sent: your line is over {max} bytes");
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() && !say(line) {
            return;
        }
    }
}

/// Whether reading stdin is safe: not a terminal, or a terminal whose
/// foreground process group is ours (a background job reading its terminal
/// would be stopped by SIGTTIN, and the server with it).
fn stdin_is_ours() -> bool {
    if !std::io::stdin().is_terminal() {
        return true;
    }
    // SAFETY: plain queries on fd 0 and this process; no pointers.
    unsafe { libc::tcgetpgrp(0) == libc::getpgrp() }
}
