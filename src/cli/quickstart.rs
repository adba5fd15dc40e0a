//! `cmdop quickstart`: a server, an agent for this machine and a signed-in CLI in one process.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::watch;

use super::args::QuickstartArgs;
use super::home::{self, Credentials};
use crate::agent::{self, AgentConfig};
use crate::ids::MachineId;
use crate::secret::{self, Secret, prefix};
use crate::server::{DEFAULT_HEARTBEAT, Server, ServerConfig, bootstrap};
use crate::store::Store;

/// How long quickstart waits for its own agent to come online.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until Ctrl-C.
pub async fn run(args: QuickstartArgs) -> anyhow::Result<i32> {
    let data_dir = args.data_dir.unwrap_or_else(super::default_server_dir);
    let config = ServerConfig { listen: args.listen.clone(), public_url: None, data_dir: data_dir.clone(), heartbeat: DEFAULT_HEARTBEAT, max_link_ttl: crate::shares::DEFAULT_MAX_TTL };
    let server = Server::bind(config).await.with_context(|| {
        format!("quickstart could not start a server on {} (try --listen 127.0.0.1:0)", args.listen)
    })?;
    let url = server.public_url().to_string();
    let store = server.store().clone();
    let email = format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "owner".into()), agent::hostname());
    let pair = bootstrap::sign_in_owner(&store, &email, "cmdop quickstart").await?;
    home::save_credentials(&Credentials::from_pair(&url, &pair))?;

    let agent_dir = data_dir.join("agent");
    let token = match agent::state::load(&agent_dir)? {
        Some(_) => None,
        None => Some(enroll_token(&store, &email).await?),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = tokio::spawn(server.serve(stopped(stop_rx.clone())));
    let agent_config = AgentConfig { server: url.clone(), token, display_name: None, state_dir: agent_dir.clone() };
    let agent_task = tokio::spawn(agent::run(agent_config, stopped(stop_rx)));
    let machine = wait_online(&store, &agent_dir).await?;

    if args.json {
        println!("{}", json!({"server_url": url, "machine_id": machine.to_string()}));
    } else {
        print_welcome(&url, &email, &agent::hostname());
    }
    super::serve::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    let _ = serving.await;
    Ok(0)
}

async fn enroll_token(store: &Store, email: &str) -> anyhow::Result<Secret<String>> {
    let owner = store.user_by_email(email).await?.or(store.first_user().await?).context("no owner account")?;
    let fleet = store.memberships(owner.id).await?.into_iter().next().context("the owner has no fleet")?.fleet;
    let token = secret::new_token(prefix::ENROLL);
    let expires = crate::store::now() + 600;
    store.create_enroll_token(&secret::hash_token(token.expose()), fleet.id, owner.id, expires).await?;
    Ok(token)
}

async fn wait_online(store: &Store, agent_dir: &std::path::Path) -> anyhow::Result<MachineId> {
    let deadline = tokio::time::Instant::now() + AGENT_READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Some(e) = agent::state::load(agent_dir)? {
            let id: MachineId = e.machine_id.parse()?;
            if store.machine(id).await?.is_some_and(|m| m.online) {
                return Ok(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the local agent did not come online within {}s; see the log above", AGENT_READY_TIMEOUT.as_secs())
}

fn print_welcome(url: &str, email: &str, host: &str) {
    println!("cmdop is running.\n");
    println!("  server     {url}");
    println!("  machine    {host} (this machine, agent connected)");
    println!("  signed in  {email} (owner), credentials in {}\n", home::dir().display());
    println!("Try, in another terminal:");
    println!("  cmdop connect --list");
    println!("  cmdop connect exec {host} -- uname -a");
    println!("  cmdop fleet token create     # enroll another machine\n");
    println!("Press Ctrl-C to stop.");
}
