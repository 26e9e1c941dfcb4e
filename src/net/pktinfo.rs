//! Which of the host's addresses a datagram came to, and replies from that
//! address (`IP_PKTINFO`, `IPV6_RECVPKTINFO`). A UDP socket bound to the
//! wildcard (`0.0.0.0`, `::`, the server's default) otherwise replies from
//! whatever address the route to the client prefers: on a host with two
//! addresses, a client that asked the second one hears the first, and a
//! connected socket (netsh's UDP echo, chronyd, ntpdate) drops that reply.
//!
//! Also [`Cmsgs`], the control messages of one send (a GSO segment size and
//! a source address can go together). All `unsafe` here is libc calls on a
//! descriptor the caller owns, and reads and writes inside buffers sized for
//! them.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

/// The local end of a datagram that came in: where a reply leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// IPv4: the local address the kernel gave it (`ipi_spec_dst`).
    V4(Ipv4Addr),
    /// IPv6: the address it was sent to, and the interface it came in on
    /// (which a link-local address needs).
    V6(Ipv6Addr, u32),
}

impl Local {
    /// The address.
    pub fn ip(self) -> IpAddr {
        match self {
            Local::V4(a) => IpAddr::V4(a),
            Local::V6(a, _) => IpAddr::V6(a),
        }
    }
}

/// Ask for the local address of every datagram (a socket of family `v6`).
///
/// # Errors
/// The OS error.
pub fn enable(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        crate::net::sock::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        crate::net::sock::set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Room a receive needs for the local address's control message.
pub const RECV_SPACE: usize = 64;

/// The local address in the control messages the kernel filled in `h`:
/// `None` without one, or for a multicast destination (a reply must not
/// claim it as its source; the route's choice is the right one there).
pub fn parse(h: &libc::msghdr) -> Option<Local> {
    let mut found = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_*
    // macros walk it within those bounds, and the data is read unaligned
    // from messages of the kernel's own types.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    let a = Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr));
                    found = (!a.is_unspecified() && !a.is_multicast()).then_some(Local::V4(a));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    let a = Ipv6Addr::from(p.ipi6_addr.s6_addr);
                    found = (!a.is_unspecified() && !a.is_multicast())
                        .then_some(Local::V6(a, p.ipi6_ifindex));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    found
}

/// The control messages of one send, built in place (8-byte aligned, as
/// `cmsghdr` needs).
#[derive(Default)]
pub struct Cmsgs {
    buf: [u64; 12],
    len: usize,
}

impl Cmsgs {
    /// Append one message; false (and nothing appended) if it does not fit.
    pub fn push<T: Copy>(&mut self, level: libc::c_int, ty: libc::c_int, value: T) -> bool {
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<T>() as u32) as usize,
                libc::CMSG_LEN(size_of::<T>() as u32) as usize,
            )
        };
        let room = size_of::<[u64; 12]>();
        if self.len + space > room {
            return false;
        }
        let base = self.buf.as_mut_ptr().cast::<u8>();
        // SAFETY: self.len + space <= room, so the header and the data (at
        // CMSG_LEN(0) past it, within space) lie inside buf; self.len is a
        // sum of CMSG_SPACEs, so the header is aligned.
        unsafe {
            let c = base.add(self.len).cast::<libc::cmsghdr>();
            let mut hdr: libc::cmsghdr = zeroed();
            hdr.cmsg_len = len as _;
            hdr.cmsg_level = level;
            hdr.cmsg_type = ty;
            std::ptr::write(c, hdr);
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
        }
        self.len += space;
        true
    }

    /// Add a source address for the reply (`IP_PKTINFO`/`IPV6_PKTINFO`).
    pub fn push_local(&mut self, local: Local) -> bool {
        match local {
            Local::V4(a) => {
                // SAFETY: in_pktinfo is plain old data; zero is valid.
                let mut p: libc::in_pktinfo = unsafe { zeroed() };
                p.ipi_spec_dst.s_addr = u32::from(a).to_be();
                self.push(libc::IPPROTO_IP, libc::IP_PKTINFO, p)
            }
            Local::V6(a, ifindex) => {
                // SAFETY: in6_pktinfo is plain old data; zero is valid.
                let mut p: libc::in6_pktinfo = unsafe { zeroed() };
                p.ipi6_addr.s6_addr = a.octets();
                // The interface only for a link-local source: it names the
                // link. For any other address the kernel reports the
                // address's own interface, and forcing the reply out of it
                // would send a reply to ::1 out of a veth.
                p.ipi6_ifindex = if a.is_unicast_link_local() {
                    ifindex
                } else {
                    0
                };
                self.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, p)
            }
        }
    }

    /// Point `h` at the messages (or at none).
    ///
    /// # Safety
    /// `h` must be used only while `self` is alive and not moved.
    pub unsafe fn attach(&mut self, h: &mut libc::msghdr) {
        if self.len == 0 {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        } else {
            h.msg_control = self.buf.as_mut_ptr().cast();
            h.msg_controllen = self.len as _;
        }
    }
}

/// Send `data` to `peer` from `local` (if known) on unconnected socket `fd`.
///
/// # Errors
/// The OS error.
pub fn send_to(
    fd: RawFd,
    data: &[u8],
    peer: SocketAddr,
    local: Option<Local>,
) -> io::Result<usize> {
    let to = socket2::SockAddr::from(peer);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut cmsgs = Cmsgs::default();
    if let Some(l) = local {
        cmsgs.push_local(l);
    }
    // SAFETY: a zeroed msghdr is a valid value.
    let mut h: libc::msghdr = unsafe { zeroed() };
    h.msg_name = to.as_ptr().cast_mut().cast();
    h.msg_namelen = to.len();
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    // SAFETY: h is used only below, while cmsgs lives.
    unsafe { cmsgs.attach(&mut h) };
    // SAFETY: every pointer in h is into data, to, iov or cmsgs, alive for
    // the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &h, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
