//! SQLite: machines, their connection state and enrollment tokens.

use super::SqliteStore;
use crate::core::clock::now;
use crate::core::ids::{FleetId, MachineId, UserId};
use crate::store::StoreError;
use crate::store::cluster::machine_columns;
use crate::store::machines::*;
use crate::store::rows::{self, Cols};
use async_trait::async_trait;

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
        let id = MachineId::random();
        let at = now();
        let claimed = sqlx::query(
            "UPDATE enroll_tokens SET used_at = ?, machine_id = ?
             WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING fleet_id",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(token_hash)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(claimed) = claimed else {
            let row = sqlx::query("SELECT used_at, expires_at FROM enroll_tokens WHERE token_hash = ?")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(EnrollError::refusal(row.as_ref().map(rows::token_state).transpose()?));
        };
        let machine = Machine::enrolled(id, claimed.parsed("enroll_tokens", "fleet_id")?, info);
        sqlx::query(
            "INSERT INTO machines (id, fleet_id, hostname, display_name, os, arch, credential_hash, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(machine.fleet_id.to_string())
        .bind(&info.hostname)
        .bind(&machine.display_name)
        .bind(&info.os)
        .bind(&info.arch)
        .bind(credential_hash)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(machine)
    }

    async fn machine_by_credential(&self, hash: &str) -> Result<Option<Machine>, StoreError> {
        let sql =
            format!("SELECT {} FROM machines WHERE credential_hash = ? AND revoked_at IS NULL", machine_columns(now()));
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.map(|r| rows::machine(&r)).transpose()
    }

    async fn machine(&self, id: MachineId) -> Result<Option<Machine>, StoreError> {
        let sql = format!("SELECT {} FROM machines WHERE id = ? AND revoked_at IS NULL", machine_columns(now()));
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| rows::machine(&r)).transpose()
    }

    async fn list_machines(&self, fleet: FleetId) -> Result<Vec<Machine>, StoreError> {
        let sql = format!(
            "SELECT {} FROM machines WHERE fleet_id = ? AND revoked_at IS NULL ORDER BY hostname, id",
            machine_columns(now())
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(fleet.to_string()).fetch_all(&self.pool).await?;
        found.iter().map(rows::machine).collect()
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

    async fn machine_disconnected(&self, id: MachineId) -> Result<(), StoreError> {
        sqlx::query("UPDATE machines SET online = 0, last_seen = ? WHERE id = ?")
            .bind(now())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
