//! A machine's shell sessions on its console page: the list (name or id, started, attached
//! clients), attach (the terminal page with `?attach=`), and kill. All through the router's
//! session interface.
//!
//! The agent checks the attach password only when a session opens; listing and killing are
//! not sessions, so the console guards them itself: it asks the machine to open nothing (an
//! attach to a session id that cannot exist) with the member's attach token, and a refusal
//! means the member must unlock first (the terminal's unlock form and endpoint).

use std::time::Duration;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use super::ConsoleState;
use super::auth::{CsrfForm, Member};
use super::pages::message;
use super::terminal::{audit, member_access};
use crate::core::clock::rfc3339;
use crate::core::ids::SessionId;
use crate::core::session::{AttachSpec, SessionEvent, SessionSummary, ShellTarget};
use crate::server::http::server_error;
use crate::server::relay::router::RouteError;
use crate::store::{Machine, Role};

/// How long the machine page waits for the machine to answer about its sessions: 2 s.
const ASK_WAIT: Duration = Duration::from_secs(2);

/// How long a kill waits for the session to leave the machine's list: 3 s.
const KILL_WAIT: Duration = Duration::from_secs(3);
/// How often it looks meanwhile.
const KILL_POLL: Duration = Duration::from_millis(100);

/// A shell session as a row of the machine page.
pub(crate) struct SessionView {
    pub(crate) id: String,
    /// Its name, or empty.
    pub(crate) name: String,
    pub(crate) persistent: bool,
    pub(crate) started: String,
    pub(crate) attached: u32,
}

impl SessionView {
    fn new(s: &SessionSummary) -> Self {
        let rfc = |ms: u64| rfc3339(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
        Self {
            id: s.id.to_string(),
            name: s.name.clone().unwrap_or_default(),
            persistent: s.persistent,
            started: rfc(s.created_unix_ms),
            attached: s.attached,
        }
    }
}

/// What the machine page shows about sessions.
pub(crate) enum SessionsView {
    /// The machine is offline (or did not answer): nothing to list.
    Unavailable(String),
    /// The machine has an attach password this member has not unlocked.
    Locked,
    /// The running sessions, oldest first.
    Listed(Vec<SessionView>),
}

/// Whether `member` must unlock `machine` before touching its sessions. Asks the agent to
/// attach to a random session id: its password gate answers before it looks the id up.
pub(crate) async fn locked(member: &Member, machine: &Machine, state: &ConsoleState) -> Result<bool, RouteError> {
    let access = member_access(member, machine.id).await;
    let spec = AttachSpec { target: ShellTarget::Id(SessionId::random()), cols: 0, rows: 0, resume_from: None, access };
    let mut port = state.router.attach(machine.id, spec).await?;
    match tokio::time::timeout(ASK_WAIT, port.events.recv()).await {
        Ok(Some(e)) if e.denial().is_some() => Ok(true),
        Ok(Some(SessionEvent::Lost) | None) => Err(RouteError::Gone),
        Ok(Some(_)) => Ok(false),
        Err(_) => Err(RouteError::Unanswered),
    }
}

/// The machine page's session list for `member`.
pub(crate) async fn sessions_view(state: &ConsoleState, member: &Member, machine: &Machine) -> SessionsView {
    if !machine.online || !state.router.is_connected(machine.id).await {
        return SessionsView::Unavailable("The machine is offline.".into());
    }
    match locked(member, machine, state).await {
        Ok(true) => return SessionsView::Locked,
        Ok(false) => {}
        Err(e) => return SessionsView::Unavailable(format!("The machine did not answer: {e}.")),
    }
    match tokio::time::timeout(ASK_WAIT, state.router.list_sessions(machine.id)).await {
        Ok(Ok(mut list)) => {
            list.sort_by_key(|s| s.created_unix_ms);
            SessionsView::Listed(list.iter().map(SessionView::new).collect())
        }
        Ok(Err(e)) => SessionsView::Unavailable(format!("The machine did not answer: {e}.")),
        Err(_) => SessionsView::Unavailable("The machine did not answer in time.".into()),
    }
}

/// `POST /console/m/{machine}/sessions/{session}/kill` (members and up, CSRF): ends the
/// shell session, then back to the machine page.
pub(crate) async fn kill(
    State(state): State<ConsoleState>,
    session: Session,
    Path((id, target)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if let Err(resp) =
        member.check_csrf(&state, &form.csrf).and(member.require(&state, Role::Member, "killing a shell session"))
    {
        return resp;
    }
    let machine = match super::links::fleet_machine(&state, &member, &id).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if target.parse::<SessionId>().is_err() {
        return message(&state, StatusCode::BAD_REQUEST, "Not a session id", "Pick the session from the list.");
    }
    match locked(&member, &machine, &state).await {
        Ok(false) => {}
        Ok(true) => {
            let text = "This machine asks for its attach password: unlock it on the machine page first.";
            return message(&state, StatusCode::FORBIDDEN, "Password required", text);
        }
        Err(e) => return message(&state, StatusCode::SERVICE_UNAVAILABLE, "Machine unavailable", &e.to_string()),
    }
    match state.router.kill_session(machine.id, &target).await {
        Ok(killed) => {
            audit(&state, &member, &machine, "console.session.kill", format!("session={}", killed.id)).await;
            gone(&state, &machine, killed.id).await;
            Redirect::to(&format!("/console/m/{}", machine.id)).into_response()
        }
        Err(RouteError::NoSuchSession(text)) => message(&state, StatusCode::NOT_FOUND, "No such session", &text),
        Err(e @ (RouteError::Offline | RouteError::Gone | RouteError::Unanswered)) => {
            message(&state, StatusCode::SERVICE_UNAVAILABLE, "Machine unavailable", &e.to_string())
        }
        Err(e) => server_error(e),
    }
}

/// Waits (at most `KILL_WAIT`) until the machine no longer lists `id`: a killed shell takes a
/// moment to exit (SIGHUP, then SIGKILL after 2 s), and the page shown next should not list it.
async fn gone(state: &ConsoleState, machine: &Machine, id: SessionId) {
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    for _ in 0..KILL_WAIT.as_millis() / KILL_POLL.as_millis() {
        match tokio::time::timeout_at(deadline, state.router.list_sessions(machine.id)).await {
            Ok(Ok(list)) if list.iter().any(|s| s.id == id) => {}
            _ => return,
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + KILL_POLL)).await;
    }
}

impl SessionsView {
    /// Whether the page should offer the attach password form.
    pub(crate) fn is_locked(&self) -> bool {
        matches!(self, SessionsView::Locked)
    }
}
