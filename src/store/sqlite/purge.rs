//! SQLite: deleting what has ended. One writer at a time, so no lock is needed.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::purge::{PurgeStore, Purged};

#[async_trait]
impl PurgeStore for SqliteStore {
    async fn purge_ended(&self, before: i64) -> Result<Option<Purged>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let grants =
            sqlx::query("DELETE FROM device_grants WHERE expires_at < ?").bind(before).execute(&mut *tx).await?;
        let tokens = sqlx::query(
            "DELETE FROM oauth_tokens
             WHERE expires_at < ? OR (kind = 'access' AND revoked_at IS NOT NULL AND revoked_at < ?)",
        )
        .bind(before)
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let tickets = sqlx::query("DELETE FROM console_tickets WHERE expires_at < ? OR used_at < ?")
            .bind(before)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        let enroll = sqlx::query("DELETE FROM enroll_tokens WHERE expires_at < ? OR used_at < ?")
            .bind(before)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Purged {
            grants: grants.rows_affected(),
            tokens: tokens.rows_affected(),
            tickets: tickets.rows_affected(),
            enroll_tokens: enroll.rows_affected(),
        }))
    }
}
