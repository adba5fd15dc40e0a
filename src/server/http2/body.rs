//! A request body between the connection's task, which receives its DATA frames, and the
//! handler reading it, wherever that runs. Each chunk's bytes go back to the client's windows
//! as the handler takes the chunk, so a handler that reads slowly holds the client to one
//! stream window of buffered bytes (as h2's and hyper's bodies did).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;

use super::{CONNECTION_RELEASE_BYTES, STREAM_RELEASE_BYTES};
use crate::core::http2::frame::Reason;
use crate::core::sync::lock;

/// Why a request body ended before its end.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the client reset the stream ({0})")]
    Reset(Reason),
    #[error("the connection closed")]
    Closed,
}

/// Bytes the readers of one connection's bodies took, for the connection's WINDOW_UPDATE.
pub(super) struct ConnRelease {
    bytes: AtomicUsize,
    /// Wakes the connection once enough bytes are back to be worth a frame.
    waker: Waker,
}

impl ConnRelease {
    pub(super) fn new(waker: Waker) -> Arc<Self> {
        Arc::new(Self { bytes: AtomicUsize::new(0), waker })
    }

    pub(super) fn add(&self, n: usize) {
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        if before < CONNECTION_RELEASE_BYTES && before + n >= CONNECTION_RELEASE_BYTES {
            self.waker.wake_by_ref();
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    pub(super) fn take(&self) -> usize {
        self.bytes.swap(0, Ordering::AcqRel)
    }
}

struct State {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The client ended the stream.
    end: bool,
    broken: Option<BodyError>,
    reader: Option<Waker>,
    /// Bytes taken since the last stream WINDOW_UPDATE.
    released: usize,
    reader_gone: bool,
}

/// The body's state, shared by the connection (writer) and the reader.
pub(super) struct Inbound {
    state: Mutex<State>,
    conn: Arc<ConnRelease>,
    /// The stream's release part: enough bytes back for a stream WINDOW_UPDATE.
    release: Waker,
}

impl Inbound {
    pub(super) fn new(conn: Arc<ConnRelease>, release: Waker, end: bool) -> Arc<Self> {
        let state = State {
            chunks: VecDeque::new(),
            trailers: None,
            end,
            broken: None,
            reader: None,
            released: 0,
            reader_gone: false,
        };
        Arc::new(Self { state: Mutex::new(state), conn, release })
    }

    /// Hands a chunk to the reader; `false` (the chunk dropped) when no one reads any more.
    pub(super) fn push(&self, chunk: Bytes) -> bool {
        let mut state = lock(&self.state);
        if state.reader_gone {
            return false;
        }
        state.chunks.push_back(chunk);
        wake(&mut state.reader);
        true
    }

    /// Padding the client sent: its window goes back with the reader's next release.
    pub(super) fn release_padding(&self, n: usize) {
        let mut state = lock(&self.state);
        state.released += n;
        if state.released >= STREAM_RELEASE_BYTES {
            self.release.wake_by_ref();
        }
    }

    /// The client ended the stream, with `trailers` if it sent some.
    pub(super) fn finish(&self, trailers: Option<HeaderMap>) {
        let mut state = lock(&self.state);
        state.end = true;
        state.trailers = trailers;
        wake(&mut state.reader);
    }

    /// The stream broke: the reader sees the error after what it was handed.
    pub(super) fn fail(&self, error: BodyError) {
        let mut state = lock(&self.state);
        state.broken.get_or_insert(error);
        wake(&mut state.reader);
    }

    /// Bytes taken since the last call (for the stream's WINDOW_UPDATE).
    pub(super) fn take_released(&self) -> usize {
        std::mem::take(&mut lock(&self.state).released)
    }
}

fn wake(reader: &mut Option<Waker>) {
    if let Some(waker) = reader.take() {
        waker.wake();
    }
}

/// The request body handed to the handler.
pub(crate) struct RecvBody {
    inbound: Arc<Inbound>,
}

impl RecvBody {
    pub(super) fn new(inbound: Arc<Inbound>) -> Self {
        Self { inbound }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let inbound = &self.inbound;
        let mut state = lock(&inbound.state);
        if let Some(chunk) = state.chunks.pop_front() {
            state.released += chunk.len();
            if state.released >= STREAM_RELEASE_BYTES && !state.end {
                inbound.release.wake_by_ref();
            }
            drop(state);
            inbound.conn.add(chunk.len());
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(error) = state.broken {
            return Poll::Ready(Some(Err(error)));
        }
        if state.end {
            return Poll::Ready(state.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        match &mut state.reader {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            reader => *reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.inbound.state);
        state.end && state.chunks.is_empty() && state.trailers.is_none() && state.broken.is_none()
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let mut state = lock(&self.inbound.state);
        state.reader_gone = true;
        let unread: usize = state.chunks.drain(..).map(|c| c.len()).sum();
        drop(state);
        if unread > 0 {
            self.inbound.conn.add(unread);
        }
        // The connection may close the stream now.
        self.inbound.release.wake_by_ref();
    }
}
