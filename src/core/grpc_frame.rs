//! gRPC's message framing on an HTTP/2 stream (pure): a compressed flag byte, a big-endian u32
//! length, the protobuf message. The agent's relay stream and the server's hot streams both
//! read and write it without tonic's codec layers; this is the one place that knows the format.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The message header: compressed flag and big-endian length.
pub(crate) const HEADER: usize = 5;
/// Largest message accepted, tonic's default (`DEFAULT_MAX_RECV_MESSAGE_SIZE`).
pub(crate) const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// A message that breaks the framing; each side words it for its peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The compressed flag is set (`1`) or not a flag at all; nobody here asks for compression.
    #[error("compressed-flag {0} on a stream without grpc-encoding")]
    Compressed(u8),
    /// A message over [`MAX_MESSAGE`].
    #[error("a {0}-byte message; the limit is {MAX_MESSAGE}")]
    TooLarge(usize),
}

/// A message type read from a gRPC stream (the server's hot streams, our client's links):
/// decoded by prost, unless the type has a faster decoder that reads every input as prost
/// would (the agent's frames: `core::agent_frame`).
pub(crate) trait Incoming: prost::Message + Default {
    fn decode_message(bytes: Bytes) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }
}

/// Appends `message` as one uncompressed gRPC message.
pub(crate) fn encode_into(message: &impl prost::Message, buf: &mut BytesMut) {
    let len = message.encoded_len();
    buf.reserve(HEADER + len);
    buf.put_u8(0);
    // A message over 4 GiB cannot be built from the relay's types; u32 is gRPC's bound.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(buf);
}

/// Cuts messages out of a stream's DATA chunks as they arrive: a message within one chunk is
/// a slice of it (its `bytes` fields share the chunk's buffer); only a message split across
/// chunks is copied together.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    /// The unread rest of the last chunk, while no message is split across chunks.
    pending: Bytes,
    /// A message being gathered across chunks (then `pending` is empty).
    partial: BytesMut,
}

impl Deframer {
    /// Adds a received chunk.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if self.partial.is_empty() && self.pending.is_empty() {
            self.pending = chunk;
        } else {
            self.gather();
            self.partial.extend_from_slice(&chunk);
        }
    }

    /// True when no byte of a message is held (the stream may end cleanly here).
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.partial.is_empty()
    }

    /// The next whole message's bytes, if they have all arrived.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.partial.is_empty() {
            match message_len(&self.pending)? {
                Some(len) if self.pending.len() >= HEADER + len => {
                    let message = self.pending.slice(HEADER..HEADER + len);
                    self.pending.advance(HEADER + len);
                    return Ok(Some(message));
                }
                _ => {
                    self.gather();
                    return Ok(None);
                }
            }
        }
        let Some(len) = message_len(&self.partial)? else { return Ok(None) };
        if self.partial.len() < HEADER + len {
            self.partial.reserve(HEADER + len - self.partial.len());
            return Ok(None);
        }
        let mut message = self.partial.split_to(HEADER + len).freeze();
        message.advance(HEADER);
        Ok(Some(message))
    }

    /// Moves an incomplete message from `pending` to `partial`, where the next chunks join it.
    fn gather(&mut self) {
        if !self.pending.is_empty() {
            self.partial.extend_from_slice(&self.pending);
            self.pending = Bytes::new();
        }
    }
}

/// The length of the message starting `buf`, once its header is there.
fn message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(FrameError::Compressed(buf[0]));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn messages_are_cut_out_of_chunks_however_the_chunks_fall() {
        let stream: Vec<u8> = [framed(b"one"), framed(b""), framed(&[7; 100])].concat();
        for cut in 1..stream.len() {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for chunk in [&stream[..cut], &stream[cut..]] {
                d.push(Bytes::copy_from_slice(chunk));
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, [&b"one"[..], b"", &[7; 100]], "cut at {cut}");
            assert!(d.is_empty());
        }
    }

    #[test]
    fn a_compressed_or_oversized_message_is_refused() {
        let mut d = Deframer::default();
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(d.next_message(), Err(FrameError::Compressed(1)));
        let mut d = Deframer::default();
        let mut too_big = vec![0];
        too_big.extend_from_slice(&(MAX_MESSAGE as u32 + 1).to_be_bytes());
        d.push(Bytes::from(too_big));
        assert_eq!(d.next_message(), Err(FrameError::TooLarge(MAX_MESSAGE + 1)));
    }

    #[test]
    fn an_unfinished_message_keeps_the_deframer_non_empty() {
        let mut d = Deframer::default();
        d.push(Bytes::copy_from_slice(&framed(b"abc")[..6]));
        assert_eq!(d.next_message(), Ok(None));
        assert!(!d.is_empty());
    }
}
