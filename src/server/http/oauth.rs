//! The OAuth endpoints (RFC 8628 device grant, RFC 6749 refresh, RFC 7009 revoke):
//! form-encoded requests, JSON answers. A thin adapter over `crate::server::oauth`.

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::HttpState;
use super::client_ip::ClientIp;
use crate::core::secret;
use crate::core::wire::TokenPair;
use crate::server::metrics::{Limit, METRICS};
use crate::server::oauth::device::{self, PollError};
use crate::server::oauth::{self, RefreshError};

/// `POST /oauth/device` form.
#[derive(Debug, Deserialize)]
pub(crate) struct DeviceRequest {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_name: String,
    #[serde(default)]
    client_host: String,
}

/// `POST /oauth/token` form.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: String,
    #[serde(default)]
    device_code: String,
    #[serde(default)]
    refresh_token: String,
}

/// `POST /oauth/revoke` form.
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeRequest {
    token: String,
}

fn oauth_error(code: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code, "error_description": description}))).into_response()
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "oauth endpoint failed");
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "server_error"}))).into_response()
}

fn tokens(pair: TokenPair) -> Response {
    let mut resp = Json(pair).into_response();
    resp.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    resp
}

/// Starts a device grant. Anyone may call it, so it is limited per client address: 429 with
/// `Retry-After` and an OAuth error body beyond the limit.
pub(crate) async fn start_device(
    State(state): State<HttpState>,
    ClientIp(peer): ClientIp,
    Form(req): Form<DeviceRequest>,
) -> Response {
    if let Err(wait) = state.device_starts.hit(&peer.to_string()) {
        METRICS.refused(Limit::DeviceStart);
        tracing::info!(ip = %peer, "device grant refused: rate limit");
        let secs = wait.as_secs().max(1);
        let description = format!(
            "too many sign-in requests from your address (at most {} a minute); try again in {secs} s",
            state.limits.device_starts_per_minute
        );
        let body = Json(json!({"error": "slow_down", "error_description": description}));
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], body).into_response();
    }
    let name = if req.client_name.is_empty() { req.client_id.as_str() } else { req.client_name.as_str() };
    let name = if name.is_empty() { "unnamed client" } else { name };
    match device::start(&state.store, name, &req.client_host).await {
        Ok(start) => {
            let uri = format!("{}/device", state.public_url);
            Json(json!({
                "device_code": start.device_code.expose(),
                "user_code": start.user_code,
                "verification_uri": uri,
                "verification_uri_complete": format!("{uri}?user_code={}", start.user_code),
                "expires_in": start.expires_in,
                "interval": start.interval,
            }))
            .into_response()
        }
        Err(e) => server_error(e),
    }
}

/// Device-code polls and refresh-token rotation.
pub(crate) async fn issue_token(State(state): State<HttpState>, Form(req): Form<TokenRequest>) -> Response {
    match req.grant_type.as_str() {
        "urn:ietf:params:oauth:grant-type:device_code" => match device::poll(&state.store, &req.device_code).await {
            Ok(pair) => tokens(pair),
            Err(PollError::Store(e)) => server_error(e),
            Err(e) => oauth_error(&e.to_string(), poll_description(&e)),
        },
        "refresh_token" => match oauth::refresh(&state.store, &req.refresh_token).await {
            Ok(pair) => tokens(pair),
            Err(RefreshError::Store(e)) => server_error(e),
            Err(e @ RefreshError::Reused) => {
                tracing::warn!("a used refresh token was replayed; its sign-in's tokens are revoked");
                oauth_error("invalid_grant", &e.to_string())
            }
            Err(e) => oauth_error("invalid_grant", &e.to_string()),
        },
        _ => oauth_error("unsupported_grant_type", "use the device_code or refresh_token grant"),
    }
}

fn poll_description(e: &PollError) -> &'static str {
    match e {
        PollError::AuthorizationPending => "waiting for you to approve the sign-in in the browser",
        PollError::SlowDown => "polling too fast; wait longer between polls",
        PollError::AccessDenied => "the sign-in was denied",
        PollError::ExpiredToken => "the code expired; run `cmdop login` again",
        PollError::InvalidGrant | PollError::Store(_) => "unknown or already used device code",
    }
}

/// Revokes an access or refresh token. Always 200 (RFC 7009): the answer says nothing about
/// whether the token existed.
pub(crate) async fn revoke_token(State(state): State<HttpState>, Form(req): Form<RevokeRequest>) -> Response {
    if let Err(e) = state.store.revoke_token(&secret::hash_token(&req.token)).await {
        return server_error(e);
    }
    Json(json!({})).into_response()
}
