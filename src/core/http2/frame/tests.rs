use super::*;

fn head(kind: Kind, flags: u8, stream: u32, len: usize) -> Head {
    Head { kind, flags, stream, len: len as u32 }
}

fn parse_one(bytes: &[u8]) -> (Head, &[u8]) {
    let head = Head::parse(bytes[..HEAD_LEN].try_into().unwrap());
    let payload = &bytes[HEAD_LEN..];
    assert_eq!(head.len as usize, payload.len(), "the head's length is the payload's");
    (head, payload)
}

#[test]
fn a_head_round_trips_and_loses_the_reserved_bit() {
    let mut buf = Vec::new();
    write_head(&mut buf, Kind::Data, flags::END_STREAM, 7, 70_000);
    assert_eq!(Head::parse(buf[..].try_into().unwrap()), head(Kind::Data, flags::END_STREAM, 7, 70_000));
    buf[5] |= 0x80;
    assert_eq!(Head::parse(buf[..].try_into().unwrap()).stream, 7);
    buf[3] = 0xee;
    assert_eq!(Head::parse(buf[..].try_into().unwrap()).kind, Kind::Unknown(0xee));
}

#[test]
fn data_padding_is_removed_and_checked() {
    let padded = head(Kind::Data, flags::PADDED, 1, 6);
    assert_eq!(data_payload(&padded, &[2, b'h', b'i', b'!', 0, 0]), Ok(1..4));
    let err = data_payload(&padded, &[9, b'h', 0]).unwrap_err();
    assert_eq!(err.reason, Reason::PROTOCOL_ERROR);
    let err = data_payload(&head(Kind::Data, flags::PADDED, 1, 0), &[]).unwrap_err();
    assert_eq!(err.reason, Reason::FRAME_SIZE_ERROR);
    assert_eq!(data_payload(&head(Kind::Data, 0, 1, 3), b"abc"), Ok(0..3));
    assert_eq!(data_payload(&head(Kind::Data, 0, 0, 3), b"abc").unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn a_header_block_loses_padding_and_priority() {
    let both = head(Kind::Headers, flags::PADDED | flags::PRIORITY, 3, 0);
    let payload = [1, 0, 0, 0, 1, 16, b'x', b'y', 0];
    assert_eq!(header_block(&both, &payload), Ok(6..8));
    let own = [1, 0, 0, 0, 3, 16, b'x', b'y', 0];
    assert_eq!(header_block(&both, &own).unwrap_err().reason, Reason::PROTOCOL_ERROR, "depends on itself");
    let short = head(Kind::Headers, flags::PRIORITY, 3, 0);
    assert_eq!(header_block(&short, &[0, 0]).unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn settings_parse_and_refuse_what_the_rfc_refuses() {
    let mut buf = Vec::new();
    write_settings(&mut buf, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (SETTINGS_MAX_FRAME_SIZE, 65_536), (99, 5)]);
    let (h, payload) = parse_one(&buf);
    let settings = Settings::parse(&h, payload).unwrap();
    assert_eq!(settings.initial_window_size, Some(1 << 20));
    assert_eq!(settings.max_frame_size, Some(65_536));
    assert_eq!(settings.enable_push, None);

    let one = |id: u16, value: u32| {
        let mut buf = Vec::new();
        write_settings(&mut buf, &[(id, value)]);
        let (h, payload) = parse_one(&buf);
        Settings::parse(&h, payload).map(|_| ()).map_err(|e| e.reason)
    };
    assert_eq!(one(SETTINGS_ENABLE_PUSH, 2), Err(Reason::PROTOCOL_ERROR));
    assert_eq!(one(SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW + 1), Err(Reason::FLOW_CONTROL_ERROR));
    assert_eq!(one(SETTINGS_MAX_FRAME_SIZE, 16_383), Err(Reason::PROTOCOL_ERROR));
    assert_eq!(one(SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_LIMIT + 1), Err(Reason::PROTOCOL_ERROR));
    assert_eq!(one(SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_LIMIT), Ok(()));

    let odd = head(Kind::Settings, 0, 0, 5);
    assert_eq!(Settings::parse(&odd, &[0; 5]).unwrap_err().reason, Reason::FRAME_SIZE_ERROR);
    let ack = head(Kind::Settings, flags::ACK, 0, 6);
    assert_eq!(Settings::parse(&ack, &[0; 6]).unwrap_err().reason, Reason::FRAME_SIZE_ERROR);
    let on_stream = head(Kind::Settings, 0, 1, 0);
    assert_eq!(Settings::parse(&on_stream, &[]).unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn control_frames_round_trip() {
    let mut buf = Vec::new();
    write_window_update(&mut buf, 5, 1000);
    let (h, p) = parse_one(&buf);
    assert_eq!((h.kind, h.stream, window_increment(&h, p)), (Kind::WindowUpdate, 5, Ok(1000)));

    buf.clear();
    write_rst(&mut buf, 9, Reason::CANCEL);
    let (h, p) = parse_one(&buf);
    assert_eq!(rst_reason(&h, p), Ok(Reason::CANCEL));

    buf.clear();
    write_goaway(&mut buf, 11, Reason::ENHANCE_YOUR_CALM, b"too many resets");
    let (h, p) = parse_one(&buf);
    let away = goaway(&h, p).unwrap();
    assert_eq!((away.last_stream, away.reason, away.debug), (11, Reason::ENHANCE_YOUR_CALM, &b"too many resets"[..]));

    buf.clear();
    write_ping(&mut buf, true, *b"12345678");
    let (h, p) = parse_one(&buf);
    assert!(h.has(flags::ACK));
    assert_eq!(ping(&h, p), Ok(*b"12345678"));
}

#[test]
fn malformed_control_frames_name_their_error() {
    let zero = [0u8; 4];
    assert_eq!(window_increment(&head(Kind::WindowUpdate, 0, 0, 4), &zero).unwrap_err().reason, Reason::PROTOCOL_ERROR);
    assert_eq!(
        window_increment(&head(Kind::WindowUpdate, 0, 1, 3), &[0, 0, 1]).unwrap_err().reason,
        Reason::FRAME_SIZE_ERROR
    );
    assert_eq!(rst_reason(&head(Kind::RstStream, 0, 0, 4), &zero).unwrap_err().reason, Reason::PROTOCOL_ERROR);
    assert_eq!(rst_reason(&head(Kind::RstStream, 0, 1, 5), &[0; 5]).unwrap_err().reason, Reason::FRAME_SIZE_ERROR);
    assert_eq!(goaway(&head(Kind::GoAway, 0, 0, 7), &[0; 7]).unwrap_err().reason, Reason::FRAME_SIZE_ERROR);
    assert_eq!(goaway(&head(Kind::GoAway, 0, 3, 8), &[0; 8]).unwrap_err().reason, Reason::PROTOCOL_ERROR);
    assert_eq!(ping(&head(Kind::Ping, 0, 0, 7), &[0; 7]).unwrap_err().reason, Reason::FRAME_SIZE_ERROR);
    assert_eq!(ping(&head(Kind::Ping, 0, 1, 8), &[0; 8]).unwrap_err().reason, Reason::PROTOCOL_ERROR);
    assert_eq!(check_priority(&head(Kind::Priority, 0, 1, 4), &[0; 4]).unwrap_err().reason, Reason::FRAME_SIZE_ERROR);
    assert_eq!(
        check_priority(&head(Kind::Priority, 0, 1, 5), &[0, 0, 0, 1, 0]).unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
    assert_eq!(check_priority(&head(Kind::Priority, 0, 3, 5), &[0, 0, 0, 1, 0]), Ok(()));
}

#[test]
fn a_long_header_block_goes_out_as_headers_and_continuations() {
    let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let mut buf = Vec::new();
    write_headers(&mut buf, 5, &block, true, DEFAULT_MAX_FRAME);
    let mut at = 0;
    let mut frames = Vec::new();
    let mut joined = Vec::new();
    while at < buf.len() {
        let h = Head::parse(buf[at..at + HEAD_LEN].try_into().unwrap());
        joined.extend_from_slice(&buf[at + HEAD_LEN..at + HEAD_LEN + h.len as usize]);
        at += HEAD_LEN + h.len as usize;
        frames.push(h);
    }
    assert_eq!(joined, block);
    let kinds: Vec<_> = frames.iter().map(|h| (h.kind, h.flags, h.stream)).collect();
    assert_eq!(
        kinds,
        [
            (Kind::Headers, flags::END_STREAM, 5),
            (Kind::Continuation, 0, 5),
            (Kind::Continuation, flags::END_HEADERS, 5)
        ]
    );

    buf.clear();
    write_headers(&mut buf, 1, b"", false, DEFAULT_MAX_FRAME);
    assert_eq!(Head::parse(buf[..].try_into().unwrap()), head(Kind::Headers, flags::END_HEADERS, 1, 0));
}

#[test]
fn reasons_read_as_their_names() {
    assert_eq!(Reason::FLOW_CONTROL_ERROR.to_string(), "FLOW_CONTROL_ERROR");
    assert_eq!(Reason(0x77).to_string(), "error code 0x77");
    let err = ProtocolError { reason: Reason::PROTOCOL_ERROR, what: "DATA on stream 0" };
    assert_eq!(err.to_string(), "PROTOCOL_ERROR: DATA on stream 0");
}
