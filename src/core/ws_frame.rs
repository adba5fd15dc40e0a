//! RFC 6455 framing, server side, no I/O: client frames in (masked, possibly fragmented),
//! server frame headers out (unmasked). Strict: no extensions are negotiated, so a reserved
//! bit is a protocol error, and every violation names the close code the peer gets.

use bytes::{Buf, Bytes, BytesMut};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Control frames carry at most 125 bytes (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub(crate) const MAX_HEADER_BYTES: usize = 14;

/// Close codes of protocol failures (RFC 6455, 7.4.1).
pub(crate) mod code {
    /// Normal closure; also the answer to a close frame without a code.
    pub(crate) const NORMAL: u16 = 1000;
    /// The peer broke the protocol.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// A text message was not UTF-8.
    pub(crate) const INVALID_DATA: u16 = 1007;
    /// A message over the limit.
    pub(crate) const TOO_BIG: u16 = 1009;
}

/// Why a client's bytes are not a WebSocket conversation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("a text message is not UTF-8")]
    NotUtf8,
    #[error("a message over {limit} bytes")]
    TooBig { limit: usize },
}

impl FrameError {
    /// The close code the client gets for it.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            Self::Protocol(_) => code::PROTOCOL,
            Self::NotUtf8 => code::INVALID_DATA,
            Self::TooBig { .. } => code::TOO_BIG,
        }
    }
}

/// One complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Text(String),
    Binary(Bytes),
    /// To be answered with a pong carrying the same payload.
    Ping(Bytes),
    Pong,
    /// The client's goodbye: its code (1000 when it gave none), to be echoed.
    Close(u16),
}

/// A fixed frame header as the parser reads it.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    payload: usize,
    len: usize,
}

/// Reads the header at the start of `buf`: `None` until it is complete.
fn parse_header(buf: &[u8], limit: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("unmasked client frame"));
    }
    let (payload, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let Some(mask) = buf.get(at..at + 4) else { return Ok(None) };
    let payload = usize::try_from(payload).ok().filter(|&p| p <= limit).ok_or(FrameError::TooBig { limit })?;
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    Ok(Some(Header { fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, mask, payload, len: at + 4 }))
}

/// Unmasks `data` in place (RFC 6455, 5.3).
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Parses client frames into messages, reassembling fragments up to `limit` bytes.
pub(crate) struct Decoder {
    limit: usize,
    /// A fragmented message so far: its opcode (text or binary) and payload.
    partial: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, partial: None }
    }

    /// Bytes `buf` must hold before [`Decoder::decode`] can make progress: lets the reader
    /// grow its buffer only for a big frame.
    pub(crate) fn wanted(&self, buf: &[u8]) -> usize {
        match parse_header(buf, self.limit) {
            Ok(Some(h)) => h.len + h.payload,
            _ => MAX_HEADER_BYTES,
        }
    }

    /// The next complete message at the front of `buf`, consuming its frames; `None` when
    /// more bytes are needed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        loop {
            let Some(header) = parse_header(buf, self.limit)? else { return Ok(None) };
            if buf.len() < header.len + header.payload {
                return Ok(None);
            }
            // Unmasked in place and copied out: the buffer stays one unshared allocation,
            // reused for the next read.
            buf.advance(header.len);
            let payload = &mut buf[..header.payload];
            unmask(payload, header.mask);
            let message = self.frame(&header, payload);
            buf.advance(header.payload);
            if let Some(message) = message? {
                return Ok(Some(message));
            }
        }
    }

    /// One frame's contribution: a message, or `None` when it was a fragment.
    fn frame(&mut self, header: &Header, payload: &[u8]) -> Result<Option<Message>, FrameError> {
        match header.opcode {
            OP_CLOSE | OP_PING | OP_PONG => control(header, payload),
            OP_TEXT | OP_BINARY if self.partial.is_some() => {
                Err(FrameError::Protocol("new message inside a fragmented one"))
            }
            OP_TEXT | OP_BINARY if header.fin => data(header.opcode, payload).map(Some),
            OP_TEXT | OP_BINARY => {
                self.partial = Some((header.opcode, payload.to_vec()));
                Ok(None)
            }
            OP_CONTINUATION => self.continuation(header.fin, payload),
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }

    fn continuation(&mut self, fin: bool, payload: &[u8]) -> Result<Option<Message>, FrameError> {
        let Some((_, so_far)) = self.partial.as_mut() else {
            return Err(FrameError::Protocol("continuation without a message"));
        };
        if so_far.len() + payload.len() > self.limit {
            return Err(FrameError::TooBig { limit: self.limit });
        }
        so_far.extend_from_slice(payload);
        if !fin {
            return Ok(None);
        }
        let (opcode, whole) = self.partial.take().unwrap_or_default();
        match opcode {
            OP_BINARY => Ok(Some(Message::Binary(Bytes::from(whole)))),
            _ => String::from_utf8(whole).map(|t| Some(Message::Text(t))).map_err(|_| FrameError::NotUtf8),
        }
    }
}

fn data(opcode: u8, payload: &[u8]) -> Result<Message, FrameError> {
    if opcode == OP_BINARY {
        return Ok(Message::Binary(Bytes::copy_from_slice(payload)));
    }
    std::str::from_utf8(payload).map(|t| Message::Text(t.to_owned())).map_err(|_| FrameError::NotUtf8)
}

fn control(header: &Header, payload: &[u8]) -> Result<Option<Message>, FrameError> {
    if !header.fin || payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::Protocol("fragmented or oversized control frame"));
    }
    match header.opcode {
        OP_PING => Ok(Some(Message::Ping(Bytes::copy_from_slice(payload)))),
        OP_PONG => Ok(Some(Message::Pong)),
        _ => close_code(payload).map(|code| Some(Message::Close(code))),
    }
}

/// A close frame's code: none, or two bytes of a code a peer may send and a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<u16, FrameError> {
    let [hi, lo, reason @ ..] = payload else {
        return match payload.len() {
            0 => Ok(code::NORMAL),
            _ => Err(FrameError::Protocol("one-byte close payload")),
        };
    };
    let code = u16::from_be_bytes([*hi, *lo]);
    let sendable = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
    if !sendable {
        return Err(FrameError::Protocol("close code a peer may not send"));
    }
    std::str::from_utf8(reason).map_err(|_| FrameError::NotUtf8)?;
    Ok(code)
}

/// What a server frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
    Close,
    Pong,
}

/// The header of a final, unmasked server frame of `len` payload bytes, written into `out`;
/// returns its length. Payloads go out after it without being copied.
pub(crate) fn encode_header(kind: Kind, len: usize, out: &mut [u8; MAX_HEADER_BYTES]) -> usize {
    let opcode = match kind {
        Kind::Text => OP_TEXT,
        Kind::Binary => OP_BINARY,
        Kind::Close => OP_CLOSE,
        Kind::Pong => OP_PONG,
    };
    out[0] = 0x80 | opcode;
    match len {
        0..=125 => {
            out[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

/// A close frame's payload: the code, then the reason cut to fit a control frame.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests;
