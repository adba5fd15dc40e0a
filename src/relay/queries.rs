//! Session queries on one agent stream: numbered requests (`SessionQuery`) whose answers
//! (`SessionReply`) come back on the stream in any order, plus the conversions between the
//! wire's shell-session messages and the transport-free `session` types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::router::RouteError;
use crate::ids::SessionId;
use crate::proto;
use crate::secret::Secret;
use crate::session::{AttachSpec, Attachment, Grant, SessionSummary, ShellTarget};

/// How long an agent may take to answer a session query: 10 s.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests waiting for their reply.
#[derive(Default)]
pub struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<proto::SessionReply>>>,
    next: AtomicU64,
}

// The std Mutex is never held across an `.await`: every critical section is a map operation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pending {
    /// A fresh request number and the receiver its reply will arrive on.
    pub fn register(&self) -> (u64, oneshot::Receiver<proto::SessionReply>) {
        let request = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(request, tx);
        (request, rx)
    }

    /// Forgets a request that timed out or could not be sent.
    pub fn forget(&self, request: u64) {
        lock(&self.waiting).remove(&request);
    }

    /// Hands a reply to its requester; replies nobody waits for any more are dropped.
    pub fn answer(&self, reply: proto::SessionReply) {
        if let Some(tx) = lock(&self.waiting).remove(&reply.request) {
            let _ = tx.send(reply);
        }
    }

    /// The stream ended: every requester learns it (its receiver closes).
    pub fn fail_all(&self) {
        lock(&self.waiting).clear();
    }
}

/// The sessions a reply carries, or the agent's refusal.
pub fn summaries_of(reply: proto::SessionReply) -> Result<Vec<SessionSummary>, RouteError> {
    if !reply.error.is_empty() {
        return Err(RouteError::NoSuchSession(reply.error));
    }
    Ok(reply.sessions.into_iter().filter_map(summary_of).collect())
}

/// The token an unlock reply carries, or the agent's refusal.
pub fn grant_of(reply: proto::SessionReply) -> Result<Grant, RouteError> {
    if let Some(d) = &reply.denied {
        return Err(RouteError::Denied(proto::convert::denial_from_wire(d)));
    }
    match reply.unlocked {
        Some(u) => Ok(Grant { token: Secret::new(u.token), expires_unix: u.expires_unix }),
        None if !reply.error.is_empty() => Err(RouteError::NoSuchSession(reply.error)),
        None => Err(RouteError::Unanswered),
    }
}

/// One wire session as a summary; `None` when its id is not a UUID (a broken agent).
pub fn summary_of(s: proto::ShellSession) -> Option<SessionSummary> {
    Some(SessionSummary {
        id: s.id.parse().ok()?,
        name: Some(s.name).filter(|n| !n.is_empty()),
        persistent: s.persistent,
        created_unix_ms: s.created_unix_ms,
        last_attached_unix_ms: s.last_attached_unix_ms,
        attached: s.attached,
        pid: s.pid,
        output_bytes: s.output_bytes,
    })
}

/// A summary on the wire.
pub fn shell_session(s: &SessionSummary) -> proto::ShellSession {
    proto::ShellSession {
        id: s.id.to_string(),
        name: s.name.clone().unwrap_or_default(),
        persistent: s.persistent,
        created_unix_ms: s.created_unix_ms,
        last_attached_unix_ms: s.last_attached_unix_ms,
        attached: s.attached,
        pid: s.pid,
        output_bytes: s.output_bytes,
    }
}

/// The attachment an `Opened` reports, if it is one (a shell session's id is set).
pub fn attachment_of(o: &proto::Opened) -> Option<Attachment> {
    let id: SessionId = o.session_id.parse().ok()?;
    Some(Attachment {
        id,
        name: Some(o.session_name.clone()).filter(|n| !n.is_empty()),
        persistent: o.persistent,
        created: o.created,
        replay_from: o.replay_from,
        dropped: o.dropped,
    })
}

/// The `Open` of an attach (channel and window are filled in by the caller).
pub fn open_of(spec: &AttachSpec) -> proto::Open {
    let mut open = proto::Open {
        kind: proto::SessionKind::Shell as i32,
        cols: spec.cols.into(),
        rows: spec.rows.into(),
        resume_from: spec.resume_from,
        principal: spec.access.principal.clone(),
        attach_token: spec.access.token.as_ref().map(|t| t.expose().clone()).unwrap_or_default(),
        ..Default::default()
    };
    match &spec.target {
        ShellTarget::New { persistent } => open.persistent = *persistent,
        ShellTarget::Named(name) => {
            open.session_name = name.to_string();
            open.persistent = true;
        }
        ShellTarget::Id(id) => open.session_id = id.to_string(),
    }
    open
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
