//! A gRPC client's bidirectional stream over our own HTTP/2 client connection (RFC 9113, on
//! `core::http2`'s frames and HPACK): the agent's `Relay.Link` and the edge node's `Peer.Link`
//! are both this, typed by their messages.
//!
//! Why not tonic's client, nor `h2`'s: per message they cost a body "pipe" task, a codec, a
//! copy each way, and (h2) a framed reader and writer, a streams mutex and priority queue per
//! frame. Here one task owns the socket (`conn.rs`): it reads into one buffer and handles each
//! frame in place, appending a DATA payload to its stream's inbound buffer and waking only that
//! stream's reader; it writes what streams queued as one DATA frame each (head and payload in
//! one `writev`, no copy of a large payload). The tasks that make messages encode them into
//! their stream's send queue through [`Out`] (no task in between), and the reader takes them
//! with [`Link::next`], sliced out of the inbound buffer, or has them handed to it in the
//! connection's task ([`Link::deliver_to`], no task woken per message). One connection
//! ([`Client`]) carries any number of streams, each with its own queue.
//!
//! The wire stays plain gRPC (`application/grpc`, length-prefixed protobuf), so servers see
//! what any gRPC client sends. Errors are `tonic::Status`es as a tonic client would report
//! them, so callers map them alike.

mod conn;
mod headers;
mod io;
mod outbox;
mod queue;
mod shared;
mod status;

use std::future::poll_fn;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use prost::Message;
use tonic::{Code, Status};

use self::io::Target;
use self::shared::{End, Inbound, Receive, Shared, Stream};
use self::status::{status_of, status_of_http};
use crate::core::grpc_frame::{Deframer, FrameError, Incoming, MAX_MESSAGE, encode_into};
use crate::sys::task::AbortOnDrop;

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
/// Largest frame the server may send us (SETTINGS_MAX_FRAME_SIZE; the read buffer holds one
/// whole frame): 64 KiB carries two of the relay's 32 KiB output messages per frame, so a
/// large message is never split across frames and then copied together, and costs no more
/// memory than the read buffer of a busy connection needs anyway.
const MAX_FRAME: usize = 64 * 1024;
/// Largest response header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE, hyper's default).
const MAX_HEADER_LIST: usize = 16 * 1024;
/// The usual bound of a stream's send queue (see [`Out`] for why that bound matters).
pub(crate) const SEND_BUFFER: usize = 1024 * 1024;

/// The connection task: ends with the connection (`Ok`: closed cleanly) or with why it broke.
/// Aborted when dropped, so the connection never outlives its owner.
pub(crate) type Connection = AbortOnDrop<Result<(), Status>>;

/// One HTTP/2 connection to a server, on which streams are opened; cheap to clone. Its
/// task ([`Connection`]) must be kept while any of its streams is in use.
#[derive(Clone)]
pub(crate) struct Client {
    shared: Arc<Shared>,
    target: Arc<Target>,
}

/// Connects to `url` (`http://HOST:PORT` or `https://HOST`) and starts the connection's task,
/// which opens with the client preface and our SETTINGS.
pub(crate) async fn connect(url: &str) -> Result<(Client, Connection), Status> {
    let target = Target::parse(url)?;
    let io = target.connect(url).await?;
    let shared = Arc::new(Shared::new());
    let connection = AbortOnDrop::spawn(conn::Driver::new(io, shared.clone()));
    Ok((Client { shared, target: Arc::new(target) }, connection))
}

impl Client {
    /// Starts a call of the streaming method at `path` with `headers` beside gRPC's own, sends
    /// `first` at once (a server may read it before it answers) and waits for the response
    /// headers. Returns the stream's reading half and its writing handle, whose senders wait
    /// while `queue_limit` bytes are queued (see [`Out`]); a refusal is the server's status.
    /// Waits for a free stream while the server's SETTINGS_MAX_CONCURRENT_STREAMS are open.
    pub(crate) async fn open<O: Message, I: Incoming>(
        &self,
        path: &str,
        headers: HeaderMap,
        first: Option<&O>,
        queue_limit: usize,
    ) -> Result<(Link<I>, Out<O>), Status> {
        let (block, size) = headers::request_block(&self.target, path, &headers)?;
        if size > self.shared.opening().max_header_list as usize {
            return Err(Status::internal("the request's headers exceed the server's header list limit"));
        }
        let mut queue = BytesMut::new();
        if let Some(first) = first {
            encode_into(first, &mut queue);
        }
        let (mut block, mut queue) = (Some(block), Some(queue));
        let stream = poll_fn(|cx| self.shared.poll_start(cx, &mut block, &mut queue, queue_limit)).await?;
        // From here on, dropping the handle (this future cancelled, or the call refused)
        // resets the stream.
        let handle = Arc::new(Handle(stream));
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, poll_fn(|cx| handle.0.poll_response(cx))).await;
        let (status, response) = match response {
            Ok(response) => response?,
            Err(_) => {
                let at = self.target.base();
                return Err(Status::unavailable(format!("the server at {at} did not answer the stream in time")));
            }
        };
        // A trailers-only answer (refused before the stream started) carries the status here.
        if let Some(status) = status_of(&response)
            && status.code() != Code::Ok
        {
            return Err(status);
        }
        if status != StatusCode::OK {
            return Err(status_of_http(status));
        }
        let link = Link { handle: handle.clone(), frames: Deframer::default(), kind: PhantomData };
        Ok((link, Out { handle, kind: PhantomData }))
    }
}

/// A stream's handles (its reader, its senders) hold this; when the last is dropped the stream
/// is abandoned, and the connection's task resets it if it is still open.
struct Handle(Arc<Stream>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// Takes a stream's messages in its connection's task ([`Link::deliver_to`]). Both calls run
/// there: they must not block or wait, and they may send (on this stream too).
pub(crate) trait Receiver<I>: Send + 'static {
    /// The next message; an error ends the delivery (`ended` follows with it).
    fn message(&mut self, message: I) -> Result<(), Status>;
    /// The stream ended: `Ok` when the server ended it with status OK, else why it failed (or
    /// the error `message` returned). The last call.
    fn ended(self, end: Result<(), Status>);
}

/// A [`Receiver`] at work: the link's framing and decoding in front of it.
struct Delivery<I, R> {
    link: Link<I>,
    /// Received payloads, copied out of the connection's read buffer: its room is reused once
    /// the messages sliced out of it are gone (no allocation per frame).
    buf: BytesMut,
    /// `None` once it was told the end.
    receiver: Option<R>,
}

impl<I: Incoming, R: Receiver<I>> Delivery<I, R> {
    fn fail(&mut self, status: Status) {
        if let Some(receiver) = self.receiver.take() {
            receiver.ended(Err(status));
        }
    }
}

impl<I: Incoming + 'static, R: Receiver<I>> Receive for Delivery<I, R> {
    fn data(&mut self, data: &[u8]) {
        let Some(receiver) = self.receiver.as_mut() else { return };
        self.buf.extend_from_slice(data);
        self.link.frames.push(self.buf.split().freeze());
        loop {
            let sent = match self.link.take_message() {
                Ok(Some(message)) => receiver.message(message),
                Ok(None) => return,
                Err(status) => Err(status),
            };
            if let Err(status) = sent {
                return self.fail(status);
            }
        }
    }

    fn end(mut self: Box<Self>, end: End) {
        let end = match end {
            End::Trailers(trailers) => Ok(trailers),
            End::Failed(status) => Err(status),
        };
        let end = self.link.end(end).map(|_| ());
        if let Some(receiver) = self.receiver.take() {
            receiver.ended(end);
        }
    }
}

/// The reading half of one open stream, yielding `I` messages.
pub(crate) struct Link<I> {
    handle: Arc<Handle>,
    frames: Deframer,
    kind: PhantomData<fn() -> I>,
}

impl<I: Incoming> Link<I> {
    /// Hands every message from now on to `receiver` in the connection's task, as each
    /// arrives, and then the stream's end: the caller keeps no task waiting on the stream.
    pub(crate) fn deliver_to<R: Receiver<I>>(self, receiver: R)
    where
        I: Send + 'static,
    {
        let stream = self.handle.0.clone();
        stream.set_receiver(|| Box::new(Delivery { link: self, buf: BytesMut::new(), receiver: Some(receiver) }));
    }

    /// The next message; `None` when the server ended the stream with status OK.
    /// Cancel-safe: all progress lives in `self`.
    pub(crate) async fn next(&mut self) -> Result<Option<I>, Status> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// A message already received whole, else everything received since (taking it gives its
    /// bytes back to the server's windows), else how the stream ended once all was read.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<I>, Status>> {
        if let Some(message) = self.take_message()? {
            return Poll::Ready(Ok(Some(message)));
        }
        // Bounded: a turn that takes bytes without completing a message looks once more (the
        // stream may have ended meanwhile), then yields.
        for _ in 0..4 {
            match self.handle.0.take_inbound(cx.waker()) {
                Inbound::Data(chunk) => {
                    self.frames.push(chunk);
                    if let Some(message) = self.take_message()? {
                        return Poll::Ready(Ok(Some(message)));
                    }
                }
                Inbound::Ended(end) => return Poll::Ready(self.end(end)),
                Inbound::Nothing => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// A whole message from what was received, if there is one.
    fn take_message(&mut self) -> Result<Option<I>, Status> {
        match self.frames.next_message() {
            Ok(Some(message)) => I::decode_message(message)
                .map(Some)
                .map_err(|e| Status::internal(format!("the server sent a malformed message: {e}"))),
            Ok(None) => Ok(None),
            Err(FrameError::Compressed(_)) => {
                Err(Status::internal("the server sent a compressed message, which this client never asked for"))
            }
            Err(FrameError::TooLarge(len)) => {
                Err(Status::out_of_range(format!("the server sent a {len}-byte message; the limit is {MAX_MESSAGE}")))
            }
        }
    }

    /// The stream ended (its trailers, or why it failed) after everything it carried was read.
    fn end(&mut self, end: Result<HeaderMap, Status>) -> Result<Option<I>, Status> {
        let trailers = end?;
        if !self.frames.is_empty() {
            return Err(Status::internal("the server's stream ended inside a message"));
        }
        let status = status_of(&trailers)
            .unwrap_or_else(|| Status::unknown("the server ended the stream without a gRPC status"));
        if status.code() == Code::Ok { Ok(None) } else { Err(status) }
    }
}

/// Messages toward the server on one stream: a cheap clonable handle with which the task that
/// makes a message encodes it into the stream's send queue, and wakes the connection's task if
/// the queue was empty; that task sends everything queued as one DATA frame (an echo's output
/// and its credit grant go out together, and the server reads them as one), as far as the
/// server's windows allow. No task between the sender and the connection. Bounded: a sender
/// waits while the stream's queue limit in bytes is queued and unsent (the server's window is
/// full), so a stalled server pauses the senders instead of growing memory.
pub(crate) struct Out<O> {
    handle: Arc<Handle>,
    kind: PhantomData<fn(&O)>,
}

impl<O> Clone for Out<O> {
    fn clone(&self) -> Self {
        Self { handle: self.handle.clone(), kind: PhantomData }
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

impl<O: Message> Out<O> {
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
    /// once it has room again or closes.
    fn push(&self, message: &O, waiter: Option<&Waker>) -> Result<(), TrySendError> {
        self.handle.0.push(waiter, |queue| encode_into(message, &mut queue.tail))
    }

    /// Queues a message given as its encoding up to a trailing `bytes` field's content (`head`:
    /// gRPC's 5-byte header, then the protobuf bytes up to and with that field's key and
    /// length) and that content (`payload`), which goes to the socket from its own buffer
    /// instead of being copied into the queue. Waits only while the queue is full.
    pub(crate) async fn send_split(&self, head: &[u8], payload: Bytes) -> Result<(), Closed> {
        poll_fn(|cx| {
            let sent = self.handle.0.push(Some(cx.waker()), |queue| {
                queue.tail.extend_from_slice(head);
                queue.push_payload(payload.clone());
            });
            match sent {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed) => Poll::Ready(Err(Closed)),
                Err(TrySendError::Full) => Poll::Pending,
            }
        })
        .await
    }

    /// Ends sending: later sends fail, and waiting senders are woken to find out.
    pub(crate) fn close(&self) {
        self.handle.0.close_send();
    }

    /// Whether the stream ended (closed, or its connection ended).
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.handle.0.send_closed()
    }
}

#[cfg(test)]
mod tests;
