//! `cmdop connect exec MACHINE [--timeout D] [--env K=V]... [--json] -- CMD...`

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
const JSON_CAPTURE_BYTES: usize = 16 << 20;

/// What to run.
pub(crate) struct ExecArgs {
    /// Machine as typed.
    pub(crate) machine: String,
    /// The remote argv.
    pub(crate) argv: Vec<String>,
    /// Extra environment.
    pub(crate) env: Vec<(String, String)>,
    /// Kill after this long.
    pub(crate) timeout: Duration,
    /// Print one JSON object instead of streaming.
    pub(crate) json: bool,
}

#[derive(Serialize, Default)]
struct Report {
    machine_id: String,
    hostname: String,
    command: Vec<String>,
    exit_code: i32,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    duration_ms: u64,
    timed_out: bool,
}

#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        let room = JSON_CAPTURE_BYTES.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }
}

/// Runs the command; returns the remote exit code (128+N for signal N, 124 on timeout).
pub(crate) async fn run(client: &mut Client, args: ExecArgs) -> Result<i32, CliError> {
    let machine = machines::resolve(client, &args.machine).await?;
    if !machine.online {
        return Err(CliError::Failed(format!(
            "machine {} is offline (last seen {}): start its agent, or check `cmdop connect --list`",
            machine.hostname,
            machines::ago(&machine.last_seen)
        )));
    }
    let mut unlocker = Unlocker::new(&machine);
    let (tx, mut outputs) = loop {
        let start = proto::ExecStart {
            machine_id: machine.id.clone(),
            argv: args.argv.clone(),
            env: args.env.iter().cloned().collect(),
            timeout_ms: u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX),
            attach_token: unlocker.token(),
        };
        match start_exec(client, start).await {
            Ok(started) => break started,
            Err(status) if unlocker.answer(client, &status).await? => {}
            Err(status) => return Err(status.into()),
        }
    };
    let mut interrupts = signal(SignalKind::interrupt()).map_err(|e| CliError::Failed(e.to_string()))?;
    let (mut out, mut err) = (Capture::default(), Capture::default());
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut presses = 0;
    let exit = loop {
        tokio::select! {
            msg = outputs.message() => match msg? {
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stdout(d)) }) if args.json => out.push(&d),
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stderr(d)) }) if args.json => err.push(&d),
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stdout(d)) }) => write(&mut stdout, &d).await?,
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Stderr(d)) }) => write(&mut stderr, &d).await?,
                Some(proto::ExecOutput { kind: Some(exec_output::Kind::Exit(e)) }) => break e,
                Some(_) => {}
                None => return Err(CliError::Failed("the server ended the command without an exit status".into())),
            },
            _ = interrupts.recv() => {
                presses += 1;
                let signo = match presses { 1 => libc::SIGINT, 2 => libc::SIGTERM, _ => return Ok(130) };
                let _ = tx.send(proto::ExecInput { kind: Some(exec_input::Kind::Signal(signo)) }).await;
            }
        }
    };
    let code = exit_code(&exit);
    if args.json {
        let report = Report {
            machine_id: machine.id,
            hostname: machine.hostname,
            command: args.argv,
            exit_code: code,
            signal: (exit.signal != 0).then_some(exit.signal),
            stdout: String::from_utf8_lossy(&out.bytes).into_owned(),
            stderr: String::from_utf8_lossy(&err.bytes).into_owned(),
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
            duration_ms: exit.duration_ms,
            timed_out: exit.timed_out,
        };
        println!("{}", serde_json::to_string(&report).map_err(|e| CliError::Failed(e.to_string()))?);
    } else if exit.timed_out {
        eprintln!("cmdop: command timed out after {}", crate::core::duration::format(args.timeout));
    }
    Ok(code)
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
fn exit_code(e: &proto::ExecExit) -> i32 {
    match (e.timed_out, e.signal) {
        (true, _) => 124,
        (false, 0) => e.exit_code,
        (false, s) => 128 + s,
    }
}

async fn write(w: &mut (impl AsyncWriteExt + Unpin), data: &[u8]) -> Result<(), CliError> {
    // A closed local pipe (`| head`) ends the command like it would locally.
    w.write_all(data).await.map_err(|e| CliError::Failed(format!("cannot write output: {e}")))?;
    w.flush().await.map_err(|e| CliError::Failed(format!("cannot write output: {e}")))
}
