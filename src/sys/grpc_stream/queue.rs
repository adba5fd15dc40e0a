//! One stream's bytes to send: messages encoded into one buffer, and large payloads that stay
//! in their own buffers (`Out::send_split`) until the connection's `writev` takes them, so a
//! 32 KiB output chunk is never copied on its way to the socket.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::outbox::Outbox;

#[derive(Default)]
pub(super) struct SendQueue {
    /// Frozen pieces ahead of `tail`, in order.
    parts: VecDeque<Bytes>,
    parts_len: usize,
    /// What was encoded since the last payload of its own.
    pub(super) tail: BytesMut,
}

impl SendQueue {
    pub(super) fn new(tail: BytesMut) -> Self {
        Self { parts: VecDeque::new(), parts_len: 0, tail }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.parts_len + self.tail.len()
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `payload` after what is queued, without copying it.
    pub(super) fn push_payload(&mut self, payload: Bytes) {
        if !self.tail.is_empty() {
            let encoded = self.tail.split().freeze();
            self.parts_len += encoded.len();
            self.parts.push_back(encoded);
        }
        self.parts_len += payload.len();
        self.parts.push_back(payload);
    }

    /// Moves the first `n` bytes (at most [`SendQueue::len`]) to the end of `out`.
    #[inline]
    pub(super) fn take_into(&mut self, mut n: usize, out: &mut Outbox) {
        // Bounded: each turn takes a whole part, or the last bytes wanted.
        while n > 0 && !self.parts.is_empty() {
            let Some(part) = self.parts.front_mut() else { break };
            let piece = match n < part.len() {
                true => part.split_to(n),
                false => self.parts.pop_front().unwrap_or_default(),
            };
            self.parts_len -= piece.len();
            n -= piece.len();
            out.put(piece);
        }
        let n = n.min(self.tail.len());
        if n > 0 && out.copies(n) {
            out.buf.extend_from_slice(&self.tail[..n]);
            self.tail.advance(n);
        } else if n > 0 {
            out.put(self.tail.split_to(n).freeze());
        }
    }

    /// Drops everything queued.
    pub(super) fn clear(&mut self) {
        self.parts.clear();
        self.parts_len = 0;
        self.tail = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_their_own_keep_their_place_between_encoded_bytes() {
        let mut queue = SendQueue::new(BytesMut::from(&b"ab"[..]));
        queue.push_payload(Bytes::from(vec![b'P'; 5000]));
        queue.tail.extend_from_slice(b"cd");
        assert_eq!(queue.len(), 5004);
        let mut out = Outbox::default();
        queue.take_into(3000, &mut out);
        queue.take_into(3000, &mut out);
        assert!(queue.is_empty());
        let mut expected = b"ab".to_vec();
        expected.extend(vec![b'P'; 5000]);
        expected.extend_from_slice(b"cd");
        assert_eq!(out.to_vec(), expected);
    }
}
