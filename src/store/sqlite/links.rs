//! SQLite: share-link rows, their opens and revocations, and a link's audit trail.

use super::SqliteStore;
use crate::core::clock::now;
use crate::core::ids::{FleetId, LinkId, MachineId};
use crate::store::StoreError;
use crate::store::links::*;
use crate::store::rows::{self, Cols, LINK_COLUMNS};
use async_trait::async_trait;

#[async_trait]
impl LinkStore for SqliteStore {
    async fn insert_link(&self, link: &NewLink<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO share_links (id, fleet_id, machine_id, token_hash, created_by, created_at, expires_at,
             read_only, max_opens, session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(link.id.to_string())
        .bind(link.fleet_id.to_string())
        .bind(link.machine_id.to_string())
        .bind(link.token_hash)
        .bind(link.created_by.to_string())
        .bind(now())
        .bind(link.expires_at)
        .bind(link.read_only)
        .bind(link.max_opens)
        .bind(&link.session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn link(&self, id: LinkId) -> Result<Option<LinkRow>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} WHERE l.id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| rows::link(&r)).transpose()
    }

    async fn list_links(&self, fleet: FleetId, machine: Option<MachineId>) -> Result<Vec<LinkRow>, StoreError> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} WHERE l.fleet_id = ? AND (? IS NULL OR l.machine_id = ?) ORDER BY l.created_at DESC, l.rowid DESC"
        );
        let machine = machine.map(|m| m.to_string());
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(fleet.to_string())
            .bind(&machine)
            .bind(&machine)
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::link).collect()
    }

    async fn revoke_links(&self, ids: &[LinkId]) -> Result<Vec<(LinkId, i64)>, StoreError> {
        let mut revoked = Vec::new();
        let mut tx = self.pool.begin().await?;
        for id in ids {
            let row = sqlx::query(
                "UPDATE share_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING expires_at",
            )
            .bind(now())
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                revoked.push((*id, r.int("expires_at")?));
                sqlx::query(sqlx::AssertSqlSafe(super::sqlite_sql(crate::store::cluster::sql::EVENT_INSERT)))
                    .bind(crate::store::EVENT_REVOKE)
                    .bind(id.to_string())
                    .bind(crate::core::clock::now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn live_revocations(&self) -> Result<Vec<(LinkId, i64)>, StoreError> {
        let found =
            sqlx::query("SELECT id, expires_at FROM share_links WHERE revoked_at IS NOT NULL AND expires_at > ?")
                .bind(now())
                .fetch_all(&self.pool)
                .await?;
        found.iter().map(rows::revocation).collect()
    }

    async fn record_open(&self, id: LinkId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE share_links SET opens = opens + 1
             WHERE id = ? AND revoked_at IS NULL AND (max_opens IS NULL OR opens < max_opens)",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_open(&self, id: LinkId) -> Result<(), StoreError> {
        sqlx::query("UPDATE share_links SET opens = opens - 1 WHERE id = ? AND opens > 0")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn link_audit(&self, id: LinkId) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let found = sqlx::query("SELECT at, actor, action, detail FROM audit_events WHERE link_id = ? ORDER BY id")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::audit_line).collect()
    }
}
