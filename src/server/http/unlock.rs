//! Attach passwords in the browser: `POST <link>/unlock` checks the password with the machine's
//! agent and answers with the attach token in a cookie the page's script cannot read
//! (HttpOnly), that no other site can make the browser send (SameSite=Strict), and that only
//! this link's page and socket receive (Path = the link's path). The socket hands it to the
//! agent with every open.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::HttpState;
use super::client_ip::ClientIp;
use crate::core::link_token::LinkError;
use crate::core::secret::Secret;
use crate::core::session::{Access, Denial};
use crate::server::relay::router::RouteError;

/// Name of the cookie that carries a link's attach token.
pub(crate) const COOKIE: &str = "cmdop_attach";
/// Longest password accepted: argon2 cost is per byte beyond this point for nothing.
const MAX_PASSWORD_BYTES: usize = 1024;

/// The page's request.
#[derive(Deserialize)]
pub(crate) struct UnlockForm {
    password: String,
}

/// What the page reads when an unlock fails.
#[derive(Serialize)]
struct Failure {
    /// `wrong`, `throttled`, `expired`, `revoked`, `invalid`, `offline`, `bad_request`.
    error: &'static str,
    /// A sentence for the person.
    message: String,
    /// Seconds to wait before the next try (throttled only).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

fn fail(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    (status, Json(Failure { error, message: message.into(), retry_after: None })).into_response()
}

/// The attach token the browser sent with this request, if any.
pub(crate) fn token_from(headers: &HeaderMap) -> Option<Secret<String>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| Secret::new(value.to_string()))
}

/// `POST /s/{token}/unlock` with `{"password": "…"}`.
pub(crate) async fn unlock(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    ClientIp(peer): ClientIp,
    uri: Uri,
    headers: HeaderMap,
    Json(form): Json<UnlockForm>,
) -> Response {
    // A cross-site form or script must not be able to try passwords in a visitor's name.
    let same_origin = headers.get(header::ORIGIN).is_some_and(|o| o.as_bytes() == state.public_origin.as_bytes());
    if !same_origin {
        return fail(StatusCode::FORBIDDEN, "bad_request", "Cross-origin request refused");
    }
    let claims = match state.links.verify(&token) {
        Ok(c) => c,
        Err(LinkError::Expired { .. }) => {
            return fail(StatusCode::GONE, "expired", "This link has expired");
        }
        Err(LinkError::Revoked) => {
            return fail(StatusCode::GONE, "revoked", "This link was revoked");
        }
        Err(_) => return fail(StatusCode::NOT_FOUND, "invalid", "This link is not valid"),
    };
    if form.password.is_empty() || form.password.len() > MAX_PASSWORD_BYTES {
        return fail(StatusCode::BAD_REQUEST, "bad_request", "Enter the machine's attach password");
    }
    let principal = Access::link(claims.link_id, None).principal;
    let source = format!("ip:{peer}");
    let result = state.router.unlock(claims.machine_id, &principal, &source, Secret::new(form.password)).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(RouteError::Denied(d)) => d.code(),
        Err(_) => "error",
    };
    let detail = format!("ip={peer} result={outcome}");
    state.links.unlock_tried(claims.link_id, detail).await;
    let grant = match result {
        Ok(grant) => grant,
        Err(RouteError::Denied(d)) => return denied(d),
        Err(RouteError::Offline | RouteError::Gone) => {
            return fail(StatusCode::SERVICE_UNAVAILABLE, "offline", "The machine is offline");
        }
        Err(e) => {
            return fail(StatusCode::BAD_GATEWAY, "offline", format!("The machine did not answer: {e}"));
        }
    };
    if grant.token.expose().is_empty() {
        // The machine has no password (any more): nothing to remember, just connect.
        return StatusCode::NO_CONTENT.into_response();
    }
    // The cookie lives no longer than the token or the link.
    let until = grant.expires_unix.min(claims.deadline.unix_timestamp());
    let max_age = (until - OffsetDateTime::now_utc().unix_timestamp()).max(0);
    let path = uri.path().strip_suffix("/unlock").unwrap_or(uri.path());
    let secure = if state.public_origin.starts_with("https://") { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}", grant.token.expose());
    let mut resp = StatusCode::NO_CONTENT.into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        Err(_) => fail(StatusCode::INTERNAL_SERVER_ERROR, "bad_request", "Internal error"),
    }
}

fn denied(d: Denial) -> Response {
    let (status, retry_after) = match d {
        Denial::Throttled(wait) => (StatusCode::TOO_MANY_REQUESTS, Some(wait.as_secs().max(1))),
        _ => (StatusCode::FORBIDDEN, None),
    };
    let message = match (d, retry_after) {
        (Denial::Wrong, _) => "Wrong password".to_string(),
        (_, Some(secs)) => format!("Too many wrong passwords: try again in {secs} s"),
        _ => "This machine asks for its attach password".to_string(),
    };
    let mut resp = (status, Json(Failure { error: d.code(), message, retry_after })).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; cmdop_attach=cmdopa_xyz; b=2"));
        assert_eq!(token_from(&h).map(|t| t.expose().clone()), Some("cmdopa_xyz".to_string()));
        let mut empty = HeaderMap::new();
        empty.insert(header::COOKIE, HeaderValue::from_static("cmdop_attach=; x=y"));
        assert!(token_from(&empty).is_none());
        assert!(token_from(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_throttled_answer_says_when_to_retry() {
        let resp = denied(Denial::Throttled(std::time::Duration::from_secs(8)));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "8");
        assert_eq!(denied(Denial::Wrong).status(), StatusCode::FORBIDDEN);
    }
}
