//! The agent's table of open channels and the frames sessions send.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use crate::core::convert;
use crate::core::session::{Attachment, Ending, Exit, OutputStream};
use crate::proto::{self, agent_frame, closed};

use super::attach::Input;
/// Frames toward the relay, handed to HTTP/2 by the task that makes them (bounded: a full
/// send buffer pauses readers, which stop reading PTYs).
pub(crate) use super::stream::Out;
use crate::sys::grpc_stream::Closed;

/// What the relay asks of a running session.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Bytes for stdin/the PTY (covered by input credit).
    Input(Bytes),
    /// A shell attachment's input (written by the dispatcher, `attach::Input`) waits for room
    /// in the PTY, or its credit is due without output: the attachment's task has work.
    InputWaits,
    /// New PTY size.
    Resize(u16, u16),
    /// A POSIX signal for the process group.
    Signal(i32),
    /// The consumer left: end the process (a persistent shell session only loses this
    /// attachment).
    Close,
    /// SHELL: the consumer detached or the stream dropped; the session lives on.
    Detach,
    /// The attach password changed since this channel was admitted: end it as refused (a
    /// persistent shell session lives on for whoever unlocks with the new password).
    Revoke,
}

/// A running session as the dispatcher sees it.
struct Entry {
    credit: Arc<Semaphore>,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// A shell attachment: a dropped stream detaches it instead of ending the process.
    attachment: bool,
    /// The attach password's epoch it was admitted under (`None`: the machine had none).
    epoch: Option<String>,
    /// A shell attachment's input, written by the dispatcher itself once the attachment is
    /// set up (`attach::Input`); until then, and for other sessions, input is a `Cmd`.
    input: Option<Arc<Input>>,
}

impl Entry {
    /// Sends `cmd` to the session; a command that ends the channel first stops the direct
    /// input, so that no byte the relay sends after it reaches the PTY.
    fn send(&self, cmd: Cmd) {
        if matches!(cmd, Cmd::Close | Cmd::Detach | Cmd::Revoke)
            && let Some(input) = &self.input
        {
            input.close();
        }
        let _ = self.cmds.send(cmd);
    }
}

/// Channel number -> session. Shared by the dispatcher and the sessions (which remove
/// themselves when they end). The std Mutex is never held across an `.await`. A B-tree: a
/// lookup for every frame, among a few channels, costs less than hashing the number.
#[derive(Clone, Default)]
pub(crate) struct Channels(Arc<Mutex<BTreeMap<u64, Entry>>>);

impl Channels {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        crate::core::sync::lock(&self.0)
    }

    /// Adds a channel with its initial output credit; returns the credit and command queue.
    /// `attachment`: a shell attachment, which a dropped stream detaches rather than ends.
    pub(crate) fn insert(
        &self,
        channel: u64,
        window: u32,
        attachment: bool,
        epoch: Option<String>,
    ) -> Option<(Arc<Semaphore>, mpsc::UnboundedReceiver<Cmd>)> {
        let mut map = self.lock();
        if map.contains_key(&channel) {
            return None;
        }
        let credit = Arc::new(Semaphore::new(window as usize));
        let (cmds, rx) = mpsc::unbounded_channel();
        map.insert(channel, Entry { credit: credit.clone(), cmds, attachment, epoch, input: None });
        Some((credit, rx))
    }

    /// Forgets a channel (its session ended).
    pub(crate) fn remove(&self, channel: u64) {
        self.lock().remove(&channel);
    }

    /// Grants output credit.
    pub(crate) fn credit(&self, channel: u64, bytes: u32) {
        if let Some(e) = self.lock().get(&channel) {
            e.credit.add_permits(bytes as usize);
        }
    }

    /// From now on the dispatcher writes the channel's input itself, through `input`.
    pub(crate) fn write_input_through(&self, channel: u64, input: Arc<Input>) {
        if let Some(e) = self.lock().get_mut(&channel) {
            e.input = Some(input);
        }
    }

    /// Delivers input: straight into a shell attachment's PTY (waking its task only when it
    /// has work), otherwise as a command. Unknown channels (already ended) are ignored.
    pub(crate) fn input(&self, channel: u64, data: Bytes) {
        let map = self.lock();
        let Some(e) = map.get(&channel) else { return };
        match &e.input {
            Some(input) => {
                if input.write(data) {
                    let _ = e.cmds.send(Cmd::InputWaits);
                }
            }
            None => e.send(Cmd::Input(data)),
        }
    }

    /// Delivers a command; unknown channels (already ended) are ignored.
    pub(crate) fn command(&self, channel: u64, cmd: Cmd) {
        if let Some(e) = self.lock().get(&channel) {
            e.send(cmd);
        }
    }

    /// Ends every channel admitted under another attach password than `current` (set,
    /// changed or cleared since); how many.
    pub(crate) fn revoke_stale(&self, current: Option<&str>) -> usize {
        let map = self.lock();
        let stale: Vec<_> = map.values().filter(|e| e.epoch.as_deref() != current).collect();
        for e in &stale {
            e.send(Cmd::Revoke);
        }
        stale.len()
    }

    /// The stream dropped: every exec is told to end, every shell attachment to detach (its
    /// session lives on for a reattach after the agent reconnects).
    pub(crate) fn close_all(&self) {
        for e in std::mem::take(&mut *self.lock()).into_values() {
            e.send(if e.attachment { Cmd::Detach } else { Cmd::Close });
            e.credit.close();
        }
    }
}

/// Output chunks at least this long go to the relay from their own buffer: below it the copy
/// into the stream's queue costs less than a piece of its own.
const SPLIT_FROM: usize = 2048;

/// Sends an `Output` frame; a large chunk reaches the socket without being copied into the
/// stream's queue. The wire bytes are those of [`output_frame`] either way.
pub(crate) async fn send_output(
    out: &Out,
    channel: u64,
    stream: OutputStream,
    offset: u64,
    data: Bytes,
) -> Result<(), Closed> {
    match output_splits(data.len()) {
        false => out.send(output_frame(channel, stream, offset, data)).await,
        true => send_output_split(out, channel, stream, offset, data).await,
    }
}

/// Whether an output chunk of `len` bytes is sent with [`send_output_split`].
pub(crate) fn output_splits(len: usize) -> bool {
    len >= SPLIT_FROM
}

/// Sends an `Output` frame as its head and the chunk from the chunk's own buffer
/// (`Out::send_split`).
pub(crate) async fn send_output_split(
    out: &Out,
    channel: u64,
    stream: OutputStream,
    offset: u64,
    data: Bytes,
) -> Result<(), Closed> {
    let mut head = [0u8; OUTPUT_HEAD_MAX];
    let len = output_head(channel, stream, offset, data.len(), &mut head);
    out.send_split(&head[..len], data).await
}

/// Room for [`output_head`]: gRPC's 5-byte header, two keys and lengths, three scalars.
const OUTPUT_HEAD_MAX: usize = 5 + 2 * (1 + 10) + 3 * (1 + 10) + 1 + 10;

/// Writes into `head` the encoding of `output_frame(channel, stream, offset, data)` up to its
/// `data` bytes, `len` long: gRPC's message header, the frame's `output` field (tag 4) and
/// length, the `Output`'s other fields, then `data`'s key (tag 4, the last field) and length.
/// Returns how many bytes it wrote.
fn output_head(channel: u64, stream: OutputStream, offset: u64, len: usize, head: &mut [u8; OUTPUT_HEAD_MAX]) -> usize {
    use prost::Message;
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let fields = output_frame(channel, stream, offset, Bytes::new());
    let Some(agent_frame::Kind::Output(fields)) = fields.kind else { return 0 };
    let output_len = fields.encoded_len() + key_len(4) + encoded_len_varint(len as u64) + len;
    let frame_len = key_len(4) + encoded_len_varint(output_len as u64) + output_len;
    let mut buf = &mut head[..];
    bytes::BufMut::put_u8(&mut buf, 0);
    bytes::BufMut::put_u32(&mut buf, u32::try_from(frame_len).unwrap_or(u32::MAX));
    encode_key(4, WireType::LengthDelimited, &mut buf);
    encode_varint(output_len as u64, &mut buf);
    fields.encode_raw(&mut buf);
    encode_key(4, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    OUTPUT_HEAD_MAX - buf.len()
}

/// An `Output` frame.
pub(crate) fn output_frame(channel: u64, stream: OutputStream, offset: u64, data: Bytes) -> proto::AgentFrame {
    let stream = convert::output_stream_to_wire(stream) as i32;
    let output = proto::Output { channel, stream, offset, data };
    proto::AgentFrame { kind: Some(agent_frame::Kind::Output(output)) }
}

/// The `Opened` frame: the process started (or, with `attachment`, the shell session joined).
pub(crate) fn opened_frame(
    channel: u64,
    pid: u32,
    input_window: u32,
    attachment: Option<&Attachment>,
) -> proto::AgentFrame {
    let opened = convert::opened_of(channel, pid, input_window, attachment);
    proto::AgentFrame { kind: Some(agent_frame::Kind::Opened(opened)) }
}

/// The `Closed` frame that ends a channel whose process ended.
pub(crate) fn closed_frame(channel: u64, exit: &Exit) -> proto::AgentFrame {
    proto::AgentFrame { kind: Some(agent_frame::Kind::Closed(convert::closed_of(channel, exit))) }
}

/// The `Closed` frame of a channel that ended before anything ran (refused, failed to start).
pub(crate) fn closed_at_once_frame(channel: u64, ending: Ending) -> proto::AgentFrame {
    closed_frame(channel, &Exit { ending, timed_out: false, duration: Duration::ZERO })
}

/// The `Closed` frame that ends one attachment of a shell session that lives on.
pub(crate) fn detached_frame(channel: u64, ran: Duration) -> proto::AgentFrame {
    let duration_ms = u64::try_from(ran.as_millis()).unwrap_or(u64::MAX);
    let closed = proto::Closed { channel, end: Some(closed::End::Detached(true)), timed_out: false, duration_ms };
    proto::AgentFrame { kind: Some(agent_frame::Kind::Closed(closed)) }
}

/// An input-credit grant to the relay.
pub(crate) fn credit_frame(channel: u64, bytes: u32) -> proto::AgentFrame {
    proto::AgentFrame { kind: Some(agent_frame::Kind::Credit(proto::Credit { channel, bytes })) }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::core::grpc_frame::encode_into;

    #[test]
    fn an_output_head_and_its_data_are_the_output_frames_encoding() {
        let cases = [
            (0, OutputStream::Stdout, 0, 2048),
            (7, OutputStream::Stderr, 1 << 40, 32 * 1024),
            (u64::MAX, OutputStream::Stdout, 99, 300_000),
        ];
        for (channel, stream, offset, len) in cases {
            let data = Bytes::from(vec![b'z'; len]);
            let mut head = [0u8; OUTPUT_HEAD_MAX];
            let n = output_head(channel, stream, offset, len, &mut head);
            let mut whole = BytesMut::new();
            encode_into(&output_frame(channel, stream, offset, data.clone()), &mut whole);
            assert_eq!([&head[..n], &data[..]].concat(), whole.to_vec(), "channel {channel}, {len} bytes");
        }
    }
}
