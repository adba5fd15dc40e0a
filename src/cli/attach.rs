//! `cmdop connect MACHINE [--session NAME]`: an interactive shell on a machine, like ssh.
//!
//! The local terminal goes raw, so keys (Ctrl-C as byte 0x03, Ctrl-Z) reach the remote PTY,
//! which turns them into signals exactly as a local terminal would. Ctrl-D detaches locally
//! (CONTRACT.md), as does `Enter ~ .`; `Enter ~ Ctrl-D` sends an end of input (see `escape`).
//! Window size follows SIGWINCH. The process exits with the shell's exit code.
//!
//! The CLI remembers the offset of the next output byte it expects. When the connection drops
//! (network, server restart, agent reconnecting), it reattaches to the same session by id
//! "from offset N" for up to `RECONNECT_FOR`: the agent replays what was missed from its ring,
//! so nothing is lost or doubled; a gap (the ring overflowed meanwhile) is reported.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::client::{self, Client};
use super::error::CliError;
use super::escape::{self, Action, Escapes};
use super::terminal::{self, RawMode};
use super::unlock::Unlocker;
use super::{machines, picker};
use crate::proto::{self, attach_input, attach_output};

/// Input messages queued toward the server before the input task waits.
const INPUT_QUEUE: usize = 64;
/// Local events (keys, resizes) queued toward the input task.
const LOCAL_QUEUE: usize = 16;
/// How long a dropped connection is retried before giving up: 30 s (the agent keeps a
/// one-shot shell that long; a persistent one can be reattached later by name).
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// First and longest pause between two reconnect attempts.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// After `~.`, how long to wait for the server to confirm before leaving anyway.
const DETACH_WAIT: Duration = Duration::from_secs(3);

/// One connection's two directions.
struct Link {
    tx: mpsc::Sender<proto::AttachInput>,
    outputs: Streaming<proto::AttachOutput>,
}

/// Something happening locally that the input task forwards.
enum Local {
    Keys(Vec<u8>),
    Resize(u16, u16),
}

/// How an attach ended.
enum Outcome {
    /// The shell exited with this code.
    Exited(i32),
    /// The user detached.
    Detached,
    /// The CLI was told to stop (SIGTERM, SIGHUP): exit with this code.
    Stopped(i32),
}

/// The session this CLI is attached to.
struct Attach {
    machine: proto::MachineInfo,
    /// Sent again on every reconnect.
    attach_token: String,
    session_id: String,
    name: Option<String>,
    persistent: bool,
    /// Offset of the next output byte expected.
    next: u64,
}

/// Resolves the machine, attaches, and runs until the shell ends or the user detaches.
pub(crate) async fn run(client: &mut Client, machine: &str, session: Option<String>) -> Result<i32, CliError> {
    eprint!("resolving... ");
    let machine = machines::resolve(client, machine).await.inspect_err(|_| eprintln!("failed"))?;
    if !machine.online {
        eprintln!("failed");
        return Err(CliError::Failed(format!(
            "machine {} is offline (last seen {}): start its agent, or check `cmdop connect --list`",
            machine.hostname,
            machines::ago(&machine.last_seen)
        )));
    }
    eprintln!("ok");
    picker::remember(&machine.id);
    eprint!("dialing relay... ");
    let (cols, rows) = terminal::size();
    let mut unlocker = Unlocker::new(&machine);
    let (link, attached) = loop {
        let start = proto::AttachStart {
            machine_id: machine.id.clone(),
            session_name: session.clone().unwrap_or_default(),
            cols: cols.into(),
            rows: rows.into(),
            attach_token: unlocker.token(),
            ..Default::default()
        };
        match dial(client, start).await {
            Ok(dialed) => break dialed,
            Err(status) => {
                eprintln!("{}", if super::unlock::asks(&status) { "password required" } else { "failed" });
                if !unlocker.answer(client, &status).await? {
                    return Err(status.into());
                }
                eprint!("dialing relay... ");
            }
        }
    };
    eprintln!("ok");
    let mut attach = Attach {
        attach_token: unlocker.token(),
        machine,
        session_id: attached.session_id.clone(),
        name: Some(attached.session_name.clone()).filter(|n| !n.is_empty()),
        persistent: attached.persistent,
        next: attached.replay_from,
    };
    eprintln!("{}", banner(&attach, &attached));
    let raw = RawMode::enable().map_err(|e| CliError::Failed(format!("cannot put the terminal in raw mode: {e}")))?;
    let outcome = attach.pump(link).await;
    drop(raw);
    Ok(attach.report(outcome?))
}

fn banner(attach: &Attach, attached: &proto::Attached) -> String {
    let mut text = match &attach.name {
        Some(name) if attached.created => {
            format!("attached to new session {name:?} - Ctrl-D to detach (the session lives on)")
        }
        Some(name) => {
            format!("attached to session {name:?} - Ctrl-D to detach (the session lives on)")
        }
        None => "attached - Ctrl-D to detach".to_string(),
    };
    if attached.dropped > 0 {
        text.push_str(&format!("\n({} bytes of older output are no longer buffered)", attached.dropped));
    }
    text
}

/// Opens an attach stream and waits for the server's `attached`.
async fn dial(client: &mut Client, start: proto::AttachStart) -> Result<(Link, proto::Attached), Status> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let first = proto::AttachInput { kind: Some(attach_input::Kind::Start(start)) };
    tx.send(first).await.map_err(|_| Status::internal("cannot start the attach"))?;
    let mut outputs = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    match outputs.message().await? {
        Some(proto::AttachOutput { kind: Some(attach_output::Kind::Attached(a)) }) => Ok((Link { tx, outputs }, a)),
        _ => Err(Status::unavailable("the server ended the attach before confirming it")),
    }
}

/// Whether a failure may heal by reconnecting (the server or the agent coming back).
fn retryable(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
    )
}

fn os_error(what: &str, e: std::io::Error) -> CliError {
    CliError::Failed(format!("{what}: {e}"))
}

/// Resolves when `sig` fires (never, when it could not be installed).
async fn fired(sig: &mut Option<Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Attach {
    /// Runs the attach: output to stdout, keys and resizes to the server, reconnecting as
    /// needed, until the shell ends, the user detaches or the CLI is told to stop.
    async fn pump(&mut self, mut link: Link) -> Result<Outcome, CliError> {
        let (current_tx, current) = watch::channel(Some(link.tx.clone()));
        let (local_tx, local) = mpsc::channel(LOCAL_QUEUE);
        let (actions_tx, mut actions) = mpsc::channel(4);
        tokio::spawn(forward_keys(terminal::keys(), local_tx.clone()));
        let input = tokio::spawn(forward_input(local, current, actions_tx));
        let mut winch = signal(SignalKind::window_change()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut stdout = tokio::io::stdout();
        let (mut detaching, mut actions_open) = (None, true);
        let outcome = loop {
            tokio::select! {
                msg = link.outputs.message() => {
                    let out = match msg {
                        Ok(Some(out)) => out,
                        Ok(None) | Err(_) if detaching.is_some() => break Ok(Outcome::Detached),
                        Err(status) if !retryable(&status) => break Err(status.into()),
                        Ok(None) | Err(_) => match self.reconnect(&mut actions).await {
                            Ok(Some(fresh)) => {
                                link = fresh;
                                current_tx.send_replace(Some(link.tx.clone()));
                                continue;
                            }
                            Ok(None) => break Ok(Outcome::Detached),
                            Err(e) => break Err(e),
                        },
                    };
                    match self.show(out, &mut stdout).await {
                        Ok(Some(outcome)) => break Ok(outcome),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                }
                action = actions.recv(), if actions_open => match action {
                    Some(Action::Detach) => detaching = Some(Instant::now() + DETACH_WAIT),
                    Some(Action::Help) => eprint!("{}", escape::HELP),
                    None => actions_open = false,
                },
                _ = sleep_until(detaching) => break Ok(Outcome::Detached),
                _ = fired(&mut winch) => {
                    let (cols, rows) = terminal::size();
                    let _ = local_tx.try_send(Local::Resize(cols, rows));
                }
                _ = fired(&mut term) => break Ok(self.stop(&link, libc::SIGTERM).await),
                _ = fired(&mut hup) => break Ok(self.stop(&link, libc::SIGHUP).await),
            }
        };
        input.abort();
        outcome
    }

    /// Handles one message from the server; `Some` when the attach is over.
    async fn show(
        &mut self,
        out: proto::AttachOutput,
        stdout: &mut tokio::io::Stdout,
    ) -> Result<Option<Outcome>, CliError> {
        match out.kind {
            Some(attach_output::Kind::Output(chunk)) => {
                // Bytes before `next` were already shown (a replay overlapping what arrived):
                // skip them so nothing is doubled.
                let skip = usize::try_from(self.next.saturating_sub(chunk.offset)).unwrap_or(usize::MAX);
                let end = chunk.offset + chunk.data.len() as u64;
                if let Some(fresh) = chunk.data.get(skip..).filter(|d| !d.is_empty()) {
                    stdout.write_all(fresh).await.map_err(|e| os_error("cannot write output", e))?;
                    stdout.flush().await.map_err(|e| os_error("cannot write output", e))?;
                }
                self.next = self.next.max(end);
                Ok(None)
            }
            Some(attach_output::Kind::Gap(gap)) => {
                eprint!(
                    "\r\n[cmdop: {} bytes of output were dropped: this terminal fell behind the others]\r\n",
                    gap.dropped
                );
                Ok(None)
            }
            Some(attach_output::Kind::Exit(exit)) => Ok(Some(Outcome::Exited(exit.exit_code))),
            Some(attach_output::Kind::Detached(_)) => Ok(Some(Outcome::Detached)),
            Some(attach_output::Kind::Attached(_)) | None => Ok(None),
        }
    }

    /// Reattaches by id from the next expected offset, for up to `RECONNECT_FOR`. `None`
    /// when the user detached (`~.`) meanwhile.
    async fn reconnect(&mut self, actions: &mut mpsc::Receiver<Action>) -> Result<Option<Link>, CliError> {
        eprint!("\r\n[cmdop: connection lost; reconnecting (Enter ~ . to give up)]\r\n");
        let deadline = Instant::now() + RECONNECT_FOR;
        let mut delay = RETRY_FIRST;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                Some(Action::Detach) = actions.recv() => return Ok(None),
            }
            match self.redial().await {
                Ok(link) => {
                    eprint!("[cmdop: reconnected]\r\n");
                    return Ok(Some(link));
                }
                Err(e) if !e.retry || Instant::now() >= deadline => return Err(e.error),
                Err(_) => delay = (delay * 2).min(RETRY_MAX),
            }
        }
    }

    async fn redial(&mut self) -> Result<Link, Redial> {
        let (mut client, _) = client::connect().await.map_err(|error| Redial { retry: true, error })?;
        let (cols, rows) = terminal::size();
        let start = proto::AttachStart {
            machine_id: self.machine.id.clone(),
            session_id: self.session_id.clone(),
            cols: cols.into(),
            rows: rows.into(),
            resume_from: Some(self.next),
            attach_token: self.attach_token.clone(),
            ..Default::default()
        };
        let (link, attached) = match dial(&mut client, start).await {
            Ok(ok) => ok,
            Err(status) if status.code() == Code::FailedPrecondition => {
                let error =
                    CliError::Failed(format!("the session ended while the connection was down ({})", status.message()));
                return Err(Redial { retry: false, error });
            }
            Err(status) => {
                return Err(Redial { retry: retryable(&status), error: status.into() });
            }
        };
        if attached.dropped > 0 {
            eprint!("[cmdop: {} bytes of output were dropped while disconnected]\r\n", attached.dropped);
        }
        Ok(link)
    }

    /// The CLI was told to stop: leave the session as a detach would, exit 128+signal.
    async fn stop(&self, link: &Link, signo: i32) -> Outcome {
        let detach = proto::AttachInput { kind: Some(attach_input::Kind::Detach(proto::Detach {})) };
        let _ = tokio::time::timeout(Duration::from_millis(500), link.tx.send(detach)).await;
        Outcome::Stopped(128 + signo)
    }

    /// Says how it ended (raw mode is off by now) and picks the exit code.
    fn report(&self, outcome: Outcome) -> i32 {
        match outcome {
            Outcome::Exited(code) => code,
            Outcome::Stopped(code) => code,
            Outcome::Detached => {
                match (&self.name, self.persistent) {
                    (Some(name), _) => eprintln!(
                        "\ndetached from session {name:?}; reattach with: cmdop connect {} --session {name}",
                        self.machine.hostname
                    ),
                    (None, true) => eprintln!("\ndetached from session {}", self.session_id),
                    (None, false) => eprintln!("\ndisconnected; the shell was ended"),
                }
                0
            }
        }
    }
}

/// A reconnect attempt's failure and whether another attempt may succeed.
struct Redial {
    retry: bool,
    error: CliError,
}

/// Stdin chunks as local events.
async fn forward_keys(mut keys: mpsc::Receiver<Vec<u8>>, local: mpsc::Sender<Local>) {
    while let Some(k) = keys.recv().await {
        if local.send(Local::Keys(k)).await.is_err() {
            return;
        }
    }
}

/// Local events -> the current connection, apart from the output loop so that waiting for
/// input credit (a shell not reading its input) never stops output from being shown. Escape
/// sequences become actions for the output loop.
async fn forward_input(
    mut local: mpsc::Receiver<Local>,
    mut current: watch::Receiver<Option<mpsc::Sender<proto::AttachInput>>>,
    actions: mpsc::Sender<Action>,
) {
    let mut escapes = Escapes::default();
    while let Some(event) = local.recv().await {
        let mut messages = Vec::new();
        match event {
            Local::Keys(keys) => {
                let scan = escapes.feed(&keys);
                if !scan.forward.is_empty() {
                    messages.push(attach_input::Kind::Data(scan.forward.into()));
                }
                if scan.action == Some(Action::Detach) {
                    messages.push(attach_input::Kind::Detach(proto::Detach {}));
                }
                if let Some(action) = scan.action {
                    let _ = actions.send(action).await;
                }
            }
            Local::Resize(cols, rows) => {
                messages.push(attach_input::Kind::Resize(proto::TerminalSize { cols: cols.into(), rows: rows.into() }));
            }
        }
        for kind in messages {
            deliver(&mut current, proto::AttachInput { kind: Some(kind) }).await;
        }
    }
}

/// Sends on the current connection, waiting for a reconnect when it is down.
async fn deliver(current: &mut watch::Receiver<Option<mpsc::Sender<proto::AttachInput>>>, msg: proto::AttachInput) {
    loop {
        let tx = current.borrow_and_update().clone();
        if let Some(tx) = tx
            && tx.send(msg.clone()).await.is_ok()
        {
            return;
        }
        if current.changed().await.is_err() {
            return;
        }
    }
}
