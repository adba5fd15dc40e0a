//! One stream of a connection: the handler that answers it (a task of its own, or a hot
//! stream's opening), its response sent within the client's windows, its request body's
//! receiving state, and a hot stream's pump, polled in the connection's task.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Response, header};
use http_body::Body as _;

use super::body::{BodyError, Inbound};
use super::request;
use super::wake::{Part, StreamWakers};
use super::{MAX_SEND_BUFFER_BYTES, Pump, STREAM_WINDOW, Served};
use crate::core::http2::frame::{self, Reason};
use crate::server::http2::write::Out;
use crate::sys::task::AbortOnDrop;

/// What gives a stream its response.
pub(super) enum Task {
    /// A hot stream's opening.
    Opening(AbortOnDrop<Served>),
    /// Any other request's handler.
    Handler(AbortOnDrop<Response<Body>>),
    /// The response is on its way (or the stream was reset).
    Done,
}

/// What a stream needs of its connection while it sends.
pub(super) struct Sender<'a> {
    pub(super) out: &'a mut Out,
    /// The connection's send window.
    pub(super) window: &'a mut i64,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    pub(super) max_frame: u32,
    /// Streams waiting for connection window or room in `out`.
    pub(super) blocked: &'a mut Vec<u32>,
    /// Response heads sent (for the reset guard).
    pub(super) answered: usize,
    /// A header block being encoded.
    pub(super) scratch: &'a mut Vec<u8>,
}

/// The client's side of a stream.
pub(super) struct Recv {
    /// Bytes the client may still send before a WINDOW_UPDATE.
    pub(super) window: i64,
    /// The client ended its side (or it was reset).
    pub(super) closed: bool,
    /// `content-length`, when the request declared one, and the bytes received so far.
    pub(super) content_length: Option<u64>,
    pub(super) received: u64,
}

pub(super) struct Stream {
    pub(super) id: u32,
    pub(super) wakers: StreamWakers,
    pub(super) inbound: Arc<Inbound>,
    pub(super) recv: Recv,
    pub(super) task: Task,
    pub(super) pump: Option<Pump>,
    body: Option<Body>,
    /// A chunk of the body waiting for window (`true`: the body's last).
    waiting: Option<(Bytes, bool)>,
    /// The client's window for this stream's response.
    pub(super) send_window: i64,
    /// The response ended (END_STREAM sent) or the stream was reset.
    pub(super) send_done: bool,
    /// The response's head went out.
    pub(super) answered: bool,
    /// This server reset the stream: frames the client had in flight are ignored.
    pub(super) reset_here: bool,
    /// In its connection's blocked list.
    parked: bool,
}

impl Stream {
    pub(super) fn new(
        id: u32,
        wakers: StreamWakers,
        inbound: Arc<Inbound>,
        recv: Recv,
        task: Task,
        send_window: i64,
    ) -> Self {
        wakers.waker(Part::Task).wake_by_ref();
        Self {
            id,
            wakers,
            inbound,
            recv,
            task,
            pump: None,
            body: None,
            waiting: None,
            send_window,
            send_done: false,
            answered: false,
            reset_here: false,
            parked: false,
        }
    }

    /// Whether nothing is left to do but to forget the stream.
    pub(super) fn finished(&self) -> bool {
        matches!(self.task, Task::Done) && self.send_done && self.pump.is_none()
    }

    /// Whether a response chunk waits for window.
    pub(super) fn waits(&self) -> bool {
        self.waiting.is_some()
    }

    /// Ends the stream's work now: the handler is dropped (a task is aborted), the response
    /// with it, and the reader of the request body sees `error`. A pump runs on until it
    /// notices.
    pub(super) fn cancel(&mut self, error: BodyError) {
        self.inbound.fail(error);
        self.task = Task::Done;
        self.body = None;
        self.waiting = None;
        self.send_done = true;
        self.recv.closed = true;
    }

    /// Resets the stream from this end.
    pub(super) fn reset(&mut self, out: &mut Out, reason: Reason) {
        if !self.send_done || !self.recv.closed {
            frame::write_rst(out.frames(), self.id, reason);
        }
        self.reset_here = true;
        self.cancel(BodyError::Reset(reason));
    }

    /// Polls the handler; once it answers, sends the response's head and what of its body
    /// is ready.
    pub(super) fn poll_task(&mut self, tx: &mut Sender<'_>) {
        let mut cx = Context::from_waker(self.wakers.waker(Part::Task));
        let answer = match &mut self.task {
            Task::Opening(opening) => match Pin::new(opening).poll(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(served) => served.map(|Served { response, pump }| {
                    self.pump = pump;
                    response
                }),
            },
            Task::Handler(handler) => match Pin::new(handler).poll(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(response) => response,
            },
            Task::Done => return,
        };
        self.task = Task::Done;
        match answer {
            Ok(response) => self.start_response(response, tx),
            Err(e) => {
                tracing::debug!(error = %e, "a request handler failed");
                self.reset(tx.out, Reason::INTERNAL_ERROR);
            }
        }
        if self.pump.is_some() {
            self.wakers.waker(Part::Pump).wake_by_ref();
        }
    }

    fn start_response(&mut self, response: Response<Body>, tx: &mut Sender<'_>) {
        let (mut parts, body) = response.into_parts();
        let end = body.is_end_stream();
        if !end && let Some(len) = body.size_hint().exact() {
            parts.headers.entry(header::CONTENT_LENGTH).or_insert_with(|| len.into());
        }
        tx.scratch.clear();
        request::encode_response(&Response::from_parts(parts, ()), tx.scratch);
        frame::write_headers(tx.out.frames(), self.id, tx.scratch, end, tx.max_frame);
        self.answered = true;
        tx.answered += 1;
        if end {
            self.send_done = true;
        } else {
            self.body = Some(body);
            self.poll_send(tx);
        }
    }

    /// Sends what the response body has, within the windows and the connection's buffer.
    pub(super) fn poll_send(&mut self, tx: &mut Sender<'_>) {
        self.parked = false;
        loop {
            if tx.out.len() >= MAX_SEND_BUFFER_BYTES {
                return self.park(tx);
            }
            if self.waiting.is_some() {
                if !self.send_waiting(tx) {
                    return;
                }
                continue;
            }
            let Some(body) = self.body.as_mut() else { return };
            let mut cx = Context::from_waker(self.wakers.waker(Part::Send));
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => {
                        let end = body.is_end_stream();
                        if !chunk.is_empty() || end {
                            self.waiting = Some((chunk, end));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            tx.scratch.clear();
                            request::encode_trailers(&trailers, tx.scratch);
                            frame::write_headers(tx.out.frames(), self.id, tx.scratch, true, tx.max_frame);
                            self.end_body();
                            return;
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "a response body failed");
                    return self.reset(tx.out, Reason::INTERNAL_ERROR);
                }
                Poll::Ready(None) => {
                    frame::write_data_head(tx.out.frames(), self.id, 0, true);
                    return self.end_body();
                }
            }
        }
    }

    fn end_body(&mut self) {
        self.body = None;
        self.send_done = true;
    }

    /// Sends as much of the waiting chunk as the windows allow, a frame at most
    /// `max_frame` long each; `false` if some is left.
    fn send_waiting(&mut self, tx: &mut Sender<'_>) -> bool {
        while let Some((chunk, end)) = self.waiting.as_mut() {
            let room = self.send_window.min(*tx.window).min(i64::from(tx.max_frame)).max(0);
            let n = chunk.len().min(room as usize);
            if n == 0 && !chunk.is_empty() {
                // Window for the stream comes with its WINDOW_UPDATE; the connection's is shared.
                if self.send_window > 0 {
                    self.park(tx);
                }
                return false;
            }
            let whole = n == chunk.len();
            let part = if whole { std::mem::take(chunk) } else { chunk.split_to(n) };
            let end = whole && *end;
            frame::write_data_head(tx.out.frames(), self.id, n, end);
            tx.out.payload(part);
            self.send_window -= n as i64;
            *tx.window -= n as i64;
            if whole {
                self.waiting = None;
                if end {
                    self.end_body();
                }
            }
        }
        true
    }

    fn park(&mut self, tx: &mut Sender<'_>) {
        if !self.parked {
            self.parked = true;
            tx.blocked.push(self.id);
        }
    }

    /// Polls the pump; `true` once it ended.
    pub(super) fn poll_pump(&mut self) -> bool {
        let Some(pump) = self.pump.as_mut() else { return true };
        let mut cx = Context::from_waker(self.wakers.waker(Part::Pump));
        if pump.as_mut().poll(&mut cx).is_ready() {
            self.pump = None;
        }
        self.pump.is_none()
    }

    /// The window the reader gave back since the last call, to announce (none once the client
    /// ended its side: it sends nothing more).
    pub(super) fn take_release(&mut self) -> Option<u32> {
        let n = self.inbound.take_released();
        if n == 0 || self.recv.closed {
            return None;
        }
        let n = n.min(STREAM_WINDOW as usize) as u32;
        self.recv.window += i64::from(n);
        Some(n)
    }
}
