//! TLS for the echo and chat services, on a port of its own beside the plain
//! one, driven from the same mio loop (rustls' `tlsserver-mio` is the model):
//! a [`Tls`] sits between a [`super::conn::Conn`] and its socket, the
//! connection reads and writes plaintext through it, and its interest
//! follows what the session wants (`wants_write`; no plaintext is written
//! while the handshake runs, so a half-open handshake never spins the loop).
//!
//! Certificates come from `--tls-cert`/`--tls-key` (PEM) or, with
//! `--tls-self-signed`, from `DATA/tls/`, made there on first use (rcgen)
//! and kept, like an ssh host key: clients that pinned or trusted it on
//! first use still trust the server after a restart.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, Result};

/// Ciphertext and plaintext rustls may hold for one connection, each way.
const BUFFER_LIMIT: usize = 256 * 1024;
/// Largest certificate or key file read.
const PEM_MAX: u64 = 1 << 20;
/// Record reads per [`Tls::read`] call before yielding.
const RECORDS_PER_READ: usize = 8;

/// The TLS listener's configuration.
#[derive(Clone)]
pub struct TlsSetup {
    /// The rustls configuration every TLS connection shares.
    pub config: Arc<rustls::ServerConfig>,
    /// The port (0 picks a free one).
    pub port: u16,
    /// SHA-256 fingerprint of the certificate served.
    pub fingerprint: String,
    /// Where the certificate came from, for the console.
    pub origin: String,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("port", &self.port)
            .field("fingerprint", &self.fingerprint)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn tls_error(what: String, hint: &str) -> Error {
    Error::new(ErrorKind::BadValue, what).with_hint(hint)
}

/// Load a certificate chain and its key (PEM files).
///
/// # Errors
/// `bad-value` naming the file that is missing, unreadable or not PEM, or a
/// key that does not match the certificate.
pub fn from_files(cert: &Path, key: &Path, port: u16) -> Result<TlsSetup> {
    let pem = |p: &Path, flag: &str| {
        crate::files::read_capped(p, PEM_MAX).map_err(|e| {
            Error::io("read", format!("{flag} {}", p.display()), &e)
                .with_hint("give a PEM file (-----BEGIN ...-----) you can read")
        })
    };
    let cert_pem = pem(cert, "--tls-cert")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            tls_error(
                format!("--tls-cert {}: {e}", cert.display()),
                "give a PEM certificate file (-----BEGIN CERTIFICATE-----)",
            )
        })?;
    if certs.is_empty() {
        return Err(tls_error(
            format!("--tls-cert {}: no certificate in it", cert.display()),
            "give a PEM certificate file (-----BEGIN CERTIFICATE-----)",
        ));
    }
    let pkey = PrivateKeyDer::from_pem_slice(&pem(key, "--tls-key")?).map_err(|e| {
        tls_error(
            format!("--tls-key {}: {e}", key.display()),
            "give the certificate's private key as PEM (PKCS#8, RSA or EC)",
        )
    })?;
    build(certs, pkey, port, format!("{}", cert.display()))
}

/// The server's own self-signed certificate under `dir` (`cert.pem`,
/// `key.pem`), made now if it is not there yet. Names: localhost, the
/// loopback addresses, this host's name and every address it binds.
///
/// # Errors
/// `io` if the directory or files cannot be written; `bad-value` if what is
/// there cannot be read.
pub fn self_signed(dir: &Path, names: &[String], port: u16) -> Result<TlsSetup> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        make_self_signed(dir, &cert, &key, names)?;
    }
    let mut s = from_files(&cert, &key, port)?;
    s.origin = format!("self-signed, {}", cert.display());
    Ok(s)
}

fn make_self_signed(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<()> {
    let mut all = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    for n in names {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    let made = rcgen::generate_simple_self_signed(all).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("make a self-signed certificate: {e}"),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir.display(), &e))?;
    crate::files::write_private(key, made.signing_key.serialize_pem().as_bytes())
        .map_err(|e| Error::io("write", key.display(), &e))?;
    std::fs::write(cert, made.cert.pem()).map_err(|e| Error::io("write", cert.display(), &e))?;
    Ok(())
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    port: u16,
    origin: String,
) -> Result<TlsSetup> {
    let fingerprint = crate::tls::fingerprint(certs[0].as_ref());
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            tls_error(
                format!("TLS certificate {origin}: {e}"),
                "check that --tls-key is the key of --tls-cert",
            )
        })?;
    Ok(TlsSetup {
        config: Arc::new(config),
        port,
        fingerprint,
        origin,
    })
}

/// One connection's TLS session.
pub struct Tls {
    conn: ServerConnection,
    eof: bool,
    /// Why the session failed, once it has (for the console).
    pub failed: Option<String>,
}

impl Tls {
    /// A session for a connection just accepted.
    ///
    /// # Errors
    /// rustls' error (none is expected with a config that built).
    pub fn new(config: &Arc<rustls::ServerConfig>) -> std::result::Result<Tls, rustls::Error> {
        let mut conn = ServerConnection::new(Arc::clone(config))?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Tls {
            conn,
            eof: false,
            failed: None,
        })
    }

    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether records wait to be written to the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Plaintext from the peer, as `Read::read` on a non-blocking socket:
    /// `Ok(0)` at the end (close_notify or TCP end), `WouldBlock` when the
    /// socket has no more, `InvalidData` when the peer broke the protocol
    /// (an alert is sent first).
    pub fn read(&mut self, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        let r = crate::tls::read_plain(&mut self.conn, sock, buf, &mut self.eof, RECORDS_PER_READ);
        if let Err(e) = &r
            && e.kind() == io::ErrorKind::InvalidData
        {
            self.failed = Some(e.to_string());
        }
        r
    }

    /// Queue plaintext for the peer and push what records the socket takes;
    /// `WouldBlock` when rustls' buffer is full (or the handshake has not
    /// made room yet).
    pub fn write(&mut self, sock: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
        self.flush(sock)?;
        let n = self.conn.writer().write(buf)?;
        self.flush(sock)?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Write pending records until none is left or the socket is full.
    pub fn flush(&mut self, sock: &mut TcpStream) -> io::Result<()> {
        crate::tls::write_records(&mut self.conn, sock)
    }

    /// Say close_notify (best effort) before the socket is shut.
    pub fn close(&mut self, sock: &mut TcpStream) {
        self.conn.send_close_notify();
        let _ = self.flush(sock);
    }
}
