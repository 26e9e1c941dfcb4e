//! Binding the server's sockets: TCP listeners and UDP echo sockets on one
//! port number for every address, and the SNTP responder's sockets beside
//! them. Errors name the address and say how to pick another port.

use std::io;
use std::net::{IpAddr, SocketAddr};

use std::os::fd::AsRawFd;

use mio::net::{TcpListener, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};

/// The listeners, the UDP sockets and their addresses (one of each per address).
pub(super) type Bound = (Vec<TcpListener>, Vec<UdpSocket>, Vec<SocketAddr>);

/// Bind TCP and UDP on every address with one port number. With port 0 the
/// first TCP bind picks it; if another address or UDP cannot get the same
/// number, start over (a few times).
pub(super) fn bind_all(ips: &[IpAddr], port: u16, default_pair: bool) -> Result<Bound> {
    let attempts = if port == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        match bind_once(ips, port, default_pair) {
            Ok(b) => return Ok(b),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::bad_value("no address to bind")))
}

fn bind_once(ips: &[IpAddr], port: u16, default_pair: bool) -> Result<Bound> {
    let mut listeners = Vec::new();
    let mut udps = Vec::new();
    let mut addrs = Vec::new();
    let mut port = port;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let tcp = match tcp_listener(addr) {
            Ok(l) => l,
            // No IPv6 on this machine: serve IPv4 alone rather than fail.
            Err(e) if default_pair && ip.is_ipv6() && e.kind() != io::ErrorKind::AddrInUse => {
                continue;
            }
            Err(e) => return Err(bind_error("bind TCP", addr, &e)),
        };
        let local = tcp
            .local_addr()
            .map_err(|e| Error::io("bind TCP", addr, &e))?;
        port = local.port();
        let udp = udp_socket(local).map_err(|e| bind_error("bind UDP", local, &e))?;
        // Runs of UDP bulk datagrams come as one buffer (the echo path
        // splits them); a kernel before 5.0 says no, and datagrams come
        // one by one as before.
        let _ = crate::net::gso::enable_gro(udp.as_raw_fd());
        // Room for a burst: a GRO buffer of 44 datagrams is one 64 KiB
        // entry, and the default 208 KiB holds three. As far as rmem_max
        // allows (the kernel charges what is queued, not what is allowed).
        let _ = crate::net::sock::set_int(
            udp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            UDP_RCVBUF,
        );
        listeners.push(tcp);
        udps.push(udp);
        addrs.push(local);
    }
    Ok((listeners, udps, addrs))
}

/// Bind the SNTP responder on the same addresses as the echo listeners.
pub(super) fn bind_ntp(
    addrs: &[SocketAddr],
    port: u16,
) -> Result<(Vec<UdpSocket>, Vec<SocketAddr>)> {
    let mut socks = Vec::new();
    let mut bound = Vec::new();
    let mut port = port;
    for a in addrs {
        let addr = SocketAddr::new(a.ip(), port);
        let s = udp_socket(addr).map_err(|e| {
            let err = bind_error("bind SNTP", addr, &e);
            if e.kind() == io::ErrorKind::PermissionDenied {
                err.with_hint(
                    "port 123 needs privileges: use --ntp-port 5123 (the default) or run as root",
                )
            } else {
                err.with_hint("choose another --ntp-port (0 picks a free one), or --no-ntp")
            }
        })?;
        let local = s
            .local_addr()
            .map_err(|e| Error::io("bind SNTP", addr, &e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // Without kernel timestamps the responder reads the clock instead.
            let _ = super::udp_batch::enable_timestamps(s.as_raw_fd());
        }
        port = local.port();
        socks.push(s);
        bound.push(local);
    }
    Ok((socks, bound))
}

/// Bind the TLS listeners on the same addresses as the plain ones, on one
/// port number (0: the first bind picks it).
pub(super) fn bind_tls(
    addrs: &[SocketAddr],
    port: u16,
) -> Result<(Vec<TcpListener>, Vec<SocketAddr>)> {
    let mut ls = Vec::new();
    let mut bound = Vec::new();
    let mut port = port;
    for a in addrs {
        let addr = SocketAddr::new(a.ip(), port);
        let l = tcp_listener(addr).map_err(|e| {
            bind_error("bind TLS", addr, &e)
                .with_hint("choose another --tls-port (0 picks a free one)")
        })?;
        let local = l
            .local_addr()
            .map_err(|e| Error::io("bind TLS", addr, &e))?;
        port = local.port();
        ls.push(l);
        bound.push(local);
    }
    Ok((ls, bound))
}

fn bind_error(op: &str, addr: SocketAddr, e: &io::Error) -> Error {
    let err = Error::io(op, addr, e);
    if e.kind() == io::ErrorKind::AddrInUse {
        err.with_hint(
            "another program uses this port: choose another with --port (0 picks a free one)",
        )
    } else {
        err
    }
}

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?; // IPv4 has its own socket
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into()))
}

/// Receive buffer asked for the UDP echo sockets, bytes.
const UDP_RCVBUF: libc::c_int = 4 << 20;

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    // On the wildcard, note which address each datagram came to, so the
    // reply leaves from it (see net::pktinfo): on a host of several
    // addresses the route's own choice would be another one.
    if addr.ip().is_unspecified() {
        crate::net::pktinfo::enable(s.as_raw_fd(), addr.is_ipv6())?;
    }
    Ok(UdpSocket::from_std(s.into()))
}
