//! The `cmdop` binary's commands: one parser for every side, dispatch to the side that owns
//! each command, and the compositions that span sides (`quickstart`, `server local-login`).

pub mod args;
mod quickstart;

use crate::agent::password_cmd;
use crate::cli::{self, CliError, home};
use crate::server::command::{ServerArgs, ServerCommand};
use args::{Command, ConnectArgs, ConnectCommand};

/// Runs one command; the result is the process exit code.
pub async fn run(cli: args::Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a).await,
        Command::Server(a) => server(a).await,
        Command::Agent(a) => crate::agent::command::run(a).await,
        Command::Login { server } => Ok(cli::login::login(server).await?),
        Command::Logout => Ok(cli::login::logout().await?),
        Command::Whoami { json } => Ok(cli::whoami(json).await?),
        Command::Fleet(f) => Ok(cli::fleet(f).await?),
        Command::Connect(c) => Ok(connect(c).await?),
        Command::Mcp { machine } => Ok(crate::mcp::run(machine).await?),
        Command::Console { json, no_open } => Ok(cli::console::run(json, no_open).await?),
    }
}

async fn connect(args: ConnectArgs) -> Result<i32, CliError> {
    match args.command {
        Some(ConnectCommand::Password(command)) => password_cmd::run(command).map_err(|e| match e {
            password_cmd::CliError::Usage(m) => CliError::Usage(m),
            password_cmd::CliError::Failed(m) => CliError::Failed(m),
        }),
        Some(ConnectCommand::Remote(command)) => cli::connect(args.flags, Some(command)).await,
        None => cli::connect(args.flags, None).await,
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<i32> {
    match args.command {
        Some(ServerCommand::LocalLogin { data_dir, database, server, email }) => {
            let store = crate::server::command::open_store(data_dir, database.as_deref()).await?;
            local_login(&store, &server, &email).await
        }
        _ => crate::server::command::run(args).await,
    }
}

/// `cmdop server local-login`: the operator's root of trust is the data folder (or the
/// database), so this signs the local CLI in as the first owner by opening it directly.
async fn local_login(store: &crate::store::Store, server: &str, email: &str) -> anyhow::Result<i32> {
    let pair = crate::server::bootstrap::sign_in_owner(store, email, "cmdop server local-login").await?;
    home::save_credentials(&home::Credentials::from_pair(server, &pair))?;
    println!("signed in to {server} as the owner ({})", home::dir().display());
    Ok(0)
}
