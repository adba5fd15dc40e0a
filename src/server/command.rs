//! `cmdop server`: the daemon, and the administration commands that work on its data folder.

use anyhow::Context;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Server, ServerConfig};
use crate::core::limits;
use crate::store::{Database, Store};
use crate::sys::{dirs, private_file, signal};

/// `cmdop server`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerArgs {
    /// Address to listen on, `HOST:PORT` (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7422")]
    pub(crate) listen: String,
    /// URL users and agents reach (default `http://<bound address>`).
    #[arg(long)]
    pub(crate) public_url: Option<String>,
    /// Data folder: keys, and the SQLite database unless --database is given.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// A PostgreSQL database shared by several nodes, `postgres://USER[:PASSWORD]@HOST:PORT/DB`
    /// (default: SQLite in the data folder).
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// The key file every node sharing --database has (`cmdop server cluster-key new > F`):
    /// nodes authenticate each other with it and seal the secrets they share.
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_key_file: Option<PathBuf>,
    /// The URL other nodes reach this one at (node-to-node traffic rides the same listener;
    /// default: --public-url).
    #[arg(long, value_name = "URL")]
    pub(crate) advertise: Option<String>,
    /// How often agents heartbeat; offline after three missed.
    #[arg(long, value_parser = crate::core::duration::parse, default_value = "5s")]
    pub(crate) heartbeat_interval: Duration,
    /// Longest lifetime a share link may be given.
    #[arg(long, value_parser = crate::core::duration::parse, default_value = "30d")]
    pub(crate) max_link_ttl: Duration,
    /// A reverse proxy in front of the server (repeatable, e.g. 127.0.0.1): requests from it
    /// are attributed to the address its `X-Forwarded-For` names, for audit logs and per-IP
    /// limits. Without it the header is ignored.
    #[arg(long, value_name = "IP")]
    pub(crate) trusted_proxy: Vec<std::net::IpAddr>,
    /// Longest a client may take to send a request's headers; slower ones are disconnected.
    #[arg(long, value_parser = crate::core::duration::parse, default_value = "10s")]
    pub(crate) header_timeout: Duration,
    /// Most connections served at once; more wait in the kernel's queue.
    #[arg(long, default_value_t = super::listen::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// `POST /oauth/device` calls allowed per client IP per minute (0: no limit).
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_DEVICE_STARTS_PER_MINUTE)]
    pub(crate) max_device_starts_per_minute: usize,
    /// Browser cookie sessions kept in memory, per kind (device page, console); beyond it the
    /// oldest anonymous ones are dropped.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_MAX_WEB_SESSIONS)]
    pub(crate) max_web_sessions: usize,
    /// How often expired and used grants, tokens, tickets and sessions are deleted.
    #[arg(long, value_parser = crate::core::duration::parse, default_value = "10m")]
    pub(crate) purge_interval: Duration,
    /// Open sessions (shells and commands) allowed per machine (0: no limit).
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_SESSIONS_PER_MACHINE)]
    pub(crate) max_sessions_per_machine: usize,
    /// Open sessions allowed per share link (0: no limit).
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_SESSIONS_PER_LINK)]
    pub(crate) max_sessions_per_link: usize,
    /// Open sessions allowed per client IP (0: no limit).
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_SESSIONS_PER_IP)]
    pub(crate) max_sessions_per_ip: usize,
    /// Administration of a server's data folder.
    #[command(subcommand)]
    pub(crate) command: Option<ServerCommand>,
}

/// `cmdop server ...` administration.
#[derive(Debug, Subcommand)]
pub(crate) enum ServerCommand {
    /// Sign this CLI in as the server's first owner, by direct access to the data folder
    /// (for the operator on the server machine; creates the owner and fleet on first use).
    LocalLogin {
        /// Data folder of the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The server's PostgreSQL database, when it runs with --database.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The server's URL as the CLI should reach it.
        #[arg(long)]
        server: String,
        /// The owner's email (first use only).
        #[arg(long, default_value = "owner@localhost")]
        email: String,
    },
    /// Share-link signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// User accounts (by direct access to the data folder).
    #[command(subcommand)]
    User(UserCommand),
    /// The key shared by the nodes of one database.
    #[command(subcommand)]
    ClusterKey(ClusterKeyCommand),
}

/// `cmdop server cluster-key ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterKeyCommand {
    /// Print a new cluster key file: `cmdop server cluster-key new > cluster.key` (keep it
    /// mode 0600 and give every node the same file).
    New,
}

/// `cmdop server user ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user to a fleet with a role (or change their role) and print a new one-time
    /// password for the sign-in page.
    Add {
        /// Email (the sign-in name).
        email: String,
        /// Role in the fleet: owner, admin, member or viewer.
        #[arg(long, default_value = "member")]
        role: String,
        /// Fleet (created if missing).
        #[arg(long, default_value = "default")]
        fleet: String,
        /// Data folder of the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The server's PostgreSQL database, when it runs with --database.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
}

/// `cmdop server keys ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Add a new signing key; links signed by older keys keep working until they expire.
    /// A running server picks the new key up within seconds.
    Rotate {
        /// Data folder of the server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The nodes' shared PostgreSQL database (their keys live there, sealed).
        #[arg(long, value_name = "URL", requires = "cluster_key_file")]
        database: Option<String>,
        /// The nodes' cluster key file.
        #[arg(long, value_name = "FILE")]
        cluster_key_file: Option<PathBuf>,
        /// The server's --max-link-ttl (how long old keys must keep verifying).
        #[arg(long, value_parser = crate::core::duration::parse, default_value = "30d")]
        max_link_ttl: Duration,
    },
}

/// `cmdop server` (all but `local-login`, which the app composes with the CLI).
pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<i32> {
    if let Some(ServerCommand::User(UserCommand::Add { email, role, fleet, data_dir, database })) = args.command {
        let store = open_store(data_dir, database.as_deref()).await?;
        return add_user(&store, &email, &role, &fleet).await;
    }
    if let Some(ServerCommand::ClusterKey(ClusterKeyCommand::New)) = args.command {
        print!("{}", crate::core::cluster_key::ClusterKey::new_file()?);
        return Ok(0);
    }
    if let Some(ServerCommand::Keys(KeysCommand::Rotate { data_dir, database, cluster_key_file, max_link_ttl })) =
        args.command
    {
        let id = match (database, cluster_key_file) {
            (Some(url), Some(file)) => {
                let key = super::load_cluster_key(Some(&file), true)?
                    .ok_or_else(|| anyhow::anyhow!("no cluster key in {}", file.display()))?;
                let store = open_store(data_dir, Some(&url)).await?;
                super::links::keys::rotate_shared(&store, &key, max_link_ttl).await?
            }
            _ => super::links::keys::rotate(&data_dir.unwrap_or_else(dirs::server_data), max_link_ttl)?,
        };
        println!("share links are now signed with key {id}; older links keep working until they expire");
        return Ok(0);
    }
    let config = ServerConfig {
        listen: args.listen,
        public_url: args.public_url,
        data_dir: args.data_dir.unwrap_or_else(dirs::server_data),
        database: args.database,
        cluster_key_file: args.cluster_key_file,
        advertise: args.advertise,
        heartbeat: args.heartbeat_interval,
        max_link_ttl: args.max_link_ttl,
        trusted_proxies: args.trusted_proxy,
        limits: super::listen::ConnLimits {
            header_timeout: args.header_timeout,
            max_connections: args.max_connections,
        },
        service: limits::ServiceLimits {
            device_starts_per_minute: args.max_device_starts_per_minute,
            max_web_sessions: args.max_web_sessions,
            purge_interval: args.purge_interval,
            sessions_per_machine: args.max_sessions_per_machine,
            sessions_per_link: args.max_sessions_per_link,
            sessions_per_ip: args.max_sessions_per_ip,
        },
    };
    let server = Server::bind(config).await?;
    // One stable line for people and scripts (tests read the URL from it).
    println!("cmdop server listening on {}", server.public_url());
    server.serve(signal::shutdown()).await?;
    Ok(0)
}

/// The server's store, for administration commands run beside it: `database` when given (the
/// server's --database), else SQLite in the data folder.
pub(crate) async fn open_store(data_dir: Option<PathBuf>, database: Option<&str>) -> anyhow::Result<Store> {
    let data_dir = data_dir.unwrap_or_else(dirs::server_data);
    let database = Database::choose(database, &data_dir)?;
    if let Database::Sqlite(dir) = &database {
        private_file::ensure_dir(dir)?;
    }
    database.connect().await.with_context(|| format!("cannot open the server's database {database}"))
}

/// `cmdop server user add`: account, membership and a fresh one-time password.
async fn add_user(store: &Store, email: &str, role: &str, fleet: &str) -> anyhow::Result<i32> {
    let role: crate::store::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let user = match store.user_by_email(email).await? {
        Some(u) => u,
        None => store.create_user(email).await?,
    };
    let fleet = store.fleet_named(fleet).await?;
    store.set_membership(user.id, fleet.id, role).await?;
    let password = crate::core::passwords::generate();
    let hash = crate::core::passwords::hash(password.expose())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    store.set_password_hash(user.id, &hash).await?;
    println!("{} is {role} of fleet {}", user.email, fleet.name);
    println!("one-time password: {}", password.expose());
    eprintln!("give it to them privately; they sign in with `cmdop login` (shown only once)");
    Ok(0)
}
