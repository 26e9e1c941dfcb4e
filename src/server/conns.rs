//! The server's connections: a slab of slots reused through a free list,
//! slots held back while the chat room still names them, and the number of
//! connections each client address holds (for `--max-per-ip`). A slot's
//! number is its connection's token (`FIRST_CONN + slot`), so the count of
//! tokens is bounded by the count of connections.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use super::conn::Conn;

/// Every open connection.
pub struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots of closed connections that the room or a waiting room event
    /// still names: reused only once the room has handled those events, so
    /// a leaver's late `/quit` can't close a newcomer in its slot.
    held: Vec<usize>,
    /// Connections per address (IPv4, or IPv6 cut to `v6_prefix`).
    per_address: HashMap<IpAddr, usize>,
    v6_prefix: u8,
}

impl Conns {
    /// No connections; addresses counted with IPv6 cut to `v6_prefix` bits.
    pub fn new(v6_prefix: u8) -> Conns {
        Conns {
            slots: Vec::new(),
            free: Vec::new(),
            held: Vec::new(),
            per_address: HashMap::new(),
            v6_prefix,
        }
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        super::limit::source_key(ip, self.v6_prefix)
    }

    /// The connection in `slot`, if one is open there.
    pub fn get(&self, slot: usize) -> Option<&Conn> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The connection in `slot`, mutably.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Connections open from `ip` now (from its IPv6 prefix, for IPv6).
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.per_address.get(&self.key(ip)).copied().unwrap_or(0)
    }

    /// Store `conn` in a free slot after `register` (given the slot) accepted
    /// it; if registering fails the slot stays free and the error is returned.
    ///
    /// # Errors
    /// The error of `register`.
    pub fn insert(
        &mut self,
        mut conn: Conn,
        register: impl FnOnce(&mut Conn, usize) -> io::Result<()>,
    ) -> io::Result<usize> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(e) = register(&mut conn, slot) {
            self.free.push(slot);
            return Err(e);
        }
        let key = self.key(conn.peer.ip());
        *self.per_address.entry(key).or_insert(0) += 1;
        self.slots[slot] = Some(conn);
        Ok(slot)
    }

    /// Take the connection out of `slot`. The slot is reused at once, or,
    /// with `hold`, only after [`Conns::release_held`].
    pub fn remove(&mut self, slot: usize, hold: bool) -> Option<Conn> {
        let c = self.slots.get_mut(slot)?.take()?;
        let ip = self.key(c.peer.ip());
        if let Some(n) = self.per_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&ip);
            }
        }
        if hold {
            self.held.push(slot);
        } else {
            self.free.push(slot);
        }
        Some(c)
    }

    /// The room no longer names any held slot: they may be reused.
    pub fn release_held(&mut self) {
        self.free.append(&mut self.held);
    }

    /// Slots with an open connection, in order.
    pub fn open_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&s| self.slots[s].is_some())
            .collect()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}
