//! `POST /oauth/device/approve-local`: approves a pending device grant as the first owner, for a
//! program on this machine that can read the server's data folder (`cmdop quickstart` signs its
//! own CLI in this way, through the same device flow as `cmdop login`).
//!
//! Two proofs, both required: the TCP peer is a loopback address and no proxy forwarded the
//! request, and the form carries the bootstrap secret the server writes to its data folder
//! (0600) at every start, compared in constant time. Whoever can read that folder already holds
//! the database and the link keys, so the shortcut grants nothing they do not have.

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::core::secret::{self, Secret};
use crate::server::oauth::device::{self, DecideError};
use crate::store::Store;

/// The route this file serves.
pub(crate) const PATH: &str = "/oauth/device/approve-local";
/// The bootstrap secret's file in the data folder.
const SECRET_FILE: &str = "bootstrap-secret.json";
/// Headers a reverse proxy adds: a forwarded request is never local, whatever its peer.
const FORWARDED_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

#[derive(Serialize, Deserialize)]
struct SecretFile {
    secret: String,
}

/// Writes a fresh bootstrap secret (256 random bits) to the data folder; a restart voids the
/// previous one.
pub(crate) fn create_secret(data_dir: &Path) -> anyhow::Result<Secret<String>> {
    let secret = secret::new_token("cmdopb_");
    let file = serde_json::to_vec(&SecretFile { secret: secret.expose().clone() })?;
    crate::sys::private_file::write(&data_dir.join(SECRET_FILE), &file)?;
    Ok(secret)
}

/// The bootstrap secret of the server running on `data_dir`.
pub(crate) fn read_secret(data_dir: &Path) -> anyhow::Result<Secret<String>> {
    let path = data_dir.join(SECRET_FILE);
    let hint = "remove it and restart the server";
    let file: Option<SecretFile> = crate::sys::private_file::read_json(&path, hint)?;
    let file = file.ok_or_else(|| anyhow::anyhow!("no {} yet: start the server first", path.display()))?;
    Ok(Secret::new(file.secret))
}

/// The form of `POST /oauth/device/approve-local`.
#[derive(Debug, Deserialize)]
pub(crate) struct ApproveForm {
    user_code: String,
    #[serde(default)]
    secret: String,
}

#[derive(Clone)]
struct LocalApproval {
    store: Store,
    secret: Secret<String>,
}

/// The route, over `store`, accepting `secret`.
pub(crate) fn router(store: Store, secret: Secret<String>) -> Router {
    Router::new().route(PATH, post(approve_local_device)).with_state(LocalApproval { store, secret })
}

/// Whether the request comes from this machine, unforwarded, with the right secret.
fn is_local_operator(peer: SocketAddr, headers: &HeaderMap, sent: &str, expected: &Secret<String>) -> bool {
    let loopback = peer.ip().to_canonical().is_loopback();
    let forwarded = FORWARDED_HEADERS.iter().any(|h| headers.contains_key(*h));
    let secret_ok: bool = sent.as_bytes().ct_eq(expected.expose().as_bytes()).into();
    loopback && !forwarded && !sent.is_empty() && secret_ok
}

fn refusal(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

async fn approve_local_device(
    State(state): State<LocalApproval>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ApproveForm>,
) -> Response {
    if !is_local_operator(peer, &headers, &form.secret, &state.secret) {
        tracing::warn!(%peer, "refused a local approval: not loopback or wrong bootstrap secret");
        let hint = "only a program on the server's machine holding its bootstrap secret may approve here; \
                    sign in with `cmdop login` instead";
        return refusal(StatusCode::FORBIDDEN, "access_denied", hint);
    }
    let owner = match state.store.first_user().await {
        Ok(Some(owner)) => owner,
        Ok(None) => {
            let hint = "the server has no owner yet: run `cmdop server local-login` first";
            return refusal(StatusCode::CONFLICT, "no_owner", hint);
        }
        Err(e) => return server_error(e),
    };
    match device::decide(&state.store, &form.user_code, owner.id, true).await {
        Ok(_) => {
            tracing::info!(email = %owner.email, "approved a local sign-in as the owner");
            Json(json!({"approved": true, "email": owner.email})).into_response()
        }
        Err(DecideError::Store(e)) => server_error(e),
        Err(e) => refusal(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string()),
    }
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "local approval failed");
    refusal(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "see the server log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GrantStatus;

    struct Fixture {
        _dir: tempfile::TempDir,
        state: LocalApproval,
        user_code: String,
        device_code_hash: String,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).await.unwrap();
        crate::server::bootstrap::first_owner(&store, "owner@example.com").await.unwrap();
        let secret = create_secret(dir.path()).unwrap();
        assert_eq!(read_secret(dir.path()).unwrap(), secret);
        let start = device::start(&store, "cmdop CLI", "test").await.unwrap();
        let device_code_hash = secret::hash_token(start.device_code.expose());
        Fixture { _dir: dir, state: LocalApproval { store, secret }, user_code: start.user_code, device_code_hash }
    }

    async fn approve(f: &Fixture, peer: &str, headers: HeaderMap, secret: &str) -> StatusCode {
        let form = ApproveForm { user_code: f.user_code.clone(), secret: secret.into() };
        let peer: SocketAddr = peer.parse().unwrap();
        approve_local_device(State(f.state.clone()), ConnectInfo(peer), headers, Form(form)).await.status()
    }

    fn forwarded() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "192.0.2.7".parse().unwrap());
        headers
    }

    async fn status(f: &Fixture) -> GrantStatus {
        f.state.store.grant_by_device_code(&f.device_code_hash).await.unwrap().unwrap().status
    }

    #[tokio::test]
    async fn only_a_loopback_unforwarded_caller_with_the_secret_approves() {
        let f = fixture().await;
        let good = f.state.secret.expose().clone();
        let refused = [
            ("192.0.2.7:5000", HeaderMap::new(), good.clone()),
            ("[2001:db8::1]:5000", HeaderMap::new(), good.clone()),
            ("127.0.0.1:5000", HeaderMap::new(), String::new()),
            ("127.0.0.1:5000", HeaderMap::new(), format!("{good}x")),
            ("127.0.0.1:5000", forwarded(), good.clone()),
        ];
        for (peer, headers, secret) in refused {
            assert_eq!(approve(&f, peer, headers, &secret).await, StatusCode::FORBIDDEN, "{peer} {secret:?}");
            assert_eq!(status(&f).await, GrantStatus::Pending);
        }
        assert_eq!(approve(&f, "[::ffff:127.0.0.1]:5000", HeaderMap::new(), &good).await, StatusCode::OK);
        assert_eq!(status(&f).await, GrantStatus::Approved);
        let again = approve(&f, "127.0.0.1:5000", HeaderMap::new(), &good).await;
        assert_eq!(again, StatusCode::BAD_REQUEST, "a grant is decided once");
    }
}
