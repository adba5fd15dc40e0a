//! `cmdop connect exec MACHINE [--timeout D] [--env K=V]... [--json] -- CMD...` and
//! `cmdop connect ask MACHINE [--timeout D] [--json] -- TEXT...`: one command, or one request
//! to the machine's ask handler, over the same call. `capture` collects a run's output for
//! the callers that print or return it whole (`--json`, fan-out, MCP).

use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::client::Client;
use super::error::CliError;
use super::machines;
use super::unlock::Unlocker;
use crate::proto::{self, exec_input, exec_output};

/// Captured output kept per stream with `--json`: 16 MiB; beyond it `*_truncated` is set.
pub(crate) const JSON_CAPTURE_BYTES: usize = 16 << 20;

/// What to run on a machine.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// The remote argv, or the ask's words.
    pub(crate) words: Vec<String>,
    /// An ask to the machine's ask handler (the words joined by spaces), not a command.
    pub(crate) ask: bool,
    /// Extra environment.
    pub(crate) env: Vec<(String, String)>,
    /// Kill after this long.
    pub(crate) timeout: Duration,
}

impl Job {
    pub(crate) fn start(&self, machine_id: &str, attach_token: String) -> proto::ExecStart {
        let (argv, ask) = match self.ask {
            true => (Vec::new(), Some(self.words.join(" "))),
            false => (self.words.clone(), None),
        };
        proto::ExecStart {
            machine_id: machine_id.to_string(),
            argv,
            env: self.env.iter().cloned().collect(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            attach_token,
            ask,
        }
    }
}

/// What to run, and how to print it.
pub(crate) struct ExecArgs {
    /// Machine as typed.
    pub(crate) machine: String,
    /// The command or ask.
    pub(crate) job: Job,
    /// Print one JSON object instead of streaming.
    pub(crate) json: bool,
}

/// The `exec --json` object (docs/reference.md).
#[derive(Serialize, Default, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) machine_id: String,
    pub(crate) hostname: String,
    pub(crate) command: Vec<String>,
    pub(crate) exit_code: i32,
    pub(crate) signal: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr_truncated: bool,
    pub(crate) duration_ms: u64,
    pub(crate) timed_out: bool,
}

#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
    cap: usize,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Self { cap, ..Default::default() }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }
}

/// Runs the command or ask; returns the remote exit code (128+N for signal N, 124 on timeout).
pub(crate) async fn run(client: &mut Client, args: ExecArgs) -> Result<i32, CliError> {
    let machine = machines::resolve(client, &args.machine).await?;
    require_online(&machine)?;
    if args.json {
        let report = capture(client, &machine, &args.job, JSON_CAPTURE_BYTES, true).await?;
        println!("{}", serde_json::to_string(&report).map_err(|e| CliError::Failed(e.to_string()))?);
        return Ok(report.exit_code);
    }
    let (tx, mut outputs) = start_prompting(client, &machine, &args.job).await?;
    let mut interrupts = signal(SignalKind::interrupt()).map_err(|e| CliError::Failed(e.to_string()))?;
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut presses = 0;
    let exit = loop {
        tokio::select! {
            msg = outputs.message() => match msg? {
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stdout(d)) }) => write(&mut stdout, &d).await?,
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stderr(d)) }) => write(&mut stderr, &d).await?,
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Exit(e)) }) => break e,
                Some(_) => {}
                None => return Err(ended_without_status()),
            },
            _ = interrupts.recv() => {
                presses += 1;
                let signo = match presses { 1 => libc::SIGINT, 2 => libc::SIGTERM, _ => return Ok(130) };
                let _ = tx.send(proto::ExecInput { kind: Some(exec_input::Kind::Signal(signo)) }).await;
            }
        }
    };
    if exit.timed_out {
        eprintln!("cmdop: command timed out after {}", crate::core::duration::format(args.job.timeout));
    }
    Ok(exit_code(&exit))
}

/// Fails unless the machine is online, saying how to find out more.
pub(crate) fn require_online(machine: &proto::MachineInfo) -> Result<(), CliError> {
    if machine.online {
        return Ok(());
    }
    Err(CliError::Failed(format!(
        "machine {} is offline (last seen {}): start its agent, or check `cmdop connect --list`",
        machine.hostname,
        machines::ago(&machine.last_seen)
    )))
}

/// Runs the job to its end and collects up to `cap` bytes of each stream. Without `prompt`
/// (fan-out, MCP) a machine asking for its attach password fails with `Denied` unless a
/// token is cached.
pub(crate) async fn capture(
    client: &mut Client,
    machine: &proto::MachineInfo,
    job: &Job,
    cap: usize,
    prompt: bool,
) -> Result<Report, CliError> {
    let (_tx, mut outputs) = match prompt {
        true => start_prompting(client, machine, job).await?,
        false => {
            let token = Unlocker::new(machine).token();
            start_exec(client, job.start(&machine.id, token)).await?
        }
    };
    let (mut out, mut err) = (Capture::new(cap), Capture::new(cap));
    let exit = loop {
        match outputs.message().await? {
            Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stdout(d)) }) => out.push(&d),
            Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stderr(d)) }) => err.push(&d),
            Some(proto::ExecOutput { kind: Some(exec_output::Kind::Exit(e)) }) => break e,
            Some(_) => {}
            None => return Err(ended_without_status()),
        }
    };
    Ok(Report {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        command: job.words.clone(),
        exit_code: exit_code(&exit),
        signal: (exit.signal != 0).then_some(exit.signal),
        stdout: String::from_utf8_lossy(&out.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&err.bytes).into_owned(),
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        duration_ms: exit.duration_ms,
        timed_out: exit.timed_out,
    })
}

fn ended_without_status() -> CliError {
    CliError::Failed("the server ended the command without an exit status".into())
}

/// Starts the job, prompting for the machine's attach password when it asks for one.
async fn start_prompting(
    client: &mut Client,
    machine: &proto::MachineInfo,
    job: &Job,
) -> Result<(mpsc::Sender<proto::ExecInput>, Streaming<proto::ExecOutput>), CliError> {
    let mut unlocker = Unlocker::new(machine);
    loop {
        match start_exec(client, job.start(&machine.id, unlocker.token())).await {
            Ok(started) => return Ok(started),
            Err(status) if unlocker.answer(client, &status).await? => {}
            Err(status) => return Err(status.into()),
        }
    }
}

/// Sends the start message; the server answers once the command runs (or why it cannot).
async fn start_exec(
    client: &mut Client,
    start: proto::ExecStart,
) -> Result<(mpsc::Sender<proto::ExecInput>, Streaming<proto::ExecOutput>), Status> {
    let (tx, rx) = mpsc::channel(8);
    let _ = tx.send(proto::ExecInput { kind: Some(exec_input::Kind::Start(start)) }).await;
    let outputs = client.exec(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, outputs))
}

/// Shell-style exit code: the code, 128+N for signal N, 124 on timeout.
pub(crate) fn exit_code(e: &proto::ExecExit) -> i32 {
    match (e.timed_out, e.signal) {
        (true, _) => 124,
        (false, 0) => e.exit_code,
        (false, s) => 128 + s,
    }
}

pub(crate) async fn write(w: &mut (impl AsyncWriteExt + Unpin), data: &[u8]) -> Result<(), CliError> {
    // A closed local pipe (`| head`) ends the command like it would locally.
    w.write_all(data).await.map_err(|e| CliError::Failed(format!("cannot write output: {e}")))?;
    w.flush().await.map_err(|e| CliError::Failed(format!("cannot write output: {e}")))
}
