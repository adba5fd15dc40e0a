//! Header blocks to requests and responses to header blocks (RFC 9113 §8). A request that
//! breaks §8.3's rules is malformed: a stream error PROTOCOL_ERROR, the connection goes on.

use bytes::Bytes;
use http::header;
use http::{HeaderMap, Method, Request, Response, Uri, Version, uri};

use crate::core::http2::fields as http2_fields;
use crate::core::http2::hpack;

/// A request header block broke RFC 9113 §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a malformed request: {0}")]
pub(super) struct Malformed(pub(super) &'static str);

/// The pseudo-headers of a request, each at most once.
#[derive(Default)]
struct Pseudo {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
}

impl Pseudo {
    fn set(&mut self, name: &[u8], value: Bytes) -> Result<(), Malformed> {
        let slot = match name {
            b":method" => &mut self.method,
            b":scheme" => &mut self.scheme,
            b":authority" => &mut self.authority,
            b":path" => &mut self.path,
            _ => return Err(Malformed("an unknown or response pseudo-header")),
        };
        if slot.replace(value).is_some() {
            return Err(Malformed("a pseudo-header twice"));
        }
        Ok(())
    }
}

/// The regular fields of a block (`core::http2::fields`), pseudo-headers handed to `pseudo`.
fn fields(
    block: Vec<(Bytes, Bytes)>,
    mut pseudo: impl FnMut(&[u8], Bytes) -> Result<(), Malformed>,
) -> Result<HeaderMap, Malformed> {
    http2_fields::regular(block, |name, value| pseudo(name, value).map_err(|Malformed(what)| what)).map_err(Malformed)
}

/// A request's head from its decoded header block.
pub(super) fn request(block: Vec<(Bytes, Bytes)>) -> Result<Request<()>, Malformed> {
    let mut pseudo = Pseudo::default();
    let headers = fields(block, |name, value| pseudo.set(name, value))?;
    let method = pseudo.method.take().ok_or(Malformed("no :method"))?;
    let method = Method::from_bytes(&method).map_err(|_| Malformed("an invalid :method"))?;
    let uri = if method == Method::CONNECT {
        if pseudo.scheme.is_some() || pseudo.path.is_some() {
            return Err(Malformed("CONNECT with :scheme or :path"));
        }
        let authority = pseudo.authority.ok_or(Malformed("CONNECT without :authority"))?;
        Uri::from_maybe_shared(authority).map_err(|_| Malformed("an invalid :authority"))?
    } else {
        uri(pseudo)?
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    Ok(req)
}

fn uri(pseudo: Pseudo) -> Result<Uri, Malformed> {
    let scheme = pseudo.scheme.ok_or(Malformed("no :scheme"))?;
    let path = pseudo.path.ok_or(Malformed("no :path"))?;
    if path.is_empty() {
        return Err(Malformed("an empty :path"));
    }
    let mut parts = uri::Parts::default();
    parts.scheme = Some(uri::Scheme::try_from(&scheme[..]).map_err(|_| Malformed("an invalid :scheme"))?);
    parts.path_and_query = Some(uri::PathAndQuery::from_maybe_shared(path).map_err(|_| Malformed("an invalid :path"))?);
    match pseudo.authority {
        Some(authority) => {
            parts.authority =
                Some(uri::Authority::from_maybe_shared(authority).map_err(|_| Malformed("an invalid :authority"))?);
        }
        // A URI with a scheme needs an authority; without one the path stands alone.
        None => parts.scheme = None,
    }
    Uri::from_parts(parts).map_err(|_| Malformed("an invalid request target"))
}

/// Trailers from a decoded header block: no pseudo-headers allowed.
pub(super) fn trailers(block: Vec<(Bytes, Bytes)>) -> Result<HeaderMap, Malformed> {
    fields(block, |_, _| Err(Malformed("a pseudo-header in trailers")))
}

/// The `content-length` a request declares, if any.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Malformed> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else { return Ok(None) };
    let len = first.to_str().ok().and_then(|s| s.parse::<u64>().ok()).ok_or(Malformed("an invalid content-length"))?;
    if values.any(|v| v != first) {
        return Err(Malformed("differing content-lengths"));
    }
    Ok(Some(len))
}

/// Encodes a response's status and headers (connection-specific fields left out, as hyper does).
pub(super) fn encode_response<B>(response: &Response<B>, dst: &mut Vec<u8>) {
    let status = response.status();
    let fields = std::iter::once((&b":status"[..], status.as_str().as_bytes()));
    encode_fields(fields, response.headers(), dst);
}

/// Encodes trailers.
pub(super) fn encode_trailers(trailers: &HeaderMap, dst: &mut Vec<u8>) {
    encode_fields(std::iter::empty(), trailers, dst);
}

fn encode_fields<'a>(pseudo: impl Iterator<Item = (&'a [u8], &'a [u8])>, headers: &'a HeaderMap, dst: &mut Vec<u8>) {
    let regular = headers
        .iter()
        .filter(|(name, _)| !http2_fields::CONNECTION_SPECIFIC.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    hpack::encode(pseudo.chain(regular), dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn block(fields: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        fields.iter().map(|(n, v)| (Bytes::from_static(n.as_bytes()), Bytes::from_static(v.as_bytes()))).collect()
    }

    const GOOD: [(&str, &str); 5] =
        [(":method", "POST"), (":scheme", "http"), (":authority", "a.b:1"), (":path", "/x?y"), ("te", "trailers")];

    #[test]
    fn a_well_formed_request_becomes_its_head() {
        let req = request(block(&GOOD)).map_err(|e| e.0);
        let req = req.as_ref().map(|r| (r.method().clone(), r.uri().to_string(), r.headers().len()));
        assert_eq!(req, Ok((Method::POST, "http://a.b:1/x?y".to_string(), 1)));
    }

    #[test]
    fn each_rule_of_rfc_9113_8_3_is_enforced() {
        let cases: [&[(&str, &str)]; 9] = [
            &[(":scheme", "http"), (":path", "/")],
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "")],
            &[(":method", "GET"), (":method", "GET"), (":scheme", "http"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":status", "200")],
            &[(":method", "GET"), ("x", "1"), (":scheme", "http"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("X-Up", "1")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("connection", "close")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("te", "gzip")],
        ];
        for case in cases {
            assert!(request(block(case)).is_err(), "{case:?} accepted");
        }
        assert!(trailers(block(&[(":path", "/")])).is_err());
        assert!(trailers(block(&[("grpc-status", "0")])).is_ok());
    }

    #[test]
    fn a_response_block_decodes_to_its_status_and_fields_without_connection_ones() {
        let mut response = Response::new(());
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain"));
        response.headers_mut().insert("connection", HeaderValue::from_static("close"));
        let mut dst = Vec::new();
        encode_response(&response, &mut dst);
        let fields = hpack::Decoder::new().decode(&dst, 1 << 16);
        assert_eq!(fields, Ok(block(&[(":status", "404"), ("content-type", "text/plain")])));
    }
}
