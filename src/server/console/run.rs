//! A one-shot command from a machine's console page: `sh -c COMMAND` on the machine, its
//! stdout and stderr streamed into the page over a WebSocket, then its exit code.
//!
//! The socket (same origin, member or higher) takes one text message,
//! `{"command","timeout_secs","csrf"}`; the server answers with binary frames (first byte 1 =
//! stdout, 2 = stderr, then the bytes) and JSON text frames: `{"type":"started"}`,
//! `{"type":"truncated","limit"}` once the output passes `OUTPUT_CAP` (the rest is read and
//! dropped, the command keeps running), and `{"type":"exit","code","timed_out","error",
//! "duration_ms","bytes","truncated"}` last. Close codes are the terminal's (4003 offline,
//! 4010 the attach password, 4008 refused). Closing the socket ends the command.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::ConsoleState;
use super::auth::Member;
use super::terminal::{Sink, audit, authorise, close_with, member_access, same_origin, send_json};
use crate::core::session::{Ending, Exit, OpenSpec, OutputStream, SessionEvent, SessionKind};
use crate::server::http::protocol::close;
use crate::store::Machine;

/// Output shown in the page, at most: 256 KiB. The rest is read (so the command is not
/// stalled on a full pipe) and dropped, and the page says so.
pub(crate) const OUTPUT_CAP: usize = 256 * 1024;
/// Timeout when the page names none: 60 s.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest timeout a page may ask for: 10 minutes.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest command text: 8 KiB.
const MAX_COMMAND_BYTES: usize = 8 * 1024;
/// Command text kept in the audit log, at most.
const AUDIT_COMMAND_CHARS: usize = 200;
/// How long the page has to send its request after the socket opens.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// Beyond the command's timeout, how long to wait for the machine's word on it.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// Frame tags of output bytes.
const STDOUT_TAG: u8 = 1;
const STDERR_TAG: u8 = 2;

/// The page's one message.
#[derive(Deserialize)]
struct RunRequest {
    command: String,
    #[serde(default)]
    timeout_secs: u64,
    #[serde(default)]
    csrf: String,
}

/// Server -> page control messages.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RunMessage {
    Started,
    Truncated { limit: usize },
    Exit { code: i32, timed_out: bool, error: String, duration_ms: u64, bytes: u64, truncated: bool },
}

/// `GET /console/m/{machine}/run/ws`.
pub(crate) async fn run_socket(
    State(state): State<ConsoleState>,
    session: Session,
    Path(machine): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !same_origin(&state, &headers) {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket refused\n").into_response();
    }
    let (member, machine) = match authorise(&state, session, &machine, "running a command").await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    ws.max_message_size(MAX_COMMAND_BYTES * 2).on_upgrade(move |socket| serve(state, member, machine, socket))
}

/// The page's request, checked: the command and its timeout.
async fn request(member: &Member, stream: &mut SplitStream<WebSocket>) -> Result<(String, Duration), &'static str> {
    let first = tokio::time::timeout(REQUEST_WAIT, stream.next()).await.map_err(|_| "No command was sent")?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err("No command was sent");
    };
    let req: RunRequest = serde_json::from_str(&text).map_err(|_| "Malformed request: reload the page")?;
    if !member.csrf_matches(&req.csrf) {
        return Err("Form expired: reload the page and try again");
    }
    let command = req.command.trim().to_string();
    if command.is_empty() {
        return Err("Type a command to run");
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err("The command is longer than 8 KiB");
    }
    let timeout = match req.timeout_secs {
        0 => DEFAULT_TIMEOUT,
        n => Duration::from_secs(n).min(MAX_TIMEOUT),
    };
    Ok((command, timeout))
}

async fn serve(state: ConsoleState, member: Member, machine: Machine, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (command, timeout) = match request(&member, &mut stream).await {
        Ok(r) => r,
        Err(reason) => return close_with(&mut sink, close::POLICY, reason).await,
    };
    let shown: String = command.chars().take(AUDIT_COMMAND_CHARS).collect();
    let detail = format!("command={shown:?} timeout={}s", timeout.as_secs());
    audit(&state, &member, &machine, "console.run", detail).await;
    let spec = OpenSpec {
        kind: SessionKind::Exec,
        argv: vec!["sh".into(), "-c".into(), command],
        env: vec![],
        cols: 0,
        rows: 0,
        timeout: Some(timeout),
        access: member_access(&member, machine.id).await,
    };
    let mut port = match state.router.open(machine.id, spec).await {
        Ok(port) => port,
        Err(_) => return close_with(&mut sink, close::OFFLINE, "The machine is offline").await,
    };
    match port.events.recv().await {
        Some(SessionEvent::Opened { .. }) => {}
        Some(e) if e.denial().is_some() => {
            return close_with(&mut sink, close::PASSWORD, "This machine asks for its attach password").await;
        }
        Some(SessionEvent::Exited(exit)) => {
            let summary = Summary { bytes: 0, truncated: false };
            return finish(&state, &member, &machine, &mut sink, exit, summary).await;
        }
        Some(_) | None => return close_with(&mut sink, close::OFFLINE, "The machine went offline").await,
    }
    if !send_json(&mut sink, &RunMessage::Started).await {
        return;
    }
    // The page closing its socket ends the command (dropping the port closes the session).
    let mut gone = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Close(_) = m {
                break;
            }
        }
    });
    let deadline = tokio::time::sleep(timeout + EXIT_GRACE);
    tokio::pin!(deadline);
    let mut summary = Summary { bytes: 0, truncated: false };
    loop {
        tokio::select! {
            event = port.events.recv() => match event {
                Some(SessionEvent::Output { stream, data, .. }) => {
                    let n = data.len();
                    if !forward(&mut sink, &mut summary, stream, data).await {
                        break;
                    }
                    let _ = port.control.consumed(n).await;
                }
                Some(SessionEvent::Opened { .. }) => {}
                Some(SessionEvent::Exited(exit)) => {
                    gone.abort();
                    return finish(&state, &member, &machine, &mut sink, exit, summary).await;
                }
                Some(SessionEvent::Lost) | None => {
                    close_with(&mut sink, close::OFFLINE, "The machine went offline").await;
                    break;
                }
            },
            _ = &mut gone => break,
            () = &mut deadline => {
                close_with(&mut sink, close::OFFLINE, "The machine did not report the command's end").await;
                break;
            }
        }
    }
    gone.abort();
}

/// Output so far.
struct Summary {
    bytes: u64,
    truncated: bool,
}

/// Sends one chunk (or the part of it under the cap, then the truncation note); false when
/// the page is gone.
async fn forward(sink: &mut Sink, summary: &mut Summary, stream: OutputStream, data: Bytes) -> bool {
    let shown_before = summary.bytes.min(OUTPUT_CAP as u64) as usize;
    summary.bytes += data.len() as u64;
    if summary.truncated {
        return true;
    }
    let room = OUTPUT_CAP - shown_before;
    let part = &data[..data.len().min(room)];
    if !part.is_empty() {
        let mut frame = BytesMut::with_capacity(part.len() + 1);
        frame.put_u8(if stream == OutputStream::Stderr { STDERR_TAG } else { STDOUT_TAG });
        frame.put_slice(part);
        if sink.send(Message::Binary(frame.freeze())).await.is_err() {
            return false;
        }
    }
    if data.len() > room {
        summary.truncated = true;
        return send_json(sink, &RunMessage::Truncated { limit: OUTPUT_CAP }).await;
    }
    true
}

/// The exit message, its audit row, and the close.
async fn finish(state: &ConsoleState, member: &Member, machine: &Machine, sink: &mut Sink, exit: Exit, s: Summary) {
    let error = match &exit.ending {
        Ending::Error(text) => text.clone(),
        Ending::Denied(d) => d.to_string(),
        _ => String::new(),
    };
    let code = exit.shell_code();
    let detail = format!("code={code} timed_out={} bytes={} truncated={}", exit.timed_out, s.bytes, s.truncated);
    audit(state, member, machine, "console.run.exit", detail).await;
    let msg = RunMessage::Exit {
        code,
        timed_out: exit.timed_out,
        error,
        duration_ms: u64::try_from(exit.duration.as_millis()).unwrap_or(u64::MAX),
        bytes: s.bytes,
        truncated: s.truncated,
    };
    if send_json(sink, &msg).await {
        close_with(sink, close::NORMAL, "The command ended").await;
    }
}
