//! One TCP connection of the server: a state machine over the echo protocol
//! ([`crate::proto::echo`]). It owns bounded input and output buffers; the
//! event loop in [`super`] calls [`Conn::drive`] when the socket is ready and
//! acts on the returned [`Next`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
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
/// Bytes per read in line and chat modes.
const LINE_READ: usize = 64 * 1024;
/// SOURCE writes per turn before yielding to other connections.
const WRITES_PER_TURN: usize = 16;
/// Bytes per SOURCE write.
const SOURCE_CHUNK: usize = 256 * 1024;
const _: () = assert!(SOURCE_CHUNK <= proto::PATTERN_SPAN);
/// Shared chunks handed to one `writev`.
const SHARED_IOV: usize = 64;
/// Longest client text shown on the console.
const SHOW_MAX: usize = 200;

/// What the connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Line protocol: ECHO, HELP, QUIT, STREAM.
    Lines,
    /// Raw echo of every byte (after `STREAM`).
    Stream,
    /// Reading the bulk pattern (after `SINK`), see [`Bulk`].
    Sink,
    /// Writing the bulk pattern (after `SOURCE`), see [`Bulk`].
    Source,
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

/// How much one [`Conn::drive`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Until the socket says it has no more (or the per-turn cap).
    Full,
    /// A fresh readable edge with no end of stream or error on it: a short
    /// read empties the socket (new bytes bring a new edge), so the read
    /// that would only say "would block" is skipped. Plain TCP only; TLS
    /// may hold decrypted bytes back.
    Edge,
    /// None: the chat room gave it output to write. Input that waits has an
    /// edge of its own, or is in the loop's list to drive again.
    None,
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
    /// The chat room's broadcast chunks for this member, shared with the
    /// other members (see `server::hub`): they go out before `out`, which
    /// only holds bytes queued after the last of them.
    shared: VecDeque<Arc<[u8]>>,
    /// Bytes of the first shared chunk already written.
    shared_pos: usize,
    /// Unwritten bytes in `shared`.
    shared_len: usize,
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
    /// The room's key: joining needs its proof (`serve --chat-key`).
    pub chat_key: Option<std::sync::Arc<Vec<u8>>>,
    /// `CHAT nick` was challenged: the name and the nonce sent.
    auth_pending: Option<(String, [u8; chat_proto::NONCE_LEN])>,
    /// When the connection was accepted (a TLS handshake must end in time).
    pub accepted: Instant,
    /// The one-way bulk test, in `Sink` and `Source` modes.
    pub bulk: Option<Box<Bulk>>,
    /// `UDPBULK` was asked for: the server gives a token (or refuses).
    pub udp_wanted: bool,
    /// The UDP bulk flow this connection controls.
    pub udp_flow: Option<Box<UdpFlow>>,
    /// The chat turn that last queued output here (the hub's list of
    /// connections to drive holds each once).
    pub touched_in: u64,
}

/// A UDP bulk flow that a `UDPBULK` line opened: the datagrams carrying its
/// token (from the control connection's address) are counted here, not
/// echoed, and not charged to the anonymous per-source budget.
#[derive(Debug)]
pub struct UdpFlow {
    /// The token the datagrams carry.
    pub token: u32,
    /// When it was opened: the clock of arrival times.
    pub began: Instant,
    /// The count.
    pub counter: crate::proto::bulk::Counter,
    /// `END` came: later datagrams are ignored.
    pub ended: bool,
}

impl UdpFlow {
    /// A new flow.
    pub fn new(token: u32) -> Box<UdpFlow> {
        Box::new(UdpFlow {
            token,
            began: Instant::now(),
            counter: Default::default(),
            ended: false,
        })
    }

    /// Count one datagram that arrived `now`.
    pub fn datagram(&mut self, h: crate::proto::bulk::Header, d: &[u8], now: Instant) {
        if !self.ended {
            let at = now.saturating_duration_since(self.began).as_nanos() as u64;
            self.counter.datagram(h, d, at);
        }
    }
}

/// A one-way bulk test's state: a few counters, whatever the size (the
/// pattern is shared, checked in place).
#[derive(Debug)]
pub struct Bulk {
    /// Pattern offset of the first byte.
    pub start: usize,
    /// Check every byte (SINK).
    pub verify: bool,
    /// SOURCE: how much.
    pub limit: Option<proto::SourceLimit>,
    /// Bytes moved so far.
    pub bytes: u64,
    /// SINK: bytes that differed.
    pub mismatched: u64,
    /// SINK: the first that differed.
    pub first: Option<u64>,
    /// When the request came.
    pub began: Instant,
    /// When the last byte moved.
    pub last: Instant,
    /// SOURCE: all written and the write side shut.
    pub finished: bool,
}

impl Bulk {
    fn new(start: usize, verify: bool, limit: Option<proto::SourceLimit>) -> Box<Bulk> {
        let now = Instant::now();
        Box::new(Bulk {
            start,
            verify,
            limit,
            bytes: 0,
            mismatched: 0,
            first: None,
            began: now,
            last: now,
            finished: false,
        })
    }

    /// SINK: take bytes, checked in place against the shared pattern.
    fn sink(&mut self, data: &[u8]) {
        if self.verify {
            let (bad, first) = proto::check_pattern(self.start as u64 + self.bytes, data);
            if bad > 0 {
                self.mismatched += bad;
                if self.first.is_none() {
                    self.first = first.map(|i| self.bytes + i as u64);
                }
            }
        }
        self.bytes += data.len() as u64;
        self.last = Instant::now();
    }

    /// The summary a SINK answers.
    pub fn summary(&self) -> proto::SinkSummary {
        proto::SinkSummary {
            bytes: self.bytes,
            mismatched: self.mismatched,
            first: self.first,
            elapsed_us: self.last.duration_since(self.began).as_micros() as u64,
            verified: self.verify,
        }
    }

    /// The console line at the end of a test.
    pub fn console_line(&self, peer: SocketAddr, what: &str) -> String {
        let secs = self.last.duration_since(self.began).as_secs_f64().max(1e-9);
        let check = if self.limit.is_some() {
            String::new()
        } else if !self.verify {
            ", not verified".to_string()
        } else if self.mismatched == 0 {
            ", every byte verified".to_string()
        } else {
            format!(
                ", {} bytes differed (first at {})",
                self.mismatched,
                self.first.unwrap_or(0)
            )
        };
        format!(
            "[BULK] {peer} {what} {} bytes in {secs:.2} s ({:.2} Gbit/s{check})",
            self.bytes,
            self.bytes as f64 * 8.0 / secs / 1e9
        )
    }
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
            shared: VecDeque::new(),
            shared_pos: 0,
            shared_len: 0,
            read_closed: false,
            discarding: false,
            paused: false,
            last_progress: Instant::now(),
            line_started: None,
            lines_done: 0,
            tls: None,
            chat_key: None,
            auth_pending: None,
            accepted: Instant::now(),
            bulk: None,
            udp_wanted: false,
            udp_flow: None,
            touched_in: 0,
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
        self.out.len() - self.out_pos + self.shared_len
    }

    /// Give back a large output buffer that has been empty since `quiet`
    /// (the sweep calls it: a chat member keeps its buffer through a burst).
    pub fn trim(&mut self, quiet: Instant) {
        if self.queued() == 0 && self.last_active < quiet {
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
                self.out_pos = 0;
            }
            if self.shared.capacity() > SHARED_IOV {
                self.shared = VecDeque::new();
            }
        }
    }

    /// Queue a line (a newline is added) for the room.
    pub fn queue_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\n');
    }

    /// Queue a chunk of the room's lines shared with other members. Bytes
    /// queued before it in `out` become a chunk of their own ahead of it, so
    /// `out` only ever holds what comes after every shared chunk.
    pub fn queue_shared(&mut self, chunk: &Arc<[u8]>) {
        if self.out_pos < self.out.len() {
            let own: Arc<[u8]> = Arc::from(&self.out[self.out_pos..]);
            self.shared_len += own.len();
            self.shared.push_back(own);
            self.out.clear();
            self.out_pos = 0;
        }
        self.shared_len += chunk.len();
        self.shared.push_back(Arc::clone(chunk));
    }

    /// Write shared chunks (up to [`SHARED_IOV`] in one `writev`) until
    /// they are all out or the socket is full.
    fn flush_shared(&mut self, stats: &Stats) -> io::Result<()> {
        while let Some(front) = self.shared.front() {
            let n = match self.tls.as_mut() {
                None => {
                    let mut iov = [IoSlice::new(&[]); SHARED_IOV];
                    iov[0] = IoSlice::new(&front[self.shared_pos..]);
                    let mut k = 1;
                    for c in self.shared.iter().skip(1).take(SHARED_IOV - 1) {
                        iov[k] = IoSlice::new(&c[..]);
                        k += 1;
                    }
                    self.sock.write_vectored(&iov[..k])
                }
                Some(t) => t.write(&mut self.sock, &front[self.shared_pos..]),
            };
            match self.took(n, stats)? {
                Some(n) => self.advance_shared(n),
                None => break,
            }
        }
        Ok(())
    }

    /// What one write of queued output did: `Some(n)` bytes taken (counted
    /// as progress; 0 after a signal), `None` when the socket is full, an
    /// error when the connection is over.
    fn took(&mut self, wrote: io::Result<usize>, stats: &Stats) -> io::Result<Option<usize>> {
        match wrote {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                stats.add_out(n);
                self.last_active = Instant::now();
                self.last_progress = self.last_active;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// `n` bytes of the shared chunks were written.
    fn advance_shared(&mut self, mut n: usize) {
        self.shared_len -= n.min(self.shared_len);
        while n > 0 {
            let Some(front) = self.shared.front() else {
                break;
            };
            let left = front.len() - self.shared_pos;
            if n < left {
                self.shared_pos += n;
                return;
            }
            n -= left;
            self.shared.pop_front();
            self.shared_pos = 0;
        }
    }

    /// Queue bytes and switch to closing (used for shutdown and limits).
    pub fn close_with(&mut self, msg: &[u8]) {
        if !matches!(self.mode, Mode::Stream | Mode::Sink | Mode::Source) {
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
    pub fn drive(
        &mut self,
        scratch: &mut [u8],
        stats: &Stats,
        console: &mut Console,
        reads: Reads,
    ) -> Next {
        if let Err(e) = self.flush(stats) {
            return Next::Close(close_reason(&e));
        }
        let mut again = false;
        let mut blocked = false;
        if self.mode == Mode::Source {
            match self.source(stats, console) {
                Ok(more) => again |= more,
                Err(e) => return Next::Close(close_reason(&e)),
            }
        }
        let edge = reads == Reads::Edge && self.tls.is_none();
        if self.mode != Mode::Closing && !self.read_closed && !self.paused && reads != Reads::None {
            let mut done = 0;
            loop {
                if self.mode == Mode::Stream && self.queued() >= OUT_CAP {
                    // Back-pressure: resume when the client drains its echo.
                    blocked = true;
                    break;
                }
                if done == READS_PER_TURN {
                    again = true;
                    break;
                }
                done += 1;
                // 256 KiB reads for raw bytes (SINK, STREAM); lines and chat
                // read as they always did, 64 KiB at a time (the chat room's
                // flow control is tuned to it).
                let cap = if matches!(self.mode, Mode::Sink | Mode::Stream) {
                    scratch.len()
                } else {
                    scratch.len().min(LINE_READ)
                };
                match self.recv(&mut scratch[..cap]) {
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
                        if self.mode == Mode::Closing || (edge && n < cap) {
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
            // A SOURCE just asked for: its OK went out, the pattern follows.
            if self.mode == Mode::Source {
                match self.source(stats, console) {
                    Ok(more) => again |= more,
                    Err(e) => return Next::Close(close_reason(&e)),
                }
            }
        }
        if self.read_closed && self.mode == Mode::Sink {
            // The client's half-close ends the test: answer its summary.
            if let Some(b) = &self.bulk {
                b.summary().encode(&mut self.out);
                console.say(Level::Info, &b.console_line(self.peer, "sent"));
            }
            self.start_closing();
            if let Err(e) = self.flush(stats) {
                return Next::Close(close_reason(&e));
            }
        }
        if self.read_closed && self.mode == Mode::Source {
            // The client went before the end: nothing more to write.
            if let Some(b) = self.bulk.as_ref().filter(|b| !b.finished) {
                console.say(
                    Level::Info,
                    &format!(
                        "{} (client closed early)",
                        b.console_line(self.peer, "received")
                    ),
                );
            }
            self.start_closing();
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
        let writing = tls_out || ((queued > 0 || self.mode == Mode::Source) && !self.handshaking());
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
        if !self.shared.is_empty() {
            self.flush_shared(stats)?;
            if !self.shared.is_empty() {
                return Ok(());
            }
        }
        while self.out_pos < self.out.len() {
            let n = match self.tls.as_mut() {
                None => self.sock.write(&self.out[self.out_pos..]),
                Some(t) => t.write(&mut self.sock, &self.out[self.out_pos..]),
            };
            match self.took(n, stats)? {
                Some(n) => self.out_pos += n,
                None => break,
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Idle connections keep no large buffers; a stream keeps its
            // own (bounded by OUT_CAP), and a chat member its own until it
            // is quiet ([`Conn::trim`] in the sweep), rather than map and
            // unmap it each turn of a burst (malloc serves these sizes with
            // mmap: a fresh buffer is page faults on zeroed pages).
            if self.out.capacity() > 64 * 1024 && !matches!(self.mode, Mode::Stream | Mode::Chat) {
                self.out = Vec::new();
            }
        } else if self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// SOURCE: write the pattern straight from the shared copy (after the
    /// queued `OK`) until the socket is full, the limit is reached, or the
    /// turn's cap; true if the cap stopped it (more to write at once).
    fn source(&mut self, stats: &Stats, console: &mut Console) -> io::Result<bool> {
        if self.queued() > 0 {
            return Ok(false);
        }
        let Some(b) = &mut self.bulk else {
            return Ok(false);
        };
        if b.finished {
            return Ok(false);
        }
        let now = Instant::now();
        let left = match b.limit {
            Some(proto::SourceLimit::Bytes(n)) => n.saturating_sub(b.bytes),
            Some(proto::SourceLimit::Millis(ms)) => {
                if now.duration_since(b.began).as_millis() as u64 >= ms {
                    0
                } else {
                    u64::MAX
                }
            }
            None => 0,
        };
        let mut left = left;
        for _ in 0..WRITES_PER_TURN {
            if left == 0 {
                b.finished = true;
                // The end: TLS says close_notify (the records still queued
                // go out as the socket takes them; a FIN now would cut them
                // off), plain TCP its FIN.
                match self.tls.as_mut() {
                    Some(t) => t.close(&mut self.sock),
                    None => {
                        let _ = self.sock.shutdown(std::net::Shutdown::Write);
                    }
                }
                console.say(Level::Info, &b.console_line(self.peer, "received"));
                // Wait for the client's close (read side), bounded by the sweep.
                return Ok(false);
            }
            let len = (left.min(SOURCE_CHUNK as u64)) as usize;
            let chunk = proto::pattern_at(b.start as u64 + b.bytes, len);
            let wrote = match self.tls.as_mut() {
                None => self.sock.write(chunk),
                Some(t) => t.write(&mut self.sock, chunk),
            };
            match wrote {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    b.bytes += n as u64;
                    if left != u64::MAX {
                        left -= n as u64;
                    }
                    stats.add_out(n);
                    b.last = Instant::now();
                    self.last_active = b.last;
                    self.last_progress = b.last;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if let Some(proto::SourceLimit::Millis(ms)) = b.limit
                && b.last.duration_since(b.began).as_millis() as u64 >= ms
            {
                left = 0;
            }
        }
        Ok(true)
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
            Mode::Sink => {
                if let Some(b) = &mut self.bulk {
                    b.sink(data);
                }
            }
            // A SOURCE client has nothing to say: its bytes are dropped.
            Mode::Source | Mode::Closing => {}
            Mode::Lines | Mode::Chat => {
                if self.inbuf.is_empty() {
                    let used = self.lines(data, stats, console);
                    if matches!(self.mode, Mode::Stream | Mode::Sink) {
                        self.consume(&data[used..], stats, console);
                    } else if matches!(self.mode, Mode::Lines | Mode::Chat) {
                        self.inbuf.extend_from_slice(&data[used..]);
                    }
                } else {
                    let mut buf = std::mem::take(&mut self.inbuf);
                    buf.extend_from_slice(data);
                    let used = self.lines(&buf, stats, console);
                    if matches!(self.mode, Mode::Stream | Mode::Sink) {
                        self.consume(&buf[used..], stats, console);
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

    /// A keyed room: send `AUTH <nonce>` and wait for the proof.
    fn challenge(&mut self, nick: String) {
        let mut nonce = [0u8; chat_proto::NONCE_LEN];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).is_err() {
            proto::encode_reply(
                &Reply::Err(b"server cannot make a challenge now"),
                &mut self.out,
            );
            self.start_closing();
            return;
        }
        self.out.extend_from_slice(
            format!("{} {}\n", chat_proto::AUTH, chat_proto::hex(&nonce)).as_bytes(),
        );
        self.auth_pending = Some((nick, nonce));
    }

    /// The line after a challenge: `AUTH <hex HMAC>`, or the door closes.
    fn answer_challenge(
        &mut self,
        line: &[u8],
        nick: String,
        nonce: &[u8],
        stats: &Stats,
        console: &mut Console,
    ) {
        let mac = line
            .strip_prefix(chat_proto::AUTH.as_bytes())
            .and_then(|r| chat_proto::unhex(r.trim_ascii()));
        let ok = match (&self.chat_key, mac) {
            (Some(k), Some(m)) => chat_proto::auth_ok(k, nonce, &nick, &m),
            _ => false,
        };
        if ok {
            self.mode = Mode::Chat;
            self.events.push(ChatIn::Join(nick));
            return;
        }
        stats.refuse(Refusal::ChatAuth);
        console.say(
            Level::Info,
            &format!(
                "[CHAT] {} did not prove the chat key (as '{}'); closing it",
                self.peer,
                shown(nick.as_bytes())
            ),
        );
        proto::encode_reply(
            &Reply::Err(
                b"wrong chat key; ask the server's operator for the key file (chat --key FILE)",
            ),
            &mut self.out,
        );
        self.start_closing();
    }

    /// Answer one request line.
    fn line(&mut self, line: &[u8], stats: &Stats, console: &mut Console) {
        stats.add_request();
        if let Some((nick, nonce)) = self.auth_pending.take() {
            self.answer_challenge(line, nick, &nonce, stats, console);
            return;
        }
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
            Request::Sink { start, verify } => {
                console.say(
                    Level::Info,
                    &format!("[BULK] {} started sending", self.peer),
                );
                proto::encode_reply(&Reply::Ok, &mut self.out);
                self.bulk = Some(Bulk::new(start, verify, None));
                self.mode = Mode::Sink;
            }
            Request::Source { start, limit } => {
                console.say(
                    Level::Info,
                    &format!("[BULK] {} started receiving", self.peer),
                );
                proto::encode_reply(&Reply::Ok, &mut self.out);
                self.bulk = Some(Bulk::new(start, false, Some(limit)));
                self.mode = Mode::Source;
            }
            Request::UdpBulk if self.udp_flow.is_some() || self.udp_wanted => {
                proto::encode_reply(
                    &Reply::Err(b"one UDP bulk test per connection"),
                    &mut self.out,
                );
            }
            // The server gives the token: it keeps the table of flows.
            Request::UdpBulk => self.udp_wanted = true,
            Request::End(total) => match &mut self.udp_flow {
                Some(f) if !f.ended => {
                    f.ended = true;
                    let sum = f.counter.finish(total);
                    sum.encode(&mut self.out);
                    let secs = sum.elapsed_us as f64 / 1e6;
                    console.say(
                        Level::Info,
                        &format!(
                            "[BULK] {} UDP: {} of {} datagrams ({:.2}% lost), {} out of order, {} bad, jitter {:.3} ms, {:.2} Mbit/s",
                            self.peer,
                            sum.received,
                            sum.total,
                            if sum.total > 0 { sum.lost as f64 * 100.0 / sum.total as f64 } else { 0.0 },
                            sum.out_of_order,
                            sum.bad,
                            sum.jitter_us / 1e3,
                            if secs > 0.0 { sum.bytes as f64 * 8.0 / secs / 1e6 } else { 0.0 },
                        ),
                    );
                }
                _ => proto::encode_reply(&Reply::Err(b"no UDP bulk test to end"), &mut self.out),
            },
            Request::Stats => match &self.udp_flow {
                Some(f) if !f.ended => f
                    .counter
                    .so_far()
                    .encode_as(crate::proto::bulk::STATS, &mut self.out),
                _ => proto::encode_reply(&Reply::Err(b"no UDP bulk test going on"), &mut self.out),
            },
            Request::Help => proto::encode_reply(&proto::help_reply(), &mut self.out),
            Request::Quit => {
                proto::encode_reply(&Reply::Bye(b""), &mut self.out);
                self.start_closing();
            }
            Request::Empty => {}
            Request::Chat(nick) => {
                let nick = String::from_utf8_lossy(nick).trim().to_string();
                match chat_proto::valid_nick(&nick) {
                    Ok(()) if self.chat_key.is_some() => self.challenge(nick),
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
