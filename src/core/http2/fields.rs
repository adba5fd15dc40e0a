//! The fields of a decoded header block as RFC 9113 §8.2 and §8.3 allow them: what a request,
//! a response and trailers have in common, checked the same way by our server and our client.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2); `te` is allowed, as `trailers` only.
pub(crate) const CONNECTION_SPECIFIC: [&str; 5] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// A block's regular fields as a header map: names lowercase, none connection-specific, `te`
/// only as "trailers", values valid. Its pseudo-header fields, which must all come before the
/// regular ones, go to `pseudo` (which refuses those its kind of block may not carry).
pub(crate) fn regular(
    block: Vec<(Bytes, Bytes)>,
    mut pseudo: impl FnMut(&[u8], Bytes) -> Result<(), &'static str>,
) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(block.len());
    let mut seen_regular = false;
    for (name, value) in block {
        if name.first() == Some(&b':') {
            if seen_regular {
                return Err("a pseudo-header after a regular field");
            }
            pseudo(&name, value)?;
            continue;
        }
        seen_regular = true;
        let name = HeaderName::from_lowercase(&name).map_err(|_| "an invalid or uppercase field name")?;
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err("a connection-specific field");
        }
        if name == http::header::TE && value != "trailers" {
            return Err("te other than trailers");
        }
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| "an invalid field value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(list: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        list.iter().map(|(n, v)| (Bytes::from_static(n.as_bytes()), Bytes::from_static(v.as_bytes()))).collect()
    }

    fn no_pseudo(_: &[u8], _: Bytes) -> Result<(), &'static str> {
        Err("a pseudo-header")
    }

    #[test]
    fn regular_fields_are_checked_and_pseudo_fields_handed_over_first() {
        let mut seen = Vec::new();
        let headers = regular(block(&[(":status", "200"), ("te", "trailers"), ("x-a", "1")]), |n, v| {
            seen.push((n.to_vec(), v));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(b":status".to_vec(), Bytes::from_static(b"200"))]);
        assert_eq!((headers["te"].as_bytes(), headers["x-a"].as_bytes()), (&b"trailers"[..], &b"1"[..]));
        let refused = |list| regular(block(list), |_, _| Ok(())).unwrap_err();
        assert_eq!(refused(&[("x-a", "1"), (":status", "200")]), "a pseudo-header after a regular field");
        assert_eq!(refused(&[("X-A", "1")]), "an invalid or uppercase field name");
        assert_eq!(refused(&[("transfer-encoding", "chunked")]), "a connection-specific field");
        assert_eq!(refused(&[("te", "gzip")]), "te other than trailers");
        assert_eq!(refused(&[("x-a", "a\nb")]), "an invalid field value");
        assert_eq!(regular(block(&[(":path", "/")]), no_pseudo).unwrap_err(), "a pseudo-header");
    }
}
