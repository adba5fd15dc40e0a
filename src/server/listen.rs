//! The accept loop: every connection of the one listener, with the limits `axum::serve` does
//! not offer. A client must finish a request's headers within the header timeout (a slowloris
//! holding connections open with half-sent headers is cut off), at most `max_connections` are
//! served at once (further clients wait in the kernel's backlog), and a shutdown gives open
//! connections a short grace, then ends them (a WebSocket or an agent stream never finishes
//! on its own).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Default time a client has to send a request's headers: 10 s.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most connections served at once: 4096.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long open connections may take to finish after a shutdown: 3 s.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Largest HTTP/2 DATA frame peers may send us: 64 KiB instead of the protocol's default
/// 16 KiB, so that an agent's output frame (up to 32 KiB of a PTY read) arrives as one DATA
/// frame, read and gathered once, rather than as two or three.
const MAX_FRAME_BYTES: u32 = 64 * 1024;

/// Connection limits (`cmdop server --header-timeout`, `--max-connections`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Longest a client may take to send a request's headers (and its first bytes).
    pub(crate) header_timeout: Duration,
    /// Most connections served at once.
    pub(crate) max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self { header_timeout: DEFAULT_HEADER_TIMEOUT, max_connections: DEFAULT_MAX_CONNECTIONS }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then for at most `SHUTDOWN_GRACE`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).max_frame_size(MAX_FRAME_BYTES);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Keystrokes are tiny writes: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let (builder, header_timeout) = (builder.clone(), limits.header_timeout);
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _slot = slot;
            // Nothing at all within the header timeout: not a client worth a slot.
            if !first_bytes_within(&tcp, header_timeout).await {
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting at once: new clients are refused (and go to another node) while the open
    // connections drain.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::info!("connections still open after the shutdown grace; closing them");
    }
    connections.abort_all();
}

/// Whether the client sent something within `within` (before protocol detection, which has no
/// timeout of its own).
async fn first_bytes_within(tcp: &TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, tcp.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}
