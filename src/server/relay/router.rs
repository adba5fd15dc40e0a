//! The routing interface: how a consumer reaches a session on a machine by id.
//!
//! `LocalRouter` (relay/registry.rs) maps a machine id to the agent stream held by this
//! process; `ClusterRouter` (relay/cluster.rs) looks the machine's route up in the shared store
//! and, when another node holds the stream, hops there over a node-to-node stream. Consumers
//! hold an `Arc<dyn SessionRouter>` and do not know which.

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::core::ids::MachineId;
use crate::core::secret::Secret;
use crate::core::session::{AttachSpec, Denial, Grant, OpenSpec, OutputStream, SessionEvent, SessionSummary};
use crate::proto;

/// Why a session could not be opened or driven.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum RouteError {
    /// No agent stream for the machine.
    #[error("machine is offline: its agent is not connected")]
    Offline,
    /// The stream dropped (or the session ended) while we were talking to it.
    #[error("the machine went away: its agent's connection dropped")]
    Gone,
    /// The agent has no such shell session (the agent's message says which).
    #[error("{0}")]
    NoSuchSession(String),
    /// The agent did not answer a session query in time.
    #[error("the machine did not answer in time")]
    Unanswered,
    /// The machine's attach password refused it.
    #[error("{0}")]
    Denied(Denial),
    /// The route named a stream this node no longer holds (the agent moved): read it again.
    #[error("the machine moved to another node; try again")]
    Stale,
    /// An ask to an agent running without `--ask-handler`.
    #[error("the machine has no ask handler")]
    NoAskHandler,
}

/// Drives one session. Every method is cheap; `input` waits for the agent's input credit.
#[async_trait]
pub(crate) trait SessionControl: Send + Sync {
    /// Sends bytes to the process's stdin/PTY, waiting for input credit as needed.
    async fn input(&self, data: Bytes) -> Result<(), RouteError>;
    /// Sends `data` at once when that needs no waiting (credit and queue room are there), or
    /// gives it back for `input`. A keystroke's common path, without `input`'s boxed future.
    fn try_input(&self, data: Bytes) -> Option<Bytes> {
        Some(data)
    }
    /// Tells the agent the consumer has taken `bytes` of output: grants that much credit.
    async fn consumed(&self, bytes: usize) -> Result<(), RouteError>;
    /// Resizes the PTY.
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RouteError>;
    /// Sends a POSIX signal to the process group.
    async fn signal(&self, signo: i32) -> Result<(), RouteError>;
    /// Ends the session (the consumer left). Idempotent; also done on drop of the port.
    /// A persistent shell session only loses this attachment.
    fn close(&self);
    /// Leaves a shell session running: this attachment ends, the session stays (a one-shot
    /// one for a short grace, so a dropped consumer can reattach by id). Idempotent; after it
    /// the port's events end.
    fn detach(&self);
    /// Output goes through `lane` from now on (`None`: as events again).
    fn set_output_lane(&self, lane: Option<std::sync::Arc<dyn OutputLane>>);
}

/// Takes a session's output in the task that receives it from the agent's stream, instead of
/// as `Output` events: a link socket writes it to the browser from there while its pump has
/// nothing else to do, which saves the pump's wake-up per keystroke's echo
/// (docs/performance.md, issue 18).
pub(crate) trait OutputLane: Send + Sync {
    /// Takes the output `data` at `offset`, or sends it on `events` as its `Output` event (the
    /// order of the two is the lane's to keep). Called in the output's order; never waits.
    fn output(&self, stream: OutputStream, offset: u64, data: Bytes, events: &mpsc::UnboundedSender<SessionEvent>);
}

/// A consumer's end of one session: ordered events plus the control handle.
pub(crate) struct SessionPort {
    /// Events, in order; ends after `Exited` or `Lost`.
    pub(crate) events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Drives the session.
    pub(crate) control: std::sync::Arc<dyn SessionControl>,
}

impl Drop for SessionPort {
    fn drop(&mut self) {
        self.control.close();
    }
}

/// Finds the machine's stream and opens sessions on it.
#[async_trait]
pub(crate) trait SessionRouter: Send + Sync {
    /// Opens a session; events start with `Opened` or end at once with `Exited`/`Lost`.
    async fn open(&self, machine: MachineId, spec: OpenSpec) -> Result<SessionPort, RouteError>;
    /// Attaches to a shell session (new, named or by id); events start with `Opened`
    /// carrying the `Attachment`, or end at once with `Exited` (e.g. no such session).
    async fn attach(&self, machine: MachineId, spec: AttachSpec) -> Result<SessionPort, RouteError>;
    /// The machine's running shell sessions.
    async fn list_sessions(&self, machine: MachineId) -> Result<Vec<SessionSummary>, RouteError>;
    /// Ends the shell session with this id or name; returns what it was.
    async fn kill_session(&self, machine: MachineId, session: &str) -> Result<SessionSummary, RouteError>;
    /// Checks the machine's attach password for `principal` (`user:…`, `link:…`) typed at
    /// `source` (`ip:…`, or the principal); the agent answers with a token for later opens or
    /// `RouteError::Denied`, and backs off per principal and per source.
    async fn unlock(
        &self,
        machine: MachineId,
        principal: &str,
        source: &str,
        password: Secret<String>,
    ) -> Result<Grant, RouteError>;
    /// Starts, reads, pages or cancels a job on the machine (relay.proto, "Jobs"). The agent
    /// may take `query.wait_ms` to answer; the router waits that long plus its usual margin.
    async fn job(&self, machine: MachineId, query: proto::JobQuery) -> Result<proto::JobReport, RouteError>;
    /// Whether the machine has a live stream reachable from here (on any node).
    async fn is_connected(&self, machine: MachineId) -> bool;
}
