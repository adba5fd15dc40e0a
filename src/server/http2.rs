//! The server's HTTP/2 connections (prior knowledge: a proxy in front terminates TLS), our
//! own implementation of RFC 9113's server side over `core::http2` (frames, HPACK).
//!
//! Why: per keystroke `h2` ran its framed reader and writer, a streams mutex, prioritisation
//! and stream-state bookkeeping, a third of the server's instructions (docs/performance.md,
//! issue 18). The hot path needs far less: read one DATA frame for a hot stream's pump, write
//! one for its response. Here the connection's task reads the socket into one buffer, hands
//! a DATA payload to its reader as a slice of that buffer, and writes what the streams queued
//! with one vectored write. The hot streams (`HotRoutes`: the agents' `Relay.Link`, the nodes'
//! `Peer.Link`) live in the connection's task once open: their response body and their pump
//! are polled there, each only when its own waker fired. Opening a hot stream (authentication,
//! the hello, the route claim) runs in a task of its own, as does every other request (tonic's
//! services, axum's routes); their response bodies are polled in the connection's task too.
//!
//! Layout: `driver` (the task: socket, rounds), `conn` (frames in, the connection's state and
//! guards; `conn::headers`: header blocks), `stream` (one stream: handler, response, pump),
//! `body` (the request body), `request` (header blocks to requests, responses to blocks),
//! `write` (the outgoing bytes), `wake` (who has work).

mod body;
mod conn;
mod driver;
mod request;
mod stream;
mod wake;
mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use tokio::net::TcpStream;
use tokio::sync::watch;

// The connection's limits: hyper's HTTP/2 server defaults (hyper 1.x `proto/h2/server.rs`),
// which served these connections before, except the frame size.
/// Receive window of each stream: 1 MiB (a slow handler holds a client to this much).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window of the connection, all streams together: 1 MiB.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// A stream's WINDOW_UPDATE goes out once its reader took this much: half its window.
const STREAM_RELEASE_BYTES: usize = STREAM_WINDOW as usize / 2;
/// The connection's WINDOW_UPDATE goes out once readers took this much: half its window.
const CONNECTION_RELEASE_BYTES: usize = CONNECTION_WINDOW as usize / 2;
/// Largest HTTP/2 DATA frame peers may send us: 64 KiB instead of the protocol's default
/// 16 KiB, so that an agent's output frame (up to 32 KiB of a PTY read) arrives as one DATA
/// frame, read and gathered once, rather than as two or three.
pub(crate) const MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Streams a client may have open at once on one connection: 200 (REFUSED_STREAM beyond).
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Largest header block a client may send, decoded: 16 KiB.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Largest header block a client may send, encoded, across its CONTINUATION frames: 64 KiB
/// (the CONTINUATION flood guard; beyond it the connection closes, ENHANCE_YOUR_CALM).
const MAX_HEADER_BLOCK_BYTES: usize = 64 * 1024;
/// Most CONTINUATION frames of one header block (empty ones cost work without bytes): 64.
const MAX_CONTINUATION_FRAMES: usize = 64;
/// Most bytes queued for the socket: 400 KiB. Beyond it response bodies wait and the socket
/// is not read (a client that asks for answers, pings say, faster than it reads them waits).
const MAX_SEND_BUFFER_BYTES: usize = 400 * 1024;
/// Streams this server may reset for a client's protocol errors before it closes the
/// connection (a guard against reset floods): 1024.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams a client may reset before their response, beyond the responses it let through
/// (the "rapid reset" guard): 20, h2's default.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Empty DATA frames without END_STREAM in a row before the connection closes: 100.
const MAX_EMPTY_DATA_FRAMES: usize = 100;
/// Streams this server reset whose late frames are still ignored quietly: 128.
const RECENT_RESETS: usize = 128;
/// A wake-up handles at most this many rounds of socket and stream work before it yields, so
/// one busy connection does not hold a runtime thread.
const MAX_ROUNDS: usize = 32;

/// A hot stream's start: the response (the stream's outbound body, or a refusal) and the
/// future that reads the client's messages, run in the connection's task.
pub(crate) struct Served {
    pub(crate) response: Response<Body>,
    pub(crate) pump: Option<Pump>,
}

/// A hot stream's inbound side: reads the request body until the stream ends.
pub(crate) type Pump = Pin<Box<dyn Future<Output = ()> + Send>>;
/// The opening of a hot stream, run in a task of its own.
pub(crate) type Opening = Pin<Box<dyn Future<Output = Served> + Send>>;

/// The streams served in the connection's task.
pub(crate) trait HotRoutes: Send + Sync + 'static {
    /// The opening of `req`'s stream if its path is a hot stream's; the request back if not.
    fn open(&self, req: Request<Body>) -> Result<Opening, Box<Request<Body>>>;
}

/// What one connection serves with: `app` for every request, `hot` for the hot streams.
#[derive(Clone)]
pub(crate) struct Apps {
    pub(crate) app: Router,
    pub(crate) hot: Arc<dyn HotRoutes>,
}

/// Serves one HTTP/2 connection whose client sent the prior-knowledge preface, until it
/// closes; when `draining` turns true it sends GOAWAY and ends once its streams have.
pub(crate) async fn serve_connection(tcp: TcpStream, peer: SocketAddr, apps: Apps, draining: watch::Receiver<bool>) {
    driver::Driver::new(tcp, apps, draining).await;
    tracing::trace!(%peer, "HTTP/2 connection ended");
}

#[cfg(test)]
mod frame_tests;
#[cfg(test)]
mod tests;
