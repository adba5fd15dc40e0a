//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing` feature, and in the
//! lib's own tests, which replay the committed corpora through them): every parser that takes
//! outside input, driven as the server and agent drive it. Each function takes arbitrary bytes
//! and must never panic, hang or grow without bound.

use std::sync::Arc;
use std::sync::OnceLock;

use prost::Message;
use time::OffsetDateTime;

use crate::core::ids::{LinkId, MachineId};
use crate::core::link_token::{KeyRing, LinkClaims, LinkMode, Revocations, verify_link};
use crate::core::resolver::{Candidate, resolve};
use crate::core::session::{OpenSpec, SessionKind, SessionName};
use crate::proto;
use crate::server::relay::LocalRouter;
use crate::server::relay::registry::AgentConn;
use crate::server::relay::router::SessionRouter;

/// Most frames one input may carry to the relay's state machine.
const MAX_FRAMES: usize = 256;

fn keys() -> &'static (KeyRing, String) {
    static KEYS: OnceLock<(KeyRing, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        #[allow(clippy::expect_used)] // fuzzing set-up: no OS randomness, no fuzzing
        let ring = KeyRing::generate().expect("OS randomness");
        let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let claims = LinkClaims {
            link_id: LinkId::random(),
            machine_id: MachineId::random(),
            deadline,
            mode: LinkMode::ReadOnly,
        };
        let token = ring.mint(&claims);
        (ring, token)
    })
}

/// A share-link token as it arrives in a URL: decode and verify (parse, key id, MAC,
/// deadline, revocation set). Also splices the input into a valid token, so the MAC check
/// itself sees near-valid tokens.
pub fn link_token(data: &[u8]) {
    let (ring, valid) = keys();
    let revocations = Revocations::new();
    let now = OffsetDateTime::now_utc();
    let text = String::from_utf8_lossy(data);
    let _ = verify_link(ring, &revocations, &text, now);
    if let Some((&at, rest)) = data.split_first() {
        let mut spliced = valid.clone().into_bytes();
        let at = usize::from(at) % spliced.len();
        for (slot, b) in spliced[at..].iter_mut().zip(rest) {
            *slot = *b;
        }
        let _ = verify_link(ring, &revocations, &String::from_utf8_lossy(&spliced), now);
    }
}

/// Frames an agent (or a node) sends, as the relay consumes them: length-prefixed (u16 BE)
/// protobuf `AgentFrame`s dispatched to a stream with two open sessions, until the first
/// protocol violation ends the stream as the relay would.
pub fn agent_frames(data: &[u8]) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    #[allow(clippy::expect_used)] // fuzzing set-up
    let rt = RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"));
    rt.block_on(async {
        let machine = MachineId::random();
        let (tx, mut outbound) = tokio::sync::mpsc::channel(1024);
        let conn = AgentConn::new(machine, 1, tx);
        let router = LocalRouter::default();
        router.register(conn.clone());
        let spec = |kind| OpenSpec {
            kind,
            argv: vec![],
            env: vec![],
            cols: 80,
            rows: 24,
            timeout: None,
            access: Default::default(),
        };
        let mut ports = Vec::new();
        for kind in [SessionKind::Exec, SessionKind::Shell] {
            if let Ok(port) = router.open(machine, spec(kind)).await {
                ports.push(port);
            }
        }
        let mut rest = data;
        for _ in 0..MAX_FRAMES {
            let Some((frame, tail)) = next_frame(rest) else { break };
            rest = tail;
            // The relay's decoder must read every frame as prost does.
            let bytes = bytes::Bytes::copy_from_slice(frame);
            let decoded = crate::core::agent_frame::decode(bytes.clone());
            match (&decoded, proto::AgentFrame::decode(bytes)) {
                (Ok(ours), Ok(prost)) => assert_eq!(ours, &prost, "the short path decoded a frame differently"),
                (Err(_), Err(_)) => {}
                (ours, prost) => panic!("the short path and prost disagree: {ours:?} / {prost:?}"),
            }
            let Ok(proto::AgentFrame { kind: Some(kind) }) = decoded else { break };
            if conn.dispatch(kind).is_err() {
                break;
            }
        }
        for port in &mut ports {
            while port.events.try_recv().is_ok() {}
            let _ = port.control.consumed(1024).await;
        }
        conn.lost();
        while outbound.try_recv().is_ok() {}
        drop(ports);
        let _ = Arc::strong_count(&conn);
    });
}

fn next_frame(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    Some(rest.split_at(len))
}

/// A browser's text frames on a link socket (JSON control messages).
pub fn control_message(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::server::http::protocol::ClientMessage>(data);
}

/// Bytes a browser sends on a link socket after the handshake, split into reads at a point
/// the input's first byte chooses: decoded as the link socket decodes them, until the first
/// protocol error, with a small limit so that an announced length over it must be refused
/// before any buffer grows to it.
pub fn ws_frames(data: &[u8]) {
    use crate::core::ws_frame::{Decoder, MAX_HEADER_BYTES, Message};
    const LIMIT: usize = 1024;
    let Some((&cut, data)) = data.split_first() else { return };
    let (first, second) = data.split_at(usize::from(cut).min(data.len()));
    let mut decoder = Decoder::new(LIMIT);
    let mut buf = bytes::BytesMut::new();
    for read in [first, second] {
        buf.extend_from_slice(read);
        loop {
            assert!(decoder.wanted(&buf) <= LIMIT + MAX_HEADER_BYTES, "wants more than a frame at the limit");
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Binary(b))) => assert!(b.len() <= LIMIT),
                Ok(Some(Message::Text(t))) => assert!(t.len() <= LIMIT),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The form and JSON bodies strangers can post: OAuth device and token requests, the device
/// page's sign-in and decision, and a link's unlock.
pub fn form_bodies(data: &[u8]) {
    use crate::server::http::{device, oauth};
    let _ = serde_urlencoded::from_bytes::<oauth::DeviceRequest>(data);
    let _ = serde_urlencoded::from_bytes::<oauth::TokenRequest>(data);
    let _ = serde_urlencoded::from_bytes::<device::LoginForm>(data);
    let _ = serde_urlencoded::from_bytes::<device::DecideForm>(data);
    let _ = serde_json::from_slice::<crate::server::http::unlock::UnlockForm>(data);
    let _ = crate::server::oauth::device::normalize_user_code(&String::from_utf8_lossy(data));
}

struct Fake {
    id: String,
    hostname: String,
    display_name: Option<String>,
}

impl Candidate for Fake {
    fn id(&self) -> String {
        self.id.clone()
    }
    fn hostname(&self) -> &str {
        &self.hostname
    }
    fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }
}

/// What a user types to name a machine (and a session), against a small fleet whose names
/// also come from the input: the first three lines are hostnames, the last one the query.
pub fn resolver(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.lines().collect();
    let query = lines.pop().unwrap_or_default();
    let fleet: Vec<Fake> = lines
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, name)| Fake {
            id: format!("{i:08x}-0000-4000-8000-000000000000"),
            hostname: (*name).to_string(),
            display_name: name.split_once(' ').map(|(d, _)| d.to_string()),
        })
        .collect();
    let _ = resolve(query, &fleet);
    let _ = SessionName::parse(query);
}

/// Durations as every flag takes them (`90s`, `15m`, `2h`, `7d`); what parses formats back.
pub fn duration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(d) = crate::core::duration::parse(&text) {
        let _ = crate::core::duration::format(d);
    }
}

#[cfg(test)]
mod tests;

/// HTTP/2 frames as a peer sends them to our connections: heads, every payload parser, and
/// header blocks (HEADERS + CONTINUATION) through one connection's HPACK decoder. Each frame
/// that parses is written again with the core's writers and must parse to the same values.
pub fn http2_frames(data: &[u8]) {
    use crate::core::http2::frame::{self, HEAD_LEN, Head, Kind};
    use crate::core::http2::hpack::Decoder;
    let mut decoder = Decoder::new();
    let mut block = Vec::new();
    let mut rest = data;
    for _ in 0..MAX_FRAMES {
        let Some((head, tail)) = rest.split_first_chunk::<HEAD_LEN>() else { return };
        let head = Head::parse(head);
        let Some((payload, tail)) = tail.split_at_checked(head.len as usize) else { return };
        rest = tail;
        match head.kind {
            Kind::Data => {
                if let Ok(range) = frame::data_payload(&head, payload) {
                    assert!(range.end <= payload.len());
                }
            }
            Kind::Headers | Kind::Continuation => {
                let fragment = match head.kind {
                    Kind::Headers => frame::header_block(&head, payload).map(|r| &payload[r]),
                    _ => Ok(payload),
                };
                let Ok(fragment) = fragment else { continue };
                block.extend_from_slice(fragment);
                if head.has(frame::flags::END_HEADERS) {
                    if let Ok(fields) = decoder.decode(&block, 4096) {
                        assert!(fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>() <= 4096);
                    }
                    block.clear();
                }
            }
            Kind::Settings => {
                if let Ok(settings) = frame::Settings::parse(&head, payload) {
                    http2_settings_round_trip(&head, settings);
                }
            }
            Kind::Ping => {
                if let Ok(data) = frame::ping(&head, payload) {
                    let mut out = Vec::new();
                    frame::write_ping(&mut out, head.has(frame::flags::ACK), data);
                    assert_eq!(out[HEAD_LEN..], *payload);
                }
            }
            Kind::WindowUpdate => {
                if let Ok(increment) = frame::window_increment(&head, payload) {
                    let mut out = Vec::new();
                    frame::write_window_update(&mut out, head.stream, increment);
                    assert_eq!(frame::window_increment(&head, &out[HEAD_LEN..]), Ok(increment));
                }
            }
            Kind::RstStream => {
                if let Ok(reason) = frame::rst_reason(&head, payload) {
                    let mut out = Vec::new();
                    frame::write_rst(&mut out, head.stream, reason);
                    assert_eq!(out[HEAD_LEN..], *payload);
                }
            }
            Kind::GoAway => {
                if let Ok(away) = frame::goaway(&head, payload) {
                    let mut out = Vec::new();
                    frame::write_goaway(&mut out, away.last_stream, away.reason, away.debug);
                    assert_eq!(frame::goaway(&head, &out[HEAD_LEN..]), Ok(away));
                }
            }
            Kind::Priority => {
                let _ = frame::check_priority(&head, payload);
            }
            Kind::PushPromise | Kind::Unknown(_) => {}
        }
    }
}

/// A parsed SETTINGS frame written again parses to the same values.
fn http2_settings_round_trip(head: &crate::core::http2::frame::Head, settings: crate::core::http2::frame::Settings) {
    use crate::core::http2::frame::{self, HEAD_LEN};
    let mut out = Vec::new();
    if head.has(frame::flags::ACK) {
        frame::write_settings_ack(&mut out);
    } else {
        let values = [
            (frame::SETTINGS_HEADER_TABLE_SIZE, settings.header_table_size),
            (frame::SETTINGS_ENABLE_PUSH, settings.enable_push),
            (frame::SETTINGS_MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams),
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, settings.initial_window_size),
            (frame::SETTINGS_MAX_FRAME_SIZE, settings.max_frame_size),
            (frame::SETTINGS_MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
        ];
        let present: Vec<(u16, u32)> = values.iter().filter_map(|(id, v)| v.map(|v| (*id, v))).collect();
        frame::write_settings(&mut out, &present);
    }
    let again = frame::Head::parse(out[..HEAD_LEN].try_into().unwrap_or(&[0; HEAD_LEN]));
    assert_eq!(frame::Settings::parse(&again, &out[HEAD_LEN..]), Ok(settings));
}
