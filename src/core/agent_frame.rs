//! Decoding the agent's frames, with a short path for `Output` and `Credit`: a shell's output
//! and the input credit that rides with its echo are nearly all the agent sends, and prost's
//! general decoder (a loop over keys, a merge per field and per oneof arm) cost the relay about
//! 500 instructions per frame. The short path takes a frame written in field order with known
//! fields only, as every encoder (prost's, and the agent's hand-written head) writes it;
//! anything else goes to prost,
//! so the result is always what `AgentFrame::decode` gives (a test and the `agent_frames` fuzz
//! target compare the two).

use bytes::{Buf, Bytes};
use prost::Message;

use crate::core::grpc_frame::Incoming;
use crate::proto::{AgentFrame, Credit, Output, RelayFrame, agent_frame};

impl Incoming for AgentFrame {
    fn decode_message(bytes: Bytes) -> Result<Self, prost::DecodeError> {
        decode(bytes)
    }
}

/// The relay's frames to the agent take prost's decoder.
impl Incoming for RelayFrame {}

/// `message` (one gRPC message's bytes) as an `AgentFrame`.
pub(crate) fn decode(message: Bytes) -> Result<AgentFrame, prost::DecodeError> {
    let kind = match message.first() {
        Some(&FRAME_OUTPUT) => output(&message).map(agent_frame::Kind::Output),
        Some(&FRAME_CREDIT) => credit(&message).map(agent_frame::Kind::Credit),
        _ => None,
    };
    match kind {
        Some(kind) => Ok(AgentFrame { kind: Some(kind) }),
        None => AgentFrame::decode(message),
    }
}

/// Keys of `AgentFrame.output` and `AgentFrame.credit` (fields 4 and 5, length-delimited).
const FRAME_OUTPUT: u8 = 4 << 3 | 2;
const FRAME_CREDIT: u8 = 5 << 3 | 2;
/// Keys of `Output`'s fields (channel, stream, offset: varints; data, length-delimited) and of
/// `Credit`'s (channel, bytes: varints).
const CHANNEL: u8 = 1 << 3;
const STREAM: u8 = 2 << 3;
const OFFSET: u8 = 3 << 3;
const DATA: u8 = 4 << 3 | 2;
const CREDIT_BYTES: u8 = 2 << 3;

/// The `Output` that `message` is exactly, in the short form; `None` for anything else
/// (another frame, another field order, unknown or repeated fields, or bytes prost refuses).
fn output(message: &Bytes) -> Option<Output> {
    let mut at = Reader::frame(message)?;
    let mut output = Output::default();
    let mut key = at.byte();
    output.channel = at.varint_if(&mut key, CHANNEL)?;
    // An enum field: prost keeps any i32 (unknown values included) and truncates as here.
    output.stream = at.varint_if(&mut key, STREAM)? as i32;
    output.offset = at.varint_if(&mut key, OFFSET)?;
    if key == Some(DATA) {
        let len = usize::try_from(at.varint()?).ok()?;
        let end = at.at.checked_add(len).filter(|&end| end <= message.len())?;
        output.data = message.slice(at.at..end);
        at.at = end;
        key = at.byte();
    }
    // The whole message read, nothing after the last known field.
    (key.is_none()).then_some(output)
}

/// The `Credit` that `message` is exactly, in the short form (as `output`).
fn credit(message: &Bytes) -> Option<Credit> {
    let mut at = Reader::frame(message)?;
    let mut key = at.byte();
    let channel = at.varint_if(&mut key, CHANNEL)?;
    // A uint32 field: prost truncates a larger varint as here.
    let bytes = at.varint_if(&mut key, CREDIT_BYTES)? as u32;
    let credit = Credit { channel, bytes };
    (key.is_none()).then_some(credit)
}

struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    /// After the frame's one field's key and length, which must span the rest of `message`.
    fn frame(message: &'a Bytes) -> Option<Self> {
        let mut at = Reader { bytes: message, at: 1 };
        let len = usize::try_from(at.varint()?).ok()?;
        (len == message.len() - at.at).then_some(at)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// The value of the varint field `want` when `key` is its key (then `key` becomes the
    /// next one), 0 (protobuf's default) when the field is absent; `None` for a bad varint.
    fn varint_if(&mut self, key: &mut Option<u8>, want: u8) -> Option<u64> {
        if *key != Some(want) {
            return Some(0);
        }
        let value = self.varint()?;
        *key = self.byte();
        Some(value)
    }

    /// A varint as prost reads one: at most ten bytes, the tenth at most 1.
    fn varint(&mut self) -> Option<u64> {
        let mut rest = self.bytes.get(self.at..)?;
        let before = rest.len();
        let value = prost::encoding::decode_varint(&mut rest).ok()?;
        self.at += before - rest.remaining();
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Closed, Hello};

    fn frame(kind: agent_frame::Kind) -> AgentFrame {
        AgentFrame { kind: Some(kind) }
    }

    fn same_as_prost(bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        let ours = decode(bytes.clone());
        let theirs = AgentFrame::decode(bytes.clone());
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{bytes:02x?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{bytes:02x?}: ours {ours:?}, prost {theirs:?}"),
        }
    }

    #[test]
    fn outputs_decode_on_the_short_path_as_prost_decodes_them() {
        let offsets = [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX];
        let lengths = [0usize, 1, 3, 127, 128, 4096, 70_000];
        for (i, &offset) in offsets.iter().enumerate() {
            for &len in &lengths {
                let data = Bytes::from((0..len).map(|n| n as u8).collect::<Vec<_>>());
                let output = Output { channel: i as u64 * 1_000_003, stream: (i % 3) as i32, offset, data };
                let encoded = frame(agent_frame::Kind::Output(output.clone())).encode_to_vec();
                assert_eq!(super::output(&Bytes::from(encoded.clone())), Some(output), "short path not taken");
                same_as_prost(&encoded);
                // Every truncation is refused by both, or (on a field boundary) read alike.
                for cut in 0..encoded.len().min(24) {
                    same_as_prost(&encoded[..cut]);
                }
            }
        }
    }

    #[test]
    fn credits_decode_on_the_short_path_as_prost_decodes_them() {
        for channel in [0u64, 1, 300, 1 << 45] {
            for bytes in [0u32, 1, 4096, u32::MAX] {
                let credit = Credit { channel, bytes };
                let encoded = frame(agent_frame::Kind::Credit(credit)).encode_to_vec();
                assert_eq!(super::credit(&Bytes::from(encoded.clone())), Some(credit), "short path not taken");
                for cut in 0..=encoded.len() {
                    same_as_prost(&encoded[..cut]);
                }
            }
        }
        // A varint beyond u32 in `bytes`, fields out of order, an unknown field.
        for odd in [
            &[0x2a, 0x06, 0x10, 0xff, 0xff, 0xff, 0xff, 0x1f][..],
            &[0x2a, 0x04, 0x10, 0x01, 0x08, 0x02],
            &[0x2a, 0x02, 0x18, 0x01],
        ] {
            same_as_prost(odd);
        }
    }

    #[test]
    fn other_frames_and_other_encodings_are_read_as_prost_reads_them() {
        let others = [
            frame(agent_frame::Kind::Closed(Closed { channel: 3, ..Default::default() })),
            frame(agent_frame::Kind::Hello(Hello { hostname: "h".into(), ..Default::default() })),
            AgentFrame { kind: None },
        ];
        for other in others {
            same_as_prost(&other.encode_to_vec());
        }
        // Output's fields out of order, repeated, unknown, or an unknown field after the
        // frame's: prost's rules (the last value wins, unknown fields skipped) decide.
        let odd: [&[u8]; 7] = [
            &[0x22, 0x06, 0x18, 0x05, 0x08, 0x02, 0x22, 0x00],
            &[0x22, 0x04, 0x08, 0x01, 0x08, 0x02],
            &[0x22, 0x04, 0x08, 0x01, 0x28, 0x09],
            &[0x22, 0x02, 0x08, 0x01, 0x58, 0x01],
            &[0x22, 0x00, 0x22, 0x02, 0x08, 0x05],
            &[0x22, 0x03, 0x22, 0x05, 0x41],
            &[0x22, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ];
        for bytes in odd {
            same_as_prost(bytes);
        }
    }
}
