//! The connection's outgoing bytes: frames appended to one buffer, large DATA payloads kept
//! as they came and written beside it with one vectored write instead of being copied.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Payloads up to this size are copied into the buffer (a copy of a few hundred bytes costs
/// less than keeping the payload apart); larger ones are written from where they are.
const COPY_BYTES: usize = 512;
/// Largest buffer kept once everything was written: 64 KiB.
const KEEP_BYTES: usize = 64 * 1024;
/// Most pieces one vectored write takes.
pub(super) const MAX_SLICES: usize = 64;

/// Bytes waiting for the socket, in order.
#[derive(Default)]
pub(super) struct Out {
    /// Frames (heads, control frames, small payloads).
    buf: Vec<u8>,
    /// How much of `buf` the socket took.
    head: usize,
    /// Large payloads, each to go after `buf[..at]`.
    payloads: VecDeque<(usize, Bytes)>,
    /// Bytes of the payloads still to write.
    payload_bytes: usize,
}

impl Out {
    /// The buffer to append whole frames to.
    pub(super) fn frames(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends a payload (after the frame head just written).
    pub(super) fn payload(&mut self, payload: Bytes) {
        if payload.len() <= COPY_BYTES {
            self.buf.extend_from_slice(&payload);
        } else {
            self.payload_bytes += payload.len();
            self.payloads.push_back((self.buf.len(), payload));
        }
    }

    /// Bytes waiting.
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.head + self.payload_bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting bytes as slices for one vectored write, in `into`; how many.
    pub(super) fn slices<'a>(&'a self, into: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut n = 0;
        let mut at = self.head;
        for (pos, payload) in &self.payloads {
            if n + 3 > MAX_SLICES {
                return n;
            }
            if *pos > at {
                into[n] = IoSlice::new(&self.buf[at..*pos]);
                n += 1;
            }
            into[n] = IoSlice::new(payload);
            n += 1;
            at = *pos;
        }
        if self.buf.len() > at {
            into[n] = IoSlice::new(&self.buf[at..]);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes, which the socket took.
    pub(super) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let frames_end = self.payloads.front().map_or(self.buf.len(), |(pos, _)| *pos);
            let in_frames = (frames_end - self.head).min(n);
            self.head += in_frames;
            n -= in_frames;
            if n == 0 {
                break;
            }
            let Some((_, payload)) = self.payloads.front_mut() else { break };
            let in_payload = payload.len().min(n);
            payload.advance(in_payload);
            self.payload_bytes -= in_payload;
            n -= in_payload;
            if payload.is_empty() {
                self.payloads.pop_front();
            }
        }
        if self.head == self.buf.len() && self.payloads.is_empty() {
            self.buf.clear();
            self.head = 0;
            // A burst's buffer is not kept by a connection that goes quiet.
            if self.buf.capacity() > KEEP_BYTES {
                self.buf = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(out: &Out) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = out.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn frames_and_payloads_come_out_in_order_and_partial_writes_resume() {
        let mut out = Out::default();
        let big = Bytes::from(vec![b'x'; COPY_BYTES + 1]);
        out.frames().extend_from_slice(b"head1");
        out.payload(big.clone());
        out.frames().extend_from_slice(b"head2");
        out.payload(Bytes::from_static(b"small"));
        out.payload(big.clone());
        let mut want = b"head1".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"head2small");
        want.extend_from_slice(&big);
        assert_eq!(out.len(), want.len());
        assert_eq!(gather(&out), want);
        let mut rest = &want[..];
        for step in [3, 2, 100, COPY_BYTES, 7, 3] {
            out.advance(step);
            rest = &rest[step..];
            assert_eq!(gather(&out), rest);
            assert_eq!(out.len(), rest.len());
        }
        out.advance(rest.len());
        assert!(out.is_empty());
        assert!(gather(&out).is_empty());
    }
}
