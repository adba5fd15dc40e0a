//! A machine's terminal in the console: the link page's xterm.js terminal and script over a
//! WebSocket authorised by the console session (role member or higher), with the attach
//! password form where the machine has one. The attach token is kept in the server-side
//! session, never in the page.

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::ConsoleState;
use super::auth::{Member, csrf_header};
use super::pages::render;
use crate::core::ids::MachineId;
use crate::core::secret::Secret;
use crate::core::session::{Access, Denial, OpenSpec, SessionEvent, SessionKind};
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
}

/// The member and the machine of a terminal request, if the member may use it.
async fn authorise(state: &ConsoleState, session: Session, machine: &str) -> Result<(Member, Machine), Response> {
    let member = Member::load(state, session).await?;
    member.require(state, Role::Member, "a terminal")?;
    let machine = super::links::fleet_machine(state, &member, machine).await?;
    Ok((member, machine))
}

/// `GET /console/m/{machine}/terminal`.
pub(crate) async fn show_terminal(
    State(state): State<ConsoleState>,
    session: Session,
    Path(machine): Path<String>,
) -> Response {
    let (member, machine) = match authorise(&state, session, &machine).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
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
    };
    render(StatusCode::OK, &page)
}

fn attach_key(machine: MachineId) -> String {
    format!("attach:{machine}")
}

fn same_origin(state: &ConsoleState, headers: &HeaderMap) -> bool {
    headers.get(header::ORIGIN).is_none_or(|o| o.as_bytes() == state.public_origin.as_bytes())
}

/// `GET /console/m/{machine}/terminal/ws`: a new shell on the machine.
pub(crate) async fn bridge_socket(
    State(state): State<ConsoleState>,
    session: Session,
    Path(machine): Path<String>,
    crate::server::http::client_ip::ClientIp(peer): crate::server::http::client_ip::ClientIp,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !same_origin(&state, &headers) {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket refused\n").into_response();
    }
    let (member, machine) = match authorise(&state, session, &machine).await {
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
    let token = member.session.get::<String>(&attach_key(machine.id)).await.ok().flatten().map(Secret::new);
    let access = Access::user(member.user.id, token);
    ws.read_buffer_size(SOCKET_READ_BUFFER).on_upgrade(move |socket| async move {
        let _slot = slot;
        run(state, member, machine, socket, access).await;
    })
}

type Sink = SplitSink<WebSocket, Message>;

async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.send(frame)).await;
}

async fn send_json(sink: &mut Sink, msg: &ServerMessage) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    sink.send(Message::Text(text.into())).await.is_ok()
}

async fn run(state: ConsoleState, member: Member, machine: Machine, socket: WebSocket, access: Access) {
    let (mut sink, stream) = socket.split();
    let mut port = match open_shell(&state, &machine, access).await {
        Ok(port) => port,
        Err((code, reason)) => return close_with(&mut sink, code, reason).await,
    };
    audit(&state, &member, &machine, "console.terminal.open", String::new()).await;
    let ready = ServerMessage::Ready { session: uuid::Uuid::new_v4().to_string(), offset: 0 };
    if !send_json(&mut sink, &ready).await {
        return;
    }
    let (code, reason) = pump(&mut sink, stream, &mut port).await;
    close_with(&mut sink, code, reason).await;
}

/// Opens a shell and waits for its first event: opened, or why not.
async fn open_shell(
    state: &ConsoleState,
    machine: &Machine,
    access: Access,
) -> Result<SessionPort, (u16, &'static str)> {
    let spec =
        OpenSpec { kind: SessionKind::Shell, argv: vec![], env: vec![], cols: 80, rows: 24, timeout: None, access };
    let mut port = state.router.open(machine.id, spec).await.map_err(|_| (close::OFFLINE, "The machine is offline"))?;
    match port.events.recv().await {
        Some(SessionEvent::Opened { .. }) => Ok(port),
        Some(e) if e.denial().is_some() => Err((close::PASSWORD, "This machine asks for its attach password")),
        Some(SessionEvent::Lost) | None => Err((close::OFFLINE, "The machine went offline")),
        Some(_) => Err((close::POLICY, "The machine refused to start a shell")),
    }
}

/// Shell -> browser until the shell ends or the browser goes; returns the close frame.
async fn pump(sink: &mut Sink, stream: SplitStream<WebSocket>, port: &mut SessionPort) -> (u16, &'static str) {
    let mut reader = tokio::spawn(read_browser(stream, port.control.clone()));
    let mut unacked = 0usize;
    let outcome = loop {
        tokio::select! {
            event = port.events.recv() => match event {
                Some(SessionEvent::Output { data, .. }) => {
                    let n = data.len();
                    if sink.send(Message::Binary(data)).await.is_err() {
                        break (close::NORMAL, "");
                    }
                    unacked += n;
                    if unacked >= CREDIT_BATCH {
                        let _ = port.control.consumed(std::mem::take(&mut unacked)).await;
                    }
                }
                Some(SessionEvent::Opened { .. }) => {}
                Some(SessionEvent::Exited(exit)) => {
                    send_json(sink, &ServerMessage::Exit { code: exit.shell_code() }).await;
                    break (close::NORMAL, "The session ended");
                }
                Some(SessionEvent::Lost) | None => break (close::OFFLINE, "The machine went offline"),
            },
            _ = &mut reader => break (close::NORMAL, ""),
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
                let Ok(()) = control.input(data).await else {
                    return;
                };
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
    let detail = if detail.is_empty() { "surface=web".to_string() } else { format!("surface=web {detail}") };
    let event = crate::store::AuditEvent {
        actor: &member.user.email,
        action,
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
    let (member, machine) = match authorise(&state, session, &machine).await {
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
