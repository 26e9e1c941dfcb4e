//! UDP segmentation offload, both ways (Linux). A sender hands the kernel
//! one buffer of many equal datagrams with `UDP_SEGMENT` (GSO, 4.18+): the
//! stack routes and builds it once and splits it late, on loopback not until
//! the receiving socket. A receiver that sets `UDP_GRO` (5.0+) is handed such
//! a run of datagrams of one flow as one buffer, with the segment size in a
//! control message, and splits it itself; without `UDP_GRO` the kernel
//! splits it before queueing, so nobody sees anything but datagrams.
//!
//! UDP bulk uses both (client GSO, server GRO); the SNTP responder's GSO
//! replies use the same checks. All `unsafe` here is libc calls on a
//! descriptor the caller owns, with buffers alive for the call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::net::pktinfo::{Cmsgs, Local};

/// Most datagrams in one GSO buffer (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO buffer: an IP packet's 64 KiB less the headers.
pub const MAX_BYTES: usize = 65_000;
/// A receive buffer that holds any GRO buffer whole (a shorter one would
/// cut every datagram after the first that does not fit).
pub const GRO_BUFFER: usize = 65_536;

/// Whether this kernel has UDP GSO: older ones ignore the control message
/// silently (and would send one big datagram), so ask first.
pub fn supported(fd: RawFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is an open socket; v and len are ours and sized as declared.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// Errors a GSO send gets where the kernel or device cannot segment
/// (no checksum offload, IPsec, UDP checksums off, path MTU): send the
/// datagrams one by one instead, from now on.
pub fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Send `buf` on connected socket `fd` as datagrams of `size` bytes each
/// (the last may be shorter), in one call.
///
/// # Errors
/// The OS error; [`refused`] says whether GSO itself was the trouble.
pub fn send_segments(fd: RawFd, buf: &[u8], size: u16) -> io::Result<usize> {
    let mut cmsgs = Cmsgs::default();
    cmsgs.push(libc::SOL_UDP, libc::UDP_SEGMENT, size);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is a valid value.
    let mut h: libc::msghdr = unsafe { zeroed() };
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    // SAFETY: h is used only below, while cmsgs lives.
    unsafe { cmsgs.attach(&mut h) };
    // SAFETY: every pointer in h is into buf, iov or cmsgs, alive for the
    // call; the kernel only reads the iovec's bytes.
    let n = unsafe { libc::sendmsg(fd, &h, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Ask the kernel to hand runs of datagrams over as GRO buffers.
///
/// # Errors
/// The OS error (`ENOPROTOOPT` before Linux 5.0).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    crate::net::sock::set_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// What [`recv_from`] read.
#[derive(Debug, Clone, Copy)]
pub struct Got {
    /// Bytes in the buffer.
    pub len: usize,
    /// Who sent them.
    pub from: SocketAddr,
    /// Size of each datagram in them (the last may be shorter): `len` for a
    /// single datagram.
    pub segment: usize,
    /// Which of our addresses they came to, where the socket asked
    /// ([`crate::net::pktinfo::enable`]).
    pub local: Option<Local>,
}

impl Got {
    /// The datagrams in `buf[..len]` (one empty one for an empty datagram).
    pub fn datagrams<'b>(&self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + use<'b> {
        let data = &buf[..self.len.min(buf.len())];
        let empty = data.is_empty().then_some(data);
        data.chunks(self.segment.max(1)).chain(empty)
    }
}

/// Read one datagram, or one GRO buffer of several, without blocking.
///
/// # Errors
/// The OS error (`WouldBlock` when nothing waits); `InvalidData` for a
/// sender address of no family we know.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<Got> {
    let (len, addr, segment, local) = crate::net::sock::recv_segments(fd, buf)?;
    let from = socket_addr(&addr).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    Ok(Got {
        len,
        from,
        segment: segment.unwrap_or(len),
        local,
    })
}

/// The address in a `sockaddr_storage` the kernel filled.
pub fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in, which fits.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((s as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6, which fits.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned((s as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
