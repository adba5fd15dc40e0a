//! The in-process router: machine id -> the agent stream this node holds, and per stream the
//! table of open channels with their credit accounting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tonic::Status;

use super::router::{RouteError, SessionControl, SessionPort, SessionRouter};
use crate::ids::MachineId;
use crate::metrics::METRICS;
use crate::proto::{self, agent_frame, closed, relay_frame};
use crate::session::{self, Ending, Exit, OpenSpec, OutputStream, SessionEvent, SessionKind};

/// Frames toward one agent. Bounded: every data frame on it is covered by credit, so the bound
/// only paces control chatter.
pub type AgentTx = mpsc::Sender<Result<proto::RelayFrame, Status>>;

/// Machine id -> its live stream on this node.
#[derive(Default)]
pub struct LocalRouter {
    agents: Mutex<HashMap<MachineId, Arc<AgentConn>>>,
}

// The std Mutex is never held across an `.await`: every critical section is a map lookup.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalRouter {
    /// Registers a stream, replacing (and returning) an older one of the same machine.
    pub fn register(&self, conn: Arc<AgentConn>) -> Option<Arc<AgentConn>> {
        let old = lock(&self.agents).insert(conn.machine, conn);
        METRICS.machines_online.store(lock(&self.agents).len() as u64, Ordering::Relaxed);
        old
    }

    /// Removes the stream if it is still the registered one (a reconnect may have replaced it).
    pub fn unregister(&self, conn: &Arc<AgentConn>) -> bool {
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
        let conn = lock(&self.agents).get(&machine).cloned().ok_or(RouteError::Offline)?;
        conn.open(spec).await
    }

    fn is_connected(&self, machine: MachineId) -> bool {
        lock(&self.agents).contains_key(&machine)
    }
}

/// One agent stream: its outbound queue and its channels.
pub struct AgentConn {
    machine: MachineId,
    tx: AgentTx,
    channels: Mutex<HashMap<u64, Channel>>,
    next_channel: AtomicU64,
}

struct Channel {
    events: mpsc::UnboundedSender<SessionEvent>,
    input_credit: Arc<Semaphore>,
    /// Output bytes granted to the agent minus bytes received: never negative.
    output_credit: u64,
}

impl AgentConn {
    /// A stream of `machine` whose frames go out on `tx`.
    pub fn new(machine: MachineId, tx: AgentTx) -> Arc<Self> {
        Arc::new(Self { machine, tx, channels: Mutex::default(), next_channel: AtomicU64::new(1) })
    }

    /// The machine this stream belongs to.
    pub fn machine(&self) -> MachineId {
        self.machine
    }

    async fn open(self: &Arc<Self>, spec: OpenSpec) -> Result<SessionPort, RouteError> {
        let channel = self.next_channel.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::unbounded_channel();
        let input_credit = Arc::new(Semaphore::new(0));
        let window = session::OUTPUT_WINDOW_BYTES;
        lock(&self.channels).insert(
            channel,
            Channel { events: events_tx, input_credit: input_credit.clone(), output_credit: window.into() },
        );
        METRICS.sessions_open.fetch_add(1, Ordering::Relaxed);
        let open = proto::Open {
            channel,
            kind: match spec.kind {
                SessionKind::Exec => proto::SessionKind::Exec,
                SessionKind::Shell => proto::SessionKind::Shell,
            } as i32,
            argv: spec.argv,
            env: spec.env.into_iter().collect(),
            cols: spec.cols.into(),
            rows: spec.rows.into(),
            timeout_ms: spec.timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            output_window: window,
        };
        let control = Arc::new(LocalControl { conn: self.clone(), channel, input_credit });
        control.send(relay_frame::Kind::Open(open)).await?;
        Ok(SessionPort { events, control })
    }

    /// Routes one frame from the agent. An error is a protocol violation: the stream ends.
    pub fn dispatch(&self, kind: agent_frame::Kind) -> Result<(), Status> {
        match kind {
            agent_frame::Kind::Hello(_) => Err(Status::invalid_argument("hello sent twice")),
            agent_frame::Kind::Heartbeat(_) => Ok(()),
            agent_frame::Kind::Opened(o) => {
                self.with_channel(o.channel, |c| {
                    c.input_credit.add_permits(o.input_window as usize);
                    let _ = c.events.send(SessionEvent::Opened { pid: o.pid });
                    Ok(())
                })
            }
            agent_frame::Kind::Output(o) => self.output(o),
            agent_frame::Kind::Credit(c) => self.with_channel(c.channel, |ch| {
                ch.input_credit.add_permits(c.bytes as usize);
                Ok(())
            }),
            agent_frame::Kind::Closed(c) => {
                if let Some(ch) = lock(&self.channels).remove(&c.channel) {
                    METRICS.sessions_open.fetch_sub(1, Ordering::Relaxed);
                    ch.input_credit.close();
                    let _ = ch.events.send(SessionEvent::Exited(exit_of(&c)));
                }
                Ok(())
            }
        }
    }

    fn output(&self, o: proto::Output) -> Result<(), Status> {
        let len = o.data.len() as u64;
        self.with_channel(o.channel, |c| {
            c.output_credit = c.output_credit.checked_sub(len).ok_or_else(|| {
                Status::invalid_argument(format!("channel {}: output beyond granted credit", o.channel))
            })?;
            METRICS.bytes_from_agents.fetch_add(len, Ordering::Relaxed);
            let stream = match o.stream() {
                proto::OutputStream::Stdout => OutputStream::Stdout,
                proto::OutputStream::Stderr => OutputStream::Stderr,
            };
            let _ = c.events.send(SessionEvent::Output { stream, offset: o.offset, data: o.data });
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

    /// The stream ended: every session on it is lost.
    pub fn lost(&self) {
        for (_, ch) in lock(&self.channels).drain() {
            METRICS.sessions_open.fetch_sub(1, Ordering::Relaxed);
            ch.input_credit.close();
            let _ = ch.events.send(SessionEvent::Lost);
        }
    }

    /// Ends the stream from the server side with a status the agent will log.
    pub fn kick(&self, status: Status) {
        let _ = self.tx.try_send(Err(status));
    }
}

fn exit_of(c: &proto::Closed) -> Exit {
    let ending = match &c.end {
        Some(closed::End::ExitCode(code)) => Ending::Code(*code),
        Some(closed::End::Signal(s)) => Ending::Signal(*s),
        Some(closed::End::Error(e)) => Ending::Error(e.clone()),
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
        let frame = proto::RelayFrame { kind: Some(kind) };
        self.conn.tx.send(Ok(frame)).await.map_err(|_| RouteError::Gone)
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
            let close = proto::Close { channel: self.channel };
            let frame = proto::RelayFrame { kind: Some(relay_frame::Kind::Close(close)) };
            if self.conn.tx.try_send(Ok(frame.clone())).is_err() {
                let tx = self.conn.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Ok(frame)).await;
                });
            }
        }
    }
}
