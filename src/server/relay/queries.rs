//! Session queries on one agent stream: numbered requests (`SessionQuery`) whose answers
//! (`SessionReply`) come back on the stream in any order, whose
//! messages `core::convert` turns into session types.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::router::RouteError;
use crate::core::convert;
use crate::core::secret::Secret;
use crate::core::session::{Grant, SessionSummary};
use crate::core::sync::lock;
use crate::proto;

/// How long an agent may take to answer a session query: 10 s.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests waiting for their reply.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<proto::SessionReply>>>,
    next: AtomicU64,
}

impl Pending {
    /// A fresh request number and the receiver its reply will arrive on.
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<proto::SessionReply>) {
        let request = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(request, tx);
        (request, rx)
    }

    /// Forgets a request that timed out or could not be sent.
    pub(crate) fn forget(&self, request: u64) {
        lock(&self.waiting).remove(&request);
    }

    /// Hands a reply to its requester; replies nobody waits for any more are dropped.
    pub(crate) fn answer(&self, reply: proto::SessionReply) {
        if let Some(tx) = lock(&self.waiting).remove(&reply.request) {
            let _ = tx.send(reply);
        }
    }

    /// The stream ended: every requester learns it (its receiver closes).
    pub(crate) fn fail_all(&self) {
        lock(&self.waiting).clear();
    }
}

/// The sessions a reply carries, or the agent's refusal.
pub(crate) fn summaries_of(reply: proto::SessionReply) -> Result<Vec<SessionSummary>, RouteError> {
    if !reply.error.is_empty() {
        return Err(RouteError::NoSuchSession(reply.error));
    }
    Ok(reply.sessions.into_iter().filter_map(convert::summary_of).collect())
}

/// The token an unlock reply carries, or the agent's refusal.
pub(crate) fn grant_of(reply: proto::SessionReply) -> Result<Grant, RouteError> {
    if let Some(d) = &reply.denied {
        return Err(RouteError::Denied(convert::denial_from_wire(d)));
    }
    match reply.unlocked {
        Some(u) => Ok(Grant { token: Secret::new(u.token), expires_unix: u.expires_unix }),
        None if !reply.error.is_empty() => Err(RouteError::NoSuchSession(reply.error)),
        None => Err(RouteError::Unanswered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_reach_their_requester_only() {
        let pending = Pending::default();
        let (a, mut rx_a) = pending.register();
        let (b, mut rx_b) = pending.register();
        assert_ne!(a, b);
        pending.answer(proto::SessionReply { request: b, ..Default::default() });
        assert!(rx_a.try_recv().is_err());
        assert_eq!(rx_b.try_recv().map(|r| r.request).ok(), Some(b));
        pending.fail_all();
        assert!(matches!(rx_a.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
    }

    #[test]
    fn an_agent_refusal_is_no_such_session() {
        let reply = proto::SessionReply { request: 1, error: "no session x".into(), ..Default::default() };
        assert_eq!(summaries_of(reply), Err(RouteError::NoSuchSession("no session x".into())));
    }
}
