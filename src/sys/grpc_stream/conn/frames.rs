//! The connection task's handling of each frame the server sends (RFC 9113 §6): connection
//! errors are returned (the caller sends GOAWAY and ends the connection), stream errors reset
//! the stream here.

use http::HeaderMap;
use tonic::Status;

use super::{Driver, MAX_HEADER_LIST, Partial};
use crate::core::http2::frame::{self, Head, Kind, MAX_WINDOW, ProtocolError, Reason, Settings, flags};
use crate::core::http2::hpack::HpackError;
use crate::sys::grpc_stream::headers::{response_head, trailers};
use crate::sys::grpc_stream::shared::End;
use crate::sys::grpc_stream::status::{going_away, reset_by_server, stream_failed};

/// Most bytes of one encoded header block (HEADERS and CONTINUATIONs) we gather: four times the
/// header list we accept, which HPACK-encoded fields never exceed.
const MAX_HEADER_BLOCK: usize = 4 * MAX_HEADER_LIST;
/// Most frames one header block may span (an endless run of empty CONTINUATIONs is an attack).
const MAX_BLOCK_FRAMES: u32 = 64;

fn protocol(what: &'static str) -> ProtocolError {
    ProtocolError { reason: Reason::PROTOCOL_ERROR, what }
}

/// Where a frame's stream stands.
enum Found {
    Open(usize),
    /// Ended (or reset by us): late frames are ignored.
    Closed,
    /// Never opened by us (and the server opens none): a connection error for most frames.
    Idle,
}

impl Driver {
    fn find(&self, id: u32) -> Found {
        match self.index(id) {
            Some(i) => Found::Open(i),
            None if id % 2 == 1 && id <= self.last_started => Found::Closed,
            None => Found::Idle,
        }
    }

    pub(super) fn on_frame(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        if self.headers.is_some()
            && (head.kind != Kind::Continuation || self.headers.as_ref().map(|p| p.stream) != Some(head.stream))
        {
            return Err(protocol("a frame inside a header block"));
        }
        if !self.greeted && (head.kind != Kind::Settings || head.has(flags::ACK)) {
            return Err(protocol("the server's preface is not a SETTINGS frame"));
        }
        match head.kind {
            Kind::Data => self.on_data(head, payload),
            Kind::Headers => self.on_headers(head, payload),
            Kind::Continuation => self.on_continuation(head, payload),
            Kind::Settings => self.on_settings(head, payload),
            Kind::Ping => self.on_ping(head, payload),
            Kind::GoAway => self.on_goaway(head, payload),
            Kind::WindowUpdate => self.on_window_update(head, payload),
            Kind::RstStream => self.on_reset(head, payload),
            Kind::Priority => self.on_priority(head, payload),
            Kind::PushPromise => Err(protocol("PUSH_PROMISE while push is disabled")),
            Kind::Unknown(_) => Ok(()),
        }
    }

    fn on_data(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let range = frame::data_payload(head, payload)?;
        let len = payload.len() as i64;
        if len > self.recv_window {
            return Err(ProtocolError {
                reason: Reason::FLOW_CONTROL_ERROR,
                what: "DATA beyond the connection window",
            });
        }
        self.recv_window -= len;
        let i = match self.find(head.stream) {
            Found::Open(i) => i,
            Found::Closed => {
                self.shared.release(payload.len());
                return Ok(());
            }
            Found::Idle => return Err(protocol("DATA on a stream that was never opened")),
        };
        let open = &mut self.streams[i];
        if !open.responded || len > open.recv_window {
            self.shared.release(payload.len());
            let (reason, what) = match open.responded {
                false => (Reason::PROTOCOL_ERROR, "DATA before the response headers"),
                true => (Reason::FLOW_CONTROL_ERROR, "DATA beyond the stream's window"),
            };
            self.reset(i, reason, Some(stream_failed(format_args!("the server sent {what} ({reason})"))));
            return Ok(());
        }
        open.recv_window -= len;
        let data = &payload[range];
        let padding = payload.len() - data.len();
        if padding > 0 {
            self.shared.release(padding);
        }
        if !open.stream.deliver(data, padding) {
            self.shared.release(data.len());
        }
        if head.has(flags::END_STREAM) {
            self.end_stream(i, End::Trailers(HeaderMap::new()));
        }
        Ok(())
    }

    fn on_headers(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let range = frame::header_block(head, payload)?;
        let partial = Partial {
            stream: head.stream,
            end_stream: head.has(flags::END_STREAM),
            block: payload[range].to_vec(),
            frames: 1,
        };
        self.gather(partial, head.has(flags::END_HEADERS))
    }

    fn on_continuation(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let Some(mut partial) = self.headers.take() else {
            return Err(protocol("CONTINUATION without HEADERS"));
        };
        partial.block.extend_from_slice(payload);
        partial.frames += 1;
        self.gather(partial, head.has(flags::END_HEADERS))
    }

    /// Keeps a header block until its last frame, then decodes it.
    fn gather(&mut self, partial: Partial, complete: bool) -> Result<(), ProtocolError> {
        if partial.block.len() > MAX_HEADER_BLOCK || partial.frames > MAX_BLOCK_FRAMES {
            return Err(ProtocolError { reason: Reason::ENHANCE_YOUR_CALM, what: "a header block over our limit" });
        }
        if !complete {
            self.headers = Some(partial);
            return Ok(());
        }
        // Decoded whatever the stream's state: the table must stay in step with the server's.
        let decoded = self.hpack.decode(&partial.block, MAX_HEADER_LIST);
        let i = match self.find(partial.stream) {
            Found::Open(i) => i,
            Found::Closed => return Ok(()),
            Found::Idle => return Err(protocol("HEADERS on a stream that was never opened")),
        };
        match decoded {
            Ok(fields) => self.on_fields(i, partial.end_stream, fields),
            Err(HpackError::Malformed) => {
                return Err(ProtocolError { reason: Reason::COMPRESSION_ERROR, what: "a malformed header block" });
            }
            Err(HpackError::TooLarge(_)) => {
                let status = Status::resource_exhausted("the server's response headers exceed our header list limit");
                self.reset(i, Reason::PROTOCOL_ERROR, Some(status));
            }
        }
        Ok(())
    }

    /// A decoded block on open stream `i`: the response, an informational answer, or trailers.
    fn on_fields(&mut self, i: usize, end_stream: bool, fields: Vec<(bytes::Bytes, bytes::Bytes)>) {
        let malformed = |what| stream_failed(format_args!("the server sent a malformed response: {what}"));
        if self.streams[i].responded {
            return match (end_stream, trailers(fields)) {
                (true, Ok(trailers)) => self.end_stream(i, End::Trailers(trailers)),
                (false, _) => {
                    self.reset(i, Reason::PROTOCOL_ERROR, Some(malformed("headers in the middle of the body")))
                }
                (_, Err(what)) => self.reset(i, Reason::PROTOCOL_ERROR, Some(malformed(what))),
            };
        }
        match response_head(fields) {
            Ok((status, _)) if status.is_informational() && !end_stream => {}
            Ok((status, headers)) if !status.is_informational() => {
                let open = &mut self.streams[i];
                open.responded = true;
                let end = end_stream.then(|| headers.clone());
                open.stream.respond(status, headers);
                if let Some(trailers) = end {
                    self.end_stream(i, End::Trailers(trailers));
                }
            }
            Ok(_) => self.reset(i, Reason::PROTOCOL_ERROR, Some(malformed("an informational answer ended the stream"))),
            Err(what) => self.reset(i, Reason::PROTOCOL_ERROR, Some(malformed(what))),
        }
    }

    fn on_settings(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let settings = Settings::parse(head, payload)?;
        if head.has(flags::ACK) {
            return Ok(());
        }
        self.greeted = true;
        if settings.enable_push == Some(1) {
            return Err(protocol("a server's SETTINGS_ENABLE_PUSH of 1"));
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.initial_window);
            self.initial_window = window;
            for open in &mut self.streams {
                open.send_window += delta;
                if open.send_window > i64::from(MAX_WINDOW) {
                    return Err(ProtocolError {
                        reason: Reason::FLOW_CONTROL_ERROR,
                        what: "a stream window above 2^31-1",
                    });
                }
            }
            self.retry = true;
        }
        if let Some(size) = settings.max_frame_size {
            self.max_frame = size as usize;
        }
        if settings.max_concurrent_streams.is_some() || settings.max_header_list_size.is_some() {
            let mut opening = self.shared.opening();
            if let Some(max) = settings.max_concurrent_streams {
                opening.max_concurrent = max;
            }
            if let Some(max) = settings.max_header_list_size {
                opening.max_header_list = max;
            }
            drop(opening);
            self.shared.wake_openers();
        }
        frame::write_settings_ack(&mut self.out.buf);
        Ok(())
    }

    fn on_ping(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let data = frame::ping(head, payload)?;
        match head.has(flags::ACK) {
            true => self.keepalive.pong(data),
            false => frame::write_ping(&mut self.out.buf, true, data),
        }
        Ok(())
    }

    /// GOAWAY: streams above its last id were not processed and fail UNAVAILABLE (safe to
    /// retry), no stream opens any more, and the connection ends once the others have.
    fn on_goaway(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let goaway = frame::goaway(head, payload)?;
        let status = going_away(goaway.reason);
        for (stream, _) in self.shared.refuse(status.clone()) {
            stream.finish(End::Failed(status.clone()));
        }
        let keep = self.streams.partition_point(|o| o.stream.id <= goaway.last_stream);
        for open in self.streams.drain(keep..) {
            open.stream.finish(End::Failed(status.clone()));
            self.shared.stream_closed();
        }
        self.going_away = Some(goaway.reason);
        Ok(())
    }

    fn on_window_update(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let increment = match frame::window_increment(head, payload) {
            Ok(increment) => i64::from(increment),
            Err(e) if head.stream != 0 && e.reason == Reason::PROTOCOL_ERROR => {
                if let Found::Open(i) = self.find(head.stream) {
                    self.reset(i, e.reason, Some(stream_failed(e)));
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let window = match head.stream {
            0 => &mut self.send_window,
            id => match self.find(id) {
                Found::Open(i) => &mut self.streams[i].send_window,
                Found::Closed => return Ok(()),
                Found::Idle => return Err(protocol("WINDOW_UPDATE on a stream that was never opened")),
            },
        };
        *window += increment;
        if *window > i64::from(MAX_WINDOW) {
            let e = ProtocolError { reason: Reason::FLOW_CONTROL_ERROR, what: "a window above 2^31-1" };
            match self.find(head.stream) {
                Found::Open(i) => self.reset(i, e.reason, Some(stream_failed(e))),
                _ => return Err(e),
            }
        }
        self.retry = true;
        Ok(())
    }

    fn on_reset(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let reason = frame::rst_reason(head, payload)?;
        match self.find(head.stream) {
            Found::Open(i) => {
                let open = self.streams.remove(i);
                open.stream.finish(End::Failed(reset_by_server(reason)));
                self.shared.stream_closed();
                Ok(())
            }
            Found::Closed => Ok(()),
            Found::Idle => Err(protocol("RST_STREAM on a stream that was never opened")),
        }
    }

    fn on_priority(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        match frame::check_priority(head, payload) {
            Ok(()) => Ok(()),
            Err(e) if head.stream == 0 => Err(e),
            Err(e) => {
                if let Found::Open(i) = self.find(head.stream) {
                    self.reset(i, e.reason, Some(stream_failed(e)));
                }
                Ok(())
            }
        }
    }
}
