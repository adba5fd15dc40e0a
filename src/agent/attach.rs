//! One attachment to a shell session, served on one channel of one relay stream: output from
//! the session's ring as the consumer's credit allows, input and control the other way.
//!
//! The attachment's task reads output into the ring when the PTY is readable and output is
//! wanted. Input does not go through it: the stream's dispatcher writes a keystroke straight
//! into the PTY ([`Input`]), so a key typed costs no wake-up of this task; only input the PTY
//! cannot take yet waits for the task, which owns the writable wait and grants the input credit
//! back once the bytes are in the PTY.
//!
//! The grant waits for output to go with it: a keystroke's echo usually follows within
//! microseconds, and a `Credit` frame queued right behind the `Output` frame leaves in the
//! same write to the relay instead of one write (and one wake-up of the relay) of its own.
//! Input that echoes nothing is granted back once a quarter of the input window is owed. No
//! timer is needed for that to stay live: the relay always holds at least three quarters of
//! the window, more than the largest input frame (a chunk, half the window), so it never
//! waits for a grant that is being held back, and no timer wakes the attachment a second time
//! for every key typed at human speed.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use tokio::sync::{Semaphore, mpsc, watch};

use super::channel::{
    Cmd, Out, closed_frame, credit_frame, detached_frame, output_frame, output_splits, send_output_split,
};
use super::shell::{Shell, Take};
use crate::core::session::fanout::ReaderId;
use crate::core::session::{CHUNK_BYTES, Ending, Exit, INPUT_WINDOW_BYTES, OutputStream};
use crate::core::sync::lock;
use crate::sys::task::WhenWoken;

/// Input credit held back before it goes without output: a quarter window.
const GRANT_ALONE_AT: u32 = INPUT_WINDOW_BYTES / 4;
// Liveness (module doc): what is held back leaves the relay more than one input frame.
const _: () = assert!(INPUT_WINDOW_BYTES - GRANT_ALONE_AT >= CHUNK_BYTES as u32);

/// How an attachment ended.
enum Leave {
    /// The shell ended and this reader had all of its output.
    Ended(Ending),
    /// The consumer left for good (`Close{detach: false}`): a one-shot shell ends with it.
    Closed,
    /// The consumer detached, or the stream dropped: the session lives on.
    Detached,
    /// The attach password changed under it: refused from now on.
    Revoked,
}

/// Pumps until the shell ends or the consumer leaves; sends the channel's one `Closed`.
pub(crate) async fn serve(
    shell: Arc<Shell>,
    reader: ReaderId,
    channel: u64,
    out: Out,
    credit: Arc<Semaphore>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    input: Arc<Input>,
) {
    // The rarer wake-ups stay registered between turns of the loop and are polled only when
    // their own waker fired (`WhenWoken`): made anew each turn, each would join and leave a
    // waiter list (a lock each way) two or three times per keystroke.
    let mut readable = WhenWoken::new(shell.readable());
    let mut credited = WhenWoken::new(credit.acquire());
    let mut changed = WhenWoken::new(next_change(shell.subscribe()));
    take_credit(&shell, reader, &credit, 0);
    let leave = loop {
        let piece = shell.take(reader);
        if let Take::Data(offset, data) = piece {
            // `send_output`'s branches inline: a keystroke's echo then polls no future of its own.
            let sent = match output_splits(data.len()) {
                false => out.send(output_frame(channel, OutputStream::Stdout, offset, data)).await,
                true => send_output_split(&out, channel, OutputStream::Stdout, offset, data).await,
            };
            if sent.is_err() {
                break Leave::Detached;
            }
            if let Some(bytes) = input.due(true)
                && out.send(credit_frame(channel, bytes)).await.is_err()
            {
                break Leave::Detached;
            }
            continue;
        }
        if let Some(bytes) = input.due(false)
            && out.send(credit_frame(channel, bytes)).await.is_err()
        {
            break Leave::Detached;
        }
        if let Take::Ended(end) = piece {
            break Leave::Ended(end);
        }
        // In the order of how often each fires: a keystroke, then its echo.
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                // Input reaches this queue only before the dispatcher writes directly (a relay
                // sends none before `Opened`, which follows that switch).
                Some(Cmd::Input(data)) => input.queue(data),
                Some(Cmd::InputWaits) => {}
                Some(Cmd::Resize(cols, rows)) => shell.resize(cols, rows),
                Some(Cmd::Signal(signo)) => shell.signal(signo),
                Some(Cmd::Close) => break Leave::Closed,
                Some(Cmd::Revoke) => break Leave::Revoked,
                Some(Cmd::Detach) | None => break Leave::Detached,
            },
            () = &mut readable, if shell.wants_read() => {
                shell.fill(Some(reader));
                readable = WhenWoken::new(shell.readable());
            }
            permit = &mut credited => match permit {
                Ok(permit) => {
                    permit.forget();
                    take_credit(&shell, reader, &credit, 1);
                    credited = WhenWoken::new(credit.acquire());
                }
                Err(_) => break Leave::Detached, // the stream dropped
            },
            receiver = &mut changed => changed = WhenWoken::new(next_change(receiver)),
            () = shell.writable(), if input.waiting() => {}
        }
    };
    input.close();
    shell.leave(reader, matches!(leave, Leave::Closed | Leave::Revoked));
    if input.waiting() {
        // Input the consumer sent before leaving still reaches the shell.
        let shell = shell.clone();
        tokio::spawn(async move {
            while input.waiting() {
                shell.writable().await;
                input.flush();
            }
        });
    }
    let frame = match leave {
        Leave::Ended(ending) => closed_frame(channel, &Exit { ending, timed_out: false, duration: shell.age() }),
        Leave::Closed | Leave::Detached => detached_frame(channel, shell.age()),
        Leave::Revoked => {
            let ending = Ending::Denied(crate::core::session::Denial::Required);
            closed_frame(channel, &Exit { ending, timed_out: false, duration: shell.age() })
        }
    };
    let _ = out.send(frame).await;
}

/// Waits for the shell's next change (output another reader's task read, a reader joining
/// or leaving, the end); gives the receiver back for the next wait.
async fn next_change(mut changed: watch::Receiver<()>) -> watch::Receiver<()> {
    // An error (the shell's sender gone) cannot happen while this task holds the shell.
    let _ = changed.changed().await;
    changed
}

/// Moves the credit the relay granted (permits on the channel's semaphore, where the
/// dispatcher puts them) into the reader's account; `already` permits were taken by the caller.
fn take_credit(shell: &Shell, reader: ReaderId, credit: &Semaphore, already: usize) {
    let more = credit.available_permits();
    let more = match u32::try_from(more).ok().and_then(|n| credit.try_acquire_many(n).ok()) {
        Some(permits) => {
            permits.forget();
            more
        }
        None => 0,
    };
    shell.grant(reader, (already + more) as u64);
}

/// An attachment's input, shared by the stream's dispatcher and the attachment's task. The
/// dispatcher writes each `Input` frame into the PTY at once ([`Input::write`]); bytes the PTY
/// cannot take wait here, in order, until the task sees the PTY writable. The credit for
/// written bytes is owed here until the task grants it (with output, or alone at a quarter
/// window). Once closed (the attachment is leaving, or its channel was told to close or was
/// revoked), further input is dropped, as it was when it queued behind the channel's end.
pub(crate) struct Input {
    shell: Arc<Shell>,
    /// Locked for a write or a check, never across an await.
    state: Mutex<InputState>,
}

#[derive(Default)]
struct InputState {
    pending: Pending,
    owed: Owed,
    closed: bool,
}

impl Input {
    pub(crate) fn new(shell: Arc<Shell>) -> Self {
        Self { shell, state: Mutex::default() }
    }

    /// Writes `data` into the PTY (after any input still waiting); whether the attachment's
    /// task must look: bytes wait for room, or a grant is due with no output to carry it.
    pub(crate) fn write(&self, data: Bytes) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.pending.0.push_back(data);
        state.flush(&self.shell);
        state.pending.waiting() || state.owed.bytes >= GRANT_ALONE_AT
    }

    /// No more input: the channel is ending.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// Queues `data` behind what waits, for the task to write.
    fn queue(&self, data: Bytes) {
        let mut state = lock(&self.state);
        if !state.closed {
            state.pending.0.push_back(data);
        }
    }

    /// Writes what waits and the PTY takes now.
    fn flush(&self) {
        lock(&self.state).flush(&self.shell);
    }

    fn waiting(&self) -> bool {
        lock(&self.state).pending.waiting()
    }

    /// Writes what waits, then takes the grant to send now, if any (see [`Owed::due`]).
    fn due(&self, with_output: bool) -> Option<u32> {
        let mut state = lock(&self.state);
        state.flush(&self.shell);
        state.owed.due(with_output)
    }
}

impl InputState {
    fn flush(&mut self, shell: &Shell) {
        let done = self.pending.write_to(shell);
        self.owed.add(done);
    }
}

/// Input received and not yet written because the PTY's input buffer was full (the program is
/// not reading). Bounded by the channel's input window: its credit is granted back only once
/// the bytes are written.
#[derive(Default)]
struct Pending(VecDeque<Bytes>);

impl Pending {
    fn waiting(&self) -> bool {
        !self.0.is_empty()
    }

    /// Writes what the PTY takes now; returns the bytes done with (the credit to grant back).
    /// Input for a PTY that is closed is dropped, as a terminal would.
    fn write_to(&mut self, shell: &Shell) -> u32 {
        let mut done = 0usize;
        while let Some(front) = self.0.front_mut() {
            match shell.write(front) {
                Ok(n) if n == front.len() => {
                    done += n;
                    self.0.pop_front();
                }
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    front.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    done += front.len();
                    self.0.pop_front();
                }
            }
        }
        u32::try_from(done).unwrap_or(u32::MAX)
    }
}

/// Input credit owed to the relay and not sent yet (see the module doc).
#[derive(Default)]
struct Owed {
    bytes: u32,
}

impl Owed {
    fn add(&mut self, bytes: u32) {
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// The grant to send now, if any: output just went (`with_output`) or a quarter window
    /// is owed. A plain check, so that the loop's three checks per keystroke build no future;
    /// the caller awaits only the send.
    fn due(&mut self, with_output: bool) -> Option<u32> {
        let now = self.bytes > 0 && (with_output || self.bytes >= GRANT_ALONE_AT);
        now.then(|| std::mem::take(&mut self.bytes))
    }
}
