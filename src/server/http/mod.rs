//! The server's HTTP side, every route a browser, an OAuth client or a monitor reaches (axum).
//! The relay and the CLI API (gRPC) share the listener; `crate::server` merges them.
//!
//! One file per concern:
//! - `health`: `/healthz` and `/metrics`.
//! - `client_ip`: the client's address behind trusted proxies.
//! - `assets`: embedded static files under fingerprinted URLs.
//! - `oauth`: the device-flow endpoints (RFC 8628), form in, JSON out.
//! - `device`: the device-flow verification page (the only routes with a session cookie).
//! - `link_page`: a share link's terminal page and error pages (the one verdict -> status map).
//! - `link_socket`: a share link's WebSocket, bridged to a shell through the router.
//! - `parked`: link sessions kept 30 s for a browser that dropped.
//! - `sessions`: the bounded in-memory store of browser cookie sessions.
//! - `unlock`: a machine's attach password, answered with a cookie for the socket.
//! - `protocol`: the browser wire messages and close codes.
//! - `ws`: the WebSocket handshake and frames on the upgraded connection (the link socket's).
//!
//! This file: the shared state, the router, the security headers and the 404.

pub(crate) mod assets;
pub(crate) mod client_ip;
pub(crate) mod device;
mod health;
mod lane;
pub(crate) use health::Health;
mod link_page;
mod link_socket;
pub(crate) use link_socket::refusal_metric;
pub(crate) mod oauth;
mod parked;
pub(crate) mod protocol;
pub(crate) mod sessions;
pub(crate) mod unlock;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::core::limiter::{Limiter, Rate};
use crate::core::limits::ServiceLimits;
use crate::server::links::Links;
use crate::server::relay::router::SessionRouter;
use crate::store::Store;

/// Content Security Policy of every page: no inline script or style, nothing from elsewhere.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// Which node and database answer `/healthz`.
    health: Health,
    /// Users, machines and OAuth grants (never link rows: `links` owns those).
    store: Store,
    links: Links,
    router: Arc<dyn SessionRouter>,
    assets: Arc<assets::AssetIndex>,
    parked: parked::Parked,
    public_url: String,
    /// `scheme://host[:port]` of the public URL: the only Origin a socket may come from.
    public_origin: String,
    /// Device sign-in failures per account.
    login_limits: Arc<Limiter>,
    /// Device sign-in failures per client address.
    ip_limits: Arc<Limiter>,
    /// `POST /oauth/device` calls per client address.
    device_starts: Arc<Rate>,
    /// The configured limits.
    limits: ServiceLimits,
    /// Open sessions per machine, link and client IP, against their limits.
    slots: crate::core::limits::SessionSlots,
    /// Turns true when the server stops: sockets say so and close 1001.
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl HttpState {
    /// State over `store` and `links`, reaching machines through `router`.
    pub(crate) fn new(
        store: Store,
        links: Links,
        router: Arc<dyn SessionRouter>,
        public_url: &str,
        health: Health,
    ) -> Self {
        Self {
            health,
            store,
            links,
            router,
            assets: Arc::new(assets::AssetIndex::build()),
            parked: parked::Parked::default(),
            public_url: public_url.to_string(),
            public_origin: origin_of(public_url),
            // Per account: 5 free failures, then 1 s doubling to 15 min.
            login_limits: Arc::new(Limiter::new(5, Duration::from_secs(900))),
            // Per IP: 20 free failures (several people behind one NAT), same back-off.
            ip_limits: Arc::new(Limiter::new(20, Duration::from_secs(900))),
            device_starts: Arc::new(Rate::new(0, Duration::from_secs(60))),
            limits: ServiceLimits::default(),
            stopping: None,
            slots: crate::core::limits::SessionSlots::default(),
        }
    }

    /// The same state counting sessions in `slots` (shared with the API and the console).
    pub(crate) fn with_slots(mut self, slots: crate::core::limits::SessionSlots) -> Self {
        self.slots = slots;
        self
    }

    /// The same state, its sockets closing when `stopping` turns true.
    pub fn with_stopping(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// Resolves when the server starts stopping (never without a stop signal).
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stopping = self.stopping.clone();
        async move {
            let stopped = match stopping {
                Some(mut rx) => rx.wait_for(|s| *s).await.is_ok(),
                None => false,
            };
            if !stopped {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The same state enforcing `limits`.
    pub fn with_limits(mut self, limits: ServiceLimits) -> Self {
        self.device_starts = Arc::new(Rate::new(limits.device_starts_per_minute, Duration::from_secs(60)));
        self.limits = limits;
        self
    }

    /// The stylesheet every page links.
    fn css(&self) -> String {
        self.assets.url("share.css")
    }
}

/// `scheme://authority` of a URL (drops any path).
pub(crate) fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// Every HTTP route. Browser-facing ones carry strict security headers; only the device
/// pages carry a session cookie, kept in `sessions`.
pub(crate) fn router(state: HttpState, sessions: sessions::BoundedSessions) -> Router {
    let secure = state.public_url.starts_with("https://");
    let sessions = SessionManagerLayer::new(sessions)
        .with_name("cmdop_web")
        .with_secure(secure)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let device_pages = Router::new()
        .route("/device", get(device::show_device))
        .route("/device/login", post(device::sign_in))
        .route("/device/decide", post(device::decide))
        .layer(sessions);
    let browser = Router::new()
        .route("/oauth/device", post(oauth::start_device))
        .route("/oauth/token", post(oauth::issue_token))
        .route("/oauth/revoke", post(oauth::revoke_token))
        .route("/s/{token}", get(link_page::open_link_page))
        .route("/s/{token}/ws", get(link_socket::bridge_socket))
        .route("/s/{token}/unlock", post(unlock::unlock))
        .route("/assets/{hash}/{*path}", get(assets::serve_asset))
        .merge(device_pages)
        .layer(axum::middleware::map_response(security_headers));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .merge(browser)
        .with_state(state)
}

/// Adds the strict headers every browser-facing response carries.
pub(crate) async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// An HTML page (askama) with `status`; a template failure is a logged 500.
pub(crate) fn render(status: StatusCode, page: &impl askama::Template) -> Response {
    match page.render() {
        Ok(html) => (status, axum::response::Html(html)).into_response(),
        Err(e) => server_error(e),
    }
}

/// A 500 for a browser: the cause goes to the log, not to the page.
pub(crate) fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "page failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log\n").into_response()
}

/// 404 for anything unknown (including what gRPC's own fallback would answer with 200).
pub(crate) async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_drops_the_path() {
        assert_eq!(super::origin_of("https://cmdop.example.com/base/"), "https://cmdop.example.com");
        assert_eq!(super::origin_of("http://127.0.0.1:4000"), "http://127.0.0.1:4000");
    }
}
