//! A machine's terminal in the console: the link page's xterm.js terminal and script over a
//! WebSocket authorised by the console session (role member or higher), with the attach
//! password form where the machine has one. The attach token is kept in the server-side
//! session, never in the page.
//!
//! Every terminal is a shell session attachment (through `SessionRouter::attach`): a new
//! one-shot shell, or a running session by id or name (`?attach=`). When the browser's socket
//! drops, the attachment detaches instead of ending the shell, and the page reconnects with
//! `?session=<id>&offset=<bytes received>`: the agent replays from that offset out of the
//! session's ring, so nothing is lost or doubled (a one-shot shell waits 30 s for it).

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::ConsoleState;
use super::auth::{Member, csrf_header};
use super::pages::render;
use crate::core::ids::{MachineId, SessionId};
use crate::core::secret::Secret;
use crate::core::session::{Access, AttachSpec, Denial, Ending, SessionEvent, SessionName, ShellTarget};
use crate::server::http::protocol::{ClientMessage, ServerMessage, close};
use crate::server::http::server_error;
use crate::server::relay::router::{RouteError, SessionControl, SessionPort};
use crate::store::{Machine, Role};

/// Output bytes the browser must have taken before their credit is granted back (a quarter
/// window, as on link sockets).
const CREDIT_BATCH: usize = crate::core::session::OUTPUT_WINDOW_BYTES as usize / 4;
/// Read buffer of one console socket: keystrokes and pastes (see the link socket's note).
const SOCKET_READ_BUFFER: usize = 4 * 1024;
/// Longest attach password accepted.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Template)]
#[template(path = "console_terminal.html")]
struct TerminalPage {
    machine_name: String,
    machine_id: String,
    csrf: String,
    xterm_js: String,
    xterm_css: String,
    fit_js: String,
    weblinks_js: String,
    share_js: String,
    keybar_js: String,
    keybar_css: String,
    share_css: String,
    console_css: String,
    /// The session this page attaches to (id or name); empty for a new shell.
    attach: String,
}

/// `?attach=<session id or name>` on the terminal page: join that shell session (a name that
/// is not running starts a persistent session of that name).
#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    #[serde(default)]
    attach: String,
}

/// The shell session `text` names: an id, else a session name.
pub(crate) fn target_of(text: &str) -> Result<ShellTarget, crate::core::session::attach::NameError> {
    match text.parse::<SessionId>() {
        Ok(id) => Ok(ShellTarget::Id(id)),
        Err(_) => SessionName::parse(text).map(ShellTarget::Named),
    }
}

/// The member and the machine of a request that uses the machine (a terminal, a command),
/// if the member may: role member or higher, the machine in the member's fleet.
pub(crate) async fn authorise(
    state: &ConsoleState,
    session: Session,
    machine: &str,
    action: &str,
) -> Result<(Member, Machine), Response> {
    let member = Member::load(state, session).await?;
    member.require(state, Role::Member, action)?;
    let machine = super::links::fleet_machine(state, &member, machine).await?;
    Ok((member, machine))
}

/// `GET /console/m/{machine}/terminal`.
pub(crate) async fn show_terminal(
    State(state): State<ConsoleState>,
    session: Session,
    Path(machine): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let (member, machine) = match authorise(&state, session, &machine, "a terminal").await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let attach = query.attach.trim().to_string();
    if !attach.is_empty()
        && let Err(e) = target_of(&attach)
    {
        return super::pages::message(&state, StatusCode::BAD_REQUEST, "Not a session name", &format!("{e}."));
    }
    let a = |p: &str| state.asset(p);
    let page = TerminalPage {
        machine_name: machine.display_name.clone().filter(|d| !d.is_empty()).unwrap_or(machine.hostname.clone()),
        machine_id: machine.id.to_string(),
        csrf: member.csrf,
        xterm_js: a("vendor/xterm.js"),
        xterm_css: a("vendor/xterm.css"),
        fit_js: a("vendor/addon-fit.js"),
        weblinks_js: a("vendor/addon-web-links.js"),
        share_js: a("share.js"),
        keybar_js: a("keybar.js"),
        keybar_css: a("keybar.css"),
        share_css: a("share.css"),
        console_css: a("console.css"),
        attach,
    };
    render(StatusCode::OK, &page)
}

pub(crate) fn attach_key(machine: MachineId) -> String {
    format!("attach:{machine}")
}

pub(crate) fn same_origin(state: &ConsoleState, headers: &HeaderMap) -> bool {
    headers.get(header::ORIGIN).is_none_or(|o| o.as_bytes() == state.public_origin.as_bytes())
}

/// `?session=<id>&offset=<n>` (a reconnect: resume from byte `n`) or `?attach=<id or name>`
/// on the terminal socket; neither: a new one-shot shell.
#[derive(Deserialize, Default)]
pub(crate) struct SocketQuery {
    session: Option<String>,
    offset: Option<u64>,
    #[serde(default)]
    attach: String,
}

/// `GET /console/m/{machine}/terminal/ws`.
pub(crate) async fn bridge_socket(
    State(state): State<ConsoleState>,
    session: Session,
    Path(machine): Path<String>,
    crate::server::http::client_ip::ClientIp(peer): crate::server::http::client_ip::ClientIp,
    Query(query): Query<SocketQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !same_origin(&state, &headers) {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket refused\n").into_response();
    }
    let (member, machine) = match authorise(&state, session, &machine, "a terminal").await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    // Held for as long as the terminal is open.
    let slot = match state.slots.acquire(&machine.id.to_string(), None, Some(peer)) {
        Ok(slot) => slot,
        Err(limit) => {
            crate::server::metrics::METRICS.refused(crate::server::http::refusal_metric(limit));
            let reason = limit.short();
            return ws.on_upgrade(move |socket| async move {
                let (mut sink, _) = socket.split();
                close_with(&mut sink, close::POLICY, &reason).await;
            });
        }
    };
    let access = member_access(&member, machine.id).await;
    ws.read_buffer_size(SOCKET_READ_BUFFER).on_upgrade(move |socket| async move {
        let _slot = slot;
        run(state, member, machine, socket, query, access).await;
    })
}

/// The member's access to `machine`, with the attach token an unlock left in the session.
pub(crate) async fn member_access(member: &Member, machine: MachineId) -> Access {
    let token = member.session.get::<String>(&attach_key(machine)).await.ok().flatten().map(Secret::new);
    Access::user(member.user.id, token)
}

/// The sending half of a console socket.
pub(crate) type Sink = SplitSink<WebSocket, Message>;

/// Sends a close frame, waiting at most 2 s for a browser that stopped reading.
pub(crate) async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.send(frame)).await;
}

/// Sends a JSON text frame; false when the browser is gone.
pub(crate) async fn send_json(sink: &mut Sink, msg: &impl Serialize) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    sink.send(Message::Text(text.into())).await.is_ok()
}

/// What the socket asks for, as an attach target and the offset to replay from.
fn wanted(query: &SocketQuery) -> Result<(ShellTarget, Option<u64>, &'static str), (u16, &'static str)> {
    if let (Some(id), Some(offset)) = (&query.session, query.offset) {
        let id = id.parse::<SessionId>().map_err(|_| (close::POLICY, "Not a session id"))?;
        return Ok((ShellTarget::Id(id), Some(offset), ""));
    }
    match query.attach.trim() {
        "" => Ok((ShellTarget::New { persistent: false }, None, "console.terminal.open")),
        text => {
            let target = target_of(text).map_err(|_| (close::POLICY, "Not a session name"))?;
            Ok((target, None, "console.session.attach"))
        }
    }
}

async fn run(
    state: ConsoleState,
    member: Member,
    machine: Machine,
    socket: WebSocket,
    query: SocketQuery,
    access: Access,
) {
    let (mut sink, stream) = socket.split();
    let (target, resume_from, action) = match wanted(&query) {
        Ok(w) => w,
        Err((code, reason)) => return close_with(&mut sink, code, reason).await,
    };
    let (mut port, attachment) = match attach_shell(&state, &machine, target, resume_from, access).await {
        Ok(found) => found,
        Err((code, reason)) => return close_with(&mut sink, code, &reason).await,
    };
    if !action.is_empty() {
        let detail = format!("session={}", attachment.id);
        audit(&state, &member, &machine, action, detail).await;
    }
    if attachment.dropped > 0 {
        let text = format!("{} bytes of output were lost while reconnecting", attachment.dropped);
        send_json(&mut sink, &ServerMessage::Notice { text }).await;
    }
    let ready = ServerMessage::Ready { session: attachment.id.to_string(), offset: attachment.replay_from };
    if !send_json(&mut sink, &ready).await {
        port.control.detach();
        return;
    }
    if let Some((code, reason)) = pump(&mut sink, stream, &mut port).await {
        close_with(&mut sink, code, reason).await;
    }
}

/// Attaches to a shell session and waits for its first event: the attachment, or why not.
async fn attach_shell(
    state: &ConsoleState,
    machine: &Machine,
    target: ShellTarget,
    resume_from: Option<u64>,
    access: Access,
) -> Result<(SessionPort, crate::core::session::Attachment), (u16, String)> {
    let spec = AttachSpec { target, cols: 80, rows: 24, resume_from, access };
    let offline = |_| (close::OFFLINE, "The machine is offline".to_string());
    let mut port = state.router.attach(machine.id, spec).await.map_err(offline)?;
    match port.events.recv().await {
        Some(SessionEvent::Opened { attachment: Some(a), .. }) => Ok((port, a)),
        Some(e) if e.denial().is_some() => Err((close::PASSWORD, "This machine asks for its attach password".into())),
        Some(SessionEvent::Lost) | None => Err((close::OFFLINE, "The machine went offline".into())),
        Some(SessionEvent::Exited(exit)) => match exit.ending {
            Ending::Error(text) => Err((close::POLICY, short_reason(&text))),
            _ => Err((close::NORMAL, "The session ended".into())),
        },
        Some(_) => Err((close::POLICY, "The machine refused to start a shell".into())),
    }
}

/// A close reason fits in 123 bytes: cut the agent's message at a character boundary.
fn short_reason(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Shell -> browser until the shell ends or the browser goes; returns the close frame to
/// send (none when the browser went: the socket is closing or dead). A browser that goes
/// leaves the session running (detached) for its reconnect.
async fn pump(sink: &mut Sink, stream: SplitStream<WebSocket>, port: &mut SessionPort) -> Option<(u16, &'static str)> {
    let mut reader = tokio::spawn(read_browser(stream, port.control.clone()));
    let mut unacked = 0usize;
    let outcome = loop {
        tokio::select! {
            event = port.events.recv() => match event {
                Some(SessionEvent::Output { data, .. }) => {
                    let n = data.len();
                    if sink.send(Message::Binary(data)).await.is_err() {
                        port.control.detach();
                        break None;
                    }
                    unacked += n;
                    if unacked >= CREDIT_BATCH {
                        let _ = port.control.consumed(std::mem::take(&mut unacked)).await;
                    }
                }
                Some(SessionEvent::Opened { .. }) => {}
                Some(SessionEvent::Exited(exit)) => {
                    send_json(sink, &ServerMessage::Exit { code: exit.shell_code() }).await;
                    break Some((close::NORMAL, "The session ended"));
                }
                Some(SessionEvent::Lost) | None => break Some((close::OFFLINE, "The machine went offline")),
            },
            _ = &mut reader => {
                port.control.detach();
                break None;
            }
        }
    };
    reader.abort();
    outcome
}

/// Browser -> shell: keystrokes and resizes.
async fn read_browser(mut stream: SplitStream<WebSocket>, control: Arc<dyn SessionControl>) {
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Binary(data) => {
                // Most keystrokes go at once, without `input`'s boxed future.
                if let Some(data) = control.try_input(data) {
                    let Ok(()) = control.input(data).await else {
                        return;
                    };
                }
            }
            Message::Text(text) => {
                if let Ok(ClientMessage::Resize { cols, rows }) = serde_json::from_str(&text)
                    && cols > 0
                    && rows > 0
                {
                    let _ = control.resize(cols, rows).await;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Records a console action on a machine (surface `web`).
pub(crate) async fn audit(state: &ConsoleState, member: &Member, machine: &Machine, action: &str, detail: String) {
    let event = crate::store::AuditEvent {
        actor: &member.user.email,
        action,
        surface: "web",
        fleet_id: Some(member.fleet.id.to_string()),
        machine_id: Some(machine.id.to_string()),
        link_id: None,
        detail,
    };
    if let Err(e) = state.store.audit(event).await {
        tracing::warn!(error = %e, "could not record an audit event");
    }
}

/// The page's unlock request.
#[derive(Deserialize)]
pub(crate) struct UnlockForm {
    password: String,
}

/// What the page reads when an unlock fails (the link page's shape).
#[derive(Serialize)]
struct Failure {
    error: &'static str,
    message: String,
}

fn fail(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    (status, Json(Failure { error, message: message.into() })).into_response()
}

/// `POST /console/m/{machine}/terminal/unlock` with `{"password"}` and the CSRF header: the
/// machine's agent checks the password; its token goes into the session for later opens.
pub(crate) async fn unlock(
    State(state): State<ConsoleState>,
    session: Session,
    Path(machine): Path<String>,
    headers: HeaderMap,
    Json(form): Json<UnlockForm>,
) -> Response {
    let (member, machine) = match authorise(&state, session, &machine, "a terminal").await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    if !same_origin(&state, &headers) || member.check_csrf(&state, csrf_header(&headers)).is_err() {
        return fail(StatusCode::FORBIDDEN, "bad_request", "Reload the page and try again");
    }
    if form.password.is_empty() || form.password.len() > MAX_PASSWORD_BYTES {
        return fail(StatusCode::BAD_REQUEST, "bad_request", "Enter the machine's attach password");
    }
    let principal = Access::user(member.user.id, None).principal;
    // The console user is the source too, as for the CLI: one member cannot lock out another.
    let result = state.router.unlock(machine.id, &principal, &principal, Secret::new(form.password)).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(RouteError::Denied(d)) => d.code(),
        Err(_) => "error",
    };
    audit(&state, &member, &machine, "console.unlock", format!("result={outcome}")).await;
    match result {
        Ok(grant) => {
            if let Err(e) = member.session.insert(&attach_key(machine.id), grant.token.expose()).await {
                return server_error(e);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(RouteError::Denied(Denial::Wrong)) => fail(StatusCode::FORBIDDEN, "wrong", "Wrong password"),
        Err(RouteError::Denied(d @ Denial::Throttled(_))) => {
            fail(StatusCode::TOO_MANY_REQUESTS, d.code(), d.to_string())
        }
        Err(RouteError::Denied(d)) => fail(StatusCode::FORBIDDEN, d.code(), d.to_string()),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, "offline", format!("The machine did not answer: {e}")),
    }
}
