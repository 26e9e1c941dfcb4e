//! The network core: address parsing and resolution now; the private mio event
//! loops with deadlines for echo, SNTP and chat join here.
//!
//! Nothing in `net` prints, colours output, or knows about rustyline or rhai.

pub mod addr;
pub mod bulk;
pub mod client;
pub mod echo;
pub mod probe;
pub mod sntp;
pub mod sockopt;

pub use addr::Endpoint;
