//! The server's HTTP/2 connections (prior knowledge: a proxy in front terminates TLS), driven
//! with `h2` directly instead of hyper.
//!
//! Why: per keystroke hyper ran its connection task, a body "pipe" task per stream between the
//! hot stream's outbound queue and h2, and our pump task reading the request body. Here the
//! hot streams (`HotRoutes`: the agents' `Relay.Link`, the nodes' `Peer.Link`) live in the
//! connection's task once open: their outbound queue is polled and handed to h2, and their
//! pump reads what the connection just received, all in the task that reads and writes the
//! socket. Each stream is woken on its own (one future per stream in a `FuturesUnordered`),
//! so a node-to-node connection with many streams polls only the streams that have work.
//! Opening a hot stream (authentication, the hello, the route claim) runs in a task of its
//! own, as does every other request (tonic's services, axum's routes), as hyper runs them.

mod body;

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use h2::RecvStream;
use h2::server::{Connection, SendResponse};
use http::{Request, Response, header};
use http_body::Body as _;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::codegen::Service;

use body::{Pipe, RecvBody};

use crate::sys::task::{AbortOnDrop, WakeFilter, WhenWoken};

// The connection's limits: hyper's HTTP/2 server defaults (hyper 1.x `proto/h2/server.rs`),
// which served these connections before, except the frame size.
/// Receive window of each stream: 1 MiB (a slow handler holds a client to this much).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window of the connection, all streams together: 1 MiB.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Largest HTTP/2 DATA frame peers may send us: 64 KiB instead of the protocol's default
/// 16 KiB, so that an agent's output frame (up to 32 KiB of a PTY read) arrives as one DATA
/// frame, read and gathered once, rather than as two or three.
pub(crate) const MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Streams a client may have open at once on one connection: 200.
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Largest header block a client may send, decoded: 16 KiB.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Most bytes h2 holds per stream beyond the client's window: 400 KiB (then a response body
/// waits for the client to read).
const MAX_SEND_BUFFER_BYTES: usize = 400 * 1024;
/// Streams this server may reset for a client's protocol errors before it closes the
/// connection (a guard against reset floods): 1024.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams a client may reset before this server accepted them, at once (the "rapid reset"
/// guard): 20, h2's default.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
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
/// A hot stream served in the connection's task, from its opening to its end.
type StreamTask = Pin<Box<dyn Future<Output = ()> + Send>>;
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

fn builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buffer_size(MAX_SEND_BUFFER_BYTES)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
    builder
}

/// Serves one HTTP/2 connection whose client sent the prior-knowledge preface, until it
/// closes; when `draining` turns true it sends GOAWAY and ends once its streams have.
pub(crate) async fn serve_connection(tcp: TcpStream, peer: SocketAddr, apps: Apps, draining: watch::Receiver<bool>) {
    let conn = match builder().handshake::<_, Bytes>(tcp).await {
        Ok(conn) => conn,
        Err(e) => return tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed"),
    };
    Driver::new(conn, apps, draining).await;
}

/// The connection's task: accepts streams, drives the socket, and polls the hot streams.
struct Driver {
    conn: Option<Connection<TcpStream, Bytes>>,
    apps: Apps,
    streams: FuturesUnordered<StreamTask>,
    draining: Option<WhenWoken<'static, ()>>,
    wakes: Arc<Wakes>,
    conn_waker: Waker,
    streams_waker: Waker,
}

impl Driver {
    fn new(conn: Connection<TcpStream, Bytes>, apps: Apps, mut draining: watch::Receiver<bool>) -> Self {
        let draining = WhenWoken::new(async move {
            // An error means the listener is gone: draining as well.
            let _ = draining.wait_for(|d| *d).await;
        });
        let wakes = Wakes::new();
        let conn_waker = Waker::from(Arc::new(PartWaker { wakes: wakes.clone(), streams: false }));
        let streams_waker = Waker::from(Arc::new(PartWaker { wakes: wakes.clone(), streams: true }));
        let streams = FuturesUnordered::new();
        Self { conn: Some(conn), apps, streams, draining: Some(draining), wakes, conn_waker, streams_waker }
    }

    /// Takes the streams the client opened (polling the connection reads and writes the
    /// socket); drops the connection once it has ended.
    fn accept(&mut self, cx: &mut Context<'_>) {
        let Some(conn) = self.conn.as_mut() else { return };
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    route(&self.apps, &mut self.streams, req, respond);
                    // A stream just pushed is polled at the next round.
                    self.wakes.streams.woken.store(true, Ordering::SeqCst);
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
                    break;
                }
                Poll::Ready(None) => break,
                Poll::Pending => return,
            }
        }
        // Dropping the connection fails its open streams, so their futures end.
        self.conn = None;
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.wakes.task.register(cx.waker());
        if let Some(draining) = this.draining.as_mut()
            && Pin::new(draining).poll(cx).is_ready()
        {
            this.draining = None;
            this.wakes.conn.woken.store(true, Ordering::SeqCst);
            if let Some(conn) = this.conn.as_mut() {
                conn.graceful_shutdown();
            }
        }
        let (streams_waker, conn_waker) = (this.streams_waker.clone(), this.conn_waker.clone());
        this.wakes.polling.store(true, Ordering::SeqCst);
        for _ in 0..MAX_ROUNDS {
            // The streams first: what they hand to h2 goes out in the connection's poll below.
            if this.wakes.streams.take() {
                while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(&mut Context::from_waker(&streams_waker))
                {
                }
            }
            if this.wakes.conn.take() {
                this.accept(&mut Context::from_waker(&conn_waker));
            }
            if this.conn.is_none() && this.streams.is_empty() {
                return Poll::Ready(());
            }
            if !this.wakes.any() {
                this.wakes.polling.store(false, Ordering::SeqCst);
                // A wake-up between the check and the store went unseen: look once more.
                if !this.wakes.any() {
                    return Poll::Pending;
                }
                this.wakes.polling.store(true, Ordering::SeqCst);
            }
        }
        this.wakes.polling.store(false, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Aborted (the shutdown grace ran out): the hot streams still owe their ends (a
        // route released, a session told); they finish in tasks of their own.
        self.conn = None;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for stream in std::mem::take(&mut self.streams) {
                runtime.spawn(stream);
            }
        }
    }
}

/// Who has work in the connection's task: h2's connection (socket readiness, data the streams
/// handed it) and the hot streams. Each has its own waker and flag, so a wake-up polls only
/// what was woken; a wake-up during the task's poll asks for one more round of that part
/// instead of another run of the task (the streams' writes wake the connection, the
/// connection's reads wake the streams).
struct Wakes {
    conn: Flag,
    streams: Flag,
    /// The task is polling: wake-ups only set flags.
    polling: AtomicBool,
    task: AtomicWaker,
}

impl Wakes {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            conn: Flag::new(),
            streams: Flag::new(),
            polling: AtomicBool::new(false),
            task: AtomicWaker::new(),
        })
    }

    fn any(&self) -> bool {
        self.conn.woken.load(Ordering::SeqCst) || self.streams.woken.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// One part's wake-up flag; set at first, so the first poll polls everything.
struct Flag {
    woken: AtomicBool,
}

impl Flag {
    fn new() -> Self {
        Self { woken: AtomicBool::new(true) }
    }

    /// Whether the part was woken, clearing the flag before the part is polled.
    fn take(&self) -> bool {
        self.woken.swap(false, Ordering::SeqCst)
    }
}

/// The waker of one part.
struct PartWaker {
    wakes: Arc<Wakes>,
    streams: bool,
}

impl Wake for PartWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let flag = if self.streams { &self.wakes.streams } else { &self.wakes.conn };
        flag.woken.store(true, Ordering::SeqCst);
        self.wakes.wake();
    }
}

/// A hot stream goes into the connection's task; any other request to a task of its own.
fn route(
    apps: &Apps,
    streams: &mut FuturesUnordered<StreamTask>,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let req = req.map(|recv| Body::new(RecvBody::new(recv)));
    match apps.hot.open(req) {
        Ok(opening) => streams.push(Box::pin(serve_hot(opening, respond))),
        Err(req) => {
            tokio::spawn(serve_request(apps.app.clone(), *req, respond));
        }
    }
}

/// Serves a request with `app`: the handler is dropped if the client resets the stream or the
/// connection goes away before the response.
async fn serve_request(mut app: Router, req: Request<Body>, mut respond: SendResponse<Bytes>) {
    let call = async move {
        poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut app, cx)).await?;
        app.call(req).await
    };
    let Some(Ok(response)) = until_reset(&mut respond, call).await else { return };
    if let Some(pipe) = start_response(&mut respond, response)
        && let Err(e) = pipe.await
    {
        tracing::debug!(error = %e, "response not sent to its end");
    }
}

/// Serves a hot stream: opens it in a task of its own, then sends its response and runs its
/// pump here.
async fn serve_hot(opening: Opening, mut respond: SendResponse<Bytes>) {
    let Some(Ok(Served { response, pump })) = until_reset(&mut respond, AbortOnDrop::spawn(opening)).await else {
        return;
    };
    let pipe = start_response(&mut respond, response);
    let pipe = if pump.is_some() { pipe.map(Pipe::ignoring_resets) } else { pipe };
    HotStream { pipe, pipe_wake: WakeFilter::new(), pump, pump_wake: WakeFilter::new() }.await;
}

/// An open hot stream: its response's pipe and its pump, each polled only when woken.
struct HotStream {
    pipe: Option<Pipe>,
    pipe_wake: WakeFilter,
    pump: Option<Pump>,
    pump_wake: WakeFilter,
}

impl Future for HotStream {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(pump) = this.pump.as_mut()
            && this.pump_wake.poll(cx, |cx| pump.as_mut().poll(cx)).is_ready()
        {
            this.pump = None;
            // No pump left to notice a reset: the pipe must.
            if let Some(pipe) = this.pipe.as_mut() {
                pipe.watch_resets();
                this.pipe_wake.rearm();
            }
        }
        if let Some(pipe) = this.pipe.as_mut()
            && let Poll::Ready(sent) = this.pipe_wake.poll(cx, |cx| Pin::new(pipe).poll(cx))
        {
            if let Err(e) = sent {
                tracing::debug!(error = %e, "stream's response not sent to its end");
            }
            this.pipe = None;
        }
        if this.pipe.is_none() && this.pump.is_none() { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// `fut`'s output, or `None` once the client reset the stream (or the connection is gone).
async fn until_reset<F: Future>(respond: &mut SendResponse<Bytes>, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        respond.poll_reset(cx).map(|_| None)
    })
    .await
}

/// Sends the response's headers; the pipe for its body unless it has none.
fn start_response(respond: &mut SendResponse<Bytes>, response: Response<Body>) -> Option<Pipe> {
    let (mut parts, body) = response.into_parts();
    let end = body.is_end_stream();
    if !end && let Some(len) = body.size_hint().exact() {
        parts.headers.entry(header::CONTENT_LENGTH).or_insert_with(|| len.into());
    }
    match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(tx) if !end => Some(Pipe::new(body, tx)),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "response headers not sent");
            None
        }
    }
}

#[cfg(test)]
mod tests;
