use super::*;

fn replay(offset: u64, dropped: u64, data: &[u8]) -> Replay {
    Replay { offset, dropped, data: Bytes::copy_from_slice(data) }
}

#[test]
fn replays_from_any_buffered_offset() {
    let mut r = Ring::new(8);
    r.push(0, b"abcdef");
    assert_eq!(r.since(2), replay(2, 0, b"cdef"));
    assert_eq!(r.since(6).data, &b""[..]);
}

#[test]
fn keeps_only_the_last_capacity_bytes_and_counts_the_gap() {
    let mut r = Ring::new(4);
    r.push(0, b"abcdef");
    r.push(6, b"gh");
    assert_eq!(r.end(), 8);
    assert_eq!(r.since(1), replay(4, 3, b"efgh"));
}

#[test]
fn reads_bounded_pieces_and_reports_a_fallen_out_cursor() {
    let mut r = Ring::new(4);
    r.push(0, b"abcdef");
    assert_eq!(r.start(), 2);
    assert_eq!(r.read(3, 2), replay(3, 0, b"de"));
    assert_eq!(r.read(0, 3), replay(2, 2, b"cde"));
    assert_eq!(r.read(6, 10), replay(6, 0, b""));
    assert_eq!(r.read(9, 10), replay(6, 0, b""));
}

#[test]
fn restarts_after_a_skip() {
    let mut r = Ring::new(4);
    r.push(0, b"ab");
    r.push(10, b"xy");
    assert_eq!(r.since(0), replay(10, 10, b"xy"));
    r.push_owned(20, Bytes::from_static(b"z"));
    assert_eq!(r.since(0), replay(20, 20, b"z"));
}

#[test]
fn an_owned_chunk_is_read_without_a_copy() {
    let mut r = Ring::new(1 << 20);
    r.push(0, b"prompt$ ");
    let big = Bytes::from(vec![b'x'; 32 * 1024]);
    r.push_owned(8, big.clone());
    let piece = r.read(8, 10_000);
    assert_eq!((piece.offset, piece.data.len()), (8, 10_000));
    assert_eq!(piece.data.as_ptr(), big.as_ptr(), "a slice of the pushed buffer");
    let rest = r.read(10_008, usize::MAX);
    assert_eq!(rest.data.len(), 32 * 1024 - 10_000);
    assert_eq!(rest.data.as_ptr(), big[10_000..].as_ptr());
}

#[test]
fn a_piece_across_a_short_chunk_end_is_gathered_in_order() {
    let mut r = Ring::new(1 << 20);
    let first: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    r.push_owned(0, Bytes::from(first.clone()));
    r.push(20_000, b"tail-bytes");
    r.push_owned(20_010, Bytes::from(vec![7u8; 20_000]));
    // 100 bytes left in the first chunk: gathered with the tail chunk and the next one.
    let piece = r.read(19_900, 1_000);
    assert_eq!(piece.offset, 19_900);
    let mut want = first[19_900..].to_vec();
    want.extend_from_slice(b"tail-bytes");
    want.extend_from_slice(&[7u8; 890]);
    assert_eq!(&piece.data[..], &want[..]);
    assert_eq!(r.since(0).data.len(), 40_010);
}

#[test]
fn trimming_cuts_through_chunks_and_the_tail() {
    let mut r = Ring::new(10);
    r.push_owned(0, Bytes::from_static(b"0123456789"));
    r.push(10, b"abc");
    assert_eq!((r.start(), r.end()), (3, 13));
    assert_eq!(r.since(0), replay(3, 3, b"3456789abc"));
    r.push_owned(13, Bytes::from_static(b"ABCDEFGHIJKL"));
    assert_eq!(r.since(0), replay(15, 15, b"CDEFGHIJKL"));
    let mut small = Ring::new(4);
    for (i, b) in b"abcdefgh".iter().enumerate() {
        small.push(i as u64, &[*b]);
    }
    assert_eq!(small.since(0), replay(4, 4, b"efgh"));
}

#[test]
fn small_pushes_share_few_chunks() {
    let mut r = Ring::new(1 << 20);
    for i in 0..100_000u64 {
        r.push(i * 3, b"ab\n");
    }
    assert_eq!(r.end(), 300_000);
    assert!(r.chunks.len() <= 300_000 / TAIL_BYTES + 1, "{} chunks for 300 KB of echoes", r.chunks.len());
    let piece = r.read(150_000, 6);
    assert_eq!(piece, replay(150_000, 0, b"ab\nab\n"));
}

#[test]
fn a_shared_buffer_is_kept_only_when_the_piece_is_large() {
    let mut r = Ring::new(1 << 20);
    let frame = Bytes::from(vec![b'y'; 40_000]);
    r.push_shared(0, frame.slice(9..9 + 100));
    r.push_shared(100, frame.slice(200..200 + TAIL_BYTES));
    assert_eq!(r.read(0, 100).data, &frame[9..109], "a small piece was copied into the tail");
    assert_ne!(r.read(0, 100).data.as_ptr(), frame[9..].as_ptr());
    assert_eq!(r.read(100, TAIL_BYTES).data.as_ptr(), frame[200..].as_ptr(), "a large one is shared");
}
