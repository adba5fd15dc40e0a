//! The `cmdop` command line as one parser: the top-level commands, each side's own arguments
//! (server, agent, CLI) composed here. `docs/reference.md` lists every command and flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::agent::password_cmd::PasswordCommand;
use crate::cli::args::{ConnectCommand as RemoteCommand, ConnectFlags, FleetCommand};

/// cmdop: reach any machine from anywhere.
#[derive(Debug, Parser)]
#[command(name = "cmdop", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub(crate) log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a server and an agent for this machine, sign this CLI in, print a share link.
    Quickstart(QuickstartArgs),
    /// Run the server: relay (gRPC) and gateway (HTTP) on one listener.
    Server(Box<crate::server::command::ServerArgs>),
    /// Run the machine daemon (dials out to the server; never listens).
    Agent(crate::agent::command::AgentArgs),
    /// Sign in with the OAuth device flow: prints a URL and a code to approve in a browser.
    Login {
        /// The server (default: `CMDOP_SERVER`, or the one signed in to before).
        #[arg(long)]
        server: Option<String>,
    },
    /// Sign out: revoke this CLI's tokens and forget them.
    Logout,
    /// Show who this CLI is signed in as.
    Whoami {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fleets and machine enrollment tokens.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Machines: list them, run commands on them.
    Connect(ConnectArgs),
    /// Sign a browser in to the web console: prints (and opens) a one-time URL, valid 60 s.
    Console {
        /// Print `{"url","expires_at"}`.
        #[arg(long)]
        json: bool,
        /// Only print the URL; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Serve the fleet as MCP tools on stdio for an AI agent, as the signed-in user.
    Mcp {
        /// Limit every tool to this machine.
        #[arg(long)]
        machine: Option<String>,
    },
}

/// `cmdop quickstart`.
#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7422")]
    pub(crate) listen: String,
    /// Server data folder.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print one JSON line when ready.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `cmdop connect`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ConnectArgs {
    /// Flags of `cmdop connect` itself.
    #[command(flatten)]
    pub(crate) flags: ConnectFlags,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Option<ConnectCommand>,
}

/// `cmdop connect ...` subcommands: the remote ones the CLI runs against the server, and the
/// attach password, which the machine's own agent keeps.
#[derive(Debug, Subcommand)]
pub(crate) enum ConnectCommand {
    /// Commands against the server.
    #[command(flatten)]
    Remote(RemoteCommand),
    /// This machine's attach password (run on the machine): kept and checked by its agent only.
    #[command(subcommand)]
    Password(PasswordCommand),
}
