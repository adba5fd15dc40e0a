//! The agent's shell sessions, by id: created by an `Open` of kind SHELL, joined by later ones
//! (by name or id), listed and killed through `SessionQuery`. The registry outlives every
//! relay stream, so sessions survive the agent's connection dropping and are reattached after
//! it reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use super::attach::Input;
use super::channel::{Channels, Cmd, Out, closed_at_once_frame, opened_frame};
use super::pty::{self, Exit};
use super::shell::Shell;
use crate::core::convert::shell_session;
use crate::core::ids::SessionId;
use crate::core::session::{AttachSpec, Ending, INPUT_WINDOW_BYTES, SessionSummary, ShellTarget};
use crate::proto::{self, session_query};

/// How long an ended session stays reachable by id, so a consumer whose connection dropped
/// around the end still gets its last output and exit status: 30 s.
const ENDED_LINGER: Duration = Duration::from_secs(30);
/// Once the shell exited, output is still read until the PTY has been quiet this long (a
/// background job may hold it open for ever): 2 s.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// Default idle expiry of persistent sessions: 7 days without an attachment.
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(7 * 86_400);

/// The registry. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Shells {
    inner: Arc<Inner>,
}

struct Inner {
    map: Mutex<HashMap<SessionId, Arc<Shell>>>,
    idle: Duration,
}

impl Shells {
    /// An empty registry whose persistent sessions end after `idle` without an attachment.
    pub(crate) fn new(idle: Duration) -> Self {
        Self { inner: Arc::new(Inner { map: Mutex::default(), idle }) }
    }

    // The std Mutex is never held across an `.await`.
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Shell>>> {
        crate::core::sync::lock(&self.inner.map)
    }

    /// Serves one SHELL channel: finds or starts its session, answers `Opened` (or `Closed`
    /// with the reason), then pumps until the attachment ends.
    pub(crate) async fn attach(
        &self,
        channel: u64,
        spec: AttachSpec,
        env: Vec<(String, String)>,
        out: Out,
        (credit, cmds): (Arc<Semaphore>, mpsc::UnboundedReceiver<Cmd>),
        channels: &Channels,
    ) {
        let (shell, created) = match self.find_or_start(&spec, env) {
            Ok(found) => found,
            Err(why) => {
                let _ = out.send(closed_at_once_frame(channel, Ending::Error(why))).await;
                return;
            }
        };
        let (reader, attachment) = shell.join(spec.resume_from, created);
        if !created {
            shell.resize(spec.cols, spec.rows);
        }
        // Before `Opened`: the relay sends no input until that frame grants its window.
        let input = Arc::new(Input::new(shell.clone()));
        channels.write_input_through(channel, input.clone());
        let frame = opened_frame(channel, shell.pid(), INPUT_WINDOW_BYTES, Some(&attachment));
        if out.send(frame).await.is_err() {
            shell.leave(reader, false);
            return;
        }
        tracing::info!(session = %shell.id(), name = ?shell.name(), created, from = attachment.replay_from, "attached");
        super::attach::serve(shell, reader, channel, out, credit, cmds, input).await;
    }

    fn find_or_start(&self, spec: &AttachSpec, env: Vec<(String, String)>) -> Result<(Arc<Shell>, bool), String> {
        let mut map = self.lock();
        match &spec.target {
            ShellTarget::Id(id) => match map.get(id) {
                Some(shell) => Ok((shell.clone(), false)),
                None => Err(format!("no shell session {id} on this machine (it ended, or the agent restarted)")),
            },
            ShellTarget::Named(name) => {
                let running = map.values().find(|s| s.name() == Some(name.as_str()) && !s.ended());
                if let Some(shell) = running {
                    return Ok((shell.clone(), false));
                }
                let shell = self.start(spec, env, Some(name.to_string()), true)?;
                map.insert(shell.id(), shell.clone());
                Ok((shell, true))
            }
            ShellTarget::New { persistent } => {
                let shell = self.start(spec, env, None, *persistent)?;
                map.insert(shell.id(), shell.clone());
                Ok((shell, true))
            }
        }
    }

    /// Spawns a shell and its supervisor. Called with the map locked (so two attaches of one
    /// new name make one session); spawning is a fork and exec, milliseconds.
    fn start(
        &self,
        spec: &AttachSpec,
        mut env: Vec<(String, String)>,
        name: Option<String>,
        persistent: bool,
    ) -> Result<Arc<Shell>, String> {
        let id = SessionId::random();
        env.push(("CMDOP_SESSION".into(), name.clone().unwrap_or_else(|| id.to_string())));
        let (pty, exit) =
            pty::spawn(spec.cols.into(), spec.rows.into(), &env).map_err(|e| format!("cannot start a shell: {e:#}"))?;
        let shell = Arc::new(Shell::new(id, name, persistent, pty));
        tracing::info!(session = %id, name = ?shell.name(), persistent, pid = shell.pid(), "shell started");
        tokio::spawn(supervise(shell.clone(), exit, self.clone()));
        Ok(shell)
    }

    /// Running sessions, oldest first.
    pub(crate) fn list(&self) -> Vec<SessionSummary> {
        let mut all: Vec<SessionSummary> = self.lock().values().filter(|s| !s.ended()).map(|s| s.summary()).collect();
        all.sort_by_key(|s| s.created_unix_ms);
        all
    }

    /// Ends the running session with this id or name.
    pub(crate) fn kill(&self, target: &str) -> Result<SessionSummary, String> {
        let id = target.parse::<SessionId>().ok();
        let shell = self
            .lock()
            .values()
            .find(|s| !s.ended() && (Some(s.id()) == id || s.name() == Some(target)))
            .cloned()
            .ok_or_else(|| format!("no shell session {target:?}"))?;
        tracing::info!(session = %shell.id(), name = ?shell.name(), "killing shell session");
        let summary = shell.summary();
        shell.kill();
        Ok(summary)
    }

    /// Answers a session query.
    pub(crate) fn answer(&self, query: proto::SessionQuery) -> proto::SessionReply {
        let result = match query.op {
            Some(session_query::Op::List(_)) => Ok(self.list()),
            Some(session_query::Op::Kill(k)) => self.kill(&k.session).map(|s| vec![s]),
            Some(session_query::Op::Unlock(_)) => Err("unlock is answered by the attach password gate".to_string()),
            Some(session_query::Op::Job(_)) => Err("jobs are answered by the job registry".to_string()),
            None => Err("empty session query".to_string()),
        };
        match result {
            Ok(sessions) => proto::SessionReply {
                request: query.request,
                sessions: sessions.iter().map(shell_session).collect(),
                ..Default::default()
            },
            Err(error) => proto::SessionReply { request: query.request, error, ..Default::default() },
        }
    }

    fn remove(&self, id: SessionId) {
        self.lock().remove(&id);
    }
}

/// Runs a session to its end, then keeps it reachable by id for `ENDED_LINGER`.
async fn supervise(shell: Arc<Shell>, exit: Exit, shells: Shells) {
    let end = pump(&shell, exit, shells.inner.idle).await;
    tracing::info!(session = %shell.id(), ?end, ran_s = shell.age().as_secs(), "shell ended");
    shell.finish(end);
    tokio::time::sleep(ENDED_LINGER).await;
    shells.remove(shell.id());
}

fn at(instant: Option<std::time::Instant>) -> Option<tokio::time::Instant> {
    instant.map(tokio::time::Instant::from_std)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Reads PTY output into the ring while no attachment does (see `Shell`), ends the session
/// when it has been alone too long, and returns once the shell has exited and its output is
/// read: the PTY closed, or it stayed quiet for `DRAIN_QUIET` while output was wanted.
async fn pump(shell: &Shell, exit: Exit, idle: Duration) -> Ending {
    let exit = exit.wait();
    tokio::pin!(exit);
    let mut control = shell.subscribe_control();
    let (mut end, mut hard_killed): (Option<Ending>, bool) = (None, false);
    // While draining: when to look again, and the output's end offset when last looked.
    let mut quiet: Option<(tokio::time::Instant, u64)> = None;
    loop {
        control.borrow_and_update();
        if let (true, Some(end)) = (shell.eof(), &end) {
            return end.clone();
        }
        let reads = (end.is_some() || shell.unattended()) && shell.wants_read();
        let (expiry, hard) = (at(shell.expiry(idle)), at(shell.kill_deadline()).filter(|_| !hard_killed));
        tokio::select! {
            _ = shell.readable(), if reads => {
                shell.fill(None);
            }
            status = &mut exit, if end.is_none() => {
                end = Some(status);
                quiet = Some((tokio::time::Instant::now() + DRAIN_QUIET, shell.output_end()));
            }
            _ = sleep_until(quiet.map(|(at, _)| at)), if quiet.is_some() => {
                let (now, seen) = (shell.output_end(), quiet.map_or(0, |(_, seen)| seen));
                if now == seen && shell.wants_read() && let Some(end) = end.take() {
                    return end;
                }
                quiet = Some((tokio::time::Instant::now() + DRAIN_QUIET, now));
            }
            _ = sleep_until(expiry), if expiry.is_some() => shell.kill(),
            _ = sleep_until(hard), if hard.is_some() => {
                hard_killed = true;
                shell.kill_hard();
            }
            _ = control.changed() => {}
        }
    }
}
