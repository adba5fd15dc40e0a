//! The in-process router: machine id -> the agent stream this node holds, and per stream the
//! table of open channels with their credit accounting.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tonic::Status;

use super::outlet::{Outlet, PeerLinkOut};
use super::queries::{self, Pending};
use super::router::{OutputLane, RouteError, SessionControl, SessionPort, SessionRouter};
use super::wire::Outbound;
use crate::core::convert;
use crate::core::ids::MachineId;
use crate::core::secret::Secret;
use crate::core::session::{
    self, AttachSpec, Ending, Exit, Grant, OpenSpec, OutputStream, SessionEvent, SessionSummary,
};
use crate::core::sync::lock;
use crate::proto::{self, agent_frame, closed, relay_frame, session_query};
use crate::server::metrics::METRICS;

/// Frames toward one agent. Bounded: every data frame on it is covered by credit, so the bound
/// only paces control chatter.
pub(crate) type AgentTx = mpsc::Sender<Outbound<proto::RelayFrame>>;

/// Frames toward an edge node on a peer stream. Unbounded: the agent's frames are routed onto
/// it from the stream's reader, which must not wait; output on it is covered by the credit the
/// edge grants, the rest is answers to what the edge sent.
pub(crate) type PeerTx = mpsc::UnboundedSender<Outbound<proto::AgentFrame>>;

/// Channel numbers of forwarded sessions: the peer stream's number above this many bits, the
/// edge's own channel number below (so no table maps one to the other).
const FORWARD_SHIFT: u32 = 40;

/// Machine id -> its live stream on this node.
#[derive(Default)]
pub(crate) struct LocalRouter {
    agents: Mutex<HashMap<MachineId, Arc<AgentConn>>>,
}

impl LocalRouter {
    /// Registers a stream, replacing (and returning) an older one of the same machine.
    pub(crate) fn register(&self, conn: Arc<AgentConn>) -> Option<Arc<AgentConn>> {
        let old = lock(&self.agents).insert(conn.machine, conn);
        METRICS.machines_online.store(lock(&self.agents).len() as u64, Ordering::Relaxed);
        old
    }

    fn conn(&self, machine: MachineId) -> Result<Arc<AgentConn>, RouteError> {
        lock(&self.agents).get(&machine).cloned().ok_or(RouteError::Offline)
    }

    /// The machine's stream if it is the one of route `epoch`; `Stale` when this node holds
    /// another stream of it or none (the agent moved).
    pub(crate) fn conn_at(&self, machine: MachineId, epoch: i64) -> Result<Arc<AgentConn>, RouteError> {
        match lock(&self.agents).get(&machine) {
            Some(conn) if conn.epoch == epoch => Ok(conn.clone()),
            _ => Err(RouteError::Stale),
        }
    }

    /// Removes the stream if it is still the registered one (a reconnect may have replaced it).
    pub(crate) fn unregister(&self, conn: &Arc<AgentConn>) -> bool {
        let mut agents = lock(&self.agents);
        let current = agents.get(&conn.machine).is_some_and(|c| Arc::ptr_eq(c, conn));
        if current {
            agents.remove(&conn.machine);
        }
        METRICS.machines_online.store(agents.len() as u64, Ordering::Relaxed);
        current
    }
}

#[async_trait]
impl SessionRouter for LocalRouter {
    async fn open(&self, machine: MachineId, spec: OpenSpec) -> Result<SessionPort, RouteError> {
        self.conn(machine)?.open(spec).await
    }

    async fn attach(&self, machine: MachineId, spec: AttachSpec) -> Result<SessionPort, RouteError> {
        self.conn(machine)?.attach(&spec).await
    }

    async fn list_sessions(&self, machine: MachineId) -> Result<Vec<SessionSummary>, RouteError> {
        self.conn(machine)?.list_sessions().await
    }

    async fn kill_session(&self, machine: MachineId, session: &str) -> Result<SessionSummary, RouteError> {
        self.conn(machine)?.kill_session(session).await
    }

    async fn unlock(
        &self,
        machine: MachineId,
        principal: &str,
        source: &str,
        password: Secret<String>,
    ) -> Result<Grant, RouteError> {
        self.conn(machine)?.unlock(principal, source, password).await
    }

    async fn job(&self, machine: MachineId, query: proto::JobQuery) -> Result<proto::JobReport, RouteError> {
        self.conn(machine)?.job(query).await
    }

    async fn is_connected(&self, machine: MachineId) -> bool {
        lock(&self.agents).contains_key(&machine)
    }
}

/// One agent stream (or, on an edge node, a node-to-node stream standing for one): its
/// outbound side and its channels.
pub(crate) struct AgentConn {
    machine: MachineId,
    /// The route epoch this stream was registered under.
    epoch: i64,
    tx: Outlet,
    /// Turns true when the stream ends, for whoever pipes to it.
    ended: tokio::sync::watch::Sender<bool>,
    channels: Mutex<Channels>,
    next_channel: AtomicU64,
    /// Numbers the peer streams forwarding sessions to this stream (`FORWARD_SHIFT`).
    next_peer: AtomicU64,
    queries: Pending,
}

/// A stream's channels by number.
type Channels = HashMap<u64, Channel, BuildHasherDefault<ChannelHasher>>;

/// The channel table's hash. Channel numbers are this node's own (counted up, or an edge
/// node's under its peer stream's prefix), never picked by the agent that sends frames, so a
/// keyed hash guards against nothing here; SipHash cost about 300 instructions a keystroke.
#[derive(Default)]
struct ChannelHasher(u64);

impl Hasher for ChannelHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: each bit of the product's upper half mixes all the bits below it.
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        // The mixed upper half down to the bucket bits (as rustc-hash does): numbers that share
        // their low bits (one channel number under several peer prefixes) part ways there.
        self.0.rotate_left(26)
    }
}

struct Channel {
    sink: Sink,
    /// Output bytes granted to the agent minus bytes received: never negative.
    output_credit: u64,
}

/// Where a channel's frames from the agent go.
enum Sink {
    /// A session consumed on this node, as events.
    Local {
        events: mpsc::UnboundedSender<SessionEvent>,
        input_credit: Arc<Semaphore>,
        /// Where output goes instead of `events`, when the consumer set one.
        lane: Option<Arc<dyn OutputLane>>,
    },
    /// A session of an edge node: the agent's frames go out on the peer stream as they came,
    /// renumbered to the edge's channel. The edge keeps the input window (the agent's own
    /// credit frames reach it) and grants the output window (this node checks it).
    Forward { out: PeerTx, channel: u64 },
}

impl AgentConn {
    /// A stream of `machine`, route `epoch`, whose frames go out on `tx`.
    pub(crate) fn new(machine: MachineId, epoch: i64, tx: AgentTx) -> Arc<Self> {
        Self::with_outlet(machine, epoch, Outlet::Agent(tx))
    }

    /// The edge's stand-in for the agent stream of `machine`, route `epoch`, held by another
    /// node: frames go out on the peer stream `out`.
    pub(crate) fn toward_peer(machine: MachineId, epoch: i64, out: PeerLinkOut) -> Arc<Self> {
        Self::with_outlet(machine, epoch, Outlet::Peer(out))
    }

    fn with_outlet(machine: MachineId, epoch: i64, tx: Outlet) -> Arc<Self> {
        Arc::new(Self {
            machine,
            epoch,
            tx,
            ended: tokio::sync::watch::channel(false).0,
            channels: Mutex::default(),
            next_channel: AtomicU64::new(1),
            next_peer: AtomicU64::new(1),
            queries: Pending::default(),
        })
    }

    /// The machine this stream belongs to.
    pub(crate) fn machine(&self) -> MachineId {
        self.machine
    }

    /// The route epoch it was registered under.
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Resolves true once the stream has ended.
    pub(crate) fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ended.subscribe()
    }

    pub(crate) async fn open(self: &Arc<Self>, spec: OpenSpec) -> Result<SessionPort, RouteError> {
        self.open_channel(convert::open_of_spec(spec)).await
    }

    /// Attaches to a shell session (new, named or by id).
    pub(crate) async fn attach(self: &Arc<Self>, spec: &AttachSpec) -> Result<SessionPort, RouteError> {
        self.open_channel(convert::open_of(spec)).await
    }

    /// The machine's running shell sessions.
    pub(crate) async fn list_sessions(&self) -> Result<Vec<SessionSummary>, RouteError> {
        let reply = self.query(session_query::Op::List(proto::ListShellSessions {})).await?;
        queries::summaries_of(reply)
    }

    /// Ends the shell session with this id or name.
    pub(crate) async fn kill_session(&self, session: &str) -> Result<SessionSummary, RouteError> {
        let kill = proto::KillShellSession { session: session.to_string() };
        let reply = self.query(session_query::Op::Kill(kill)).await?;
        let killed = queries::summaries_of(reply)?.into_iter().next();
        killed.ok_or_else(|| RouteError::NoSuchSession(format!("no shell session {session:?}")))
    }

    /// Checks the machine's attach password.
    pub(crate) async fn unlock(
        &self,
        principal: &str,
        source: &str,
        password: Secret<String>,
    ) -> Result<Grant, RouteError> {
        let (principal, source) = (principal.to_string(), source.to_string());
        let unlock = proto::Unlock { principal, password: password.expose().clone(), source };
        queries::grant_of(self.query(session_query::Op::Unlock(unlock)).await?)
    }

    /// Starts, reads, pages or cancels a job; the agent may hold its answer `wait_ms`.
    pub(crate) async fn job(&self, query: proto::JobQuery) -> Result<proto::JobReport, RouteError> {
        let wait = Duration::from_millis(query.wait_ms);
        queries::job_of(self.query_for(session_query::Op::Job(query), wait).await?)
    }

    /// Numbers a channel, grants it the output window and sends its `Open`.
    pub(crate) async fn open_channel(self: &Arc<Self>, mut open: proto::Open) -> Result<SessionPort, RouteError> {
        let channel = self.next_channel.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::unbounded_channel();
        let input_credit = Arc::new(Semaphore::new(0));
        let window = session::OUTPUT_WINDOW_BYTES;
        let sink = Sink::Local { events: events_tx, input_credit: input_credit.clone(), lane: None };
        self.insert(channel, sink, window);
        open.channel = channel;
        open.output_window = window;
        let control = Arc::new(LocalControl { conn: self.clone(), channel, input_credit });
        control.send(relay_frame::Kind::Open(open)).await?;
        Ok(SessionPort { events, control })
    }

    fn insert(&self, channel: u64, sink: Sink, output_window: u32) {
        lock(&self.channels).insert(channel, Channel { sink, output_credit: output_window.into() });
        METRICS.sessions_open.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, channel: u64) -> Option<Sink> {
        let sink = lock(&self.channels).remove(&channel)?.sink;
        METRICS.sessions_open.fetch_sub(1, Ordering::Relaxed);
        if let Sink::Local { input_credit, .. } = &sink {
            input_credit.close();
        }
        Some(sink)
    }

    /// Numbers a new peer stream forwarding sessions to this one.
    pub(crate) fn forwarder(self: &Arc<Self>, out: PeerTx) -> Forwarder {
        let prefix = self.next_peer.fetch_add(1, Ordering::Relaxed) << FORWARD_SHIFT;
        Forwarder { conn: self.clone(), prefix, out }
    }

    /// Sends a session query and waits (at most `QUERY_TIMEOUT`) for its reply.
    pub(crate) async fn query(&self, op: session_query::Op) -> Result<proto::SessionReply, RouteError> {
        self.query_for(op, Duration::ZERO).await
    }

    /// `query` for an answer the agent may hold back for `wait` (a job's end).
    async fn query_for(&self, op: session_query::Op, wait: Duration) -> Result<proto::SessionReply, RouteError> {
        let (request, reply) = self.queries.register();
        let frame = proto::RelayFrame {
            kind: Some(relay_frame::Kind::SessionQuery(proto::SessionQuery { request, op: Some(op) })),
        };
        if self.tx.send(frame).await.is_err() {
            self.queries.forget(request);
            return Err(RouteError::Gone);
        }
        match tokio::time::timeout(queries::QUERY_TIMEOUT + wait, reply).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RouteError::Gone),
            Err(_) => {
                self.queries.forget(request);
                Err(RouteError::Unanswered)
            }
        }
    }

    /// Routes one frame from the agent. An error is a protocol violation: the stream ends.
    pub(crate) fn dispatch(&self, kind: agent_frame::Kind) -> Result<(), Status> {
        match kind {
            agent_frame::Kind::Hello(_) => Err(Status::invalid_argument("hello sent twice")),
            // Counted in memory only: a heartbeat never reaches the database (issue 14).
            agent_frame::Kind::Heartbeat(_) => {
                METRICS.heartbeats.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            agent_frame::Kind::Opened(mut o) => self.with_channel(o.channel, |c| {
                match &c.sink {
                    Sink::Local { events, input_credit, .. } => {
                        input_credit.add_permits(o.input_window as usize);
                        let attachment = convert::attachment_of(&o);
                        let _ = events.send(SessionEvent::Opened { pid: o.pid, attachment });
                    }
                    Sink::Forward { out, channel } => {
                        o.channel = *channel;
                        forward(out, agent_frame::Kind::Opened(o));
                    }
                }
                Ok(())
            }),
            agent_frame::Kind::Output(o) => self.output(o),
            agent_frame::Kind::Credit(mut credit) => self.with_channel(credit.channel, |c| {
                match &c.sink {
                    Sink::Local { input_credit, .. } => input_credit.add_permits(credit.bytes as usize),
                    Sink::Forward { out, channel } => {
                        credit.channel = *channel;
                        forward(out, agent_frame::Kind::Credit(credit));
                    }
                }
                Ok(())
            }),
            agent_frame::Kind::SessionReply(reply) => {
                self.queries.answer(reply);
                Ok(())
            }
            agent_frame::Kind::Closed(mut c) => {
                match self.remove(c.channel) {
                    Some(Sink::Local { events, .. }) => {
                        let _ = events.send(SessionEvent::Exited(exit_of(&c)));
                    }
                    Some(Sink::Forward { out, channel }) => {
                        c.channel = channel;
                        forward(&out, agent_frame::Kind::Closed(c));
                    }
                    None => {}
                }
                Ok(())
            }
        }
    }

    fn output(&self, mut o: proto::Output) -> Result<(), Status> {
        let len = o.data.len() as u64;
        self.with_channel(o.channel, |c| {
            c.output_credit = c.output_credit.checked_sub(len).ok_or_else(|| {
                Status::invalid_argument(format!("channel {}: output beyond granted credit", o.channel))
            })?;
            METRICS.bytes_from_agents.fetch_add(len, Ordering::Relaxed);
            match &c.sink {
                Sink::Local { events, lane, .. } => {
                    let stream = match o.stream() {
                        proto::OutputStream::Stdout => OutputStream::Stdout,
                        proto::OutputStream::Stderr => OutputStream::Stderr,
                    };
                    match lane {
                        Some(lane) => lane.output(stream, o.offset, o.data, events),
                        None => {
                            let _ = events.send(SessionEvent::Output { stream, offset: o.offset, data: o.data });
                        }
                    }
                }
                Sink::Forward { out, channel } => {
                    o.channel = *channel;
                    forward(out, agent_frame::Kind::Output(o));
                }
            }
            Ok(())
        })
    }

    /// Frames for channels we no longer know (closed by the consumer meanwhile) are dropped:
    /// they are a normal race, not a violation.
    fn with_channel(&self, channel: u64, f: impl FnOnce(&mut Channel) -> Result<(), Status>) -> Result<(), Status> {
        match lock(&self.channels).get_mut(&channel) {
            Some(c) => f(c),
            None => Ok(()),
        }
    }

    /// The stream ended: every session on it is lost. Forwarded sessions end with their peer
    /// stream, which sees `ended`.
    pub(crate) fn lost(&self) {
        self.ended.send_replace(true);
        self.queries.fail_all();
        for (_, ch) in lock(&self.channels).drain() {
            METRICS.sessions_open.fetch_sub(1, Ordering::Relaxed);
            if let Sink::Local { events, input_credit, .. } = ch.sink {
                input_credit.close();
                let _ = events.send(SessionEvent::Lost);
            }
        }
    }

    /// Queues a frame toward the agent, waiting while the queue is full.
    async fn send(&self, kind: relay_frame::Kind) -> Result<(), RouteError> {
        self.tx.send(proto::RelayFrame { kind: Some(kind) }).await
    }

    /// Queues a frame toward the agent without waiting (from `Drop`): a full queue defers it
    /// to a task.
    fn send_now(&self, kind: relay_frame::Kind) {
        self.tx.send_now(Outbound::Frame(proto::RelayFrame { kind: Some(kind) }));
    }

    /// Ends the stream from the server side with a status the agent will log.
    pub(crate) fn kick(&self, status: Status) {
        self.tx.send_now(Outbound::End(status));
    }
}

fn exit_of(c: &proto::Closed) -> Exit {
    let ending = match &c.end {
        Some(closed::End::ExitCode(code)) => Ending::Code(*code),
        Some(closed::End::Signal(s)) => Ending::Signal(*s),
        Some(closed::End::Error(e)) => Ending::Error(e.clone()),
        Some(closed::End::Detached(_)) => Ending::Error("detached from the session".into()),
        Some(closed::End::Denied(d)) => Ending::Denied(convert::denial_from_wire(d)),
        Some(closed::End::NoAskHandler(_)) => Ending::NoAskHandler,
        None => Ending::Error("the agent ended the session without a status".into()),
    };
    Exit { ending, timed_out: c.timed_out, duration: Duration::from_millis(c.duration_ms) }
}

struct LocalControl {
    conn: Arc<AgentConn>,
    channel: u64,
    input_credit: Arc<Semaphore>,
}

impl LocalControl {
    async fn send(&self, kind: relay_frame::Kind) -> Result<(), RouteError> {
        self.conn.send(kind).await
    }
}

#[async_trait]
impl SessionControl for LocalControl {
    async fn input(&self, data: Bytes) -> Result<(), RouteError> {
        for chunk in data.chunks(session::CHUNK_BYTES) {
            let n = u32::try_from(chunk.len()).map_err(|_| RouteError::Gone)?;
            self.input_credit.acquire_many(n).await.map_err(|_| RouteError::Gone)?.forget();
            METRICS.bytes_to_agents.fetch_add(n.into(), Ordering::Relaxed);
            let input = proto::Input { channel: self.channel, data: data.slice_ref(chunk) };
            self.send(relay_frame::Kind::Input(input)).await?;
        }
        Ok(())
    }

    fn try_input(&self, data: Bytes) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        let Some(n) = u32::try_from(data.len()).ok().filter(|_| data.len() <= session::CHUNK_BYTES) else {
            return Some(data);
        };
        // The credit first, then the queue's room: if there is none the credit goes back as
        // the permit drops, and `input` waits for both.
        let Ok(credit) = self.input_credit.try_acquire_many(n) else { return Some(data) };
        let input = proto::Input { channel: self.channel, data };
        match self.conn.tx.try_send(proto::RelayFrame { kind: Some(relay_frame::Kind::Input(input)) }) {
            Ok(()) => {
                credit.forget();
                METRICS.bytes_to_agents.fetch_add(n.into(), Ordering::Relaxed);
                None
            }
            // `try_send` hands back the frame it was given: the input's bytes go back.
            Err(frame) => match frame.kind {
                Some(relay_frame::Kind::Input(input)) => Some(input.data),
                _ => None,
            },
        }
    }

    async fn consumed(&self, bytes: usize) -> Result<(), RouteError> {
        let bytes = u32::try_from(bytes).map_err(|_| RouteError::Gone)?;
        if let Some(c) = lock(&self.conn.channels).get_mut(&self.channel) {
            c.output_credit += u64::from(bytes);
        }
        self.send(relay_frame::Kind::Credit(proto::Credit { channel: self.channel, bytes })).await
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RouteError> {
        let r = proto::Resize { channel: self.channel, cols: cols.into(), rows: rows.into() };
        self.send(relay_frame::Kind::Resize(r)).await
    }

    async fn signal(&self, signo: i32) -> Result<(), RouteError> {
        self.send(relay_frame::Kind::Signal(proto::Signal { channel: self.channel, signo })).await
    }

    fn close(&self) {
        if lock(&self.conn.channels).contains_key(&self.channel) {
            self.send_close(false);
        }
    }

    fn set_output_lane(&self, lane: Option<Arc<dyn OutputLane>>) {
        if let Some(Channel { sink: Sink::Local { lane: slot, .. }, .. }) =
            lock(&self.conn.channels).get_mut(&self.channel)
        {
            *slot = lane;
        }
    }

    fn detach(&self) {
        // Forget the channel at once: the agent's last frames for it are then dropped as a
        // normal race, and the consumer's events end.
        if self.conn.remove(self.channel).is_some() {
            self.send_close(true);
        }
    }
}

impl LocalControl {
    /// Queues a `Close`; never waits (it runs from `Drop`).
    fn send_close(&self, detach: bool) {
        self.conn.send_now(relay_frame::Kind::Close(proto::Close { channel: self.channel, detach }));
    }
}

/// A peer stream's sessions on this agent stream (the holding node's side of forwarding).
/// Its channels carry the edge's numbers under the stream's own prefix; the edge's frames go
/// to the agent renumbered and the agent's come back the same way (`Sink::Forward`), with no
/// task or queue per session. Dropping it closes the sessions it still has.
pub(crate) struct Forwarder {
    conn: Arc<AgentConn>,
    prefix: u64,
    out: PeerTx,
}

impl Forwarder {
    /// The agent-side number of the edge's `channel`; `None` for one too large to prefix.
    fn number(&self, channel: u64) -> Option<u64> {
        (channel < 1 << FORWARD_SHIFT).then_some(self.prefix | channel)
    }

    /// Passes one frame of the edge to the agent; an `Open` registers its channel first. Frames
    /// for channels this stream does not have reach the agent, which drops them as it drops
    /// frames of channels it closed.
    pub(crate) async fn relay(&self, kind: relay_frame::Kind) -> Result<(), RouteError> {
        let kind = match kind {
            relay_frame::Kind::Open(mut open) => {
                let edge = open.channel;
                let Some(channel) = self.number(edge) else { return Err(RouteError::Gone) };
                let sink = Sink::Forward { out: self.out.clone(), channel: edge };
                self.conn.insert(channel, sink, open.output_window);
                open.channel = channel;
                relay_frame::Kind::Open(open)
            }
            relay_frame::Kind::Input(mut i) => {
                i.channel = self.renumber(i.channel)?;
                METRICS.bytes_to_agents.fetch_add(i.data.len() as u64, Ordering::Relaxed);
                relay_frame::Kind::Input(i)
            }
            relay_frame::Kind::Credit(mut c) => {
                c.channel = self.renumber(c.channel)?;
                if let Some(ch) = lock(&self.conn.channels).get_mut(&c.channel) {
                    ch.output_credit += u64::from(c.bytes);
                }
                relay_frame::Kind::Credit(c)
            }
            relay_frame::Kind::Resize(mut r) => {
                r.channel = self.renumber(r.channel)?;
                relay_frame::Kind::Resize(r)
            }
            relay_frame::Kind::Signal(mut s) => {
                s.channel = self.renumber(s.channel)?;
                relay_frame::Kind::Signal(s)
            }
            // A detach ends the channel here at once, as `LocalControl::detach` does; a close
            // keeps it until the agent's `Closed` has gone back to the edge.
            relay_frame::Kind::Close(mut c) => {
                c.channel = self.renumber(c.channel)?;
                if c.detach {
                    self.conn.remove(c.channel);
                }
                relay_frame::Kind::Close(c)
            }
            // Queries are answered through `AgentConn::query`; nothing else is the edge's to send.
            relay_frame::Kind::SessionQuery(_) | relay_frame::Kind::Welcome(_) => return Ok(()),
        };
        self.conn.send(kind).await
    }

    fn renumber(&self, channel: u64) -> Result<u64, RouteError> {
        self.number(channel).ok_or(RouteError::Gone)
    }
}

impl Drop for Forwarder {
    /// The edge went away: its sessions lose this attachment, as a dropped `SessionPort`'s do.
    fn drop(&mut self) {
        let ours: Vec<u64> = lock(&self.conn.channels)
            .iter()
            .filter(|(_, ch)| matches!(&ch.sink, Sink::Forward { out, .. } if out.same_channel(&self.out)))
            .map(|(&channel, _)| channel)
            .collect();
        for channel in ours {
            if self.conn.remove(channel).is_some() {
                self.conn.send_now(relay_frame::Kind::Close(proto::Close { channel, detach: false }));
            }
        }
    }
}

fn forward(out: &PeerTx, kind: agent_frame::Kind) {
    let _ = out.send(Outbound::Frame(proto::AgentFrame { kind: Some(kind) }));
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn channel_numbers_spread_over_the_buckets_under_several_prefixes() {
        // Eight peer streams' channels 1..=64 each, as a holder numbers them.
        let hash = BuildHasherDefault::<ChannelHasher>::default();
        let keys = (1..=8u64).flat_map(|p| (1..=64u64).map(move |c| p << FORWARD_SHIFT | c));
        let buckets: std::collections::HashSet<u64> = keys.map(|k| hash.hash_one(k) & 511).collect();
        // 512 keys in 512 buckets at random fill about 323; sharing low bits would fill 64.
        assert!(buckets.len() > 250, "only {} of 512 buckets used", buckets.len());
    }
}
