//! Client-side connection set-up shared by the agent and the CLI: one HTTP/2 endpoint per
//! server URL, TLS (rustls with the system's roots) for `https://`, Nagle off for keystrokes.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Installs rustls's ring provider as the process default (reqwest and tonic both use it).
/// Idempotent; call once at start-up.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An endpoint for `url` with the options every client wants.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|_| format!("invalid server URL {url:?}: expected http://HOST:PORT or https://HOST"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| format!("cannot set up TLS for {url}: {e}"))?;
    }
    Ok(endpoint)
}

/// Connects to `url`.
pub async fn connect(url: &str) -> Result<Channel, String> {
    endpoint(url)?.connect().await.map_err(|e| format!("cannot reach the server at {url}: {e}"))
}

/// An HTTP client for the OAuth endpoints (form posts, JSON answers), with a deadline.
pub fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap_or_default()
}
