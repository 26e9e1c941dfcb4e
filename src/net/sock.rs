//! Socket calls that std and socket2 do not offer, for the probes that
//! reach any host (`ping`, `trace`): integer socket options, `recvmsg` with
//! the arriving TTL (hop limit), and the socket error queue, where Linux
//! puts the ICMP errors a probe provoked (`IP_RECVERR`): who sent it (the
//! router of a hop), its type and code, and the start of our own datagram.
//! The same `recvmsg` gives UDP bulk reads their `UDP_GRO` segment size
//! ([`recv_segments`]).
//!
//! All `unsafe` here is libc calls on a descriptor we own, with buffers that
//! live on the stack for the call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `ICMP_FILTER` (`SOL_RAW`): which ICMP types a raw IPv4 socket drops.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` (`IPPROTO_ICMPV6`): which ICMPv6 types a raw socket drops.
const ICMP6_FILTER: libc::c_int = 1;
/// Control-message room: a TTL or hop limit, or an extended error with its
/// offender address.
const CTRL_LEN: usize = 256;

/// Set an integer socket option.
///
/// # Errors
/// The OS error.
pub fn set_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_raw(fd, level, name, &value)
}

fn set_raw<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: fd is an open socket; the value is a plain struct we own, of
    // the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ask for ICMP errors on the error queue, and for the TTL (hop limit) and
/// the kernel's receive time of what arrives, for a socket of `v6`'s family.
///
/// # Errors
/// The OS error.
pub fn enable_errors_and_ttl(fd: RawFd, v6: bool) -> io::Result<()> {
    enable_errors(fd, v6)?;
    if v6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// Ask for ICMP errors on the error queue and the kernel's receive time.
///
/// # Errors
/// The OS error.
pub fn enable_errors(fd: RawFd, v6: bool) -> io::Result<()> {
    enable_stamps(fd)?;
    if v6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    }
}

/// Ask for the kernel's receive time of what arrives.
///
/// # Errors
/// The OS error.
pub fn enable_stamps(fd: RawFd) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Ask for the hop limit of arriving IPv6 packets.
///
/// # Errors
/// The OS error.
pub fn enable_hop_limit(fd: RawFd) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
}

/// Set the TTL (hop limit) of unicast packets sent on the socket.
///
/// # Errors
/// The OS error.
pub fn set_ttl(fd: RawFd, v6: bool, ttl: u8) -> io::Result<()> {
    if v6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl.into())
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_TTL, ttl.into())
    }
}

/// On a raw ICMP socket, let only these types through (replies and errors),
/// so our own requests seen on loopback and other traffic cost nothing.
///
/// # Errors
/// The OS error.
pub fn raw_icmp_filter(fd: RawFd, v6: bool, pass: &[u8]) -> io::Result<()> {
    if v6 {
        // struct icmp6_filter: a set bit blocks that type.
        let mut f = [u32::MAX; 8];
        for &t in pass {
            f[usize::from(t >> 5)] &= !(1u32 << (t & 31));
        }
        set_raw(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &f)
    } else {
        // struct icmp_filter: a set bit drops that type (types 0..31).
        let mut f: u32 = u32::MAX;
        for &t in pass.iter().filter(|t| **t < 32) {
            f &= !(1u32 << t);
        }
        set_raw(fd, libc::SOL_RAW, ICMP_FILTER, &f)
    }
}

/// One datagram read with [`recv`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes read.
    pub len: usize,
    /// Who sent it.
    pub from: Option<IpAddr>,
    /// Its TTL (hop limit), when the socket asked for it.
    pub ttl: Option<u8>,
    /// When it reached the socket, by the kernel's clock, as an instant of
    /// ours (so an RTT does not include the time it took us to wake up).
    pub at: Instant,
}

/// An ICMP error the kernel queued for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedError {
    /// The error it maps to (`EHOSTUNREACH`, `ECONNREFUSED`, `EMSGSIZE`…).
    pub errno: i32,
    /// It came in an ICMP (or ICMPv6) message, not from this host's stack.
    pub icmp: bool,
    /// ICMP type and code.
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
    /// Who sent it: the router or host that answered.
    pub offender: Option<IpAddr>,
    /// Bytes of our own datagram copied into the buffer.
    pub len: usize,
    /// When the error reached the socket (the kernel's stamp, as ours).
    pub at: Instant,
}

/// Read one datagram, with its sender and TTL.
///
/// # Errors
/// The OS error (`WouldBlock` when nothing waits).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let (len, from, ctrl) = recvmsg(fd, buf, 0)?;
    Ok(Received {
        len,
        from,
        ttl: ctrl.ttl,
        at: arrival(ctrl.stamp),
    })
}

/// Read one entry of the error queue; `None` when it is empty.
///
/// # Errors
/// The OS error.
pub fn recv_error(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<QueuedError>> {
    match recvmsg(fd, buf, libc::MSG_ERRQUEUE) {
        Ok((len, _, ctrl)) => {
            let at = arrival(ctrl.stamp);
            Ok(ctrl.error.map(|mut e| {
                e.len = len;
                e.at = at;
                e
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The kernel's receive stamp (wall clock) as an instant of ours: how long
/// ago it arrived carries over to the monotonic clock. Without a stamp, now.
fn arrival(stamp: Option<SystemTime>) -> Instant {
    let Some(stamp) = stamp else {
        return Instant::now();
    };
    // The wall clock first: a preemption between the two reads can only
    // make the arrival later (an RTT longer), never earlier than the send.
    let wall = SystemTime::now();
    let now = Instant::now();
    let ago = wall
        .duration_since(stamp)
        .ok()
        .filter(|d| *d < Duration::from_secs(1))
        .unwrap_or_default();
    now.checked_sub(ago).unwrap_or(now)
}

#[derive(Default)]
struct Ctrl {
    ttl: Option<u8>,
    error: Option<QueuedError>,
    stamp: Option<SystemTime>,
    /// `UDP_GRO`: the size of each datagram in a buffer of several.
    segment: Option<usize>,
    /// `IP_PKTINFO`/`IPV6_PKTINFO`: the local address it came to.
    local: Option<crate::net::pktinfo::Local>,
}

/// Read one datagram, or one GRO buffer of several (`UDP_GRO`), without
/// blocking: the bytes, the sender's whole address, the segment size when
/// the kernel handed over several datagrams at once, and the local address
/// they came to (where the socket asked for it).
///
/// # Errors
/// The OS error (`WouldBlock` when nothing waits).
pub fn recv_segments(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(
    usize,
    libc::sockaddr_storage,
    Option<usize>,
    Option<crate::net::pktinfo::Local>,
)> {
    let (n, addr, _, ctrl) = recvmsg_from(fd, buf, 0)?;
    Ok((n, addr, ctrl.segment, ctrl.local))
}

fn recvmsg(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, Option<IpAddr>, Ctrl)> {
    let (n, addr, len, ctrl) = recvmsg_from(fd, buf, flags)?;
    Ok((n, sockaddr_ip(&addr, len), ctrl))
}

fn recvmsg_from(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, libc::sockaddr_storage, libc::socklen_t, Ctrl)> {
    // Aligned for cmsghdr.
    let mut ctrl = [0u64; CTRL_LEN / 8];
    // SAFETY: zeroed sockaddr_storage and msghdr are valid values.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut h: libc::msghdr = unsafe { zeroed() };
    h.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = ctrl.as_mut_ptr().cast();
    h.msg_controllen = CTRL_LEN as _;
    // SAFETY: every pointer in h points at a live local buffer of the
    // length given, for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut h, flags | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Ctrl {
        local: crate::net::pktinfo::parse(&h),
        ..Ctrl::default()
    };
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_*
    // macros walk it within those bounds, and data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&h);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            let data = libc::CMSG_DATA(c);
            match (level, ty) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    out.stamp = u64::try_from(ts.tv_sec).ok().map(|s| {
                        UNIX_EPOCH + Duration::new(s, ts.tv_nsec.clamp(0, 999_999_999) as u32)
                    });
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let v: libc::c_int = std::ptr::read_unaligned(data.cast());
                    out.segment = usize::try_from(v).ok().filter(|&v| v > 0);
                }
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let v: libc::c_int = std::ptr::read_unaligned(data.cast());
                    out.ttl = u8::try_from(v).ok();
                }
                (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) => {
                    let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                    let off = libc::SO_EE_OFFENDER(data.cast());
                    let mut sa: libc::sockaddr_storage = zeroed();
                    // The offender is a sockaddr_in or sockaddr_in6 right
                    // after the extended error, inside the control message.
                    let room = ((*c).cmsg_len as usize)
                        .saturating_sub(
                            libc::CMSG_LEN(size_of::<libc::sock_extended_err>() as u32) as usize
                        )
                        .min(size_of::<libc::sockaddr_in6>());
                    std::ptr::copy_nonoverlapping(
                        off.cast::<u8>(),
                        (&mut sa as *mut libc::sockaddr_storage).cast::<u8>(),
                        room,
                    );
                    out.error = Some(QueuedError {
                        errno: ee.ee_errno as i32,
                        icmp: ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                            || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6,
                        kind: ee.ee_type,
                        code: ee.ee_code,
                        offender: sockaddr_ip(&sa, room as libc::socklen_t),
                        len: 0,
                        at: Instant::now(),
                    });
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&h, c);
        }
    }
    Ok((n as usize, addr, h.msg_namelen, out))
}

/// The IP address in a socket address the kernel filled.
fn sockaddr_ip(sa: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
    let len = len as usize;
    match i32::from(sa.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and len covers it.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((sa as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says it is a sockaddr_in6, and len covers it.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned((sa as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Raise the soft limit on open files to at least `want` (at most the hard
/// limit), so a monitor of many targets does not run out of descriptors at
/// the common default of 1024. Best effort: the limit stays as it was if it
/// cannot be raised.
pub fn raise_fd_limit(want: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let want = want as libc::rlim_t;
    if lim.rlim_cur >= want {
        return;
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: setrlimit reads the struct we own.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn udp_datagram_with_its_ttl_and_sender() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_errors_and_ttl(rx.as_raw_fd(), false).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_ttl(tx.as_raw_fd(), false, 7).unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let r = loop {
            match recv(rx.as_raw_fd(), &mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.ttl, Some(7));
        assert_eq!(r.from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn port_unreachable_lands_on_the_error_queue_with_its_sender() {
        // A connected UDP socket to a closed port gets ICMP port unreachable.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = closed.local_addr().unwrap();
        drop(closed);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_errors_and_ttl(s.as_raw_fd(), false).unwrap();
        s.connect(to).unwrap();
        s.send(b"probe").unwrap();
        let mut buf = [0u8; 64];
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let e = loop {
            if let Some(e) = recv_error(s.as_raw_fd(), &mut buf).unwrap() {
                break e;
            }
            assert!(std::time::Instant::now() < end, "no queued error");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(e.icmp);
        assert_eq!((e.kind, e.code), (3, 3), "destination unreachable, port");
        assert_eq!(e.errno, libc::ECONNREFUSED);
        assert_eq!(e.offender, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(&buf[..e.len], b"probe", "our datagram comes back with it");
        assert_eq!(recv_error(s.as_raw_fd(), &mut buf).unwrap(), None);
    }
}
