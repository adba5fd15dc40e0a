//! The server's storage: users, fleets, memberships, machines, tokens, links and audit events.
//!
//! An interface of one trait per concern (`IdentityStore`, `MachineStore`, `LinkStore`,
//! `GrantStore`, `AuditStore`, `ConsoleStore`, `PurgeStore`), together `Storage`, held as `Store` (`Arc<dyn Storage>`).
//! Callers see domain types and `StoreError`, never SQL: all SQL lives under this folder, one
//! implementation per backend: `sqlite` (the default, a file in the data folder) and `postgres`
//! (several server nodes on one database). `rows` holds what both read alike.

pub(crate) mod cluster;
mod console;
mod grants;
mod identity;
mod links;
mod machines;
mod postgres;
mod purge;
mod rows;
mod sqlite;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::core::ids::{FleetId, MachineId};

pub(crate) use cluster::{ClusterEvent, ClusterStore, EVENT_REVOKE, EVENT_SECRET, Route};
pub(crate) use console::{AuditRow, ConsoleStore, TicketOwner};
pub(crate) use grants::{DeviceGrant, GrantStatus, GrantStore};
pub(crate) use identity::{Fleet, IdentityStore, Membership, Role, TokenKind, User};
pub(crate) use links::{LinkRow, LinkStore, NewLink};
pub(crate) use machines::{EnrollError, Machine, MachineInfo, MachineStore};
pub(crate) use purge::PurgeStore;
#[cfg(test)]
pub(crate) use purge::Purged;

/// A storage failure: the database is unreachable or corrupt, or a row breaks an invariant.
#[derive(Debug, Error)]
pub(crate) enum StoreError {
    /// The database itself failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Schema migration failed at start-up.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `--database` named something other than PostgreSQL.
    #[error("unsupported database URL {0:?}: give postgres://USER@HOST:PORT/DB, or leave --database out for SQLite")]
    UnknownDatabase(String),
    /// A stored value did not parse (a corrupt row).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

impl From<sqlx::Error> for EnrollError {
    fn from(e: sqlx::Error) -> Self {
        EnrollError::Store(e.into())
    }
}

/// Every concern of the store, as one object.
pub(crate) trait Storage:
    IdentityStore + MachineStore + LinkStore + GrantStore + AuditStore + ConsoleStore + ClusterStore + PurgeStore
{
}

impl<T: IdentityStore + MachineStore + LinkStore + GrantStore + AuditStore + ConsoleStore + ClusterStore + PurgeStore>
    Storage for T
{
}

/// Handle to the store; cheap to clone.
pub(crate) type Store = Arc<dyn Storage>;

/// Opens (creating if needed) the SQLite store in `data_dir` and applies migrations.
pub(crate) async fn open(data_dir: &Path) -> Result<Store, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open(data_dir).await?))
}

/// Where the store lives: `cmdop server --database URL`, else SQLite in the data folder.
#[derive(Clone, Debug)]
pub(crate) enum Database {
    /// `cmdop.db` in this folder.
    Sqlite(PathBuf),
    /// A `postgres://` URL (it may carry a password: never logged).
    Postgres(String),
}

impl Database {
    /// `url` when it is a PostgreSQL URL, else SQLite in `data_dir`.
    pub(crate) fn choose(url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match url {
            None => Ok(Database::Sqlite(data_dir.to_path_buf())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Database::Postgres(u.to_string()))
            }
            Some(u) => Err(StoreError::UnknownDatabase(redact(u))),
        }
    }

    /// The backend's name, as `GET /healthz` reports it: `sqlite` or `postgres`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// Whether several server nodes may share it (PostgreSQL): then no node may assume that
    /// the agents' streams it does not hold are down.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }

    /// Opens the store, applying migrations.
    pub(crate) async fn connect(&self) -> Result<Store, StoreError> {
        match self {
            Database::Sqlite(dir) => open(dir).await,
            Database::Postgres(url) => Ok(Arc::new(postgres::PgStore::connect(url).await?)),
        }
    }
}

/// Where the database is, without any password, for messages.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(dir) => write!(f, "{}", dir.join("cmdop.db").display()),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// A database URL with its password (if any) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The audit log.
#[async_trait]
pub(crate) trait AuditStore: Send + Sync {
    /// Records an audit event. `actor` is a user id, a machine id or `system`.
    async fn audit(&self, event: AuditEvent<'_>) -> Result<(), StoreError>;

    /// A fleet's events matching `query`, oldest first (the newest `query.limit` of them);
    /// `fleet_audit` is the console's unfiltered, newest-first view of the same rows.
    async fn list_audit(&self, query: &AuditQuery<'_>) -> Result<Vec<AuditRow>, StoreError>;
}

/// Which audit events to list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AuditQuery<'a> {
    /// The fleet whose log it is.
    pub(crate) fleet: FleetId,
    /// Events at or after this time, unix seconds.
    pub(crate) since: i64,
    /// Only events about this machine.
    pub(crate) machine: Option<MachineId>,
    /// Only events by one of these actors (empty: everyone's).
    pub(crate) actors: &'a [String],
    /// At most this many (the newest).
    pub(crate) limit: u32,
}

/// One line of the audit log.
#[derive(Debug, Default)]
pub(crate) struct AuditEvent<'a> {
    /// Who did it.
    pub(crate) actor: &'a str,
    /// What happened, e.g. `machine.enroll`.
    pub(crate) action: &'a str,
    /// The client surface it came through (`cli`, `mcp`, `web`, `link`; "" when none applies).
    pub(crate) surface: &'a str,
    /// The fleet it happened in.
    pub(crate) fleet_id: Option<String>,
    /// The machine concerned.
    pub(crate) machine_id: Option<String>,
    /// The share link concerned.
    pub(crate) link_id: Option<String>,
    /// Free text (client IP, user agent, ...). Never a secret.
    pub(crate) detail: String,
}

fn parse_col<T: FromStr>(table: &'static str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt { table, detail: format!("bad value {value:?}") })
}
