//! `Api.Exec`: one command on one machine, output streamed back under flow control.
//!
//! Output is forwarded chunk by chunk and credit is granted back to the agent only after the
//! chunk was handed to the client's HTTP/2 stream, so a client that stops reading stops the
//! remote process (its pipe fills) instead of growing memory here.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::core::session::{Access, Ending, Exit, OpenSpec, OutputStream, SessionEvent, SessionKind};
use crate::proto::{self, exec_input, exec_output};
use crate::server::relay::router::SessionPort;

/// Output chunks queued toward the client; beyond this the sender waits on the client.
pub(crate) const CLIENT_QUEUE_CHUNKS: usize = 4;

/// Builds the session spec from the client's start message.
pub(crate) fn spec_of(start: &proto::ExecStart, access: Access) -> Result<OpenSpec, Status> {
    if start.argv.is_empty() || start.argv[0].is_empty() {
        return Err(Status::invalid_argument("no command given: put it after `--`"));
    }
    Ok(OpenSpec {
        kind: SessionKind::Exec,
        argv: start.argv.clone(),
        env: start.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cols: 0,
        rows: 0,
        timeout: (start.timeout_ms > 0).then(|| Duration::from_millis(start.timeout_ms)),
        access,
    })
}

type Tx = mpsc::Sender<Result<proto::ExecOutput, Status>>;

/// Pumps session events (starting with `first`, already received) to the client and the
/// client's signals to the session.
pub(crate) async fn pump(
    mut port: SessionPort,
    first: Option<SessionEvent>,
    mut input: Streaming<proto::ExecInput>,
    tx: Tx,
) {
    if !forward(&port, first, &tx).await {
        return;
    }
    let mut input_open = true;
    loop {
        tokio::select! {
            event = port.events.recv() => {
                if !forward(&port, event, &tx).await {
                    return;
                }
            }
            msg = input.message(), if input_open => match msg {
                Ok(Some(proto::ExecInput { kind: Some(exec_input::Kind::Signal(signo)) })) => {
                    let _ = port.control.signal(signo).await;
                }
                Ok(Some(_)) => {}
                Ok(None) => input_open = false,
                Err(_) => return, // the client went away: dropping the port ends the process
            },
        }
    }
}

/// Forwards one event; false when the exchange is over.
async fn forward(port: &SessionPort, event: Option<SessionEvent>, tx: &Tx) -> bool {
    let out = |kind| Ok(proto::ExecOutput { kind: Some(kind) });
    match event {
        Some(SessionEvent::Opened { .. }) => true,
        Some(SessionEvent::Output { stream, data, .. }) => {
            let n = data.len();
            let kind = match stream {
                OutputStream::Stdout => exec_output::Kind::Stdout(data),
                OutputStream::Stderr => exec_output::Kind::Stderr(data),
            };
            tx.send(out(kind)).await.is_ok() && port.control.consumed(n).await.is_ok()
        }
        Some(SessionEvent::Exited(exit)) => {
            let _ = tx.send(exit_message(exit)).await;
            false
        }
        Some(SessionEvent::Lost) | None => {
            let msg = "the machine went away mid-command: its agent's connection dropped";
            let _ = tx.send(Err(Status::unavailable(msg))).await;
            false
        }
    }
}

fn exit_message(exit: Exit) -> Result<proto::ExecOutput, Status> {
    let (exit_code, signal) = match exit.ending {
        Ending::Code(c) => (c, 0),
        Ending::Signal(s) => (-1, s),
        Ending::Error(e) => return Err(Status::failed_precondition(e)),
        Ending::Denied(d) => return Err(Status::permission_denied(d.to_string())),
    };
    let done = proto::ExecExit {
        exit_code,
        signal,
        timed_out: exit.timed_out,
        duration_ms: u64::try_from(exit.duration.as_millis()).unwrap_or(u64::MAX),
    };
    Ok(proto::ExecOutput { kind: Some(exec_output::Kind::Exit(done)) })
}
