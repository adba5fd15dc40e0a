//! The server: relay (gRPC) and gateway (HTTP) on ONE listener, over one store.

pub mod api;
pub mod bootstrap;
pub mod command;
mod console;
pub mod gateway;
pub mod grpc;
mod http;
pub mod links;
pub mod metrics;
pub mod oauth;
pub mod relay;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::proto;
use crate::server::api::ApiService;
use crate::server::links::Shares;
use crate::server::relay::LocalRouter;
use crate::server::relay::service::RelayService;
use crate::store::Store;
use gateway::GatewayState;
use web::WebState;

/// Default heartbeat interval told to agents: 5 s (offline after 15 s of silence).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `HOST:PORT`; port 0 picks a free port.
    pub listen: String,
    /// The URL users and agents reach; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    /// SQLite database and keys.
    pub data_dir: PathBuf,
    /// Heartbeat interval told to agents.
    pub heartbeat: Duration,
    /// Longest lifetime a share link may get.
    pub max_link_ttl: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (web/client_ip.rs).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    public_url: String,
    store: Store,
    router: Arc<LocalRouter>,
    shares: Shares,
    heartbeat: Duration,
    trusted_proxies: web::client_ip::TrustedProxies,
}

impl Server {
    /// Opens the store and binds the listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        crate::sys::private_file::ensure_dir(&config.data_dir)?;
        let store = crate::store::open(&config.data_dir)
            .await
            .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
        store.mark_all_offline().await?;
        let listener =
            TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = config
            .public_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let router = Arc::new(LocalRouter::default());
        let shares = Shares::load(store.clone(), &config.data_dir, config.max_link_ttl)
            .await
            .context("cannot load share-link keys")?;
        let trusted_proxies = web::client_ip::TrustedProxies::new(config.trusted_proxies);
        Ok(Self {
            listener,
            local_addr,
            public_url,
            store,
            router,
            shares,
            heartbeat: config.heartbeat,
            trusted_proxies,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL users and agents reach.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The store, for bootstrap steps before serving.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The share-link registry, for bootstrap steps before serving.
    pub fn shares(&self) -> &Shares {
        &self.shares
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let relay = RelayService::new(self.store.clone(), self.router.clone(), self.heartbeat);
        let api =
            ApiService::new(self.store.clone(), self.router.clone(), self.shares.clone(), self.public_url.clone());
        let gateway_state = GatewayState::new(self.shares.clone(), self.router.clone(), &self.public_url);
        let web =
            web::router(WebState::new(self.store.clone(), &self.public_url, gateway_state.asset_url("share.css")));
        let gateway = gateway::router(gateway_state);
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let console = console::router(console::ConsoleState::new(
            self.store.clone(),
            self.shares.clone(),
            self.router.clone(),
            &self.public_url,
            stopping,
        ));
        let maintenance = self.shares.spawn_maintenance();
        let grpc = tonic::service::Routes::new(proto::relay_server::RelayServer::new(relay))
            .add_service(proto::api_server::ApiServer::new(api))
            .into_axum_router();
        let app = http::router(self.store.clone())
            .merge(gateway)
            .merge(web)
            .merge(console)
            .merge(grpc)
            .fallback(http::not_found)
            .layer(axum::Extension(self.trusted_proxies.clone()));
        tracing::info!(url = %self.public_url, addr = %self.local_addr, "serving");
        use axum::serve::ListenerExt;
        let listener = self.listener.tap_io(|tcp| {
            // Keystrokes are tiny writes: never wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        // Event streams never end by themselves: tell them when the server stops.
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        maintenance.abort();
        Ok(served?)
    }
}
