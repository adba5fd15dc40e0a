//! Small pieces every gRPC service of the server shares: the bearer token of a call and the
//! one answer for failures whose details stay in the server log.

use tonic::Status;
use tonic::metadata::MetadataMap;

/// The `Bearer` token of a request's `authorization` metadata.
pub(crate) fn bearer(meta: &MetadataMap) -> Option<&str> {
    meta.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Logs a storage failure and answers without internals.
pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal server error; see the server log")
}
