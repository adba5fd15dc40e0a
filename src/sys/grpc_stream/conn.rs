//! The connection's task: the one owner of the socket. It reads into one buffer and handles
//! each whole frame in place (`frames.rs`: a DATA payload is appended to its stream's inbound
//! buffer, and only that stream's reader is woken), and writes what the streams queued, as
//! far as the server's windows allow, with control frames, in one `writev` (`outbox.rs`).
//! Streams tell it about work through `shared.rs` (a list of the streams that have some), so
//! a wake-up looks only at those.

mod frames;
mod keepalive;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tonic::Status;

use self::keepalive::Keepalive;
use super::io::Io;
use super::outbox::Outbox;
use super::shared::{End, Shared, Stream, StreamState};
use super::status::broken;
use super::{CONNECTION_WINDOW, MAX_FRAME, MAX_HEADER_LIST, STREAM_WINDOW};
use crate::core::http2::frame::{self, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, HEAD_LEN, Head, ProtocolError, Reason};
use crate::core::http2::hpack::Decoder;
use crate::sys::task::WakeFilter;

/// Bytes of frames the task holds unwritten before it stops reading the socket and taking
/// streams' queues: a server that does not read cannot make us queue its PING and SETTINGS
/// acknowledgements without bound.
const OUTBOX_LIMIT: usize = 256 * 1024;
/// Read-and-handle rounds per wake-up before the task yields to others.
const MAX_ROUNDS: usize = 32;
/// How long the task tries to write its last frames (a GOAWAY) once the connection ends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The task's view of one open stream.
struct Open {
    stream: Arc<Stream>,
    /// What we may still send (negative after the server shrank its initial window).
    send_window: i64,
    /// What the server may still send before we give window back.
    recv_window: i64,
    /// The final response headers came (DATA and trailers may follow).
    responded: bool,
    /// Bytes wait in the stream's queue for window or room in the outbox.
    queued: bool,
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: u32,
}

pub(super) struct Driver {
    io: Io,
    shared: Arc<Shared>,
    /// Read buffer: bytes `..filled` are received and not yet handled (a partial frame).
    read: Vec<u8>,
    filled: usize,
    out: Outbox,
    hpack: Decoder,
    /// Open streams by id (ids only grow, so pushing keeps the order).
    streams: Vec<Open>,
    /// The highest stream id whose HEADERS went out.
    last_started: u32,
    /// The connection's send window, and what the server may still send on it.
    send_window: i64,
    recv_window: i64,
    /// The server's settings in force.
    initial_window: u32,
    max_frame: usize,
    /// The server's preface (its first SETTINGS) came.
    greeted: bool,
    headers: Option<Partial>,
    /// The server sent GOAWAY with this code: no new streams; ends when the last one has.
    going_away: Option<Reason>,
    /// Windows grew or the outbox drained: queues that waited are looked at again.
    retry: bool,
    keepalive: Keepalive,
    /// The socket's read side is polled only when its readiness woke the task (or it just
    /// read): a wake-up for a stream's send costs no read attempt.
    readable: WakeFilter,
    /// Reused lists of the streams with work.
    started: Vec<(Arc<Stream>, Vec<u8>)>,
    dirty: Vec<Arc<Stream>>,
    /// The connection ended so: the task writes what it has (at most [`LINGER`]), then ends.
    ending: Option<Result<(), Status>>,
}

impl Driver {
    /// A task for a connection over `io`, its preface, SETTINGS and connection window queued.
    pub(super) fn new(io: Io, shared: Arc<Shared>) -> Self {
        let mut out = Outbox::default();
        out.buf.extend_from_slice(frame::PREFACE);
        frame::write_settings(
            &mut out.buf,
            &[
                (frame::SETTINGS_ENABLE_PUSH, 0),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (frame::SETTINGS_MAX_FRAME_SIZE, MAX_FRAME as u32),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        frame::write_window_update(&mut out.buf, 0, CONNECTION_WINDOW - DEFAULT_WINDOW);
        Self {
            io,
            shared,
            read: vec![0; HEAD_LEN + MAX_FRAME],
            filled: 0,
            out,
            hpack: Decoder::new(),
            streams: Vec::new(),
            last_started: 0,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(CONNECTION_WINDOW),
            initial_window: DEFAULT_WINDOW,
            max_frame: DEFAULT_MAX_FRAME as usize,
            greeted: false,
            headers: None,
            going_away: None,
            retry: false,
            keepalive: Keepalive::new(),
            readable: WakeFilter::new(),
            started: Vec::new(),
            dirty: Vec::new(),
            ending: None,
        }
    }

    /// One wake-up: rounds of taking the streams' work, reading and handling frames, writing,
    /// until nothing moves (bounded; the task yields after [`MAX_ROUNDS`]).
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        if self.ending.is_some() {
            return self.poll_linger(cx);
        }
        if let Err(status) = self.keepalive.poll(cx, &mut self.out) {
            return self.end(Err(status), cx);
        }
        for _ in 0..MAX_ROUNDS {
            self.take_work();
            let read = match self.poll_read(cx) {
                Ok(read) => read,
                Err(ended) => return self.end(ended, cx),
            };
            if let Poll::Ready(Err(e)) = self.poll_write(cx) {
                return self.end(Err(broken(e)), cx);
            }
            if let Some(reason) = self.going_away
                && self.streams.is_empty()
            {
                return self.end(going_away_end(reason), cx);
            }
            if !read {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Sends new streams' HEADERS, the listed streams' queues and window updates, and the
    /// connection's window update when due.
    fn take_work(&mut self) {
        self.shared.take_started(&mut self.started);
        if !self.started.is_empty() {
            for (stream, block) in std::mem::take(&mut self.started) {
                self.start(stream, &block);
            }
        }
        self.shared.take_dirty(&mut self.dirty);
        // Bounded by the streams listed before this turn: a stream is listed at most once.
        while let Some(stream) = self.dirty.pop() {
            self.service(&stream);
        }
        if self.retry {
            self.retry = false;
            self.send_waiting();
        }
        let released = self.shared.take_released();
        if released > 0 {
            self.recv_window += i64::from(released);
            frame::write_window_update(&mut self.out.buf, 0, released);
        }
    }

    /// Sends a stream's HEADERS, then its first queued bytes.
    fn start(&mut self, stream: Arc<Stream>, block: &[u8]) {
        frame::write_headers(&mut self.out.buf, stream.id, block, false, self.max_frame as u32);
        self.last_started = stream.id;
        self.streams.push(Open {
            stream: stream.clone(),
            send_window: i64::from(self.initial_window),
            recv_window: i64::from(STREAM_WINDOW),
            responded: false,
            queued: true,
        });
        self.service(&stream);
    }

    /// Looks at a stream that listed itself: resets it if abandoned, gives back its receive
    /// window when half is due, sends what it queued.
    fn service(&mut self, stream: &Arc<Stream>) {
        let Some(i) = self.index(stream.id) else {
            // Ended already, or its HEADERS are still to go (they take its queue along).
            Stream::unlist(&mut stream.state());
            return;
        };
        let mut state = stream.state();
        Stream::unlist(&mut state);
        if state.abandoned {
            drop(state);
            return self.reset(i, Reason::CANCEL, None);
        }
        let open = &mut self.streams[i];
        if state.released >= STREAM_WINDOW / 2 {
            open.recv_window += i64::from(state.released);
            frame::write_window_update(&mut self.out.buf, open.stream.id, state.released);
            state.released = 0;
        }
        send_queued(open, &mut state, &mut self.send_window, self.max_frame, &mut self.out);
    }

    /// Sends from the queues that waited for window or outbox room.
    fn send_waiting(&mut self) {
        for open in self.streams.iter_mut().filter(|o| o.queued) {
            if self.send_window <= 0 || self.out.len() >= OUTBOX_LIMIT {
                return;
            }
            let stream = open.stream.clone();
            send_queued(open, &mut stream.state(), &mut self.send_window, self.max_frame, &mut self.out);
        }
    }

    /// Reads once and handles every whole frame. Ok(true) when bytes came; Err when the
    /// connection ended (cleanly or not).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, Result<(), Status>> {
        if self.out.len() >= OUTBOX_LIMIT {
            return Ok(false);
        }
        let mut buf = ReadBuf::new(&mut self.read[self.filled..]);
        let io = &mut self.io;
        match self.readable.poll(cx, |cx| Pin::new(io).poll_read(cx, &mut buf)) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(e)) => return Err(Err(broken(e))),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.filled().len();
        if n == 0 {
            return Err(self.closed_by_server());
        }
        self.filled += n;
        let read = std::mem::take(&mut self.read);
        let handled = self.handle_frames(&read[..self.filled]);
        self.read = read;
        match handled {
            Ok(used) => {
                self.read.copy_within(used..self.filled, 0);
                self.filled -= used;
                Ok(true)
            }
            Err(e) => Err(Err(self.connection_error(e))),
        }
    }

    /// Handles the whole frames at the start of `buf`; returns the bytes they took.
    fn handle_frames(&mut self, buf: &[u8]) -> Result<usize, ProtocolError> {
        let mut at = 0;
        while let Some(bytes) = buf.get(at..at + HEAD_LEN) {
            let Ok(bytes) = <&[u8; HEAD_LEN]>::try_from(bytes) else { break };
            let head = Head::parse(bytes);
            if head.len as usize > MAX_FRAME {
                return Err(ProtocolError {
                    reason: Reason::FRAME_SIZE_ERROR,
                    what: "a frame over our SETTINGS_MAX_FRAME_SIZE",
                });
            }
            let end = at + HEAD_LEN + head.len as usize;
            let Some(payload) = buf.get(at + HEAD_LEN..end) else { break };
            self.on_frame(&head, payload)?;
            at = end;
        }
        Ok(at)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let full = self.out.len() >= OUTBOX_LIMIT;
        let written = self.out.poll_write(&mut self.io, cx);
        if full && self.out.len() < OUTBOX_LIMIT {
            // Room again: queues that waited for it go on, and the task reads again.
            self.retry = true;
            cx.waker().wake_by_ref();
        }
        written
    }

    /// The server closed the socket: clean if no stream was open.
    fn closed_by_server(&self) -> Result<(), Status> {
        match (self.streams.is_empty(), self.going_away) {
            (true, None | Some(Reason::NO_ERROR)) => Ok(()),
            (true, Some(reason)) => going_away_end(reason),
            (false, _) => Err(broken("the server closed the connection")),
        }
    }

    /// A connection error of the server's: GOAWAY with its code, then the connection ends.
    fn connection_error(&mut self, e: ProtocolError) -> Status {
        tracing::debug!(error = %e, "the server broke HTTP/2; closing the connection");
        frame::write_goaway(&mut self.out.buf, 0, e.reason, e.what.as_bytes());
        Status::unavailable(format!("the server broke HTTP/2 ({e}); the connection was closed"))
    }

    /// The connection ends so: every stream fails with the status (a clean end reaches only
    /// streams still open, whose server never finished them), no stream opens any more, and
    /// the task writes its last frames before it ends.
    fn end(&mut self, ended: Result<(), Status>, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let status = ended.as_ref().err().cloned().unwrap_or_else(|| broken("the connection was closed"));
        self.fail_all(&status);
        self.ending = Some(ended);
        self.keepalive.linger();
        self.poll_linger(cx)
    }

    fn fail_all(&mut self, status: &Status) {
        self.shared.close_dirty();
        for (stream, _) in self.shared.refuse(status.clone()) {
            stream.finish(End::Failed(status.clone()));
        }
        for open in self.streams.drain(..) {
            open.stream.finish(End::Failed(status.clone()));
        }
    }

    /// Writes what is left (for at most [`LINGER`]), then ends the task.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let done = match self.out.poll_write(&mut self.io, cx) {
            Poll::Ready(_) => true,
            Poll::Pending => self.keepalive.poll(cx, &mut Outbox::default()).is_err(),
        };
        match done {
            true => Poll::Ready(self.ending.take().unwrap_or(Ok(()))),
            false => Poll::Pending,
        }
    }

    /// The index of open stream `id`.
    fn index(&self, id: u32) -> Option<usize> {
        self.streams.binary_search_by_key(&id, |o| o.stream.id).ok()
    }

    /// Ends stream `i` from our side: RST_STREAM with `reason`; the reader gets `status`
    /// (none when its handles are gone).
    fn reset(&mut self, i: usize, reason: Reason, status: Option<Status>) {
        let open = self.streams.remove(i);
        frame::write_rst(&mut self.out.buf, open.stream.id, reason);
        let status = status.unwrap_or_else(|| Status::cancelled("the stream was cancelled"));
        open.stream.finish(End::Failed(status));
        self.shared.stream_closed();
    }

    /// Stream `i` ended on the server's END_STREAM: our side ends too (an empty DATA frame
    /// with END_STREAM; what is still queued is moot once the server answered in full).
    fn end_stream(&mut self, i: usize, end: End) {
        let open = self.streams.remove(i);
        frame::write_data_head(&mut self.out.buf, open.stream.id, 0, true);
        open.stream.finish(end);
        self.shared.stream_closed();
    }
}

/// How the connection ends after the server's GOAWAY with `reason`, once its streams ended.
fn going_away_end(reason: Reason) -> Result<(), Status> {
    match reason {
        Reason::NO_ERROR => Ok(()),
        reason => Err(Status::unavailable(format!("the server closed the connection ({reason})"))),
    }
}

/// Moves a stream's queued bytes into the outbox as DATA frames, as far as the stream's and
/// the connection's windows, the server's frame size and the outbox's room allow.
fn send_queued(open: &mut Open, state: &mut StreamState, conn_window: &mut i64, max_frame: usize, out: &mut Outbox) {
    let id = open.stream.id;
    while !state.queue.is_empty() && out.len() < OUTBOX_LIMIT {
        let window = open.send_window.min(*conn_window).max(0) as usize;
        let n = state.queue.len().min(max_frame).min(window);
        if n == 0 {
            break;
        }
        frame::write_data_head(&mut out.buf, id, n, false);
        state.queue.take_into(n, out);
        open.send_window -= n as i64;
        *conn_window -= n as i64;
    }
    open.queued = !state.queue.is_empty();
    state.wake_senders();
}

#[cfg(test)]
mod tests;

impl Future for Driver {
    type Output = Result<(), Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        this.drive(cx)
    }
}

impl Drop for Driver {
    /// The task ended or was aborted: no stream outlives it.
    fn drop(&mut self) {
        self.fail_all(&broken("the connection was closed"));
    }
}
