//! Wire and text formats as pure functions over bytes and strings: no sockets,
//! no clocks, no printing. The echo, NTP and chat codecs join here.

pub mod chat;
pub mod echo;
pub mod line;
pub mod ntp;
