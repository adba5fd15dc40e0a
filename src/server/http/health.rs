//! Health and metrics for monitors: `GET /healthz` and `GET /metrics` (Prometheus text).
//! Plain answers, without the browser security headers.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;

use super::HttpState;
use crate::core::ids::NodeId;
use crate::server::metrics::METRICS;

/// What `GET /healthz` tells a load balancer or an operator: which node answered and on which
/// kind of database (docs/reference.md).
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Health {
    /// This process's node id.
    pub(crate) node: NodeId,
    /// `sqlite` or `postgres`.
    pub(crate) database: &'static str,
}

/// `GET /healthz`: 200 while serving, `{"status":"ok","node":"<node id>","database":"sqlite"|"postgres"}`.
pub(crate) async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    #[derive(Serialize)]
    struct Body {
        status: &'static str,
        #[serde(flatten)]
        health: Health,
    }
    Json(Body { status: "ok", health: state.health })
}

/// `GET /metrics`.
pub(crate) async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}
