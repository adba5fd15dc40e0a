//! Fan-out: one command or ask on many machines at once (`exec --on`, `ask --on`, MCP
//! `ask_machines`). One machine's failure is a result like the others, never the end of the
//! run.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::Client;
use super::error::CliError;
use super::exec::{self, Job, Report};
use crate::core::selector;
use crate::proto;

/// Machines run at once unless `--parallel` says otherwise.
pub(crate) const DEFAULT_PARALLEL: usize = 16;

/// One machine's result: the exec shape, plus why it did not run or answer (`offline`,
/// `denied`, `no ask handler`, or a message), `None` when it did.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Outcome {
    #[serde(flatten)]
    pub(crate) report: Report,
    pub(crate) error: Option<String>,
    /// The CLI exit code this result stands for: the remote one, or the failure's.
    #[serde(skip)]
    pub(crate) code: i32,
    /// How people know the machine: its display name, else its hostname.
    #[serde(skip)]
    pub(crate) label: String,
}

/// The machines `selector` names in the fleet (exit 2 when one does not resolve).
pub(crate) async fn select(client: &mut Client, selector: &str) -> Result<Vec<proto::MachineInfo>, CliError> {
    let machines = super::machines::fetch(client).await?;
    Ok(selector::select(selector, &machines)?.into_iter().cloned().collect())
}

/// Runs `job` on every machine, at most `parallel` at once; results keyed by machine id.
pub(crate) async fn gather(
    client: &Client,
    machines: Vec<proto::MachineInfo>,
    job: &Job,
    parallel: usize,
    cap: usize,
) -> BTreeMap<String, Outcome> {
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut runs = JoinSet::new();
    for machine in machines {
        let (mut client, job, permits) = (client.clone(), job.clone(), permits.clone());
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let outcome = run_one(&mut client, &machine, &job, cap).await;
            (machine.id, outcome)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(done) = runs.join_next().await {
        if let Ok((id, outcome)) = done {
            results.insert(id, outcome);
        }
    }
    results
}

async fn run_one(client: &mut Client, machine: &proto::MachineInfo, job: &Job, cap: usize) -> Outcome {
    let failed = |error: String, code: i32| Outcome {
        report: Report {
            machine_id: machine.id.clone(),
            hostname: machine.hostname.clone(),
            command: job.words.clone(),
            exit_code: code,
            ..Default::default()
        },
        error: Some(error),
        code,
        label: label_of(machine),
    };
    if !machine.online {
        return failed("offline".into(), 1);
    }
    match exec::capture(client, machine, job, cap, false).await {
        Ok(report) => Outcome { code: report.exit_code, report, error: None, label: label_of(machine) },
        Err(e) => {
            let code = e.exit_code();
            let error = match e {
                CliError::Denied(_) => "denied".to_string(),
                CliError::NoAskHandler(_) => "no ask handler".to_string(),
                CliError::Failed(m) if m.contains("is offline") || m.contains("went away") => "offline".to_string(),
                other => other.to_string(),
            };
            failed(error, code)
        }
    }
}

fn label_of(machine: &proto::MachineInfo) -> String {
    if machine.display_name.is_empty() { machine.hostname.clone() } else { machine.display_name.clone() }
}

/// `exec --on` / `ask --on`: prints each distinct result once with the machines that gave it
/// (or the JSON map); exit 0 when every machine succeeded, else the highest failing code.
pub(crate) async fn run(
    client: &mut Client,
    selector: &str,
    job: Job,
    parallel: usize,
    json: bool,
) -> Result<i32, CliError> {
    let machines = select(client, selector).await?;
    let results = gather(client, machines, &job, parallel, exec::JSON_CAPTURE_BYTES).await;
    if json {
        println!("{}", serde_json::to_string(&results).map_err(|e| CliError::Failed(e.to_string()))?);
    } else {
        print_grouped(&results);
    }
    Ok(results.values().map(|o| o.code).filter(|c| *c != 0).max().unwrap_or(0))
}

/// One block per distinct result, headed by the machines that gave it.
fn print_grouped(results: &BTreeMap<String, Outcome>) {
    let mut groups: Vec<(&Outcome, Vec<&str>)> = Vec::new();
    for outcome in results.values() {
        let same = |o: &Outcome| {
            o.error == outcome.error
                && o.code == outcome.code
                && o.report.stdout == outcome.report.stdout
                && o.report.stderr == outcome.report.stderr
        };
        match groups.iter_mut().find(|(o, _)| same(o)) {
            Some((_, hosts)) => hosts.push(&outcome.label),
            None => groups.push((outcome, vec![&outcome.label])),
        }
    }
    for (outcome, hosts) in groups {
        let status = match &outcome.error {
            Some(e) => format!("error: {e}"),
            None => format!("exit {}", outcome.code),
        };
        println!("== {} ({status}) ==", hosts.join(", "));
        print!("{}", outcome.report.stdout);
        if !outcome.report.stderr.is_empty() {
            eprint!("{}", outcome.report.stderr);
        }
        if !outcome.report.stdout.is_empty() && !outcome.report.stdout.ends_with('\n') {
            println!();
        }
    }
}
