//! `Api.StartJob` and `Api.QueryJob`: detached runs. The job lives in the agent; the server
//! only authorizes, routes by the machine named in the job id, and audits.

use tonic::Status;

use super::exec::audit_text;
use crate::core::session::{OpenSpec, SessionKind};
use crate::proto::{self, job_query};
use crate::store::Machine;

/// Longest wait a caller may ask for: 1 hour, in milliseconds.
const MAX_WAIT_MS: u64 = 3_600_000;

/// The agent's query that starts `spec` (already checked by `exec::spec_of`).
pub(crate) fn start_query(start: &proto::ExecStart, spec: OpenSpec, wait_ms: u64, max_bytes: u32) -> proto::JobQuery {
    let ask = spec.kind == SessionKind::Ask;
    let job = proto::JobStart {
        kind: if ask { proto::SessionKind::Ask } else { proto::SessionKind::Exec } as i32,
        argv: if ask { Vec::new() } else { spec.argv.clone() },
        ask: if ask { spec.argv.concat() } else { String::new() },
        env: spec.env.into_iter().collect(),
        timeout_ms: start.timeout_ms,
        attach_token: start.attach_token.clone(),
    };
    proto::JobQuery {
        principal: spec.access.principal,
        op: Some(job_query::Op::Start(job)),
        wait_ms: wait_ms.min(MAX_WAIT_MS),
        offset: 0,
        max_bytes,
    }
}

/// The agent's query for an action on one of its jobs.
pub(crate) fn action_query(r: &proto::QueryJobRequest, local: String, principal: String) -> proto::JobQuery {
    let op = match r.action() {
        proto::JobAction::Status => job_query::Op::Status(local),
        proto::JobAction::Output => job_query::Op::Output(local),
        proto::JobAction::Cancel => job_query::Op::Cancel(local),
    };
    proto::JobQuery {
        principal,
        op: Some(op),
        wait_ms: r.wait_ms.min(MAX_WAIT_MS),
        offset: r.offset,
        max_bytes: r.max_bytes,
    }
}

/// The audit action of a job query.
pub(crate) fn action_name(r: &proto::QueryJobRequest) -> &'static str {
    match r.action() {
        proto::JobAction::Status => "job.status",
        proto::JobAction::Output => "job.output",
        proto::JobAction::Cancel => "job.cancel",
    }
}

/// A client's job id (`<machine id>.<agent's id>`) split into its two parts.
pub(crate) fn split_id(id: &str) -> Result<(&str, String), Status> {
    match id.trim().split_once('.') {
        Some((machine, local)) if !machine.is_empty() && !local.is_empty() => Ok((machine, local.to_string())),
        _ => Err(Status::not_found(format!(
            "no job {id:?}: a job id looks like MACHINE-ID.JOB, as `exec --detach` printed it"
        ))),
    }
}

/// The agent's report as clients see it: the job id made global, the machine named.
pub(crate) fn for_client(mut report: proto::JobReport, machine: &Machine) -> proto::JobReport {
    report.job_id = format!("{}.{}", machine.id, report.job_id);
    report.machine_id = machine.id.to_string();
    report.hostname = machine.hostname.clone();
    report
}

/// The audit detail of a job action: the job, its state so far, and for a start what runs.
pub(crate) fn audit_detail(job: &str, report: Option<&proto::JobReport>, start: Option<&proto::ExecStart>) -> String {
    let state = match report {
        None => "state=refused".to_string(),
        Some(r) if r.state() == proto::JobState::Running => "state=running exit=-".to_string(),
        Some(r) => format!("state={} exit={} duration_ms={}", state_name(r.state()), shell_code(r), r.duration_ms),
    };
    match start {
        Some(s) => format!("job={job} {state} {}", audit_text(s)),
        None => format!("job={job} {state}"),
    }
}

/// `running`, `exited` or `cancelled`.
pub(crate) fn state_name(state: proto::JobState) -> &'static str {
    match state {
        proto::JobState::Running => "running",
        proto::JobState::Exited => "exited",
        proto::JobState::Cancelled => "cancelled",
    }
}

/// The code a shell would report: the exit code, 128+N for signal N, 124 on timeout.
fn shell_code(r: &proto::JobReport) -> i32 {
    match (r.timed_out, r.signal) {
        (true, _) => 124,
        (false, 0) => r.exit_code,
        (false, s) => 128 + s,
    }
}
