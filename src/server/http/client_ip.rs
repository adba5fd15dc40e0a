//! The browser's address, for audit logs and per-IP rate limits.
//!
//! Behind a reverse proxy (deploy/Caddyfile) every request comes from the proxy's address, so
//! per-IP limits would throttle everyone at once and audit logs would name the proxy. The
//! operator names the proxies (`cmdop server --trusted-proxy IP`); when the TCP peer is one of
//! them, the client is the rightmost `X-Forwarded-For` entry that is not itself a trusted
//! proxy. Entries left of that were written by the client and are never believed.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

/// The proxies whose `X-Forwarded-For` is believed; added to every request as an extension.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies(Arc<Vec<IpAddr>>);

impl TrustedProxies {
    /// Trusts these addresses (usually the local reverse proxy: 127.0.0.1, ::1).
    pub(crate) fn new(proxies: Vec<IpAddr>) -> Self {
        Self(Arc::new(proxies))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }

    /// The client behind `peer`, given the request's headers.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.trusts(client) {
                        break;
                    }
                }
                // Garbage from a proxy we trust ends the walk at the last address we believe.
                Err(_) => break,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let ip = match parts.extensions.get::<TrustedProxies>() {
            Some(trusted) => trusted.client(peer, &parts.headers),
            None => canonical(peer),
        };
        Ok(ClientIp(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let trusted = TrustedProxies::new(vec![ip("127.0.0.1")]);
        let h = xff(&["203.0.113.7"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &h), ip("203.0.113.7"));
        assert_eq!(trusted.client(ip("198.51.100.2"), &h), ip("198.51.100.2"), "an untrusted peer's header is ignored");
        assert_eq!(TrustedProxies::default().client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn a_spoofed_left_entry_is_not_believed() {
        let trusted = TrustedProxies::new(vec![ip("127.0.0.1"), ip("10.0.0.5")]);
        // The client sent "1.2.3.4"; the edge proxy 10.0.0.5 appended the real address, then
        // the local proxy appended 10.0.0.5.
        let h = xff(&["1.2.3.4, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(trusted.client(ip("::ffff:127.0.0.1"), &h), ip("203.0.113.9"));
        assert_eq!(trusted.client(ip("127.0.0.1"), &xff(&["not-an-ip"])), ip("127.0.0.1"));
        assert_eq!(trusted.client(ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
    }
}
