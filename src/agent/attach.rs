//! One attachment to a shell session, served on one channel of one relay stream: output from
//! the session's ring as the consumer's credit allows, input and control the other way.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::channel::{Cmd, Out, closed_frame, output_frame};
use super::shell::{Shell, Take};
use crate::proto::{self, closed};
use crate::session::fanout::ReaderId;

/// How an attachment ended.
enum Leave {
    /// The shell ended and this reader had all of its output.
    Ended(closed::End),
    /// The consumer left for good (`Close{detach: false}`): a one-shot shell ends with it.
    Closed,
    /// The consumer detached, or the stream dropped: the session lives on.
    Detached,
}

/// Pumps until the shell ends or the consumer leaves; sends the channel's one `Closed`.
pub async fn serve(
    shell: Arc<Shell>,
    reader: ReaderId,
    channel: u64,
    out: Out,
    credit: Arc<Semaphore>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut changed = shell.subscribe();
    take_credit(&shell, reader, &credit, 0);
    let leave = loop {
        changed.borrow_and_update();
        match shell.take(reader) {
            Take::Data(offset, data) => {
                if out.send(output_frame(channel, proto::OutputStream::Stdout, offset, data)).await.is_err() {
                    break Leave::Detached;
                }
                continue;
            }
            Take::Ended(end) => break Leave::Ended(end),
            Take::Nothing => {}
        }
        tokio::select! {
            _ = changed.changed() => {}
            permit = credit.acquire() => match permit {
                Ok(permit) => {
                    permit.forget();
                    take_credit(&shell, reader, &credit, 1);
                }
                Err(_) => break Leave::Detached, // the stream dropped
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Input(data)) => shell.write(data, Some((out.clone(), channel))),
                Some(Cmd::Resize(cols, rows)) => shell.resize(cols, rows),
                Some(Cmd::Signal(signo)) => shell.signal(signo),
                Some(Cmd::Close) => break Leave::Closed,
                Some(Cmd::Detach) | None => break Leave::Detached,
            },
        }
    };
    shell.leave(reader, matches!(leave, Leave::Closed));
    let end = match leave {
        Leave::Ended(end) => end,
        Leave::Closed | Leave::Detached => closed::End::Detached(true),
    };
    let _ = out.send(closed_frame(channel, end, false, shell.age())).await;
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
