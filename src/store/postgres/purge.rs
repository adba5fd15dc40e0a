//! PostgreSQL: deleting what has ended, by one node at a time: the transaction takes an
//! advisory lock first and gives up at once when another node holds it.

use async_trait::async_trait;

use super::PgStore;
use crate::store::StoreError;
use crate::store::purge::{PurgeStore, Purged};

/// The advisory lock key of the purge ("cmdopPRG" as a big-endian i64).
pub(crate) const PURGE_LOCK: i64 = 0x636d_646f_7050_5247;

#[async_trait]
impl PurgeStore for PgStore {
    async fn purge_ended(&self, before: i64) -> Result<Option<Purged>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PURGE_LOCK).fetch_one(&mut *tx).await?;
        if !locked {
            return Ok(None);
        }
        let grants =
            sqlx::query("DELETE FROM device_grants WHERE expires_at < $1").bind(before).execute(&mut *tx).await?;
        let tokens = sqlx::query(
            "DELETE FROM oauth_tokens
             WHERE expires_at < $1 OR (kind = 'access' AND revoked_at IS NOT NULL AND revoked_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let tickets = sqlx::query("DELETE FROM console_tickets WHERE expires_at < $1 OR used_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        let enroll = sqlx::query("DELETE FROM enroll_tokens WHERE expires_at < $1 OR used_at < $1")
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
