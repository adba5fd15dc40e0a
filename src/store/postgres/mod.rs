//! The PostgreSQL implementation of the store: one database shared by several server nodes,
//! migrations from `migrations/postgres/` applied at connect (sqlx takes an advisory lock, so
//! nodes starting together migrate once).
//!
//! The SQL differs from SQLite's in dialect only: `$N` placeholders, `ON CONFLICT`, BOOLEAN
//! flags, `lower(email)` for case-insensitive emails, a `seq` column where SQLite has `rowid`.
//! Every single-use or limited row (enrollment tokens, refresh tokens, link opens, grant
//! transitions) changes by one conditional UPDATE whose affected rows decide who won, which
//! READ COMMITTED makes safe across nodes: a racing update waits for the row lock, then
//! re-checks its WHERE against the committed row.

mod console;
mod grants;
mod identity;
mod links;
mod machines;
mod purge;
#[cfg(test)]
pub(crate) use purge::PURGE_LOCK;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::cluster::NOTIFY_CHANNEL;
use super::{AuditEvent, AuditQuery, AuditRow, AuditStore, StoreError};
use crate::core::clock::now;

/// Connections per node: API calls, relay bookkeeping and maintenance share them.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The store over one PostgreSQL database; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) and applies migrations.
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool =
            PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The shared SQL is PostgreSQL's already.
fn pg_sql(sql: &str) -> String {
    sql.to_string()
}

/// Announces new event rows; delivered when (and only if) the transaction commits.
pub(super) async fn notify(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&mut **tx).await?;
    Ok(())
}

/// Listens on the events channel; every notification, and every reconnect of the listener
/// (which may have missed some), becomes one wake-up. Ends when the receiver is dropped.
async fn wakeups(store: &PgStore) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
    let mut listener = PgListener::connect_with(&store.pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let heard = tokio::select! {
                heard = listener.try_recv() => heard,
                () = tx.closed() => return,
            };
            match heard {
                // `None`: the connection dropped and will be re-established on the next call.
                Ok(_) => {
                    let _ = tx.try_send(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event listener failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        }
    });
    Ok(Some(rx))
}

crate::store::cluster::cluster_store!(PgStore, pg_sql, notify, wakeups);

#[async_trait]
impl AuditStore for PgStore {
    async fn audit(&self, event: AuditEvent<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, surface, fleet_id, machine_id, link_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
            sql.push(" AND actor = ANY(").push_bind(query.actors.to_vec()).push(")");
        }
        sql.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(query.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        let mut events = rows.iter().map(super::rows::audit_row).collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }
}
