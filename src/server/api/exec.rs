//! `Api.Exec`: one command on one machine, output streamed back under flow control.
//!
//! Output is forwarded chunk by chunk and credit is granted back to the agent only after the
//! chunk was handed to the client's HTTP/2 stream, so a client that stops reading stops the
//! remote process (its pipe fills) instead of growing memory here.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::core::session::{Access, Ending, Exit, OpenSpec, OutputStream, SessionEvent, SessionKind};
use crate::core::wire::{ASK_FROM_ENV, ASK_ID_ENV};
use crate::proto::{self, exec_input, exec_output};
use crate::server::relay::router::SessionPort;

/// Output chunks queued toward the client; beyond this the sender waits on the client.
pub(crate) const CLIENT_QUEUE_CHUNKS: usize = 4;

/// Longest ask text: 1 MiB (it is written to the handler's stdin through one frame).
const MAX_ASK_BYTES: usize = 1 << 20;

/// Who asks, for an ask's handler: their email and the ask's id.
pub(crate) struct Asker<'a> {
    /// The caller's email (`CMDOP_ASK_FROM`).
    pub(crate) from: &'a str,
    /// A fresh id for this ask (`CMDOP_ASK_ID`), also in the audit log.
    pub(crate) id: &'a str,
}

/// Builds the session spec from the client's start message: a command, or an ask when
/// `start.ask` is set.
pub(crate) fn spec_of(start: &proto::ExecStart, access: Access, asker: Asker<'_>) -> Result<OpenSpec, Status> {
    let mut env: Vec<(String, String)> = start.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (kind, argv) = match &start.ask {
        Some(_) if !start.argv.is_empty() => {
            return Err(Status::invalid_argument("an ask carries text, not a command: leave argv empty"));
        }
        Some(text) if text.trim().is_empty() => {
            return Err(Status::invalid_argument("nothing to ask: put the request text after `--`"));
        }
        Some(text) if text.len() > MAX_ASK_BYTES => {
            return Err(Status::invalid_argument("the ask text is over 1 MiB: send a shorter request"));
        }
        Some(text) => {
            env.push((ASK_FROM_ENV.into(), asker.from.into()));
            env.push((ASK_ID_ENV.into(), asker.id.into()));
            (SessionKind::Ask, vec![text.clone()])
        }
        None if start.argv.is_empty() || start.argv[0].is_empty() => {
            return Err(Status::invalid_argument("no command given: put it after `--`"));
        }
        None => (SessionKind::Exec, start.argv.clone()),
    };
    Ok(OpenSpec {
        kind,
        argv,
        env,
        cols: 0,
        rows: 0,
        timeout: (start.timeout_ms > 0).then(|| Duration::from_millis(start.timeout_ms)),
        access,
    })
}

type Tx = mpsc::Sender<Result<proto::ExecOutput, Status>>;

/// Longest command or ask text kept in an audit event: 200 characters.
const AUDIT_TEXT_CHARS: usize = 200;

/// The audit detail of a run: its exit code (`-` when unknown: the client or the machine
/// went away), duration and what ran, truncated.
pub(crate) fn audit_detail(start: &proto::ExecStart, exit: Option<&Exit>) -> String {
    let (code, ms) = match exit {
        Some(e) => (e.shell_code().to_string(), e.duration.as_millis()),
        None => ("-".to_string(), 0),
    };
    format!("exit={code} duration_ms={ms} {}", audit_text(start))
}

/// What a run runs, for the audit log: `argv=...` or `text=...`, truncated.
pub(crate) fn audit_text(start: &proto::ExecStart) -> String {
    let (label, full) = match &start.ask {
        Some(text) => ("text", text.clone()),
        None => ("argv", start.argv.join(" ")),
    };
    let mut text: String = full.chars().take(AUDIT_TEXT_CHARS).collect();
    if text.len() < full.len() {
        text.push('…');
    }
    format!("{label}={text}")
}

/// Pumps session events (starting with `first`, already received) to the client and the
/// client's signals to the session. Returns how the process ended, when that is known.
pub(crate) async fn pump(
    mut port: SessionPort,
    first: Option<SessionEvent>,
    mut input: Streaming<proto::ExecInput>,
    tx: Tx,
) -> Option<Exit> {
    let mut exit = None;
    if !forward(&port, first, &tx, &mut exit).await {
        return exit;
    }
    let mut input_open = true;
    loop {
        tokio::select! {
            event = port.events.recv() => {
                if !forward(&port, event, &tx, &mut exit).await {
                    return exit;
                }
            }
            msg = input.message(), if input_open => match msg {
                Ok(Some(proto::ExecInput { kind: Some(exec_input::Kind::Signal(signo)) })) => {
                    let _ = port.control.signal(signo).await;
                }
                Ok(Some(_)) => {}
                Ok(None) => input_open = false,
                Err(_) => return None, // the client went away: dropping the port ends the process
            },
        }
    }
}

/// Forwards one event; false when the exchange is over (`exit` then holds the end, if any).
async fn forward(port: &SessionPort, event: Option<SessionEvent>, tx: &Tx, exit: &mut Option<Exit>) -> bool {
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
        Some(SessionEvent::Exited(end)) => {
            let _ = tx.send(exit_message(end.clone())).await;
            *exit = Some(end);
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
        Ending::NoAskHandler => return Err(Status::failed_precondition("the machine has no ask handler")),
    };
    let done = proto::ExecExit {
        exit_code,
        signal,
        timed_out: exit.timed_out,
        duration_ms: u64::try_from(exit.duration.as_millis()).unwrap_or(u64::MAX),
    };
    Ok(proto::ExecOutput { kind: Some(exec_output::Kind::Exit(done)) })
}
