//! What the connection's task and the handles of its streams share: per stream, its send
//! queue and what it received (one lock each, never held across an await); per connection,
//! the list of streams with work for the task, the receive window readers gave back, and the
//! opening of streams (ids in order, the server's stream limit, refusal once it ends).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::{HeaderMap, StatusCode};
use tonic::Status;

use super::queue::SendQueue;
use super::{CONNECTION_WINDOW, STREAM_WINDOW};
use crate::core::sync::lock;

/// First capacity of a stream's inbound buffer: DATA payloads are appended to it and readers
/// take them as slices of it, so small frames reuse one allocation.
const INBOUND_CAPACITY: usize = 4096;
/// The highest client stream id (odd, below 2^31).
const LAST_STREAM_ID: u32 = (1 << 31) - 1;

/// The connection's part.
pub(super) struct Shared {
    /// The connection's task, woken when a stream has work for it.
    pub(super) task: AtomicWaker,
    /// Streams with work for the task (bytes to send, window to give back, every handle gone),
    /// each listed once (`StreamState::listed`).
    dirty: Mutex<Dirty>,
    has_dirty: AtomicBool,
    /// Bytes readers consumed (or the task dropped) since the last connection WINDOW_UPDATE.
    released: AtomicU32,
    /// Opening streams; `has_started` is set when `Opening::started` has HEADERS to send.
    opening: Mutex<Opening>,
    has_started: AtomicBool,
}

#[derive(Default)]
struct Dirty {
    list: Vec<Arc<Stream>>,
    /// The task ended: nothing is listed any more (a list would keep streams alive).
    closed: bool,
}

/// How streams are opened.
pub(super) struct Opening {
    next_id: u32,
    /// Streams the server counts against its limit (started and not yet closed).
    active: u32,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (no limit until it says one).
    pub(super) max_concurrent: u32,
    /// The server's SETTINGS_MAX_HEADER_LIST_SIZE for our requests.
    pub(super) max_header_list: u32,
    /// Openers waiting for a free stream slot.
    waiting: Vec<Waker>,
    /// Streams whose HEADERS the task sends next, in id order, with their header blocks.
    started: Vec<(Arc<Stream>, Vec<u8>)>,
    /// Why no stream can be opened any more (GOAWAY, or the connection ended).
    refusal: Option<Status>,
}

impl Shared {
    pub(super) fn new() -> Self {
        let opening = Opening {
            next_id: 1,
            active: 0,
            max_concurrent: u32::MAX,
            max_header_list: u32::MAX,
            waiting: Vec::new(),
            started: Vec::new(),
            refusal: None,
        };
        Self {
            task: AtomicWaker::new(),
            dirty: Mutex::default(),
            has_dirty: AtomicBool::new(false),
            released: AtomicU32::new(0),
            opening: Mutex::new(opening),
            has_started: AtomicBool::new(false),
        }
    }

    pub(super) fn opening(&self) -> MutexGuard<'_, Opening> {
        lock(&self.opening)
    }

    /// Starts a stream once the server's limit leaves a slot: assigns its id and queues its
    /// HEADERS (`block`) for the task, `queue` (its first message, if any) behind them.
    pub(super) fn poll_start(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        block: &mut Option<Vec<u8>>,
        queue: &mut Option<BytesMut>,
        limit: usize,
    ) -> Poll<Result<Arc<Stream>, Status>> {
        let mut opening = self.opening();
        if let Some(refusal) = &opening.refusal {
            return Poll::Ready(Err(refusal.clone()));
        }
        if opening.next_id > LAST_STREAM_ID {
            return Poll::Ready(Err(Status::unavailable("the connection to the server used up its stream ids")));
        }
        if opening.active >= opening.max_concurrent {
            if !opening.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                opening.waiting.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let id = opening.next_id;
        opening.next_id += 2;
        opening.active += 1;
        let stream = Arc::new(Stream::new(id, self.clone(), queue.take().unwrap_or_default(), limit));
        opening.started.push((stream.clone(), block.take().unwrap_or_default()));
        self.has_started.store(true, Ordering::Release);
        drop(opening);
        self.task.wake();
        Poll::Ready(Ok(stream))
    }

    /// The streams whose HEADERS are due, in id order (for the task).
    #[inline]
    pub(super) fn take_started(&self, into: &mut Vec<(Arc<Stream>, Vec<u8>)>) {
        if self.has_started.swap(false, Ordering::AcqRel) {
            into.append(&mut self.opening().started);
        }
    }

    /// A stream the server counted closed: its slot is free for a waiting opener.
    pub(super) fn stream_closed(&self) {
        let mut opening = self.opening();
        opening.active = opening.active.saturating_sub(1);
        let waiting = std::mem::take(&mut opening.waiting);
        drop(opening);
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Wakes openers waiting for a slot (the server raised its limit).
    pub(super) fn wake_openers(&self) {
        let waiting = std::mem::take(&mut self.opening().waiting);
        waiting.into_iter().for_each(Waker::wake);
    }

    /// No stream opens from now on: openers get `refusal`. Returns the streams started but
    /// not yet sent, which never reach the server.
    pub(super) fn refuse(&self, refusal: Status) -> Vec<(Arc<Stream>, Vec<u8>)> {
        let mut opening = self.opening();
        opening.refusal.get_or_insert(refusal);
        let waiting = std::mem::take(&mut opening.waiting);
        let started = std::mem::take(&mut opening.started);
        opening.active = opening.active.saturating_sub(started.len() as u32);
        drop(opening);
        waiting.into_iter().for_each(Waker::wake);
        started
    }

    /// Lists `stream` for the task (the caller holds its lock, `state`); true when it was
    /// listed now, and the caller wakes the task once it let go of the lock.
    fn list(&self, stream: &Arc<Stream>, state: &mut StreamState) -> bool {
        if state.listed {
            return false;
        }
        let mut dirty = lock(&self.dirty);
        if dirty.closed {
            return false;
        }
        state.listed = true;
        dirty.list.push(stream.clone());
        self.has_dirty.store(true, Ordering::Release);
        true
    }

    /// Moves the listed streams into `into` (for the task).
    #[inline]
    pub(super) fn take_dirty(&self, into: &mut Vec<Arc<Stream>>) {
        if self.has_dirty.swap(false, Ordering::AcqRel) {
            into.append(&mut lock(&self.dirty).list);
        }
    }

    /// The task ended: nothing is listed any more.
    pub(super) fn close_dirty(&self) {
        let mut dirty = lock(&self.dirty);
        dirty.closed = true;
        dirty.list.clear();
    }

    /// `n` received bytes left the connection's window accounting (read, or dropped); wakes
    /// the task when half the connection window is due back.
    pub(super) fn release(&self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let before = self.released.fetch_add(n, Ordering::AcqRel);
        if before < CONNECTION_WINDOW / 2 && before.saturating_add(n) >= CONNECTION_WINDOW / 2 {
            self.task.wake();
        }
    }

    /// The bytes to give back in a connection WINDOW_UPDATE now, if half a window is due.
    #[inline]
    pub(super) fn take_released(&self) -> u32 {
        if self.released.load(Ordering::Acquire) < CONNECTION_WINDOW / 2 {
            return 0;
        }
        self.released.swap(0, Ordering::AcqRel)
    }
}

/// One stream's part.
pub(super) struct Stream {
    pub(super) id: u32,
    pub(super) conn: Arc<Shared>,
    /// Takes the received bytes in the connection's task, when the caller asked for that
    /// (`Link::deliver_to`): then no reader task is woken per DATA frame. Locked before
    /// `state` whenever both are.
    receiver: Mutex<Option<Box<dyn Receive>>>,
    state: Mutex<StreamState>,
}

/// What takes a stream's received bytes in the connection's task. It runs with no lock of
/// the stream's held but its own slot's, so it may send on the stream; it must not wait.
pub(super) trait Receive: Send {
    /// Payload bytes of a DATA frame, in order.
    fn data(&mut self, data: &[u8]);
    /// How the stream ended; the last call.
    fn end(self: Box<Self>, end: End);
}

/// How the server ended a stream.
#[derive(Clone)]
pub(super) enum End {
    /// END_STREAM, with the trailers (empty when the stream ended on a DATA frame).
    Trailers(HeaderMap),
    /// Reset, refused, or its connection ended.
    Failed(Status),
}

pub(super) struct StreamState {
    /// Encoded messages (and payloads of their own) the task has not sent yet.
    pub(super) queue: SendQueue,
    /// Senders wait while `queue` holds this many bytes.
    pub(super) limit: usize,
    /// Sends fail (closed by the caller, or the stream ended).
    pub(super) send_closed: bool,
    /// Senders waiting for room in `queue`.
    pub(super) senders: Vec<Waker>,
    /// Listed in the connection's dirty list.
    listed: bool,
    /// Received payloads not yet read.
    inbound: BytesMut,
    /// The reader (or the opener waiting for the response).
    reader: Option<Waker>,
    /// The response's status and headers, until the opener takes them.
    response: Option<(StatusCode, HeaderMap)>,
    /// How the stream ended, once it did.
    end: Option<End>,
    /// Bytes read since the stream's last WINDOW_UPDATE.
    pub(super) released: u32,
    /// Every handle (reader, senders, opener) is gone: the task resets the stream.
    pub(super) abandoned: bool,
}

impl Stream {
    fn new(id: u32, conn: Arc<Shared>, queue: BytesMut, limit: usize) -> Self {
        let state = StreamState {
            queue: SendQueue::new(queue),
            limit,
            send_closed: false,
            senders: Vec::new(),
            listed: false,
            inbound: BytesMut::with_capacity(INBOUND_CAPACITY),
            reader: None,
            response: None,
            end: None,
            released: 0,
            abandoned: false,
        };
        Self { id, conn, receiver: Mutex::new(None), state: Mutex::new(state) }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }

    /// The task looked at the stream: the next change lists it again.
    pub(super) fn unlist(state: &mut StreamState) {
        state.listed = false;
    }

    /// Appends a received payload (`padding` more bytes were flow-controlled with it) and wakes
    /// the reader. False when nobody reads the stream any more (the caller releases the bytes).
    pub(super) fn deliver(self: &Arc<Self>, data: &[u8], padding: usize) -> bool {
        let mut receiver = lock(&self.receiver);
        if let Some(receiver) = receiver.as_mut() {
            receiver.data(data);
            let state = self.state();
            self.read_out(state, data.len(), padding);
            return true;
        }
        let mut state = self.state();
        drop(receiver);
        if state.abandoned {
            return false;
        }
        state.inbound.extend_from_slice(data);
        state.released += padding as u32;
        if let Some(reader) = &state.reader {
            reader.wake_by_ref();
        }
        true
    }

    /// From now on `make`'s receiver takes what arrives, in the connection's task; it gets
    /// at once what was received and not yet read (`backlog`), and the end if it came.
    pub(super) fn set_receiver(self: &Arc<Self>, make: impl FnOnce() -> Box<dyn Receive>) {
        // The slot stays locked throughout, so the task's next payload waits for the backlog.
        let mut slot = lock(&self.receiver);
        let mut state = self.state();
        let backlog = state.inbound.split();
        let end = state.end.clone();
        state.reader = None;
        drop(state);
        let mut receiver = make();
        if !backlog.is_empty() {
            receiver.data(&backlog);
            self.read_out(self.state(), backlog.len(), 0);
        }
        match end {
            Some(end) => {
                drop(slot);
                receiver.end(end);
            }
            None => *slot = Some(receiver),
        }
    }

    /// `n` received bytes were read (`padding` more came with them): given back to the
    /// connection's window, and to the stream's in a WINDOW_UPDATE once half of it is due.
    fn read_out(self: &Arc<Self>, mut state: MutexGuard<'_, StreamState>, n: usize, padding: usize) {
        let mut listed = false;
        if state.end.is_none() {
            state.released += (n + padding) as u32;
            listed = state.released >= STREAM_WINDOW / 2 && self.conn.list(self, &mut state);
        }
        drop(state);
        self.conn.release(n);
        if listed {
            self.conn.task.wake();
        }
    }

    /// The response headers arrived.
    pub(super) fn respond(&self, status: StatusCode, headers: HeaderMap) {
        let mut state = self.state();
        state.response = Some((status, headers));
        if let Some(reader) = &state.reader {
            reader.wake_by_ref();
        }
    }

    /// The stream ended (the first end counts): sends fail from now on, and the reader learns
    /// it once it read what came before.
    pub(super) fn finish(&self, end: End) {
        let receiver = lock(&self.receiver).take();
        let mut state = self.state();
        if state.end.is_some() {
            return;
        }
        state.end = Some(end.clone());
        state.close_send();
        let reader = state.reader.take();
        drop(state);
        if let Some(receiver) = receiver {
            receiver.end(end);
        }
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Every handle is gone: unread bytes are released, and the task resets the stream if it
    /// is still open.
    pub(super) fn abandon(self: &Arc<Self>) {
        let mut state = self.state();
        state.abandoned = true;
        state.close_send();
        let unread = state.inbound.len();
        state.inbound = BytesMut::new();
        let listed = state.end.is_none() && self.conn.list(self, &mut state);
        drop(state);
        if unread > 0 {
            self.conn.release(unread);
        }
        if listed {
            self.conn.task.wake();
        }
    }

    /// The opener's wait for the response headers.
    pub(super) fn poll_response(&self, cx: &mut Context<'_>) -> Poll<Result<(StatusCode, HeaderMap), Status>> {
        let mut state = self.state();
        if let Some(response) = state.response.take() {
            return Poll::Ready(Ok(response));
        }
        if let Some(End::Failed(status)) = &state.end {
            return Poll::Ready(Err(status.clone()));
        }
        register(&mut state.reader, cx.waker());
        Poll::Pending
    }

    /// The reader's turn: everything received so far (given back to the flow-control windows),
    /// or how the stream ended once nothing is left; registers the reader's waker.
    pub(super) fn take_inbound(self: &Arc<Self>, waker: &Waker) -> Inbound {
        let mut state = self.state();
        let n = state.inbound.len();
        if n == 0 {
            return match &state.end {
                Some(End::Trailers(trailers)) => Inbound::Ended(Ok(trailers.clone())),
                Some(End::Failed(status)) => Inbound::Ended(Err(status.clone())),
                None => {
                    register(&mut state.reader, waker);
                    Inbound::Nothing
                }
            };
        }
        let chunk = state.inbound.split().freeze();
        register(&mut state.reader, waker);
        self.read_out(state, n, 0);
        Inbound::Data(chunk)
    }

    /// Queues an encoded message with `encode` unless the queue is closed or full (then the
    /// waker, if any, is woken when it has room or closes). The message that finds the queue
    /// empty lists the stream and wakes the task.
    pub(super) fn push(
        self: &Arc<Self>,
        waiter: Option<&Waker>,
        encode: impl FnOnce(&mut SendQueue),
    ) -> Result<(), super::TrySendError> {
        let mut state = self.state();
        if state.send_closed {
            return Err(super::TrySendError::Closed);
        }
        if state.queue.len() >= state.limit {
            if let Some(waker) = waiter
                && !state.senders.iter().any(|w| w.will_wake(waker))
            {
                state.senders.push(waker.clone());
            }
            return Err(super::TrySendError::Full);
        }
        let first = state.queue.is_empty();
        encode(&mut state.queue);
        let listed = first && self.conn.list(self, &mut state);
        drop(state);
        if listed {
            self.conn.task.wake();
        }
        Ok(())
    }

    /// Ends sending (the caller's choice): queued messages are dropped, senders learn it.
    pub(super) fn close_send(&self) {
        self.state().close_send();
    }

    #[cfg(test)]
    pub(super) fn send_closed(&self) -> bool {
        self.state().send_closed
    }
}

/// What [`Stream::take_inbound`] found.
pub(super) enum Inbound {
    Data(Bytes),
    Ended(Result<HeaderMap, Status>),
    Nothing,
}

impl StreamState {
    pub(super) fn close_send(&mut self) {
        self.send_closed = true;
        self.queue.clear();
        std::mem::take(&mut self.senders).into_iter().for_each(Waker::wake);
    }

    /// Wakes the senders waiting for room once the queue has some.
    pub(super) fn wake_senders(&mut self) {
        if !self.senders.is_empty() && self.queue.len() < self.limit {
            std::mem::take(&mut self.senders).into_iter().for_each(Waker::wake);
        }
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes down what it is given.
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Receive for Log {
        fn data(&mut self, data: &[u8]) {
            lock(&self.0).push(String::from_utf8_lossy(data).into_owned());
        }

        fn end(self: Box<Self>, end: End) {
            let what = match end {
                End::Trailers(_) => "end".to_string(),
                End::Failed(status) => status.message().to_string(),
            };
            lock(&self.0).push(what);
        }
    }

    fn stream() -> (Arc<Shared>, Arc<Stream>) {
        let shared = Arc::new(Shared::new());
        (shared.clone(), Arc::new(Stream::new(1, shared, BytesMut::new(), 1024)))
    }

    #[test]
    fn a_receiver_gets_the_backlog_then_what_arrives_then_the_first_end() {
        let (shared, stream) = stream();
        assert!(stream.deliver(b"one", 2));
        assert!(stream.deliver(b"two", 0));
        let log = Arc::new(Mutex::new(Vec::new()));
        stream.set_receiver(|| Box::new(Log(log.clone())));
        assert!(stream.deliver(b"three", 0));
        // Read bytes went back to both windows (the stream's with the padding).
        assert_eq!(shared.released.load(Ordering::Acquire), 11);
        assert_eq!(stream.state().released, 13);
        stream.finish(End::Trailers(HeaderMap::new()));
        stream.finish(End::Failed(Status::internal("late")));
        assert_eq!(*lock(&log), ["onetwo", "three", "end"]);
        assert!(stream.state().send_closed, "the end closes sending");
    }

    #[test]
    fn a_receiver_set_after_the_end_gets_what_came_and_the_end() {
        let (_, stream) = stream();
        assert!(stream.deliver(b"last", 0));
        stream.finish(End::Failed(Status::unavailable("gone")));
        let log = Arc::new(Mutex::new(Vec::new()));
        stream.set_receiver(|| Box::new(Log(log.clone())));
        assert_eq!(*lock(&log), ["last", "gone"]);
        assert!(lock(&stream.receiver).is_none(), "an ended stream keeps no receiver");
    }
}
