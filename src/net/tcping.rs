//! TCP connect probes to any service, as a [`probe::Transport`]: each probe
//! is a fresh non-blocking connect, timed from the SYN to the kernel's
//! report (the SYN-ACK, or the reset of a closed port). A reset is an
//! answer (`refused`: the host is there, nothing listens); silence is loss
//! (a firewall dropping the SYN, or no host); an ICMP error is an error.
//! The connection is closed as soon as it is made; nothing is sent on it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::net::probe::{Answer, AnswerKind, Tokens, Transport};
use crate::net::sockopt::SockOpts;

/// Connects to one address.
pub struct Tcping {
    dst: SocketAddr,
    opts: SockOpts,
    /// Connects in flight, by token (from the probe's number).
    open: HashMap<Token, (u64, TcpStream)>,
    tokens: Tokens,
    /// Results known at once (a connect that failed in the call itself).
    now: Vec<Answer>,
}

impl Tcping {
    /// Probes of `dst` with the session's socket options.
    pub fn new(dst: SocketAddr, opts: SockOpts) -> Tcping {
        Tcping {
            dst,
            opts,
            open: HashMap::new(),
            now: Vec::new(),
            tokens: Tokens::ALONE,
        }
    }

    fn answer(seq: u64, at: Instant, result: io::Result<()>) -> Answer {
        let kind = match result {
            Ok(()) => AnswerKind::Intact,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => AnswerKind::Refused,
            Err(e) => AnswerKind::Error {
                what: crate::error::io_reason(&e),
            },
        };
        Answer {
            seq,
            at,
            kind,
            from: None,
            ttl: None,
            offset_us: None,
        }
    }
}

impl Transport for Tcping {
    fn register(&mut self, _registry: &Registry, tokens: Tokens) -> Result<()> {
        self.tokens = tokens;
        Ok(())
    }

    fn send(&mut self, seq: u64, registry: &Registry) -> Result<Instant> {
        let s = Socket::new(
            Domain::for_address(self.dst),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(|e| Error::io("open a TCP socket for", self.dst, &e))?;
        s.set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", self.dst, &e))?;
        self.opts
            .apply(&s)
            .map_err(|e| Error::io("set socket options on", self.dst, &e))?;
        let at = Instant::now();
        match s.connect(&SockAddr::from(self.dst)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => {
                self.now.push(Tcping::answer(seq, Instant::now(), Err(e)));
                return Ok(at);
            }
        }
        let mut stream = TcpStream::from_std(s.into());
        let token = self.tokens.token(seq as usize);
        registry
            .register(&mut stream, token, Interest::WRITABLE)
            .map_err(|e| Error::io("register", self.dst, &e))?;
        self.open.insert(token, (seq, stream));
        Ok(at)
    }

    fn pending(&mut self, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        out.append(&mut self.now);
        Ok(())
    }

    fn ready(&mut self, token: Token, _registry: &Registry, out: &mut Vec<Answer>) -> Result<()> {
        let Some((seq, stream)) = self.open.get(&token) else {
            return Ok(());
        };
        let at = Instant::now();
        // Writable means the handshake ended: the error says how.
        let result = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Ok(()),
                // Not connected yet after all (a spurious wake): wait on.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => Err(e),
            },
        };
        out.push(Tcping::answer(*seq, at, result));
        Ok(())
    }

    fn forget(&mut self, seq: u64, registry: &Registry) {
        if let Some((_, mut s)) = self.open.remove(&self.tokens.token(seq as usize)) {
            let _ = registry.deregister(&mut s);
        }
    }
}
