//! The client side of TLS (`echo --tls`, `chat --tls`): how a server's
//! certificate is trusted, the handshake within the session's timeout, and
//! [`Stream`], the one connection type the line clients read and write.
//!
//! Trust, in the order a user reaches for it:
//! - `--pin SHA256`: the certificate must have this fingerprint (what
//!   `serve --tls-self-signed` prints); names and dates are not checked, the
//!   handshake's signature is.
//! - `--ca FILE`: the usual web PKI check against the certificates in FILE
//!   (name, dates, chain).
//! - neither: trust on first use, like ssh's `known_hosts`: the first
//!   fingerprint seen for `HOST:PORT` is stored in `DATA/known_hosts` and
//!   every later connection must show the same one.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use crate::error::{Error, ErrorKind, Result};
use crate::net::Endpoint;
use crate::net::client::{ClientCtx, LineStream, interrupted, is_wait};

/// Largest `--ca` or `known_hosts` file read.
const FILE_MAX: u64 = 1 << 20;
/// Longest a reader holds the session while it waits for bytes: a writer on
/// another thread (the interactive chat) waits at most this long.
const LOCK_SLICE: Duration = Duration::from_millis(10);

/// How the server's certificate is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Its SHA-256 fingerprint must be this.
    Pin([u8; 32]),
    /// It must chain to a certificate in this PEM file, for the host's name.
    Ca(PathBuf),
    /// The first one seen is stored in this file and required after.
    FirstUse(PathBuf),
}

/// What the verifier saw, for the error line.
#[derive(Debug, Default)]
struct Seen {
    digest: Option<[u8; 32]>,
}

/// Checks a pin (also the trust-on-first-use pin, or none yet: record it).
#[derive(Debug)]
struct PinVerifier {
    pin: Option<[u8; 32]>,
    seen: Arc<Mutex<Seen>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let d = crate::tls::digest(end_entity.as_ref());
        if let Ok(mut s) = self.seen.lock() {
            s.digest = Some(d);
        }
        match self.pin {
            Some(p) if p != d => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The stored first-use fingerprints: `HOST:PORT HEX` lines.
fn known(file: &Path, key: &str) -> Result<Option<([u8; 32], usize)>> {
    let text = match crate::files::read_capped(file, FILE_MAX) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", file.display(), &e)),
    };
    for (i, line) in String::from_utf8_lossy(&text).lines().enumerate() {
        let mut w = line.split_whitespace();
        if w.next() == Some(key)
            && let Some(Ok(d)) = w.next().map(crate::tls::parse_pin)
        {
            return Ok(Some((d, i + 1)));
        }
    }
    Ok(None)
}

fn remember(file: &Path, key: &str, digest: &[u8; 32]) -> Result<()> {
    let mut text = match crate::files::read_capped(file, FILE_MAX) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", file.display(), &e)),
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
    text.extend_from_slice(format!("{key} {hex}\n").as_bytes());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir.display(), &e))?;
    }
    crate::files::write_private(file, &text).map_err(|e| Error::io("write", file.display(), &e))
}

fn config(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<rustls::ClientConfig>> {
    let c = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Io, format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(c))
}

fn ca_verifier(file: &Path) -> Result<Arc<dyn ServerCertVerifier>> {
    let pem = crate::files::read_capped(file, FILE_MAX)
        .map_err(|e| Error::io("read", format!("--ca {}", file.display()), &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| Error::bad_value(format!("--ca {}: {e}", file.display())))?;
        roots
            .add(c)
            .map_err(|e| Error::bad_value(format!("--ca {}: {e}", file.display())))?;
    }
    if roots.is_empty() {
        return Err(
            Error::bad_value(format!("--ca {}: no certificate in it", file.display()))
                .with_hint("give a PEM file (-----BEGIN CERTIFICATE-----)"),
        );
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
        .build()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
        .map_err(|e| Error::bad_value(format!("--ca {}: {e}", file.display())))
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02X}")).collect()
}

/// A client configuration that trusts exactly the certificate with this
/// SHA-256 (for callers that drive a `rustls::ClientConnection` from their
/// own loop, like the TLS benchmark).
///
/// # Errors
/// rustls' setup error (none expected).
pub fn pinned_config(pin: [u8; 32]) -> Result<Arc<rustls::ClientConfig>> {
    config(Arc::new(PinVerifier {
        pin: Some(pin),
        seen: Arc::new(Mutex::new(Seen::default())),
        provider: crate::tls::provider(),
    }))
}

/// TLS over a connected socket: the handshake, within the session's
/// timeout, checked as `trust` says.
///
/// # Errors
/// `protocol` with the fix for a certificate that is not trusted (another
/// pin, a changed first-use fingerprint, a CA check that failed) or a peer
/// that does not speak TLS; `timed-out` when the handshake stalls.
pub fn connect(
    sock: TcpStream,
    ep: &Endpoint,
    addr: SocketAddr,
    trust: &Trust,
    ctx: ClientCtx<'_>,
) -> Result<Stream> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let key = ep.to_string();
    let (verifier, stored): (Arc<dyn ServerCertVerifier>, _) = match trust {
        Trust::Pin(p) => (
            Arc::new(PinVerifier {
                pin: Some(*p),
                seen: Arc::clone(&seen),
                provider: crate::tls::provider(),
            }),
            None,
        ),
        Trust::FirstUse(file) => {
            let stored = known(file, &key)?;
            (
                Arc::new(PinVerifier {
                    pin: stored.map(|(d, _)| d),
                    seen: Arc::clone(&seen),
                    provider: crate::tls::provider(),
                }),
                stored,
            )
        }
        Trust::Ca(file) => (ca_verifier(file)?, None),
    };
    let name = ServerName::try_from(ep.host.clone())
        .map_err(|_| Error::bad_value(format!("'{}' cannot be a TLS server name", ep.host)))?;
    let conn = ClientConnection::new(config(verifier)?, name)
        .map_err(|e| Error::new(ErrorKind::Io, format!("TLS setup: {e}")))?;
    let mut tls = StreamOwned::new(conn, sock);
    let deadline = Instant::now() + ctx.timeout;
    while tls.conn.is_handshaking() {
        if ctx.interrupted() {
            return Err(interrupted());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!(
                    "TLS handshake with {addr}: no answer in {}",
                    crate::units::format_duration(ctx.timeout)
                ),
            )
            .with_hint("is that the server's TLS port (serve --tls-port, default 5443)?"));
        }
        let slice = Some(left.min(crate::net::client::SLICE));
        let _ = tls.sock.set_read_timeout(slice);
        let _ = tls.sock.set_write_timeout(slice);
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if is_wait(&e) => {}
            Err(e) => {
                let digest = seen.lock().ok().and_then(|s| s.digest);
                return Err(handshake_error(&e, addr, &key, trust, digest, stored));
            }
        }
    }
    if let Trust::FirstUse(file) = trust
        && stored.is_none()
        && let Some(d) = seen.lock().ok().and_then(|s| s.digest)
    {
        remember(file, &key, &d)?;
        let mut s = Stream::tls(tls);
        s.first_use = Some(crate::tls::fingerprint_of(&d));
        return Ok(s);
    }
    Ok(Stream::tls(tls))
}

/// One line for a handshake that failed, with the fix.
fn handshake_error(
    e: &io::Error,
    addr: SocketAddr,
    key: &str,
    trust: &Trust,
    digest: Option<[u8; 32]>,
    stored: Option<([u8; 32], usize)>,
) -> Error {
    let got = digest.map(|d| hex(&d)).unwrap_or_default();
    let rustls_err = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    let cert_err = matches!(rustls_err, Some(rustls::Error::InvalidCertificate(_)));
    let closed = matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    );
    if closed && digest.is_none() {
        return Error::new(
            ErrorKind::Protocol,
            format!(
                "{addr} closed the connection before the TLS handshake — the server may not allow your address (ask its operator to add it with --allow)"
            ),
        );
    }
    match (trust, cert_err) {
        (Trust::Pin(p), true) => Error::new(
            ErrorKind::Protocol,
            format!(
                "TLS: {addr}'s certificate has SHA-256 {got}, not the pinned {}",
                hex(p)
            ),
        )
        .with_hint("if the server's certificate changed on purpose, pin the new one (its 'serve' prints it)"),
        (Trust::FirstUse(file), true) => Error::new(
            ErrorKind::Protocol,
            format!(
                "TLS: {key}'s certificate changed: SHA-256 {got}, but {} line {} holds {}",
                file.display(),
                stored.map_or(0, |s| s.1),
                stored.map(|s| hex(&s.0)).unwrap_or_default()
            ),
        )
        .with_hint(format!(
            "someone may be in the middle; if the server's certificate was replaced on purpose, delete that line of {}",
            file.display()
        )),
        (Trust::Ca(file), true) => Error::new(
            ErrorKind::Protocol,
            format!(
                "TLS: {addr}'s certificate failed the check against --ca {}: {}",
                file.display(),
                rustls_err.map(|r| r.to_string()).unwrap_or_default()
            ),
        )
        .with_hint("give the CA that signed the server's certificate, or --pin its fingerprint"),
        _ => Error::new(
            ErrorKind::Protocol,
            format!(
                "TLS handshake with {addr} failed: {}",
                rustls_err.map_or_else(|| e.to_string(), |r| r.to_string())
            ),
        )
        .with_hint("is that the server's TLS port (serve --tls-port, default 5443), and does it serve TLS?"),
    }
}

/// A client connection: plain TCP or TLS over it. Cloned handles share one
/// TLS session (the interactive chat reads on one thread and writes on
/// another); a reader holds it only briefly at a time.
pub struct Stream {
    inner: Inner,
    read_timeout: Option<Duration>,
    /// Trusted on first use just now: the fingerprint stored.
    pub first_use: Option<String>,
}

enum Inner {
    Plain(TcpStream),
    Tls(Arc<Mutex<StreamOwned<ClientConnection, TcpStream>>>),
}

impl Stream {
    /// A plain TCP connection.
    pub fn plain(s: TcpStream) -> Stream {
        Stream {
            inner: Inner::Plain(s),
            read_timeout: None,
            first_use: None,
        }
    }

    fn tls(s: StreamOwned<ClientConnection, TcpStream>) -> Stream {
        Stream {
            inner: Inner::Tls(Arc::new(Mutex::new(s))),
            read_timeout: None,
            first_use: None,
        }
    }

    /// Whether this is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// Another handle on the same connection.
    ///
    /// # Errors
    /// The OS error of cloning the socket.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream {
            inner: match &self.inner {
                Inner::Plain(s) => Inner::Plain(s.try_clone()?),
                Inner::Tls(t) => Inner::Tls(Arc::clone(t)),
            },
            read_timeout: self.read_timeout,
            first_use: None,
        })
    }

    /// Shut the connection (a TLS session says close_notify first).
    pub fn shutdown(&self, how: std::net::Shutdown) {
        match &self.inner {
            Inner::Plain(s) => {
                let _ = s.shutdown(how);
            }
            Inner::Tls(t) => {
                if let Ok(mut g) = Self::lock(t) {
                    g.conn.send_close_notify();
                    let _ = g.flush();
                    let _ = g.sock.shutdown(how);
                }
            }
        }
    }

    fn lock(
        t: &Mutex<StreamOwned<ClientConnection, TcpStream>>,
    ) -> io::Result<MutexGuard<'_, StreamOwned<ClientConnection, TcpStream>>> {
        t.lock()
            .map_err(|_| io::Error::other("TLS session poisoned by a panic"))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match &self.inner {
            Inner::Plain(s) => return (&*s).read(buf),
            Inner::Tls(t) => t,
        };
        let until = self.read_timeout.map(|d| Instant::now() + d);
        loop {
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            {
                let mut g = Self::lock(t)?;
                let slice = left.map_or(LOCK_SLICE, |l| l.min(LOCK_SLICE));
                g.sock
                    .set_read_timeout(Some(slice.max(Duration::from_micros(100))))?;
                match g.read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if is_wait(&e) => {}
                    // A peer that closes without close_notify: the end, as for TCP.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            if left.is_some_and(|l| l.is_zero()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // Let a writer on another thread take the session.
            std::thread::yield_now();
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Plain(s) => (&*s).write(buf),
            Inner::Tls(t) => {
                let mut g = Self::lock(t)?;
                let n = g.write(buf)?;
                g.flush()?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.inner {
            Inner::Plain(s) => (&*s).flush(),
            Inner::Tls(t) => Self::lock(t)?.flush(),
        }
    }
}

impl LineStream for Stream {
    fn set_read_timeout(&mut self, d: Option<Duration>) -> io::Result<()> {
        self.read_timeout = d;
        match &self.inner {
            Inner::Plain(s) => s.set_read_timeout(d),
            Inner::Tls(_) => Ok(()),
        }
    }

    fn set_write_timeout(&mut self, d: Option<Duration>) -> io::Result<()> {
        match &self.inner {
            Inner::Plain(s) => s.set_write_timeout(d),
            Inner::Tls(t) => Self::lock(t)?.sock.set_write_timeout(d),
        }
    }

    fn peer(&self) -> String {
        match &self.inner {
            Inner::Plain(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            Inner::Tls(t) => Self::lock(t)
                .ok()
                .and_then(|g| g.sock.peer_addr().ok())
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

/// A connection handed to a non-blocking loop (the bulk test): plain TCP,
/// or the TLS session driven by the caller's poll (records are pushed as
/// the socket takes them, never waited for).
pub enum Wire {
    /// Plain TCP.
    Plain(mio::net::TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsWire>),
}

/// The TLS side of a [`Wire`].
pub struct TlsWire {
    sock: mio::net::TcpStream,
    conn: ClientConnection,
    /// TCP's end came.
    eof: bool,
    /// Our close_notify is queued: shut the TCP write side once it is out.
    closing: bool,
    shut: bool,
}

impl Stream {
    /// This connection, non-blocking, for a caller's poll. The TLS session
    /// (with any plaintext already decrypted) goes with it.
    ///
    /// # Errors
    /// Setting the socket non-blocking; a TLS session another handle still
    /// shares.
    pub fn into_wire(self) -> io::Result<Wire> {
        match self.inner {
            Inner::Plain(s) => {
                s.set_nonblocking(true)?;
                Ok(Wire::Plain(mio::net::TcpStream::from_std(s)))
            }
            Inner::Tls(t) => {
                let owned = Arc::try_unwrap(t)
                    .map_err(|_| io::Error::other("the TLS session has another handle"))?
                    .into_inner()
                    .map_err(|_| io::Error::other("TLS session poisoned by a panic"))?;
                let (conn, sock) = owned.into_parts();
                sock.set_nonblocking(true)?;
                Ok(Wire::Tls(Box::new(TlsWire {
                    sock: mio::net::TcpStream::from_std(sock),
                    conn,
                    eof: false,
                    closing: false,
                    shut: false,
                })))
            }
        }
    }
}

/// Reads of TLS records per [`Wire::read`] before it gives the loop a turn.
const WIRE_RECORDS: usize = 16;

impl Wire {
    /// The socket, to register with a poll.
    pub fn socket(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &mut t.sock,
        }
    }

    /// Read plaintext: `Ok(0)` at the end (TCP end or close_notify),
    /// `WouldBlock` when the socket has nothing, `Interrupted` when more
    /// records may wait (call again).
    ///
    /// # Errors
    /// The socket's, or `InvalidData` when the peer broke the protocol.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Wire::Plain(s) => return s.read(buf),
            Wire::Tls(t) => t,
        };
        let r = crate::tls::read_plain(&mut t.conn, &mut t.sock, buf, &mut t.eof, WIRE_RECORDS);
        t.finish_close();
        r
    }

    /// Write plaintext; `WouldBlock` when neither the session's buffer nor
    /// the socket takes more.
    ///
    /// # Errors
    /// The socket's.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = match self {
            Wire::Plain(s) => return s.write(buf),
            Wire::Tls(t) => t,
        };
        t.push()?;
        let n = t.conn.writer().write(buf)?;
        t.push()?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// End our direction: TCP's FIN, or TLS close_notify and then the FIN
    /// once every record is out ([`Wire::pump`] finishes it).
    pub fn shutdown_write(&mut self) {
        match self {
            Wire::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Wire::Tls(t) => {
                t.conn.send_close_notify();
                t.closing = true;
                let _ = t.push();
            }
        }
    }

    /// Push TLS records the socket now takes (and a pending shutdown).
    ///
    /// # Errors
    /// The socket's.
    pub fn pump(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(_) => Ok(()),
            Wire::Tls(t) => t.push(),
        }
    }
}

impl TlsWire {
    fn push(&mut self) -> io::Result<()> {
        crate::tls::write_records(&mut self.conn, &mut self.sock)?;
        self.finish_close();
        Ok(())
    }

    /// After our close_notify went out, the TCP FIN.
    fn finish_close(&mut self) {
        if self.closing && !self.shut && !self.conn.wants_write() {
            self.shut = true;
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
        }
    }
}
