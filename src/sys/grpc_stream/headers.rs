//! The header blocks of a call: the request's, encoded with `core::http2::hpack`, and the
//! checks on what the server answers (RFC 9113 §8.3: pseudo-fields first, only `:status` in a
//! response, none in trailers, no connection-specific fields, lowercase names).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tonic::Status;

use super::io::Target;
use crate::core::http2::fields::{self, CONNECTION_SPECIFIC};
use crate::core::http2::hpack::{self, FIELD_OVERHEAD};

/// The request's header block for a gRPC call of the method at `path` with `extra` beside
/// gRPC's own fields, and its size as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
pub(super) fn request_block(target: &Target, path: &str, extra: &HeaderMap) -> Result<(Vec<u8>, usize), Status> {
    let uri = target.uri(path)?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let own: [(&[u8], &[u8]); 6] = [
        (b":method", b"POST"),
        (b":scheme", scheme.as_bytes()),
        (b":authority", authority.as_bytes()),
        (b":path", path.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    let extra = extra
        .iter()
        // `te` is gRPC's own, as `trailers`, added above.
        .filter(|(name, _)| *name != "te" && !CONNECTION_SPECIFIC.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    let fields: Vec<(&[u8], &[u8])> = own.into_iter().chain(extra).collect();
    let size = fields.iter().map(|(n, v)| n.len() + v.len() + FIELD_OVERHEAD).sum();
    let mut block = Vec::with_capacity(size);
    hpack::encode(fields, &mut block);
    Ok((block, size))
}

/// A response's status and headers, or why the block is malformed.
pub(super) fn response_head(block: Vec<(Bytes, Bytes)>) -> Result<(StatusCode, HeaderMap), &'static str> {
    let mut status = None;
    let headers = fields::regular(block, |name, value| {
        if name != b":status" || status.is_some() {
            return Err("a pseudo-header field other than one :status");
        }
        status = Some(StatusCode::from_bytes(&value).map_err(|_| "an invalid :status")?);
        Ok(())
    })?;
    Ok((status.ok_or("no :status")?, headers))
}

/// A trailer block's fields, or why it is malformed.
pub(super) fn trailers(block: Vec<(Bytes, Bytes)>) -> Result<HeaderMap, &'static str> {
    fields::regular(block, |_, _| Err("a pseudo-header field in trailers"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::http2::hpack::Decoder;
    use http::HeaderValue;

    fn fields(list: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        list.iter().map(|(n, v)| (Bytes::from_static(n.as_bytes()), Bytes::from_static(v.as_bytes()))).collect()
    }

    #[test]
    fn the_request_carries_grpcs_fields_and_the_callers() {
        let target = Target::parse("https://relay.example.com").unwrap();
        let mut extra = HeaderMap::new();
        extra.insert("authorization", HeaderValue::from_static("Bearer x"));
        extra.insert("connection", HeaderValue::from_static("close"));
        let (block, size) = request_block(&target, "/p.S/Link", &extra).unwrap();
        let decoded = Decoder::new().decode(&block, 1 << 16).unwrap();
        let got: Vec<(&[u8], &[u8])> = decoded.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let want: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"relay.example.com"),
            (b":path", b"/p.S/Link"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"authorization", b"Bearer x"),
        ];
        assert_eq!(got, want, "connection-specific fields are left out");
        assert_eq!(size, want.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>());
    }

    #[test]
    fn responses_and_trailers_are_checked() {
        let (status, headers) =
            response_head(fields(&[(":status", "200"), ("content-type", "application/grpc")])).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        assert!(response_head(fields(&[("content-type", "x")])).is_err(), "no :status");
        assert!(response_head(fields(&[("a", "1"), (":status", "200")])).is_err(), "pseudo after regular");
        assert!(response_head(fields(&[(":status", "200"), (":path", "/")])).is_err());
        assert!(response_head(fields(&[(":status", "200"), ("Upper", "1")])).is_err());
        assert!(response_head(fields(&[(":status", "200"), ("connection", "close")])).is_err());
        assert_eq!(trailers(fields(&[("grpc-status", "0")])).unwrap()["grpc-status"], "0");
        assert!(trailers(fields(&[(":status", "200")])).is_err());
    }
}
