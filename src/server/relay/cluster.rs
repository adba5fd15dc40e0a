//! The edge node's router when several nodes share the database: the machine's route decides
//! whether its stream is here (the local router) or on another node, reached over one
//! node-to-node stream per machine (`peer.rs` is the other end). On that stream this node
//! plays relay with the same `AgentConn` it uses for agents, so channels, credit windows,
//! offsets and queries work exactly as for a local stream. A route that turns out stale (the
//! agent moved on) is read again once.
//!
//! The peer streams are `sys::grpc_stream` calls of `Peer.Link`, as the agent's own stream
//! is: a session's frames are encoded straight into the stream's HTTP/2 send queue and the
//! holder's frames are sliced out of h2's buffers, with no body-pipe task or codec between.
//! All streams to one node share one HTTP/2 connection (as tonic's `Channel` did): a node
//! forwarding many machines to another keeps one socket, one TLS session and one connection
//! task for them, and a new machine's stream costs a HEADERS frame instead of a handshake.
//! Each stream keeps its own send queue, so one machine's stall pauses only its own senders.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

use super::outlet::PeerLinkOut;
use super::peer::{EPOCH_HEADER, LINK_PATH, MACHINE_HEADER, NODE_AUTH_HEADER, NODE_HEADER};
use super::registry::{AgentConn, LocalRouter};
use super::router::{RouteError, SessionPort, SessionRouter};
use crate::core::clock::now;
use crate::core::cluster_key::ClusterKey;
use crate::core::ids::MachineId;
use crate::core::secret::Secret;
use crate::core::session::{AttachSpec, CHUNK_BYTES, Grant, OpenSpec, SessionSummary};
use crate::core::sync::lock;
use crate::proto;
use crate::server::metrics::METRICS;
use crate::store::{Route, Store};
use crate::sys::grpc_stream::{self, Client, Connection, Link};

/// Bytes the edge queues on a peer stream before its senders wait: 256 of the largest frame an
/// edge sends (an input chunk). Data on it is covered by credit, so the bound only paces
/// control chatter.
pub(crate) const PEER_QUEUE_BYTES: usize = 256 * CHUNK_BYTES;

/// Routes through the shared store.
pub(crate) struct ClusterRouter {
    local: Arc<LocalRouter>,
    store: Store,
    node: String,
    key: Arc<ClusterKey>,
    /// Open node-to-node streams, by machine.
    peers: Mutex<HashMap<MachineId, Arc<AgentConn>>>,
    /// One HTTP/2 connection per peer node, by advertised URL.
    nodes: Mutex<HashMap<String, Arc<PeerNode>>>,
}

/// One HTTP/2 connection to a peer node. Its task lives while the map or any stream on it
/// holds this.
pub(crate) struct PeerNode {
    client: Client,
    connection: Connection,
}

impl PeerNode {
    /// Connects to the node advertised at `url`.
    pub(crate) async fn connect(url: &str) -> Result<Arc<Self>, tonic::Status> {
        let (client, connection) = grpc_stream::connect(url).await?;
        Ok(Arc::new(Self { client, connection }))
    }

    /// Opens `Peer.Link` with `headers`; the holder answers before reading anything.
    pub(crate) async fn link(
        &self,
        headers: HeaderMap,
    ) -> Result<(Link<proto::AgentFrame>, PeerLinkOut), tonic::Status> {
        self.client.open::<proto::RelayFrame, proto::AgentFrame>(LINK_PATH, headers, None, PEER_QUEUE_BYTES).await
    }
}

impl ClusterRouter {
    /// A router for node `node`, whose own streams are in `local`.
    pub(crate) fn new(local: Arc<LocalRouter>, store: Store, node: String, key: Arc<ClusterKey>) -> Self {
        Self { local, store, node, key, peers: Mutex::default(), nodes: Mutex::default() }
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
        let node = self.node_at(&route.advertise).await?;
        let headers = peer_headers(machine, route.epoch, &self.node, &self.key);
        match open_peer(&node, machine, route.epoch, headers).await {
            Ok(conn) => Ok(conn),
            Err(status) if status.code() == Code::FailedPrecondition => Err(RouteError::Stale),
            Err(status) => {
                tracing::warn!(%machine, node = %route.node, error = %status.message(), "cannot reach the node holding the machine");
                self.forget_node(&route.advertise, &node);
                Err(RouteError::Stale)
            }
        }
    }

    /// The connection to the node advertised at `advertise`: the open one, or a new one.
    async fn node_at(&self, advertise: &str) -> Result<Arc<PeerNode>, RouteError> {
        let open = lock(&self.nodes).get(advertise).filter(|n| !n.connection.is_finished()).cloned();
        if let Some(node) = open {
            return Ok(node);
        }
        let node = PeerNode::connect(advertise).await.map_err(|status| {
            if status.code() == Code::InvalidArgument {
                tracing::error!(%advertise, error = %status.message(), "a node advertises an unusable URL");
                return RouteError::Offline;
            }
            tracing::warn!(%advertise, error = %status.message(), "cannot reach the node holding the machine");
            RouteError::Stale
        })?;
        lock(&self.nodes).insert(advertise.to_string(), node.clone());
        Ok(node)
    }

    /// Drops the connection to `advertise` if it is still `node` (a failed call may mean
    /// the connection is going away); the next stream connects again.
    fn forget_node(&self, advertise: &str, node: &Arc<PeerNode>) {
        let mut nodes = lock(&self.nodes);
        if nodes.get(advertise).is_some_and(|n| Arc::ptr_eq(n, node)) {
            nodes.remove(advertise);
        }
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

/// The metadata of a peer stream: which machine and route epoch, and this node's credential.
pub(crate) fn peer_headers(machine: MachineId, epoch: i64, node: &str, key: &ClusterKey) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("user-agent", concat!("cmdop-server/", env!("CARGO_PKG_VERSION")).to_string());
    put(MACHINE_HEADER, machine.to_string());
    put(EPOCH_HEADER, epoch.to_string());
    put(NODE_HEADER, node.to_string());
    put(NODE_AUTH_HEADER, key.peer_credential(node, now()));
    headers
}

/// Opens `Peer.Link` for `machine` at route `epoch` on `node` and starts reading it: the
/// returned stream stands for the agent's. The holder's status is the error (FAILED_PRECONDITION:
/// it does not hold that stream).
pub(crate) async fn open_peer(
    node: &Arc<PeerNode>,
    machine: MachineId,
    epoch: i64,
    headers: HeaderMap,
) -> Result<Arc<AgentConn>, tonic::Status> {
    let (inbound, out) = node.link(headers).await?;
    let conn = AgentConn::toward_peer(machine, epoch, out.clone());
    METRICS.peer_streams.fetch_add(1, Ordering::Relaxed);
    let reader = PeerReader { conn: conn.clone(), out, _node: node.clone() };
    inbound.deliver_to(reader);
    Ok(conn)
}

/// Dispatches the holding node's frames into the stream's channels as they arrive (in the
/// peer connection's task: no task of its own wakes per frame) until the stream ends; then
/// every session on it is lost (the agent's stream or the holding node went away) and sends
/// on it fail. Holds the connection while the stream lives.
struct PeerReader {
    conn: Arc<AgentConn>,
    out: PeerLinkOut,
    _node: Arc<PeerNode>,
}

impl grpc_stream::Receiver<proto::AgentFrame> for PeerReader {
    fn message(&mut self, frame: proto::AgentFrame) -> Result<(), tonic::Status> {
        let Some(kind) = frame.kind else { return Ok(()) };
        self.conn.dispatch(kind).inspect_err(|status| {
            tracing::warn!(machine = %self.conn.machine(), error = %status.message(), "peer broke the protocol");
        })
    }

    fn ended(self, _end: Result<(), tonic::Status>) {
        self.out.close();
        self.conn.lost();
        METRICS.peer_streams.fetch_sub(1, Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::server::relay::testing::{self, Holder};

    /// An edge node's router (its own store is empty: these tests dial routes directly).
    async fn edge(holder: &Holder) -> (ClusterRouter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).await.unwrap();
        let router = ClusterRouter::new(Arc::default(), store, "edge".into(), holder.key.clone());
        (router, dir)
    }

    fn route(holder: &Holder, epoch: i64) -> Route {
        Route { node: "holder".into(), advertise: holder.url.clone(), epoch }
    }

    #[tokio::test]
    async fn a_holder_without_the_stream_makes_the_route_stale() {
        let holder = testing::holder(Arc::new(LocalRouter::default())).await;
        let (edge, _dir) = edge(&holder).await;
        let machine = MachineId::random();
        let refused = edge.dial(machine, &route(&holder, 4)).await;
        assert_eq!(refused.err(), Some(RouteError::Stale));
        // A refusal is the holder's answer, not a broken connection: the edge keeps it.
        assert_eq!(lock(&edge.nodes).len(), 1);
    }

    #[tokio::test]
    async fn a_peer_stream_ending_loses_its_sessions() {
        let machine = MachineId::random();
        let holders_router = Arc::new(LocalRouter::default());
        let (tx, _agent) = mpsc::channel(16);
        let agent = AgentConn::new(machine, 4, tx);
        holders_router.register(agent.clone());
        let holder = testing::holder(holders_router).await;
        let (edge, _dir) = edge(&holder).await;
        let conn = edge.dial(machine, &route(&holder, 4)).await.unwrap();
        let mut ended = conn.ended();
        assert!(!*ended.borrow());
        agent.lost();
        // Bounded wait for the holder's end of stream to cross the connection.
        tokio::time::timeout(Duration::from_secs(10), ended.wait_for(|e| *e)).await.unwrap().unwrap();
        assert_eq!(conn.list_sessions().await.err(), Some(RouteError::Gone));
    }

    #[tokio::test]
    async fn streams_to_one_node_share_its_connection() {
        let (a, b) = (MachineId::random(), MachineId::random());
        let holders_router = Arc::new(LocalRouter::default());
        for machine in [a, b] {
            holders_router.register(AgentConn::new(machine, 1, mpsc::channel(16).0));
        }
        let holder = testing::holder(holders_router).await;
        let (edge, _dir) = edge(&holder).await;
        edge.dial(a, &route(&holder, 1)).await.unwrap();
        edge.dial(b, &route(&holder, 1)).await.unwrap();
        assert_eq!(lock(&edge.nodes).len(), 1);
    }
}
