//! `cmdop server` and `cmdop agent`: the two daemons.

use anyhow::Context;

use super::args::{AgentArgs, KeysCommand, ServerArgs, ServerCommand, UserCommand};
use super::home::{self, Credentials};
use crate::agent::{self, AgentConfig};
use crate::secret::Secret;
use crate::server::{Server, ServerConfig, bootstrap};
use crate::store::Store;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `cmdop server`.
pub async fn server(args: ServerArgs) -> anyhow::Result<i32> {
    if let Some(ServerCommand::LocalLogin { data_dir, server, email }) = args.command {
        let data_dir = data_dir.unwrap_or_else(super::default_server_dir);
        crate::server::ensure_private_dir(&data_dir)?;
        let store = Store::open(&data_dir).await.context("cannot open the server's database")?;
        let pair = bootstrap::sign_in_owner(&store, &email, "cmdop server local-login").await?;
        home::save_credentials(&Credentials::from_pair(&server, &pair))?;
        println!("signed in to {server} as the owner ({})", home::dir().display());
        return Ok(0);
    }
    if let Some(ServerCommand::User(UserCommand::Add { email, role, fleet, data_dir })) = args.command {
        return add_user(data_dir, &email, &role, &fleet).await;
    }
    if let Some(ServerCommand::Keys(KeysCommand::Rotate { data_dir, max_link_ttl })) = args.command {
        let data_dir = data_dir.unwrap_or_else(super::default_server_dir);
        let id = crate::shares::rotate_keys(&data_dir, max_link_ttl)?;
        println!("share links are now signed with key {id}; older links keep working until they expire");
        return Ok(0);
    }
    let config = ServerConfig {
        listen: args.listen,
        public_url: args.public_url,
        data_dir: args.data_dir.unwrap_or_else(super::default_server_dir),
        heartbeat: args.heartbeat_interval,
        max_link_ttl: args.max_link_ttl,
        trusted_proxies: args.trusted_proxy,
    };
    let server = Server::bind(config).await?;
    // One stable line for people and scripts (tests read the URL from it).
    println!("cmdop server listening on {}", server.public_url());
    server.serve(shutdown_signal()).await?;
    Ok(0)
}

/// `cmdop agent`.
pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    let config = AgentConfig {
        server: args.server.trim_end_matches('/').to_string(),
        token: args.token.map(Secret::new),
        display_name: args.display_name,
        state_dir: args.state_dir.unwrap_or_else(super::default_agent_dir),
        session_idle: args.session_idle,
    };
    // A task, not the runtime's root future: waking the root future of a current-thread
    // runtime writes to the driver's eventfd every time, and the stream pump is woken for
    // every frame (main.rs explains the runtime).
    tokio::spawn(agent::run(config, shutdown_signal())).await??;
    Ok(0)
}

/// `cmdop server user add`: account, membership and a fresh one-time password.
async fn add_user(data_dir: Option<std::path::PathBuf>, email: &str, role: &str, fleet: &str) -> anyhow::Result<i32> {
    let role: crate::store::Role = role.parse().map_err(|e: String| super::CliError::Usage(e))?;
    let data_dir = data_dir.unwrap_or_else(super::default_server_dir);
    crate::server::ensure_private_dir(&data_dir)?;
    let store = Store::open(&data_dir).await.context("cannot open the server's database")?;
    let user = match store.user_by_email(email).await? {
        Some(u) => u,
        None => store.create_user(email).await?,
    };
    let fleet = store.fleet_named(fleet).await?;
    store.set_membership(user.id, fleet.id, role).await?;
    let password = crate::passwords::generate();
    let hash = crate::passwords::hash(password.expose()).map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    store.set_password_hash(user.id, &hash).await?;
    println!("{} is {role} of fleet {}", user.email, fleet.name);
    println!("one-time password: {}", password.expose());
    eprintln!("give it to them privately; they sign in with `cmdop login` (shown only once)");
    Ok(0)
}
