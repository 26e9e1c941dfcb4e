//! What the TLS server and clients share: one crypto provider (rustls over
//! *ring*), certificate fingerprints (SHA-256 of the DER certificate, shown
//! as `openssl x509 -fingerprint -sha256` does) and reading a `--pin`.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};

/// Default port of the TLS listener (echo and chat over TLS).
pub const DEFAULT_TLS_PORT: u16 = 5443;

/// The provider every TLS config of netsh uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate's SHA-256 fingerprint: `AB:CD:…` (32 bytes, upper-case hex).
pub fn fingerprint(der: &[u8]) -> String {
    fingerprint_of(&digest(der))
}

/// A SHA-256 digest shown as a fingerprint.
pub fn fingerprint_of(d: &[u8; 32]) -> String {
    let mut s = String::with_capacity(95);
    for (i, b) in d.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// The 32 bytes of a pin as users write it: with or without colons, either
/// case, optionally after `sha256:` / `SHA256=`.
///
/// # Errors
/// A message saying what a pin looks like.
pub fn parse_pin(s: &str) -> std::result::Result<[u8; 32], String> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .or_else(|| t.strip_prefix("sha256="))
        .or_else(|| t.strip_prefix("SHA256="))
        .or_else(|| t.strip_prefix("SHA256 Fingerprint="))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let bad = || {
        format!(
            "'{}' is not a SHA-256 fingerprint (64 hex digits, colons allowed, as 'serve --tls-self-signed' prints)",
            crate::proto::escape::escape_controls(s)
        )
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The SHA-256 of a certificate, as bytes.
pub fn digest(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Read plaintext from a session over a non-blocking socket, for both
/// ends: `Ok(0)` at the end (close_notify, or TCP's end, which sets
/// `eof`), `WouldBlock` when the socket has no more, `Interrupted` after
/// `records` socket reads without plaintext (more may wait: call again),
/// `InvalidData` when the peer broke the protocol (our alert is sent
/// first, if the socket takes it).
///
/// # Errors
/// As above, and the socket's.
pub fn read_plain<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut mio::net::TcpStream,
    buf: &mut [u8],
    eof: &mut bool,
    records: usize,
) -> std::io::Result<usize> {
    use std::io::{ErrorKind, Read};
    for _ in 0..records {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if *eof {
            return Ok(0);
        }
        if conn.read_tls(sock)? == 0 {
            *eof = true;
        }
        if let Err(e) = conn.process_new_packets() {
            let _ = write_records(conn, sock); // the alert, if it fits
            return Err(std::io::Error::new(ErrorKind::InvalidData, e));
        }
        write_records(conn, sock)?;
    }
    Err(ErrorKind::Interrupted.into())
}

/// Write a session's pending records to a non-blocking socket until none
/// is left or the socket is full (a bounded number of writes), for both
/// ends: the server's connections and the client's bulk streams.
///
/// # Errors
/// The socket's; `WriteZero` if it takes nothing.
pub fn write_records<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut mio::net::TcpStream,
) -> std::io::Result<()> {
    use std::io::ErrorKind;
    for _ in 0..64 {
        if !conn.wants_write() {
            break;
        }
        match conn.write_tls(sock) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_reads_as_printed_and_as_openssl_prints_it() {
        let der = b"not really a certificate";
        let fp = fingerprint(der);
        assert_eq!(fp.len(), 95);
        assert_eq!(parse_pin(&fp), Ok(digest(der)));
        assert_eq!(
            parse_pin(&fp.replace(':', "").to_lowercase()),
            Ok(digest(der))
        );
        assert_eq!(
            parse_pin(&format!("SHA256 Fingerprint={fp}")),
            Ok(digest(der))
        );
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
