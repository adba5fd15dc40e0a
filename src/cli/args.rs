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
    /// The audit log: runs, asks, links and sessions (admins: everyone's; others: their own).
    Audit {
        /// Events of the last D (default 7d).
        #[arg(long, value_parser = crate::core::duration::parse)]
        since: Option<Duration>,
        /// Only events about this machine.
        #[arg(long)]
        machine: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
        #[arg(required_unless_present = "on", conflicts_with = "on")]
        machine: Option<String>,
        /// Run on many machines at once: `all`, a comma list of machines, or a glob on
        /// hostname or display name (`web-*`).
        #[arg(long, value_name = "SELECTOR")]
        on: Option<String>,
        /// With --on: machines run at once.
        #[arg(long, default_value_t = crate::cli::fanout::DEFAULT_PARALLEL, requires = "on")]
        parallel: usize,
        /// Kill the command after this long (default 30s; with --detach, 24h).
        #[arg(long, value_parser = crate::core::duration::parse)]
        timeout: Option<Duration>,
        /// Start it as a job and print its id at once; the command keeps running on the
        /// machine (see `cmdop connect job`).
        #[arg(long, conflicts_with = "on")]
        detach: bool,
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
    /// Ask the machine's ask handler (`cmdop agent --ask-handler`); prints its answer.
    Ask {
        /// Machine: hostname, display name, unique id prefix or UUID.
        #[arg(required_unless_present = "on", conflicts_with = "on")]
        machine: Option<String>,
        /// Ask many machines at once: `all`, a comma list of machines, or a glob on hostname
        /// or display name.
        #[arg(long, value_name = "SELECTOR")]
        on: Option<String>,
        /// With --on: machines asked at once.
        #[arg(long, default_value_t = crate::cli::fanout::DEFAULT_PARALLEL, requires = "on")]
        parallel: usize,
        /// Give up (kill the handler) after this long (default 2m; with --detach, 24h).
        #[arg(long, value_parser = crate::core::duration::parse)]
        timeout: Option<Duration>,
        /// Start it as a job and print its id at once (see `cmdop connect job`).
        #[arg(long, conflicts_with = "on")]
        detach: bool,
        /// Print one JSON object (the exec shape, the answer in `stdout`).
        #[arg(long)]
        json: bool,
        /// The request text, after `--` (the words are joined with spaces).
        #[arg(last = true, required = true)]
        text: Vec<String>,
    },
    /// Detached runs (`exec --detach`, `ask --detach`): their status, output and cancelling.
    #[command(subcommand)]
    Job(JobCommand),
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

/// `cmdop connect job ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// The job's state: running, exited (with its code) or cancelled.
    Status {
        /// The job id `--detach` printed.
        id: String,
        /// Wait up to this long for the job to end before answering.
        #[arg(long, value_parser = crate::core::duration::parse)]
        wait: Option<Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The job's output from byte `--offset` on (each stream), up to `--max-bytes` of each.
    Output {
        /// The job id.
        id: String,
        /// First byte wanted, of stdout and of stderr.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Most bytes of each stream.
        #[arg(long, default_value_t = crate::cli::jobs::DEFAULT_PAGE_BYTES)]
        max_bytes: u32,
        /// Print JSON with `next_offset` and `has_more`.
        #[arg(long)]
        json: bool,
    },
    /// Kill the job's processes (SIGKILL to its process group).
    Cancel {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
