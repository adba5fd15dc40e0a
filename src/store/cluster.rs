//! What the server nodes sharing one database know of each other: leases, machine routes,
//! broadcast events and the secrets they share (sealed; the store never sees them in clear).
//!
//! The model (docs/architecture.txt, "Several nodes"): a node renews its lease every few
//! seconds; an agent's stream opening writes `machine -> (node, epoch)` with a higher epoch;
//! a route counts only while its node's lease is live, so a dead node's machines go offline
//! with no per-machine write, and heartbeats never reach the database. A release names its
//! epoch, so a stale node never erases a newer route.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::StoreError;
use crate::core::ids::MachineId;

/// Where a machine's agent stream is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The holding node.
    pub(crate) node: String,
    /// How other nodes reach it.
    pub(crate) advertise: String,
    /// Grows with every stream the machine opens, on any node.
    pub(crate) epoch: i64,
}

/// One broadcast the nodes apply in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterEvent {
    /// Increasing id: a node applies every event above the last one it saw.
    pub(crate) id: i64,
    /// `revoke` (subject: a link id) or `keys` (subject: the secret's name).
    pub(crate) kind: String,
    /// What it is about.
    pub(crate) subject: String,
    /// When it was written, unix milliseconds (for the notification-lag metric).
    pub(crate) at_ms: i64,
}

/// A shared secret as stored: sealed under the cluster key, with a version for
/// compare-and-swap updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedSecret {
    /// The sealed bytes, base64.
    pub(crate) sealed: String,
    /// Incremented by every update.
    pub(crate) version: i64,
}

/// Event kind of a link revocation.
pub(crate) const EVENT_REVOKE: &str = "revoke";
/// Event kind of a shared secret's update.
pub(crate) const EVENT_SECRET: &str = "keys";
/// The PostgreSQL notification channel events are announced on.
pub(crate) const NOTIFY_CHANNEL: &str = "cmdop_events";

/// Leases, routes, events and shared secrets.
#[async_trait]
pub(crate) trait ClusterStore: Send + Sync {
    /// Creates or renews `node`'s lease until `lease_until` (unix seconds).
    async fn renew_lease(&self, node: &str, advertise: &str, lease_until: i64) -> Result<(), StoreError>;

    /// Ends `node`'s lease and drops its routes (a clean shutdown).
    async fn drop_lease(&self, node: &str) -> Result<(), StoreError>;

    /// Forgets every node and route: a single node on its own database starts with none.
    async fn forget_nodes(&self) -> Result<(), StoreError>;

    /// Records that `node` now holds `machine`'s stream; returns the new, higher epoch.
    async fn claim_route(&self, machine: MachineId, node: &str) -> Result<i64, StoreError>;

    /// Drops the route if it still has `epoch`; false when a newer stream replaced it.
    async fn release_route(&self, machine: MachineId, epoch: i64) -> Result<bool, StoreError>;

    /// The machine's route if its node's lease is live at `now` (unix seconds).
    async fn route(&self, machine: MachineId, now: i64) -> Result<Option<Route>, StoreError>;

    /// Events with an id above `after`, oldest first, at most `limit`.
    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<ClusterEvent>, StoreError>;

    /// The newest event's id (0 when none): where a starting node begins.
    async fn last_event_id(&self) -> Result<i64, StoreError>;

    /// The shared secret `name`, if set.
    async fn secret(&self, name: &str) -> Result<Option<SealedSecret>, StoreError>;

    /// Writes `name` if its version is still `version` (`None`: it must not exist yet), with a
    /// `keys` event in the same transaction; false when another node won the race.
    async fn swap_secret(&self, name: &str, version: Option<i64>, sealed: &str) -> Result<bool, StoreError>;

    /// Wake-ups when events are written (PostgreSQL `LISTEN`); `None` where the backend has no
    /// notifications (one SQLite node applies its own events directly). A wake-up also comes
    /// after the listener reconnects, since notifications may have been missed meanwhile. The
    /// listening task ends when the receiver is dropped.
    async fn event_wakeups(&self) -> Result<Option<mpsc::Receiver<()>>, StoreError>;
}

/// The SQL of `ClusterStore`, written once with `$N` placeholders (SQLite reads them as
/// numbered parameters `?N`, see `sqlite_sql`).
pub(super) mod sql {
    pub(crate) const RENEW: &str = "INSERT INTO nodes (id, advertise, started_at, lease_until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET advertise = excluded.advertise, lease_until = excluded.lease_until";
    pub(crate) const DROP_ROUTES: &str = "DELETE FROM routes WHERE node_id = $1";
    pub(crate) const DROP_NODE: &str = "DELETE FROM nodes WHERE id = $1";
    pub(crate) const FORGET_ROUTES: &str = "DELETE FROM routes";
    pub(crate) const FORGET_NODES: &str = "DELETE FROM nodes";
    pub(crate) const CLAIM: &str = "INSERT INTO routes (machine_id, node_id, epoch, since) VALUES ($1, $2, 1, $3)
         ON CONFLICT (machine_id) DO UPDATE SET node_id = excluded.node_id, epoch = routes.epoch + 1,
         since = excluded.since RETURNING epoch";
    pub(crate) const RELEASE: &str = "DELETE FROM routes WHERE machine_id = $1 AND epoch = $2";
    pub(crate) const ROUTE: &str =
        "SELECT r.node_id, n.advertise, r.epoch FROM routes r JOIN nodes n ON n.id = r.node_id
         WHERE r.machine_id = $1 AND n.lease_until > $2";
    pub(crate) const EVENTS_AFTER: &str =
        "SELECT id, kind, subject, at_ms FROM cluster_events WHERE id > $1 ORDER BY id LIMIT $2";
    pub(crate) const LAST_EVENT: &str = "SELECT COALESCE(MAX(id), 0) AS id FROM cluster_events";
    pub(crate) const SECRET: &str = "SELECT sealed, version FROM cluster_secrets WHERE name = $1";
    pub(crate) const SECRET_INSERT: &str = "INSERT INTO cluster_secrets (name, sealed, version) VALUES ($1, $2, 1)
         ON CONFLICT (name) DO NOTHING";
    pub(crate) const SECRET_UPDATE: &str =
        "UPDATE cluster_secrets SET sealed = $2, version = version + 1 WHERE name = $1 AND version = $3";
    pub(crate) const EVENT_INSERT: &str = "INSERT INTO cluster_events (kind, subject, at_ms) VALUES ($1, $2, $3)";
    /// A machine is online while a route to a live node exists (`machines` is the outer table).
    pub(crate) const ONLINE: &str = "EXISTS (SELECT 1 FROM routes r JOIN nodes n ON n.id = r.node_id
         WHERE r.machine_id = machines.id AND n.lease_until > $now)";
}

/// Implements `ClusterStore` for a backend whose struct has a sqlx `pool`; `$sql` maps the
/// shared SQL text to the backend's dialect and `$notify` runs in the same transaction as an
/// event's row. One body for both backends: the queries differ only in placeholders.
macro_rules! cluster_store {
    ($store:ty, $sql:path, $notify:expr, $wakeups:path) => {
        #[async_trait::async_trait]
        impl $crate::store::cluster::ClusterStore for $store {
            async fn renew_lease(
                &self,
                node: &str,
                advertise: &str,
                lease_until: i64,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::cluster::sql;
                sqlx::query(sqlx::AssertSqlSafe($sql(sql::RENEW)))
                    .bind(node)
                    .bind(advertise)
                    .bind($crate::core::clock::now())
                    .bind(lease_until)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn drop_lease(&self, node: &str) -> Result<(), $crate::store::StoreError> {
                use $crate::store::cluster::sql;
                let mut tx = self.pool.begin().await?;
                sqlx::query(sqlx::AssertSqlSafe($sql(sql::DROP_ROUTES))).bind(node).execute(&mut *tx).await?;
                sqlx::query(sqlx::AssertSqlSafe($sql(sql::DROP_NODE))).bind(node).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn forget_nodes(&self) -> Result<(), $crate::store::StoreError> {
                use $crate::store::cluster::sql;
                let mut tx = self.pool.begin().await?;
                sqlx::query(sql::FORGET_ROUTES).execute(&mut *tx).await?;
                sqlx::query(sql::FORGET_NODES).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_route(
                &self,
                machine: $crate::core::ids::MachineId,
                node: &str,
            ) -> Result<i64, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::cluster::sql;
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(sql::CLAIM)))
                    .bind(machine.to_string())
                    .bind(node)
                    .bind($crate::core::clock::now())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get::<i64, _>("epoch")?)
            }

            async fn release_route(
                &self,
                machine: $crate::core::ids::MachineId,
                epoch: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::cluster::sql;
                let done = sqlx::query(sqlx::AssertSqlSafe($sql(sql::RELEASE)))
                    .bind(machine.to_string())
                    .bind(epoch)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn route(
                &self,
                machine: $crate::core::ids::MachineId,
                now: i64,
            ) -> Result<Option<$crate::store::cluster::Route>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::cluster::sql;
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(sql::ROUTE)))
                    .bind(machine.to_string())
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some($crate::store::cluster::Route {
                    node: row.try_get("node_id")?,
                    advertise: row.try_get("advertise")?,
                    epoch: row.try_get("epoch")?,
                }))
            }

            async fn events_after(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::cluster::ClusterEvent>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::cluster::sql;
                let rows = sqlx::query(sqlx::AssertSqlSafe($sql(sql::EVENTS_AFTER)))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                let mut events = Vec::with_capacity(rows.len());
                for r in rows {
                    events.push($crate::store::cluster::ClusterEvent {
                        id: r.try_get("id")?,
                        kind: r.try_get("kind")?,
                        subject: r.try_get("subject")?,
                        at_ms: r.try_get("at_ms")?,
                    });
                }
                Ok(events)
            }

            async fn last_event_id(&self) -> Result<i64, $crate::store::StoreError> {
                use sqlx::Row;
                let row = sqlx::query($crate::store::cluster::sql::LAST_EVENT).fetch_one(&self.pool).await?;
                Ok(row.try_get::<i64, _>("id")?)
            }

            async fn secret(
                &self,
                name: &str,
            ) -> Result<Option<$crate::store::cluster::SealedSecret>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::cluster::sql;
                let row =
                    sqlx::query(sqlx::AssertSqlSafe($sql(sql::SECRET))).bind(name).fetch_optional(&self.pool).await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some($crate::store::cluster::SealedSecret {
                    sealed: row.try_get("sealed")?,
                    version: row.try_get("version")?,
                }))
            }

            async fn swap_secret(
                &self,
                name: &str,
                version: Option<i64>,
                sealed: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::cluster::{EVENT_SECRET, sql};
                let mut tx = self.pool.begin().await?;
                let done = match version {
                    None => {
                        sqlx::query(sqlx::AssertSqlSafe($sql(sql::SECRET_INSERT)))
                            .bind(name)
                            .bind(sealed)
                            .execute(&mut *tx)
                            .await?
                    }
                    Some(v) => {
                        sqlx::query(sqlx::AssertSqlSafe($sql(sql::SECRET_UPDATE)))
                            .bind(name)
                            .bind(sealed)
                            .bind(v)
                            .execute(&mut *tx)
                            .await?
                    }
                };
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query(sqlx::AssertSqlSafe($sql(sql::EVENT_INSERT)))
                    .bind(EVENT_SECRET)
                    .bind(name)
                    .bind($crate::core::clock::now_ms())
                    .execute(&mut *tx)
                    .await?;
                $notify(&mut tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn event_wakeups(
                &self,
            ) -> Result<Option<tokio::sync::mpsc::Receiver<()>>, $crate::store::StoreError> {
                $wakeups(self).await
            }
        }
    };
}
pub(super) use cluster_store;

/// The `machines` select list with `online` computed from live routes at `now`.
pub(super) fn machine_columns(now: i64) -> String {
    let online = sql::ONLINE.replace("$now", &now.to_string());
    format!("id, fleet_id, hostname, display_name, os, arch, {online} AS online, last_seen")
}
