//! `cmdop mcp [--machine M]`: the fleet as tools for an AI agent, over MCP on stdio.
//!
//! It speaks for the CLI's signed-in user (never a machine credential): every tool call opens
//! the CLI's client (refreshing its token when due) with the `mcp` surface, so the server
//! authorizes and audits each call as that user. `tools` holds the fleet-wide tools, `jobs`
//! the ones that run on one machine and follow a run as a job (kept by the machine's agent).

mod jobs;
mod tools;

use rmcp::ServiceExt;

use crate::cli::CliError;

/// Serves MCP on stdin/stdout until the client closes it. `machine` scopes every tool to one
/// machine.
pub(crate) async fn run(machine: Option<String>) -> Result<i32, CliError> {
    let server = tools::Machines::new(machine);
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| CliError::Failed(format!("cannot start the MCP session on stdio: {e}")))?;
    service.waiting().await.map_err(|e| CliError::Failed(format!("the MCP session failed: {e}")))?;
    Ok(0)
}
