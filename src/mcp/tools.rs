//! The MCP tools: what a model may do with the fleet. Failures a model can act on (unknown
//! machine, role too low, offline) are tool results marked `isError` with a message saying
//! what to do next; results carry structured content with an output schema.

use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{Json, ServerHandler, schemars, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cli::client::{Client, Surface, connect_as};
use crate::cli::exec::Job;
use crate::cli::{CliError, fanout, machines};
use crate::proto;

/// Output kept per stream of each machine's answer to `ask_machines`: 4 MiB.
const KEPT_BYTES: usize = 4 << 20;
/// Timeouts when none is given: asks 120 s; at most 1 hour.
pub(super) const DEFAULT_ASK_TIMEOUT_S: u64 = 120;
const MAX_TIMEOUT_S: u64 = 3600;

type ToolResult<T> = Result<Json<T>, String>;

/// The tool set, optionally scoped to one machine.
#[derive(Clone)]
pub(crate) struct Machines {
    tool_router: ToolRouter<Self>,
    pub(super) scope: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct MachineRow {
    id: String,
    hostname: String,
    display_name: Option<String>,
    online: bool,
    last_seen: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct MachineList {
    machines: Vec<MachineRow>,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct NoParams {}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum MachineSet {
    /// Machine names (hostname, display name, id or unique id prefix).
    List(Vec<String>),
    /// "all", or a glob on hostname or display name such as "web-*".
    Selector(String),
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct AskManyParams {
    /// A list of machines, "all", or a glob on hostname or display name.
    machines: MachineSet,
    /// The request for each machine's ask handler.
    prompt: String,
    /// Give up on a machine after this many seconds (default 120, at most 3600).
    timeout_s: Option<u64>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct HostAnswer {
    machine_id: String,
    hostname: String,
    /// Null when the machine answered; else why not: "offline", "denied", "no ask handler",
    /// or a message.
    error: Option<String>,
    answer: String,
    stderr: String,
    exit_code: i32,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct AskManyResult {
    results: Vec<HostAnswer>,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct ShareParams {
    /// Machine: hostname, display name, id or unique id prefix.
    machine: String,
    /// Lifetime such as "90s", "15m", "2h", "7d" (default 24h).
    ttl: Option<String>,
    /// Viewers can watch but not type (default false).
    read_only: Option<bool>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct ShareResult {
    id: String,
    /// Anyone with this URL gets a browser terminal until it expires or is revoked.
    url: String,
    machine_id: String,
    expires_at: String,
    read_only: bool,
}

#[derive(Deserialize, JsonSchema)]
pub(crate) struct MachineParams {
    /// Machine: hostname, display name, id or unique id prefix.
    machine: String,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct SessionRow {
    id: String,
    name: Option<String>,
    persistent: bool,
    created_at: String,
    attached: u32,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct SessionList {
    sessions: Vec<SessionRow>,
}

#[tool_router(router = tool_router)]
impl Machines {
    pub(crate) fn new(scope: Option<String>) -> Self {
        Self { tool_router: Self::tool_router() + Self::job_router(), scope }
    }

    #[tool(
        description = "List the machines of the fleet with their id, hostname, display name and whether they are online. Call this first to learn machine names."
    )]
    async fn list_machines(&self, _: Parameters<NoParams>) -> ToolResult<MachineList> {
        let mut client = self.client().await?;
        let all = machines::fetch(&mut client).await.map_err(message)?;
        let machines = self
            .scoped(&all)?
            .into_iter()
            .map(|m| MachineRow {
                display_name: Some(m.display_name.clone()).filter(|d| !d.is_empty()),
                last_seen: Some(m.last_seen.clone()).filter(|s| !s.is_empty()),
                id: m.id,
                hostname: m.hostname,
                online: m.online,
            })
            .collect();
        Ok(Json(MachineList { machines }))
    }

    #[tool(
        description = "Ask several machines' ask handlers the same prompt at once: `machines` is a list of names, \"all\", or a glob on hostname or display name. Returns one entry per machine; a machine that is offline, refuses, or has no handler has `error` set and the others still answer. Gives up on a machine after timeout_s (default 120)."
    )]
    async fn ask_machines(&self, Parameters(p): Parameters<AskManyParams>) -> ToolResult<AskManyResult> {
        let job = ask_job(&p.prompt, p.timeout_s)?;
        let mut client = self.client().await?;
        let selector = match p.machines {
            MachineSet::List(names) if names.is_empty() => return Err("`machines` is empty: name at least one".into()),
            MachineSet::List(names) => names.join(","),
            MachineSet::Selector(s) => s,
        };
        let chosen = fanout::select(&mut client, &selector).await.map_err(message)?;
        let chosen = self.scoped(&chosen)?;
        let outcomes = fanout::gather(&client, chosen, &job, fanout::DEFAULT_PARALLEL, KEPT_BYTES).await;
        let results = outcomes
            .into_values()
            .map(|o| HostAnswer {
                machine_id: o.report.machine_id,
                hostname: o.report.hostname,
                error: o.error,
                answer: o.report.stdout,
                stderr: o.report.stderr,
                exit_code: o.code,
            })
            .collect();
        Ok(Json(AskManyResult { results }))
    }

    #[tool(
        description = "Make a share link to a machine: anyone with the URL gets a browser terminal on it until the link expires (ttl, default 24h) or is revoked. read_only links can watch but not type. Only share with people who should have a shell there."
    )]
    async fn share_machine(&self, Parameters(p): Parameters<ShareParams>) -> ToolResult<ShareResult> {
        let ttl = match p.ttl.as_deref() {
            Some(t) => crate::core::duration::parse(t).map_err(|e| format!("bad ttl {t:?}: {e}"))?,
            None => Duration::from_secs(86_400),
        };
        let (mut client, machine) = self.machine(&p.machine).await?;
        let req = proto::CreateShareRequest {
            machine_id: machine.id,
            ttl_seconds: ttl.as_secs(),
            read_only: p.read_only.unwrap_or(false),
            ..Default::default()
        };
        let link = client.create_share(req).await.map_err(|s| message(s.into()))?.into_inner();
        Ok(Json(ShareResult {
            id: link.id,
            url: link.url,
            machine_id: link.machine_id,
            expires_at: link.expires_at,
            read_only: link.read_only,
        }))
    }

    #[tool(description = "List the shell sessions (persistent and attached ones) running on a machine.")]
    async fn list_sessions(&self, Parameters(p): Parameters<MachineParams>) -> ToolResult<SessionList> {
        let (mut client, machine) = self.machine(&p.machine).await?;
        let req = proto::ListSessionsRequest { machine_id: machine.id, ..Default::default() };
        let answer = client.list_sessions(req).await.map_err(|s| message(s.into()))?.into_inner();
        let sessions = answer
            .sessions
            .into_iter()
            .map(|s| SessionRow {
                name: Some(s.name).filter(|n| !n.is_empty()),
                id: s.id,
                persistent: s.persistent,
                created_at: s.created_at,
                attached: s.attached,
            })
            .collect();
        Ok(Json(SessionList { sessions }))
    }
}

impl Machines {
    /// The CLI's signed-in client, speaking for MCP.
    pub(super) async fn client(&self) -> Result<Client, String> {
        connect_as(Surface::Mcp).await.map(|(c, _)| c).map_err(message)
    }

    /// The client and the one machine `name` resolves to, within the scope.
    pub(super) async fn machine(&self, name: &str) -> Result<(Client, proto::MachineInfo), String> {
        let mut client = self.client().await?;
        let machine = machines::resolve(&mut client, name).await.map_err(message)?;
        self.scoped(std::slice::from_ref(&machine))?;
        Ok((client, machine))
    }

    /// `machines` limited to the scope (`--machine`); naming only others is an error.
    fn scoped(&self, machines: &[proto::MachineInfo]) -> Result<Vec<proto::MachineInfo>, String> {
        let Some(scope) = &self.scope else {
            return Ok(machines.to_vec());
        };
        let inside: Vec<_> = machines.iter().filter(|m| names(m, scope)).cloned().collect();
        if inside.is_empty() && !machines.is_empty() {
            return Err(format!(
                "this MCP server is limited to machine {scope:?} (`cmdop mcp --machine`): use that one"
            ));
        }
        Ok(inside)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Machines {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Machines of a cmdop fleet: list them, run commands, ask their ask handlers, follow long runs as jobs, share a terminal. \
             Every call acts as the signed-in cmdop user and is recorded in the fleet's audit log.",
        )
    }
}

/// Whether the scope (`--machine`, as typed) names this machine.
fn names(m: &proto::MachineInfo, scope: &str) -> bool {
    crate::core::resolver::resolve(scope, std::slice::from_ref(m)).is_ok()
}

pub(super) fn timeout(seconds: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(seconds.unwrap_or(default).clamp(1, MAX_TIMEOUT_S))
}

pub(super) fn ask_job(prompt: &str, timeout_s: Option<u64>) -> Result<Job, String> {
    if prompt.trim().is_empty() {
        return Err("`prompt` is empty: say what to ask".into());
    }
    Ok(Job {
        words: vec![prompt.to_string()],
        ask: true,
        env: Vec::new(),
        timeout: timeout(timeout_s, DEFAULT_ASK_TIMEOUT_S),
    })
}

/// A failure as a model should read it: what went wrong and what to do next.
pub(super) fn message(e: CliError) -> String {
    match e {
        CliError::Resolve(r) => format!("{r}; call list_machines to see the machines"),
        CliError::NotSignedIn => "not signed in: the user must run `cmdop login` on this computer".into(),
        other => other.to_string(),
    }
}
