//! The user's command line against a server: one file per command group. Each command returns
//! the exit code; failures with a contract exit code are `CliError`s.

pub(crate) mod args;
mod attach;
pub(crate) mod client;
pub(crate) mod console;
pub(crate) mod error;
mod escape;
mod exec;
pub(crate) mod fleet;
pub(crate) mod home;
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
        (Some(ConnectCommand::Exec { machine, timeout, env, json, argv }), _, _) => {
            let exec = exec::ExecArgs { machine, argv, env, timeout, json };
            exec::run(&mut client().await?, exec).await
        }
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
