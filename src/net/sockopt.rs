//! Socket options (from `set nodelay|keepalive|sndbuf|rcvbuf`, see
//! `Settings::sock_opts`), applied to every TCP connection netsh opens
//! (echo, chat) through socket2.

use socket2::SockRef;

/// The options every client connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockOpts {
    /// `TCP_NODELAY`: send small writes at once instead of waiting (Nagle).
    pub nodelay: bool,
    /// `SO_KEEPALIVE`: let the kernel probe idle connections.
    pub keepalive: bool,
    /// `SO_SNDBUF` in bytes; `None` leaves the kernel's default (and autotuning).
    pub sndbuf: Option<u32>,
    /// `SO_RCVBUF` in bytes; `None` leaves the kernel's default (and autotuning).
    pub rcvbuf: Option<u32>,
}

impl SockOpts {
    /// Apply to a connected or connecting TCP socket.
    ///
    /// # Errors
    /// The OS error of the first option that could not be set.
    pub fn apply<S: std::os::fd::AsFd>(&self, sock: &S) -> std::io::Result<()> {
        let s = SockRef::from(sock);
        s.set_tcp_nodelay(self.nodelay)?;
        s.set_keepalive(self.keepalive)?;
        if let Some(n) = self.sndbuf {
            s.set_send_buffer_size(n as usize)?;
        }
        if let Some(n) = self.rcvbuf {
            s.set_recv_buffer_size(n as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn applied_options_are_read_back_from_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let o = SockOpts {
            nodelay: true,
            keepalive: true,
            sndbuf: Some(65536),
            rcvbuf: None,
        };
        o.apply(&c).unwrap();
        let r = SockRef::from(&c);
        assert!(r.tcp_nodelay().unwrap());
        assert!(r.keepalive().unwrap());
        // Linux doubles the requested size for bookkeeping.
        assert!(r.send_buffer_size().unwrap() >= 65536);
        let o = SockOpts {
            nodelay: false,
            keepalive: false,
            sndbuf: None,
            rcvbuf: None,
        };
        o.apply(&c).unwrap();
        assert!(!r.tcp_nodelay().unwrap());
        assert!(!r.keepalive().unwrap());
    }
}
