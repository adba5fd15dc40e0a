//! SQLite: oAuth device grants and users' sign-in password hashes.

use async_trait::async_trait;
use sqlx::Row;

use super::SqliteStore;
use crate::core::clock::now;
use crate::core::ids::UserId;
use crate::store::grants::*;
use crate::store::{StoreError, parse_col};

const GRANT_COLUMNS: &str =
    "device_code_hash, user_code, client_name, client_host, expires_at, interval_secs, last_poll_at, status, user_id";

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
        row.map(|r| grant_from_row(&r)).transpose()
    }

    async fn grant_by_user_code(&self, user_code: &str) -> Result<Option<DeviceGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE user_code = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_code).fetch_optional(&self.pool).await?;
        row.map(|r| grant_from_row(&r)).transpose()
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
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>("password_hash").ok().flatten()))
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

fn grant_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeviceGrant, StoreError> {
    let user: Option<String> = r.try_get("user_id")?;
    Ok(DeviceGrant {
        device_code_hash: r.try_get("device_code_hash")?,
        user_code: r.try_get("user_code")?,
        client_name: r.try_get("client_name")?,
        client_host: r.try_get("client_host")?,
        expires_at: r.try_get("expires_at")?,
        interval_secs: r.try_get("interval_secs")?,
        last_poll_at: r.try_get("last_poll_at")?,
        status: parse_col("device_grants", &r.try_get::<String, _>("status")?)?,
        user_id: user.map(|u| parse_col("device_grants", &u)).transpose()?,
    })
}
