//! Server-rendered web for people and OAuth clients: the device-flow endpoints (`oauth`), the
//! verification page (`device`, the only routes with a session cookie). Security headers for every browser-facing response live here.

pub mod client_ip;
mod device;
mod oauth;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, MemoryStore, SessionManagerLayer};

use crate::core::limiter::Limiter;
use crate::store::Store;

/// Content Security Policy of every page: no inline script or style, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An HTML page (askama) with `status`; a template failure is a logged 500.
pub fn render(status: axum::http::StatusCode, page: &impl askama::Template) -> Response {
    use axum::response::IntoResponse;
    match page.render() {
        Ok(html) => (status, axum::response::Html(html)).into_response(),
        Err(e) => server_error(e),
    }
}

/// A 500 for a browser: the cause goes to the log, not to the page.
pub fn server_error(e: impl std::fmt::Display) -> Response {
    use axum::response::IntoResponse;
    tracing::error!(error = %e, "page failed");
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log\n").into_response()
}

/// Adds the strict headers every browser-facing response carries.
pub async fn security_headers(mut resp: Response) -> Response {
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

/// What the web handlers share. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    store: Store,
    public_url: String,
    css_url: String,
    login_limits: Arc<Limiter>,
    ip_limits: Arc<Limiter>,
}

impl WebState {
    /// State over `store`; `css_url` is the fingerprinted stylesheet URL.
    pub fn new(store: Store, public_url: &str, css_url: String) -> Self {
        Self {
            store,
            public_url: public_url.to_string(),
            css_url,
            // Per account and IP: 5 free failures, then 1 s doubling to 15 min.
            login_limits: Arc::new(Limiter::new(5, Duration::from_secs(900))),
            // Per IP: 20 free failures (several people behind one NAT), same back-off.
            ip_limits: Arc::new(Limiter::new(20, Duration::from_secs(900))),
        }
    }

    fn css(&self) -> String {
        self.css_url.clone()
    }
}

/// The OAuth endpoints and the verification page.
pub fn router(state: WebState) -> Router {
    let secure = state.public_url.starts_with("https://");
    let sessions = SessionManagerLayer::new(MemoryStore::default())
        .with_name("cmdop_web")
        .with_secure(secure)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let pages = Router::new()
        .route("/device", get(device::show_device))
        .route("/device/login", post(device::sign_in))
        .route("/device/decide", post(device::decide))
        .layer(sessions);
    let endpoints = Router::new()
        .route("/oauth/device", post(oauth::start_device))
        .route("/oauth/token", post(oauth::issue_token))
        .route("/oauth/revoke", post(oauth::revoke_token));
    pages.merge(endpoints).layer(axum::middleware::map_response(security_headers)).with_state(state)
}
