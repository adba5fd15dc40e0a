//! A ring buffer of a session's most recent output, addressed by absolute byte offsets, so a
//! reattaching client can ask for "everything from offset N" and learn exactly how many bytes
//! were dropped when N is older than the buffer.
//!
//! It is a queue of chunks that can share their producer's buffers (`Bytes`): a chunk handed
//! over whole ([`Ring::push_owned`]) is kept without a copy, and a reader's piece is a slice
//! of one chunk whenever it can be, so a busy shell's output is not copied between the PTY
//! read and the socket write (one copy per byte cost the agent as much per MiB as all the rest
//! of its relay path, docs/performance.md). Small pushes (a keystroke's echo) are gathered in a
//! tail instead, so a ring of them holds a few allocations rather than one each.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Copied pushes are gathered in the tail up to this many bytes before it becomes a chunk.
const TAIL_BYTES: usize = 16 * 1024;
/// A reader's piece is a zero-copy slice of one chunk when that chunk holds at least this much
/// of it (or all of it); shorter ends of chunks are gathered into one piece with what follows.
const MIN_SLICE_BYTES: usize = 4 * 1024;

/// The last `capacity` bytes of an output stream.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Sealed chunks, oldest first, each with the absolute offset of its first byte.
    chunks: VecDeque<(u64, Bytes)>,
    /// The newest bytes, after the last chunk: small pushes gathered.
    tail: BytesMut,
    /// Absolute offset of the oldest byte buffered.
    start: u64,
    /// Absolute offset one past the newest byte.
    end: u64,
    capacity: usize,
}

/// What a replay from an offset yields.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Absolute offset of `data[0]`.
    pub(crate) offset: u64,
    /// Bytes that were asked for but are no longer buffered.
    pub(crate) dropped: u64,
    /// The buffered bytes from `offset` on.
    pub(crate) data: Bytes,
}

impl Ring {
    /// An empty ring that keeps at most `capacity` bytes. Memory grows only as output does.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { chunks: VecDeque::new(), tail: BytesMut::new(), start: 0, end: 0, capacity }
    }

    /// Absolute offset one past the last byte written.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Absolute offset of the oldest byte still buffered.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Appends a copy of output that starts at `offset` (which must be `end()`; a later offset
    /// means bytes were skipped upstream and the ring restarts there).
    pub(crate) fn push(&mut self, offset: u64, data: &[u8]) {
        self.restart_unless_at(offset);
        if data.len() >= TAIL_BYTES {
            self.push_chunk(Bytes::copy_from_slice(data));
            return;
        }
        if self.tail.len() + data.len() > TAIL_BYTES {
            self.seal_tail();
        }
        self.tail.extend_from_slice(data);
        self.end += data.len() as u64;
        self.trim();
    }

    /// Appends `data` as a chunk of its own, without a copy. For buffers the caller made for
    /// this output: the ring keeps whatever allocation `data` shares until it drops out.
    pub(crate) fn push_owned(&mut self, offset: u64, data: Bytes) {
        self.restart_unless_at(offset);
        if !data.is_empty() {
            self.push_chunk(data);
        }
    }

    /// Appends output that arrived in a buffer shared with other bytes (a received frame):
    /// kept without a copy when it is a large piece (at least the tail's size, so whatever it
    /// shares holds a few times its bytes at most), copied otherwise.
    pub(crate) fn push_shared(&mut self, offset: u64, data: Bytes) {
        match data.len() >= TAIL_BYTES {
            true => self.push_owned(offset, data),
            false => self.push(offset, &data),
        }
    }

    fn restart_unless_at(&mut self, offset: u64) {
        if offset != self.end {
            self.chunks.clear();
            self.tail.clear();
            self.start = offset;
            self.end = offset;
        }
    }

    fn push_chunk(&mut self, data: Bytes) {
        self.seal_tail();
        self.end += data.len() as u64;
        self.chunks.push_back((self.end - data.len() as u64, data));
        self.trim();
    }

    /// Offset of the tail's first byte.
    fn tail_start(&self) -> u64 {
        self.end - self.tail.len() as u64
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let at = self.tail_start();
            self.chunks.push_back((at, self.tail.split().freeze()));
        }
    }

    /// Drops the oldest bytes beyond the capacity.
    fn trim(&mut self) {
        let mut excess = (self.end - self.start).saturating_sub(self.capacity as u64);
        while excess > 0 {
            let Some((at, chunk)) = self.chunks.front_mut() else {
                // usize: excess is below the tail's length here.
                self.tail.advance(excess as usize);
                self.start += excess;
                return;
            };
            let n = excess.min(chunk.len() as u64);
            if n == chunk.len() as u64 {
                self.chunks.pop_front();
            } else {
                chunk.advance(n as usize);
                *at += n;
            }
            self.start += n;
            excess -= n;
        }
    }

    /// At most `max` buffered bytes from `from` on: what one reader whose cursor is `from` may
    /// be sent next (possibly fewer, up to a chunk's end, so as to share the chunk instead of
    /// copying it). A cursor older than the buffer starts at the buffer's start and counts the
    /// skipped bytes in `dropped`; one past the end yields nothing.
    pub(crate) fn read(&self, from: u64, max: usize) -> Replay {
        let from = from.min(self.end);
        let dropped = self.start.saturating_sub(from);
        let from = from.max(self.start);
        let tail_start = self.tail_start();
        if from >= tail_start {
            // The newest bytes, where a reader that keeps up finds them: small, copied.
            let within = (from - tail_start) as usize;
            let take = (self.tail.len() - within).min(max);
            let data = Bytes::copy_from_slice(&self.tail[within..within + take]);
            return Replay { offset: from, dropped, data };
        }
        // Below the tail: a sealed chunk holds `from`.
        let first = self.chunk_index(from);
        let (at, chunk) = &self.chunks[first];
        let within = (from - at) as usize;
        let here = chunk.len() - within;
        let data = match here >= max || here >= MIN_SLICE_BYTES {
            true => chunk.slice(within..within + here.min(max)),
            false => self.gather(first, from, max),
        };
        Replay { offset: from, dropped, data }
    }

    /// Everything buffered from `from` on; `from` past the end yields nothing.
    pub(crate) fn since(&self, from: u64) -> Replay {
        let from = from.min(self.end);
        let dropped = self.start.saturating_sub(from);
        let from = from.max(self.start);
        Replay { offset: from, dropped, data: self.gather(self.chunk_index(from), from, usize::MAX) }
    }

    /// The index of the sealed chunk holding offset `from` (the number of chunks when `from` is
    /// in the tail or at the end).
    fn chunk_index(&self, from: u64) -> usize {
        self.chunks.partition_point(|(at, chunk)| at + chunk.len() as u64 <= from)
    }

    /// A copy of at most `max` bytes from `from` (buffered, in chunk `first` or after it) on,
    /// across chunks and the tail.
    fn gather(&self, first: usize, from: u64, max: usize) -> Bytes {
        let len = usize::try_from(self.end - from).unwrap_or(usize::MAX).min(max);
        let mut out = BytesMut::with_capacity(len);
        let pieces = self.chunks.range(first..).map(|(at, chunk)| (*at, &chunk[..]));
        for (at, bytes) in pieces.chain(std::iter::once((self.tail_start(), &self.tail[..]))) {
            if out.len() == len {
                break;
            }
            let skip = usize::try_from(from.saturating_sub(at)).unwrap_or(usize::MAX).min(bytes.len());
            let take = (bytes.len() - skip).min(len - out.len());
            out.extend_from_slice(&bytes[skip..skip + take]);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests;
