//! `Api.Attach`: an interactive shell session, new or persistent, streamed both ways.
//!
//! Output is forwarded chunk by chunk and credit is granted back to the agent only after the
//! chunk was handed to the client's HTTP/2 stream, so a client that stops reading pauses the
//! shell (or, in a shared session, falls behind in the agent's ring) instead of growing memory
//! here: at most the output window plus `CLIENT_QUEUE_CHUNKS` chunks per attachment.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::exec::CLIENT_QUEUE_CHUNKS;
use crate::core::session::{Access, AttachSpec, Attachment, Ending, Exit, SessionEvent, SessionName, ShellTarget};
use crate::proto::{self, attach_input, attach_output};
use crate::server::relay::router::{SessionControl, SessionPort};
use crate::sys::task::AbortOnDrop;

/// Frames toward the client.
pub(crate) type Tx = mpsc::Sender<Result<proto::AttachOutput, Status>>;

/// A bounded queue toward the client and its receiving end.
pub(crate) fn client_queue() -> (Tx, mpsc::Receiver<Result<proto::AttachOutput, Status>>) {
    mpsc::channel(CLIENT_QUEUE_CHUNKS)
}

/// Builds the attach spec from the client's start message.
pub(crate) fn spec_of(start: &proto::AttachStart, access: Access) -> Result<AttachSpec, Status> {
    let target = if !start.session_id.is_empty() {
        let id = start.session_id.parse().map_err(|_| Status::invalid_argument("session_id is not a session id"))?;
        ShellTarget::Id(id)
    } else if !start.session_name.is_empty() {
        ShellTarget::Named(
            SessionName::parse(&start.session_name).map_err(|e| Status::invalid_argument(e.to_string()))?,
        )
    } else {
        ShellTarget::New { persistent: false }
    };
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    Ok(AttachSpec { target, cols: clamp(start.cols), rows: clamp(start.rows), resume_from: start.resume_from, access })
}

/// Waits for the session's first event: the attachment and the shell's pid, or why there is
/// none (`hostname` names the machine in a refusal).
pub(crate) async fn first_event(port: &mut SessionPort, hostname: &str) -> Result<(Attachment, u32), Status> {
    match port.events.recv().await {
        Some(SessionEvent::Opened { attachment: Some(a), pid }) => Ok((a, pid)),
        Some(SessionEvent::Opened { attachment: None, .. }) => {
            Err(Status::internal("the agent opened a plain session instead of a shell attachment"))
        }
        Some(SessionEvent::Exited(Exit { ending: Ending::Error(e), .. })) => Err(Status::failed_precondition(e)),
        Some(SessionEvent::Exited(Exit { ending: Ending::Denied(d), .. })) => Err(super::denial_status(d, hostname)),
        Some(SessionEvent::Exited(_)) => Err(Status::failed_precondition("the shell ended at once")),
        Some(SessionEvent::Output { .. }) => Err(Status::internal("the agent sent output before opening")),
        Some(SessionEvent::Lost) | None => Err(Status::unavailable("the machine went away while attaching")),
    }
}

/// The `attached` message for the client.
pub(crate) fn attached_message(a: &Attachment, pid: u32) -> proto::AttachOutput {
    let attached = proto::Attached {
        session_id: a.id.to_string(),
        session_name: a.name.clone().unwrap_or_default(),
        persistent: a.persistent,
        created: a.created,
        replay_from: a.replay_from,
        dropped: a.dropped,
        pid,
    };
    proto::AttachOutput { kind: Some(attach_output::Kind::Attached(attached)) }
}

/// How the client's side ended.
enum ClientLeft {
    /// Asked to detach (or ended its input cleanly).
    Detach,
    /// Its stream broke (network, killed process): keep the session for a reattach.
    Broken,
}

/// How the exchange ended.
enum End {
    Exited(Exit),
    Lost,
    ClientGone,
    Left(ClientLeft),
}

/// Pumps session events to the client and the client's input to the session, until the shell
/// ends, the machine goes away or the client leaves.
pub(crate) async fn pump(mut port: SessionPort, attachment: Attachment, input: Streaming<proto::AttachInput>, tx: Tx) {
    let control = port.control.clone();
    let mut reader = AbortOnDrop::spawn(read_client(input, control.clone()));
    let mut expected = attachment.replay_from;
    let end = loop {
        tokio::select! {
            event = port.events.recv() => match event {
                Some(SessionEvent::Output { offset, data, .. }) => {
                    if !forward(&tx, &control, &mut expected, offset, data).await {
                        break End::ClientGone;
                    }
                }
                Some(SessionEvent::Opened { .. }) => {}
                Some(SessionEvent::Exited(exit)) => break End::Exited(exit),
                Some(SessionEvent::Lost) | None => break End::Lost,
            },
            left = &mut reader => break End::Left(left.unwrap_or(ClientLeft::Broken)),
        }
    };
    drop(reader); // no more input once the exchange has ended
    finish(end, attachment.persistent, control.as_ref(), &tx).await;
}

/// Sends one output chunk (after a `gap` when the agent skipped bytes for this reader) and
/// grants its credit back once the client's stream took it. False when the client is gone.
async fn forward(
    tx: &Tx,
    control: &Arc<dyn SessionControl>,
    expected: &mut u64,
    offset: u64,
    data: bytes::Bytes,
) -> bool {
    let out = |kind| Ok(proto::AttachOutput { kind: Some(kind) });
    if offset > *expected {
        let gap = proto::Gap { from: *expected, dropped: offset - *expected };
        if tx.send(out(attach_output::Kind::Gap(gap))).await.is_err() {
            return false;
        }
    }
    let n = data.len();
    *expected = offset + n as u64;
    let chunk = proto::OutputChunk { offset, data };
    tx.send(out(attach_output::Kind::Output(chunk))).await.is_ok() && control.consumed(n).await.is_ok()
}

/// Tells the client how it ended and leaves the session accordingly: a deliberate detach
/// ends a one-shot shell (like closing an ssh connection) but keeps a persistent one; a
/// broken client only detaches, so it can reattach by id.
async fn finish(end: End, persistent: bool, control: &dyn SessionControl, tx: &Tx) {
    let out = |kind| Ok(proto::AttachOutput { kind: Some(kind) });
    match end {
        End::Exited(exit) => {
            let _ = tx.send(exit_message(exit)).await;
        }
        End::Lost => {
            let msg =
                "the machine went away: its agent's connection dropped (the session may be reattached when it is back)";
            let _ = tx.send(Err(Status::unavailable(msg))).await;
        }
        End::ClientGone | End::Left(ClientLeft::Broken) => control.detach(),
        End::Left(ClientLeft::Detach) => {
            if persistent {
                control.detach();
            } else {
                control.close();
            }
            let _ = tx.send(out(attach_output::Kind::Detached(proto::Detach {}))).await;
        }
    }
}

fn exit_message(exit: Exit) -> Result<proto::AttachOutput, Status> {
    let done = match exit.ending {
        Ending::Code(code) => proto::AttachExit { exit_code: code, signal: 0 },
        Ending::Signal(s) => proto::AttachExit { exit_code: 128 + s, signal: s },
        Ending::Error(e) => return Err(Status::failed_precondition(e)),
        Ending::Denied(d) => return Err(Status::permission_denied(d.to_string())),
    };
    Ok(proto::AttachOutput { kind: Some(attach_output::Kind::Exit(done)) })
}

/// Client -> session. Runs beside the output pump so waiting for input credit never stalls
/// output. Returns how the client left; when the session stops taking input it waits for the
/// output side to report the end.
async fn read_client(mut input: Streaming<proto::AttachInput>, control: Arc<dyn SessionControl>) -> ClientLeft {
    loop {
        let kind = match input.message().await {
            Ok(Some(proto::AttachInput { kind: Some(kind) })) => kind,
            Ok(Some(_)) => continue,
            Ok(None) => return ClientLeft::Detach,
            Err(_) => return ClientLeft::Broken,
        };
        let sent = match kind {
            attach_input::Kind::Data(data) => control.input(data).await,
            attach_input::Kind::Resize(size) => {
                let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                control.resize(clamp(size.cols), clamp(size.rows)).await
            }
            attach_input::Kind::Signal(signo) => control.signal(signo).await,
            attach_input::Kind::Detach(_) => return ClientLeft::Detach,
            attach_input::Kind::Start(_) => Ok(()),
        };
        if sent.is_err() {
            return std::future::pending().await;
        }
    }
}
