//! The connection's state: frames in (RFC 9113 §5, §6), what they do to the streams and the
//! windows, and the frames this server answers with. No socket here: the driver
//! (`super::driver`) reads into a buffer and hands whole frames over, and writes `out`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use tonic::codegen::Service;

mod headers;

use super::body::{BodyError, ConnRelease};
use super::stream::{Sender, Stream};
use super::wake::{Conn as ConnPart, Part, Ready};
use super::write::Out;
use super::{
    Apps, CONNECTION_RELEASE_BYTES, CONNECTION_WINDOW, MAX_CONCURRENT_STREAMS, MAX_EMPTY_DATA_FRAMES, MAX_FRAME_BYTES,
    MAX_HEADER_LIST_BYTES, MAX_LOCAL_ERROR_RESETS, MAX_PENDING_ACCEPT_RESETS, RECENT_RESETS, STREAM_WINDOW,
};
use crate::core::http2::frame::{self, GoAway, Head, Kind, ProtocolError, Reason, Settings, flags};
use crate::core::http2::hpack;

/// A connection error: GOAWAY with this, then the connection closes.
fn calm(what: &'static str) -> ProtocolError {
    ProtocolError { reason: Reason::ENHANCE_YOUR_CALM, what }
}

fn protocol(what: &'static str) -> ProtocolError {
    ProtocolError { reason: Reason::PROTOCOL_ERROR, what }
}

fn flow(what: &'static str) -> ProtocolError {
    ProtocolError { reason: Reason::FLOW_CONTROL_ERROR, what }
}

/// Hashes a stream id with one multiplication: ids are the client's, but they only grow and
/// at most `MAX_CONCURRENT_STREAMS` are in the map, so there is no table to flood, and
/// SipHash cost a few hundred instructions per keystroke over the lookups of a frame.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 << 8 | u64::from(b));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; the high half folded in so the table's low bits vary too.
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// A header block arriving in pieces (HEADERS, then CONTINUATIONs).
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: usize,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Serving.
    Open,
    /// GOAWAY sent (the server drains, or the client said goodbye): the open streams finish.
    Draining,
    /// A connection error: GOAWAY queued, nothing more read.
    Closing,
}

pub(super) struct Conn {
    apps: Apps,
    pub(super) ready: Arc<Ready>,
    pub(super) streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    decoder: hpack::Decoder,
    pub(super) out: Out,
    pub(super) phase: Phase,
    /// The highest stream id the client used.
    last_id: u32,
    /// The highest stream id this server took (GOAWAY names it).
    accepted_id: u32,
    /// The last stream id of the GOAWAY this server sent: later streams are ignored.
    goaway_last: Option<u32>,
    /// Streams this server reset lately: frames the client had in flight for them are ignored.
    recent_resets: VecDeque<u32>,
    partial: Option<Partial>,
    /// Whether the client's SETTINGS (its first frame) came.
    settled: bool,
    // Flow control, this server sending.
    send_window: i64,
    peer_initial_window: u32,
    peer_max_frame: u32,
    blocked: Vec<u32>,
    // Flow control, the client sending.
    recv_window: i64,
    /// Connection window to give back that no reader holds (padding, dropped data).
    release_pending: usize,
    released: Arc<ConnRelease>,
    // The guards.
    local_resets: usize,
    early_resets: usize,
    empty_data: usize,
    scratch: Vec<u8>,
}

impl Conn {
    pub(super) fn new(apps: Apps, ready: Arc<Ready>) -> Self {
        let released = ConnRelease::new(ready.conn_waker(ConnPart::Release));
        let mut out = Out::default();
        frame::write_settings(
            out.frames(),
            &[
                (frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (frame::SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_BYTES),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES),
            ],
        );
        frame::write_window_update(out.frames(), 0, CONNECTION_WINDOW - frame::DEFAULT_WINDOW);
        Self {
            apps,
            ready,
            streams: HashMap::default(),
            decoder: hpack::Decoder::new(),
            out,
            phase: Phase::Open,
            last_id: 0,
            accepted_id: 0,
            goaway_last: None,
            recent_resets: VecDeque::with_capacity(RECENT_RESETS),
            partial: None,
            settled: false,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            blocked: Vec::new(),
            recv_window: i64::from(CONNECTION_WINDOW),
            release_pending: 0,
            released,
            local_resets: 0,
            early_resets: 0,
            empty_data: 0,
            scratch: Vec::new(),
        }
    }

    /// Handles one whole frame (`payload`: the frame's bytes after its head, shared so that
    /// DATA reaches its reader without a copy). A connection error sends GOAWAY and closes.
    pub(super) fn on_frame(&mut self, head: Head, payload: Bytes) {
        if self.phase == Phase::Closing {
            return;
        }
        if let Err(e) = self.dispatch(head, payload) {
            self.close(e);
        }
    }

    /// Sends GOAWAY for a connection error; the driver closes once it went out.
    pub(super) fn close(&mut self, error: ProtocolError) {
        tracing::debug!(%error, "HTTP/2 connection error");
        frame::write_goaway(self.out.frames(), self.accepted_id, error.reason, error.what.as_bytes());
        self.phase = Phase::Closing;
        self.fail_all(BodyError::Closed);
    }

    /// Ends every stream's work (the connection is going away).
    pub(super) fn fail_all(&mut self, error: BodyError) {
        for stream in self.streams.values_mut() {
            stream.cancel(error);
        }
    }

    /// Starts a graceful shutdown: GOAWAY with the last stream taken; open streams finish.
    pub(super) fn drain(&mut self) {
        if self.phase == Phase::Open {
            frame::write_goaway(self.out.frames(), self.accepted_id, Reason::NO_ERROR, b"");
            self.goaway_last = Some(self.accepted_id);
            self.phase = Phase::Draining;
        }
    }

    /// Whether the connection has nothing left to serve.
    pub(super) fn done(&self) -> bool {
        match self.phase {
            Phase::Open => false,
            Phase::Draining => self.streams.is_empty(),
            Phase::Closing => true,
        }
    }

    fn dispatch(&mut self, head: Head, payload: Bytes) -> Result<(), ProtocolError> {
        if !self.settled {
            if head.kind != Kind::Settings || head.has(flags::ACK) {
                return Err(protocol("the client's first frame was not SETTINGS"));
            }
            self.settled = true;
        }
        if self.partial.is_some() && head.kind != Kind::Continuation {
            return Err(protocol("a header block interrupted"));
        }
        match head.kind {
            Kind::Data => self.on_data(&head, payload),
            Kind::Headers => self.on_headers(&head, &payload),
            Kind::Continuation => self.on_continuation(&head, &payload),
            Kind::Priority => frame::check_priority(&head, &payload),
            Kind::RstStream => self.on_reset(&head, &payload),
            Kind::Settings => self.on_settings(&head, &payload),
            Kind::Ping => {
                let data = frame::ping(&head, &payload)?;
                if !head.has(flags::ACK) {
                    frame::write_ping(self.out.frames(), true, data);
                }
                Ok(())
            }
            Kind::GoAway => {
                let GoAway { reason, .. } = frame::goaway(&head, &payload)?;
                tracing::debug!(%reason, "the client sent GOAWAY");
                // The client opens no more streams: finish the open ones and close.
                if self.phase == Phase::Open {
                    self.phase = Phase::Draining;
                }
                Ok(())
            }
            Kind::WindowUpdate => self.on_window_update(&head, &payload),
            Kind::PushPromise => Err(protocol("PUSH_PROMISE from a client")),
            Kind::Unknown(_) => Ok(()),
        }
    }

    /// Whether `id` names a stream the client has not opened yet (or never may: even ids).
    fn idle(&self, id: u32) -> bool {
        id > self.last_id || id.is_multiple_of(2)
    }

    /// Whether frames on closed stream `id` are ignored: this server reset it lately, or it
    /// came after this server's GOAWAY (RFC 9113 §6.8).
    fn ignored(&self, id: u32) -> bool {
        self.recent_resets.contains(&id) || self.goaway_last.is_some_and(|last| id > last)
    }

    fn on_data(&mut self, head: &Head, payload: Bytes) -> Result<(), ProtocolError> {
        let range = frame::data_payload(head, &payload)?;
        let len = payload.len();
        let data_len = range.len();
        if len as i64 > self.recv_window {
            return Err(flow("DATA beyond the connection window"));
        }
        self.recv_window -= len as i64;
        let end = head.has(flags::END_STREAM);
        if data_len == 0 && !end {
            self.empty_data += 1;
            if self.empty_data > MAX_EMPTY_DATA_FRAMES {
                return Err(calm("too many empty DATA frames"));
            }
        } else {
            self.empty_data = 0;
        }
        let id = head.stream;
        let Some(stream) = self.streams.get_mut(&id).filter(|s| !s.recv.closed) else {
            self.release_pending += len;
            return self.on_closed_stream(id);
        };
        if len as i64 > stream.recv.window {
            self.release_pending += len;
            return self.reset_stream(id, Reason::FLOW_CONTROL_ERROR);
        }
        stream.recv.window -= len as i64;
        stream.recv.received += data_len as u64;
        if stream.recv.content_length.is_some_and(|n| stream.recv.received > n || (end && stream.recv.received != n)) {
            self.release_pending += len;
            return self.reset_stream(id, Reason::PROTOCOL_ERROR);
        }
        // Padding goes back at once: the connection's now, the stream's with the reader's.
        if len > data_len {
            self.release_pending += len - data_len;
            stream.inbound.release_padding(len - data_len);
        }
        if data_len > 0 && !stream.inbound.push(payload.slice(range)) {
            self.release_pending += data_len;
        }
        if end {
            stream.recv.closed = true;
            stream.inbound.finish(None);
            self.settle(id);
        }
        Ok(())
    }

    /// DATA (or trailers) for a stream that is closed, or was never opened.
    fn on_closed_stream(&mut self, id: u32) -> Result<(), ProtocolError> {
        if self.idle(id) {
            return Err(protocol("a frame on a stream not opened"));
        }
        if let Some(stream) = self.streams.get(&id) {
            if stream.reset_here {
                return Ok(());
            }
            // Half-closed by the client, which sends more.
            return self.reset_stream(id, Reason::STREAM_CLOSED);
        }
        if self.ignored(id) {
            return Ok(());
        }
        self.count_local_reset()?;
        frame::write_rst(self.out.frames(), id, Reason::STREAM_CLOSED);
        self.remember_reset(id);
        Ok(())
    }

    fn on_reset(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let reason = frame::rst_reason(head, payload)?;
        let id = head.stream;
        if self.idle(id) {
            return Err(protocol("RST_STREAM on a stream not opened"));
        }
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        if !stream.answered {
            // The "rapid reset" guard: streams reset before their answer cost a handler each.
            self.early_resets += 1;
            if self.early_resets > MAX_PENDING_ACCEPT_RESETS {
                return Err(calm("too many streams reset before their response"));
            }
        }
        stream.cancel(BodyError::Reset(reason));
        self.settle(id);
        Ok(())
    }

    fn on_settings(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let settings = Settings::parse(head, payload)?;
        if head.has(flags::ACK) {
            return Ok(());
        }
        if let Some(max) = settings.max_frame_size {
            self.peer_max_frame = max;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer_initial_window);
            self.peer_initial_window = window;
            for stream in self.streams.values_mut() {
                stream.send_window += delta;
                if stream.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(flow("SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window"));
                }
                if delta > 0 && stream.waits() {
                    stream.wakers.waker(Part::Send).wake_by_ref();
                }
            }
        }
        frame::write_settings_ack(self.out.frames());
        Ok(())
    }

    fn on_window_update(&mut self, head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
        let id = head.stream;
        let increment = match frame::window_increment(head, payload) {
            Ok(increment) => i64::from(increment),
            Err(e) if id != 0 && e.reason == Reason::PROTOCOL_ERROR && self.streams.contains_key(&id) => {
                return self.reset_stream(id, e.reason);
            }
            Err(e) => return Err(e),
        };
        if id == 0 {
            self.send_window += increment;
            if self.send_window > i64::from(frame::MAX_WINDOW) {
                return Err(flow("a connection window above 2^31-1"));
            }
            self.unblock();
            return Ok(());
        }
        if self.idle(id) {
            return Err(protocol("WINDOW_UPDATE on a stream not opened"));
        }
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        stream.send_window += increment;
        if stream.send_window > i64::from(frame::MAX_WINDOW) {
            return self.reset_stream(id, Reason::FLOW_CONTROL_ERROR);
        }
        if stream.waits() {
            stream.wakers.waker(Part::Send).wake_by_ref();
        }
        Ok(())
    }

    /// Streams that waited for connection window or buffer room try again.
    pub(super) fn unblock(&mut self) {
        for id in self.blocked.drain(..) {
            if let Some(stream) = self.streams.get(&id) {
                stream.wakers.waker(Part::Send).wake_by_ref();
            }
        }
    }

    /// A stream error found here: RST_STREAM, counted against the client.
    fn reset_stream(&mut self, id: u32, reason: Reason) -> Result<(), ProtocolError> {
        self.count_local_reset()?;
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.reset(&mut self.out, reason);
        }
        self.settle(id);
        Ok(())
    }

    fn count_local_reset(&mut self) -> Result<(), ProtocolError> {
        self.local_resets += 1;
        if self.local_resets > MAX_LOCAL_ERROR_RESETS {
            return Err(calm("too many stream errors"));
        }
        Ok(())
    }

    fn remember_reset(&mut self, id: u32) {
        if self.recent_resets.len() == RECENT_RESETS {
            self.recent_resets.pop_front();
        }
        self.recent_resets.push_back(id);
    }

    /// Polls a woken part of a stream, then forgets the stream if it is done.
    pub(super) fn poll_stream(&mut self, id: u32, part: Part) {
        let Some(stream) = self.streams.get_mut(&id) else { return };
        stream.wakers.clear(part);
        let mut tx = Sender {
            out: &mut self.out,
            window: &mut self.send_window,
            max_frame: self.peer_max_frame,
            blocked: &mut self.blocked,
            answered: 0,
            scratch: &mut self.scratch,
        };
        match part {
            Part::Task => stream.poll_task(&mut tx),
            Part::Send => stream.poll_send(&mut tx),
            Part::Pump => {
                stream.poll_pump();
            }
            Part::Release => {
                if let Some(n) = stream.take_release() {
                    frame::write_window_update(tx.out.frames(), id, n);
                }
            }
        }
        self.early_resets = self.early_resets.saturating_sub(tx.answered);
        self.settle(id);
    }

    /// Forgets a stream whose work is over. A client still sending to it is told to stop
    /// (RST_STREAM NO_ERROR, as hyper does once a response ended before its request).
    fn settle(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else { return };
        if !stream.finished() {
            return;
        }
        let (recv_open, reset_here) = (!stream.recv.closed, stream.reset_here);
        if recv_open && !reset_here {
            frame::write_rst(self.out.frames(), id, Reason::NO_ERROR);
        }
        if recv_open || reset_here {
            self.remember_reset(id);
        }
        if let Some(stream) = self.streams.remove(&id) {
            stream.inbound.fail(BodyError::Closed);
        }
    }

    /// Gives the connection's window back once enough of it was read (or dropped).
    pub(super) fn release(&mut self) {
        if self.release_pending + self.released.pending() < CONNECTION_RELEASE_BYTES {
            return;
        }
        let n = (self.release_pending + self.released.take()).min(frame::MAX_WINDOW as usize);
        self.release_pending = 0;
        if self.phase != Phase::Closing && n > 0 {
            frame::write_window_update(self.out.frames(), 0, n as u32);
            self.recv_window += n as i64;
        }
    }

    /// The streams with a pump still running (the connection ends; they finish elsewhere).
    pub(super) fn take_pumps(&mut self) -> Vec<super::Pump> {
        self.fail_all(BodyError::Closed);
        self.streams.drain().filter_map(|(_, mut s)| s.pump.take()).collect()
    }
}

/// Serves a request with `app`.
async fn call(mut app: axum::Router, req: Request<Body>) -> Response<Body> {
    let ready = std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut app, cx)).await;
    match ready {
        Ok(()) => match app.call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    }
}
