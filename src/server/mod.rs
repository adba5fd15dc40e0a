//! The server: relay and CLI API (gRPC) and the HTTP side (browsers, OAuth, health) on ONE
//! listener, over one store.
//!
//! - `relay`: agents' streams and the router consumers reach sessions through.
//! - `api`: the CLI's gRPC API.
//! - `http`: every HTTP route: OAuth, device page, share-link pages and sockets, assets,
//!   health and metrics.
//! - `links`: share links, the one owner of their lifecycle and signing keys.
//! - `cluster`: this node among others on one database: its lease and the broadcast events.
//! - `oauth`: OAuth tokens and the device grant.
//! - `grpc`, `metrics`, `bootstrap`, `command`: shared gRPC helpers, counters, first-run
//!   set-up and the `cmdop server` command.
//! - `purge`: the periodic deletion of ended rows and expired browser sessions.

pub(crate) mod api;
pub(crate) mod bootstrap;
pub(crate) mod cluster;
pub(crate) mod command;
mod console;
mod drain;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod http2;
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

use crate::core::cluster_key::ClusterKey;
use crate::core::ids::NodeId;
use crate::core::limits::ServiceLimits;
use crate::proto;
use crate::server::api::ApiService;
use crate::server::cluster::Node;
use crate::server::http::HttpState;
use crate::server::http::client_ip::TrustedProxies;
use crate::server::http::sessions::BoundedSessions;
use crate::server::links::{KeyPlace, Links};
use crate::server::relay::LocalRouter;
use crate::server::relay::cluster::ClusterRouter;
use crate::server::relay::peer::PeerService;
use crate::server::relay::router::SessionRouter;
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
    /// The cluster key file every node of a shared database has (`cmdop server cluster-key new`).
    pub(crate) cluster_key_file: Option<PathBuf>,
    /// How other nodes reach this one; defaults to the public URL.
    pub(crate) advertise: Option<String>,
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
    node: Node,
    router: Arc<LocalRouter>,
    /// What consumers route through: `router` itself on a lone node, else the cluster router.
    routes: Arc<dyn SessionRouter>,
    /// The first broadcast event this node has not applied.
    events_from: i64,
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
        let key = load_cluster_key(config.cluster_key_file.as_deref(), database.is_shared())?;
        let store = database.connect().await.with_context(|| format!("cannot open the database {database}"))?;
        let health = http::Health { node: NodeId::random(), database: database.kind() };
        if !database.is_shared() {
            // A lone node on its own database: any node or route in it is a previous run's.
            store.forget_nodes().await?;
        }
        let listener =
            TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = config
            .public_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let advertise = config.advertise.map(|u| u.trim_end_matches('/').to_string()).unwrap_or(public_url.clone());
        let node = Node { id: health.node.to_string(), advertise, key: key.clone() };
        cluster::renew(&store, &node).await.context("cannot record this node's lease")?;
        let events_from = store.last_event_id().await?;
        let router = Arc::new(LocalRouter::default());
        let routes: Arc<dyn SessionRouter> = match &key {
            Some(key) => Arc::new(ClusterRouter::new(router.clone(), store.clone(), node.id.clone(), key.clone())),
            None => router.clone(),
        };
        let place = match &key {
            Some(key) => KeyPlace::Shared(key.clone()),
            None => KeyPlace::Dir(config.data_dir.clone()),
        };
        let links =
            Links::load(store.clone(), place, config.max_link_ttl).await.context("cannot load share-link keys")?;
        let trusted_proxies = TrustedProxies::new(config.trusted_proxies);
        let bootstrap_secret = local_approval::create_secret(&config.data_dir)?;
        Ok(Self {
            listener,
            local_addr,
            public_url,
            store,
            health,
            node,
            router,
            routes,
            events_from,
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
        let relay = RelayService::new(self.store.clone(), self.router.clone(), self.heartbeat, self.node.id.clone());
        let slots = crate::core::limits::SessionSlots::new(&self.service);
        let api = ApiService::new(self.store.clone(), self.routes.clone(), self.links.clone(), self.public_url.clone())
            .with_slots(slots.clone());
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let http_state =
            HttpState::new(self.store.clone(), self.links.clone(), self.routes.clone(), &self.public_url, self.health)
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
        // This node's lease (its routes count while it lives) and the other nodes' broadcasts.
        let _lease = AbortOnDrop::spawn(cluster::hold_lease(self.store.clone(), self.node.clone()));
        let _events =
            AbortOnDrop::spawn(cluster::follow_events(self.store.clone(), self.links.clone(), self.events_from));
        let console = console::router(
            console::ConsoleState::new(
                self.store.clone(),
                self.links.clone(),
                self.routes.clone(),
                &self.public_url,
                stopping.clone(),
            )
            .with_slots(slots.clone()),
            console_sessions,
        );
        // The agents' streams and the node-to-node hop are routes of their own (`relay::wire`:
        // gRPC framing without tonic's layers, their own end on stop); the paths win over the
        // tonic services' `/{service}/{*rest}` routes. Everything else gRPC stays on tonic.
        let peer = self.node.key.as_ref().map(|key| PeerService::new(self.router.clone(), key.clone()));
        let hot_streams = Arc::new(relay::hot::HotStreams::new(relay.clone(), peer.clone(), stopping.clone()));
        let mut hot = axum::Router::new().route(relay::service::LINK_PATH, {
            let (relay, stopping) = (relay.clone(), stopping.clone());
            axum::routing::post(move |req: axum::extract::Request| relay.clone().serve_link(req, stopping.clone()))
        });
        if let Some(peer) = peer {
            let stopping = stopping.clone();
            hot = hot.route(
                relay::peer::LINK_PATH,
                axum::routing::post(move |req: axum::extract::Request| peer.clone().serve_link(req, stopping.clone())),
            );
        }
        let grpc = tonic::service::Routes::new(proto::relay_server::RelayServer::new(relay))
            .add_service(proto::api_server::ApiServer::new(api))
            .into_axum_router()
            .layer(axum::middleware::map_response(move |resp| {
                let stopping = stopping.clone();
                async move { drain::end_grpc_on_stop(stopping, resp) }
            }));
        let app = http::router(http_state, device_sessions)
            .merge(local_approval::router(self.store.clone(), self.bootstrap_secret))
            .merge(console)
            .merge(hot)
            .merge(grpc)
            .fallback(http::not_found)
            .layer(axum::Extension(self.trusted_proxies.clone()));
        tracing::info!(url = %self.public_url, addr = %self.local_addr, "serving");
        // Sockets, event streams and gRPC streams never end by themselves: tell them when the
        // server stops (browsers get a notice and close 1001, agents and CLIs an UNAVAILABLE).
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: draining connections");
            let _ = stopping_tx.send(true);
        };
        listen::serve(self.listener, app, hot_streams, self.limits, shutdown).await;
        // A clean exit hands this node's machines over at once instead of after the lease.
        if let Err(e) = self.store.drop_lease(&self.node.id).await {
            tracing::warn!(error = %e, "could not drop this node's lease");
        }
        Ok(())
    }
}

/// The cluster key, required when nodes share a database (they authenticate each other and
/// seal shared secrets with it) and refused without one (nothing to share it with).
fn load_cluster_key(file: Option<&std::path::Path>, shared: bool) -> anyhow::Result<Option<Arc<ClusterKey>>> {
    match (file, shared) {
        (None, false) => Ok(None),
        (Some(_), false) => {
            anyhow::bail!("--cluster-key-file is for several nodes: give --database postgres://... too")
        }
        (None, true) => anyhow::bail!(
            "several nodes on one database need a shared key: make one with `cmdop server cluster-key new > FILE` and give every node --cluster-key-file FILE"
        ),
        (Some(path), true) => {
            let text = crate::sys::private_file::read(path)?
                .ok_or_else(|| anyhow::anyhow!("cluster key file {} does not exist", path.display()))?;
            let text =
                String::from_utf8(text).map_err(|_| anyhow::anyhow!("{} is not a cluster key file", path.display()))?;
            Ok(Some(Arc::new(ClusterKey::from_file(&text).with_context(|| path.display().to_string())?)))
        }
    }
}
