//! The verification page of the device flow: sign in with email and password (argon2id,
//! rate-limited per account and per IP), then approve or deny the code the CLI shows.
//! Forms carry a per-session CSRF token; the session cookie is HttpOnly and SameSite=Strict.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::client_ip::ClientIp;
use super::{HttpState, render, server_error};
use crate::core::ids::UserId;
use crate::core::secret::{self, Secret};
use crate::server::oauth::device::{self, DecideError};

/// The session key present once signed in (the session store evicts other sessions first).
pub(crate) const USER_KEY: &str = "user_id";
const CSRF_KEY: &str = "csrf";

#[derive(Template)]
#[template(path = "device_login.html")]
struct LoginPage {
    css: String,
    csrf: String,
    user_code: String,
    error: String,
}

#[derive(Template)]
#[template(path = "device_code.html")]
struct CodePage {
    css: String,
    email: String,
}

#[derive(Template)]
#[template(path = "device_confirm.html")]
struct ConfirmPage {
    css: String,
    csrf: String,
    user_code: String,
    client_name: String,
    client_host: String,
    email: String,
}

#[derive(Template)]
#[template(path = "device_done.html")]
struct DonePage {
    css: String,
    title: String,
    message: String,
}

fn done(state: &HttpState, status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &DonePage { css: state.css(), title: title.into(), message: message.into() })
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

async fn csrf_ok(session: &Session, sent: &str) -> bool {
    match session.get::<String>(CSRF_KEY).await {
        Ok(Some(expected)) => bool::from(expected.as_bytes().ct_eq(sent.as_bytes())),
        _ => false,
    }
}

async fn signed_in(session: &Session) -> Option<UserId> {
    session.get::<String>(USER_KEY).await.ok().flatten().and_then(|id| id.parse().ok())
}

/// `?user_code=` on the verification URI.
#[derive(Debug, Deserialize)]
pub(crate) struct CodeQuery {
    #[serde(default)]
    user_code: String,
}

/// `GET /device`.
pub(crate) async fn show_device(
    State(state): State<HttpState>,
    session: Session,
    Query(q): Query<CodeQuery>,
) -> Response {
    let csrf = match csrf_token(&session).await {
        Ok(t) => t,
        Err(e) => return server_error(e),
    };
    let user_code = device::normalize_user_code(&q.user_code);
    let Some(user_id) = signed_in(&session).await else {
        return render(StatusCode::OK, &LoginPage { css: state.css(), csrf, user_code, error: String::new() });
    };
    let email = match state.store.user(user_id).await {
        Ok(Some(u)) => u.email,
        Ok(None) => {
            let _ = session.flush().await;
            return Redirect::to("/device").into_response();
        }
        Err(e) => return server_error(e),
    };
    if user_code.is_empty() {
        return render(StatusCode::OK, &CodePage { css: state.css(), email });
    }
    match device::pending(&state.store, &user_code).await {
        Ok(grant) => render(
            StatusCode::OK,
            &ConfirmPage {
                css: state.css(),
                csrf,
                user_code,
                client_name: grant.client_name,
                client_host: grant.client_host,
                email,
            },
        ),
        Err(DecideError::Store(e)) => server_error(e),
        Err(e) => done(&state, StatusCode::BAD_REQUEST, "Cannot continue", &e.to_string()),
    }
}

/// `POST /device/login` form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    user_code: String,
    csrf: String,
}

/// `POST /device/login`.
pub(crate) async fn sign_in(
    State(state): State<HttpState>,
    session: Session,
    ClientIp(peer): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf).await {
        return done(&state, StatusCode::FORBIDDEN, "Form expired", "Reload the page and try again.");
    }
    // Per account *and* source: a stranger's wrong guesses never lock the owner out.
    let (account, ip) = (format!("acct:{}|ip:{peer}", form.email.to_lowercase()), format!("ip:{peer}"));
    let retry =
        |wait: std::time::Duration| format!("Too many failed attempts. Try again in {} s.", wait.as_secs().max(1));
    let limited = state.login_limits.begin(&account).and_then(|()| state.ip_limits.begin(&ip));
    let error = match limited {
        Err(wait) => retry(wait),
        Ok(()) => match verify_login(&state, &form.email, &form.password).await {
            Ok(Some(user)) => {
                state.login_limits.succeeded(&account);
                state.ip_limits.release(&ip);
                return finish_sign_in(&session, user, &form.user_code).await;
            }
            Ok(None) => "Wrong email or password.".to_string(),
            Err(e) => return server_error(e),
        },
    };
    tracing::info!(ip = %peer, "device sign-in refused");
    let csrf = csrf_token(&session).await.unwrap_or_default();
    let page = LoginPage { css: state.css(), csrf, user_code: form.user_code, error };
    render(StatusCode::UNAUTHORIZED, &page)
}

async fn finish_sign_in(session: &Session, user: UserId, user_code: &str) -> Response {
    // A new session id at sign-in defeats session fixation.
    if let Err(e) = session.cycle_id().await {
        return server_error(e);
    }
    if let Err(e) = session.insert(USER_KEY, user.to_string()).await {
        return server_error(e);
    }
    let code = device::normalize_user_code(user_code);
    Redirect::to(&format!("/device?user_code={code}")).into_response()
}

/// The user whose password this is, if it is right; the password is then used up. An unknown email costs one argon2 check
/// like a known one (against a dummy hash), so timing does not tell which accounts exist.
async fn verify_login(state: &HttpState, email: &str, password: &str) -> anyhow::Result<Option<UserId>> {
    let user = state.store.user_by_email(email).await?;
    let hash = match &user {
        Some(u) => state.store.password_hash(u.id).await?,
        None => None,
    };
    let ok = crate::sys::argon::verify(Secret::new(password.to_string()), hash.clone()).await;
    let (Some(user), Some(hash), true) = (user, hash, ok) else {
        return Ok(None);
    };
    // The password from `cmdop server user add` is one-time: it signs in once (docs/reference.md).
    Ok(state.store.clear_password_hash(user.id, &hash).await?.then_some(user.id))
}

/// `POST /device/decide` form.
#[derive(Deserialize)]
pub(crate) struct DecideForm {
    user_code: String,
    decision: String,
    csrf: String,
}

/// `POST /device/decide`: approve or deny.
pub(crate) async fn decide(State(state): State<HttpState>, session: Session, Form(form): Form<DecideForm>) -> Response {
    if !csrf_ok(&session, &form.csrf).await {
        return done(&state, StatusCode::FORBIDDEN, "Form expired", "Reload the page and try again.");
    }
    let Some(user) = signed_in(&session).await else {
        return Redirect::to(&format!("/device?user_code={}", form.user_code)).into_response();
    };
    let approve = form.decision == "approve";
    match device::decide(&state.store, &form.user_code, user, approve).await {
        Ok(grant) if approve => {
            tracing::info!(%user, client = %grant.client_name, host = %grant.client_host, "device sign-in approved");
            done(&state, StatusCode::OK, "Device signed in", "You can close this window and go back to your terminal.")
        }
        Ok(_) => done(&state, StatusCode::OK, "Sign-in denied", "The device was not signed in."),
        Err(DecideError::Store(e)) => server_error(e),
        Err(e) => done(&state, StatusCode::BAD_REQUEST, "Cannot continue", &e.to_string()),
    }
}
