//! The edge node's router when several nodes share the database: the machine's route decides
//! whether its stream is here (the local router) or on another node, reached over one
//! node-to-node stream per machine (`peer.rs` is the other end). On that stream this node
//! plays relay with the same `AgentConn` it uses for agents, so channels, credit windows,
//! offsets and queries work exactly as for a local stream. A route that turns out stale (the
//! agent moved on) is read again once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::peer::{EPOCH_HEADER, MACHINE_HEADER, NODE_AUTH_HEADER, NODE_HEADER, PEER_QUEUE_FRAMES};
use super::registry::{AgentConn, LocalRouter};
use super::router::{RouteError, SessionPort, SessionRouter};
use super::wire::Outbound;
use crate::core::clock::now;
use crate::core::cluster_key::ClusterKey;
use crate::core::ids::MachineId;
use crate::core::secret::Secret;
use crate::core::session::{AttachSpec, Grant, OpenSpec, SessionSummary};
use crate::core::sync::lock;
use crate::proto::{self, peer_client::PeerClient};
use crate::server::metrics::METRICS;
use crate::store::{Route, Store};

/// Routes through the shared store.
pub(crate) struct ClusterRouter {
    local: Arc<LocalRouter>,
    store: Store,
    node: String,
    key: Arc<ClusterKey>,
    /// Open node-to-node streams, by machine.
    peers: Mutex<HashMap<MachineId, Arc<AgentConn>>>,
    /// One HTTP/2 connection per peer node, by advertised URL.
    channels: Mutex<HashMap<String, Channel>>,
}

impl ClusterRouter {
    /// A router for node `node`, whose own streams are in `local`.
    pub(crate) fn new(local: Arc<LocalRouter>, store: Store, node: String, key: Arc<ClusterKey>) -> Self {
        Self { local, store, node, key, peers: Mutex::default(), channels: Mutex::default() }
    }

    /// The machine's live route, from the store.
    async fn route(&self, machine: MachineId) -> Result<Route, RouteError> {
        match self.store.route(machine, now()).await {
            Ok(Some(route)) => Ok(route),
            Ok(None) => Err(RouteError::Offline),
            Err(e) => {
                tracing::error!(%machine, error = %e, "cannot read the machine's route");
                Err(RouteError::Unanswered)
            }
        }
    }

    /// The stream to drive `machine` through: this node's own, or a peer stream to the
    /// holding node (opened on first use, shared by every session of the machine).
    async fn conn(&self, machine: MachineId) -> Result<(Arc<AgentConn>, bool), RouteError> {
        let route = self.route(machine).await?;
        if route.node == self.node {
            return Ok((self.local.conn_at(machine, route.epoch)?, false));
        }
        let cached = lock(&self.peers).get(&machine).cloned();
        if let Some(conn) = cached.filter(|c| c.epoch() == route.epoch && !*c.ended().borrow()) {
            return Ok((conn, true));
        }
        let conn = self.dial(machine, &route).await?;
        lock(&self.peers).insert(machine, conn.clone());
        Ok((conn, true))
    }

    /// Opens the node-to-node stream for `machine` to the node of `route`.
    async fn dial(&self, machine: MachineId, route: &Route) -> Result<Arc<AgentConn>, RouteError> {
        let channel = self.channel(&route.advertise)?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        // The relay side's queue carries `Outbound`s (an `End` kicks an agent); toward a peer
        // an `End` just ends the stream.
        let outbound = ReceiverStream::new(rx).map_while(Outbound::into_frame);
        let mut request = tonic::Request::new(outbound);
        let meta = request.metadata_mut();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = value.parse() {
                meta.insert(name, v);
            }
        };
        put(MACHINE_HEADER, machine.to_string());
        put(EPOCH_HEADER, route.epoch.to_string());
        put(NODE_HEADER, self.node.clone());
        put(NODE_AUTH_HEADER, self.key.peer_credential(&self.node, now()));
        let inbound = match PeerClient::new(channel).link(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => return Err(RouteError::Stale),
            Err(status) => {
                tracing::warn!(%machine, node = %route.node, error = %status.message(), "cannot reach the node holding the machine");
                return Err(RouteError::Stale);
            }
        };
        let conn = AgentConn::new(machine, route.epoch, tx);
        tokio::spawn(pump(conn.clone(), inbound));
        Ok(conn)
    }

    fn channel(&self, advertise: &str) -> Result<Channel, RouteError> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(advertise) {
            return Ok(c.clone());
        }
        let endpoint = crate::sys::dial::endpoint(advertise).map_err(|e| {
            tracing::error!(%advertise, error = %e, "a node advertises an unusable URL");
            RouteError::Offline
        })?;
        let channel = endpoint.connect_lazy();
        channels.insert(advertise.to_string(), channel.clone());
        Ok(channel)
    }

    /// Runs `op` on the machine's stream, reading the route again once if it was stale.
    async fn with_conn<T, F, Fut>(&self, machine: MachineId, op: F) -> Result<T, RouteError>
    where
        F: Fn(Arc<AgentConn>, bool) -> Fut,
        Fut: Future<Output = Result<T, RouteError>>,
    {
        match self.conn(machine).await {
            Ok((conn, remote)) => return op(conn, remote).await,
            Err(RouteError::Stale) => {}
            Err(e) => return Err(e),
        }
        lock(&self.peers).remove(&machine);
        let (conn, remote) = self.conn(machine).await.map_err(|e| match e {
            RouteError::Stale => RouteError::Gone,
            e => e,
        })?;
        op(conn, remote).await
    }
}

/// Reads the holding node's frames into the stream's channels until it ends; then every
/// session on it is lost (the agent's stream or the holding node went away).
async fn pump(conn: Arc<AgentConn>, mut inbound: tonic::Streaming<proto::AgentFrame>) {
    METRICS.peer_streams.fetch_add(1, Ordering::Relaxed);
    while let Ok(Some(frame)) = inbound.message().await {
        let Some(kind) = frame.kind else { continue };
        if let Err(status) = conn.dispatch(kind) {
            tracing::warn!(machine = %conn.machine(), error = %status.message(), "peer broke the protocol");
            break;
        }
    }
    conn.lost();
    METRICS.peer_streams.fetch_sub(1, Ordering::Relaxed);
}

fn forwarded(remote: bool) {
    if remote {
        METRICS.forwarded_sessions.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl SessionRouter for ClusterRouter {
    async fn open(&self, machine: MachineId, spec: OpenSpec) -> Result<SessionPort, RouteError> {
        self.with_conn(machine, |conn, remote| {
            let spec = spec.clone();
            async move {
                forwarded(remote);
                conn.open(spec).await
            }
        })
        .await
    }

    async fn attach(&self, machine: MachineId, spec: AttachSpec) -> Result<SessionPort, RouteError> {
        self.with_conn(machine, |conn, remote| {
            let spec = spec.clone();
            async move {
                forwarded(remote);
                conn.attach(&spec).await
            }
        })
        .await
    }

    async fn list_sessions(&self, machine: MachineId) -> Result<Vec<SessionSummary>, RouteError> {
        self.with_conn(machine, |conn, _| async move { conn.list_sessions().await }).await
    }

    async fn kill_session(&self, machine: MachineId, session: &str) -> Result<SessionSummary, RouteError> {
        self.with_conn(machine, |conn, _| async move { conn.kill_session(session).await }).await
    }

    async fn unlock(
        &self,
        machine: MachineId,
        principal: &str,
        source: &str,
        password: Secret<String>,
    ) -> Result<Grant, RouteError> {
        self.with_conn(machine, |conn, _| {
            let password = password.clone();
            async move { conn.unlock(principal, source, password).await }
        })
        .await
    }

    async fn job(&self, machine: MachineId, query: proto::JobQuery) -> Result<proto::JobReport, RouteError> {
        self.with_conn(machine, |conn, _| {
            let query = query.clone();
            async move { conn.job(query).await }
        })
        .await
    }

    async fn is_connected(&self, machine: MachineId) -> bool {
        self.route(machine).await.is_ok()
    }
}
