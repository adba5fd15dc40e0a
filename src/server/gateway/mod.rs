//! The browser side: share-link pages, their WebSocket bridge and static assets (axum).
//!
//! `pages` renders (askama) and maps link verdicts to HTTP status, `socket` bridges a
//! WebSocket to a shell through the router, `parked` keeps a dropped browser's shell for a
//! 30 s resume, `assets` serves embedded files, `protocol` holds the browser wire messages,
//! `unlock` answers a machine's attach password with a cookie for the socket.

pub mod assets;
mod pages;
mod parked;
pub mod protocol;
mod socket;
pub(crate) mod unlock;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::server::links::Shares;
use crate::server::relay::router::SessionRouter;

/// What the gateway's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    shares: Shares,
    router: Arc<dyn SessionRouter>,
    assets: Arc<assets::AssetIndex>,
    parked: parked::Parked,
    /// `scheme://host[:port]` of the public URL: the only Origin a socket may come from.
    public_origin: String,
}

impl GatewayState {
    /// The fingerprinted URL of an embedded static file.
    pub fn asset_url(&self, path: &str) -> String {
        self.assets.url(path)
    }

    /// Gateway state over `shares`, reaching machines through `router`.
    pub fn new(shares: Shares, router: Arc<dyn SessionRouter>, public_url: &str) -> Self {
        Self {
            shares,
            router,
            assets: Arc::new(assets::AssetIndex::build()),
            parked: parked::Parked::default(),
            public_origin: origin_of(public_url),
        }
    }
}

/// `scheme://authority` of a URL (drops any path).
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// The gateway's routes, with strict security headers on every response.
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/s/{token}", get(pages::open_share_page))
        .route("/s/{token}/ws", get(socket::bridge_socket))
        .route("/s/{token}/unlock", post(unlock::unlock))
        .route("/assets/{hash}/{*path}", get(assets::serve_asset))
        .layer(axum::middleware::map_response(crate::server::web::security_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_drops_the_path() {
        assert_eq!(super::origin_of("https://cmdop.example.com/base/"), "https://cmdop.example.com");
        assert_eq!(super::origin_of("http://127.0.0.1:4000"), "http://127.0.0.1:4000");
    }
}
