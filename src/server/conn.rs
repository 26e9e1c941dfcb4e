//! One TCP connection of the server: a state machine over the echo protocol
//! ([`crate::proto::echo`]). It owns bounded input and output buffers; the
//! event loop in [`super`] calls [`Conn::drive`] when the socket is ready and
//! acts on the returned [`Next`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpStream;

use crate::proto::chat::{self as chat_proto, MAX_CHAT_LINE};
use crate::proto::echo::{self as proto, Reply, Request};
use crate::proto::escape::display_bytes;
use crate::proto::line::{Frame, next_line};
use crate::server::chat::ChatIn;
use crate::server::console::{Console, Level};
use crate::server::handle::{Refusal, Stats};
use crate::server::tls::Tls;

/// Output bytes queued for one client before it counts as "not reading":
/// a line client is disconnected past it; a STREAM client is simply not read
/// from until it drains (back-pressure), like any byte-stream echo.
pub const OUT_CAP: usize = 1 << 20;
/// Reads per readiness event before yielding to other connections.
const READS_PER_TURN: usize = 16;
/// Longest client text shown on the console.
const SHOW_MAX: usize = 200;

/// What the connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Line protocol: ECHO, HELP, QUIT, STREAM.
    Lines,
    /// Raw echo of every byte (after `STREAM`).
    Stream,
    /// A chat room member: each line is a message (see `server::chat`).
    Chat,
    /// Sending what is queued, then closing.
    Closing,
}

/// What the loop should do after [`Conn::drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep it, with this interest.
    Keep(Interest),
    /// More input may be waiting: drive it again soon (fairness cap hit).
    Again(Interest),
    /// Close it; the reason is for the console.
    Close(&'static str),
}

/// One client connection.
pub struct Conn {
    /// The socket.
    pub sock: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Current protocol mode.
    pub mode: Mode,
    /// Last time bytes moved, for the idle timeout.
    pub last_active: Instant,
    /// Last time bytes came from the client (a chat member's sign of life).
    pub last_heard: Instant,
    /// When `Closing` began, to bound the final flush.
    pub closing_since: Option<Instant>,
    /// The interest currently registered with the poll.
    pub registered: Interest,
    /// Room events from this connection, for the server to handle.
    pub events: Vec<crate::server::chat::ChatIn>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    read_closed: bool,
    /// Dropping the rest of an over-long chat line.
    discarding: bool,
    /// The room is congested: do not read this member's lines for now.
    pub paused: bool,
    /// Last time a write took bytes (how a slow member is told from a busy one).
    pub last_progress: Instant,
    /// When the line now arriving began (its first byte), while one is
    /// incomplete: a whole line must follow within the line timeout.
    pub line_started: Option<Instant>,
    /// Whole lines read so far.
    lines_done: u64,
    /// The TLS session, on the TLS port.
    pub tls: Option<Box<Tls>>,
    /// When the connection was accepted (a TLS handshake must end in time).
    pub accepted: Instant,
}

impl Conn {
    /// A new connection in line mode.
    pub fn new(sock: TcpStream, peer: SocketAddr) -> Conn {
        Conn {
            sock,
            peer,
            mode: Mode::Lines,
            last_active: Instant::now(),
            last_heard: Instant::now(),
            closing_since: None,
            registered: Interest::READABLE,
            events: Vec::new(),
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            read_closed: false,
            discarding: false,
            paused: false,
            last_progress: Instant::now(),
            line_started: None,
            lines_done: 0,
            tls: None,
            accepted: Instant::now(),
        }
    }

    /// Whether a TLS handshake is still running.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.handshaking())
    }

    /// One try at telling the peer a last line, never a wait (the sweep's
    /// notices): through TLS when the connection has it.
    pub fn try_say(&mut self, line: &str) {
        let bytes = format!("{line}\n");
        let _ = self.send(bytes.as_bytes());
        if let Some(t) = self.tls.as_mut() {
            t.close(&mut self.sock);
        }
    }

    /// Read plaintext: from the socket, or through the TLS session.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_mut() {
            None => self.sock.read(buf),
            Some(t) => t.read(&mut self.sock, buf),
        }
    }

    /// Write plaintext: to the socket, or through the TLS session.
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tls.as_mut() {
            None => self.sock.write(buf),
            Some(t) => t.write(&mut self.sock, buf),
        }
    }

    /// Output bytes not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queue a line (a newline is added) for the room.
    pub fn queue_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\n');
    }

    /// Queue bytes and switch to closing (used for shutdown and limits).
    pub fn close_with(&mut self, msg: &[u8]) {
        if self.mode != Mode::Stream {
            self.out.extend_from_slice(msg);
        }
        self.start_closing();
    }

    fn start_closing(&mut self) {
        self.mode = Mode::Closing;
        self.closing_since.get_or_insert_with(Instant::now);
        self.inbuf = Vec::new();
        self.line_started = None;
    }

    /// Do all the work the socket allows now: write queued output, read and
    /// answer input, and say what comes next.
    pub fn drive(&mut self, scratch: &mut [u8], stats: &Stats, console: &mut Console) -> Next {
        if let Err(e) = self.flush(stats) {
            return Next::Close(close_reason(&e));
        }
        let mut again = false;
        let mut blocked = false;
        if self.mode != Mode::Closing && !self.read_closed && !self.paused {
            let mut reads = 0;
            loop {
                if self.mode == Mode::Stream && self.queued() >= OUT_CAP {
                    // Back-pressure: resume when the client drains its echo.
                    blocked = true;
                    break;
                }
                if reads == READS_PER_TURN {
                    again = true;
                    break;
                }
                reads += 1;
                match self.recv(scratch) {
                    Ok(0) => {
                        self.read_closed = true;
                        break;
                    }
                    Ok(n) => {
                        self.last_active = Instant::now();
                        self.last_heard = self.last_active;
                        stats.add_in(n);
                        self.input(&scratch[..n], stats, console);
                        if self.mode == Mode::Lines && self.queued() > OUT_CAP {
                            return Next::Close("output queue over 1 MiB (client not reading)");
                        }
                        if self.mode == Mode::Closing {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        if let Some(why) = self.tls.as_ref().and_then(|t| t.failed.as_ref()) {
                            console.say(
                                Level::Info,
                                &format!("[TLS] {}: {why}; closing it", self.peer),
                            );
                        }
                        return Next::Close(close_reason(&e));
                    }
                }
            }
            if let Err(e) = self.flush(stats) {
                return Next::Close(close_reason(&e));
            }
            // Reading stopped at the cap but the flush made room: input may
            // wait in the socket with no new edge to come, so go again. While
            // the client reads nothing this stays false: no busy loop.
            if blocked && self.queued() < OUT_CAP {
                again = true;
            }
        }
        if self.read_closed
            && matches!(self.mode, Mode::Lines | Mode::Chat)
            && !self.inbuf.is_empty()
        {
            // A last line without a newline (`printf 'ECHO x' | nc`) still counts.
            let rest = std::mem::take(&mut self.inbuf);
            if self.mode == Mode::Chat {
                if !self.discarding && rest.len() <= MAX_CHAT_LINE {
                    self.events.push(ChatIn::Line(rest));
                }
            } else {
                self.line(&rest, stats, console);
            }
            if let Err(e) = self.flush(stats) {
                return Next::Close(close_reason(&e));
            }
        }
        let queued = self.queued();
        let tls_out = self.tls.as_ref().is_some_and(|t| t.wants_write());
        if queued == 0 && !tls_out && (self.read_closed || self.mode == Mode::Closing) {
            if let Some(t) = self.tls.as_mut() {
                t.close(&mut self.sock);
            }
            // Send our FIN before the close: if the client's bytes are still
            // unread, the close sends a reset, and a FIN that went first lets
            // the client read everything we wrote and then a clean EOF.
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            return Next::Close(if self.read_closed {
                "client closed"
            } else {
                "done"
            });
        }
        let reading = self.mode != Mode::Closing
            && !self.read_closed
            && !self.paused
            && (self.mode != Mode::Stream || queued < OUT_CAP);
        // No plaintext goes out while a TLS handshake runs: until it ends
        // the session's own records decide (a half-done handshake must not
        // make the socket's writability spin the loop).
        let writing = tls_out || (queued > 0 && !self.handshaking());
        let interest = match (reading, writing) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE,
        };
        if again {
            Next::Again(interest)
        } else {
            Next::Keep(interest)
        }
    }

    /// Write queued output until done or the socket is full.
    fn flush(&mut self, stats: &Stats) -> io::Result<()> {
        if let Some(t) = self.tls.as_mut() {
            t.flush(&mut self.sock)?;
        }
        while self.out_pos < self.out.len() {
            let n = match self.tls.as_mut() {
                None => self.sock.write(&self.out[self.out_pos..]),
                Some(t) => t.write(&mut self.sock, &self.out[self.out_pos..]),
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    stats.add_out(n);
                    self.last_active = Instant::now();
                    self.last_progress = self.last_active;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Idle connections keep no large buffers; a stream keeps its
            // own (bounded by OUT_CAP) rather than map and unmap it each
            // turn (malloc serves these sizes with mmap).
            if self.out.capacity() > 64 * 1024 && self.mode != Mode::Stream {
                self.out = Vec::new();
            }
        } else if self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Handle bytes just read.
    fn input(&mut self, data: &[u8], stats: &Stats, console: &mut Console) {
        let before = self.lines_done;
        self.consume(data, stats, console);
        let used = self.lines_done > before;
        // The clock of the line now incomplete: it starts with the first
        // byte after the last whole line (a slowloris peer never ends one).
        let partial = matches!(self.mode, Mode::Lines | Mode::Chat)
            && (!self.inbuf.is_empty() || self.discarding);
        self.line_started = match (partial, used) {
            (false, _) => None,
            (true, true) => Some(Instant::now()),
            (true, false) => Some(self.line_started.unwrap_or_else(Instant::now)),
        };
    }

    /// Feed bytes to the mode.
    fn consume(&mut self, data: &[u8], stats: &Stats, console: &mut Console) {
        match self.mode {
            Mode::Stream => self.out.extend_from_slice(data),
            Mode::Closing => {}
            Mode::Lines | Mode::Chat => {
                if self.inbuf.is_empty() {
                    let used = self.lines(data, stats, console);
                    if self.mode == Mode::Stream {
                        self.out.extend_from_slice(&data[used..]);
                    } else if matches!(self.mode, Mode::Lines | Mode::Chat) {
                        self.inbuf.extend_from_slice(&data[used..]);
                    }
                } else {
                    let mut buf = std::mem::take(&mut self.inbuf);
                    buf.extend_from_slice(data);
                    let used = self.lines(&buf, stats, console);
                    if self.mode == Mode::Stream {
                        self.out.extend_from_slice(&buf[used..]);
                    } else if matches!(self.mode, Mode::Lines | Mode::Chat) {
                        buf.drain(..used);
                        self.inbuf = buf;
                        if self.inbuf.is_empty() && self.inbuf.capacity() > 4096 {
                            self.inbuf = Vec::new();
                        }
                    }
                }
            }
        }
    }

    /// Answer every whole line at the front of `buf`; returns the bytes used.
    fn lines(&mut self, buf: &[u8], stats: &Stats, console: &mut Console) -> usize {
        let mut used = 0;
        while matches!(self.mode, Mode::Lines | Mode::Chat) {
            if self.discarding {
                // The rest of an over-long chat line: skip to its end.
                match buf[used..].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        used += i + 1;
                        self.discarding = false;
                        self.lines_done += 1;
                    }
                    None => return buf.len(),
                }
                continue;
            }
            let max = if self.mode == Mode::Chat {
                MAX_CHAT_LINE
            } else {
                proto::MAX_LINE
            };
            match next_line(&buf[used..], max) {
                Frame::Line(line, n) => {
                    used += n;
                    self.lines_done += 1;
                    if self.mode == Mode::Chat && line == chat_proto::PING.as_bytes() {
                        // Keep-alive: answered here, never shown to the room.
                        self.out.extend_from_slice(chat_proto::PONG.as_bytes());
                        self.out.push(b'\n');
                    } else if self.mode == Mode::Chat {
                        stats.add_request();
                        stats.chat_lines.fetch_add(1, Ordering::Relaxed);
                        self.events.push(ChatIn::Line(line.to_vec()));
                    } else {
                        self.line(line, stats, console);
                    }
                }
                Frame::Incomplete => break,
                Frame::TooLong if self.mode == Mode::Chat => {
                    // Refuse the line, keep the member: drop bytes up to its newline.
                    stats.refuse(Refusal::ChatLineTooLong);
                    self.events.push(ChatIn::Refused(format!(
                        "ERR line too long (max {MAX_CHAT_LINE} bytes); not sent"
                    )));
                    self.discarding = true;
                }
                Frame::TooLong => {
                    stats.refuse(Refusal::LineTooLong);
                    // Info, so rate-limited: every client can trigger it.
                    console.say(
                        Level::Info,
                        &format!(
                            "[ECHO] {} sent a line over {} bytes; closing it",
                            self.peer,
                            proto::MAX_LINE
                        ),
                    );
                    self.out.extend_from_slice(proto::TOO_LONG_REPLY);
                    self.start_closing();
                    return buf.len();
                }
            }
        }
        used
    }

    /// Answer one request line.
    fn line(&mut self, line: &[u8], stats: &Stats, console: &mut Console) {
        stats.add_request();
        match proto::parse_request(line) {
            Request::Echo(text) => {
                stats.echo_requests.fetch_add(1, Ordering::Relaxed);
                console.say(Level::Info, &format!("[ECHO] Client says: {}", shown(text)));
                proto::encode_reply(&Reply::Echo(text), &mut self.out);
            }
            Request::Stream => {
                console.say(
                    Level::Info,
                    &format!("[ECHO] {} started a stream", self.peer),
                );
                proto::encode_reply(&Reply::Ok, &mut self.out);
                self.mode = Mode::Stream;
            }
            Request::Help => proto::encode_reply(&proto::help_reply(), &mut self.out),
            Request::Quit => {
                proto::encode_reply(&Reply::Bye(b""), &mut self.out);
                self.start_closing();
            }
            Request::Empty => {}
            Request::Chat(nick) => {
                let nick = String::from_utf8_lossy(nick).trim().to_string();
                match chat_proto::valid_nick(&nick) {
                    Ok(()) => {
                        self.mode = Mode::Chat;
                        self.events.push(ChatIn::Join(nick));
                    }
                    Err(why) => {
                        stats.refuse(Refusal::BadNick);
                        proto::encode_reply(&Reply::Err(why.as_bytes()), &mut self.out)
                    }
                }
            }
            Request::Unknown(word) => {
                stats.refuse(Refusal::UnknownCommand);
                console.say(
                    Level::Debug,
                    &format!("[ECHO] {} sent unknown '{}'", self.peer, shown(word)),
                );
                proto::encode_unknown(word, &mut self.out);
            }
        }
    }
}

/// Client text for the console: escaped, invalid UTF-8 replaced, clipped.
fn shown(b: &[u8]) -> String {
    let mut s = display_bytes(&b[..b.len().min(SHOW_MAX)]);
    if b.len() > SHOW_MAX {
        s.push_str(&format!("… ({} bytes)", b.len()));
    }
    s
}

fn close_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset by client",
        io::ErrorKind::BrokenPipe => "client went away",
        io::ErrorKind::InvalidData => "TLS error",
        _ => "socket error",
    }
}
