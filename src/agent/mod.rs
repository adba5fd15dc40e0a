//! The machine daemon. Dials OUT to the relay (never listens), keeps one stream, runs sessions.
//!
//! `state` holds the enrollment; `channel` the table of sessions on the stream; `exec` runs
//! one-shot commands. Shells live in `shells`, a registry that outlives every stream so that
//! sessions survive a reconnect: `shell` is one session (PTY from `pty`, output ring, readers)
//! and `attach` serves one attachment of it on one channel. `password` is the machine's attach
//! password, checked here before any session opens. `jobs` holds detached runs, which like
//! shells outlive every stream. `stream` is the relay stream itself: gRPC over HTTP/2 driven
//! directly, the connection in a task of its own, frames written by the tasks that make them.

mod attach;
mod channel;
pub(crate) mod command;
mod exec;
mod jobs;
pub(crate) mod password;
pub(crate) mod password_cmd;
mod pty;
pub(crate) mod registry;
mod shell;
pub(crate) mod state;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::Rng;
use tonic::Code;
use tonic::transport::Channel;

use crate::core::session::{Ending, Start};
use crate::proto::{self, agent_frame, relay_client::RelayClient, relay_frame};
use crate::sys::host::hostname;
use crate::sys::task::{WakeFilter, WhenWoken};
use channel::{Channels, Cmd};
use jobs::Jobs;
use password::Gate;
use registry::Shells;
use state::Enrollment;

/// The agent's ask handler command line, shared by every ask (`None`: asks are refused).
type AskHandler = Option<Arc<str>>;

/// Reconnect back-off: first delay, cap (jittered), and how long a stream must have lived for
/// the back-off to start again from the first delay.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(15);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);

/// What lives on the agent across streams: shells, the attach password, the ask handler, jobs.
#[derive(Clone)]
struct Local {
    shells: Shells,
    gate: Gate,
    asks: AskHandler,
    jobs: Jobs,
}

/// How to run the agent.
#[derive(Clone, Debug)]
pub(crate) struct AgentConfig {
    /// The server's URLs (several nodes of one deployment), tried in turn; never empty.
    pub(crate) servers: Vec<String>,
    /// One-time enrollment token (first run only).
    pub(crate) token: Option<crate::core::secret::Secret<String>>,
    /// Display name to report.
    pub(crate) display_name: Option<String>,
    /// Where the enrollment is kept.
    pub(crate) state_dir: PathBuf,
    /// Persistent shell sessions end after this long without an attachment
    /// (`registry::DEFAULT_IDLE`, 7 days, unless `--session-idle` says otherwise).
    pub(crate) session_idle: Duration,
    /// Command line run with `sh -c` for each ask (`--ask-handler`); none: asks are refused.
    pub(crate) ask_handler: Option<String>,
}

async fn dial(server: &str) -> anyhow::Result<Channel> {
    crate::sys::dial::connect(server).await.map_err(anyhow::Error::msg)
}

/// The saved enrollment, or a new one made with the token.
pub(crate) async fn enrollment(config: &AgentConfig) -> anyhow::Result<Enrollment> {
    if let Some(saved) = state::load(&config.state_dir)? {
        if config.token.is_some() {
            tracing::info!(machine = %saved.machine_id, "already enrolled; ignoring --token");
        }
        return Ok(saved);
    }
    let Some(token) = &config.token else {
        bail!(
            "this machine is not enrolled: run `cmdop agent --server URL --token T` with a token from `cmdop fleet token create`"
        );
    };
    let req = proto::EnrollRequest {
        token: token.expose().clone(),
        hostname: hostname(),
        display_name: config.display_name.clone().unwrap_or_default(),
    };
    let mut reached = None;
    for server in &config.servers {
        match dial(server).await {
            Ok(channel) => {
                reached = Some((server, channel));
                break;
            }
            Err(e) => tracing::warn!(%server, error = %format!("{e:#}"), "cannot reach the server; trying the next"),
        }
    }
    let Some((server, channel)) = reached else { bail!("no server answered: {}", config.servers.join(", ")) };
    let resp = RelayClient::new(channel).enroll(req).await;
    let resp = resp.map_err(|s| anyhow::anyhow!("enrollment refused: {}", s.message()))?.into_inner();
    let saved = Enrollment { server: server.clone(), machine_id: resp.machine_id, credential: resp.credential };
    state::save(&config.state_dir, &saved)?;
    tracing::info!(machine = %saved.machine_id, "enrolled");
    Ok(saved)
}

/// Runs until `shutdown` fires or the credential is refused; reconnects after any other
/// failure. With several servers, a failure moves to the next one at once and the capped,
/// jittered exponential back-off applies only after a whole round failed, so an agent whose
/// node died is back through another within a second or so.
pub(crate) async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    // Polled only when its own waker fired: this task is the link's pump, woken for every
    // frame, and a signal poll per frame was about 2.5 % of the agent's work per key.
    let mut shutdown = WhenWoken::new(shutdown);
    let enrollment = tokio::select! {
        e = enrollment(&config) => e?,
        _ = &mut shutdown => return Ok(()),
    };
    // Shell sessions outlive every stream: a reconnect finds them again.
    let shells = Shells::new(config.session_idle);
    let gate = Gate::new(&config.state_dir);
    let asks: AskHandler = config.ask_handler.as_deref().map(Arc::from);
    let jobs = Jobs::default();
    let local = Local { shells, gate, asks, jobs };
    let mut delay = BACKOFF_FIRST;
    let mut turn = 0;
    loop {
        let started = Instant::now();
        let server = &config.servers[turn % config.servers.len()];
        let result = tokio::select! {
            biased;
            r = link(&enrollment, server, &config, &local) => r,
            _ = &mut shutdown => return Ok(()),
        };
        match result {
            Err(LinkError::Fatal(e)) => return Err(e),
            Err(LinkError::Retry(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "relay connection failed")
            }
            Err(LinkError::Draining) => {
                tracing::info!("the server is shutting down; reconnecting at once");
                delay = BACKOFF_FIRST / 2;
            }
            Ok(()) => tracing::warn!("relay closed the stream"),
        }
        if started.elapsed() > BACKOFF_RESET_AFTER {
            delay = BACKOFF_FIRST;
        }
        turn += 1;
        if turn % config.servers.len() != 0 {
            tracing::info!(next = %config.servers[turn % config.servers.len()], "trying the next server");
            continue;
        }
        let sleep = delay / 2 + delay.mul_f64(rand::rng().random::<f64>() / 2.0);
        tracing::info!(in_ms = sleep.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = &mut shutdown => return Ok(()),
        }
        delay = (delay * 2).min(BACKOFF_CAP);
    }
}

enum LinkError {
    /// Retrying cannot help (credential refused).
    Fatal(anyhow::Error),
    /// The server said it is shutting down: reconnect at once (another node may answer).
    Draining,
    /// Network trouble: back off and retry.
    Retry(anyhow::Error),
}

impl From<anyhow::Error> for LinkError {
    fn from(e: anyhow::Error) -> Self {
        LinkError::Retry(e)
    }
}

fn status_error(s: tonic::Status) -> LinkError {
    let e = anyhow::anyhow!("{}", s.message());
    match s.code() {
        Code::Unavailable if s.message() == crate::core::wire::SERVER_SHUTTING_DOWN => LinkError::Draining,
        Code::Unauthenticated | Code::PermissionDenied => LinkError::Fatal(e),
        _ => LinkError::Retry(e),
    }
}

/// One stream's life: hello, then frames until it ends.
async fn link(enrollment: &Enrollment, server: &str, config: &AgentConfig, local: &Local) -> Result<(), LinkError> {
    let hello = proto::Hello {
        hostname: hostname(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        display_name: config.display_name.clone().unwrap_or_default(),
    };
    let hello = proto::AgentFrame { kind: Some(agent_frame::Kind::Hello(hello)) };
    let (mut inbound, out, connection) =
        stream::open(server, &enrollment.credential, &hello).await.map_err(status_error)?;
    let channels = Channels::default();
    let result = pump(&mut inbound, connection, &out, &channels, local).await;
    out.close();
    channels.close_all();
    result
}

/// How often the attach password file is checked for a change that ends sessions: 1 s.
const PASSWORD_CHECK: Duration = Duration::from_secs(1);

/// The pump's timers: its heartbeat and the attach password check.
struct Timers {
    heartbeat: tokio::time::Interval,
    password_check: tokio::time::Interval,
}

enum Tick {
    Heartbeat,
    PasswordCheck,
}

impl Timers {
    fn poll_tick(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Tick> {
        if self.password_check.poll_tick(cx).is_ready() {
            return std::task::Poll::Ready(Tick::PasswordCheck);
        }
        self.heartbeat.poll_tick(cx).map(|_| Tick::Heartbeat)
    }
}

/// Reads the relay's frames and dispatches them until the stream ends. The frame branch comes
/// first and the timers and the connection's task are polled only when they woke the task, so
/// a frame costs no timer or task-handle poll.
async fn pump(
    inbound: &mut stream::Link,
    connection: stream::Connection,
    out: &channel::Out,
    channels: &Channels,
    local: &Local,
) -> Result<(), LinkError> {
    let mut timers = Timers {
        heartbeat: tokio::time::interval(Duration::from_secs(5)),
        password_check: tokio::time::interval(PASSWORD_CHECK),
    };
    let mut timer_filter = WakeFilter::new();
    let mut connection = WhenWoken::new(connection);
    let mut connection_open = true;
    loop {
        tokio::select! {
            biased;
            frame = inbound.next() => match frame.map_err(status_error)? {
                None => return Ok(()),
                Some(proto::RelayFrame { kind: Some(relay_frame::Kind::Welcome(w)) }) => {
                    tracing::info!(machine = %w.machine_id, "connected to relay");
                    let every = Duration::from_millis(w.heartbeat_interval_ms.max(100).into());
                    timers.heartbeat = tokio::time::interval(every);
                    timer_filter.rearm();
                }
                Some(proto::RelayFrame { kind: Some(kind) }) => dispatch(kind, out, channels, local),
                Some(_) => tracing::warn!("ignored an empty frame from the relay"),
            },
            tick = std::future::poll_fn(|cx| timer_filter.poll(cx, |cx| timers.poll_tick(cx))) => match tick {
                Tick::PasswordCheck => {
                    let ended = channels.revoke_stale(local.gate.epoch().as_deref());
                    if ended > 0 {
                        tracing::info!(ended, "the attach password changed: sessions admitted under the old one end");
                    }
                }
                Tick::Heartbeat => {
                    let unix_ms = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                    let beat = proto::AgentFrame { kind: Some(agent_frame::Kind::Heartbeat(proto::Heartbeat { unix_ms })) };
                    if out.send(beat).await.is_err() {
                        return Ok(());
                    }
                }
            },
            ended = &mut connection, if connection_open => match ended {
                // Closed cleanly: the stream reports how it ended.
                Ok(Ok(())) => connection_open = false,
                Ok(Err(status)) => return Err(status_error(status)),
                Err(e) => return Err(LinkError::Retry(anyhow::anyhow!("the connection's task failed: {e}"))),
            },
        }
    }
}

fn dispatch(kind: relay_frame::Kind, out: &channel::Out, channels: &Channels, local: &Local) {
    match kind {
        relay_frame::Kind::Open(open) => {
            let (channel, window) = (open.channel, open.output_window);
            // An exec with no argv runs nothing: it only asks whether the attach password
            // admits the principal (the server asks before listing or killing sessions).
            if open.kind() == proto::SessionKind::Exec && open.argv.is_empty() {
                let ending = match local.gate.admit(&open.principal, &open.attach_token) {
                    Ok(_) => Ending::Code(0),
                    Err(denial) => Ending::Denied(denial),
                };
                return end_at_once(channel, ending, out);
            }
            let start = match crate::core::convert::start_of(open) {
                Ok(start) => start,
                Err(why) => return end_at_once(channel, Ending::Error(why), out),
            };
            let access = start.access();
            let token = access.token.as_ref().map_or("", |t| t.expose().as_str());
            match local.gate.admit(&access.principal, token) {
                Ok(epoch) => begin(channel, window, start, epoch, out, channels, local),
                Err(denial) => {
                    tracing::info!(channel, "session refused: no valid attach token");
                    end_at_once(channel, Ending::Denied(denial), out)
                }
            }
        }
        relay_frame::Kind::Input(i) => channels.input(i.channel, i.data),
        relay_frame::Kind::Credit(c) => channels.credit(c.channel, c.bytes),
        relay_frame::Kind::Resize(r) => {
            let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
            channels.command(r.channel, Cmd::Resize(clamp(r.cols), clamp(r.rows)));
        }
        relay_frame::Kind::Signal(s) => channels.command(s.channel, Cmd::Signal(s.signo)),
        relay_frame::Kind::Close(c) => channels.command(c.channel, if c.detach { Cmd::Detach } else { Cmd::Close }),
        relay_frame::Kind::Welcome(_) => {}
        relay_frame::Kind::SessionQuery(q) => {
            let (local, out) = (local.clone(), out.clone());
            tokio::spawn(async move {
                let reply = match q.op {
                    Some(proto::session_query::Op::Unlock(u)) => unlock(q.request, u, &local.gate).await,
                    Some(proto::session_query::Op::Job(j)) => {
                        local.jobs.answer(q.request, j, &local.gate, local.asks.as_deref()).await
                    }
                    _ => local.shells.answer(q),
                };
                let _ = out.send(proto::AgentFrame { kind: Some(agent_frame::Kind::SessionReply(reply)) }).await;
            });
        }
    }
}

/// Ends a channel at once: nothing was started (refused, or a malformed `Open`).
fn end_at_once(channel: u64, ending: Ending, out: &channel::Out) {
    let out = out.clone();
    tokio::spawn(async move {
        let _ = out.send(channel::closed_at_once_frame(channel, ending)).await;
    });
}

/// Answers `SessionQuery.unlock`: checks the password (argon2id, on a blocking thread).
async fn unlock(request: u64, u: proto::Unlock, gate: &Gate) -> proto::SessionReply {
    let mut reply = proto::SessionReply { request, ..Default::default() };
    match gate.unlock(&u.principal, &u.source, crate::core::secret::Secret::new(u.password)).await {
        Ok(grant) => {
            reply.unlocked =
                Some(proto::Unlocked { token: grant.token.expose().clone(), expires_unix: grant.expires_unix });
        }
        Err(denial) => reply.denied = Some(crate::core::convert::denial_to_wire(denial)),
    }
    reply
}

fn begin(
    channel: u64,
    window: u32,
    start: Start,
    epoch: Option<String>,
    out: &channel::Out,
    channels: &Channels,
    local: &Local,
) {
    let (shells, asks) = (&local.shells, local.asks.clone());
    let shell = matches!(start, Start::Shell(..));
    let Some((credit, cmds)) = channels.insert(channel, window, shell, epoch) else {
        tracing::warn!(channel, "relay reused an open channel number; ignored");
        return;
    };
    let (out, channels, shells) = (out.clone(), channels.clone(), shells.clone());
    tokio::spawn(async move {
        match start {
            Start::Exec(spec) => exec::run(channel, window, spec, None, out, credit, cmds).await,
            Start::Ask(spec, text) => match asks.as_deref() {
                Some(handler) => exec::run(channel, window, spec, Some((handler, text)), out, credit, cmds).await,
                None => {
                    let _ = out.send(channel::closed_at_once_frame(channel, Ending::NoAskHandler)).await;
                }
            },
            Start::Shell(spec, env) => shells.attach(channel, spec, env, out, (credit, cmds), &channels).await,
        }
        channels.remove(channel);
    });
}
