//! The web console for fleet members: sign-in (a one-time URL from `cmdop console`, or email
//! and password), the Machines page with live updates, a terminal per machine, share links
//! and their revocation, the audit log.
//!
//! `auth` owns the session cookie (path `/console`, so share-link pages never receive it),
//! CSRF and the per-request membership check; `machines`, `terminal` and `links` are the
//! pages; `sessions` lists and kills a machine's shell sessions, `run` runs one command. Sessions reach machines only through the router, as the link gateway does.

mod auth;
mod links;
mod machines;
mod pages;
mod run;
mod sessions;
mod terminal;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::watch;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::core::limiter::Limiter;
use crate::server::http::assets::AssetIndex;
use crate::server::links::Links;
use crate::server::relay::router::SessionRouter;
use crate::store::Store;

/// Idle time after which a console session signs out: 1 hour.
/// The session key present once signed in (the session store evicts other sessions first).
pub(crate) const SIGNED_IN_KEY: &str = auth::USER_KEY;

const IDLE_EXPIRY: time::Duration = time::Duration::hours(1);

/// What the console's handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ConsoleState {
    store: Store,
    links: Links,
    router: Arc<dyn SessionRouter>,
    assets: Arc<AssetIndex>,
    public_url: String,
    /// `scheme://host[:port]`: the only Origin a console request may come from.
    public_origin: String,
    login_limits: Arc<Limiter>,
    ip_limits: Arc<Limiter>,
    /// Turns true when the server stops: long-lived answers (event streams) end with it.
    stopping: watch::Receiver<bool>,
    /// Open sessions per machine and client IP (shared with the API and share links).
    slots: crate::core::limits::SessionSlots,
}

impl ConsoleState {
    /// State over the server's store, links and router.
    pub(crate) fn new(
        store: Store,
        links: Links,
        router: Arc<dyn SessionRouter>,
        public_url: &str,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            links,
            router,
            assets: Arc::new(AssetIndex::build()),
            public_url: public_url.to_string(),
            public_origin: crate::server::http::origin_of(public_url),
            // The same back-off as the device page: per account 5 free failures, per IP 20,
            // then 1 s doubling to 15 min.
            login_limits: Arc::new(Limiter::new(5, Duration::from_secs(900))),
            ip_limits: Arc::new(Limiter::new(20, Duration::from_secs(900))),
            stopping,
            slots: crate::core::limits::SessionSlots::default(),
        }
    }

    /// The same state counting terminals in `slots`.
    pub(crate) fn with_slots(mut self, slots: crate::core::limits::SessionSlots) -> Self {
        self.slots = slots;
        self
    }

    fn asset(&self, path: &str) -> String {
        self.assets.url(path)
    }
}

/// The console's routes. The session cookie layer covers these routes only (never gRPC or
/// share links), and the cookie's path is `/console`.
pub(crate) fn router(state: ConsoleState, sessions: crate::server::http::sessions::BoundedSessions) -> Router {
    let sessions = SessionManagerLayer::new(sessions)
        .with_name("cmdop_console")
        .with_path("/console")
        .with_secure(state.public_url.starts_with("https://"))
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_expiry(Expiry::OnInactivity(IDLE_EXPIRY));
    let pages = Router::new()
        .route("/login", get(auth::show_login))
        .route("/console/login", post(auth::sign_in))
        .route("/console/signin/{ticket}", get(auth::redeem_ticket))
        .route("/console/logout", post(auth::sign_out))
        .route("/console", get(machines::show_machines))
        .route("/console/fleet", post(machines::switch_fleet))
        .route("/console/events", get(machines::machine_events))
        .route("/console/m/{machine}", get(links::show_machine))
        .route("/console/m/{machine}/share", post(links::create_link))
        .route("/console/m/{machine}/revoke", post(links::revoke_machine_links))
        .route("/console/m/{machine}/terminal", get(terminal::show_terminal))
        .route("/console/m/{machine}/terminal/ws", get(terminal::bridge_socket))
        .route("/console/m/{machine}/terminal/unlock", post(terminal::unlock))
        .route("/console/m/{machine}/sessions/{session}/kill", post(sessions::kill))
        .route("/console/m/{machine}/run/ws", get(run::run_socket))
        .route("/console/links", get(links::show_links))
        .route("/console/links/{link}/revoke", post(links::revoke_link))
        .layer(sessions);
    // The CLI's door: bearer token, no cookie.
    let api = Router::new().route(crate::core::wire::CONSOLE_TICKET_PATH, post(auth::mint_ticket));
    pages.merge(api).layer(axum::middleware::map_response(crate::server::http::security_headers)).with_state(state)
}
