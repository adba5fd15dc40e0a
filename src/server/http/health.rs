//! Health and metrics for monitors: `GET /healthz` and `GET /metrics` (Prometheus text).
//! Plain answers, without the browser security headers.

use axum::http::header;
use axum::response::IntoResponse;

use crate::server::metrics::METRICS;

/// `GET /healthz`: 200 while serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /metrics`.
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}
