//! The SQLite implementation of the store: one file in the data folder, WAL mode, migrations
//! from `migrations/sqlite/` applied at open. The embedded default: a newcomer needs nothing
//! but cargo.

mod console;
mod grants;
mod identity;
mod links;
mod machines;
mod purge;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{AuditEvent, AuditQuery, AuditRow, AuditStore, StoreError};
use crate::core::clock::now;

/// The store over one SQLite database; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `cmdop.db` in `data_dir` and applies migrations.
    pub(crate) async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(data_dir.join("cmdop.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The shared `$N` SQL in SQLite's numbered-parameter spelling (`?N`).
pub(super) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// One SQLite node applies its own events: nothing to notify.
async fn no_notify(_: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<(), sqlx::Error> {
    Ok(())
}

/// One SQLite node has no other node to hear from.
async fn no_wakeups(_: &SqliteStore) -> Result<Option<tokio::sync::mpsc::Receiver<()>>, StoreError> {
    Ok(None)
}

crate::store::cluster::cluster_store!(SqliteStore, sqlite_sql, no_notify, no_wakeups);

#[async_trait]
impl AuditStore for SqliteStore {
    async fn audit(&self, event: AuditEvent<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, surface, fleet_id, machine_id, link_id, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(event.actor)
        .bind(event.action)
        .bind(event.surface)
        .bind(event.fleet_id)
        .bind(event.machine_id)
        .bind(event.link_id)
        .bind(event.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_audit(&self, query: &AuditQuery<'_>) -> Result<Vec<AuditRow>, StoreError> {
        let select = format!("SELECT {} FROM audit_events WHERE fleet_id = ", super::rows::AUDIT_COLUMNS);
        let mut sql = sqlx::QueryBuilder::new(select);
        sql.push_bind(query.fleet.to_string()).push(" AND at >= ").push_bind(query.since);
        if let Some(machine) = query.machine {
            sql.push(" AND machine_id = ").push_bind(machine.to_string());
        }
        if !query.actors.is_empty() {
            sql.push(" AND actor IN (");
            let mut list = sql.separated(", ");
            for actor in query.actors {
                list.push_bind(actor.clone());
            }
            sql.push(")");
        }
        sql.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(query.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        let mut events = rows.iter().map(super::rows::audit_row).collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }
}
