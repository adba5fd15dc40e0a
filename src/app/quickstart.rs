//! `cmdop quickstart`: a server, an agent for this machine and a signed-in CLI in one process.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::watch;

use super::args::QuickstartArgs;
use crate::agent::{self, AgentConfig};
use crate::cli::home::{self, Credentials};
use crate::cli::login;
use crate::core::ids::MachineId;
use crate::core::secret::{self, Secret, prefix};
use crate::server::links::{Minted, ShareSpec, Shares};
use crate::server::{DEFAULT_HEARTBEAT, Server, ServerConfig, bootstrap};
use crate::store::Store;

/// How long quickstart waits for its own agent to come online.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until Ctrl-C.
pub async fn run(args: QuickstartArgs) -> anyhow::Result<i32> {
    let data_dir = args.data_dir.unwrap_or_else(crate::sys::dirs::server_data);
    let config = ServerConfig {
        listen: args.listen.clone(),
        public_url: None,
        data_dir: data_dir.clone(),
        heartbeat: DEFAULT_HEARTBEAT,
        max_link_ttl: crate::server::links::DEFAULT_MAX_TTL,
        trusted_proxies: vec![],
    };
    let server = Server::bind(config).await.with_context(|| {
        format!("quickstart could not start a server on {} (try --listen 127.0.0.1:0)", args.listen)
    })?;
    let url = server.public_url().to_string();
    let store = server.store().clone();
    let shares = server.shares().clone();
    let email =
        format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "owner".into()), crate::sys::host::hostname());
    let owner = bootstrap::first_owner(&store, &email).await?;

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
    sign_in(&store, &url, owner.id).await?;
    let agent_config = AgentConfig {
        server: url.clone(),
        token,
        display_name: None,
        state_dir: agent_dir.clone(),
        session_idle: crate::agent::registry::DEFAULT_IDLE,
        ask_handler: None,
    };
    let agent_task = tokio::spawn(agent::run(agent_config, stopped(stop_rx)));
    let machine = wait_online(&store, &agent_dir).await?;
    let link = share_this_machine(&shares, &store, &email, machine).await?;
    let share_url = format!("{url}/s/{}", link.token.expose());
    let expires_at = crate::core::clock::rfc3339(link.expires_at);
    if args.json {
        let ready = json!({"server_url": url, "share_url": share_url, "share_id": link.id.to_string(),
                           "machine_id": machine.to_string(), "expires_at": expires_at});
        println!("{ready}");
    } else {
        print_welcome(&url, &email, &crate::sys::host::hostname(), &share_url, &expires_at);
    }
    crate::sys::signal::shutdown().await;
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    let _ = serving.await;
    Ok(0)
}

/// Signs this CLI in through the same device flow `cmdop login` uses, approving the request
/// as the owner directly (quickstart holds the data folder, as the operator does).
async fn sign_in(store: &Store, url: &str, owner: crate::core::ids::UserId) -> anyhow::Result<()> {
    let code = login::request_device_code(url).await?;
    crate::server::oauth::device::decide(store, &code.user_code, owner, true).await?;
    let pair = login::poll_tokens(url, &code).await?;
    home::save_credentials(&Credentials::from_pair(url, &pair))
}

async fn enroll_token(store: &Store, email: &str) -> anyhow::Result<Secret<String>> {
    let owner = store.user_by_email(email).await?.or(store.first_user().await?).context("no owner account")?;
    let fleet = store.memberships(owner.id).await?.into_iter().next().context("the owner has no fleet")?.fleet;
    let token = secret::new_token(prefix::ENROLL);
    let expires = crate::core::clock::now() + 600;
    store.create_enroll_token(&secret::hash_token(token.expose()), fleet.id, owner.id, expires).await?;
    Ok(token)
}

/// Link lifetime quickstart gives its demo link: 1 hour.
const QUICKSTART_LINK_TTL: Duration = Duration::from_secs(3600);

async fn share_this_machine(shares: &Shares, store: &Store, email: &str, machine: MachineId) -> anyhow::Result<Minted> {
    let owner = store.user_by_email(email).await?.or(store.first_user().await?).context("no owner account")?;
    let m = store.machine(machine).await?.context("the local machine vanished")?;
    let spec = ShareSpec {
        user: owner.id,
        fleet: m.fleet_id,
        machine,
        ttl: QUICKSTART_LINK_TTL,
        read_only: false,
        max_opens: None,
        session: None,
        surface: "cli",
    };
    Ok(shares.create(spec).await?)
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
