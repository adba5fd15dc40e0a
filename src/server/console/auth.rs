//! Who is at the console: the session cookie, its CSRF token and the membership behind it,
//! re-read from the store on every request so a role change or a removal applies at once.
//!
//! Two ways in: a one-time ticket (`cmdop console` mints it with the CLI's bearer token; 60 s,
//! single use, stored hashed) and email + password (argon2id, with back-off per account and
//! per IP). Both start a new session id, defeating session fixation.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::ConsoleState;
use super::pages::{self, LoginPage};
use crate::core::ids::{FleetId, UserId};
use crate::core::secret;
use crate::core::wire::{ConsoleTicket, FLEET_HEADER};
use crate::server::http::client_ip::ClientIp;
use crate::server::http::server_error;
use crate::store::{Fleet, Membership, Role, TicketOwner, TokenKind, User};

pub(super) const USER_KEY: &str = "user_id";
const FLEET_KEY: &str = "fleet_id";
const CSRF_KEY: &str = "csrf";
const SINCE_KEY: &str = "signed_in_at";
/// Header carrying the CSRF token on script requests (forms send a `csrf` field).
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a one-time sign-in URL works: 60 s.
const TICKET_TTL_SECS: i64 = 60;
/// A session ends this long after sign-in however busy it is: 12 hours.
const ABSOLUTE_EXPIRY_SECS: i64 = 12 * 3600;

/// A signed-in fleet member, as of this request.
pub(crate) struct Member {
    pub(crate) user: User,
    pub(crate) fleet: Fleet,
    pub(crate) role: Role,
    pub(crate) fleets: Vec<Membership>,
    pub(crate) csrf: String,
    pub(crate) session: Session,
}

impl Member {
    /// Loads the session's member, or answers with the way to sign in.
    pub(crate) async fn load(state: &ConsoleState, session: Session) -> Result<Self, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let user_id: Option<UserId> = session.get::<String>(USER_KEY).await.ok().flatten().and_then(|u| u.parse().ok());
        let since = session.get::<i64>(SINCE_KEY).await.ok().flatten().unwrap_or(0);
        let Some(user_id) = user_id.filter(|_| crate::core::clock::now() - since < ABSOLUTE_EXPIRY_SECS) else {
            let _ = session.flush().await;
            return Err(to_login());
        };
        let user = match state.store.user(user_id).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                let _ = session.flush().await;
                return Err(to_login());
            }
            Err(e) => return Err(server_error(e)),
        };
        let fleets = state.store.memberships(user.id).await.map_err(server_error)?;
        let wanted: Option<FleetId> =
            session.get::<String>(FLEET_KEY).await.ok().flatten().and_then(|f| f.parse().ok());
        let chosen = wanted.and_then(|w| fleets.iter().find(|m| m.fleet.id == w)).or(fleets.first()).cloned();
        let Some(chosen) = chosen else {
            let _ = session.flush().await;
            return Err(pages::message(state, StatusCode::FORBIDDEN, "No fleet", "Your account belongs to no fleet."));
        };
        let csrf = csrf_token(&session).await.map_err(server_error)?;
        Ok(Self { user, fleet: chosen.fleet, role: chosen.role, fleets, csrf, session })
    }

    /// Refuses with 403 unless the role is at least `min`. (The refusal is the page itself,
    /// built at most once per request, so its size does not matter.)
    #[allow(clippy::result_large_err)]
    pub(crate) fn require(&self, state: &ConsoleState, min: Role, action: &str) -> Result<(), Response> {
        if self.role >= min {
            return Ok(());
        }
        let text = format!("Your role in fleet {} is {}; {action} needs {min} or higher.", self.fleet.name, self.role);
        Err(pages::message(state, StatusCode::FORBIDDEN, "Permission denied", &text))
    }

    /// Refuses with 403 unless `sent` is this session's CSRF token.
    #[allow(clippy::result_large_err)]
    pub(crate) fn check_csrf(&self, state: &ConsoleState, sent: &str) -> Result<(), Response> {
        if self.csrf_matches(sent) {
            return Ok(());
        }
        Err(pages::message(state, StatusCode::FORBIDDEN, "Form expired", "Reload the page and try again."))
    }

    /// Whether `sent` is this session's CSRF token (for requests that answer in their own
    /// shape, like a WebSocket's first message).
    pub(crate) fn csrf_matches(&self, sent: &str) -> bool {
        !sent.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(sent.as_bytes()))
    }

    /// Makes `fleet` the session's active fleet.
    pub(crate) async fn choose_fleet(&self, fleet: FleetId) -> Result<(), Response> {
        self.session.insert(FLEET_KEY, fleet.to_string()).await.map_err(server_error)
    }
}

/// The CSRF token sent in the `x-csrf-token` header, for script requests.
pub(crate) fn csrf_header(headers: &HeaderMap) -> &str {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The session's CSRF token, made on first use (256 random bits).
async fn csrf_token(session: &Session) -> Result<String, tower_sessions::session::Error> {
    if let Some(t) = session.get::<String>(CSRF_KEY).await? {
        return Ok(t);
    }
    let token = secret::new_token("").expose().clone();
    session.insert(CSRF_KEY, &token).await?;
    Ok(token)
}

/// Signs the session in as `user` under a new session id.
async fn start_session(session: &Session, user: UserId, fleet: Option<FleetId>) -> Result<(), Response> {
    session.cycle_id().await.map_err(server_error)?;
    session.clear().await;
    session.insert(USER_KEY, user.to_string()).await.map_err(server_error)?;
    session.insert(SINCE_KEY, crate::core::clock::now()).await.map_err(server_error)?;
    if let Some(f) = fleet {
        session.insert(FLEET_KEY, f.to_string()).await.map_err(server_error)?;
    }
    Ok(())
}

/// `GET /login`.
pub(crate) async fn show_login(State(state): State<ConsoleState>, session: Session) -> Response {
    match csrf_token(&session).await {
        Ok(csrf) => pages::render(StatusCode::OK, &LoginPage::new(&state, csrf, String::new())),
        Err(e) => server_error(e),
    }
}

/// `POST /console/login` form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/login`: email and password.
pub(crate) async fn sign_in(
    State(state): State<ConsoleState>,
    session: Session,
    ClientIp(peer): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = session.get::<String>(CSRF_KEY).await.ok().flatten().unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return pages::message(&state, StatusCode::FORBIDDEN, "Form expired", "Reload the page and try again.");
    }
    let (account, ip) = (format!("acct:{}", form.email.to_lowercase()), format!("ip:{peer}"));
    let error = match state.login_limits.check(&account).and(state.ip_limits.check(&ip)) {
        Err(wait) => format!("Too many failed attempts. Try again in {} s.", wait.as_secs().max(1)),
        Ok(()) => match verify_password(&state, &form.email, &form.password).await {
            Ok(Some(user)) => {
                state.login_limits.succeeded(&account);
                if let Err(resp) = start_session(&session, user, None).await {
                    return resp;
                }
                audit_sign_in(&state, user, "password", &peer.to_string()).await;
                return Redirect::to("/console").into_response();
            }
            Ok(None) => {
                state.login_limits.failed(&account);
                state.ip_limits.failed(&ip);
                "Wrong email or password.".to_string()
            }
            Err(e) => return server_error(e),
        },
    };
    tracing::info!(ip = %peer, "console sign-in refused");
    pages::render(StatusCode::UNAUTHORIZED, &LoginPage::new(&state, expected, error))
}

/// The user whose password this is, if it is right. argon2 runs off the async threads.
async fn verify_password(state: &ConsoleState, email: &str, password: &str) -> anyhow::Result<Option<UserId>> {
    let Some(user) = state.store.user_by_email(email).await? else {
        return Ok(None);
    };
    let Some(hash) = state.store.password_hash(user.id).await? else {
        return Ok(None);
    };
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || crate::core::passwords::verify(&password, &hash)).await?;
    Ok(ok.then_some(user.id))
}

/// `GET /console/signin/{ticket}`: the one-time URL `cmdop console` printed.
pub(crate) async fn redeem_ticket(
    State(state): State<ConsoleState>,
    session: Session,
    ClientIp(peer): ClientIp,
    Path(ticket): Path<String>,
) -> Response {
    let owner = match state.store.consume_console_ticket(&secret::hash_token(&ticket)).await {
        Ok(Some(owner)) => owner,
        Ok(None) => {
            let text = "This sign-in link was already used or is more than a minute old. \
                        Run `cmdop console` again for a new one.";
            return pages::message(&state, StatusCode::GONE, "Sign-in link expired", text);
        }
        Err(e) => return server_error(e),
    };
    if let Err(resp) = start_session(&session, owner.user, owner.fleet).await {
        return resp;
    }
    audit_sign_in(&state, owner.user, "one-time URL", &peer.to_string()).await;
    Redirect::to("/console").into_response()
}

async fn audit_sign_in(state: &ConsoleState, user: UserId, how: &str, ip: &str) {
    let fleets = state.store.memberships(user).await.unwrap_or_default();
    for m in fleets {
        let event = crate::store::AuditEvent {
            actor: &user.to_string(),
            action: "console.sign_in",
            surface: "web",
            fleet_id: Some(m.fleet.id.to_string()),
            detail: format!("via={how} ip={ip}"),
            ..Default::default()
        };
        if let Err(e) = state.store.audit(event).await {
            tracing::warn!(error = %e, "could not record an audit event");
        }
    }
}

/// `POST /console/logout` form.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// `POST /console/logout`.
pub(crate) async fn sign_out(
    State(state): State<ConsoleState>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if let Err(resp) = member.check_csrf(&state, &form.csrf) {
        return resp;
    }
    let _ = member.session.flush().await;
    Redirect::to("/login").into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `POST /console/ticket` with `Authorization: Bearer <access token>`: a one-time sign-in URL
/// for the token's user, in the fleet the CLI has active (`x-cmdop-fleet`).
pub(crate) async fn mint_ticket(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let user = match state.store.token_user(&secret::hash_token(bearer), TokenKind::Access).await {
        Ok(Some(user)) if !bearer.is_empty() => user,
        Ok(_) => return api_error(StatusCode::UNAUTHORIZED, "not signed in: run `cmdop login`"),
        Err(e) => return server_error(e),
    };
    let fleets = match state.store.memberships(user).await {
        Ok(f) => f,
        Err(e) => return server_error(e),
    };
    let wanted = headers.get(FLEET_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let fleet = match wanted {
        Some(name) => match fleets.iter().find(|m| m.fleet.name == name) {
            Some(m) => Some(m.fleet.id),
            None => {
                let text = format!("permission denied: you are not a member of fleet {name:?}; see `cmdop fleet list`");
                return api_error(StatusCode::FORBIDDEN, &text);
            }
        },
        None => None,
    };
    let ticket = secret::new_token("");
    let expires_at = crate::core::clock::now() + TICKET_TTL_SECS;
    let owner = TicketOwner { user, fleet };
    if let Err(e) = state.store.insert_console_ticket(&secret::hash_token(ticket.expose()), &owner, expires_at).await {
        return server_error(e);
    }
    let url = format!("{}/console/signin/{}", state.public_url, ticket.expose());
    Json(ConsoleTicket { url, expires_at: crate::core::clock::rfc3339(expires_at) }).into_response()
}
