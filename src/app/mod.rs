//! The `cmdop` binary's commands: one parser for every side, dispatch to the side that owns
//! each command, and the compositions that span sides (`quickstart`, `server local-login`).

pub(crate) mod args;
mod quickstart;

use crate::agent::password_cmd;
use crate::cli::{self, CliError, home};
use crate::server::command::{ServerArgs, ServerCommand};
use args::{Cli, Command, ConnectArgs, ConnectCommand, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Runs one command; the result is the process exit code.
async fn run(cli: args::Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a).await,
        Command::Server(a) => server(*a).await,
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

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tower=warn,hyper=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `cmdop server` and `cmdop agent` run on one thread each (a current-thread runtime). Their
/// work is I/O and framing: a keystroke crosses a socket, a few tasks and another socket. On
/// the multi-thread runtime an I/O event that the worker parked in the driver receives goes
/// to the shared queue and wakes the other worker (a futex wake, and an IPI on a VM) for
/// every frame; on one thread the woken task runs right there. Measured: about 30 us less echo
/// latency and a quarter less server CPU per keystroke (docs/performance.md). CPU-heavy work
/// (argon2) runs on the blocking pool, SQLite on its own thread. Everything else (the CLI,
/// quickstart) keeps the default runtime.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Server(_) | Command::Agent(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Runtime::new(),
    }
}

/// The binary's whole life: parse, log, run on the right runtime, exit with the command's code.
pub fn main() -> ! {
    let args = Cli::parse();
    crate::sys::dial::install_crypto();
    init_logging(args.log_format);
    let runtime = match runtime_for(&args.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cmdop: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<CliError>() {
            Some(c) => {
                eprintln!("cmdop: {c}");
                c.exit_code()
            }
            None => {
                eprintln!("cmdop: {e:#}");
                1
            }
        },
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
