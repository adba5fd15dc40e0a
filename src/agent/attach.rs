//! One attachment to a shell session, served on one channel of one relay stream: output from
//! the session's ring as the consumer's credit allows, input and control the other way.
//!
//! The attachment's task does the PTY I/O itself: it reads output into the ring when the PTY
//! is readable and output is wanted, and writes input as it arrives, granting the input
//! credit back once the bytes are in the PTY.
//!
//! The grant waits a little for output to go with it: a keystroke's echo usually follows
//! within microseconds, and a `Credit` frame queued right behind the `Output` frame leaves in
//! the same write to the relay instead of one write (and one wake-up of the relay) of its
//! own. It never waits longer than `CREDIT_DELAY`, nor once a quarter of the input window is
//! owed, so the relay always holds most of its window.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::sync::{Semaphore, mpsc};

use super::channel::{Cmd, Out, closed_frame, credit_frame, detached_frame, output_frame};
use super::shell::{Shell, Take};
use crate::core::session::fanout::ReaderId;
use crate::core::session::{Ending, Exit, INPUT_WINDOW_BYTES, OutputStream};

/// Longest an input-credit grant waits for output to travel with: 2 ms.
const CREDIT_DELAY: Duration = Duration::from_millis(2);

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
) {
    let mut changed = shell.subscribe();
    let mut input = Pending::default();
    let mut owed = Owed::default();
    let mut timer = GrantTimer::new();
    take_credit(&shell, reader, &credit, 0);
    let leave = loop {
        changed.borrow_and_update();
        owed.add(input.write_to(&shell));
        let piece = shell.take(reader);
        if let Take::Data(offset, data) = piece {
            let frame = output_frame(channel, OutputStream::Stdout, offset, data);
            if out.send(frame).await.is_err() || !owed.grant(&out, channel, true).await {
                break Leave::Detached;
            }
            continue;
        }
        if !owed.grant(&out, channel, false).await {
            break Leave::Detached;
        }
        if let Take::Ended(end) = piece {
            break Leave::Ended(end);
        }
        timer.cover(owed.due);
        tokio::select! {
            _ = changed.changed() => {}
            _ = timer.fired(), if timer.armed() => {} // the grant may be due: sent above
            _ = shell.readable(), if shell.wants_read() => {
                shell.fill();
            }
            _ = shell.writable(), if input.waiting() => {}
            permit = credit.acquire() => match permit {
                Ok(permit) => {
                    permit.forget();
                    take_credit(&shell, reader, &credit, 1);
                }
                Err(_) => break Leave::Detached, // the stream dropped
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Input(data)) => input.0.push_back(data),
                Some(Cmd::Resize(cols, rows)) => shell.resize(cols, rows),
                Some(Cmd::Signal(signo)) => shell.signal(signo),
                Some(Cmd::Close) => break Leave::Closed,
                Some(Cmd::Revoke) => break Leave::Revoked,
                Some(Cmd::Detach) | None => break Leave::Detached,
            },
        }
    };
    shell.leave(reader, matches!(leave, Leave::Closed | Leave::Revoked));
    if input.waiting() {
        // Input the consumer sent before leaving still reaches the shell.
        let shell = shell.clone();
        tokio::spawn(async move {
            while input.waiting() {
                shell.writable().await;
                input.write_to(&shell);
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
    /// When it must go at the latest.
    due: Option<tokio::time::Instant>,
}

impl Owed {
    fn add(&mut self, bytes: u32) {
        if bytes > 0 {
            self.bytes = self.bytes.saturating_add(bytes);
            self.due.get_or_insert_with(|| tokio::time::Instant::now() + CREDIT_DELAY);
        }
    }

    /// Sends the grant if output just went (`with_output`), it is due, or a quarter window is
    /// owed; false if the stream is gone.
    async fn grant(&mut self, out: &Out, channel: u64, with_output: bool) -> bool {
        let due = self.due.is_some_and(|at| at <= tokio::time::Instant::now());
        if self.bytes == 0 || !(with_output || due || self.bytes >= INPUT_WINDOW_BYTES / 4) {
            return true;
        }
        let bytes = std::mem::take(&mut self.bytes);
        self.due = None;
        out.send(credit_frame(channel, bytes)).await.is_ok()
    }
}

/// The wake-up for a grant that found no output to travel with. Arming a tokio timer earlier
/// than all the others wakes the runtime's driver (an eventfd write and one more epoll round,
/// right between a keystroke's write to the PTY and its echo), and a grant is owed after every
/// keystroke. So the timer is not disarmed when the grant leaves with the echo: it stays armed
/// and fires once, harmlessly, and it is re-armed only when a grant is owed and no earlier
/// wake-up is pending. Fast typing arms it once per `CREDIT_DELAY` instead of once per key.
struct GrantTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: Option<tokio::time::Instant>,
}

impl GrantTimer {
    fn new() -> Self {
        Self { sleep: Box::pin(tokio::time::sleep(Duration::ZERO)), at: None }
    }

    /// Makes sure it fires by `due` (if a grant is owed).
    fn cover(&mut self, due: Option<tokio::time::Instant>) {
        if let Some(due) = due
            && self.at.is_none_or(|at| at > due)
        {
            self.sleep.as_mut().reset(due);
            self.at = Some(due);
        }
    }

    fn armed(&self) -> bool {
        self.at.is_some()
    }

    async fn fired(&mut self) {
        self.sleep.as_mut().await;
        self.at = None;
    }
}
