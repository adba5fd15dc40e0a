//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte head, the payload parsers (each checks what
//! the RFC says a receiver must check, and names the error code to answer with), and writers
//! that append whole frames to a connection's write buffer.
//!
//! Parsers take a frame's head and its complete payload: the connection reads a frame whole
//! (bounded by its SETTINGS_MAX_FRAME_SIZE) before it looks inside.

use std::fmt;
use std::ops::Range;

/// What a client sends first (RFC 9113 §3.4), before its SETTINGS.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame's head: length (24 bits), type, flags, stream id (31 bits).
pub(crate) const HEAD_LEN: usize = 9;
/// Every stream's and the connection's flow-control window until SETTINGS or WINDOW_UPDATE
/// say otherwise.
pub(crate) const DEFAULT_WINDOW: u32 = 65_535;
/// Largest frame payload a peer may send before our SETTINGS_MAX_FRAME_SIZE says more.
pub(crate) const DEFAULT_MAX_FRAME: u32 = 16_384;
/// Largest value SETTINGS_MAX_FRAME_SIZE may take.
pub(crate) const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;
/// Largest flow-control window (and window increment).
pub(crate) const MAX_WINDOW: u32 = (1 << 31) - 1;

pub(crate) const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;
pub(crate) const SETTINGS_ENABLE_PUSH: u16 = 2;
pub(crate) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;
pub(crate) const SETTINGS_MAX_FRAME_SIZE: u16 = 5;
pub(crate) const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 6;

/// Frame flags. END_STREAM and ACK share a bit: which one it is depends on the frame's type.
pub(crate) mod flags {
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const ACK: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;
    pub(crate) const PADDED: u8 = 0x8;
    pub(crate) const PRIORITY: u8 = 0x20;
}

/// A frame's type. Unknown types must be ignored (RFC 9113 §4.1), so they are kept, not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    Unknown(u8),
}

impl Kind {
    fn from_byte(byte: u8) -> Kind {
        match byte {
            0 => Kind::Data,
            1 => Kind::Headers,
            2 => Kind::Priority,
            3 => Kind::RstStream,
            4 => Kind::Settings,
            5 => Kind::PushPromise,
            6 => Kind::Ping,
            7 => Kind::GoAway,
            8 => Kind::WindowUpdate,
            9 => Kind::Continuation,
            other => Kind::Unknown(other),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Kind::Data => 0,
            Kind::Headers => 1,
            Kind::Priority => 2,
            Kind::RstStream => 3,
            Kind::Settings => 4,
            Kind::PushPromise => 5,
            Kind::Ping => 6,
            Kind::GoAway => 7,
            Kind::WindowUpdate => 8,
            Kind::Continuation => 9,
            Kind::Unknown(other) => other,
        }
    }
}

/// A frame's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) kind: Kind,
    pub(crate) flags: u8,
    /// The stream id, its reserved bit cleared (receivers must ignore it).
    pub(crate) stream: u32,
    /// The payload's length.
    pub(crate) len: u32,
}

impl Head {
    pub(crate) fn parse(bytes: &[u8; HEAD_LEN]) -> Head {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & MAX_WINDOW;
        Head { kind: Kind::from_byte(bytes[3]), flags: bytes[4], stream, len }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// An HTTP/2 error code (RFC 9113 §7).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reason(pub(crate) u32);

// Every code RFC 9113 defines, whether we send it or only read it from a peer.
#[allow(dead_code)]
impl Reason {
    pub(crate) const NO_ERROR: Reason = Reason(0x0);
    pub(crate) const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub(crate) const INTERNAL_ERROR: Reason = Reason(0x2);
    pub(crate) const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub(crate) const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub(crate) const STREAM_CLOSED: Reason = Reason(0x5);
    pub(crate) const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub(crate) const REFUSED_STREAM: Reason = Reason(0x7);
    pub(crate) const CANCEL: Reason = Reason(0x8);
    pub(crate) const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub(crate) const CONNECT_ERROR: Reason = Reason(0xa);
    pub(crate) const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub(crate) const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub(crate) const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            // Unknown codes must be accepted (RFC 9113 §7) and mean INTERNAL_ERROR at most.
            None => write!(f, "error code {:#x}", self.0),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a peer got wrong: the code to answer with (RST_STREAM for a stream error, GOAWAY for a
/// connection error: the caller knows which by the frame) and a short text for GOAWAY's debug
/// data and the log.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("{reason}: {what}")]
pub(crate) struct ProtocolError {
    pub(crate) reason: Reason,
    pub(crate) what: &'static str,
}

fn protocol(what: &'static str) -> ProtocolError {
    ProtocolError { reason: Reason::PROTOCOL_ERROR, what }
}

fn frame_size(what: &'static str) -> ProtocolError {
    ProtocolError { reason: Reason::FRAME_SIZE_ERROR, what }
}

/// The part of a padded payload (DATA, HEADERS) before its padding; `skip` bytes after the pad
/// length (HEADERS' priority fields) are left out too.
fn unpad(head: &Head, payload: &[u8], skip: usize) -> Result<Range<usize>, ProtocolError> {
    let (start, pad) = match head.has(flags::PADDED) {
        true => match payload.first() {
            Some(&pad) => (1, usize::from(pad)),
            None => return Err(frame_size("a padded frame without its pad length")),
        },
        false => (0, 0),
    };
    let start = start + skip;
    if start + pad > payload.len() {
        return Err(protocol("padding longer than the frame"));
    }
    Ok(start..payload.len() - pad)
}

/// DATA (RFC 9113 §6.1): the data without its padding. Flow control counts the whole payload.
pub(crate) fn data_payload(head: &Head, payload: &[u8]) -> Result<Range<usize>, ProtocolError> {
    if head.stream == 0 {
        return Err(protocol("DATA on stream 0"));
    }
    unpad(head, payload, 0)
}

/// HEADERS (RFC 9113 §6.2): the header block fragment, padding and priority fields removed.
pub(crate) fn header_block(head: &Head, payload: &[u8]) -> Result<Range<usize>, ProtocolError> {
    if head.stream == 0 {
        return Err(protocol("HEADERS on stream 0"));
    }
    let priority = if head.has(flags::PRIORITY) { 5 } else { 0 };
    let block = unpad(head, payload, priority)?;
    if priority > 0 {
        let at = block.start - priority;
        let dependency = u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
        if dependency & MAX_WINDOW == head.stream {
            return Err(protocol("a stream that depends on itself"));
        }
    }
    Ok(block)
}

/// PRIORITY (RFC 9113 §6.3): deprecated and ignored, but still checked.
pub(crate) fn check_priority(head: &Head, payload: &[u8]) -> Result<(), ProtocolError> {
    if head.stream == 0 {
        return Err(protocol("PRIORITY on stream 0"));
    }
    if payload.len() != 5 {
        return Err(frame_size("PRIORITY of other than 5 bytes"));
    }
    let dependency = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if dependency & MAX_WINDOW == head.stream {
        return Err(protocol("a stream that depends on itself"));
    }
    Ok(())
}

/// The values a SETTINGS frame carries; `None` for those it does not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) header_table_size: Option<u32>,
    pub(crate) enable_push: Option<u32>,
    pub(crate) max_concurrent_streams: Option<u32>,
    pub(crate) initial_window_size: Option<u32>,
    pub(crate) max_frame_size: Option<u32>,
    pub(crate) max_header_list_size: Option<u32>,
}

impl Settings {
    /// SETTINGS (RFC 9113 §6.5). An ACK carries nothing (and parses to no values); unknown
    /// identifiers are ignored.
    pub(crate) fn parse(head: &Head, payload: &[u8]) -> Result<Settings, ProtocolError> {
        if head.stream != 0 {
            return Err(protocol("SETTINGS on a stream"));
        }
        if head.has(flags::ACK) {
            return match payload.is_empty() {
                true => Ok(Settings::default()),
                false => Err(frame_size("a SETTINGS acknowledgement with a payload")),
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(frame_size("SETTINGS not a multiple of 6 bytes"));
        }
        let mut settings = Settings::default();
        for entry in payload.chunks_exact(6) {
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            settings.set(u16::from_be_bytes([entry[0], entry[1]]), value)?;
        }
        Ok(settings)
    }

    fn set(&mut self, id: u16, value: u32) -> Result<(), ProtocolError> {
        match id {
            SETTINGS_HEADER_TABLE_SIZE => self.header_table_size = Some(value),
            SETTINGS_ENABLE_PUSH if value > 1 => return Err(protocol("SETTINGS_ENABLE_PUSH other than 0 or 1")),
            SETTINGS_ENABLE_PUSH => self.enable_push = Some(value),
            SETTINGS_MAX_CONCURRENT_STREAMS => self.max_concurrent_streams = Some(value),
            SETTINGS_INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                return Err(ProtocolError {
                    reason: Reason::FLOW_CONTROL_ERROR,
                    what: "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                });
            }
            SETTINGS_INITIAL_WINDOW_SIZE => self.initial_window_size = Some(value),
            SETTINGS_MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME..=MAX_FRAME_LIMIT).contains(&value) => {
                return Err(protocol("SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1"));
            }
            SETTINGS_MAX_FRAME_SIZE => self.max_frame_size = Some(value),
            SETTINGS_MAX_HEADER_LIST_SIZE => self.max_header_list_size = Some(value),
            _ => {}
        }
        Ok(())
    }
}

fn four_bytes(payload: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = payload.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// WINDOW_UPDATE (RFC 9113 §6.9): the increment. A zero increment is a PROTOCOL_ERROR: a
/// stream error when `head.stream` is not 0, a connection error when it is.
pub(crate) fn window_increment(head: &Head, payload: &[u8]) -> Result<u32, ProtocolError> {
    let value = four_bytes(payload).ok_or(frame_size("WINDOW_UPDATE of other than 4 bytes"))?;
    match (value & MAX_WINDOW, head.stream) {
        (0, 0) => Err(protocol("a WINDOW_UPDATE of 0 for the connection")),
        (0, _) => Err(protocol("a WINDOW_UPDATE of 0 for a stream")),
        (increment, _) => Ok(increment),
    }
}

/// RST_STREAM (RFC 9113 §6.4): the reason the peer gives.
pub(crate) fn rst_reason(head: &Head, payload: &[u8]) -> Result<Reason, ProtocolError> {
    if head.stream == 0 {
        return Err(protocol("RST_STREAM on stream 0"));
    }
    four_bytes(payload).map(Reason).ok_or(frame_size("RST_STREAM of other than 4 bytes"))
}

/// A GOAWAY frame's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GoAway<'a> {
    /// The highest stream id the sender may have processed; later streams were not.
    pub(crate) last_stream: u32,
    pub(crate) reason: Reason,
    pub(crate) debug: &'a [u8],
}

/// GOAWAY (RFC 9113 §6.8).
pub(crate) fn goaway<'a>(head: &Head, payload: &'a [u8]) -> Result<GoAway<'a>, ProtocolError> {
    if head.stream != 0 {
        return Err(protocol("GOAWAY on a stream"));
    }
    if payload.len() < 8 {
        return Err(frame_size("GOAWAY shorter than 8 bytes"));
    }
    let last_stream = four_bytes(&payload[..4]).unwrap_or(0) & MAX_WINDOW;
    let reason = Reason(four_bytes(&payload[4..8]).unwrap_or(0));
    Ok(GoAway { last_stream, reason, debug: &payload[8..] })
}

/// PING (RFC 9113 §6.7): its opaque data, echoed in the acknowledgement.
pub(crate) fn ping(head: &Head, payload: &[u8]) -> Result<[u8; 8], ProtocolError> {
    if head.stream != 0 {
        return Err(protocol("PING on a stream"));
    }
    payload.try_into().map_err(|_| frame_size("PING of other than 8 bytes"))
}

/// Appends a frame head.
pub(crate) fn write_head(dst: &mut Vec<u8>, kind: Kind, flags: u8, stream: u32, len: usize) {
    debug_assert!(len <= MAX_FRAME_LIMIT as usize, "a frame longer than HTTP/2 allows");
    let len = (len as u32).to_be_bytes();
    dst.extend_from_slice(&[len[1], len[2], len[3], kind.byte(), flags]);
    dst.extend_from_slice(&(stream & MAX_WINDOW).to_be_bytes());
}

/// Appends a SETTINGS frame with `values` (identifier, value).
pub(crate) fn write_settings(dst: &mut Vec<u8>, values: &[(u16, u32)]) {
    write_head(dst, Kind::Settings, 0, 0, values.len() * 6);
    for (id, value) in values {
        dst.extend_from_slice(&id.to_be_bytes());
        dst.extend_from_slice(&value.to_be_bytes());
    }
}

/// Appends the acknowledgement of the peer's SETTINGS.
pub(crate) fn write_settings_ack(dst: &mut Vec<u8>) {
    write_head(dst, Kind::Settings, flags::ACK, 0, 0);
}

/// Appends a PING (or, with `ack`, the answer to one).
pub(crate) fn write_ping(dst: &mut Vec<u8>, ack: bool, data: [u8; 8]) {
    write_head(dst, Kind::Ping, if ack { flags::ACK } else { 0 }, 0, 8);
    dst.extend_from_slice(&data);
}

/// Appends a WINDOW_UPDATE of `increment` (1..=2^31-1) for `stream` (0: the connection).
pub(crate) fn write_window_update(dst: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!((1..=MAX_WINDOW).contains(&increment), "a window increment out of range");
    write_head(dst, Kind::WindowUpdate, 0, stream, 4);
    dst.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

/// Appends an RST_STREAM.
pub(crate) fn write_rst(dst: &mut Vec<u8>, stream: u32, reason: Reason) {
    write_head(dst, Kind::RstStream, 0, stream, 4);
    dst.extend_from_slice(&reason.0.to_be_bytes());
}

/// Appends a GOAWAY.
pub(crate) fn write_goaway(dst: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    write_head(dst, Kind::GoAway, 0, 0, 8 + debug.len());
    dst.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    dst.extend_from_slice(&reason.0.to_be_bytes());
    dst.extend_from_slice(debug);
}

/// Appends a header block as HEADERS and, when it is longer than `max_frame`, CONTINUATION
/// frames (RFC 9113 §6.10), with nothing between them.
pub(crate) fn write_headers(dst: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max_frame: u32) {
    let max = (max_frame.clamp(DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT)) as usize;
    let mut chunks = block.chunks(max).peekable();
    let first = chunks.next().unwrap_or_default();
    let mut kind_flags = (Kind::Headers, if end_stream { flags::END_STREAM } else { 0 });
    let mut chunk = first;
    loop {
        let last = chunks.peek().is_none();
        let (kind, mut bits) = kind_flags;
        if last {
            bits |= flags::END_HEADERS;
        }
        write_head(dst, kind, bits, stream, chunk.len());
        dst.extend_from_slice(chunk);
        match chunks.next() {
            Some(next) => {
                chunk = next;
                kind_flags = (Kind::Continuation, 0);
            }
            None => return,
        }
    }
}

/// Appends a DATA frame's head only: its payload is written after it, or beside it in one
/// vectored write so that a large payload is not copied.
pub(crate) fn write_data_head(dst: &mut Vec<u8>, stream: u32, len: usize, end_stream: bool) {
    write_head(dst, Kind::Data, if end_stream { flags::END_STREAM } else { 0 }, stream, len);
}

#[cfg(test)]
mod tests;
