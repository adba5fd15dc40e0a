//! Test helpers: a holding node's `Peer.Link` served on 127.0.0.1 (the real `PeerService`
//! behind axum), and what an edge needs to reach it.

use std::sync::Arc;

use http::HeaderMap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Status;

use super::cluster::{PeerNode, peer_headers};
use super::outlet::PeerLinkOut;
use super::peer::{LINK_PATH, PeerService};
use super::registry::LocalRouter;
use crate::core::cluster_key::ClusterKey;
use crate::core::ids::MachineId;
use crate::proto::AgentFrame;
use crate::sys::grpc_stream::Link;
use crate::sys::task::AbortOnDrop;

/// A holding node serving `Peer.Link` for the streams in its router; stops when dropped.
pub(crate) struct Holder {
    pub(crate) url: String,
    pub(crate) key: Arc<ClusterKey>,
    _stop: watch::Sender<bool>,
    _server: AbortOnDrop<()>,
}

/// Serves `router`'s streams to peers holding a new cluster key.
pub(crate) async fn holder(router: Arc<LocalRouter>) -> Holder {
    let key = Arc::new(ClusterKey::from_file(&ClusterKey::new_file().unwrap()).unwrap());
    let (stop, stopping) = watch::channel(false);
    let peer = PeerService::new(router, key.clone());
    let app = axum::Router::new().route(
        LINK_PATH,
        axum::routing::post(move |req: axum::extract::Request| peer.clone().serve_link(req, stopping.clone())),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = AbortOnDrop::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Holder { url, key, _stop: stop, _server: server }
}

impl Holder {
    /// An edge node's metadata for a stream of `machine` at route `epoch`.
    pub(crate) fn headers(&self, machine: MachineId, epoch: i64) -> HeaderMap {
        peer_headers(machine, epoch, "edge", &self.key)
    }

    /// A new connection to this node and a `Peer.Link` on it.
    pub(crate) async fn link(
        &self,
        machine: MachineId,
        epoch: i64,
    ) -> Result<(Link<AgentFrame>, PeerLinkOut, Arc<PeerNode>), Status> {
        let node = PeerNode::connect(&self.url).await?;
        let (link, out) = node.link(self.headers(machine, epoch)).await?;
        Ok((link, out, node))
    }
}
