//! Where the Docker API takes connections: a unix socket, or TCP with TLS
//! (rustls), verifying client certificates against a CA when one is
//! configured, as dockerd's `--tlsverify`. Plain TCP only when the config
//! explicitly allows it ([`crate::config::DockerConfig::listen_on`]).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::DockerConfig;

/// A connection of any kind.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Conn = Pin<Box<dyn Io>>;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

pub enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener, Option<TlsAcceptor>),
}

/// One accepted connection, before its TLS handshake (done in the
/// connection's own task, so a slow client holds up no one else).
pub enum Accepted {
    Ready(Conn),
    Tls(TlsAcceptor, tokio::net::TcpStream),
}

impl Listener {
    pub async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Unix(l) => Ok(Accepted::Ready(Box::pin(l.accept().await?.0))),
            Listener::Tcp(l, tls) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(match tls {
                    Some(a) => Accepted::Tls(a.clone(), s),
                    None => Accepted::Ready(Box::pin(s)),
                })
            }
        }
    }
}

impl Accepted {
    /// The connection, its TLS handshake done.
    pub async fn ready(self) -> std::io::Result<Conn> {
        match self {
            Accepted::Ready(c) => Ok(c),
            Accepted::Tls(a, s) => {
                let tls = tokio::time::timeout(HANDSHAKE, a.accept(s))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                Ok(Box::pin(tls))
            }
        }
    }
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[docker] {key}: {reason}")]
pub struct TlsError {
    pub key: &'static str,
    pub reason: String,
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError { key, reason: format!("read certificates from {}: {e}", path.display()) })?;
    if certs.is_empty() {
        return Err(TlsError { key, reason: format!("{}: no PEM certificate in it", path.display()) });
    }
    Ok(certs)
}

/// The TLS acceptor of the config's `tls_cert`/`tls_key`, requiring
/// client certificates signed by `tls_ca` when it is set; None without
/// TLS settings.
pub fn tls_acceptor(cfg: &DockerConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else { return Ok(None) };
    let chain = certs("tls_cert", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError {
        key: "tls_key",
        reason: format!("read a PEM private key from {}: {e}", key.display()),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError { key: "tls_cert", reason: e.to_string() })?;
    let builder = match &cfg.tls_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("tls_ca", ca)? {
                roots.add(c).map_err(|e| TlsError { key: "tls_ca", reason: format!("{}: {e}", ca.display()) })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError { key: "tls_ca", reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError { key: "tls_key", reason: format!("does not go with tls_cert: {e}") })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
