//! The tools that run something on one machine, and the job tools. `exec` and `ask_machine`
//! start a job on the machine's agent and wait for it up to `timeout_s`: a run that ends in
//! time returns its result; one that does not returns a `job_id` while it keeps running, to
//! follow with `job_status`, `job_output` and `job_cancel`. Output pages by byte offset.

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::{Json, schemars, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tools::{DEFAULT_ASK_TIMEOUT_S, Machines, ask_job, message, timeout};
use crate::cli::exec::{self, Job};
use crate::cli::jobs::{self, state_name};
use crate::proto;

/// Output per stream in one result unless `max_bytes` says otherwise: 64 KiB.
const DEFAULT_MAX_BYTES: u32 = 64 << 10;
/// How long `exec` waits for its command unless `timeout_s` says otherwise: 30 s.
const DEFAULT_EXEC_WAIT_S: u64 = 30;

type ToolResult<T> = Result<Json<T>, String>;

#[derive(Deserialize, JsonSchema)]
pub(crate) struct ExecParams {
    /// Machine: hostname, display name, id or unique id prefix (see list_machines).
    machine: String,
    /// A shell command line, run with `sh -c`. Give this or `argv`.
    command: Option<String>,
    /// Program and arguments, run directly without a shell. Give this or `command`.
    argv: Option<Vec<String>>,
    /// Extra environment variables.
    env: Option<BTreeMap<String, String>>,
    /// Seconds to wait for the command (default 30, at most 3600). If it is still running
    /// then, the result has a job_id and the command keeps running.
    timeout_s: Option<u64>,
    /// Most bytes of stdout and of stderr in this result (default 65536); page on with
    /// job_output.
    max_bytes: Option<u32>,
}

/// A run's state and the first page of its output.
#[derive(Serialize, JsonSchema)]
pub(crate) struct RunResult {
    machine_id: String,
    hostname: String,
    /// The exit code; 124 when killed at its limit, 128+N when killed by signal N; null while
    /// running.
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    /// More output than returned here: read it with job_output {job_id, offset: next_offset}.
    has_more: bool,
    next_offset: u64,
    /// Still running after timeout_s: follow it with job_status, job_output, job_cancel.
    running: bool,
    /// Set when running or has_more.
    job_id: Option<String>,
    duration_ms: u64,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct AskParams {
    /// Machine: hostname, display name, id or unique id prefix (see list_machines).
    machine: String,
    /// The request for the machine's ask handler.
    prompt: String,
    /// Seconds to wait for the answer (default 120, at most 3600); past it the result has a
    /// job_id and the handler keeps running.
    timeout_s: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct JobParams {
    /// The job_id an exec or ask_machine result gave.
    job_id: String,
    /// job_status only: wait up to this many seconds for the job to end (default 0).
    wait_s: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct JobOutputParams {
    /// The job_id an exec or ask_machine result gave.
    job_id: String,
    /// Byte offset to read from, in stdout and in stderr (default 0; use next_offset).
    offset: Option<u64>,
    /// Most bytes of each stream (default 65536).
    max_bytes: Option<u32>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct JobState {
    job_id: String,
    machine_id: String,
    hostname: String,
    /// "running", "exited" or "cancelled".
    state: String,
    /// Null while running.
    exit_code: Option<i32>,
    duration_ms: u64,
    /// Bytes written so far (the machine keeps the last 2 MiB of each).
    stdout_bytes: u64,
    stderr_bytes: u64,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct JobPage {
    job_id: String,
    /// "running", "exited" or "cancelled".
    state: String,
    /// Where this page starts (later than asked when older bytes were no longer kept).
    offset: u64,
    stdout: String,
    stderr: String,
    /// Offset for the next call when has_more is true.
    next_offset: u64,
    /// More output is kept past this page, or the job still runs.
    has_more: bool,
    /// Bytes asked for that were no longer kept.
    dropped: u64,
}

#[tool_router(router = job_router, vis = "pub(super)")]
impl Machines {
    #[tool(
        description = "Run one command on a machine and return its exit code and output. Give `command` (a shell command line, run with sh -c) or `argv` (run directly). No terminal, stdin is empty. Waits up to timeout_s (default 30): a command still running then keeps running and the result has running=true and a job_id for job_status, job_output and job_cancel. At most max_bytes (default 65536) of stdout and of stderr come back; when has_more is true, read on with job_output."
    )]
    async fn exec(&self, Parameters(p): Parameters<ExecParams>) -> ToolResult<RunResult> {
        let words = match (p.command, p.argv) {
            (Some(c), None) => vec!["sh".to_string(), "-c".to_string(), c],
            (None, Some(argv)) if !argv.is_empty() => argv,
            _ => return Err("give exactly one of `command` (a shell command line) or `argv` (a non-empty list)".into()),
        };
        let env = p.env.unwrap_or_default().into_iter().collect();
        let job = Job { words, ask: false, env, timeout: Duration::ZERO };
        let wait = timeout(p.timeout_s, DEFAULT_EXEC_WAIT_S);
        self.run(&p.machine, &job, wait, p.max_bytes.unwrap_or(DEFAULT_MAX_BYTES)).await
    }

    #[tool(
        description = "Ask one machine's ask handler (a program its owner set up with `cmdop agent --ask-handler`) and return its answer in stdout. Fails on machines without a handler: use exec there instead. Waits up to timeout_s (default 120); past it the result has running=true and a job_id to follow with job_status and job_output."
    )]
    async fn ask_machine(&self, Parameters(p): Parameters<AskParams>) -> ToolResult<RunResult> {
        let mut job = ask_job(&p.prompt, None)?;
        job.timeout = Duration::ZERO;
        let wait = timeout(p.timeout_s, DEFAULT_ASK_TIMEOUT_S);
        self.run(&p.machine, &job, wait, DEFAULT_MAX_BYTES).await
    }

    #[tool(
        description = "State of a job (from exec or ask_machine): running, exited with its exit_code, or cancelled, and how much output it wrote. wait_s waits up to that many seconds for it to end."
    )]
    async fn job_status(&self, Parameters(p): Parameters<JobParams>) -> ToolResult<JobState> {
        let wait = Duration::from_secs(p.wait_s.unwrap_or(0).min(3600));
        let r = self.query(&p.job_id, proto::JobAction::Status, 0, 0, wait).await?;
        Ok(Json(job_state(&r)))
    }

    #[tool(
        description = "Read a job's output from byte `offset` on (the same offset in stdout and stderr), at most max_bytes (default 65536) of each. Follow next_offset while has_more is true. The machine keeps the last 2 MiB of each stream; older bytes are reported in `dropped`."
    )]
    async fn job_output(&self, Parameters(p): Parameters<JobOutputParams>) -> ToolResult<JobPage> {
        let max = p.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).max(1);
        let r = self.query(&p.job_id, proto::JobAction::Output, p.offset.unwrap_or(0), max, Duration::ZERO).await?;
        Ok(Json(JobPage {
            state: state_name(r.state()).to_string(),
            offset: r.offset,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            next_offset: r.next_offset,
            has_more: r.has_more,
            dropped: r.dropped,
            job_id: r.job_id,
        }))
    }

    #[tool(description = "Stop a running job: kills its processes. Returns its final state.")]
    async fn job_cancel(&self, Parameters(p): Parameters<JobParams>) -> ToolResult<JobState> {
        let r = self.query(&p.job_id, proto::JobAction::Cancel, 0, 0, Duration::ZERO).await?;
        Ok(Json(job_state(&r)))
    }
}

impl Machines {
    /// Starts `job` on the machine, waits up to `wait`, and reports it with its first page.
    async fn run(&self, machine: &str, job: &Job, wait: Duration, max_bytes: u32) -> ToolResult<RunResult> {
        let (mut client, machine) = self.machine(machine).await?;
        exec::require_online(&machine).map_err(message)?;
        let r = jobs::start(&mut client, &machine, job, wait, max_bytes.max(1), false).await.map_err(message)?;
        let status = jobs::JobStatus::of(&r);
        let running = status.exit_code.is_none();
        Ok(Json(RunResult {
            machine_id: r.machine_id.clone(),
            hostname: r.hostname.clone(),
            exit_code: status.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            has_more: r.has_more,
            next_offset: r.next_offset,
            running,
            job_id: r.has_more.then(|| r.job_id.clone()),
            duration_ms: r.duration_ms,
        }))
    }

    /// One action on a job, within the scope (`--machine`).
    async fn query(
        &self,
        id: &str,
        action: proto::JobAction,
        offset: u64,
        max_bytes: u32,
        wait: Duration,
    ) -> Result<proto::JobReport, String> {
        let mut client = match &self.scope {
            Some(scope) => {
                let (client, machine) = self.machine(scope).await?;
                if !id.starts_with(&format!("{}.", machine.id)) {
                    return Err(format!(
                        "this MCP server is limited to machine {scope:?} (`cmdop mcp --machine`): that job is elsewhere"
                    ));
                }
                client
            }
            None => self.client().await?,
        };
        jobs::query(&mut client, id, action, offset, max_bytes, wait).await.map_err(message)
    }
}

fn job_state(r: &proto::JobReport) -> JobState {
    let s = jobs::JobStatus::of(r);
    JobState {
        job_id: s.job_id,
        machine_id: s.machine_id,
        hostname: s.hostname,
        state: s.state.to_string(),
        exit_code: s.exit_code,
        duration_ms: s.duration_ms,
        stdout_bytes: s.stdout_bytes,
        stderr_bytes: s.stderr_bytes,
    }
}
