//! The holding node's side of node-to-node forwarding: the `Peer` gRPC service.
//!
//! An edge node (one that got a browser, CLI or API call for a machine whose agent stream is
//! held here) opens `Peer.Link` for that machine and speaks to it as a relay speaks to an agent.
//! This node checks only that the caller holds the cluster key and that the route's epoch is
//! the stream it holds (the edge authenticated, authorised and audited the user), then pipes
//! each channel to the agent's stream through the ordinary `SessionPort`: the agent gets output
//! credit only as the edge grants it, and the edge gets input credit only as the agent takes
//! input, so this node holds at most one window per session.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::registry::{AgentConn, LocalRouter};
use super::router::{SessionControl, SessionPort};
use crate::core::clock::now;
use crate::core::cluster_key::ClusterKey;
use crate::core::convert;
use crate::core::ids::MachineId;
use crate::core::session::{Ending, Exit, INPUT_WINDOW_BYTES, SessionEvent};
use crate::proto::{self, agent_frame, relay_frame};
use crate::server::metrics::METRICS;
use crate::sys::task::AbortOnDrop;

/// Metadata naming the machine a peer stream is for.
pub(crate) const MACHINE_HEADER: &str = "x-cmdop-machine";
/// Metadata naming the route epoch the edge read.
pub(crate) const EPOCH_HEADER: &str = "x-cmdop-epoch";
/// Metadata naming the calling node.
pub(crate) const NODE_HEADER: &str = "x-cmdop-node";
/// Metadata proving the caller holds the cluster key (`core::cluster_key`).
pub(crate) const NODE_AUTH_HEADER: &str = "x-cmdop-node-auth";
/// Frames queued on a peer stream, either way, before the sender waits (data is covered by
/// credit, so the bound only paces control chatter).
pub(crate) const PEER_QUEUE_FRAMES: usize = 256;

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

type FrameStream = Pin<Box<dyn Stream<Item = Result<proto::AgentFrame, Status>> + Send>>;

#[tonic::async_trait]
impl proto::peer_server::Peer for PeerService {
    type LinkStream = FrameStream;

    async fn link(&self, req: Request<Streaming<proto::RelayFrame>>) -> Result<Response<FrameStream>, Status> {
        let caller = self.authenticate(req.metadata())?;
        let meta = req.metadata();
        let text = |name: &str| meta.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let machine: MachineId =
            text(MACHINE_HEADER).parse().map_err(|_| Status::invalid_argument("peer stream names no machine"))?;
        let epoch: i64 =
            text(EPOCH_HEADER).parse().map_err(|_| Status::invalid_argument("peer stream names no epoch"))?;
        let conn = self
            .router
            .conn_at(machine, epoch)
            .map_err(|_| Status::failed_precondition("stale route: this node does not hold that stream"))?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        let span = tracing::info_span!("peer_stream", %machine, from = %caller);
        tokio::spawn(pipe(conn, req.into_inner(), tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type Out = mpsc::Sender<Result<proto::AgentFrame, Status>>;

/// One channel of a peer stream: its control, its input queue, and the task pumping its events.
struct Piped {
    control: Arc<dyn SessionControl>,
    input: mpsc::UnboundedSender<Bytes>,
    _tasks: [AbortOnDrop<()>; 2],
}

/// Serves one peer stream until the edge closes it or the agent's stream ends.
async fn pipe(conn: Arc<AgentConn>, mut inbound: Streaming<proto::RelayFrame>, out: Out) {
    METRICS.peer_streams.fetch_add(1, Ordering::Relaxed);
    let mut channels: HashMap<u64, Piped> = HashMap::new();
    let mut ended = conn.ended();
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let end = loop {
        let frame = tokio::select! {
            frame = inbound.message() => frame,
            Some(channel) = finished.recv() => {
                channels.remove(&channel);
                continue;
            }
            _ = ended.wait_for(|e| *e) => break "the agent's stream ended",
        };
        let kind = match frame {
            Ok(Some(proto::RelayFrame { kind: Some(kind) })) => kind,
            Ok(Some(_)) => continue,
            Ok(None) => break "the edge closed the stream",
            Err(_) => break "the edge's stream broke",
        };
        handle(&conn, kind, &mut channels, &out, &finished_tx).await;
    };
    if *ended.borrow() {
        let _ = out.send(Err(Status::unavailable("the machine's agent stream ended"))).await;
    }
    drop(channels);
    METRICS.peer_streams.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(reason = end, "peer stream ended");
}

/// Channels whose events ended report here, so the stream forgets them.
type Finished = mpsc::UnboundedSender<u64>;

async fn handle(
    conn: &Arc<AgentConn>,
    kind: relay_frame::Kind,
    channels: &mut HashMap<u64, Piped>,
    out: &Out,
    finished: &Finished,
) {
    match kind {
        relay_frame::Kind::Open(open) => {
            let channel = open.channel;
            match conn.open_channel(open).await {
                Ok(port) => {
                    channels.insert(channel, start(channel, port, out, finished.clone()));
                }
                Err(e) => {
                    let exit =
                        Exit { ending: Ending::Error(e.to_string()), timed_out: false, duration: Duration::ZERO };
                    let closed = convert::closed_of(channel, &exit);
                    let _ = out.send(Ok(frame(agent_frame::Kind::Closed(closed)))).await;
                }
            }
        }
        relay_frame::Kind::Input(i) => {
            if let Some(p) = channels.get(&i.channel) {
                let _ = p.input.send(i.data);
            }
        }
        relay_frame::Kind::Credit(c) => {
            if let Some(p) = channels.get(&c.channel) {
                let _ = p.control.consumed(c.bytes as usize).await;
            }
        }
        relay_frame::Kind::Resize(r) => {
            if let Some(p) = channels.get(&r.channel) {
                let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                let _ = p.control.resize(clamp(r.cols), clamp(r.rows)).await;
            }
        }
        relay_frame::Kind::Signal(s) => {
            if let Some(p) = channels.get(&s.channel) {
                let _ = p.control.signal(s.signo).await;
            }
        }
        // A close keeps the pipe until the agent's `Closed` has gone out (the edge waits for
        // it); a detach ends the channel on both sides at once.
        relay_frame::Kind::Close(c) if c.detach => {
            if let Some(p) = channels.remove(&c.channel) {
                p.control.detach();
            }
        }
        relay_frame::Kind::Close(c) => {
            if let Some(p) = channels.get(&c.channel) {
                p.control.close();
            }
        }
        relay_frame::Kind::SessionQuery(q) => {
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
                let _ = out.send(Ok(frame(agent_frame::Kind::SessionReply(reply)))).await;
            });
        }
        relay_frame::Kind::Welcome(_) => {}
    }
}

/// Starts piping one channel: events out to the edge, input in to the agent (acknowledged to
/// the edge as input credit once the agent took it).
fn start(channel: u64, port: SessionPort, out: &Out, finished: Finished) -> Piped {
    let control = port.control.clone();
    let (input, mut queued) = mpsc::unbounded_channel::<Bytes>();
    let writer = {
        let (control, out) = (control.clone(), out.clone());
        AbortOnDrop::spawn(async move {
            while let Some(data) = queued.recv().await {
                let bytes = u32::try_from(data.len()).unwrap_or(u32::MAX);
                if control.input(data).await.is_err() {
                    return;
                }
                let credit = proto::Credit { channel, bytes };
                if out.send(Ok(frame(agent_frame::Kind::Credit(credit)))).await.is_err() {
                    return;
                }
            }
        })
    };
    let out = out.clone();
    let reader = AbortOnDrop::spawn(async move {
        forward_events(channel, port, out).await;
        let _ = finished.send(channel);
    });
    Piped { control, input, _tasks: [writer, reader] }
}

/// The channel's events, as the agent would have sent them.
async fn forward_events(channel: u64, mut port: SessionPort, out: Out) {
    while let Some(event) = port.events.recv().await {
        let kind = match event {
            SessionEvent::Opened { pid, attachment } => {
                agent_frame::Kind::Opened(convert::opened_of(channel, pid, INPUT_WINDOW_BYTES, attachment.as_ref()))
            }
            SessionEvent::Output { stream, offset, data } => agent_frame::Kind::Output(proto::Output {
                channel,
                stream: convert::output_stream_to_wire(stream) as i32,
                offset,
                data,
            }),
            SessionEvent::Exited(exit) => agent_frame::Kind::Closed(convert::closed_of(channel, &exit)),
            // The agent's stream dropped: `pipe` ends the whole peer stream, which the edge
            // reads as every session on it lost.
            SessionEvent::Lost => return,
        };
        if out.send(Ok(frame(kind))).await.is_err() {
            return;
        }
    }
}

fn frame(kind: agent_frame::Kind) -> proto::AgentFrame {
    proto::AgentFrame { kind: Some(kind) }
}
