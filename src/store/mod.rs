//! The server's storage: users, fleets, memberships, machines, tokens and audit events.
//!
//! One narrow interface over SQLite (the embedded default, a file in the data folder). Callers
//! see domain types and `StoreError`, never SQL, so a PostgreSQL backend for several nodes can
//! slot in behind the same methods. Migrations live in `migrations/` and run at open.

mod grants;
mod identity;
mod links;
mod machines;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use thiserror::Error;
use time::OffsetDateTime;

pub use grants::{DeviceGrant, GrantStatus};
pub use identity::{Fleet, Membership, Role, TokenKind, User};
pub use links::{LinkRow, NewLink};
pub use machines::{EnrollError, Machine, MachineInfo};

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

/// Handle to the store; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// Unix seconds now.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Store {
    /// Opens (creating if needed) `cmdop.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(data_dir.join("cmdop.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Records an audit event. `actor` is a user id, a machine id or `system`.
    pub async fn audit(&self, event: AuditEvent<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, fleet_id, machine_id, link_id, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(event.actor)
        .bind(event.action)
        .bind(event.fleet_id)
        .bind(event.machine_id)
        .bind(event.link_id)
        .bind(event.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// One line of the audit log.
#[derive(Debug, Default)]
pub struct AuditEvent<'a> {
    /// Who did it.
    pub actor: &'a str,
    /// What happened, e.g. `machine.enroll`.
    pub action: &'a str,
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
