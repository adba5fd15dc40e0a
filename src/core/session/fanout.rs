//! One output stream fanned out to several readers, each with its own credit and cursor into
//! a shared ring (pure; the agent's shell sessions use it).
//!
//! The rule (documented in proto/relay.proto, "Shell sessions"): more output is taken from the
//! producer while some reader has credit beyond the bytes it has not been sent yet, or while
//! no reader is attached at all; only when every reader is out of credit does the producer
//! pause. A slow reader falls behind in the ring; once its cursor falls out of the ring its
//! next piece starts at the ring's start, a gap of exactly the skipped bytes. With the ring
//! larger than a reader's window plus one chunk, a lone reader never sees a gap.

use bytes::Bytes;

use super::ring::Ring;

/// A reader's handle.
pub(crate) type ReaderId = u64;

/// One reader's position.
#[derive(Debug, Default)]
struct Reader {
    /// Next offset to send.
    cursor: u64,
    /// Bytes granted and not yet sent.
    credit: u64,
}

/// Where a new reader starts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Joined {
    /// Its id.
    pub(crate) reader: ReaderId,
    /// Offset of the first byte it will be sent.
    pub(crate) replay_from: u64,
    /// Bytes from the asked-for offset on that are no longer buffered.
    pub(crate) dropped: u64,
}

/// A piece of output for one reader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Absolute offset of `data[0]`; beyond the reader's previous end means a gap.
    pub(crate) offset: u64,
    /// The bytes (a slice of the ring's chunk when it can be).
    pub(crate) data: Bytes,
}

/// The ring plus its readers.
#[derive(Debug)]
pub(crate) struct Fanout {
    ring: Ring,
    /// A handful at most (the viewers of one shell): a list is cheaper to search than a
    /// hash map is to hash, and `take` runs for every frame.
    readers: Vec<(ReaderId, Reader)>,
    next: ReaderId,
}

impl Fanout {
    /// An empty stream that keeps the last `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { ring: Ring::new(capacity), readers: Vec::new(), next: 1 }
    }

    /// Offset one past the last byte produced.
    pub(crate) fn end(&self) -> u64 {
        self.ring.end()
    }

    /// Readers attached now.
    pub(crate) fn readers(&self) -> usize {
        self.readers.len()
    }

    /// Adds a reader from `from` (clamped to the end; `None`: the oldest buffered byte).
    pub(crate) fn join(&mut self, from: Option<u64>) -> Joined {
        let (start, end) = (self.ring.start(), self.ring.end());
        let from = from.map_or(start, |n| n.min(end));
        let cursor = from.max(start);
        let reader = self.next;
        self.next += 1;
        self.readers.push((reader, Reader { cursor, credit: 0 }));
        Joined { reader, replay_from: cursor, dropped: start.saturating_sub(from) }
    }

    /// Removes a reader; true when none is left.
    pub(crate) fn leave(&mut self, reader: ReaderId) -> bool {
        self.readers.retain(|(id, _)| *id != reader);
        self.readers.is_empty()
    }

    fn reader(&mut self, reader: ReaderId) -> Option<&mut Reader> {
        self.readers.iter_mut().find(|(id, _)| *id == reader).map(|(_, r)| r)
    }

    /// Adds credit to a reader.
    pub(crate) fn grant(&mut self, reader: ReaderId, bytes: u64) {
        if let Some(r) = self.reader(reader) {
            r.credit = r.credit.saturating_add(bytes);
        }
    }

    /// Whether the reader has been sent everything produced so far.
    pub(crate) fn caught_up(&self, reader: ReaderId) -> bool {
        self.readers.iter().find(|(id, _)| *id == reader).is_none_or(|(_, r)| r.cursor >= self.ring.end())
    }

    /// The next piece for a reader (at most its credit and `max` bytes), advancing it; `None`
    /// when it is caught up or out of credit.
    pub(crate) fn take(&mut self, reader: ReaderId, max: usize) -> Option<Piece> {
        let end = self.ring.end();
        let r = self.readers.iter_mut().find(|(id, _)| *id == reader).map(|(_, r)| r)?;
        if r.cursor >= end || r.credit == 0 {
            return None;
        }
        let limit = usize::try_from(r.credit).unwrap_or(usize::MAX).min(max);
        let replay = self.ring.read(r.cursor, limit);
        let len = replay.data.len() as u64;
        r.cursor = replay.offset + len;
        r.credit -= len;
        Some(Piece { offset: replay.offset, data: replay.data })
    }

    /// Whether the producer should be read now (see the module doc for the rule).
    pub(crate) fn wants_output(&self) -> bool {
        let (start, end) = (self.ring.start(), self.ring.end());
        self.readers.is_empty() || self.readers.iter().any(|(_, r)| r.credit > end.saturating_sub(r.cursor.max(start)))
    }

    /// Appends a copy of produced output.
    pub(crate) fn push(&mut self, data: &[u8]) {
        let end = self.ring.end();
        self.ring.push(end, data);
    }

    /// Appends produced output in a buffer of its own, kept without a copy
    /// ([`Ring::push_owned`]).
    pub(crate) fn push_owned(&mut self, data: Bytes) {
        let end = self.ring.end();
        self.ring.push_owned(end, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a reader can be sent now, pieces concatenated, with the gaps seen.
    fn drain(f: &mut Fanout, reader: ReaderId, expected: &mut u64) -> (Vec<u8>, u64) {
        let (mut out, mut gaps) = (Vec::new(), 0);
        while let Some(p) = f.take(reader, 3) {
            gaps += p.offset - *expected;
            *expected = p.offset + p.data.len() as u64;
            out.extend_from_slice(&p.data);
        }
        (out, gaps)
    }

    #[test]
    fn a_lone_reader_pauses_the_producer_and_never_loses_a_byte() {
        let mut f = Fanout::new(16);
        let a = f.join(None).reader;
        assert!(!f.wants_output(), "no credit yet: paused");
        f.grant(a, 4);
        assert!(f.wants_output());
        f.push(b"abcdef");
        assert!(!f.wants_output(), "6 pending > 4 credit: paused");
        let mut at = 0;
        assert_eq!(drain(&mut f, a, &mut at), (b"abcd".to_vec(), 0));
        f.grant(a, 10);
        assert!(f.wants_output());
        assert_eq!(drain(&mut f, a, &mut at), (b"ef".to_vec(), 0));
        assert!(f.caught_up(a));
    }

    #[test]
    fn a_stalled_reader_falls_behind_gets_a_gap_and_holds_nobody_back() {
        let mut f = Fanout::new(8);
        let (fast, slow) = (f.join(None).reader, f.join(None).reader);
        f.grant(fast, 100);
        let (mut at_fast, mut at_slow) = (0, 0);
        for chunk in [b"0123", b"4567", b"89ab", b"cdef"] {
            assert!(f.wants_output(), "the fast reader keeps the producer going");
            f.push(chunk);
            drain(&mut f, fast, &mut at_fast);
        }
        assert_eq!(at_fast, 16);
        f.grant(slow, 100);
        let (bytes, gap) = drain(&mut f, slow, &mut at_slow);
        assert_eq!((bytes, gap), (b"89abcdef".to_vec(), 8), "the oldest 8 bytes fell out of the ring");
    }

    #[test]
    fn a_reattach_from_an_offset_replays_exactly_the_rest() {
        let mut f = Fanout::new(8);
        f.push(b"0123456789");
        let j = f.join(Some(5));
        assert_eq!(j.replay_from, 5);
        assert_eq!(j.dropped, 0);
        f.grant(j.reader, 100);
        let mut at = 5;
        assert_eq!(drain(&mut f, j.reader, &mut at), (b"56789".to_vec(), 0));
        let old = f.join(Some(0));
        assert_eq!((old.replay_from, old.dropped), (2, 2));
        let fresh = f.join(None);
        assert_eq!((fresh.replay_from, fresh.dropped), (2, 0), "no offset asked: the whole ring, nothing dropped");
    }

    #[test]
    fn nobody_attached_keeps_the_producer_running() {
        let mut f = Fanout::new(4);
        assert!(f.wants_output());
        let a = f.join(None).reader;
        assert!(!f.wants_output());
        assert!(f.leave(a));
        assert!(f.wants_output());
    }
}
