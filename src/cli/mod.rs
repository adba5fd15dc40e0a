//! The `cmdop` command line: one file per command group; `run` dispatches and returns the
//! exit code. Failures with a contract exit code are `CliError`s.

pub mod args;
mod attach;
pub mod client;
pub mod error;
mod escape;
mod exec;
mod fleet;
pub mod home;
pub mod login;
mod machines;
mod password;
mod picker;
mod quickstart;
mod serve;
mod sessions;
mod share;
mod terminal;
mod unlock;

use std::path::PathBuf;

use args::{Command, ConnectArgs, ConnectCommand};
pub use error::CliError;

/// Default server data folder: `~/.local/share/cmdop/server`.
pub fn default_server_dir() -> PathBuf {
    home::home_dir().join(".local/share/cmdop/server")
}

/// Default agent state folder: `~/.local/share/cmdop/agent`.
pub fn default_agent_dir() -> PathBuf {
    home::home_dir().join(".local/share/cmdop/agent")
}

/// Runs one command; the result is the process exit code.
pub async fn run(cli: args::Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a).await,
        Command::Server(a) => serve::server(a).await,
        Command::Agent(a) => serve::agent(a).await,
        Command::Login { server } => Ok(login::login(server).await?),
        Command::Logout => Ok(login::logout().await?),
        Command::Whoami { json } => Ok(fleet::whoami(json).await?),
        Command::Fleet(f) => Ok(fleet::run(f).await?),
        Command::Connect(c) => Ok(connect(c).await?),
    }
}

async fn connect(args: ConnectArgs) -> Result<i32, CliError> {
    let wants_picker = args.command.is_none() && !args.list && args.machine.is_none();
    if wants_picker && !terminal::interactive() {
        return Err(CliError::Usage(
            "not on a terminal, so no machine picker: name a machine (`cmdop connect MACHINE`; see `cmdop connect --list`)".into(),
        ));
    }
    // Only `password` runs without the server: connect lazily.
    let client = || async { client::connect().await.map(|(c, _)| c) };
    match (args.command, args.list, args.machine) {
        (Some(ConnectCommand::Password(command)), _, _) => password::run(command),
        (Some(ConnectCommand::Exec { machine, timeout, env, json, argv }), _, _) => {
            let exec = exec::ExecArgs { machine, argv, env, timeout, json };
            exec::run(&mut client().await?, exec).await
        }
        (Some(ConnectCommand::Share { machine, ttl, read_only, max_opens, session, json }), _, _) => {
            let args = share::ShareArgs { machine, ttl, read_only, max_opens, session, json };
            share::share(&mut client().await?, args).await
        }
        (Some(ConnectCommand::Shares { machine, audit, json }), _, _) => share::shares(&mut client().await?, machine, audit, json).await,
        (Some(ConnectCommand::Unshare { id, machine }), _, _) => share::unshare(&mut client().await?, id, machine).await,
        (None, true, _) => machines::list(&mut client().await?, args.online, args.json).await,
        (Some(ConnectCommand::Sessions { machine, json }), _, _) => sessions::list(&mut client().await?, machine, json).await,
        (Some(ConnectCommand::Kill { machine, session }), _, _) => sessions::kill(&mut client().await?, &machine, &session).await,
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
