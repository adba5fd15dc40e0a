//! The connection's bytes to write, in order: frames appended to one buffer, except large DATA
//! payloads, which stay the `Bytes` their stream's queue handed over and go beside the buffer
//! in the same `writev`: a payload is never copied, and a keystroke's frame is one write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// A payload at least this long is written from its own buffer; a shorter one is copied into
/// the frame buffer (a copy costs less than a slice of its own there).
const COPY_BELOW: usize = 2048;
/// Most slices handed to one `writev`.
const MAX_SLICES: usize = 32;
/// Most `writev` calls per [`Outbox::poll_write`]: the task yields after them.
const MAX_WRITES: usize = 16;

#[derive(Default)]
pub(super) struct Outbox {
    /// Frame heads, control frames and short payloads.
    pub(super) buf: Vec<u8>,
    /// Large payloads, each written after `buf[..at]` (`at` as when it was added).
    large: Vec<(usize, Bytes)>,
    /// Bytes in `large`.
    large_len: usize,
    /// Bytes already written, counted from the start of the sequence.
    done: usize,
}

impl Outbox {
    /// Bytes not yet written.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buf.len() + self.large_len - self.done
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a piece of `n` bytes is copied into `buf` rather than written from its own.
    #[inline]
    pub(super) fn copies(&self, n: usize) -> bool {
        n < COPY_BELOW
    }

    /// Adds bytes after what `buf` holds now: copied when short, else written from their own
    /// buffer beside it.
    #[inline]
    pub(super) fn put(&mut self, piece: Bytes) {
        if self.copies(piece.len()) {
            self.buf.extend_from_slice(&piece);
            return;
        }
        self.large_len += piece.len();
        self.large.push((self.buf.len(), piece));
    }

    /// Everything unwritten, in order.
    #[cfg(test)]
    pub(super) fn to_vec(&self) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = self.slices(&mut slices);
        slices[..count].iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// Writes until everything is written or the socket is full.
    pub(super) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        for _ in 0..MAX_WRITES {
            if self.is_empty() {
                self.clear();
                return Pin::new(&mut *io).poll_flush(cx);
            }
            let n = match self.large.is_empty() {
                // The usual case (control frames, short DATA frames): one slice, no vector.
                true => ready!(Pin::new(&mut *io).poll_write(cx, &self.buf[self.done..]))?,
                false => {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let count = self.slices(&mut slices);
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.done += n;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Fills `slices` with the unwritten bytes in order; returns how many it filled.
    fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut skip = self.done;
        let mut count = 0;
        let mut from = 0;
        let parts = self.large.iter().flat_map(|(at, payload)| {
            let before = &self.buf[from.min(*at)..*at];
            from = *at;
            [before, payload.chunk()]
        });
        let tail = std::iter::once(&self.buf[self.large.last().map_or(0, |(at, _)| *at)..]);
        for part in parts.chain(tail) {
            if count == MAX_SLICES {
                break;
            }
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices[count] = IoSlice::new(&part[skip..]);
            skip = 0;
            count += 1;
        }
        count
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.large.clear();
        self.large_len = 0;
        self.done = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer taking at most `max` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.max - n);
                self.got.extend_from_slice(&buf[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn frames_and_large_payloads_are_written_in_order_across_partial_writes() {
        let mut outbox = Outbox::default();
        outbox.buf.extend_from_slice(b"head1");
        outbox.put(Bytes::from_static(b"PAYLOAD-ONE"));
        outbox.buf.extend_from_slice(b"head2");
        outbox.put(Bytes::from_static(b"PAYLOAD-TWO"));
        outbox.put(Bytes::from_static(b"+three"));
        outbox.buf.extend_from_slice(b"tail");
        let expected = b"head1PAYLOAD-ONEhead2PAYLOAD-TWO+threetail".to_vec();
        assert_eq!(outbox.len(), expected.len());
        let mut io = Trickle { got: Vec::new(), max: 3 };
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..expected.len() {
            if outbox.poll_write(&mut io, &mut cx).is_ready() {
                break;
            }
        }
        assert_eq!(io.got, expected);
        assert!(outbox.is_empty());
        assert!(outbox.large.is_empty() && outbox.buf.is_empty(), "cleared for reuse");
    }
}
