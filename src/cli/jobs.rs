//! Jobs: `cmdop connect exec|ask ... --detach` and `cmdop connect job status|output|cancel ID`.
//! A job runs on the machine whatever the caller does; its agent keeps its state and the last
//! 2 MiB of each output stream, paged by byte offset. `cmdop mcp` uses the same calls.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::args::JobCommand;
use super::client::Client;
use super::error::CliError;
use super::exec::{self, Job};
use super::machines;
use super::unlock::Unlocker;
use crate::proto;

/// Output per stream in one `job output` answer unless `--max-bytes` says otherwise: 64 KiB.
pub(crate) const DEFAULT_PAGE_BYTES: u32 = 64 << 10;

/// Starts `job` on `machine`, waits up to `wait` for it, and returns its state with the first
/// `max_bytes` of each stream. With `prompt`, asks for the machine's attach password when it
/// has one; without, a protected machine fails unless a token is cached.
pub(crate) async fn start(
    client: &mut Client,
    machine: &proto::MachineInfo,
    job: &Job,
    wait: Duration,
    max_bytes: u32,
    prompt: bool,
) -> Result<proto::JobReport, CliError> {
    let mut unlocker = Unlocker::new(machine);
    loop {
        let req = proto::StartJobRequest {
            start: Some(job.start(&machine.id, unlocker.token())),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            max_bytes,
        };
        match client.start_job(req).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(status) if prompt && unlocker.answer(client, &status).await? => {}
            Err(status) => return Err(status.into()),
        }
    }
}

/// One action on a job by id.
pub(crate) async fn query(
    client: &mut Client,
    id: &str,
    action: proto::JobAction,
    offset: u64,
    max_bytes: u32,
    wait: Duration,
) -> Result<proto::JobReport, CliError> {
    let req = proto::QueryJobRequest {
        job_id: id.to_string(),
        action: action as i32,
        offset,
        max_bytes,
        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
    };
    Ok(client.query_job(req).await?.into_inner())
}

/// `job status --json` (docs/reference.md).
#[derive(Serialize, Debug, Clone)]
pub(crate) struct JobStatus {
    pub(crate) job_id: String,
    pub(crate) machine_id: String,
    pub(crate) hostname: String,
    /// `running`, `exited` or `cancelled`.
    pub(crate) state: &'static str,
    pub(crate) command: Vec<String>,
    pub(crate) ask: bool,
    /// Null while running; 124 on timeout, 128+N when killed by signal N.
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) timed_out: bool,
    pub(crate) duration_ms: u64,
    pub(crate) started_at: String,
    pub(crate) stdout_bytes: u64,
    pub(crate) stderr_bytes: u64,
}

impl JobStatus {
    pub(crate) fn of(r: &proto::JobReport) -> Self {
        let running = r.state() == proto::JobState::Running;
        let signal = Some(r.signal).filter(|s| *s != 0);
        let exit_code = (!running).then(|| exec::exit_code(&exit_of(r)));
        Self {
            job_id: r.job_id.clone(),
            machine_id: r.machine_id.clone(),
            hostname: r.hostname.clone(),
            state: state_name(r.state()),
            command: r.command.clone(),
            ask: r.ask,
            exit_code,
            signal,
            timed_out: r.timed_out,
            duration_ms: r.duration_ms,
            started_at: crate::core::clock::rfc3339(i64::try_from(r.started_unix_ms / 1000).unwrap_or(0)),
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
        }
    }
}

fn exit_of(r: &proto::JobReport) -> proto::ExecExit {
    proto::ExecExit { exit_code: r.exit_code, signal: r.signal, timed_out: r.timed_out, duration_ms: r.duration_ms }
}

/// `running`, `exited` or `cancelled`.
pub(crate) fn state_name(state: proto::JobState) -> &'static str {
    match state {
        proto::JobState::Running => "running",
        proto::JobState::Exited => "exited",
        proto::JobState::Cancelled => "cancelled",
    }
}

/// `exec|ask ... --detach`: starts the job and prints its id.
pub(crate) async fn detach(client: &mut Client, machine: &str, job: &Job, json: bool) -> Result<i32, CliError> {
    let machine = machines::resolve(client, machine).await?;
    exec::require_online(&machine)?;
    let report = start(client, &machine, job, Duration::ZERO, 0, true).await?;
    if json {
        println!("{}", json!({"job_id": report.job_id}));
    } else {
        println!("{}", report.job_id);
        eprintln!(
            "started on {}; follow it with `cmdop connect job status {id}` and `cmdop connect job output {id}`",
            machine.hostname,
            id = report.job_id
        );
    }
    Ok(0)
}

/// `cmdop connect job status|output|cancel ID`.
pub(crate) async fn run(client: &mut Client, cmd: JobCommand) -> Result<i32, CliError> {
    match cmd {
        JobCommand::Status { id, wait, json } => {
            let r = query(client, &id, proto::JobAction::Status, 0, 0, wait.unwrap_or_default()).await?;
            print_status(&r, json)
        }
        JobCommand::Cancel { id, json } => {
            let r = query(client, &id, proto::JobAction::Cancel, 0, 0, Duration::ZERO).await?;
            print_status(&r, json)
        }
        JobCommand::Output { id, offset, max_bytes, json } => {
            let r = query(client, &id, proto::JobAction::Output, offset, max_bytes, Duration::ZERO).await?;
            print_output(&r, json).await
        }
    }
}

fn print_status(r: &proto::JobReport, json: bool) -> Result<i32, CliError> {
    let status = JobStatus::of(r);
    if json {
        println!("{}", serde_json::to_string(&status).map_err(|e| CliError::Failed(e.to_string()))?);
        return Ok(0);
    }
    let how = match status.exit_code {
        None => format!("running for {} s", status.duration_ms / 1000),
        Some(code) => format!("{} with code {code} after {} ms", status.state, status.duration_ms),
    };
    println!("{}  {}  {}  {how}", status.job_id, status.hostname, status.command.join(" "));
    println!("output: {} bytes on stdout, {} on stderr", status.stdout_bytes, status.stderr_bytes);
    Ok(0)
}

async fn print_output(r: &proto::JobReport, json: bool) -> Result<i32, CliError> {
    if json {
        let page = json!({
            "job_id": r.job_id, "state": state_name(r.state()), "offset": r.offset,
            "next_offset": r.next_offset, "has_more": r.has_more, "dropped": r.dropped,
            "stdout": String::from_utf8_lossy(&r.stdout), "stderr": String::from_utf8_lossy(&r.stderr),
        });
        println!("{page}");
        return Ok(0);
    }
    exec::write(&mut tokio::io::stdout(), &r.stdout).await?;
    exec::write(&mut tokio::io::stderr(), &r.stderr).await?;
    if r.dropped > 0 {
        eprintln!("cmdop: {} bytes before offset {} are no longer kept", r.dropped, r.offset);
    }
    if r.has_more {
        eprintln!("cmdop: more output: `cmdop connect job output {} --offset {}`", r.job_id, r.next_offset);
    }
    Ok(0)
}
