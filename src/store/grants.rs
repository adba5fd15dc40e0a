//! OAuth device authorization grants (RFC 8628): pending until a person approves or denies
//! them on the verification page, then consumed once by the polling client.

use sqlx::Row;

use super::{Store, StoreError, now, parse_col};
use crate::ids::UserId;

/// Where a grant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantStatus {
    /// Waiting for the person.
    Pending,
    /// Approved by `user_id`; the next poll gets tokens.
    Approved,
    /// Denied.
    Denied,
    /// Tokens were issued; the device code is spent.
    Consumed,
}

impl GrantStatus {
    fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Pending => "pending",
            GrantStatus::Approved => "approved",
            GrantStatus::Denied => "denied",
            GrantStatus::Consumed => "consumed",
        }
    }
}

impl std::str::FromStr for GrantStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(GrantStatus::Pending),
            "approved" => Ok(GrantStatus::Approved),
            "denied" => Ok(GrantStatus::Denied),
            "consumed" => Ok(GrantStatus::Consumed),
            _ => Err(()),
        }
    }
}

/// A device grant.
#[derive(Clone, Debug)]
pub struct DeviceGrant {
    /// SHA-256 of the device code.
    pub device_code_hash: String,
    /// What the person types, e.g. `KDFG-XRTQ`.
    pub user_code: String,
    /// Client's self-description, shown on the page.
    pub client_name: String,
    /// Host the client runs on, shown on the page.
    pub client_host: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Minimum seconds between polls.
    pub interval_secs: i64,
    /// Last poll, unix seconds.
    pub last_poll_at: Option<i64>,
    /// Where it stands.
    pub status: GrantStatus,
    /// Who approved or denied it.
    pub user_id: Option<UserId>,
}

const GRANT_COLUMNS: &str = "device_code_hash, user_code, client_name, client_host, expires_at, interval_secs, last_poll_at, status, user_id";

impl Store {
    /// Stores a new pending grant.
    pub async fn insert_grant(&self, g: &DeviceGrant) -> Result<(), StoreError> {
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

    /// A grant by its device code's hash.
    pub async fn grant_by_device_code(&self, hash: &str) -> Result<Option<DeviceGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE device_code_hash = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.map(|r| grant_from_row(&r)).transpose()
    }

    /// A grant by its user code.
    pub async fn grant_by_user_code(&self, user_code: &str) -> Result<Option<DeviceGrant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM device_grants WHERE user_code = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_code).fetch_optional(&self.pool).await?;
        row.map(|r| grant_from_row(&r)).transpose()
    }

    /// Records a poll and the (possibly raised) interval.
    pub async fn grant_polled(&self, hash: &str, at: i64, interval_secs: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_grants SET last_poll_at = ?, interval_secs = ? WHERE device_code_hash = ?")
            .bind(at)
            .bind(interval_secs)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a grant from `from` to `to` (by `user`); false when it was not in `from`, so two
    /// racing decisions or polls cannot both win.
    pub async fn transition_grant(
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

    /// Sets a user's password hash (argon2id PHC string).
    pub async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A user's password hash, if they have a password.
    pub async fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = ?")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>("password_hash").ok().flatten()))
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
