//! Batched UDP for the SNTP responder on Linux: `recvmmsg` reads up to
//! [`BATCH`] requests in one system call, each with the kernel's receive
//! timestamp (`SO_TIMESTAMPNS`, taken when the packet reached the socket),
//! and `sendmmsg` sends the replies in one more. This is the only `unsafe`
//! in netsh: the pointers into the fixed buffers are rebuilt before every
//! call, so nothing self-referential survives a move.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::net::gso;
use crate::net::pktinfo::{self, Cmsgs, Local};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Bytes kept of each request: enough for the header plus extension fields;
/// longer datagrams are truncated, which is fine: only the header is read.
const REQ_MAX: usize = 512;
/// A receive stamp and a local address (`IP_PKTINFO`).
const CTRL_LEN: usize = 32 + pktinfo::RECV_SPACE;

/// Buffers for one batch in each direction.
pub struct Batch {
    bufs: Box<[[u8; REQ_MAX]; BATCH]>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
    ctrl: Box<[[u8; CTRL_LEN]; BATCH]>,
    rx: [Option<SystemTime>; BATCH],
    /// The local address each request came to (wildcard sockets).
    local: [Option<Local>; BATCH],
    out: Box<[[u8; 48]; BATCH]>,
    out_to: [usize; BATCH],
    out_n: usize,
    /// Replies regrouped by destination, each group contiguous.
    packed: Box<[[u8; 48]; BATCH]>,
    group_first: [usize; BATCH],
    group_len: [usize; BATCH],
    gso_ctrl: Box<[Cmsgs; BATCH]>,
    gso: bool,
    gso_checked: bool,
    gso_sends: u64,
}

/// Ask the kernel to timestamp arriving datagrams.
pub fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    crate::net::sock::set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
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
            local: [None; BATCH],
            out: Box::new([[0; 48]; BATCH]),
            out_to: [0; BATCH],
            out_n: 0,
            packed: Box::new([[0; 48]; BATCH]),
            group_first: [0; BATCH],
            group_len: [0; BATCH],
            gso_ctrl: Box::new(std::array::from_fn(|_| Cmsgs::default())),
            gso: true,
            gso_checked: false,
            gso_sends: 0,
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
            self.local[i] = pktinfo::parse(&m.msg_hdr);
        }
        self.out_n = 0;
        Ok(n)
    }

    /// The i-th request: bytes, sender, kernel receive time.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, Option<SystemTime>) {
        (
            &self.bufs[i][..self.lens[i]],
            gso::socket_addr(&self.addrs[i]),
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
    ///
    /// Replies to the same address go out as one UDP GSO datagram
    /// (`UDP_SEGMENT` = 48): the kernel routes and builds one buffer and
    /// splits it into separate 48-byte datagrams late (on loopback at the
    /// receiving socket, otherwise in the NIC or just before it), so a batch
    /// of replies to one busy client costs about one send instead of one per
    /// reply. Clients see ordinary datagrams. GSO is used only where the
    /// kernel says it has it (`getsockopt UDP_SEGMENT`, Linux 4.18+); if a
    /// GSO send is refused and the same replies then go out one by one, it
    /// is switched off for good.
    pub fn send(&mut self, fd: RawFd, tx: u64) -> usize {
        let n = self.out_n;
        self.out_n = 0;
        if n == 0 {
            return 0;
        }
        if !self.gso_checked {
            self.gso_checked = true;
            self.gso = self.gso && gso::supported(fd);
        }
        for reply in self.out.iter_mut().take(n) {
            crate::proto::ntp::set_transmit(reply, tx);
        }
        // Group the replies by destination, keeping their order within a group.
        let mut group_of = [0usize; BATCH];
        let mut groups = 0;
        for (k, group) in group_of.iter_mut().enumerate().take(n) {
            let g = if self.gso {
                (0..groups)
                    .find(|&g| self.same_peer(self.out_to[self.group_first[g]], self.out_to[k]))
                    .unwrap_or(groups)
            } else {
                groups // no grouping: one message per reply
            };
            if g == groups {
                self.group_first[g] = k;
                self.group_len[g] = 0;
                groups += 1;
            }
            self.group_len[g] += 1;
            *group = g;
        }
        let mut start = [0usize; BATCH];
        for g in 1..groups {
            start[g] = start[g - 1] + self.group_len[g - 1];
        }
        let mut fill = start;
        for (k, &g) in group_of.iter().enumerate().take(n) {
            self.packed[fill[g]] = self.out[k];
            fill[g] += 1;
        }
        let mut sent_replies = 0;
        let mut g0 = 0;
        // errno of a refused GSO send, until its first reply, resent alone,
        // shows whether GSO or the route was at fault.
        let mut probing: Option<i32> = None;
        // Every pass sends, skips or splits; splitting happens at most once.
        for _ in 0..4 * BATCH {
            if g0 >= groups {
                break;
            }
            let e = match self.send_groups(fd, g0, groups, &start) {
                Ok(m) => {
                    probing = None; // alone it went: GSO itself was refused
                    sent_replies += (g0..g0 + m).map(|g| self.group_len[g]).sum::<usize>();
                    g0 += m;
                    continue;
                }
                Err(e) => e,
            };
            let errno = e.raw_os_error();
            if probing.take().is_some_and(|refused| errno == Some(refused)) {
                self.gso = true; // the destination fails alone too: not GSO's fault
            }
            if self.gso && self.group_len[g0] > 1 && gso::refused(&e) {
                // Send what is left one reply per message, and watch the first.
                self.gso = false;
                probing = errno;
                let (mut first, mut len, mut at) = ([0; BATCH], [0; BATCH], [0; BATCH]);
                let mut k = 0;
                for (g, &from) in start.iter().enumerate().take(groups).skip(g0) {
                    for i in 0..self.group_len[g] {
                        (first[k], len[k], at[k]) = (self.group_first[g], 1, from + i);
                        k += 1;
                    }
                }
                (self.group_first, self.group_len, start) = (first, len, at);
                groups = k;
                g0 = 0;
                continue;
            }
            match errno {
                // The socket itself is full or short of memory: UDP may drop the rest.
                Some(libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM) => break,
                Some(libc::EINTR) => {}
                // This destination only (unreachable, blackholed, port 0…): skip it.
                _ => g0 += 1,
            }
        }
        sent_replies
    }

    /// Send groups `from..to` (replies packed from `start[g]`) with one
    /// `sendmmsg`; returns how many groups left, or the error of the first.
    fn send_groups(
        &mut self,
        fd: RawFd,
        from: usize,
        to: usize,
        start: &[usize; BATCH],
    ) -> io::Result<usize> {
        // SAFETY: plain old data; zero is valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        // Raw pointers taken once, so no later borrow invalidates earlier ones.
        let packed = self.packed.as_mut_ptr().cast::<u8>();
        let addrs = self.addrs.as_mut_ptr();
        let ctrls = self.gso_ctrl.as_mut_ptr();
        let m = to - from;
        for j in 0..m {
            let g = from + j;
            let len = self.group_len[g];
            let peer = self.out_to[self.group_first[g]];
            // SAFETY: start[g] + len <= BATCH (the groups partition the
            // packed replies), so the range lies inside `packed`.
            iovs[j].iov_base = unsafe { packed.add(start[g] * 48) }.cast();
            iovs[j].iov_len = len * 48;
            let h = &mut msgs[j].msg_hdr;
            // SAFETY: peer < BATCH.
            h.msg_name = unsafe { addrs.add(peer) }.cast();
            h.msg_namelen = self.addr_lens[peer];
            h.msg_iov = &mut iovs[j];
            h.msg_iovlen = 1;
            // SAFETY: j < BATCH, so the control buffer is one of ours, and
            // no other reference to it lives while this one does.
            let c = unsafe { &mut *ctrls.add(j) };
            *c = Cmsgs::default();
            if len > 1 {
                c.push(libc::SOL_UDP, libc::UDP_SEGMENT, 48u16);
            }
            // The reply leaves from the address the request came to.
            if let Some(l) = self.local[peer] {
                c.push_local(l);
            }
            // SAFETY: the control buffer outlives the sendmmsg below, the
            // only use of h.
            unsafe { c.attach(h) };
        }
        // SAFETY: every pointer in msgs is into buffers owned by self or by
        // this frame, of the declared sizes, alive for the call.
        let r =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), m as libc::c_uint, libc::MSG_DONTWAIT) };
        if r > 0 {
            let r = r as usize;
            self.gso_sends += (from..from + r).filter(|&g| self.group_len[g] > 1).count() as u64;
            Ok(r)
        } else if r == 0 {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Whether requests `a` and `b` came from the same address and port,
    /// to the same local address.
    fn same_peer(&self, a: usize, b: usize) -> bool {
        let len = self.addr_lens[a] as usize;
        self.local[a] == self.local[b]
            && len == self.addr_lens[b] as usize
            && len <= size_of::<libc::sockaddr_storage>()
            && addr_bytes(&self.addrs[a])[..len] == addr_bytes(&self.addrs[b])[..len]
    }

    /// Datagrams sent as one GSO buffer of several replies, so far.
    #[cfg(test)]
    pub fn gso_sends(&self) -> u64 {
        self.gso_sends
    }

    /// Send one reply per message from now on (as after a refusal).
    #[cfg(test)]
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }
}

fn addr_bytes(s: &libc::sockaddr_storage) -> &[u8] {
    // SAFETY: sockaddr_storage is plain old data of this size.
    unsafe {
        std::slice::from_raw_parts(
            (s as *const libc::sockaddr_storage).cast::<u8>(),
            size_of::<libc::sockaddr_storage>(),
        )
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

#[cfg(test)]
mod tests {
    //! Real sockets on loopback: requests are queued before `recv`, so one
    //! batch holds them all, and every reply must arrive as its own 48-byte
    //! datagram, in order, at the right client.
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn request(tag: u8) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0] = 0x23; // v4 client
        b[40..48].copy_from_slice(&[tag; 8]);
        b
    }

    /// What the clients received, and what the batch did.
    struct Outcome {
        got: Vec<Vec<Vec<u8>>>,
        gso_sends: u64,
        gso_on: bool,
    }

    /// Each client sends its tags (interleaved by the caller's order) and the
    /// batch answers every request with its tag in byte 24.
    fn round_trip(local: &str, order: &[(usize, u8)], clients: usize, gso: bool) -> Outcome {
        let server = UdpSocket::bind(local).expect("bind server");
        round_trip_on(server, order, clients, gso, None)
    }

    /// As `round_trip`, on a given server socket; replies meant for client
    /// `dead` are addressed to port 0, which the kernel refuses (EINVAL).
    fn round_trip_on(
        server: UdpSocket,
        order: &[(usize, u8)],
        clients: usize,
        gso: bool,
        dead: Option<usize>,
    ) -> Outcome {
        let local = server.local_addr().expect("addr");
        let local = SocketAddr::new(local.ip(), 0);
        server.set_nonblocking(true).expect("nonblocking");
        let cs: Vec<UdpSocket> = (0..clients)
            .map(|_| {
                let c = UdpSocket::bind(local).expect("bind client");
                c.connect(server.local_addr().expect("addr"))
                    .expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                c
            })
            .collect();
        for &(c, tag) in order {
            cs[c].send(&request(tag)).expect("send");
        }
        let mut batch = Batch::new();
        if !gso {
            batch.disable_gso();
        }
        let n = batch.recv(server.as_raw_fd()).expect("recv");
        assert_eq!(n, order.len(), "every queued request in one batch");
        let dead_addr = dead.map(|d| cs[d].local_addr().expect("addr"));
        let mut dead_n = 0;
        for i in 0..n {
            if batch.get(i).1.is_some() && batch.get(i).1 == dead_addr {
                set_port_zero(&mut batch.addrs[i]);
                dead_n += 1;
            }
            let (data, peer, _) = batch.get(i);
            assert_eq!(data.len(), 48);
            assert!(peer.is_some());
            let mut reply = [0u8; 48];
            reply[0] = 0x24;
            reply[24..32].copy_from_slice(&data[40..48]);
            batch.reply(i, reply);
        }
        assert_eq!(
            batch.send(server.as_raw_fd(), 0x0102_0304_0506_0708),
            n - dead_n
        );
        let mut got = vec![Vec::new(); clients];
        for &(c, _) in order.iter().filter(|o| Some(o.0) != dead) {
            let mut buf = [0u8; 512];
            let len = cs[c].recv(&mut buf).expect("a reply for every request");
            got[c].push(buf[..len].to_vec());
        }
        for c in &cs {
            c.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 512];
            assert!(c.recv(&mut buf).is_err(), "no extra datagrams");
        }
        Outcome {
            got,
            gso_sends: batch.gso_sends(),
            gso_on: batch.gso,
        }
    }

    fn set_port_zero(a: &mut libc::sockaddr_storage) {
        // SAFETY: the family says which sockaddr the storage holds; the port
        // sits at the same offset (2) in sockaddr_in and sockaddr_in6.
        let p = (a as *mut libc::sockaddr_storage).cast::<u8>();
        unsafe { p.add(2).cast::<u16>().write_unaligned(0) };
    }

    fn check(got: &[Vec<Vec<u8>>], order: &[(usize, u8)]) {
        check_except(got, order, None);
    }

    /// Every client but `dead` got its replies, whole and in order.
    fn check_except(got: &[Vec<Vec<u8>>], order: &[(usize, u8)], dead: Option<usize>) {
        for (c, replies) in got.iter().enumerate() {
            let want: Vec<u8> = order
                .iter()
                .filter(|o| o.0 == c && Some(c) != dead)
                .map(|o| o.1)
                .collect();
            let tags: Vec<u8> = replies.iter().map(|r| r[24]).collect();
            assert_eq!(tags, want, "client {c}: replies in request order");
            for r in replies {
                assert_eq!(r.len(), 48, "each reply is its own 48-byte datagram");
                assert_eq!(r[0], 0x24);
                assert_eq!(r[24..32], [r[24]; 8]);
                assert_eq!(
                    r[40..48],
                    0x0102_0304_0506_0708u64.to_be_bytes(),
                    "transmit stamped"
                );
            }
        }
    }

    #[test]
    fn replies_to_one_client_go_out_as_one_gso_datagram() {
        let order: Vec<(usize, u8)> = (1..=BATCH as u8).map(|t| (0, t)).collect();
        let Outcome { got, gso_sends, .. } = round_trip("127.0.0.1:0", &order, 1, true);
        check(&got, &order);
        assert_eq!(gso_sends, 1, "{BATCH} replies to one address: one send");
    }

    #[test]
    fn interleaved_clients_are_grouped_per_address_in_order() {
        let order = [(0, 1), (1, 2), (0, 3), (2, 4), (1, 5), (0, 6), (2, 7)];
        let Outcome { got, gso_sends, .. } = round_trip("127.0.0.1:0", &order, 3, true);
        check(&got, &order);
        assert_eq!(gso_sends, 3);
    }

    #[test]
    fn ipv6_replies_are_grouped_too() {
        let order = [(0, 9), (1, 8), (0, 7), (0, 6)];
        let Outcome { got, gso_sends, .. } = round_trip("[::1]:0", &order, 2, true);
        check(&got, &order);
        assert_eq!(
            gso_sends, 1,
            "the lone reply to client 1 goes as a plain datagram"
        );
    }

    #[test]
    fn without_gso_every_reply_is_its_own_message() {
        let order = [(0, 1), (0, 2), (1, 3), (0, 4)];
        let Outcome { got, gso_sends, .. } = round_trip("127.0.0.1:0", &order, 2, false);
        check(&got, &order);
        assert_eq!(gso_sends, 0);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn a_kernel_refusal_of_gso_falls_back_to_one_reply_per_message() {
        // With UDP checksums off (SO_NO_CHECK, 11 on these arches) the kernel
        // refuses UDP_SEGMENT with EINVAL: a real refusal, as on a device
        // without checksum offload (EIO).
        const SO_NO_CHECK: libc::c_int = 11;
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind server");
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value we own.
        let r = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NO_CHECK,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
        // Client 1's lone reply goes first, plainly; then client 0's GSO
        // send is refused and the rest go one by one.
        let order = [(1, 3), (0, 1), (0, 2), (2, 7), (0, 4), (2, 8), (1, 5)];
        let Outcome {
            got,
            gso_sends,
            gso_on,
        } = round_trip_on(server, &order, 3, true, None);
        check(&got, &order);
        assert_eq!(gso_sends, 0);
        assert!(!gso_on, "GSO is off after the refusal");
    }

    #[test]
    fn a_destination_the_kernel_refuses_costs_only_its_own_replies() {
        // Replies to port 0 fail with EINVAL, grouped or alone: that is the
        // destination's fault, so GSO stays on and everyone else is answered.
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind server");
        let order = [(0, 1), (1, 2), (0, 3), (2, 4), (1, 5), (2, 6)];
        let Outcome { got, gso_on, .. } = round_trip_on(server, &order, 3, true, Some(0));
        check_except(&got, &order, Some(0));
        assert!(got[0].is_empty());
        assert!(gso_on, "a bad destination does not turn GSO off");
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind server");
        let Outcome { got, .. } = round_trip_on(server, &order, 3, false, Some(1));
        check_except(&got, &order, Some(1));
    }
}
