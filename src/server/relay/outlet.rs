//! Where an `AgentConn`'s frames go: the queue an agent's stream on this node reads, or the
//! send queue of a `Peer.Link` this (edge) node opened to the node holding the agent. The
//! peer's queue is `sys::grpc_stream`'s, so the task that makes a frame (a browser's
//! keystroke, a credit grant) encodes it straight into the HTTP/2 stream's buffer, with no
//! channel or task between it and the connection.

use tokio::sync::mpsc;

use super::registry::AgentTx;
use super::router::RouteError;
use super::wire::Outbound;
use crate::proto::RelayFrame;
use crate::sys::grpc_stream::{self, TrySendError};

/// Frames toward the holding node on a `Peer.Link` this node opened. Bounded in bytes
/// (`cluster::PEER_QUEUE_BYTES` waiting for the holder's HTTP/2 window).
pub(crate) type PeerLinkOut = grpc_stream::Out<RelayFrame>;

/// The sending side of one agent stream or peer stream.
pub(crate) enum Outlet {
    /// An agent's stream held here: `wire`'s response body reads the queue.
    Agent(AgentTx),
    /// A peer stream toward the node holding the agent.
    Peer(PeerLinkOut),
}

impl Outlet {
    /// Queues a frame, waiting while the queue is full; `Gone` once the stream ended.
    pub(crate) async fn send(&self, frame: RelayFrame) -> Result<(), RouteError> {
        match self {
            Outlet::Agent(tx) => tx.send(Outbound::Frame(frame)).await.map_err(|_| RouteError::Gone),
            Outlet::Peer(out) => out.send(frame).await.map_err(|_| RouteError::Gone),
        }
    }

    /// Queues a frame if there is room now; otherwise hands it back (boxed: the refusal is
    /// the rare path).
    pub(crate) fn try_send(&self, frame: RelayFrame) -> Result<(), Box<RelayFrame>> {
        match self {
            Outlet::Agent(tx) => match tx.try_reserve() {
                Ok(slot) => {
                    slot.send(Outbound::Frame(frame));
                    Ok(())
                }
                Err(_) => Err(Box::new(frame)),
            },
            Outlet::Peer(out) => out.try_send(&frame).map_err(|_| Box::new(frame)),
        }
    }

    /// Queues an item without waiting (from `Drop`, or to end the stream): a full queue
    /// defers it to a task; an ended stream drops it. Toward a peer an `End` carries no
    /// status: the stream just ends.
    pub(crate) fn send_now(&self, item: Outbound<RelayFrame>) {
        match self {
            Outlet::Agent(tx) => {
                if let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(item) {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(item).await;
                    });
                }
            }
            Outlet::Peer(out) => match item.into_frame() {
                Some(frame) if out.try_send(&frame) == Err(TrySendError::Full) => {
                    let out = out.clone();
                    tokio::spawn(async move {
                        let _ = out.send(frame).await;
                    });
                }
                Some(_) => {}
                None => out.close(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tonic::Status;

    use super::*;
    use crate::core::ids::MachineId;
    use crate::proto::{Input, relay_frame};
    use crate::server::relay::cluster::PEER_QUEUE_BYTES;
    use crate::server::relay::registry::{AgentConn, LocalRouter};
    use crate::server::relay::testing;

    fn input(data: Bytes) -> RelayFrame {
        RelayFrame { kind: Some(relay_frame::Kind::Input(Input { channel: 1, data })) }
    }

    #[tokio::test]
    async fn a_peer_stream_whose_holder_stalls_refuses_frames_at_a_bound() {
        let machine = MachineId::random();
        let router = Arc::new(LocalRouter::default());
        // The agent never reads its queue: the holder stops reading the peer stream.
        let (tx, _agent) = mpsc::channel(1);
        router.register(AgentConn::new(machine, 3, tx));
        let holder = testing::holder(router).await;
        let (_link, out, _node) = holder.link(machine, 3).await.unwrap();
        let outlet = Outlet::Peer(out);
        let chunk = Bytes::from(vec![b'k'; 16 * 1024]);
        let mut queued = 0usize;
        // Bounded: the holder's HTTP/2 windows plus this side's buffers are far below this.
        let limit = 64 * 1024 * 1024;
        while queued < limit {
            match outlet.try_send(input(chunk.clone())) {
                Ok(()) => queued += chunk.len(),
                Err(frame) => {
                    assert_eq!(*frame, input(chunk.clone()), "the refused frame comes back");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        assert!(queued < limit, "the queue never filled");
        assert!(queued >= PEER_QUEUE_BYTES, "refused after only {queued} bytes");
        outlet.send_now(Outbound::End(Status::cancelled("test")));
        assert!(matches!(outlet.send(input(chunk)).await, Err(RouteError::Gone)));
    }
}
