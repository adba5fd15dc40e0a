//! The server's storage: users, fleets, memberships, machines, tokens, links and audit events.
//!
//! An interface of one trait per concern (`IdentityStore`, `MachineStore`, `LinkStore`,
//! `GrantStore`, `AuditStore`), together `Storage`, held as `Store` (`Arc<dyn Storage>`).
//! Callers see domain types and `StoreError`, never SQL: all SQL lives under this folder, one
//! implementation per backend (`sqlite` today).

mod grants;
mod identity;
mod links;
mod machines;
mod sqlite;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::core::ids::{FleetId, MachineId};

pub use grants::{DeviceGrant, GrantStatus, GrantStore};
pub use identity::{Fleet, IdentityStore, Membership, Role, TokenKind, User};
pub use links::{LinkRow, LinkStore, NewLink};
pub use machines::{EnrollError, Machine, MachineInfo, MachineStore};

/// A storage failure: the database is unreachable or corrupt, or a row breaks an invariant.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database itself failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Schema migration failed at start-up.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
pub trait Storage: IdentityStore + MachineStore + LinkStore + GrantStore + AuditStore {}

impl<T: IdentityStore + MachineStore + LinkStore + GrantStore + AuditStore> Storage for T {}

/// Handle to the store; cheap to clone.
pub type Store = Arc<dyn Storage>;

/// Opens (creating if needed) the SQLite store in `data_dir` and applies migrations.
pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open(data_dir).await?))
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Records an audit event. `actor` is a user id, a machine id or `system`.
    async fn audit(&self, event: AuditEvent<'_>) -> Result<(), StoreError>;

    /// A fleet's events matching `query`, oldest first (the newest `query.limit` of them).
    async fn list_audit(&self, query: &AuditQuery<'_>) -> Result<Vec<AuditRow>, StoreError>;
}

/// Which audit events to list.
#[derive(Debug)]
pub struct AuditQuery<'a> {
    /// The fleet whose log it is.
    pub fleet: FleetId,
    /// Events at or after this time, unix seconds.
    pub since: i64,
    /// Only events about this machine.
    pub machine: Option<MachineId>,
    /// Only events by one of these actors (empty: everyone's).
    pub actors: &'a [String],
    /// At most this many (the newest).
    pub limit: u32,
}

/// One stored audit event.
#[derive(Clone, Debug)]
pub struct AuditRow {
    /// Unix seconds.
    pub at: i64,
    /// Who did it.
    pub actor: String,
    /// The client surface (`cli`, `mcp`, `web`, `link`; empty when none applies).
    pub surface: String,
    /// What happened, e.g. `exec`.
    pub action: String,
    /// The machine concerned.
    pub machine_id: Option<String>,
    /// Free text.
    pub detail: String,
}

/// One line of the audit log.
#[derive(Debug, Default)]
pub struct AuditEvent<'a> {
    /// Who did it.
    pub actor: &'a str,
    /// What happened, e.g. `machine.enroll`.
    pub action: &'a str,
    /// The client surface it came through (`cli`, `mcp`, `web`, `link`; "" when none applies).
    pub surface: &'a str,
    /// The fleet it happened in.
    pub fleet_id: Option<String>,
    /// The machine concerned.
    pub machine_id: Option<String>,
    /// The share link concerned.
    pub link_id: Option<String>,
    /// Free text (client IP, user agent, ...). Never a secret.
    pub detail: String,
}

fn parse_col<T: FromStr>(table: &'static str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt { table, detail: format!("bad value {value:?}") })
}
