//! The `Relay` gRPC service: enrollment and the agents' long-lived streams.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::registry::{AgentConn, LocalRouter};
use super::wire::{self, MessageReader, Outbound};
use crate::core::ids::MachineId;
use crate::core::secret::{self, prefix};
use crate::proto::{self, agent_frame, relay_frame};
use crate::server::grpc::{bearer, internal};
use crate::server::http2::{Pump, Served};
use crate::store::{EnrollError, MachineInfo, Store};
use crate::sys::task::WakeFilter;

/// Frames queued toward one agent before the sender waits (control chatter only; data is
/// covered by credit).
const AGENT_QUEUE_FRAMES: usize = 256;
/// The HTTP/2 path of `Relay.Link`, served by `RelayService::serve_link` ahead of tonic.
pub(crate) const LINK_PATH: &str = "/cmdop.relay.v1.Relay/Link";
/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay service's state.
#[derive(Clone)]
pub(crate) struct RelayService {
    store: Store,
    router: Arc<LocalRouter>,
    heartbeat: Duration,
    /// This node's id, written into the routes of the streams it holds.
    node: String,
}

impl RelayService {
    /// A relay of node `node` over `store` registering streams in `router`; agents heartbeat
    /// every `heartbeat`.
    pub(crate) fn new(store: Store, router: Arc<LocalRouter>, heartbeat: Duration, node: String) -> Self {
        Self { store, router, heartbeat, node }
    }

    async fn authenticate(&self, meta: &MetadataMap) -> Result<MachineId, Status> {
        let token = bearer(meta).ok_or_else(|| Status::unauthenticated("missing machine credential"))?;
        let machine = self
            .store
            .machine_by_credential(&secret::hash_token(token))
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::unauthenticated(
                    "machine credential rejected (revoked or unknown): re-enroll with a token from `cmdop fleet token create`",
                )
            })?;
        Ok(machine.id)
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<proto::RelayFrame, Status>> + Send>>;

#[tonic::async_trait]
impl proto::relay_server::Relay for RelayService {
    async fn enroll(&self, req: Request<proto::EnrollRequest>) -> Result<Response<proto::EnrollResponse>, Status> {
        let req = req.into_inner();
        let credential = secret::new_token(prefix::MACHINE);
        let info = MachineInfo { hostname: req.hostname, display_name: req.display_name, ..Default::default() };
        let machine = self
            .store
            .enroll_machine(&secret::hash_token(&req.token), &secret::hash_token(credential.expose()), &info)
            .await
            .map_err(|e| match e {
                EnrollError::Store(e) => internal(e),
                e => Status::permission_denied(e.to_string()),
            })?;
        tracing::info!(machine = %machine.id, hostname = %info.hostname, "machine enrolled");
        let machine_id = machine.id.to_string();
        let audit = crate::store::AuditEvent {
            actor: &machine_id,
            action: "machine.enroll",
            surface: "",
            fleet_id: Some(machine.fleet_id.to_string()),
            machine_id: Some(machine_id.clone()),
            ..Default::default()
        };
        self.store.audit(audit).await.map_err(internal)?;
        let fleet = String::new();
        Ok(Response::new(proto::EnrollResponse { machine_id, credential: credential.expose().clone(), fleet }))
    }

    type LinkStream = FrameStream;

    /// Never reached: `LINK_PATH` is routed to `RelayService::serve_link` ahead of tonic.
    async fn link(&self, _req: Request<Streaming<proto::AgentFrame>>) -> Result<Response<FrameStream>, Status> {
        Err(Status::unimplemented("Relay.Link is served by the relay's own route"))
    }
}

impl RelayService {
    /// Serves one `Relay.Link` call: gRPC on the wire, framed by `wire` instead of tonic's
    /// codec layers (this is every keystroke's path). The stream ends UNAVAILABLE when
    /// `stopping` turns true.
    pub(crate) async fn serve_link(
        self,
        req: axum::http::Request<Body>,
        stopping: watch::Receiver<bool>,
    ) -> axum::http::Response<Body> {
        wire::serve(req, stopping, |meta, inbound| async move { self.open_link(meta, inbound).await }).await
    }

    /// Opens one `Relay.Link` call on our own HTTP/2 connection, which runs its pump.
    pub(crate) async fn open_stream(self, req: axum::http::Request<Body>, stopping: watch::Receiver<bool>) -> Served {
        wire::open(req, stopping, |meta, inbound| async move { self.open_link(meta, inbound).await }).await
    }

    /// Authenticates the machine, waits for its hello and registers the stream; returns the
    /// queue of frames toward the agent and the stream's pump.
    async fn open_link(
        &self,
        meta: MetadataMap,
        mut inbound: MessageReader<proto::AgentFrame>,
    ) -> Result<(mpsc::Receiver<Outbound<proto::RelayFrame>>, Pump), Status> {
        let machine = self.authenticate(&meta).await?;
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(proto::AgentFrame { kind: Some(agent_frame::Kind::Hello(h)) }))) => h,
            Ok(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument("the first frame of a stream must be hello"));
            }
        };
        let info =
            MachineInfo { hostname: hello.hostname, display_name: hello.display_name, os: hello.os, arch: hello.arch };
        self.store.machine_connected(machine, &info).await.map_err(internal)?;
        // The route goes in before the stream is usable: a newer epoch than any other node's
        // stream of this machine, so every node now routes to this one.
        let epoch = self.store.claim_route(machine, &self.node).await.map_err(internal)?;
        let (tx, rx) = mpsc::channel(AGENT_QUEUE_FRAMES);
        let welcome = proto::Welcome {
            machine_id: machine.to_string(),
            heartbeat_interval_ms: u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX),
        };
        let _ = tx.send(Outbound::Frame(proto::RelayFrame { kind: Some(relay_frame::Kind::Welcome(welcome)) })).await;
        let conn = AgentConn::new(machine, epoch, tx);
        if let Some(old) = self.router.register(conn.clone()) {
            old.kick(Status::aborted("replaced by a newer connection of the same machine"));
        }
        tracing::info!(%machine, epoch, hostname = %info.hostname, version = %hello.agent_version, "agent connected");
        Ok((rx, Box::pin(self.clone().pump(conn, inbound))))
    }

    /// Reads the agent's frames until the stream ends, misses three heartbeats or breaks the
    /// protocol; then releases its route and tells every session it is lost. Heartbeats stay
    /// in memory: the database sees connects and disconnects, never beats. How the stream
    /// ended is logged once, at the end, in a span naming the machine (entered only then:
    /// nothing logs per frame, and entering a span on every poll costs every keystroke).
    async fn pump(self, conn: Arc<AgentConn>, inbound: MessageReader<proto::AgentFrame>) {
        let end = self.read_frames(&conn, inbound).await;
        let span = tracing::info_span!("agent_stream", machine = %conn.machine());
        self.end_stream(conn, end).instrument(span).await;
    }

    /// Dispatches the agent's frames until the stream ends; how it ended.
    async fn read_frames(&self, conn: &AgentConn, mut inbound: MessageReader<proto::AgentFrame>) -> StreamEnd {
        let mut silence = Silence::new(self.heartbeat * 3);
        loop {
            // The frame first: a stream that keeps sending is by definition not silent.
            let message = tokio::select! {
                biased;
                message = inbound.message() => message,
                () = silence.expired() => break StreamEnd::Gone("missed three heartbeats".to_string()),
            };
            let frame = match message {
                Err(e) => break StreamEnd::Gone(format!("stream error: {}", e.message())),
                Ok(None) => break StreamEnd::Gone("stream closed".to_string()),
                Ok(Some(frame)) => frame,
            };
            silence.heard();
            let Some(kind) = frame.kind else {
                conn.kick(Status::invalid_argument("malformed frame: no payload"));
                break StreamEnd::Violation("malformed frame: no payload".to_string());
            };
            if let Err(status) = conn.dispatch(kind) {
                let error = status.message().to_string();
                conn.kick(status);
                break StreamEnd::Violation(error);
            }
        }
    }

    /// Releases an ended stream's route, tells its sessions, and logs how it ended.
    async fn end_stream(&self, conn: Arc<AgentConn>, end: StreamEnd) {
        let machine = conn.machine();
        conn.lost();
        if self.router.unregister(&conn) {
            // Only this stream's epoch: a newer stream of the machine (here or on another
            // node) keeps its route.
            let released = self.store.release_route(machine, conn.epoch()).await;
            let recorded = match released {
                Ok(true) => self.store.machine_disconnected(machine).await,
                other => other.map(|_| ()),
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not record the machine offline");
            }
        }
        match end {
            StreamEnd::Gone(reason) => tracing::info!(%reason, "agent disconnected"),
            StreamEnd::Violation(error) => tracing::warn!(%error, "agent broke the protocol; stream closed"),
        }
    }
}

/// How an agent's stream ended.
enum StreamEnd {
    /// Closed, broken or silent: the machine went away.
    Gone(String),
    /// The agent broke the protocol and was disconnected.
    Violation(String),
}

/// The stream's silence deadline: `limit` after the last frame. A `timeout` around every
/// read would put a timer into the runtime's wheel and take it out again for every frame
/// (every keystroke); this timer is armed once and, when it fires, moved to `limit` after
/// the last frame heard, so a busy stream costs a clock read per frame. The timer is polled
/// only when it fired (`WakeFilter`), not on every frame's wake-up.
struct Silence {
    limit: Duration,
    last: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    fired: WakeFilter,
}

impl Silence {
    fn new(limit: Duration) -> Self {
        let last = tokio::time::Instant::now();
        Self { limit, last, timer: Box::pin(tokio::time::sleep_until(last + limit)), fired: WakeFilter::new() }
    }

    /// A frame arrived.
    fn heard(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Resolves once `limit` has passed without a frame. Cancel-safe.
    async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }

    fn poll_expired(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        loop {
            let timer = &mut self.timer;
            std::task::ready!(self.fired.poll(cx, |cx| timer.as_mut().poll(cx)));
            let due = self.last + self.limit;
            if due <= tokio::time::Instant::now() {
                return std::task::Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
            self.fired.rearm();
        }
    }
}
