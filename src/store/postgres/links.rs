//! PostgreSQL: share-link rows, their opens and revocations, and a link's audit trail.

use async_trait::async_trait;

use super::PgStore;
use crate::core::clock::now;
use crate::core::ids::{FleetId, LinkId, MachineId};
use crate::store::StoreError;
use crate::store::links::*;
use crate::store::rows::{self, LINK_COLUMNS};

#[async_trait]
impl LinkStore for PgStore {
    async fn insert_link(&self, link: &NewLink<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO share_links (id, fleet_id, machine_id, token_hash, created_by, created_at, expires_at,
             read_only, max_opens, session_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        let sql = format!("SELECT {LINK_COLUMNS} WHERE l.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| rows::link(&r)).transpose()
    }

    async fn list_links(&self, fleet: FleetId, machine: Option<MachineId>) -> Result<Vec<LinkRow>, StoreError> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} WHERE l.fleet_id = $1 AND ($2::TEXT IS NULL OR l.machine_id = $2)
             ORDER BY l.created_at DESC, l.seq DESC"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(fleet.to_string())
            .bind(machine.map(|m| m.to_string()))
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::link).collect()
    }

    async fn revoke_links(&self, ids: &[LinkId]) -> Result<Vec<(LinkId, i64)>, StoreError> {
        let ids: Vec<String> = ids.iter().map(LinkId::to_string).collect();
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query(
            "UPDATE share_links SET revoked_at = $1 WHERE id = ANY($2) AND revoked_at IS NULL
             RETURNING id, expires_at",
        )
        .bind(now())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let revoked: Vec<(LinkId, i64)> = found.iter().map(rows::revocation).collect::<Result<_, _>>()?;
        if !revoked.is_empty() {
            let subjects: Vec<String> = revoked.iter().map(|(id, _)| id.to_string()).collect();
            sqlx::query("INSERT INTO cluster_events (kind, subject, at_ms) SELECT $1, s, $2 FROM unnest($3::text[]) s")
                .bind(crate::store::EVENT_REVOKE)
                .bind(crate::core::clock::now_ms())
                .bind(&subjects)
                .execute(&mut *tx)
                .await?;
            super::notify(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn live_revocations(&self) -> Result<Vec<(LinkId, i64)>, StoreError> {
        let found =
            sqlx::query("SELECT id, expires_at FROM share_links WHERE revoked_at IS NOT NULL AND expires_at > $1")
                .bind(now())
                .fetch_all(&self.pool)
                .await?;
        found.iter().map(rows::revocation).collect()
    }

    async fn record_open(&self, id: LinkId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE share_links SET opens = opens + 1
             WHERE id = $1 AND revoked_at IS NULL AND (max_opens IS NULL OR opens < max_opens)",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_open(&self, id: LinkId) -> Result<(), StoreError> {
        sqlx::query("UPDATE share_links SET opens = opens - 1 WHERE id = $1 AND opens > 0")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn link_audit(&self, id: LinkId) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let found = sqlx::query("SELECT at, actor, action, detail FROM audit_events WHERE link_id = $1 ORDER BY id")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::audit_line).collect()
    }
}
