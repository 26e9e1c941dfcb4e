//! Probes against a netsh server, as [`probe::Transport`]s: `ECHO` lines on
//! one TCP connection ([`TcpEcho`]), and datagrams on a connected UDP socket
//! ([`UdpEcho`]). Payloads carry their sequence number
//! ([`proto::probe_text`], [`proto::udp_probe`]), so an answer says which
//! probe it answers and whether any byte changed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use crate::error::{Error, Result};
use crate::net::client;
use crate::net::probe::{self, Answer, AnswerKind, Tokens, Transport};
use crate::proto::echo::{self as proto, Reply, Request};
use crate::proto::line::{Frame, next_line};

/// Probe lines on one TCP connection: the server answers in order.
pub struct TcpEcho {
    sock: TcpStream,
    addr: SocketAddr,
    size: usize,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    interest: Interest,
    last_sent: u64,
    token: Token,
}

impl TcpEcho {
    /// Probes of `size` bytes on a connected stream to `addr`.
    ///
    /// # Errors
    /// The OS error if the stream cannot be made non-blocking.
    pub fn new(stream: std::net::TcpStream, addr: SocketAddr, size: usize) -> Result<TcpEcho> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", addr, &e))?;
        Ok(TcpEcho {
            sock: TcpStream::from_std(stream),
            addr,
            size,
            inbuf: Vec::new(),
            out: Vec::new(),
            interest: Interest::READABLE,
            last_sent: 0,
            token: Tokens::ALONE.token(0),
        })
    }

    /// Probes on a stream already connected by a poll (`monitor`'s
    /// non-blocking connects); it must be out of every poll.
    pub fn from_mio(sock: TcpStream, addr: SocketAddr, size: usize) -> TcpEcho {
        TcpEcho {
            sock,
            addr,
            size,
            inbuf: Vec::new(),
            out: Vec::new(),
            interest: Interest::READABLE,
            last_sent: 0,
            token: Tokens::ALONE.token(0),
        }
    }

    /// Write what is queued; ask for writability while some is left.
    fn flush(&mut self, registry: &Registry) -> Result<()> {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => return Err(probe::closed_after(self.addr, self.last_sent)),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("send to", self.addr, &e)),
            }
        }
        let want = if self.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if want != self.interest {
            registry
                .reregister(&mut self.sock, self.token, want)
                .map_err(|e| Error::io("register", self.addr, &e))?;
            self.interest = want;
        }
        Ok(())
    }

    /// What one echoed line says about its probe.
    fn judge(&self, text: &[u8]) -> (u64, AnswerKind) {
        // A mangled sequence number is the probe in flight, changed.
        let seq = proto::probe_seq(text)
            .filter(|&n| n <= self.last_sent)
            .unwrap_or(self.last_sent);
        (seq, compare(&proto::probe_text(seq, self.size), text))
    }
}

impl Transport for TcpEcho {
    fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()> {
        self.token = tokens.token(0);
        registry
            .register(&mut self.sock, self.token, self.interest)
            .map_err(|e| Error::io("register", self.addr, &e))
    }

    fn send(&mut self, seq: u64, registry: &Registry) -> Result<Instant> {
        let text = proto::probe_text(seq, self.size);
        proto::encode_request(&Request::Echo(&text), &mut self.out);
        self.last_sent = seq;
        let at = Instant::now();
        self.flush(registry)?;
        Ok(at)
    }

    fn ready(&mut self, _token: Token, registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        self.flush(registry)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err(probe::closed_after(self.addr, self.last_sent)),
                Ok(n) => {
                    let at = Instant::now();
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    let mut used = 0;
                    loop {
                        match next_line(&self.inbuf[used..], proto::MAX_LINE + 64) {
                            Frame::Line(line, n) => {
                                used += n;
                                let Reply::Echo(text) = proto::parse_reply(line) else {
                                    return Err(client::unexpected(
                                        self.addr,
                                        &Request::Echo(b""),
                                        line,
                                    ));
                                };
                                let (seq, kind) = self.judge(text);
                                out.push(Answer {
                                    seq,
                                    at,
                                    kind,
                                    from: None,
                                    ttl: None,
                                    offset_us: None,
                                });
                            }
                            Frame::Incomplete => break,
                            Frame::TooLong => {
                                return Err(Error::new(
                                    crate::error::ErrorKind::Protocol,
                                    format!(
                                        "{} sent a line over {} bytes",
                                        self.addr,
                                        proto::MAX_LINE + 64
                                    ),
                                ));
                            }
                        }
                    }
                    self.inbuf.drain(..used);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read from", self.addr, &e)),
            }
        }
    }
}

/// Probe datagrams on a connected UDP socket, so ICMP "port unreachable"
/// comes back as a refusal.
pub struct UdpEcho {
    sock: UdpSocket,
    addr: SocketAddr,
    size: usize,
    buf: Vec<u8>,
    last_sent: u64,
}

/// Largest UDP probe.
const MAX_DATAGRAM: usize = 65_536;

impl UdpEcho {
    /// Probes of `size` bytes on a socket connected to `addr`.
    ///
    /// # Errors
    /// The OS error if the socket cannot be made non-blocking.
    pub fn new(sock: std::net::UdpSocket, addr: SocketAddr, size: usize) -> Result<UdpEcho> {
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", addr, &e))?;
        Ok(UdpEcho {
            sock: UdpSocket::from_std(sock),
            addr,
            size,
            // Room for the probe and more: a longer answer is cut, and so
            // differs from the probe (a thousand monitor targets each hold
            // one of these, so not 64 KiB each).
            buf: vec![0u8; (size + 64).clamp(2048, MAX_DATAGRAM)],
            last_sent: 0,
        })
    }
}

impl Transport for UdpEcho {
    fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<()> {
        registry
            .register(&mut self.sock, tokens.token(0), Interest::READABLE)
            .map_err(|e| Error::io("register", self.addr, &e))
    }

    fn send(&mut self, seq: u64, _registry: &Registry) -> Result<Instant> {
        let d = proto::udp_probe(seq, self.size);
        self.last_sent = seq;
        let at = Instant::now();
        match self.sock.send(&d) {
            // A full send buffer loses the probe, as the network may.
            Ok(_) => Ok(at),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(at),
            Err(e) => Err(udp_error(self.addr, &e)),
        }
    }

    fn ready(&mut self, _token: Token, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        loop {
            match self.sock.recv(&mut self.buf) {
                Ok(n) => {
                    let at = Instant::now();
                    let d = &self.buf[..n];
                    // Datagrams that are not our probes are not answers.
                    if let Some(seq) = proto::udp_probe_seq(d).filter(|&s| s <= self.last_sent) {
                        let kind = compare(&proto::udp_probe(seq, self.size), d);
                        out.push(Answer {
                            seq,
                            at,
                            kind,
                            from: None,
                            ttl: None,
                            offset_us: None,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(udp_error(self.addr, &e)),
            }
        }
    }
}

fn udp_error(addr: SocketAddr, e: &io::Error) -> Error {
    Error::io("receive UDP echo from", addr, e)
        .with_hint("nothing answers UDP there: is 'netsh serve' running on that port?")
}

fn compare(want: &[u8], got: &[u8]) -> AnswerKind {
    match proto::first_difference(want, got) {
        None => AnswerKind::Intact,
        Some(first_difference) => AnswerKind::Corrupt { first_difference },
    }
}
