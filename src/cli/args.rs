//! Command-line syntax (clap). CONTRACT.md names every command and flag here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

fn duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got {text:?}")),
    }
}

/// cmdop: reach any machine from anywhere.
#[derive(Debug, Parser)]
#[command(name = "cmdop", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a server and an agent for this machine, sign this CLI in, print a share link.
    Quickstart(QuickstartArgs),
    /// Run the server: relay (gRPC) and gateway (HTTP) on one listener.
    Server(ServerArgs),
    /// Run the machine daemon (dials out to the server; never listens).
    Agent(AgentArgs),
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
}

/// `cmdop quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7422")]
    pub listen: String,
    /// Server data folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON line when ready.
    #[arg(long)]
    pub json: bool,
}

/// `cmdop server`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// Address to listen on, `HOST:PORT` (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7422")]
    pub listen: String,
    /// URL users and agents reach (default `http://<bound address>`).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Data folder: database and keys.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How often agents heartbeat; offline after three missed.
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub heartbeat_interval: Duration,
    /// Longest lifetime a share link may be given.
    #[arg(long, value_parser = duration, default_value = "30d")]
    pub max_link_ttl: Duration,
    /// A reverse proxy in front of the server (repeatable, e.g. 127.0.0.1): requests from it
    /// are attributed to the address its `X-Forwarded-For` names, for audit logs and per-IP
    /// limits. Without it the header is ignored.
    #[arg(long, value_name = "IP")]
    pub trusted_proxy: Vec<std::net::IpAddr>,
    /// Administration of a server's data folder.
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
}

/// `cmdop server ...` administration.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Sign this CLI in as the server's first owner, by direct access to the data folder
    /// (for the operator on the server machine; creates the owner and fleet on first use).
    LocalLogin {
        /// Data folder of the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The server's URL as the CLI should reach it.
        #[arg(long)]
        server: String,
        /// The owner's email (first use only).
        #[arg(long, default_value = "owner@localhost")]
        email: String,
    },
    /// Share-link signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// User accounts (by direct access to the data folder).
    #[command(subcommand)]
    User(UserCommand),
}

/// `cmdop server user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user to a fleet with a role (or change their role) and print a new one-time
    /// password for the sign-in page.
    Add {
        /// Email (the sign-in name).
        email: String,
        /// Role in the fleet: owner, admin, member or viewer.
        #[arg(long, default_value = "member")]
        role: String,
        /// Fleet (created if missing).
        #[arg(long, default_value = "default")]
        fleet: String,
        /// Data folder of the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// `cmdop server keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; links signed by older keys keep working until they expire.
    /// A running server picks the new key up within seconds.
    Rotate {
        /// Data folder of the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The server's --max-link-ttl (how long old keys must keep verifying).
        #[arg(long, value_parser = duration, default_value = "30d")]
        max_link_ttl: Duration,
    },
}

/// `cmdop agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The server's URL.
    #[arg(long)]
    pub server: String,
    /// One-time enrollment token (`cmdop fleet token create`); needed on first run only.
    #[arg(long, env = "CMDOP_ENROLL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A friendly name for this machine.
    #[arg(long)]
    pub display_name: Option<String>,
    /// Where the enrollment is kept.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Persistent shell sessions end after this long without an attachment.
    #[arg(long, value_parser = duration, default_value = "7d")]
    pub session_idle: Duration,
}

/// `cmdop fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Fleets you belong to, with your role.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make NAME the active fleet for every later command.
    Use {
        /// Fleet name.
        name: String,
    },
    /// Machine enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `cmdop fleet token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// A one-time token that enrolls one machine (`cmdop agent --token`).
    Create {
        /// Lifetime (default 1h, at most 30d).
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `cmdop connect`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConnectArgs {
    /// List the machines of the active fleet.
    #[arg(long)]
    pub list: bool,
    /// With --list: online machines only.
    #[arg(long, requires = "list")]
    pub online: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Machine: hostname, display name, unique id prefix or UUID. Without one, on a terminal:
    /// pick it interactively.
    pub machine: Option<String>,
    /// Create or reattach this persistent session (it outlives the connection; `Enter ~ .`
    /// detaches).
    #[arg(long, value_name = "NAME", conflicts_with = "list")]
    pub session: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Option<ConnectCommand>,
}

/// `cmdop connect ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConnectCommand {
    /// Run one command (no PTY, no shell); exits with its exit code.
    Exec {
        /// Machine: hostname, display name, unique id prefix or UUID.
        machine: String,
        /// Kill the command after this long.
        #[arg(long, value_parser = duration, default_value = "30s")]
        timeout: Duration,
        /// Environment variable for the command (repeatable).
        #[arg(long = "env", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// Print one JSON object with the output and exit status.
        #[arg(long)]
        json: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Make a share link: anyone with it gets a browser terminal until it expires or is revoked.
    Share {
        /// Machine: hostname, display name, unique id prefix or UUID.
        machine: String,
        /// Lifetime (5s up to the server's maximum).
        #[arg(long, value_parser = duration, default_value = "24h")]
        ttl: Duration,
        /// Viewers can watch but not type.
        #[arg(long)]
        read_only: bool,
        /// Most sessions the link may open.
        #[arg(long)]
        max_opens: Option<u32>,
        /// Join this persistent session instead of starting a new shell.
        #[arg(long)]
        session: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List share links with their opens and live sessions.
    Shares {
        /// Only links of this machine.
        #[arg(long)]
        machine: Option<String>,
        /// Show the audit log of one link instead.
        #[arg(long, value_name = "ID")]
        audit: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List shell sessions (persistent and attached ones) of one machine or of every online one.
    Sessions {
        /// Only this machine.
        machine: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a shell session.
    Kill {
        /// Machine: hostname, display name, unique id prefix or UUID.
        machine: String,
        /// The session's name or id (see `cmdop connect sessions`).
        session: String,
    },
    /// This machine's attach password (run on the machine): kept and checked by its agent only.
    #[command(subcommand)]
    Password(PasswordCommand),
    /// Revoke one link, or every link of a machine; open terminals close at once.
    Unshare {
        /// Link id (from `cmdop connect shares`).
        #[arg(required_unless_present = "machine", conflicts_with = "machine")]
        id: Option<String>,
        /// Revoke every live link of this machine.
        #[arg(long)]
        machine: Option<String>,
    },
}

/// `cmdop connect password ...`: run on the machine whose agent keeps the password.
#[derive(Debug, Subcommand)]
pub enum PasswordCommand {
    /// Set or change it (asked twice, not echoed); every earlier attach token stops working.
    Set {
        /// Read the new password from the first line of standard input instead.
        #[arg(long)]
        password_stdin: bool,
        /// The agent's state folder (its `--state-dir`).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Remove it: sessions open without a password again.
    Clear {
        /// The agent's state folder (its `--state-dir`).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Say whether one is set, and since when.
    Status {
        /// The agent's state folder (its `--state-dir`).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print JSON: `{"set": bool, "set_at": RFC 3339 or null}`.
        #[arg(long)]
        json: bool,
    },
}
