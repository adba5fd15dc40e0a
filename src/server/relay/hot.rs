//! The hot streams as our HTTP/2 connections serve them: `Relay.Link` and `Peer.Link` are
//! opened in a task of their own and then run in the connection's task (`server::http2`).

use axum::body::Body;
use http::{Method, Request};
use tokio::sync::watch;

use super::peer::{self, PeerService};
use super::service::{self, RelayService};
use crate::server::http2::{HotRoutes, Opening};

/// The hot streams of this node: `Peer.Link` only when it has a cluster key.
pub(crate) struct HotStreams {
    relay: RelayService,
    peer: Option<PeerService>,
    /// Turns true when the server stops: the streams end UNAVAILABLE.
    stopping: watch::Receiver<bool>,
}

impl HotStreams {
    pub(crate) fn new(relay: RelayService, peer: Option<PeerService>, stopping: watch::Receiver<bool>) -> Self {
        Self { relay, peer, stopping }
    }
}

impl HotRoutes for HotStreams {
    fn open(&self, req: Request<Body>) -> Result<Opening, Box<Request<Body>>> {
        // Other methods go to the router, which answers 405 as for any POST-only route.
        if req.method() != Method::POST {
            return Err(Box::new(req));
        }
        let stopping = self.stopping.clone();
        match (req.uri().path(), &self.peer) {
            (service::LINK_PATH, _) => Ok(Box::pin(self.relay.clone().open_stream(req, stopping))),
            (peer::LINK_PATH, Some(peer)) => Ok(Box::pin(peer.clone().open_stream(req, stopping))),
            _ => Err(Box::new(req)),
        }
    }
}
