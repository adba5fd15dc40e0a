use super::*;

const LIMIT: usize = 64;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: `b0` (FIN, RSV, opcode), masked unless `masked` is false.
fn frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![b0];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if !masked {
        return [out, payload.to_vec()].concat();
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
    let mut decoder = Decoder::new(LIMIT);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(message) = decoder.decode(&mut buf)? {
        out.push(message);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(out)
}

#[test]
fn masked_binary_and_text_frames_unmask() {
    let bytes = [frame(0x82, b"hello, keys", true), frame(0x81, "grüße".as_bytes(), true)].concat();
    let got = decode_all(&bytes).unwrap();
    assert_eq!(got, [Message::Binary(Bytes::from_static(b"hello, keys")), Message::Text("grüße".into())]);
}

#[test]
fn a_frame_split_anywhere_waits_for_its_rest() {
    let bytes = frame(0x82, b"abcdefghij", true);
    for cut in 0..bytes.len() {
        let mut decoder = Decoder::new(LIMIT);
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "cut at {cut}");
        assert!(decoder.wanted(&buf) > buf.len());
        buf.extend_from_slice(&bytes[cut..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Message::Binary(Bytes::from_static(b"abcdefghij")))));
    }
}

#[test]
fn an_unmasked_client_frame_is_a_protocol_error() {
    let err = decode_all(&frame(0x82, b"x", false)).unwrap_err();
    assert_eq!(err.close_code(), 1002);
}

#[test]
fn reserved_bits_and_unknown_opcodes_are_protocol_errors() {
    for b0 in [0xC2, 0xA2, 0x92, 0x83, 0x8B] {
        assert_eq!(decode_all(&frame(b0, b"x", true)).unwrap_err().close_code(), 1002, "b0 {b0:#x}");
    }
}

#[test]
fn fragments_reassemble_with_control_frames_between() {
    let bytes = [frame(0x01, b"he", true), frame(0x89, b"p", true), frame(0x00, b"ll", true), frame(0x80, b"o", true)];
    let got = decode_all(&bytes.concat()).unwrap();
    assert_eq!(got, [Message::Ping(Bytes::from_static(b"p")), Message::Text("hello".into())]);
}

#[test]
fn fragmentation_errors_are_protocol_errors() {
    let orphan = frame(0x80, b"x", true);
    let nested = [frame(0x02, b"a", true), frame(0x82, b"b", true)].concat();
    let fragmented_ping = frame(0x09, b"p", true);
    for bytes in [orphan, nested, fragmented_ping] {
        assert_eq!(decode_all(&bytes).unwrap_err().close_code(), 1002);
    }
}

#[test]
fn messages_over_the_limit_close_with_1009_before_their_payload_arrives() {
    let big = frame(0x82, &[0; LIMIT + 1], true);
    let mut buf = BytesMut::from(&big[..8]);
    assert_eq!(Decoder::new(LIMIT).decode(&mut buf).unwrap_err().close_code(), 1009);
    let huge = [0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
    assert_eq!(decode_all(&huge).unwrap_err().close_code(), 1009);
    let fragments = [frame(0x02, &[1; 40], true), frame(0x80, &[2; 40], true)].concat();
    assert_eq!(decode_all(&fragments).unwrap_err().close_code(), 1009);
    assert!(decode_all(&frame(0x82, &[0; LIMIT], true)).is_ok());
}

#[test]
fn control_frames_over_125_bytes_are_protocol_errors() {
    let mut decoder = Decoder::new(1024);
    let mut buf = BytesMut::from(&frame(0x89, &[0; 126], true)[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap_err().close_code(), 1002);
}

#[test]
fn bad_utf8_closes_with_1007() {
    assert_eq!(decode_all(&frame(0x81, &[0xC3, 0x28], true)).unwrap_err().close_code(), 1007);
    let split = [frame(0x01, &[0xC3], true), frame(0x80, &[0x28], true)].concat();
    assert_eq!(decode_all(&split).unwrap_err().close_code(), 1007);
    // A character split across fragments is fine once whole.
    let whole = [frame(0x01, &[0xC3], true), frame(0x80, &[0xBC], true)].concat();
    assert_eq!(decode_all(&whole).unwrap(), [Message::Text("ü".into())]);
}

#[test]
fn close_frames_give_their_code_and_bad_ones_are_errors() {
    assert_eq!(decode_all(&frame(0x88, b"", true)).unwrap(), [Message::Close(1000)]);
    let with_reason = [&4321u16.to_be_bytes()[..], b"bye"].concat();
    assert_eq!(decode_all(&frame(0x88, &with_reason, true)).unwrap(), [Message::Close(4321)]);
    assert_eq!(decode_all(&frame(0x88, b"x", true)).unwrap_err().close_code(), 1002);
    assert_eq!(decode_all(&frame(0x88, &1005u16.to_be_bytes(), true)).unwrap_err().close_code(), 1002);
    let bad_reason = [&1000u16.to_be_bytes()[..], &[0xFF]].concat();
    assert_eq!(decode_all(&frame(0x88, &bad_reason, true)).unwrap_err().close_code(), 1007);
}

#[test]
fn server_headers_use_the_shortest_length_form() {
    let mut out = [0; MAX_HEADER_BYTES];
    let mut header = |kind, len| {
        let n = encode_header(kind, len, &mut out);
        out[..n].to_vec()
    };
    assert_eq!(header(Kind::Binary, 5), [0x82, 5]);
    assert_eq!(header(Kind::Text, 300), [0x81, 126, 1, 44]);
    assert_eq!(header(Kind::Close, 70_000), [0x88, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    assert_eq!(encode_header(Kind::Pong, 125, &mut out), 2);
}

#[test]
fn close_payloads_fit_a_control_frame_on_a_char_boundary() {
    assert_eq!(close_payload(4002, "gone"), [0x0F, 0xA2, b'g', b'o', b'n', b'e']);
    let long = close_payload(1000, &"é".repeat(100));
    assert!(long.len() <= 125);
    assert!(std::str::from_utf8(&long[2..]).is_ok());
}
