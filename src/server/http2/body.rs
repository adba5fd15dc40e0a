//! Bodies between `h2` and axum: a request body reading an `h2` receive stream, and the pipe
//! that sends a response body on an `h2` send stream within the peer's flow-control window.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::HeaderMap;
use http_body::Frame;

/// A request body over an `h2` receive stream. Each DATA chunk's bytes are handed back to the
/// client's window as the handler takes the chunk, so a handler that reads slowly holds the
/// client to one stream window of buffered bytes (as hyper's body does).
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self { recv, data_done: false }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    // Only fails once the stream is gone, which the next poll reports.
                    let _ = this.recv.flow_control().release_capacity(chunk.len());
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PipeError {
    /// The client reset the stream or the connection went away.
    #[error("the stream is gone: {0}")]
    Stream(#[from] h2::Error),
    /// The handler's body failed; the stream was reset.
    #[error("the response body failed: {0}")]
    Body(axum::Error),
}

/// Sends a response body on a stream, chunk by chunk, each once the client's window has room
/// (h2 holds a chunk beyond the window up to its send buffer, and `poll_capacity` waits while it
/// is full): what hyper's body pipe does, polled by whichever task serves the stream.
pub(crate) struct Pipe {
    body: Body,
    tx: SendStream<Bytes>,
    /// A chunk taken from the body, waiting for window (`true`: the body's last).
    waiting: Option<(Bytes, bool)>,
    /// Whether each poll registers for the client's reset (see [`Pipe::ignoring_resets`]).
    watch_resets: bool,
}

impl Pipe {
    pub(crate) fn new(body: Body, tx: SendStream<Bytes>) -> Self {
        Self { body, tx, waiting: None, watch_resets: true }
    }

    /// A pipe that does not register for resets until [`Pipe::watch_resets`]: for a hot
    /// stream while its pump reads, as a reset ends the pump's read anyway. Registering on every
    /// poll would have h2 wake the pipe for every window update, after every frame it sends.
    pub(crate) fn ignoring_resets(mut self) -> Self {
        self.watch_resets = false;
        self
    }

    /// From now on a reset ends the pipe.
    pub(crate) fn watch_resets(&mut self) {
        self.watch_resets = true;
    }

    /// Sends `trailers` instead of the rest of the body (the server stopping, say).
    fn send_trailers(&mut self, trailers: HeaderMap) -> Poll<Result<(), PipeError>> {
        self.tx.reserve_capacity(0);
        Poll::Ready(self.tx.send_trailers(trailers).map_err(PipeError::from))
    }

    /// Sends the waiting chunk once there is window for it; `Ok(true)` when it ended the body.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, PipeError>> {
        let Some((_, end)) = self.waiting else { return Poll::Ready(Ok(false)) };
        while self.tx.capacity() == 0 {
            match ready!(self.tx.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(e.into())),
                None => return Poll::Ready(Err(h2::Error::from(h2::Reason::CANCEL).into())),
            }
        }
        if let Some((chunk, _)) = self.waiting.take() {
            self.tx.send_data(chunk, end)?;
        }
        Poll::Ready(Ok(end))
    }
}

impl Future for Pipe {
    type Output = Result<(), PipeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        use http_body::Body as _;
        let this = self.get_mut();
        loop {
            // Registered while waiting for the body or for window: a reset ends the pipe.
            if this.watch_resets
                && let Poll::Ready(reason) = this.tx.poll_reset(cx)
            {
                return Poll::Ready(Err(reason.map_or_else(PipeError::from, |r| h2::Error::from(r).into())));
            }
            if ready!(this.poll_waiting(cx))? {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let end = this.body.is_end_stream();
                        if chunk.is_empty() {
                            this.tx.send_data(chunk, end)?;
                            if end {
                                return Poll::Ready(Ok(()));
                            }
                            continue;
                        }
                        // One byte claimed, not the chunk: h2 raises the claim as it sends, and
                        // a waiting stream does not pin the connection's window (hyper's rule).
                        this.tx.reserve_capacity(1);
                        this.waiting = Some((chunk, end));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return this.send_trailers(trailers);
                        }
                    }
                },
                Some(Err(e)) => {
                    this.tx.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Poll::Ready(Err(PipeError::Body(e)));
                }
                None => return Poll::Ready(this.tx.send_data(Bytes::new(), true).map_err(PipeError::from)),
            }
        }
    }
}
