//! SQLite: machines, their connection state and enrollment tokens.

use async_trait::async_trait;
use sqlx::Row;

use super::SqliteStore;
use crate::core::clock::now;
use crate::core::ids::{FleetId, MachineId, UserId};
use crate::store::machines::*;
use crate::store::{StoreError, parse_col};

const MACHINE_COLUMNS: &str = "id, fleet_id, hostname, display_name, os, arch, online, last_seen";

#[async_trait]
impl MachineStore for SqliteStore {
    async fn create_enroll_token(
        &self,
        hash: &str,
        fleet: FleetId,
        by: UserId,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enroll_tokens (token_hash, fleet_id, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(fleet.to_string())
        .bind(by.to_string())
        .bind(now())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enroll_machine(
        &self,
        token_hash: &str,
        credential_hash: &str,
        info: &MachineInfo,
    ) -> Result<Machine, EnrollError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT fleet_id, expires_at, used_at FROM enroll_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(EnrollError::Unknown)?;
        if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
            return Err(EnrollError::Used);
        }
        if row.try_get::<i64, _>("expires_at")? <= now() {
            return Err(EnrollError::Expired);
        }
        let fleet_id: FleetId = parse_col("enroll_tokens", &row.try_get::<String, _>("fleet_id")?)?;
        let id = MachineId::random();
        // Consumed by a conditional update, so two enrollments racing on one token (on any
        // database and isolation level) cannot both pass: the loser changes no row.
        let consumed = sqlx::query(
            "UPDATE enroll_tokens SET used_at = ?, machine_id = ? WHERE token_hash = ? AND used_at IS NULL",
        )
        .bind(now())
        .bind(id.to_string())
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            return Err(EnrollError::Used);
        }
        let display = Some(info.display_name.clone()).filter(|d| !d.is_empty());
        sqlx::query(
            "INSERT INTO machines (id, fleet_id, hostname, display_name, os, arch, credential_hash, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(fleet_id.to_string())
        .bind(&info.hostname)
        .bind(&display)
        .bind(&info.os)
        .bind(&info.arch)
        .bind(credential_hash)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Machine {
            id,
            fleet_id,
            hostname: info.hostname.clone(),
            display_name: display,
            os: info.os.clone(),
            arch: info.arch.clone(),
            online: false,
            last_seen: None,
        })
    }

    async fn machine_by_credential(&self, hash: &str) -> Result<Option<Machine>, StoreError> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_hash = ? AND revoked_at IS NULL");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.map(|r| machine_from_row(&r)).transpose()
    }

    async fn machine(&self, id: MachineId) -> Result<Option<Machine>, StoreError> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ? AND revoked_at IS NULL");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| machine_from_row(&r)).transpose()
    }

    async fn list_machines(&self, fleet: FleetId) -> Result<Vec<Machine>, StoreError> {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE fleet_id = ? AND revoked_at IS NULL ORDER BY hostname, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(fleet.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(machine_from_row).collect()
    }

    async fn machine_connected(&self, id: MachineId, info: &MachineInfo) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE machines SET hostname = ?, os = ?, arch = ?, online = 1, last_seen = ?,
             display_name = COALESCE(NULLIF(?, ''), display_name) WHERE id = ?",
        )
        .bind(&info.hostname)
        .bind(&info.os)
        .bind(&info.arch)
        .bind(now())
        .bind(&info.display_name)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn machine_heartbeat(&self, id: MachineId) -> Result<(), StoreError> {
        sqlx::query("UPDATE machines SET online = 1, last_seen = ? WHERE id = ?")
            .bind(now())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn machine_disconnected(&self, id: MachineId) -> Result<(), StoreError> {
        sqlx::query("UPDATE machines SET online = 0 WHERE id = ?").bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    async fn mark_stale_offline(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE machines SET online = 0 WHERE online = 1 AND (last_seen IS NULL OR last_seen < ?)")
                .bind(cutoff)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn mark_all_offline(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE machines SET online = 0").execute(&self.pool).await?;
        Ok(())
    }
}

fn machine_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Machine, StoreError> {
    Ok(Machine {
        id: parse_col("machines", &r.try_get::<String, _>("id")?)?,
        fleet_id: parse_col("machines", &r.try_get::<String, _>("fleet_id")?)?,
        hostname: r.try_get("hostname")?,
        display_name: r.try_get("display_name")?,
        os: r.try_get("os")?,
        arch: r.try_get("arch")?,
        online: r.try_get::<i64, _>("online")? != 0,
        last_seen: r.try_get("last_seen")?,
    })
}
