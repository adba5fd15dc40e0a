//! `cmdop connect password set | clear | status`: run on a machine, about its own agent's attach
//! password. The agent keeps and checks it (agent/password.rs); the server never sees it. A
//! running agent picks a change up at its next session, without a restart.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use thiserror::Error;

use super::password;
use crate::sys::dirs;

/// Why a password command failed; `Usage` is the caller's mistake (exit 2).
#[derive(Debug, Error)]
pub(crate) enum CliError {
    /// Bad arguments or input; nothing changed.
    #[error("{0}")]
    Usage(String),
    /// The state folder could not be read or written.
    #[error("{0}")]
    Failed(String),
}

/// Shortest accepted attach password: the back-off slows guessing, length makes it hopeless.
const MIN_CHARS: usize = 8;

/// Runs one `password` command.
pub(crate) fn run(command: PasswordCommand) -> Result<i32, CliError> {
    match command {
        PasswordCommand::Set { password_stdin, state_dir } => set(&agent_dir(state_dir)?, password_stdin),
        PasswordCommand::Clear { state_dir } => clear(&agent_dir(state_dir)?),
        PasswordCommand::Status { state_dir, json } => status(&agent_dir(state_dir)?, json),
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("{e:#}"))
}

/// The agent's state folder; it must hold an enrollment, or no agent would ever read the
/// password written there (a password that protects nothing is worse than none). Without
/// `--state-dir`: the agent's default folder, else the one `cmdop quickstart` uses.
fn agent_dir(state_dir: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let candidates = match state_dir {
        Some(dir) => vec![dir],
        None => vec![dirs::agent_state(), dirs::server_data().join("agent")],
    };
    for dir in &candidates {
        if super::state::load(dir).map_err(failed)?.is_some() {
            return Ok(dir.clone());
        }
    }
    let tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    Err(CliError::Usage(format!(
        "no enrolled agent in {}: run this on the machine, as the agent's user, with the agent's --state-dir",
        tried.join(" or ")
    )))
}

fn read_new_password(from_stdin: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| failed(format!("cannot read standard input: {e}")))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let no_tty =
        |e: std::io::Error| CliError::Usage(format!("cannot ask for the password ({e}): pass --password-stdin"));
    let first = rpassword::prompt_password("new attach password: ").map_err(no_tty)?;
    let again = rpassword::prompt_password("again: ").map_err(no_tty)?;
    if first != again {
        return Err(CliError::Usage("the two passwords differ; nothing changed".into()));
    }
    Ok(first)
}

fn set(dir: &Path, from_stdin: bool) -> Result<i32, CliError> {
    let new = read_new_password(from_stdin)?;
    if new.chars().count() < MIN_CHARS {
        return Err(CliError::Usage(format!(
            "an attach password needs at least {MIN_CHARS} characters; nothing changed"
        )));
    }
    password::set(dir, &new).map_err(failed)?;
    println!("attach password set: sessions on this machine now ask for it (earlier attach tokens no longer work)");
    Ok(0)
}

fn clear(dir: &Path) -> Result<i32, CliError> {
    if password::clear(dir).map_err(failed)? {
        println!("attach password cleared: sessions on this machine open without one");
    } else {
        println!("no attach password was set");
    }
    Ok(0)
}

fn status(dir: &Path, json: bool) -> Result<i32, CliError> {
    let set_at = password::status(dir).map_err(failed)?.map(crate::core::clock::rfc3339);
    if json {
        println!("{}", serde_json::json!({ "set": set_at.is_some(), "set_at": set_at }));
    } else {
        match set_at {
            Some(at) => println!("attach password: set (since {at})"),
            None => println!("attach password: not set"),
        }
    }
    Ok(0)
}

/// `cmdop connect password ...`: run on the machine whose agent keeps the password.
#[derive(Debug, Subcommand)]
pub(crate) enum PasswordCommand {
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
