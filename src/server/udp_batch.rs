//! Batched UDP for the SNTP responder on Linux: `recvmmsg` reads up to
//! [`BATCH`] requests in one system call, each with the kernel's receive
//! timestamp (`SO_TIMESTAMPNS`, taken when the packet reached the socket),
//! and `sendmmsg` sends the replies in one more. This is the only `unsafe`
//! in netsh: the pointers into the fixed buffers are rebuilt before every
//! call, so nothing self-referential survives a move.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Bytes kept of each request: enough for the header plus extension fields;
/// longer datagrams are truncated, which is fine: only the header is read.
const REQ_MAX: usize = 512;
const CTRL_LEN: usize = 64;

/// Buffers for one batch in each direction.
pub struct Batch {
    bufs: Box<[[u8; REQ_MAX]; BATCH]>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
    ctrl: Box<[[u8; CTRL_LEN]; BATCH]>,
    rx: [Option<SystemTime>; BATCH],
    out: Box<[[u8; 48]; BATCH]>,
    out_to: [usize; BATCH],
    out_n: usize,
}

/// Ask the kernel to timestamp arriving datagrams.
pub fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: fd is an open socket; the option value is a c_int we own.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Batch {
    /// Empty buffers.
    pub fn new() -> Batch {
        Batch {
            bufs: Box::new([[0; REQ_MAX]; BATCH]),
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: unsafe { zeroed() },
            addr_lens: [0; BATCH],
            ctrl: Box::new([[0; CTRL_LEN]; BATCH]),
            rx: [None; BATCH],
            out: Box::new([[0; 48]; BATCH]),
            out_to: [0; BATCH],
            out_n: 0,
        }
    }

    /// Read up to [`BATCH`] datagrams without blocking; returns how many
    /// (0 when none are waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: iovec/mmsghdr are plain old data; zero is valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = REQ_MAX;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = CTRL_LEN as _;
        }
        // SAFETY: every pointer in msgs points into buffers owned by self or
        // by this stack frame, sized as declared, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        for (i, m) in msgs.iter().enumerate().take(n) {
            self.lens[i] = (m.msg_len as usize).min(REQ_MAX);
            self.addr_lens[i] = m.msg_hdr.msg_namelen;
            self.rx[i] = rx_time(&m.msg_hdr);
        }
        self.out_n = 0;
        Ok(n)
    }

    /// The i-th request: bytes, sender, kernel receive time.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, Option<SystemTime>) {
        (
            &self.bufs[i][..self.lens[i]],
            to_addr(&self.addrs[i]),
            self.rx[i],
        )
    }

    /// Queue a reply to the sender of request `i`.
    pub fn reply(&mut self, i: usize, bytes: [u8; 48]) {
        if self.out_n < BATCH {
            self.out[self.out_n] = bytes;
            self.out_to[self.out_n] = i;
            self.out_n += 1;
        }
    }

    /// Stamp every queued reply with `tx` and send them; returns how many
    /// left (the rest are dropped, as UDP may).
    pub fn send(&mut self, fd: RawFd, tx: u64) -> usize {
        let n = self.out_n;
        if n == 0 {
            return 0;
        }
        // SAFETY: plain old data; zero is valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for k in 0..n {
            crate::proto::ntp::set_transmit(&mut self.out[k], tx);
            let i = self.out_to[k];
            iovs[k].iov_base = self.out[k].as_mut_ptr().cast();
            iovs[k].iov_len = 48;
            let h = &mut msgs[k].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.addr_lens[i];
            h.msg_iov = &mut iovs[k];
            h.msg_iovlen = 1;
        }
        // SAFETY: as in recv: every pointer is into live buffers of the declared size.
        let sent =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        self.out_n = 0;
        sent.max(0) as usize
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

fn rx_time(h: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk it
    // within those bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
                    return Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

fn to_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((s as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
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
