//! `cmdop quickstart`: a server, an agent for this machine and a signed-in CLI in one process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::args::QuickstartArgs;
use crate::agent::{self, AgentConfig};
use crate::cli::client::{self, Client};
use crate::cli::home;
use crate::cli::login::{self, DeviceCode};
use crate::cli::share::LinkOptions;
use crate::cli::{CliError, fleet, machines, share};
use crate::core::secret::Secret;
use crate::proto;
use crate::server::{DEFAULT_HEARTBEAT, Server, ServerConfig, bootstrap, local_approval};

/// How long quickstart waits for its own agent to come online.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at whether the agent is online.
const AGENT_POLL_EVERY: Duration = Duration::from_millis(100);
/// Lifetime of the enrollment token quickstart makes for its own agent: 10 minutes.
const ENROLL_TTL: Duration = Duration::from_secs(600);
/// Link lifetime quickstart gives its demo link: 1 hour.
const QUICKSTART_LINK_TTL: Duration = Duration::from_secs(3600);

/// Runs until Ctrl-C. Every step after starting the server goes through its public surface,
/// as a person would: sign in, make an enrollment token, run the agent, make a link.
pub(crate) async fn run(args: QuickstartArgs) -> anyhow::Result<i32> {
    let data_dir = args.data_dir.unwrap_or_else(crate::sys::dirs::server_data);
    let config = ServerConfig {
        listen: args.listen.clone(),
        public_url: None,
        data_dir: data_dir.clone(),
        database: None,
        cluster_key_file: None,
        advertise: None,
        heartbeat: DEFAULT_HEARTBEAT,
        max_link_ttl: crate::server::links::DEFAULT_MAX_TTL,
        limits: Default::default(),
        service: Default::default(),
        trusted_proxies: vec![],
    };
    let server = Server::bind(config).await.with_context(|| {
        format!("quickstart could not start a server on {} (try --listen 127.0.0.1:0)", args.listen)
    })?;
    let url = server.public_url().to_string();
    let email =
        format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "owner".into()), crate::sys::host::hostname());
    bootstrap::first_owner(server.store(), &email).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = tokio::spawn(server.serve(stopped(stop_rx.clone())));

    sign_in(&url, &data_dir).await?;
    let (mut client, _) = client::connect().await?;
    let agent_dir = data_dir.join("agent");
    let token = match agent::state::load(&agent_dir)? {
        Some(_) => None,
        None => Some(Secret::new(fleet::create_token(&mut client, Some(ENROLL_TTL)).await?.token)),
    };
    let agent_config = AgentConfig {
        servers: vec![url.clone()],
        token,
        display_name: None,
        state_dir: agent_dir.clone(),
        session_idle: crate::agent::registry::DEFAULT_IDLE,
        ask_handler: None,
    };
    let agent_task = tokio::spawn(agent::run(agent_config, stopped(stop_rx)));
    let machine = wait_online(&mut client, &agent_dir, &agent_task).await?;
    let link = share_this_machine(&mut client, &machine).await?;
    let console_url = console_sign_in_url().await;
    if args.json {
        let mut ready = json!({"server_url": url, "share_url": link.url, "share_id": link.id,
                               "machine_id": machine.id, "expires_at": link.expires_at});
        ready["console_url"] = json!(console_url);
        println!("{ready}");
    } else {
        print_welcome(&url, &email, &crate::sys::host::hostname(), &link.url, &link.expires_at);
        print_console(&console_url);
    }
    crate::sys::signal::shutdown().await;
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    let _ = serving.await;
    Ok(0)
}

/// Signs this CLI in through the device flow `cmdop login` uses; the approval goes through the
/// server's loopback-only shortcut with the bootstrap secret from its data folder (quickstart
/// holds that folder, as the operator does).
async fn sign_in(url: &str, data_dir: &Path) -> anyhow::Result<()> {
    let secret = local_approval::read_secret(data_dir)?;
    login::sign_in(url, |code: &DeviceCode| approve_locally(url.to_string(), secret, code.user_code.clone())).await?;
    Ok(())
}

async fn approve_locally(url: String, secret: Secret<String>, user_code: String) -> Result<(), CliError> {
    let form = [("user_code", user_code.as_str()), ("secret", secret.expose().as_str())];
    let resp = crate::sys::dial::http()
        .post(format!("{url}{}", local_approval::PATH))
        .form(&form)
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach the local server at {url}: {e}")))?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let why = body["error_description"].as_str().unwrap_or("no reason given").to_string();
    Err(CliError::Failed(format!("the local server refused to approve quickstart's sign-in ({status}): {why}")))
}

/// Waits until the agent has enrolled and the API lists its machine as online.
async fn wait_online(
    client: &mut Client,
    agent_dir: &Path,
    agent: &JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<proto::MachineInfo> {
    let deadline = tokio::time::Instant::now() + AGENT_READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if agent.is_finished() {
            bail!("the local agent stopped before it came online; see the log above");
        }
        if let Some(e) = agent::state::load(agent_dir)? {
            let listed = machines::fetch(client).await?;
            if let Some(m) = listed.into_iter().find(|m| m.id == e.machine_id && m.online) {
                return Ok(m);
            }
        }
        tokio::time::sleep(AGENT_POLL_EVERY).await;
    }
    bail!("the local agent did not come online within {}s; see the log above", AGENT_READY_TIMEOUT.as_secs())
}

async fn share_this_machine(client: &mut Client, machine: &proto::MachineInfo) -> Result<proto::ShareInfo, CliError> {
    let link = LinkOptions { ttl: QUICKSTART_LINK_TTL, read_only: false, max_opens: None, session: None };
    share::create(client, machine, link).await
}

fn print_welcome(url: &str, email: &str, host: &str, share_url: &str, expires_at: &str) {
    println!("cmdop is running.\n");
    println!("  server     {url}");
    println!("  share link {share_url}");
    println!("             (a browser terminal on this machine, until {expires_at})");
    println!("  machine    {host} (this machine, agent connected)");
    println!("  signed in  {email} (owner), credentials in {}\n", home::dir().display());
    println!("Try, in another terminal:");
    println!("  cmdop connect --list");
    println!("  cmdop connect exec {host} -- uname -a");
    println!("  cmdop connect share {host} --ttl 2h");
    println!("  cmdop connect shares");
    println!("  cmdop fleet token create     # enroll another machine\n");
    println!("Press Ctrl-C to stop.");
}

/// The web console's one-time sign-in URL (60 s, single use), minted through the CLI API as
/// `cmdop console` does; empty (and logged) when that fails.
async fn console_sign_in_url() -> String {
    match crate::cli::console::ticket().await {
        Ok(ticket) => ticket.url,
        Err(e) => {
            tracing::warn!(error = %e, "no web console sign-in URL");
            String::new()
        }
    }
}

fn print_console(url: &str) {
    if !url.is_empty() {
        println!("\nWeb console (this sign-in URL works once, within a minute; `cmdop console` makes another):");
        println!("  {url}");
    }
}
