//! Header blocks in: HEADERS and CONTINUATION frames gathered (bounded: the CONTINUATION
//! flood guard), decoded, and turned into a stream's opening or its request's trailers.

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::super::body::{Inbound, RecvBody};
use super::super::request::{self, Malformed};
use super::super::stream::{Recv, Stream, Task};
use super::super::wake::Part;
use super::super::{
    MAX_CONCURRENT_STREAMS, MAX_CONTINUATION_FRAMES, MAX_HEADER_BLOCK_BYTES, MAX_HEADER_LIST_BYTES, STREAM_WINDOW,
};
use super::{Conn, Partial, Phase, call, calm, protocol};
use crate::core::http2::frame::{self, Head, ProtocolError, Reason, flags};
use crate::core::http2::hpack::HpackError;
use crate::sys::task::AbortOnDrop;

impl Conn {
    pub(super) fn on_headers(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let range = frame::header_block(head, payload)?;
        let end_stream = head.has(flags::END_STREAM);
        if head.has(flags::END_HEADERS) {
            return self.on_block(head.stream, end_stream, &payload[range]);
        }
        if range.len() > MAX_HEADER_BLOCK_BYTES {
            return Err(calm("a header block too large"));
        }
        let block = payload[range].to_vec();
        self.partial = Some(Partial { stream: head.stream, end_stream, block, frames: 1 });
        Ok(())
    }

    pub(super) fn on_continuation(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(protocol("CONTINUATION without HEADERS"));
        };
        if head.stream != partial.stream {
            return Err(protocol("CONTINUATION on another stream"));
        }
        partial.frames += 1;
        if partial.block.len() + payload.len() > MAX_HEADER_BLOCK_BYTES || partial.frames > MAX_CONTINUATION_FRAMES {
            return Err(calm("a header block too large"));
        }
        partial.block.extend_from_slice(payload);
        if !head.has(flags::END_HEADERS) {
            return Ok(());
        }
        let Some(Partial { stream, end_stream, block, .. }) = self.partial.take() else { return Ok(()) };
        self.on_block(stream, end_stream, &block)
    }

    /// A whole header block: a request, or a request's trailers.
    fn on_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), ProtocolError> {
        // Decoded whatever becomes of it: the table must stay in step with the client's.
        let fields = match self.decoder.decode(block, MAX_HEADER_LIST_BYTES as usize) {
            Ok(fields) => Some(fields),
            Err(HpackError::TooLarge(_)) => None,
            Err(HpackError::Malformed) => {
                return Err(ProtocolError { reason: Reason::COMPRESSION_ERROR, what: "a malformed header block" });
            }
        };
        if self.streams.contains_key(&id) {
            return self.on_trailers(id, end_stream, fields);
        }
        if id.is_multiple_of(2) {
            return Err(protocol("a client stream with an even id"));
        }
        if id <= self.last_id {
            if self.ignored(id) {
                return Ok(());
            }
            return Err(protocol("a stream id not above the last one"));
        }
        self.last_id = id;
        if self.phase != Phase::Open {
            // After GOAWAY: ignored (RFC 9113 §6.8); the client retries elsewhere.
            return Ok(());
        }
        self.accepted_id = id;
        self.empty_data = 0;
        if self.streams.len() >= MAX_CONCURRENT_STREAMS as usize {
            frame::write_rst(self.out.frames(), id, Reason::REFUSED_STREAM);
            self.remember_reset(id);
            return Ok(());
        }
        let Some(fields) = fields else {
            self.refuse_too_large(id, end_stream);
            return Ok(());
        };
        match request::request(fields).and_then(|req| Ok((request::content_length(req.headers())?, req))) {
            Ok((Some(n), _)) if end_stream && n != 0 => {
                self.refuse_malformed(id, Malformed("content-length without DATA"))
            }
            Ok((content_length, req)) => {
                self.open(id, req, end_stream, content_length);
                Ok(())
            }
            Err(e) => self.refuse_malformed(id, e),
        }
    }

    fn on_trailers(
        &mut self,
        id: u32,
        end_stream: bool,
        fields: Option<Vec<(Bytes, Bytes)>>,
    ) -> Result<(), ProtocolError> {
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        if stream.recv.closed {
            return self.on_closed_stream(id);
        }
        let content_ok = stream.recv.content_length.is_none_or(|n| n == stream.recv.received);
        let trailers = fields.ok_or(Malformed("trailers too large")).and_then(request::trailers);
        match trailers {
            Ok(trailers) if end_stream && content_ok => {
                stream.recv.closed = true;
                stream.inbound.finish(Some(trailers));
                self.settle(id);
                Ok(())
            }
            Ok(_) => self.refuse_malformed(id, Malformed("a second header block that does not end the stream")),
            Err(e) => self.refuse_malformed(id, e),
        }
    }

    /// A header list over the limit: 431, as hyper answered it.
    fn refuse_too_large(&mut self, id: u32, end_stream: bool) {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        self.scratch.clear();
        request::encode_response(&response, &mut self.scratch);
        frame::write_headers(self.out.frames(), id, &self.scratch, true, self.peer_max_frame);
        if !end_stream {
            frame::write_rst(self.out.frames(), id, Reason::NO_ERROR);
        }
        self.remember_reset(id);
    }

    fn refuse_malformed(&mut self, id: u32, e: Malformed) -> Result<(), ProtocolError> {
        tracing::debug!(stream = id, error = %e, "HTTP/2 stream reset");
        if self.streams.contains_key(&id) {
            return self.reset_stream(id, Reason::PROTOCOL_ERROR);
        }
        self.count_local_reset()?;
        frame::write_rst(self.out.frames(), id, Reason::PROTOCOL_ERROR);
        self.remember_reset(id);
        Ok(())
    }

    /// Opens a stream: a hot stream's opening, or the app's handler, in a task of its own.
    fn open(&mut self, id: u32, req: Request<()>, end_stream: bool, content_length: Option<u64>) {
        let wakers = self.ready.stream_wakers(id);
        let inbound = Inbound::new(self.released.clone(), wakers.waker(Part::Release).clone(), end_stream);
        let req = req.map(|()| Body::new(RecvBody::new(inbound.clone())));
        let task = match self.apps.hot.open(req) {
            Ok(opening) => Task::Opening(AbortOnDrop::spawn(opening)),
            Err(req) => Task::Handler(AbortOnDrop::spawn(call(self.apps.app.clone(), *req))),
        };
        let recv = Recv { window: i64::from(STREAM_WINDOW), closed: end_stream, content_length, received: 0 };
        let stream = Stream::new(id, wakers, inbound, recv, task, i64::from(self.peer_initial_window));
        self.streams.insert(id, stream);
    }
}
