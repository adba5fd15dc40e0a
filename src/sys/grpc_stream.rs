//! A gRPC client's bidirectional stream over HTTP/2 driven directly with `h2`: the agent's
//! `Relay.Link` and the edge node's `Peer.Link` are both this, typed by their messages.
//!
//! Why not tonic's client: per message it costs hyper's body "pipe" task between the sender's
//! queue and h2, a decoder, and a copy each way. Here the HTTP/2 connection runs in a task of
//! its own (as hyper runs it: it reads the socket, answers pings, writes what streams queued);
//! the tasks that make messages encode them into their stream's send queue through [`Out`] (no
//! task in between), which the connection task hands to h2 as one DATA frame per wake-up; and
//! the reader takes messages with [`Link::next`], sliced out of h2's buffers. One connection
//! ([`Client`]) carries any number of streams, each with its own queue. A first try owned the
//! connection, the queue and the reads in one task and counted more per key: every outbound
//! frame woke that task, which then polled the whole connection again (docs/performance.md,
//! issue 18).
//!
//! The wire stays plain gRPC (`application/grpc`, length-prefixed protobuf), so servers see
//! what any gRPC client sends. Errors are `tonic::Status`es as a tonic client would report
//! them, so callers map them alike.

mod io;
mod status;

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream, SendStream};
use http::{HeaderMap, Method, Request, StatusCode};
use prost::Message;
use tonic::{Code, Status};

use self::io::{Io, Target};
use self::status::{broken, status_of, status_of_http, unreachable_at};
use crate::core::grpc_frame::{Deframer, FrameError, MAX_MESSAGE, encode_into};
use crate::core::sync::lock;
use crate::sys::task::{AbortOnDrop, WhenWoken};

/// HTTP/2 keepalive: a ping this often, and the connection is dead if its pong takes longer
/// than the timeout (as `sys::dial` sets for tonic's endpoints).
const PING_EVERY: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to answer a stream's request (the relay reads the agent's
/// `Hello` and claims the route first); past it the server is as dead as one missing a
/// keepalive pong.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(40);
/// Receive windows: hyper's client defaults, which tonic's clients used before.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Most bytes h2 holds per stream beyond the server's flow-control window, and the usual
/// bound of a stream's queue (see [`Out`] for why that bound matters).
pub(crate) const SEND_BUFFER: usize = 1024 * 1024;

/// The connection task: ends with the connection (`Ok`: closed cleanly) or with why it broke.
/// Aborted when dropped, so the connection never outlives its owner.
pub(crate) type Connection = AbortOnDrop<Result<(), Status>>;

/// One HTTP/2 connection to a server, on which streams are opened; cheap to clone. Its
/// task ([`Connection`]) must be kept while any of its streams is in use.
#[derive(Clone)]
pub(crate) struct Client {
    send: SendRequest<Bytes>,
    target: Arc<Target>,
    streams: Arc<Streams>,
}

/// Connects to `url` (`http://HOST:PORT` or `https://HOST`) and starts the connection's task.
pub(crate) async fn connect(url: &str) -> Result<(Client, Connection), Status> {
    let target = Target::parse(url)?;
    let io = target.connect(url).await?;
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| unreachable_at(url, e))?;
    let pings = conn.ping_pong().ok_or_else(|| Status::internal("HTTP/2 pings are unavailable"))?;
    let streams = Arc::new(Streams::default());
    let connection = AbortOnDrop::spawn(Driver::new(conn, pings, streams.clone()));
    Ok((Client { send, target: Arc::new(target), streams }, connection))
}

impl Client {
    /// Starts a call of the streaming method at `path` with `headers` beside gRPC's own, sends
    /// `first` at once (a server may read it before it answers) and waits for the response
    /// headers. Returns the stream's reading half and its writing handle, whose senders wait
    /// while `queue_limit` bytes are queued (see [`Out`]); a refusal is the server's status.
    pub(crate) async fn open<O: Message, I: Message + Default>(
        &self,
        path: &str,
        headers: HeaderMap,
        first: Option<&O>,
        queue_limit: usize,
    ) -> Result<(Link<I>, Out<O>), Status> {
        let mut client = self.send.clone().ready().await.map_err(broken)?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.target.uri(path)?)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| Status::internal(format!("cannot build the request: {e}")))?;
        request.headers_mut().extend(headers);
        let (response, mut send) = client.send_request(request, false).map_err(broken)?;
        if let Some(first) = first {
            let mut buf = BytesMut::new();
            encode_into(first, &mut buf);
            send.send_data(buf.freeze(), false).map_err(broken)?;
        }
        let out = Out::new(send, &self.streams, queue_limit);
        let response = match tokio::time::timeout(RESPONSE_TIMEOUT, response).await {
            Ok(response) => response.map_err(broken)?,
            Err(_) => {
                let at = self.target.base();
                return Err(Status::unavailable(format!("the server at {at} did not answer the stream in time")));
            }
        };
        // A trailers-only answer (refused before the stream started) carries the status here.
        if let Some(status) = status_of(response.headers())
            && status.code() != Code::Ok
        {
            return Err(status);
        }
        if response.status() != StatusCode::OK {
            return Err(status_of_http(response.status()));
        }
        let link = Link { recv: response.into_body(), _client: client, frames: Deframer::default(), kind: PhantomData };
        Ok((link, out))
    }
}

/// The connection's task: hands the frames the streams queued to h2, all that one stream
/// queued at that moment as one DATA frame, then drives the connection (socket reads and
/// writes, the server's pings, window updates); pings the server every [`PING_EVERY`]. The
/// keepalive is polled only when its timer or pong woke it, not for every frame the
/// connection moves.
struct Driver {
    conn: h2::client::Connection<Io, Bytes>,
    keepalive: WhenWoken<'static, Status>,
    streams: Arc<Streams>,
    /// The connection's first stream, once opened: looked at on every wake-up.
    first: Option<Arc<Shared>>,
    /// The first stream ended (or the task let go of it): no slot to look at again.
    first_done: bool,
    /// Queues with bytes h2 had no window for yet: tried again at every wake-up (h2 wakes the
    /// task when window comes).
    blocked: Vec<Arc<Shared>>,
    /// The waker h2 gets: the task's, except while this task queues data itself (it polls the
    /// connection right after, so h2's wake-up would only run the task once more for nothing).
    muted: Arc<Muted>,
    waker: Waker,
}

struct Muted {
    on: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Muted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.on.load(Ordering::Acquire) {
            self.task.wake();
        }
    }
}

/// What the connection's task and its streams' senders share.
#[derive(Default)]
struct Streams {
    /// The connection's first stream (the agent's one), until the task takes it. The task
    /// looks at its queue at every wake-up instead of having it listed in `ready`: a sole
    /// stream's messages then cost no list lock or reference count each.
    first: Mutex<Option<Arc<Shared>>>,
    /// Whether the first stream was opened.
    opened: AtomicBool,
    /// Queues of the other streams that got their first bytes since the task last looked
    /// (each listed once: only the send that finds its queue empty lists it).
    ready: Mutex<Vec<Arc<Shared>>>,
    /// Set after a queue was listed in `ready`: the task takes the lock only then.
    listed: AtomicBool,
    /// Every stream's queue, closed when the connection ends so that its senders learn it.
    all: Mutex<Vec<Weak<Shared>>>,
    /// The connection's task, woken when a queue is listed in `ready`.
    driver: AtomicWaker,
}

impl Driver {
    fn new(conn: h2::client::Connection<Io, Bytes>, pings: PingPong, streams: Arc<Streams>) -> Self {
        let muted = Arc::new(Muted { on: AtomicBool::new(false), task: AtomicWaker::new() });
        let waker = Waker::from(muted.clone());
        let keepalive = WhenWoken::new(keepalive(pings));
        Self { conn, keepalive, streams, first: None, first_done: false, blocked: Vec::new(), muted, waker }
    }

    /// Moves the queued frames of the first stream and of every listed queue into h2, keeping
    /// those h2 has no window for.
    fn flush(&mut self) {
        let (waker, muted) = (&self.waker, &self.muted);
        if self.first.is_none() && !self.first_done && self.streams.opened.load(Ordering::Acquire) {
            self.first = lock(&self.streams.first).take();
        }
        if let Some(first) = &self.first
            && (flush_one(first, waker, muted) == Flushed::Closed || Arc::strong_count(first) == 1)
        {
            // Ended, or no sender is left.
            self.first = None;
            self.first_done = true;
        }
        if self.streams.listed.swap(false, Ordering::AcqRel) {
            self.blocked.append(&mut lock(&self.streams.ready));
        }
        if !self.blocked.is_empty() {
            self.blocked.retain(|shared| flush_one(shared, waker, muted) == Flushed::Blocked);
        }
    }
}

/// What [`flush_one`] left of a queue.
#[derive(PartialEq, Eq)]
enum Flushed {
    /// Empty: everything went to h2 (or nothing was queued).
    Done,
    /// Bytes wait for the server's window; h2 wakes the task when it comes.
    Blocked,
    /// The stream ended.
    Closed,
}

/// Moves one stream's queued frames into h2 when the server's window covers what h2 already
/// holds (as hyper's body pipe does).
fn flush_one(shared: &Shared, waker: &Waker, muted: &Muted) -> Flushed {
    let mut guard = lock(&shared.queue);
    let queue = &mut *guard;
    let Some(send) = queue.send.as_mut() else { return Flushed::Closed };
    if queue.buf.is_empty() {
        return Flushed::Done;
    }
    send.reserve_capacity(1);
    if send.capacity() == 0 {
        match send.poll_capacity(&mut Context::from_waker(waker)) {
            Poll::Ready(Some(Ok(_))) if send.capacity() > 0 => {}
            Poll::Ready(Some(Ok(_))) | Poll::Pending => return Flushed::Blocked,
            Poll::Ready(Some(Err(_)) | None) => {
                queue.close();
                return Flushed::Closed;
            }
        }
    }
    let data = queue.buf.split().freeze();
    muted.on.store(true, Ordering::Release);
    let sent = send.send_data(data, false);
    muted.on.store(false, Ordering::Release);
    if sent.is_err() {
        queue.close();
        return Flushed::Closed;
    }
    let waiting = std::mem::take(&mut queue.waiting);
    drop(guard);
    waiting.into_iter().for_each(Waker::wake);
    Flushed::Done
}

impl Future for Driver {
    type Output = Result<(), Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.muted.task.register(cx.waker());
        this.streams.driver.register(cx.waker());
        this.flush();
        if let Poll::Ready(ended) = Pin::new(&mut this.conn).poll(&mut Context::from_waker(&this.waker)) {
            return Poll::Ready(ended.map_err(broken));
        }
        Pin::new(&mut this.keepalive).poll(cx).map(Err)
    }
}

impl Drop for Driver {
    /// The connection ended: every stream's sends fail from now on.
    fn drop(&mut self) {
        self.first = None;
        self.blocked.clear();
        lock(&self.streams.first).take();
        lock(&self.streams.ready).clear();
        let all = std::mem::take(&mut *lock(&self.streams.all));
        all.iter().filter_map(Weak::upgrade).for_each(|shared| lock(&shared.queue).close());
    }
}

/// Pings the server every [`PING_EVERY`]; returns why the connection is dead when a ping fails
/// or goes unanswered for [`PING_TIMEOUT`].
async fn keepalive(mut pings: PingPong) -> Status {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_TIMEOUT, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return broken(e),
            Err(_) => {
                return Status::unavailable(format!(
                    "the server did not answer a keepalive ping within {} s",
                    PING_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

/// The reading half of one open stream, yielding `I` messages.
pub(crate) struct Link<I> {
    recv: RecvStream,
    /// Kept so that h2 does not treat the connection as finished with its users.
    _client: SendRequest<Bytes>,
    frames: Deframer,
    kind: PhantomData<fn() -> I>,
}

impl<I: Message + Default> Link<I> {
    /// The next message; `None` when the server ended the stream with status OK.
    /// Cancel-safe: all progress lives in `self`.
    pub(crate) async fn next(&mut self) -> Result<Option<I>, Status> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<I>, Status>> {
        if let Some(message) = self.take_message()? {
            return Poll::Ready(Ok(Some(message)));
        }
        // Bounded by what h2 has received: each turn takes one chunk, and the receive window
        // caps how much can be waiting.
        loop {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.frames.push(chunk);
                    if let Some(message) = self.take_message()? {
                        return Poll::Ready(Ok(Some(message)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(broken(e))),
                None => return self.poll_end(cx),
            }
        }
    }

    /// A whole message from what was received, if there is one.
    fn take_message(&mut self) -> Result<Option<I>, Status> {
        match self.frames.next_message() {
            Ok(Some(message)) => decode(message).map(Some),
            Ok(None) => Ok(None),
            Err(FrameError::Compressed(_)) => {
                Err(Status::internal("the server sent a compressed message, which this client never asked for"))
            }
            Err(FrameError::TooLarge(len)) => {
                Err(Status::out_of_range(format!("the server sent a {len}-byte message; the limit is {MAX_MESSAGE}")))
            }
        }
    }

    /// The response body ended: its trailers say how.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<I>, Status>> {
        if !self.frames.is_empty() {
            return Poll::Ready(Err(Status::internal("the server's stream ended inside a message")));
        }
        let trailers = ready!(self.recv.poll_trailers(cx)).map_err(broken)?;
        let status = trailers
            .as_ref()
            .and_then(status_of)
            .unwrap_or_else(|| Status::unknown("the server ended the stream without a gRPC status"));
        Poll::Ready(if status.code() == Code::Ok { Ok(None) } else { Err(status) })
    }
}

fn decode<I: Message + Default>(message: Bytes) -> Result<I, Status> {
    I::decode(message).map_err(|e| Status::internal(format!("the server sent a malformed message: {e}")))
}

/// Messages toward the server on one stream: a cheap clonable handle with which the task that
/// makes a message encodes it into the stream's send queue, and wakes the connection's task if
/// the queue was empty; that task hands everything queued to h2 as one DATA frame (an echo's
/// output and its credit grant go out together, and the server reads them as one). No task
/// between the sender and the connection. Bounded: a sender waits while the stream's queue
/// limit in bytes is queued that h2 could not take (the server's window is full), so a stalled
/// server pauses the senders instead of growing memory. h2 itself holds at most
/// [`SEND_BUFFER`] per stream.
pub(crate) struct Out<O> {
    shared: Arc<Shared>,
    kind: PhantomData<fn(&O)>,
}

impl<O> Clone for Out<O> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), kind: PhantomData }
    }
}

/// The stream ended: the message was not sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closed;

/// Why [`Out::try_send`] did not queue a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// The queue's limit in bytes is waiting for the server's window.
    Full,
    /// The stream ended.
    Closed,
}

struct Shared {
    /// Never locked across an await.
    queue: Mutex<Queue>,
    streams: Arc<Streams>,
    /// The connection's first stream: the task looks at it without its being listed.
    first: bool,
}

struct Queue {
    /// Encoded messages not yet handed to h2.
    buf: BytesMut,
    /// Senders wait while `buf` holds this many bytes.
    limit: usize,
    /// The stream's sending half; `None` once the stream ended.
    send: Option<SendStream<Bytes>>,
    /// The stream ended: sends fail.
    closed: bool,
    /// Senders waiting for room in `buf`.
    waiting: Vec<Waker>,
}

impl Queue {
    fn close(&mut self) {
        self.closed = true;
        self.send = None;
        self.buf = BytesMut::new();
        std::mem::take(&mut self.waiting).into_iter().for_each(Waker::wake);
    }
}

impl<O: Message> Out<O> {
    fn new(send: SendStream<Bytes>, streams: &Arc<Streams>, limit: usize) -> Self {
        let queue = Queue { buf: BytesMut::new(), limit, send: Some(send), closed: false, waiting: Vec::new() };
        let first = !streams.opened.swap(true, Ordering::AcqRel);
        let shared = Arc::new(Shared { queue: Mutex::new(queue), streams: streams.clone(), first });
        if first {
            *lock(&streams.first) = Some(shared.clone());
        }
        let mut all = lock(&streams.all);
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(&shared));
        drop(all);
        streams.driver.wake();
        Self { shared, kind: PhantomData }
    }

    /// Queues `message` as the stream's next; waits only while the queue is full.
    pub(crate) async fn send(&self, message: O) -> Result<(), Closed> {
        poll_fn(|cx| match self.push(&message, Some(cx.waker())) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Closed) => Poll::Ready(Err(Closed)),
            Err(TrySendError::Full) => Poll::Pending,
        })
        .await
    }

    /// Queues `message` unless the queue is full or closed; never waits.
    pub(crate) fn try_send(&self, message: &O) -> Result<(), TrySendError> {
        self.push(message, None)
    }

    /// Encodes `message` into the queue; when the queue is full, `waiter` (if any) is woken
    /// once it has room again or closes. The send that finds the queue empty lists it for the
    /// connection's task and wakes that task.
    fn push(&self, message: &O, waiter: Option<&Waker>) -> Result<(), TrySendError> {
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            return Err(TrySendError::Closed);
        }
        if queue.buf.len() >= queue.limit {
            if let Some(waker) = waiter
                && !queue.waiting.iter().any(|w| w.will_wake(waker))
            {
                queue.waiting.push(waker.clone());
            }
            return Err(TrySendError::Full);
        }
        let first = queue.buf.is_empty();
        encode_into(message, &mut queue.buf);
        drop(queue);
        if first {
            let streams = &self.shared.streams;
            if !self.shared.first {
                lock(&streams.ready).push(self.shared.clone());
                streams.listed.store(true, Ordering::Release);
            }
            streams.driver.wake();
        }
        Ok(())
    }

    /// Ends sending: later sends fail, and waiting senders are woken to find out.
    pub(crate) fn close(&self) {
        lock(&self.shared.queue).close();
    }

    /// Whether the stream ended (closed, or its connection ended).
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.shared.queue).closed
    }
}

#[cfg(test)]
mod tests;
