//! Plain HTTP routes of the server: health, metrics, and the explicit 404 that keeps unknown
//! browser paths from falling into gRPC's "unimplemented" answer.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::core::ids::NodeId;
use crate::server::metrics::METRICS;

/// What `GET /healthz` tells a load balancer or an operator: which node answered and on which
/// kind of database (docs/reference.md).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Health {
    /// This process's node id.
    pub node: NodeId,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
}

/// Routes served over plain HTTP.
pub fn router(health: Health) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(health).route("/metrics", get(metrics))
}

/// `{"status":"ok","node":"<node id>","database":"sqlite"|"postgres"}`.
async fn healthz(State(health): State<Health>) -> impl IntoResponse {
    #[derive(Serialize)]
    struct Body {
        status: &'static str,
        #[serde(flatten)]
        health: Health,
    }
    Json(Body { status: "ok", health })
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}

/// 404 for anything unknown.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}
