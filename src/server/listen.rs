//! The accept loop: every connection of the one listener, with the limits `axum::serve` does
//! not offer. A client must finish a request's headers within the header timeout (a slowloris
//! holding connections open with half-sent headers is cut off), at most `max_connections` are
//! served at once (further clients wait in the kernel's backlog), and a shutdown gives open
//! connections a short grace, then ends them (a WebSocket or an agent stream never finishes
//! on its own).
//!
//! A client that opens with HTTP/2's prior-knowledge preface (agents, nodes, gRPC clients: the
//! server has no TLS of its own, a proxy terminates it) is served by `http2`; anything else
//! (HTTP/1.1, WebSocket upgrades) by hyper.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::http2::{self, Apps, HotRoutes};
use crate::core::http2::frame::PREFACE;

/// Default time a client has to send a request's headers: 10 s.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most connections served at once: 4096.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long open connections may take to finish after a shutdown: 3 s.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long to wait before looking again at a preface that arrived in part (rare: clients
/// write it whole).
const PREFACE_RETRY: Duration = Duration::from_millis(5);

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

/// Serves `app` on `listener` (and the hot streams of `hot` on HTTP/2 connections) until
/// `shutdown` resolves, then for at most `SHUTDOWN_GRACE`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    hot: Arc<dyn HotRoutes>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection holds a receiver while it serves: it drains when it turns true, and the
    // sender closes once they all ended.
    let draining = Arc::new(watch::Sender::new(false));
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
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        let (builder, deadline, hot) = (builder.clone(), Instant::now() + limits.header_timeout, hot.clone());
        let draining = draining.subscribe();
        connections.spawn(async move {
            // Both held until the connection ends: its place under the limit, and a receiver
            // the listener's drain waits on (the one the connection takes may go once it has
            // seen the drain begin).
            let (_slot, _open) = (slot, draining.clone());
            // Nothing at all within the header timeout: not a client worth a slot.
            if !first_bytes_before(&tcp, deadline).await {
                return;
            }
            if http2_preface_before(&tcp, deadline).await {
                return http2::serve_connection(tcp, peer, Apps { app, hot }, draining).await;
            }
            serve_http1(&builder, tcp, app, draining).await.unwrap_or_else(|e| {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            });
        });
    }
    // Stop accepting at once: new clients are refused (and go to another node) while the open
    // connections drain.
    drop(listener);
    draining.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, draining.closed()).await.is_err() {
        tracing::info!("connections still open after the shutdown grace; closing them");
    }
    connections.abort_all();
}

/// Serves one HTTP/1.1 connection (WebSocket upgrades included) until it closes; once
/// `draining` turns true it finishes the request in flight and closes. hyper's own HTTP/1.1
/// connection rather than hyper-util's auto-detecting one: HTTP/2 never reaches it, and its
/// WebSocket upgrades hand back our `TcpStream` (`server::http::ws`), not a wrapper.
async fn serve_http1(
    builder: &http1::Builder,
    tcp: TcpStream,
    app: Router,
    mut draining: watch::Receiver<bool>,
) -> hyper::Result<()> {
    let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app)).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        // An error means the listener is gone: draining as well.
        _ = draining.wait_for(|d| *d) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Whether the client sent something before `deadline` (before protocol detection, which has
/// no timeout of its own).
async fn first_bytes_before(tcp: &TcpStream, deadline: Instant) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout_at(deadline, tcp.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}

/// Whether the client's first bytes are HTTP/2's prior-knowledge preface, read (not consumed)
/// before `deadline`; anything else goes to hyper, which tells HTTP/1 requests apart.
async fn http2_preface_before(tcp: &TcpStream, deadline: Instant) -> bool {
    let sniff = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = tcp.peek(&mut buf).await.unwrap_or(0);
            if n == 0 || buf[..n] != PREFACE[..n] {
                return false;
            }
            if n == PREFACE.len() {
                return true;
            }
            // A peek returns at once while any byte is waiting: give the rest time to come.
            tokio::time::sleep(PREFACE_RETRY).await;
        }
    };
    tokio::time::timeout_at(deadline, sniff).await.unwrap_or(false)
}
