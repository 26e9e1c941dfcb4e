//! `HOST[:PORT]` endpoints: parsing (with a default port), display, and
//! resolution with clear errors.
//!
//! Accepted forms: `host`, `host:port`, `1.2.3.4`, `1.2.3.4:port`, `::1`,
//! `[::1]`, `[::1]:port`. A bare IPv6 address has no port (its colons are the
//! address), so a port with IPv6 needs brackets, as in URLs.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::error::{Error, ErrorKind, Result};

/// A host (name or IP literal) and a port, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port number, 1–65535.
    pub port: u16,
}

/// Longest DNS name (RFC 1035, section 2.3.4).
const MAX_HOST_LEN: usize = 253;

impl Endpoint {
    /// Parse `HOST[:PORT]`, using `default_port` when none is given.
    ///
    /// # Errors
    /// `bad-value` naming the input when the host or the port is malformed.
    pub fn parse(s: &str, default_port: u16) -> Result<Endpoint> {
        let s = s.trim();
        let bad = |why: &str| {
            Error::bad_value(format!("'{}' is not HOST[:PORT]: {why}", s.escape_debug()))
                .with_hint("write e.g. 127.0.0.1:5050, example.org, or [::1]:5050")
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(bad("missing ']'"));
            };
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after ']'")),
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("the part in brackets is not an IPv6 address"));
            }
            (host, port)
        } else if s.matches(':').count() > 1 {
            if s.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address (use [ADDR]:PORT for a port)"));
            }
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => default_port,
            Some(p) => parse_port(p).map_err(|why| bad(&why))?,
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.parse::<IpAddr>().is_err() && !valid_hostname(host) {
            return Err(bad("the host has characters a host name cannot have"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    /// Resolve to socket addresses (IPv4 first where both exist, as most
    /// clients try them). Blocking: uses the system resolver.
    ///
    /// # Errors
    /// `dns` when the name does not resolve or resolves to nothing.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Dns,
                    format!("resolve {}: {}", self.host, dns_reason(&e)),
                )
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::new(
                ErrorKind::Dns,
                format!("resolve {}: no addresses", self.host),
            ));
        }
        let mut v4: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv4()).collect();
        v4.extend(addrs.into_iter().filter(|a| a.is_ipv6()));
        Ok(v4)
    }
}

fn dns_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.strip_prefix("failed to lookup address information: ")
        .unwrap_or(&s)
        .to_lowercase()
}

fn parse_port(p: &str) -> std::result::Result<u16, String> {
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!("port {n} is out of range (1-65535)")),
        Err(_) => Err(format!(
            "port '{}' is not a number (1-65535)",
            p.escape_debug()
        )),
    }
}

/// Letters, digits, '-', '_' and '.' in labels of 1–63 characters (RFC 1123,
/// plus '_' which real zones use).
fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= MAX_HOST_LEN
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Result<Endpoint> {
        Endpoint::parse(s, 5050)
    }

    #[test]
    fn forms() {
        assert_eq!(ep("127.0.0.1").unwrap().to_string(), "127.0.0.1:5050");
        assert_eq!(ep("localhost:7").unwrap().to_string(), "localhost:7");
        assert_eq!(ep("::1").unwrap().to_string(), "[::1]:5050");
        assert_eq!(ep("[::1]").unwrap().to_string(), "[::1]:5050");
        assert_eq!(ep("[fe80::1]:123").unwrap().port, 123);
        assert_eq!(ep(" pool.ntp.org ").unwrap().host, "pool.ntp.org");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            ":5050",
            "host:",
            "host:0",
            "host:65536",
            "host:x",
            "[::1",
            "[::1]x",
            "[nothost]:1",
            "a b",
            "bad/host",
            "1::2::3",
            "\u{1b}[2J",
        ] {
            let e = ep(bad).unwrap_err();
            assert_eq!(e.code(), "bad-value", "{bad:?}");
            assert!(e.message.contains("HOST[:PORT]"), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn port_range_message_names_the_range() {
        let e = ep("h:70000").unwrap_err();
        assert!(e.message.contains("70000") && e.message.contains("1-65535"));
    }
}
