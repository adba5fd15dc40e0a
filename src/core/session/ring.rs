//! A ring buffer of a session's most recent output, addressed by absolute byte offsets, so a
//! reattaching client can ask for "everything from offset N" and learn exactly how many bytes
//! were dropped when N is older than the buffer.

use std::collections::VecDeque;

/// The last `capacity` bytes of an output stream.
#[derive(Debug)]
pub(crate) struct Ring {
    bytes: VecDeque<u8>,
    /// Absolute offset of `bytes[0]`.
    start: u64,
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
    pub(crate) data: Vec<u8>,
}

impl Ring {
    /// An empty ring that keeps at most `capacity` bytes. Memory grows only as output does.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { bytes: VecDeque::new(), start: 0, capacity }
    }

    /// Absolute offset one past the last byte written.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Appends output that starts at `offset` (which must be `end()`; a later offset means
    /// bytes were skipped upstream and the ring restarts there).
    pub(crate) fn push(&mut self, offset: u64, data: &[u8]) {
        if offset != self.end() {
            self.bytes.clear();
            self.start = offset;
        }
        self.bytes.extend(data);
        let excess = self.bytes.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.start += excess as u64;
        }
    }

    /// Absolute offset of the oldest byte still buffered.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// At most `max` buffered bytes from `from` on: what one reader whose cursor is `from` may
    /// be sent next. A cursor older than the buffer starts at the buffer's start and counts the
    /// skipped bytes in `dropped`; one past the end yields nothing.
    pub(crate) fn read(&self, from: u64, max: usize) -> Replay {
        let from = from.min(self.end());
        let dropped = self.start.saturating_sub(from);
        let first = usize::try_from(from.saturating_sub(self.start)).unwrap_or(usize::MAX).min(self.bytes.len());
        let last = first.saturating_add(max).min(self.bytes.len());
        let data = self.bytes.range(first..last).copied().collect();
        Replay { offset: from.max(self.start), dropped, data }
    }

    /// Everything buffered from `from` on; `from` past the end yields nothing.
    pub(crate) fn since(&self, from: u64) -> Replay {
        let from = from.min(self.end());
        let dropped = self.start.saturating_sub(from);
        let skip = usize::try_from(from.saturating_sub(self.start)).unwrap_or(usize::MAX);
        let data = self.bytes.iter().skip(skip).copied().collect();
        Replay { offset: from.max(self.start), dropped, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_from_any_buffered_offset() {
        let mut r = Ring::new(8);
        r.push(0, b"abcdef");
        assert_eq!(r.since(2), Replay { offset: 2, dropped: 0, data: b"cdef".to_vec() });
        assert_eq!(r.since(6).data, b"");
    }

    #[test]
    fn keeps_only_the_last_capacity_bytes_and_counts_the_gap() {
        let mut r = Ring::new(4);
        r.push(0, b"abcdef");
        r.push(6, b"gh");
        assert_eq!(r.end(), 8);
        assert_eq!(r.since(1), Replay { offset: 4, dropped: 3, data: b"efgh".to_vec() });
    }

    #[test]
    fn reads_bounded_pieces_and_reports_a_fallen_out_cursor() {
        let mut r = Ring::new(4);
        r.push(0, b"abcdef");
        assert_eq!(r.start(), 2);
        assert_eq!(r.read(3, 2), Replay { offset: 3, dropped: 0, data: b"de".to_vec() });
        assert_eq!(r.read(0, 3), Replay { offset: 2, dropped: 2, data: b"cde".to_vec() });
        assert_eq!(r.read(6, 10), Replay { offset: 6, dropped: 0, data: Vec::new() });
        assert_eq!(r.read(9, 10), Replay { offset: 6, dropped: 0, data: Vec::new() });
    }

    #[test]
    fn restarts_after_a_skip() {
        let mut r = Ring::new(4);
        r.push(0, b"ab");
        r.push(10, b"xy");
        assert_eq!(r.since(0), Replay { offset: 10, dropped: 10, data: b"xy".to_vec() });
    }
}
