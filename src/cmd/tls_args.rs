//! The TLS words of the line clients (`echo --tls`, `chat --tls`): one
//! definition of `--tls`, `--ca` and `--pin`, and the one connect that
//! honours them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::Result;
use crate::net::Endpoint;
use crate::net::client::{self, ClientCtx};
use crate::net::tls::{Stream, Trust};
use crate::session::Session;

/// `--tls --ca --pin`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Over TLS, to the server's TLS port (default 5443); without --ca or --pin the
    /// certificate is trusted on first use (DATA/known_hosts)
    #[arg(long)]
    pub tls: bool,
    /// TLS: trust the CA certificates in FILE (PEM); name and dates are checked (implies --tls)
    #[arg(long, value_name = "FILE", conflicts_with = "pin")]
    pub ca: Option<PathBuf>,
    /// TLS: the server's certificate must have this SHA-256 fingerprint, as
    /// 'serve --tls-self-signed' prints (implies --tls)
    #[arg(long, value_name = "SHA256", value_parser = crate::tls::parse_pin)]
    pub pin: Option<[u8; 32]>,
}

impl TlsArgs {
    /// Whether TLS was asked for (a pin or a CA implies it).
    pub fn on(&self) -> bool {
        self.tls || self.ca.is_some() || self.pin.is_some()
    }

    /// The port a server is reached on when none is written.
    pub fn default_port(&self) -> u16 {
        if self.on() {
            crate::tls::DEFAULT_TLS_PORT
        } else {
            crate::settings::DEFAULT_PORT
        }
    }

    /// The server of `set server`, at the TLS port when TLS is on.
    pub fn default_server(&self, s: &Session) -> Endpoint {
        let mut ep = s.settings.server.clone();
        if self.on() {
            ep.port = crate::tls::DEFAULT_TLS_PORT;
        }
        ep
    }

    fn trust(&self, s: &Session) -> Trust {
        match (&self.pin, &self.ca) {
            (Some(p), _) => Trust::Pin(*p),
            (None, Some(ca)) => Trust::Ca(ca.clone()),
            (None, None) => Trust::FirstUse(s.paths.data_dir.join("known_hosts")),
        }
    }
}

/// Connect to `ep` (telling `note` of slow attempts), then, if TLS is on,
/// shake hands. Returns the stream, the address and the TCP connect time.
///
/// # Errors
/// As [`client::connect_noting`] and [`crate::net::tls::connect`].
pub fn connect(
    ep: &Endpoint,
    ctx: ClientCtx<'_>,
    tls: &TlsArgs,
    s: &mut Session,
) -> Result<(Stream, SocketAddr, Duration)> {
    let (sock, addr, took) = client::connect_noting(ep, ctx, &mut |l| {
        s.emit(l).ok();
    })?;
    if !tls.on() {
        return Ok((Stream::plain(sock), addr, took));
    }
    let trust = tls.trust(s);
    let stream = crate::net::tls::connect(sock, ep, addr, &trust, ctx)?;
    if let (Some(fp), Trust::FirstUse(file)) = (&stream.first_use, &trust) {
        s.emit(&format!(
            "TLS: first connection to {ep}: trusting its certificate, SHA-256 {fp} (stored in {}; compare it with what the server printed, or use --pin)",
            file.display()
        ))
        .ok();
    }
    Ok((stream, addr, took))
}
