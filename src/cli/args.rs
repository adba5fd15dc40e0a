//! The syntax of the user's commands against a server (clap); `app::args` composes them
//! into the `cmdop` command line. `docs/reference.md` lists every command and flag.

use std::time::Duration;

use clap::{Args, Subcommand};

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got {text:?}")),
    }
}

/// `cmdop fleet ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
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
pub(crate) enum TokenCommand {
    /// A one-time token that enrolls one machine (`cmdop agent --token`).
    Create {
        /// Lifetime (default 1h, at most 30d).
        #[arg(long, value_parser = crate::core::duration::parse)]
        ttl: Option<Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `cmdop connect` itself (its subcommands are composed in `app::args`).
#[derive(Debug, Args)]
pub(crate) struct ConnectFlags {
    /// List the machines of the active fleet.
    #[arg(long)]
    pub(crate) list: bool,
    /// With --list: online machines only.
    #[arg(long, requires = "list")]
    pub(crate) online: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Machine: hostname, display name, unique id prefix or UUID. Without one, on a terminal:
    /// pick it interactively.
    pub(crate) machine: Option<String>,
    /// Create or reattach this persistent session (it outlives the connection; `Enter ~ .`
    /// detaches).
    #[arg(long, value_name = "NAME", conflicts_with = "list")]
    pub(crate) session: Option<String>,
}

/// `cmdop connect ...` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConnectCommand {
    /// Run one command (no PTY, no shell); exits with its exit code.
    Exec {
        /// Machine: hostname, display name, unique id prefix or UUID.
        machine: String,
        /// Kill the command after this long.
        #[arg(long, value_parser = crate::core::duration::parse, default_value = "30s")]
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
        #[arg(long, value_parser = crate::core::duration::parse, default_value = "24h")]
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
