use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn pairs(fields: &[(Bytes, Bytes)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn huffman_coded_requests_decode_with_the_dynamic_table() {
    // RFC 7541 C.4.1 and C.4.2: the second block refers to an entry the first one added.
    let mut decoder = Decoder::new();
    let first = decoder.decode(&hex("828684418cf1e3c2e5f23a6ba0ab90f4ff"), 16 * 1024).unwrap();
    assert_eq!(
        pairs(&first),
        owned(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
    );
    let second = decoder.decode(&hex("828684be5886a8eb10649cbf"), 16 * 1024).unwrap();
    assert_eq!(
        pairs(&second),
        owned(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache")
        ])
    );
}

#[test]
fn what_we_encode_decodes_to_the_same_fields() {
    let long = "v".repeat(300);
    let fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/cmdop.relay.v1.Relay/Link"),
        (":authority", "127.0.0.1:4000"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-long", long.as_str()),
    ];
    let mut block = Vec::new();
    encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())), &mut block);
    assert_eq!(block[..2], [0x83, 0x86], ":method POST and :scheme http are one byte each");
    let decoded = Decoder::new().decode(&block, 16 * 1024).unwrap();
    assert_eq!(pairs(&decoded), owned(&fields));
}

#[test]
fn a_list_over_the_limit_is_refused_but_the_table_stays_in_step() {
    // A literal with incremental indexing of "custom-key: custom-header" (RFC 7541 C.3.3's
    // entry), then a block that refers to it as index 62.
    let mut decoder = Decoder::new();
    let add = hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572");
    assert_eq!(decoder.decode(&add, 40), Err(HpackError::TooLarge(40)));
    let again = decoder.decode(&hex("be"), 1024).unwrap();
    assert_eq!(pairs(&again), owned(&[("custom-key", "custom-header")]));
}

#[test]
fn malformed_blocks_and_oversized_tables_are_compression_errors() {
    let mut decoder = Decoder::new();
    assert_eq!(decoder.decode(&hex("ff00"), 1024), Err(HpackError::Malformed), "index 127 does not exist");
    // A dynamic table size update to 1 MiB: beyond the 4,096 bytes we allow.
    let mut update = Vec::new();
    write_integer(&mut update, 0x20, 5, 1 << 20);
    update.push(0x82);
    assert_eq!(Decoder::new().decode(&update, 1024), Err(HpackError::Malformed));
    // A string literal longer than the block.
    assert_eq!(Decoder::new().decode(&hex("000a6162"), 1024), Err(HpackError::Malformed));
}

#[test]
fn integers_use_their_prefix_and_continuation_bytes() {
    let mut out = Vec::new();
    write_integer(&mut out, 0, 5, 10);
    write_integer(&mut out, 0, 5, 1337);
    assert_eq!(out, [10, 31, 154, 10], "RFC 7541 C.1.1 and C.1.2");
}

/// A literal with incremental indexing and a new name (RFC 7541 §6.2.1), not Huffman-coded.
fn indexed_literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    write_string(&mut out, name.as_bytes());
    write_string(&mut out, value.as_bytes());
    out
}

#[test]
fn the_table_evicts_its_oldest_entries_to_stay_within_its_size() {
    let mut decoder = Decoder::new();
    let value = "v".repeat(1000);
    // Five entries of 1,034 bytes each: only three fit in 4,096.
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        decoder.decode(&indexed_literal(name, &value), 16 * 1024).unwrap();
    }
    assert_eq!(pairs(&decoder.decode(&hex("be"), 16 * 1024).unwrap())[0].0, "a5", "62 is the newest");
    assert_eq!(pairs(&decoder.decode(&hex("c0"), 16 * 1024).unwrap())[0].0, "a3");
    assert_eq!(decoder.decode(&hex("c1"), 16 * 1024), Err(HpackError::Malformed), "a2 was evicted");
    // A size update to 0 empties the table; one after a field is refused.
    let mut zero = Vec::new();
    write_integer(&mut zero, 0x20, 5, 0);
    zero.push(0x82);
    assert_eq!(pairs(&decoder.decode(&zero, 1024).unwrap()), owned(&[(":method", "GET")]));
    assert_eq!(decoder.decode(&hex("be"), 1024), Err(HpackError::Malformed));
    let mut late = vec![0x82];
    write_integer(&mut late, 0x20, 5, 100);
    assert_eq!(decoder.decode(&late, 1024), Err(HpackError::Malformed));
}
