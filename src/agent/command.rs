//! `cmdop agent`: the machine daemon's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::AgentConfig;
use crate::core::secret::Secret;
use crate::sys::{dirs, signal};

/// `cmdop agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The server's URL; repeat it for several nodes of one deployment, tried in turn (the
    /// agent moves to the next when its node dies).
    #[arg(long, required = true)]
    pub(crate) server: Vec<String>,
    /// One-time enrollment token (`cmdop fleet token create`); needed on first run only.
    #[arg(long, env = "CMDOP_ENROLL_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A friendly name for this machine.
    #[arg(long)]
    pub(crate) display_name: Option<String>,
    /// Where the enrollment is kept.
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Persistent shell sessions end after this long without an attachment.
    #[arg(long, value_parser = crate::core::duration::parse, default_value = "7d")]
    pub(crate) session_idle: Duration,
}

/// `cmdop agent`.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<i32> {
    let config = AgentConfig {
        servers: args.server.iter().map(|s| s.trim_end_matches('/').to_string()).collect(),
        token: args.token.map(Secret::new),
        display_name: args.display_name,
        state_dir: args.state_dir.unwrap_or_else(dirs::agent_state),
        session_idle: args.session_idle,
    };
    // A task, not the runtime's root future: waking the root future of a current-thread
    // runtime writes to the driver's eventfd every time, and the stream pump is woken for
    // every frame (main.rs explains the runtime).
    tokio::spawn(super::run(config, signal::shutdown())).await??;
    Ok(0)
}
