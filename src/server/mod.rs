//! The server: relay and CLI API (gRPC) and the HTTP side (browsers, OAuth, health) on ONE
//! listener, over one store.
//!
//! - `relay`: agents' streams and the router consumers reach sessions through.
//! - `api`: the CLI's gRPC API.
//! - `http`: every HTTP route: OAuth, device page, share-link pages and sockets, assets,
//!   health and metrics.
//! - `links`: share links, the one owner of their lifecycle and signing keys.
//! - `oauth`: OAuth tokens and the device grant.
//! - `grpc`, `metrics`, `bootstrap`, `command`: shared gRPC helpers, counters, first-run
//!   set-up and the `cmdop server` command.
//! - `purge`: the periodic deletion of ended rows and expired browser sessions.

pub(crate) mod api;
pub(crate) mod bootstrap;
pub(crate) mod command;
mod console;
mod drain;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod links;
pub(crate) mod listen;
pub(crate) mod local_approval;
pub(crate) mod metrics;
pub(crate) mod oauth;
mod purge;
pub(crate) mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::core::ids::NodeId;
use crate::core::limits::ServiceLimits;
use crate::proto;
use crate::server::api::ApiService;
use crate::server::http::HttpState;
use crate::server::http::client_ip::TrustedProxies;
use crate::server::http::sessions::BoundedSessions;
use crate::server::links::Links;
use crate::server::relay::LocalRouter;
use crate::server::relay::service::RelayService;
use crate::store::{Database, Store};
use crate::sys::task::AbortOnDrop;

/// Default heartbeat interval told to agents: 5 s (offline after 15 s of silence).
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// How to run a server.
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    /// `HOST:PORT`; port 0 picks a free port.
    pub(crate) listen: String,
    /// The URL users and agents reach; defaults to `http://<bound address>`.
    pub(crate) public_url: Option<String>,
    /// Keys, and the SQLite database unless `database` is given.
    pub(crate) data_dir: PathBuf,
    /// A `postgres://` URL shared by several nodes; `None` keeps SQLite in `data_dir`.
    pub(crate) database: Option<String>,
    /// Heartbeat interval told to agents.
    pub(crate) heartbeat: Duration,
    /// Longest lifetime a share link may get.
    pub(crate) max_link_ttl: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (http/client_ip.rs).
    pub(crate) trusted_proxies: Vec<std::net::IpAddr>,
    /// Header timeout and connection cap (listen.rs).
    pub(crate) limits: listen::ConnLimits,
    /// Rates, session caps and the purge interval.
    pub(crate) service: ServiceLimits,
}

/// A bound, not yet serving, server.
pub(crate) struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    public_url: String,
    store: Store,
    health: http::Health,
    /// Other nodes may hold agents' streams: sweep silent machines instead of trusting memory.
    shared_database: bool,
    router: Arc<LocalRouter>,
    links: Links,
    heartbeat: Duration,
    trusted_proxies: TrustedProxies,
    bootstrap_secret: crate::core::secret::Secret<String>,
    limits: listen::ConnLimits,
    service: ServiceLimits,
}

impl Server {
    /// Opens the store and binds the listener.
    pub(crate) async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        crate::sys::private_file::ensure_dir(&config.data_dir)?;
        let database = Database::choose(config.database.as_deref(), &config.data_dir)?;
        let store = database.connect().await.with_context(|| format!("cannot open the database {database}"))?;
        let health = http::Health { node: NodeId::random(), database: database.kind() };
        if !database.is_shared() {
            // A lone node: no stream is up yet, so every machine is offline.
            store.mark_all_offline().await?;
        }
        let listener =
            TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = config
            .public_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let router = Arc::new(LocalRouter::default());
        let links = Links::load(store.clone(), &config.data_dir, config.max_link_ttl)
            .await
            .context("cannot load share-link keys")?;
        let trusted_proxies = TrustedProxies::new(config.trusted_proxies);
        let bootstrap_secret = local_approval::create_secret(&config.data_dir)?;
        Ok(Self {
            listener,
            local_addr,
            public_url,
            store,
            health,
            shared_database: database.is_shared(),
            router,
            links,
            heartbeat: config.heartbeat,
            trusted_proxies,
            bootstrap_secret,
            limits: config.limits,
            service: config.service,
        })
    }

    /// The URL users and agents reach.
    pub(crate) fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The store, for bootstrap steps before serving.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` resolves.
    pub(crate) async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let relay = RelayService::new(self.store.clone(), self.router.clone(), self.heartbeat);
        let slots = crate::core::limits::SessionSlots::new(&self.service);
        let api = ApiService::new(self.store.clone(), self.router.clone(), self.links.clone(), self.public_url.clone())
            .with_slots(slots.clone());
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let http_state =
            HttpState::new(self.store.clone(), self.links.clone(), self.router.clone(), &self.public_url, self.health)
                .with_limits(self.service)
                .with_stopping(stopping.clone())
                .with_slots(slots.clone());
        let device_sessions = BoundedSessions::new(self.service.max_web_sessions, http::device::USER_KEY);
        let console_sessions = BoundedSessions::new(self.service.max_web_sessions, console::SIGNED_IN_KEY);
        let _purge = AbortOnDrop::spawn(purge::run(
            self.store.clone(),
            vec![device_sessions.clone(), console_sessions.clone()],
            self.service.purge_interval,
        ));
        // Key reloads and revocation pruning, for as long as this server serves.
        let _maintenance = self.links.spawn_maintenance();
        // Other nodes may hold agents' streams: machines whose node went silent are swept offline.
        let _sweep = self
            .shared_database
            .then(|| AbortOnDrop::spawn(relay::presence::offline_sweep(self.store.clone(), self.heartbeat)));
        let console = console::router(
            console::ConsoleState::new(
                self.store.clone(),
                self.links.clone(),
                self.router.clone(),
                &self.public_url,
                stopping.clone(),
            )
            .with_slots(slots.clone()),
            console_sessions,
        );
        let grpc = tonic::service::Routes::new(proto::relay_server::RelayServer::new(relay))
            .add_service(proto::api_server::ApiServer::new(api))
            .into_axum_router();
        let app = http::router(http_state, device_sessions)
            .merge(local_approval::router(self.store.clone(), self.bootstrap_secret))
            .merge(console)
            .merge(grpc)
            .fallback(http::not_found)
            .layer(axum::middleware::map_response(move |resp| {
                let stopping = stopping.clone();
                async move { drain::end_grpc_on_stop(stopping, resp) }
            }))
            .layer(axum::Extension(self.trusted_proxies.clone()));
        tracing::info!(url = %self.public_url, addr = %self.local_addr, "serving");
        // Sockets, event streams and gRPC streams never end by themselves: tell them when the
        // server stops (browsers get a notice and close 1001, agents and CLIs an UNAVAILABLE).
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: draining connections");
            let _ = stopping_tx.send(true);
        };
        listen::serve(self.listener, app, self.limits, shutdown).await;
        Ok(())
    }
}
