//! Wire and text formats as pure functions over bytes and strings: no sockets,
//! no clocks, no printing. Each protocol is defined once here for both ends:
//! the client encodes what the server parses, and the other way round.
//!
//! - [`line`]: line framing shared by every line protocol;
//! - [`echo`]: the echo requests and replies, probe payloads, bulk pattern;
//! - [`bulk`]: UDP bulk tests (control lines, datagrams, the receiver's count);
//! - [`chat`]: the chat room's lines;
//! - [`ntp`]: the 48-byte NTP packet;
//! - [`icmp`]: ICMP and ICMPv6 echo and errors, for ping and trace;
//! - [`escape`]: making untrusted text safe for a terminal or a log.

pub mod bulk;
pub mod chat;
pub mod echo;
pub mod escape;
pub mod icmp;
pub mod line;
pub mod ntp;
