//! The network core: address parsing and resolution now; the private mio event
//! loops with deadlines for echo, SNTP and chat join here.
//!
//! Nothing in `net` prints, colours output, or knows about rustyline or rhai.

pub mod addr;
pub mod bulk;
pub mod bulk_udp;
pub mod client;
pub mod echo;
pub mod gso;
pub mod monitor;
pub mod ping;
pub mod pktinfo;
pub mod probe;
pub mod sntp;
pub mod sock;
pub mod sockopt;
pub mod tcping;
pub mod tls;
pub mod trace;

pub use addr::Endpoint;
