//! Where a server URL points and the byte stream to it: TCP with Nagle off (keystrokes go out
//! at once), TLS with ALPN `h2` for `https://`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::Status;

use super::status::unreachable_at;

/// As `sys::dial` for tonic's endpoints: a server that does not accept within this is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a server URL points: what to dial and the requests' scheme and authority.
pub(super) struct Target {
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) port: u16,
    /// `scheme://authority`, the prefix of every request's URI.
    base: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Self, Status> {
        let invalid = || {
            Status::invalid_argument(format!("invalid server URL {url:?}: expected http://HOST:PORT or https://HOST"))
        };
        let parsed: Uri = url.parse().map_err(|_| invalid())?;
        let tls = match parsed.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid()),
        };
        let authority = parsed.authority().ok_or_else(invalid)?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "https" } else { "http" };
        Ok(Self { tls, host, port, base: format!("{scheme}://{authority}") })
    }

    /// `scheme://authority`, for messages.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// The URI of the method at `path` (`/<package>.<service>/<method>`).
    pub(super) fn uri(&self, path: &str) -> Result<Uri, Status> {
        format!("{}{path}", self.base).parse().map_err(|_| Status::internal(format!("invalid method path {path:?}")))
    }

    /// TCP (Nagle off), then TLS with ALPN `h2` for `https`.
    pub(super) async fn connect(&self, url: &str) -> Result<Io, Status> {
        let dial = TcpStream::connect((self.host.as_str(), self.port));
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(tcp) => tcp.map_err(|e| unreachable_at(url, e))?,
            Err(_) => return Err(unreachable_at(url, "timed out")),
        };
        tcp.set_nodelay(true).map_err(|e| unreachable_at(url, e))?;
        if !self.tls {
            return Ok(Io::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| Status::invalid_argument(format!("invalid server name in {url:?}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config().map_err(|e| unreachable_at(url, e))?);
        let tls = match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(tls) => tls.map_err(|e| unreachable_at(url, e))?,
            Err(_) => return Err(unreachable_at(url, "the TLS handshake timed out")),
        };
        Ok(Io::Tls(Box::new(tls)))
    }
}

/// rustls with the system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` override them, as for
/// tonic's endpoints) and ALPN `h2`, built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificate found on this machine: install the ca-certificates package (or set SSL_CERT_FILE)".to_string());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot set up TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// The connection's byte stream: plain TCP or TLS over it.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_targets_and_method_uris() {
        let t = Target::parse("https://relay.example.com").unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("relay.example.com", 443));
        let link = "/cmdop.relay.v1.Relay/Link";
        assert_eq!(t.uri(link).unwrap().to_string(), "https://relay.example.com/cmdop.relay.v1.Relay/Link");
        let t = Target::parse("http://[::1]:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8080, false));
        assert_eq!(t.uri(link).unwrap().to_string(), "http://[::1]:8080/cmdop.relay.v1.Relay/Link");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("relay:443").is_err());
    }
}
