//! The holding node's side of node-to-node forwarding: the `Peer` gRPC service.
//!
//! An edge node (one that got a browser, CLI or API call for a machine whose agent stream is
//! held here) opens `Peer.Link` for that machine and speaks to it as a relay speaks to an agent.
//! `Peer.Link` is this module's own route (`LINK_PATH`, framed by `wire`), not a tonic service.
//! This node checks only that the caller holds the cluster key and that the route's epoch is
//! the stream it holds (the edge authenticated, authorised and audited the user), then routes
//! frames: the edge's to the agent and the agent's back, each renumbered
//! (`registry::Forwarder`), with no task or queue per session. The credit frames pass through
//! too, so the agent gets output credit only as the edge grants it and the edge input credit
//! only as the agent grants it: this node holds at most one window per session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::Span;

use super::registry::{AgentConn, LocalRouter, PeerTx};
use super::wire::{self, MessageReader, Outbound};
use crate::core::clock::now;
use crate::core::cluster_key::ClusterKey;
use crate::core::convert;
use crate::core::ids::MachineId;
use crate::core::session::{Ending, Exit};
use crate::proto::{self, agent_frame, relay_frame};
use crate::server::http2::{Pump, Served};
use crate::server::metrics::METRICS;
use crate::sys::task::WhenWoken;

/// The HTTP/2 path of `Peer.Link`, served by `PeerService::serve_link` ahead of tonic.
pub(crate) const LINK_PATH: &str = "/cmdop.relay.v1.Peer/Link";
/// Metadata naming the machine a peer stream is for.
pub(crate) const MACHINE_HEADER: &str = "x-cmdop-machine";
/// Metadata naming the route epoch the edge read.
pub(crate) const EPOCH_HEADER: &str = "x-cmdop-epoch";
/// Metadata naming the calling node.
pub(crate) const NODE_HEADER: &str = "x-cmdop-node";
/// Metadata proving the caller holds the cluster key (`core::cluster_key`).
pub(crate) const NODE_AUTH_HEADER: &str = "x-cmdop-node-auth";

/// The `Peer` service of this node.
#[derive(Clone)]
pub(crate) struct PeerService {
    router: Arc<LocalRouter>,
    key: Arc<ClusterKey>,
}

impl PeerService {
    /// Pipes peer streams to the agent streams in `router`, for callers holding `key`.
    pub(crate) fn new(router: Arc<LocalRouter>, key: Arc<ClusterKey>) -> Self {
        Self { router, key }
    }

    fn authenticate(&self, meta: &MetadataMap) -> Result<String, Status> {
        let text = |name: &str| meta.get(name).and_then(|v| v.to_str().ok());
        let (Some(node), Some(credential)) = (text(NODE_HEADER), text(NODE_AUTH_HEADER)) else {
            return Err(Status::unauthenticated("node-to-node calls need a node credential"));
        };
        if !self.key.verify_peer(node, credential, now()) {
            return Err(Status::unauthenticated("node credential rejected: every node needs the same cluster key"));
        }
        Ok(node.to_string())
    }
}

impl PeerService {
    /// Serves one `Peer.Link` call with `wire`'s framing (the hop of every forwarded
    /// keystroke); the stream ends UNAVAILABLE when `stopping` turns true.
    pub(crate) async fn serve_link(
        self,
        req: axum::http::Request<Body>,
        stopping: watch::Receiver<bool>,
    ) -> axum::http::Response<Body> {
        wire::serve(req, stopping, |meta, inbound| std::future::ready(self.open_link(&meta, inbound))).await
    }

    /// Opens one `Peer.Link` call on our own HTTP/2 connection, which runs its pipe.
    pub(crate) async fn open_stream(self, req: axum::http::Request<Body>, stopping: watch::Receiver<bool>) -> Served {
        wire::open(req, stopping, |meta, inbound| std::future::ready(self.open_link(&meta, inbound))).await
    }

    /// Checks the caller and the route's epoch; returns the queue of frames toward the edge
    /// and the stream's pipe.
    fn open_link(
        &self,
        meta: &MetadataMap,
        inbound: MessageReader<proto::RelayFrame>,
    ) -> Result<(mpsc::UnboundedReceiver<Outbound<proto::AgentFrame>>, Pump), Status> {
        let caller = self.authenticate(meta)?;
        let text = |name: &str| meta.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let machine: MachineId =
            text(MACHINE_HEADER).parse().map_err(|_| Status::invalid_argument("peer stream names no machine"))?;
        let epoch: i64 =
            text(EPOCH_HEADER).parse().map_err(|_| Status::invalid_argument("peer stream names no epoch"))?;
        let conn = self
            .router
            .conn_at(machine, epoch)
            .map_err(|_| Status::failed_precondition("stale route: this node does not hold that stream"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("peer_stream", %machine, from = %caller);
        Ok((rx, Box::pin(pipe(conn, inbound, tx, span))))
    }
}

/// Serves one peer stream until the edge closes it or the agent's stream ends; logs how it
/// ended in `span` (entered only then: entering a span on every poll costs every keystroke).
/// The agent's end is polled only when it fired, not on every frame's wake-up.
async fn pipe(conn: Arc<AgentConn>, mut inbound: MessageReader<proto::RelayFrame>, out: PeerTx, span: Span) {
    METRICS.peer_streams.fetch_add(1, Ordering::Relaxed);
    let forwarder = conn.forwarder(out.clone());
    let mut ended = conn.ended();
    let mut agent_gone = WhenWoken::new(async move {
        // An error means the agent's stream is gone as well.
        let _ = ended.wait_for(|e| *e).await;
    });
    let end = loop {
        let frame = tokio::select! {
            frame = inbound.message() => frame,
            () = &mut agent_gone => break "the agent's stream ended",
        };
        let kind = match frame {
            Ok(Some(proto::RelayFrame { kind: Some(kind) })) => kind,
            Ok(Some(_)) => continue,
            Ok(None) => break "the edge closed the stream",
            Err(_) => break "the edge's stream broke",
        };
        match kind {
            relay_frame::Kind::SessionQuery(q) => answer(&conn, q, &out),
            relay_frame::Kind::Open(open) => {
                let channel = open.channel;
                if let Err(e) = forwarder.relay(relay_frame::Kind::Open(open)).await {
                    let exit =
                        Exit { ending: Ending::Error(e.to_string()), timed_out: false, duration: Duration::ZERO };
                    let closed = convert::closed_of(channel, &exit);
                    let _ =
                        out.send(Outbound::Frame(proto::AgentFrame { kind: Some(agent_frame::Kind::Closed(closed)) }));
                }
            }
            // A failure here means the agent's stream is gone: `ended` ends the loop.
            kind => {
                let _ = forwarder.relay(kind).await;
            }
        }
    };
    if *conn.ended().borrow() {
        let _ = out.send(Outbound::End(Status::unavailable("the machine's agent stream ended")));
    }
    drop(forwarder);
    METRICS.peer_streams.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(parent: &span, reason = end, "peer stream ended");
}

/// Answers a session query of the edge through the agent, in a task of its own (the agent may
/// hold a job's answer for a while).
fn answer(conn: &Arc<AgentConn>, q: proto::SessionQuery, out: &PeerTx) {
    let (conn, out) = (conn.clone(), out.clone());
    tokio::spawn(async move {
        let reply = match q.op {
            Some(op) => conn.query(op).await.map(|r| proto::SessionReply { request: q.request, ..r }),
            None => Ok(proto::SessionReply { request: q.request, ..Default::default() }),
        };
        let reply = reply.unwrap_or_else(|e| proto::SessionReply {
            request: q.request,
            error: e.to_string(),
            ..Default::default()
        });
        let _ = out.send(Outbound::Frame(proto::AgentFrame { kind: Some(agent_frame::Kind::SessionReply(reply)) }));
    });
}
