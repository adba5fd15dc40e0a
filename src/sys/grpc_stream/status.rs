//! How a gRPC client reads a server's answer: `grpc-status` in headers or trailers, a non-200
//! HTTP answer, a broken HTTP/2 stream, each as the `tonic::Status` a tonic client would report,
//! so callers map them alike.

use http::{HeaderMap, StatusCode};
use tonic::{Code, Status};

use crate::core::http2::frame::Reason;

/// `grpc-status` and `grpc-message` (percent-decoded) of a header or trailer block.
pub(super) fn status_of(headers: &HeaderMap) -> Option<Status> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    let message = headers.get("grpc-message").map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
    Some(Status::new(code, message))
}

/// The gRPC code a non-200 HTTP answer stands for (as gRPC clients infer it: a proxy's
/// error page, say).
pub(super) fn status_of_http(status: StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the server answered HTTP {status} instead of a gRPC stream"))
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connection broke (a socket error, or the server closed it with streams open): retried
/// like any network failure.
pub(super) fn broken(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the connection to the server broke: {e}"))
}

/// One stream failed at the HTTP/2 level (the server reset it, or broke the protocol on it).
pub(super) fn stream_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the HTTP/2 stream to the server failed: {e}"))
}

/// The server reset the stream with `reason`.
pub(super) fn reset_by_server(reason: Reason) -> Status {
    stream_failed(format_args!("the server reset it ({reason})"))
}

/// The server is going away (GOAWAY) and did not take this stream: safe to retry elsewhere.
pub(super) fn going_away(reason: Reason) -> Status {
    Status::unavailable(format!("the server is closing the connection ({reason}); the stream was not processed"))
}

pub(super) fn unreachable_at(url: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("cannot reach the server at {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"server%20shutting down%"), "server shutting down%");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        headers.insert("grpc-message", HeaderValue::from_static("machine%20credential%20revoked"));
        let status = status_of(&headers).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "machine credential revoked");
    }

    #[test]
    fn http_errors_map_to_grpc_codes() {
        assert_eq!(status_of_http(StatusCode::NOT_FOUND).code(), Code::Unimplemented);
        assert_eq!(status_of_http(StatusCode::BAD_GATEWAY).code(), Code::Unavailable);
        assert_eq!(status_of_http(StatusCode::IM_A_TEAPOT).code(), Code::Unknown);
    }
}
