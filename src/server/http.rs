//! Plain HTTP routes of the server: health, metrics, and the explicit 404 that keeps unknown
//! browser paths from falling into gRPC's "unimplemented" answer.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::server::metrics::METRICS;
use crate::store::Store;

/// Routes served over plain HTTP.
pub fn router(_store: Store) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}

/// 404 for anything unknown.
pub async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}
