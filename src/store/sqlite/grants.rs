//! SQLite: oAuth device grants and users' sign-in password hashes.

use super::SqliteStore;
use crate::core::clock::now;
use crate::core::ids::UserId;
use crate::store::StoreError;
use crate::store::grants::*;
use crate::store::rows::{self, Cols, GRANT_COLUMNS};
use async_trait::async_trait;

#[async_trait]
impl GrantStore for SqliteStore {
    async fn insert_grant(&self, g: &DeviceGrant) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_grants (device_code_hash, user_code, client_name, client_host, created_at, expires_at, interval_secs, status)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
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
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE device_code_hash = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.map(|r| rows::grant(&r)).transpose()
    }

    async fn grant_by_user_code(&self, user_code: &str) -> Result<Option<DeviceGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE user_code = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_code).fetch_optional(&self.pool).await?;
        row.map(|r| rows::grant(&r)).transpose()
    }

    async fn grant_polled(&self, hash: &str, at: i64, interval_secs: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_grants SET last_poll_at = ?, interval_secs = ? WHERE device_code_hash = ?")
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
            "UPDATE device_grants SET status = ?, user_id = COALESCE(?, user_id) WHERE device_code_hash = ? AND status = ?",
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
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = ?")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.opt_text("password_hash")).transpose()?.flatten())
    }

    async fn clear_password_hash(&self, user: UserId, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = NULL WHERE id = ? AND password_hash = ?")
            .bind(user.to_string())
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
