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
