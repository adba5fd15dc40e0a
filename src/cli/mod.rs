//! The user's command line against a server: one file per command group. Each command returns
//! the exit code; failures with a contract exit code are `CliError`s.

pub(crate) mod args;
mod attach;
pub(crate) mod client;
pub(crate) mod console;
pub(crate) mod error;
mod escape;
pub(crate) mod exec;
pub(crate) mod fanout;
pub(crate) mod fleet;
pub(crate) mod home;
pub(crate) mod jobs;
pub(crate) mod login;
pub(crate) mod machines;
mod picker;
mod sessions;
pub(crate) mod share;
mod terminal;
mod unlock;

use args::{ConnectCommand, ConnectFlags, FleetCommand};
pub(crate) use error::CliError;

/// `cmdop whoami`.
pub(crate) async fn whoami(json: bool) -> Result<i32, CliError> {
    fleet::whoami(json).await
}

/// `cmdop fleet ...`.
pub(crate) async fn fleet(command: FleetCommand) -> Result<i32, CliError> {
    fleet::run(command).await
}

/// Timeouts when none is given: commands 30 s, asks 2 min.
const DEFAULT_EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const DEFAULT_ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The kill timeout of a run: as given; else a detached one gets the agent's limit (0: 24 h).
fn timeout_of(given: Option<std::time::Duration>, detach: bool, default: std::time::Duration) -> std::time::Duration {
    match (given, detach) {
        (Some(t), _) => t,
        (None, true) => std::time::Duration::ZERO,
        (None, false) => default,
    }
}

/// `exec`/`ask` on one machine (or detached as a job), or fanned out with `--on`.
async fn run_job(
    client: &mut client::Client,
    machine: Option<String>,
    on: Option<String>,
    parallel: usize,
    job: exec::Job,
    detach: bool,
    json: bool,
) -> Result<i32, CliError> {
    match (on, machine) {
        (Some(selector), _) => fanout::run(client, &selector, job, parallel, json).await,
        (None, Some(machine)) if detach => jobs::detach(client, &machine, &job, json).await,
        (None, Some(machine)) => exec::run(client, exec::ExecArgs { machine, job, json }).await,
        (None, None) => Err(CliError::Usage("name a machine, or several with --on".into())),
    }
}

/// `cmdop connect ...`: the picker, attach, listings, exec and links.
pub(crate) async fn connect(args: ConnectFlags, command: Option<ConnectCommand>) -> Result<i32, CliError> {
    let wants_picker = command.is_none() && !args.list && args.machine.is_none();
    if wants_picker && !terminal::interactive() {
        return Err(CliError::Usage(
            "not on a terminal, so no machine picker: name a machine (`cmdop connect MACHINE`; see `cmdop connect --list`)".into(),
        ));
    }
    // Only `password` runs without the server: connect lazily.
    let client = || async { client::connect().await.map(|(c, _)| c) };
    match (command, args.list, args.machine) {
        (Some(ConnectCommand::Exec { machine, on, parallel, timeout, detach, env, json, argv }), _, _) => {
            let timeout = timeout_of(timeout, detach, DEFAULT_EXEC_TIMEOUT);
            let job = exec::Job { words: argv, ask: false, env, timeout };
            run_job(&mut client().await?, machine, on, parallel, job, detach, json).await
        }
        (Some(ConnectCommand::Ask { machine, on, parallel, timeout, detach, json, text }), _, _) => {
            let timeout = timeout_of(timeout, detach, DEFAULT_ASK_TIMEOUT);
            let job = exec::Job { words: text, ask: true, env: Vec::new(), timeout };
            run_job(&mut client().await?, machine, on, parallel, job, detach, json).await
        }
        (Some(ConnectCommand::Job(cmd)), _, _) => jobs::run(&mut client().await?, cmd).await,
        (Some(ConnectCommand::Share { machine, ttl, read_only, max_opens, session, json }), _, _) => {
            let link = share::LinkOptions { ttl, read_only, max_opens, session };
            let args = share::ShareArgs { machine, link, json };
            share::share(&mut client().await?, args).await
        }
        (Some(ConnectCommand::Shares { machine, audit, json }), _, _) => {
            share::shares(&mut client().await?, machine, audit, json).await
        }
        (Some(ConnectCommand::Unshare { id, machine }), _, _) => {
            share::unshare(&mut client().await?, id, machine).await
        }
        (None, true, _) => machines::list(&mut client().await?, args.online, args.json).await,
        (Some(ConnectCommand::Sessions { machine, json }), _, _) => {
            sessions::list(&mut client().await?, machine, json).await
        }
        (Some(ConnectCommand::Kill { machine, session }), _, _) => {
            sessions::kill(&mut client().await?, &machine, &session).await
        }
        (None, false, Some(machine)) => attach::run(&mut client().await?, &machine, args.session).await,
        (None, false, None) => {
            let mut client = client().await?;
            match picker::pick(&mut client).await? {
                Some(machine) => attach::run(&mut client, &machine.id, args.session).await,
                None => Ok(1),
            }
        }
    }
}
