//! ICMP (RFC 792) and ICMPv6 (RFC 4443) as `ping` and `traceroute` need them,
//! as pure functions over byte slices: the internet checksum, echo-request
//! encoding, stripping the IPv4 header a raw IPv4 socket delivers, and parsing
//! echo replies and the errors routers send back (Time Exceeded, Destination
//! Unreachable, Packet Too Big), including the datagram they quote, down to
//! the UDP/TCP ports or ICMP echo ident/seq that identify a probe. Every input
//! is untrusted network bytes: nothing here indexes unchecked or panics.
//!
//! Raw IPv4 sockets deliver the IPv4 header first ([`strip_ipv4_header`]);
//! raw ICMPv6 and datagram ("ping") sockets deliver the ICMP message alone.
//! Datagram sockets receive echo replies only: ICMP errors about their
//! requests arrive on the socket's error queue (`IP_RECVERR`), not here.
//!
//! ```text
//! ICMP / ICMPv6 message (what `parse` takes)
//!  0      Type | Code | Checksum
//!  4      echo:                 Identifier | Sequence number   (payload from 8)
//!         time exceeded, unreachable: unused (RFC 4884 length)  (original from 8)
//!         ICMPv6 packet too big: MTU                            (original from 8)
//!  8      payload, or the original datagram as far as it fits
//!
//! Original datagram (quoted in an error)
//!   IPv4: header, IHL×4 bytes (≥ 20), then at least 8 bytes of its payload
//!   IPv6: 40-byte header, extension headers, then the transport header
//!
//! First 8 bytes of the quoted transport header
//!   UDP:       Source port | Destination port | Length | Checksum
//!   TCP:       Source port | Destination port | Sequence number
//!   ICMP echo: Type | Code | Checksum | Identifier | Sequence number
//!
//! IPv4 header (raw IPv4 sockets deliver it before the ICMP message)
//!  0      Version(4) IHL(4) | TOS | Total length
//!  4      Identification | Flags(3) Fragment offset(13)
//!  8      TTL | Protocol | Header checksum
//! 12      Source address
//! 16      Destination address
//! 20      options, up to IHL×4
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// ICMPv4 message types and codes.
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Destination unreachable code: port unreachable (a UDP traceroute reached its target).
    pub const UNREACH_PORT: u8 = 3;
    /// Destination unreachable code: fragmentation needed and DF set.
    pub const UNREACH_FRAG_NEEDED: u8 = 4;
    /// Time exceeded code: TTL exceeded in transit.
    pub const TTL_EXCEEDED: u8 = 0;
}

/// ICMPv6 message types and codes.
pub mod v6 {
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Destination unreachable code: port unreachable (a UDP traceroute reached its target).
    pub const UNREACH_PORT: u8 = 4;
    /// Time exceeded code: hop limit exceeded in transit.
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;
}

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol (IPv6 next header) number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// Bytes in an ICMP header: type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = 8;
/// Bytes in an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// Bytes in an IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;

/// Which ICMP: ICMPv4 over IPv4 or ICMPv6 over IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6 over IPv6.
    V6,
}

/// Why bytes are not an ICMP message this module can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Shorter than the 8-byte ICMP header.
    TooShort,
    /// ICMPv4 checksum does not verify.
    BadChecksum,
    /// An error message quotes too little of the original datagram: its IP
    /// header, IPv6 extension headers, or the part of the transport header
    /// this module reads are cut off.
    TruncatedOriginal,
    /// An error message quotes something that is not an IP header of the
    /// message's own family (wrong version, IPv4 IHL below 5).
    BadOriginal,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::TooShort => "ICMP message shorter than its 8-byte header",
            Invalid::BadChecksum => "ICMP checksum mismatch",
            Invalid::TruncatedOriginal => "ICMP error quotes too little of the original datagram",
            Invalid::BadOriginal => "ICMP error quotes something that is not an IP header",
        })
    }
}

impl std::error::Error for Invalid {}

/// The fields of an IPv4 header that ICMP handling needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live as received.
    pub ttl: u8,
    /// Protocol of the payload ([`PROTO_ICMP`] for what a raw ICMP socket reads).
    pub protocol: u8,
    /// Header length in bytes, IHL×4 (20–60).
    pub header_len: usize,
    /// The total-length field as it stands; not used to trim the payload,
    /// since some kernels rewrite it for raw sockets.
    pub total_len: u16,
}

/// The transport header at the start of a quoted datagram, as far as a probe
/// can be recognised by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP ports (needs 4 quoted bytes).
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// TCP ports and sequence number (needs 8 quoted bytes).
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Sequence number.
        seq: u32,
    },
    /// An ICMP or ICMPv6 echo request (needs 8 quoted bytes).
    IcmpEcho {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Another protocol, another ICMP type, a non-first fragment, or an IPv6
    /// extension header this module does not walk.
    Unknown,
}

/// The datagram an ICMP error quotes: the probe that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Original {
    /// Source address of the original datagram (normally this host).
    pub src: IpAddr,
    /// Destination address of the original datagram (the probe's target).
    pub dst: IpAddr,
    /// Protocol of the transport header: for IPv6, the next header after the
    /// extension headers that were skipped.
    pub protocol: u8,
    /// TTL (IPv4) or hop limit (IPv6) left when the datagram reached the
    /// reporting node.
    pub ttl_left: u8,
    /// The transport header, as far as it was recognised.
    pub transport: Transport,
}

/// A parsed ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Echo reply.
    EchoReply {
        /// Identifier (on Linux datagram "ping" sockets, the one the kernel chose).
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Bytes after the 8-byte header.
        payload: &'a [u8],
    },
    /// Echo request (a raw socket on loopback sees its own requests too).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Bytes after the 8-byte header.
        payload: &'a [u8],
    },
    /// Time exceeded (TTL or hop limit ran out, or reassembly timed out).
    TimeExceeded {
        /// Code, e.g. [`v4::TTL_EXCEEDED`] or [`v6::HOP_LIMIT_EXCEEDED`].
        code: u8,
        /// The datagram that caused it.
        original: Original,
    },
    /// Destination unreachable.
    Unreachable {
        /// Code, e.g. [`v4::UNREACH_PORT`] or [`v6::UNREACH_PORT`].
        code: u8,
        /// The datagram that caused it.
        original: Original,
    },
    /// ICMPv6 packet too big.
    TooBig {
        /// MTU of the next-hop link.
        mtu: u32,
        /// The datagram that caused it.
        original: Original,
    },
    /// Any other type (redirects, neighbour discovery, …).
    Other {
        /// Type.
        kind: u8,
        /// Code.
        code: u8,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..)?
        .first_chunk::<2>()
        .map(|a| u16::from_be_bytes(*a))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..)?
        .first_chunk::<4>()
        .map(|a| u32::from_be_bytes(*a))
}

/// The RFC 1071 internet checksum of `data`: the ones' complement of the
/// ones' complement sum of its big-endian 16-bit words, an odd last byte
/// padded with a zero. Store the result big-endian; over a message that
/// contains a correct checksum the result is 0.
pub fn checksum(data: &[u8]) -> u16 {
    let (words, odd) = data.as_chunks::<2>();
    let mut sum: u64 = words
        .iter()
        .map(|w| u64::from(u16::from_be_bytes(*w)))
        .sum();
    if let [last] = odd {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves sum <= 0xffff, so the cast is exact.
    !(sum as u16)
}

/// Append an echo request to `out`: the 8-byte header (type, code 0,
/// checksum, `ident`, `seq`) then `payload`. For [`Family::V4`] the checksum
/// is filled in; for [`Family::V6`] it is left 0, since the ICMPv6 checksum
/// covers a pseudo-header only the kernel knows and the kernel fills it in for
/// raw and datagram sockets. (Linux datagram "ping" sockets also replace
/// `ident` with their own and fix the checksum.)
pub fn encode_echo_request(
    family: Family,
    ident: u16,
    seq: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let kind = match family {
        Family::V4 => v4::ECHO_REQUEST,
        Family::V6 => v6::ECHO_REQUEST,
    };
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&ident.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    if family == Family::V4 {
        let sum = checksum(out.get(start..).unwrap_or_default());
        if let Some(field) = out.get_mut(start + 2..start + 4) {
            field.copy_from_slice(&sum.to_be_bytes());
        }
    }
}

/// The identifier and sequence number of an echo request, ICMPv4 (type 8) or
/// ICMPv6 (type 128); `None` for anything else or fewer than 8 bytes.
pub fn ident_seq_of_request(msg: &[u8]) -> Option<(u16, u16)> {
    match *msg.first()? {
        v4::ECHO_REQUEST | v6::ECHO_REQUEST => Some((be16(msg, 4)?, be16(msg, 6)?)),
        _ => None,
    }
}

/// Reads an IPv4 header; the fragment offset (in 8-byte units) comes back too.
fn ipv4_header(p: &[u8]) -> Result<(Ipv4Header, u16, &[u8]), Invalid> {
    let first = *p.first().ok_or(Invalid::TruncatedOriginal)?;
    if first >> 4 != 4 {
        return Err(Invalid::BadOriginal);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(Invalid::BadOriginal);
    }
    let (h, rest) = p
        .split_at_checked(header_len)
        .ok_or(Invalid::TruncatedOriginal)?;
    let fixed = h
        .first_chunk::<IPV4_MIN_HEADER_LEN>()
        .ok_or(Invalid::TruncatedOriginal)?;
    let header = Ipv4Header {
        src: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
        dst: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
        ttl: fixed[8],
        protocol: fixed[9],
        header_len,
        total_len: u16::from_be_bytes([fixed[2], fixed[3]]),
    };
    let frag_offset = u16::from_be_bytes([fixed[6], fixed[7]]) & 0x1fff;
    Ok((header, frag_offset, rest))
}

/// Split what a raw IPv4 socket delivers into the IPv4 header and what
/// follows it (the ICMP message). `None` unless the version is 4, IHL is at
/// least 5 and the whole header (options included) is present. The header
/// checksum is not verified (the kernel has done it) and the payload is not
/// trimmed to `total_len`.
pub fn strip_ipv4_header(packet: &[u8]) -> Option<(Ipv4Header, &[u8])> {
    ipv4_header(packet).ok().map(|(h, _, rest)| (h, rest))
}

/// Reads the transport header of a quoted datagram of `family`.
fn transport(family: Family, protocol: u8, t: &[u8]) -> Result<Transport, Invalid> {
    let cut = Invalid::TruncatedOriginal;
    let (icmp, echo_request) = match family {
        Family::V4 => (PROTO_ICMP, v4::ECHO_REQUEST),
        Family::V6 => (PROTO_ICMPV6, v6::ECHO_REQUEST),
    };
    Ok(match protocol {
        PROTO_UDP => Transport::Udp {
            src_port: be16(t, 0).ok_or(cut)?,
            dst_port: be16(t, 2).ok_or(cut)?,
        },
        PROTO_TCP => Transport::Tcp {
            src_port: be16(t, 0).ok_or(cut)?,
            dst_port: be16(t, 2).ok_or(cut)?,
            seq: be32(t, 4).ok_or(cut)?,
        },
        p if p == icmp => {
            if *t.first().ok_or(cut)? == echo_request {
                Transport::IcmpEcho {
                    ident: be16(t, 4).ok_or(cut)?,
                    seq: be16(t, 6).ok_or(cut)?,
                }
            } else {
                Transport::Unknown
            }
        }
        _ => Transport::Unknown,
    })
}

fn original_v4(q: &[u8]) -> Result<Original, Invalid> {
    let (h, frag_offset, rest) = ipv4_header(q)?;
    let transport = if frag_offset != 0 {
        Transport::Unknown
    } else {
        transport(Family::V4, h.protocol, rest)?
    };
    Ok(Original {
        src: IpAddr::V4(h.src),
        dst: IpAddr::V4(h.dst),
        protocol: h.protocol,
        ttl_left: h.ttl,
        transport,
    })
}

fn original_v6(q: &[u8]) -> Result<Original, Invalid> {
    let cut = Invalid::TruncatedOriginal;
    if q.first().ok_or(cut)? >> 4 != 6 {
        return Err(Invalid::BadOriginal);
    }
    let (h, mut rest) = q.split_first_chunk::<IPV6_HEADER_LEN>().ok_or(cut)?;
    let addr = |a: &[u8]| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(a);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let mut next = h[6];
    // Every extension header is at least 8 bytes, so the walk ends.
    let (protocol, transport) = loop {
        let ext_len = match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units after the first 8.
            0 | 43 | 60 => (usize::from(*rest.get(1).ok_or(cut)?) + 1) * 8,
            // Fragment: 8 bytes; a non-first fragment carries no transport header.
            44 => {
                if be16(rest, 2).ok_or(cut)? >> 3 != 0 {
                    break (*rest.first().ok_or(cut)?, Transport::Unknown);
                }
                8
            }
            // Authentication header: length in 4-byte units after the first 8.
            51 => (usize::from(*rest.get(1).ok_or(cut)?) + 2) * 4,
            _ => break (next, transport(Family::V6, next, rest)?),
        };
        next = *rest.first().ok_or(cut)?;
        rest = rest.get(ext_len..).ok_or(cut)?;
    };
    Ok(Original {
        // `h` is 40 bytes, so these constant ranges are in bounds.
        src: addr(&h[8..24]),
        dst: addr(&h[24..40]),
        protocol,
        ttl_left: h[7],
        transport,
    })
}

/// Parse an ICMP (`Family::V4`) or ICMPv6 (`Family::V6`) message, without an
/// outer IP header (see [`strip_ipv4_header`] for raw IPv4 sockets). For V4
/// the checksum is verified; V6 checksums cover a pseudo-header and are
/// verified by the kernel, so they are not checked here. Trailing bytes past
/// the fields read are ignored (echo payloads are returned whole).
///
/// # Errors
/// [`Invalid::TooShort`] under 8 bytes, [`Invalid::BadChecksum`] (V4 only),
/// and for errors that quote a datagram, [`Invalid::TruncatedOriginal`] or
/// [`Invalid::BadOriginal`].
pub fn parse(family: Family, msg: &[u8]) -> Result<Message<'_>, Invalid> {
    if msg.len() < HEADER_LEN {
        return Err(Invalid::TooShort);
    }
    if family == Family::V4 && checksum(msg) != 0 {
        return Err(Invalid::BadChecksum);
    }
    parse_unchecked(family, msg)
}

/// [`parse`] without verifying the ICMPv4 checksum. Neither socket kind
/// needs it on Linux (raw and datagram "ping" sockets both deliver messages
/// with a valid checksum, so [`parse`] suits both); it is for callers that
/// know better and for examining truncated messages.
///
/// # Errors
/// As [`parse`], except never [`Invalid::BadChecksum`].
pub fn parse_unchecked(family: Family, msg: &[u8]) -> Result<Message<'_>, Invalid> {
    let (head, body) = msg
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(Invalid::TooShort)?;
    let (kind, code) = (head[0], head[1]);
    let ident = u16::from_be_bytes([head[4], head[5]]);
    let seq = u16::from_be_bytes([head[6], head[7]]);
    let original = match family {
        Family::V4 => original_v4,
        Family::V6 => original_v6,
    };
    Ok(match (family, kind) {
        (Family::V4, v4::ECHO_REPLY) | (Family::V6, v6::ECHO_REPLY) => Message::EchoReply {
            ident,
            seq,
            payload: body,
        },
        (Family::V4, v4::ECHO_REQUEST) | (Family::V6, v6::ECHO_REQUEST) => Message::EchoRequest {
            ident,
            seq,
            payload: body,
        },
        (Family::V4, v4::TIME_EXCEEDED) | (Family::V6, v6::TIME_EXCEEDED) => {
            Message::TimeExceeded {
                code,
                original: original(body)?,
            }
        }
        (Family::V4, v4::DEST_UNREACH) | (Family::V6, v6::DEST_UNREACH) => Message::Unreachable {
            code,
            original: original(body)?,
        },
        (Family::V6, v6::PACKET_TOO_BIG) => Message::TooBig {
            mtu: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
            original: original(body)?,
        },
        _ => Message::Other { kind, code },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fills in bytes 2..4 with the checksum of the whole message.
    fn with_checksum(mut msg: Vec<u8>) -> Vec<u8> {
        msg[2] = 0;
        msg[3] = 0;
        let sum = checksum(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        msg
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
    }

    const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// An ICMPv6 error: type, code, 4 header bytes, then an IPv6 header
    /// (2001:db8::1 → 2001:db8::2, hop limit 1) and `after` (extension and
    /// transport headers).
    fn v6_error(kind: u8, code: u8, rest: [u8; 4], next: u8, after: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(&rest);
        let plen = u16::try_from(after.len()).unwrap();
        m.extend_from_slice(&[0x60, 0, 0, 0]);
        m.extend_from_slice(&plen.to_be_bytes());
        m.extend_from_slice(&[next, 1]);
        m.extend_from_slice(&V6_SRC);
        m.extend_from_slice(&V6_DST);
        m.extend_from_slice(after);
        m
    }

    // ICMPv4 Time Exceeded for a UDP traceroute probe 192.0.2.1:40000 →
    // 198.51.100.7:33434 that arrived with TTL 1.
    fn v4_time_exceeded_udp() -> Vec<u8> {
        with_checksum(vec![
            0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // type 11 code 0, unused
            0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, // v4 IHL 5, len 60, id, DF
            0x01, 0x11, 0x00, 0x00, // TTL 1, UDP, header checksum
            192, 0, 2, 1, // src
            198, 51, 100, 7, // dst
            0x9c, 0x40, 0x82, 0x9a, 0x00, 0x28, 0xab, 0xcd, // UDP 40000 → 33434
        ])
    }

    // ICMPv4 Time Exceeded quoting exactly 8 bytes of a TCP SYN
    // 192.0.2.1:50000 → 203.0.113.9:443, seq 0xdeadbeef, TTL 2 left.
    fn v4_time_exceeded_tcp() -> Vec<u8> {
        with_checksum(vec![
            0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x45, 0x00, 0x00, 0x28, 0xbe, 0xef, 0x00, 0x00, //
            0x02, 0x06, 0x00, 0x00, // TTL 2, TCP
            192, 0, 2, 1, //
            203, 0, 113, 9, //
            0xc3, 0x50, 0x01, 0xbb, 0xde, 0xad, 0xbe, 0xef, // 50000 → 443, seq
        ])
    }

    // ICMPv4 host unreachable quoting an echo request ident 0x1234 seq 7.
    fn v4_unreach_echo() -> Vec<u8> {
        with_checksum(vec![
            0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // type 3 code 1
            0x45, 0x00, 0x00, 0x54, 0x00, 0x01, 0x00, 0x00, //
            0x05, 0x01, 0x00, 0x00, // TTL 5, ICMP
            192, 0, 2, 1, //
            198, 51, 100, 7, //
            0x08, 0x00, 0x5a, 0x5a, 0x12, 0x34, 0x00, 0x07, // echo request
            0x61, 0x62, 0x63, 0x64, // payload "abcd"
        ])
    }

    fn v6_time_exceeded_udp() -> Vec<u8> {
        v6_error(
            3,
            0,
            [0; 4],
            17,
            &[0x9c, 0x40, 0x82, 0x9a, 0, 8, 0x12, 0x34],
        )
    }

    fn v6_unreach_tcp() -> Vec<u8> {
        v6_error(
            1,
            1,
            [0; 4],
            6,
            &[0xc3, 0x50, 0x01, 0xbb, 0xde, 0xad, 0xbe, 0xef],
        )
    }

    fn v6_too_big_echo() -> Vec<u8> {
        v6_error(
            2,
            0,
            [0x00, 0x00, 0x05, 0x00],
            58,
            &[0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x07, 0x61, 0x62],
        )
    }

    // Hop-by-hop options (8 bytes) then a first fragment header, then UDP.
    fn v6_time_exceeded_ext_udp() -> Vec<u8> {
        v6_error(
            3,
            0,
            [0; 4],
            0,
            &[
                44, 0, 1, 4, 0, 0, 0, 0, // HBH: next fragment, len 0, PadN
                17, 0, 0x00, 0x01, 0, 0, 0, 42, // fragment: next UDP, offset 0, M
                0x9c, 0x40, 0x82, 0x9a, 0, 8, 0x12, 0x34, // UDP
            ],
        )
    }

    fn udp(src_port: u16, dst_port: u16) -> Transport {
        Transport::Udp { src_port, dst_port }
    }

    #[test]
    fn checksum_vectors() {
        // RFC 1071 §3: the sum is 0xddf2, the checksum its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0x01]), 0xfeff); // odd byte is the high half
        assert_eq!(checksum(&[0x00, 0x01, 0xf2]), 0x0dfe);
        assert_eq!(checksum(&[0xff, 0xff, 0xff, 0xff]), 0x0000); // carry folds back
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0x22, 0x0d]),
            0
        );
        assert_eq!(checksum(&vec![0xff; 1 << 20]), 0); // no overflow on big input
    }

    #[test]
    fn echo_request_exact_bytes() {
        let mut out = vec![0xaa];
        encode_echo_request(Family::V4, 0x1234, 1, b"hi", &mut out);
        assert_eq!(
            out,
            [
                0xaa, 0x08, 0x00, 0x7d, 0x61, 0x12, 0x34, 0x00, 0x01, 0x68, 0x69
            ]
        );
        assert_eq!(checksum(&out[1..]), 0);

        let mut out = Vec::new();
        encode_echo_request(Family::V6, 0x1234, 1, b"hi", &mut out);
        assert_eq!(
            out,
            [0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, 0x68, 0x69]
        );

        let mut out = Vec::new();
        encode_echo_request(Family::V4, 0, 0, b"", &mut out);
        assert_eq!(out, [0x08, 0, 0xf7, 0xff, 0, 0, 0, 0]);
        assert_eq!(ident_seq_of_request(&out), Some((0, 0)));
    }

    #[test]
    fn echo_round_trip() {
        let mut req = Vec::new();
        encode_echo_request(Family::V4, 0xbeef, 513, b"payload!", &mut req);
        assert_eq!(
            parse(Family::V4, &req),
            Ok(Message::EchoRequest {
                ident: 0xbeef,
                seq: 513,
                payload: b"payload!"
            })
        );
        assert_eq!(ident_seq_of_request(&req), Some((0xbeef, 513)));
        let mut reply = req.clone();
        reply[0] = v4::ECHO_REPLY;
        assert_eq!(parse(Family::V4, &reply), Err(Invalid::BadChecksum));
        let reply = with_checksum(reply);
        assert_eq!(
            parse(Family::V4, &reply),
            Ok(Message::EchoReply {
                ident: 0xbeef,
                seq: 513,
                payload: b"payload!"
            })
        );
        assert_eq!(ident_seq_of_request(&reply), None);
        // The same bytes are not an ICMPv6 echo.
        assert_eq!(
            parse(Family::V6, &reply),
            Ok(Message::Other { kind: 0, code: 0 })
        );

        let mut req = Vec::new();
        encode_echo_request(Family::V6, 7, 65535, b"x", &mut req);
        assert_eq!(
            parse(Family::V6, &req),
            Ok(Message::EchoRequest {
                ident: 7,
                seq: 65535,
                payload: b"x"
            })
        );
        assert_eq!(ident_seq_of_request(&req), Some((7, 65535)));
        req[0] = v6::ECHO_REPLY;
        assert_eq!(
            parse(Family::V6, &req),
            Ok(Message::EchoReply {
                ident: 7,
                seq: 65535,
                payload: b"x"
            })
        );
    }

    #[test]
    fn bad_v4_checksum_rejected() {
        let mut reply = Vec::new();
        encode_echo_request(Family::V4, 1, 2, b"abc", &mut reply);
        reply[0] = v4::ECHO_REPLY;
        let reply = with_checksum(reply);
        assert!(parse(Family::V4, &reply).is_ok());
        for bit in 0..reply.len() * 8 {
            let mut bad = reply.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                parse(Family::V4, &bad),
                Err(Invalid::BadChecksum),
                "bit {bit}"
            );
        }
        // An all-zero header is a zero checksum over a zero sum: wrong.
        assert_eq!(parse(Family::V4, &[0; 8]), Err(Invalid::BadChecksum));
        assert_eq!(
            parse_unchecked(Family::V4, &[0; 8]),
            Ok(Message::EchoReply {
                ident: 0,
                seq: 0,
                payload: &[]
            })
        );
        // Errors are verified too; V6 is not (the kernel does it).
        let mut te = v4_time_exceeded_udp();
        te[30] ^= 0xff;
        assert_eq!(parse(Family::V4, &te), Err(Invalid::BadChecksum));
        let mut te6 = v6_time_exceeded_udp();
        te6[2] = 0x12;
        assert!(parse(Family::V6, &te6).is_ok());
    }

    #[test]
    fn ipv4_header_read_back() {
        let mut icmp = Vec::new();
        encode_echo_request(Family::V4, 0x4242, 9, b"ping", &mut icmp);
        icmp[0] = v4::ECHO_REPLY;
        let icmp = with_checksum(icmp);
        let mut packet = vec![
            0x45, 0x00, 0x00, 0x20, 0xab, 0xcd, 0x40, 0x00, // IHL 5, total 32, DF
            0x3f, 0x01, 0x00, 0x00, // TTL 63, ICMP
            10, 0, 0, 2, // src
            10, 0, 0, 1, // dst
        ];
        packet.extend_from_slice(&icmp);
        let (h, rest) = strip_ipv4_header(&packet).unwrap();
        assert_eq!(
            h,
            Ipv4Header {
                src: Ipv4Addr::new(10, 0, 0, 2),
                dst: Ipv4Addr::new(10, 0, 0, 1),
                ttl: 63,
                protocol: PROTO_ICMP,
                header_len: 20,
                total_len: 32,
            }
        );
        assert_eq!(rest, &icmp[..]);
        assert_eq!(
            parse(Family::V4, rest),
            Ok(Message::EchoReply {
                ident: 0x4242,
                seq: 9,
                payload: b"ping"
            })
        );

        // With 4 bytes of options (IHL 6).
        let mut opts = packet[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&icmp);
        let (h, rest) = strip_ipv4_header(&opts).unwrap();
        assert_eq!((h.header_len, h.ttl, h.protocol), (24, 63, 1));
        assert_eq!(rest, &icmp[..]);

        // Header only: an empty rest.
        let (_, rest) = strip_ipv4_header(&packet[..20]).unwrap();
        assert!(rest.is_empty());

        // Rejections: short, wrong version, IHL < 5, IHL past the end.
        assert_eq!(strip_ipv4_header(&[]), None);
        assert_eq!(strip_ipv4_header(&packet[..19]), None);
        let mut bad = packet.clone();
        bad[0] = 0x65;
        assert_eq!(strip_ipv4_header(&bad), None);
        bad[0] = 0x44;
        assert_eq!(strip_ipv4_header(&bad), None);
        bad[0] = 0x4f; // 60-byte header in a 32-byte packet
        assert_eq!(strip_ipv4_header(&bad), None);
        bad[0] = 0x48; // 32-byte header: exactly the packet
        assert_eq!(
            strip_ipv4_header(&bad).map(|(h, r)| (h.header_len, r.len())),
            Some((32, 0))
        );
    }

    #[test]
    fn v4_errors_quoting_udp_tcp_echo() {
        assert_eq!(
            parse(Family::V4, &v4_time_exceeded_udp()),
            Ok(Message::TimeExceeded {
                code: v4::TTL_EXCEEDED,
                original: Original {
                    src: v4(192, 0, 2, 1),
                    dst: v4(198, 51, 100, 7),
                    protocol: PROTO_UDP,
                    ttl_left: 1,
                    transport: udp(40000, 33434),
                },
            })
        );
        assert_eq!(
            parse(Family::V4, &v4_time_exceeded_tcp()),
            Ok(Message::TimeExceeded {
                code: 0,
                original: Original {
                    src: v4(192, 0, 2, 1),
                    dst: v4(203, 0, 113, 9),
                    protocol: PROTO_TCP,
                    ttl_left: 2,
                    transport: Transport::Tcp {
                        src_port: 50000,
                        dst_port: 443,
                        seq: 0xdead_beef
                    },
                },
            })
        );
        assert_eq!(
            parse(Family::V4, &v4_unreach_echo()),
            Ok(Message::Unreachable {
                code: 1,
                original: Original {
                    src: v4(192, 0, 2, 1),
                    dst: v4(198, 51, 100, 7),
                    protocol: PROTO_ICMP,
                    ttl_left: 5,
                    transport: Transport::IcmpEcho {
                        ident: 0x1234,
                        seq: 7
                    },
                },
            })
        );
    }

    #[test]
    fn v4_error_edge_cases() {
        let base = v4_time_exceeded_udp();
        let original = |msg: Vec<u8>| match parse(Family::V4, &with_checksum(msg)) {
            Ok(Message::TimeExceeded { original, .. }) => Ok(original),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        // Options in the quoted header (IHL 6) shift the transport header.
        let mut opts = base[..28].to_vec();
        opts[8] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&base[28..]);
        assert_eq!(original(opts).map(|o| o.transport), Ok(udp(40000, 33434)));
        // A non-first fragment has no transport header.
        let mut frag = base.clone();
        frag[14] = 0x00;
        frag[15] = 0xb9;
        assert_eq!(
            original(frag).map(|o| (o.protocol, o.transport)),
            Ok((PROTO_UDP, Transport::Unknown))
        );
        // Another protocol, and ICMP other than an echo request.
        let mut gre = base.clone();
        gre[17] = 47;
        assert_eq!(original(gre).map(|o| o.transport), Ok(Transport::Unknown));
        let mut reply = v4_unreach_echo();
        reply[28] = v4::ECHO_REPLY;
        let reply = with_checksum(reply);
        assert!(matches!(
            parse(Family::V4, &reply),
            Ok(Message::Unreachable {
                original: Original {
                    transport: Transport::Unknown,
                    ..
                },
                ..
            })
        ));
        // Quoting something that is not IPv4.
        let mut not_v4 = base.clone();
        not_v4[8] = 0x60;
        assert_eq!(original(not_v4), Err(Invalid::BadOriginal));
        let mut short_ihl = base.clone();
        short_ihl[8] = 0x44;
        assert_eq!(original(short_ihl), Err(Invalid::BadOriginal));
        let mut long_ihl = base.clone();
        long_ihl[8] = 0x4f;
        assert_eq!(original(long_ihl), Err(Invalid::TruncatedOriginal));
        // Other types are passed through with their code.
        let redirect = with_checksum(vec![5, 1, 0, 0, 192, 0, 2, 254]);
        assert_eq!(
            parse(Family::V4, &redirect),
            Ok(Message::Other { kind: 5, code: 1 })
        );
        // Fragmentation needed stays an Unreachable with its code.
        let mut frag_needed = base.clone();
        frag_needed[0] = v4::DEST_UNREACH;
        frag_needed[1] = v4::UNREACH_FRAG_NEEDED;
        frag_needed[6] = 0x05;
        frag_needed[7] = 0xdc;
        assert!(matches!(
            parse(Family::V4, &with_checksum(frag_needed)),
            Ok(Message::Unreachable { code: 4, .. })
        ));
    }

    #[test]
    fn v6_errors_quoting_udp_tcp_echo() {
        assert_eq!(
            parse(Family::V6, &v6_time_exceeded_udp()),
            Ok(Message::TimeExceeded {
                code: v6::HOP_LIMIT_EXCEEDED,
                original: Original {
                    src: v6(1),
                    dst: v6(2),
                    protocol: PROTO_UDP,
                    ttl_left: 1,
                    transport: udp(40000, 33434),
                },
            })
        );
        assert_eq!(
            parse(Family::V6, &v6_unreach_tcp()),
            Ok(Message::Unreachable {
                code: 1,
                original: Original {
                    src: v6(1),
                    dst: v6(2),
                    protocol: PROTO_TCP,
                    ttl_left: 1,
                    transport: Transport::Tcp {
                        src_port: 50000,
                        dst_port: 443,
                        seq: 0xdead_beef
                    },
                },
            })
        );
        assert_eq!(
            parse(Family::V6, &v6_too_big_echo()),
            Ok(Message::TooBig {
                mtu: 1280,
                original: Original {
                    src: v6(1),
                    dst: v6(2),
                    protocol: PROTO_ICMPV6,
                    ttl_left: 1,
                    transport: Transport::IcmpEcho {
                        ident: 0x1234,
                        seq: 7
                    },
                },
            })
        );
    }

    #[test]
    fn v6_extension_headers() {
        let original = |msg: &[u8]| match parse(Family::V6, msg) {
            Ok(Message::TimeExceeded { original, .. }) => {
                Ok((original.protocol, original.transport))
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            original(&v6_time_exceeded_ext_udp()),
            Ok((PROTO_UDP, udp(40000, 33434)))
        );
        // Destination options 16 bytes long (length 1), then TCP.
        let mut dst_opts = vec![6, 1, 1, 12];
        dst_opts.extend_from_slice(&[0; 12]);
        dst_opts.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 9]);
        assert_eq!(
            original(&v6_error(3, 0, [0; 4], 60, &dst_opts)),
            Ok((
                PROTO_TCP,
                Transport::Tcp {
                    src_port: 50000,
                    dst_port: 443,
                    seq: 9
                }
            ))
        );
        // Authentication header: length 4 means (4 + 2) × 4 = 24 bytes.
        let mut ah = vec![17, 4, 0, 0];
        ah.extend_from_slice(&[0; 20]);
        ah.extend_from_slice(&[0x9c, 0x40, 0x82, 0x9a]);
        assert_eq!(
            original(&v6_error(3, 0, [0; 4], 51, &ah)),
            Ok((PROTO_UDP, udp(40000, 33434)))
        );
        // A non-first fragment: the protocol is known, the ports are not.
        let frag = [17, 0, 0x00, 0xb9, 0, 0, 0, 42, 0x9c, 0x40, 0x82, 0x9a];
        assert_eq!(
            original(&v6_error(3, 0, [0; 4], 44, &frag)),
            Ok((PROTO_UDP, Transport::Unknown))
        );
        // ESP, no next header: not walked.
        assert_eq!(
            original(&v6_error(3, 0, [0; 4], 50, &[0; 16])),
            Ok((50, Transport::Unknown))
        );
        assert_eq!(
            original(&v6_error(3, 0, [0; 4], 59, &[])),
            Ok((59, Transport::Unknown))
        );
        // An ICMPv6 message other than an echo request.
        assert_eq!(
            original(&v6_error(3, 0, [0; 4], 58, &[135, 0, 0, 0, 0, 0, 0, 0])),
            Ok((PROTO_ICMPV6, Transport::Unknown))
        );
        // An extension length that runs past the quote.
        assert_eq!(
            original(&v6_error(
                3,
                0,
                [0; 4],
                0,
                &[17, 255, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
            )),
            Err(Invalid::TruncatedOriginal)
        );
        // Quoting IPv4 in an ICMPv6 error.
        let mut not_v6 = v6_time_exceeded_udp();
        not_v6[8] = 0x45;
        assert_eq!(original(&not_v6), Err(Invalid::BadOriginal));
        // Neighbour solicitation and friends are Other.
        assert_eq!(
            parse(Family::V6, &[135, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Message::Other { kind: 135, code: 0 })
        );
    }

    /// Every prefix of a message: under 8 bytes TooShort, then
    /// TruncatedOriginal until `min_ok`, then exactly the full message's
    /// result. The checked parse never panics and, when it succeeds, agrees.
    fn check_prefixes(family: Family, full: &[u8], min_ok: usize) {
        let expected = parse(family, full).unwrap();
        for n in 0..=full.len() {
            let got = parse_unchecked(family, &full[..n]);
            let want = if n < HEADER_LEN {
                Err(Invalid::TooShort)
            } else if n < min_ok {
                Err(Invalid::TruncatedOriginal)
            } else {
                Ok(expected)
            };
            assert_eq!(got, want, "prefix of {n} bytes");
            if let Ok(m) = parse(family, &full[..n]) {
                assert_eq!(Ok(m), got, "prefix of {n} bytes");
            }
        }
    }

    #[test]
    fn truncated_errors_fail_consistently() {
        check_prefixes(Family::V4, &v4_time_exceeded_udp(), 8 + 20 + 4);
        check_prefixes(Family::V4, &v4_time_exceeded_tcp(), 8 + 20 + 8);
        check_prefixes(Family::V4, &v4_unreach_echo(), 8 + 20 + 8);
        check_prefixes(Family::V6, &v6_time_exceeded_udp(), 8 + 40 + 4);
        check_prefixes(Family::V6, &v6_unreach_tcp(), 8 + 40 + 8);
        check_prefixes(Family::V6, &v6_too_big_echo(), 8 + 40 + 8);
        check_prefixes(Family::V6, &v6_time_exceeded_ext_udp(), 8 + 40 + 16 + 4);
    }

    #[test]
    fn truncated_echo_keeps_a_partial_payload() {
        for family in [Family::V4, Family::V6] {
            let mut full = Vec::new();
            encode_echo_request(family, 3, 4, b"abcdefgh", &mut full);
            for n in 0..=full.len() {
                let got = parse_unchecked(family, &full[..n]);
                if n < HEADER_LEN {
                    assert_eq!(got, Err(Invalid::TooShort));
                    assert_eq!(parse(family, &full[..n]), Err(Invalid::TooShort));
                    assert_eq!(ident_seq_of_request(&full[..n]), None);
                } else {
                    let payload = &full[8..n];
                    assert_eq!(
                        got,
                        Ok(Message::EchoRequest {
                            ident: 3,
                            seq: 4,
                            payload
                        })
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_displays() {
        assert_eq!(Invalid::BadChecksum.to_string(), "ICMP checksum mismatch");
        for e in [
            Invalid::TooShort,
            Invalid::BadChecksum,
            Invalid::TruncatedOriginal,
            Invalid::BadOriginal,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    fn family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::V4), Just(Family::V6)]
    }

    proptest! {
        #[test]
        fn parse_never_panics(family in family(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(family, &bytes);
            let _ = parse_unchecked(family, &bytes);
            let _ = ident_seq_of_request(&bytes);
            if let Some((_, rest)) = strip_ipv4_header(&bytes) {
                let _ = parse(Family::V4, rest);
            }
        }

        #[test]
        fn quoted_datagrams_never_panic(
            family in family(),
            kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(11)],
            first in prop_oneof![Just(0x45u8), Just(0x46), Just(0x4f), Just(0x60), any::<u8>()],
            next in prop_oneof![Just(0u8), Just(1), Just(6), Just(17), Just(43), Just(44), Just(51), Just(58), Just(60), any::<u8>()],
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut msg = vec![kind, 0, 0, 0, 0, 0, 0, 0, first];
            msg.extend_from_slice(&body);
            // Point the IPv4 protocol and the IPv6 next header at interesting values.
            let at = match family { Family::V4 => 8 + 9, Family::V6 => 8 + 6 };
            if let Some(b) = msg.get_mut(at) { *b = next; }
            let _ = parse_unchecked(family, &msg);
        }

        #[test]
        fn echo_round_trips(
            family in family(),
            ident in any::<u16>(),
            seq in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut out = Vec::new();
            encode_echo_request(family, ident, seq, &payload, &mut out);
            prop_assert_eq!(out.len(), 8 + payload.len());
            prop_assert_eq!(ident_seq_of_request(&out), Some((ident, seq)));
            prop_assert_eq!(
                parse(family, &out),
                Ok(Message::EchoRequest { ident, seq, payload: &payload })
            );
            out[0] = match family { Family::V4 => v4::ECHO_REPLY, Family::V6 => v6::ECHO_REPLY };
            let out = if family == Family::V4 { with_checksum(out) } else { out };
            prop_assert_eq!(
                parse(family, &out),
                Ok(Message::EchoReply { ident, seq, payload: &payload })
            );
        }

        #[test]
        fn stored_checksum_verifies(bytes in proptest::collection::vec(any::<u8>(), 4..200)) {
            prop_assert_eq!(checksum(&with_checksum(bytes)), 0);
        }
    }
}
