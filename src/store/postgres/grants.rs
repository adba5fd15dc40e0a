//! PostgreSQL: OAuth device grants and users' sign-in password hashes.

use async_trait::async_trait;

use super::PgStore;
use crate::core::clock::now;
use crate::core::ids::UserId;
use crate::store::StoreError;
use crate::store::grants::*;
use crate::store::rows::{self, Cols, GRANT_COLUMNS};

#[async_trait]
impl GrantStore for PgStore {
    async fn insert_grant(&self, g: &DeviceGrant) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_grants (device_code_hash, user_code, client_name, client_host, created_at, expires_at,
             interval_secs, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
        )
        .bind(&g.device_code_hash)
        .bind(&g.user_code)
        .bind(&g.client_name)
        .bind(&g.client_host)
        .bind(now())
        .bind(g.expires_at)
        .bind(g.interval_secs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn grant_by_device_code(&self, hash: &str) -> Result<Option<DeviceGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE device_code_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.map(|r| rows::grant(&r)).transpose()
    }

    async fn grant_by_user_code(&self, user_code: &str) -> Result<Option<DeviceGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE user_code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_code).fetch_optional(&self.pool).await?;
        row.map(|r| rows::grant(&r)).transpose()
    }

    async fn grant_polled(&self, hash: &str, at: i64, interval_secs: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_grants SET last_poll_at = $1, interval_secs = $2 WHERE device_code_hash = $3")
            .bind(at)
            .bind(interval_secs)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn transition_grant(
        &self,
        hash: &str,
        from: GrantStatus,
        to: GrantStatus,
        user: Option<UserId>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_grants SET status = $1, user_id = COALESCE($2, user_id)
             WHERE device_code_hash = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(user.map(|u| u.to_string()))
        .bind(hash)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn clear_password_hash(&self, user: UserId, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = NULL WHERE id = $1 AND password_hash = $2")
            .bind(user.to_string())
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.opt_text("password_hash")).transpose()?.flatten())
    }
}
