//! PostgreSQL: console sign-in tickets and the fleet's audit log.

use async_trait::async_trait;
use sqlx::Row;

use super::PgStore;
use crate::core::clock::now;
use crate::core::ids::FleetId;
use crate::store::console::*;
use crate::store::rows::{self, AUDIT_COLUMNS};
use crate::store::{StoreError, parse_col};

#[async_trait]
impl ConsoleStore for PgStore {
    async fn insert_console_ticket(&self, hash: &str, owner: &TicketOwner, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_tickets (ticket_hash, user_id, fleet_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(owner.user.to_string())
        .bind(owner.fleet.map(|f| f.to_string()))
        .bind(now())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn consume_console_ticket(&self, hash: &str) -> Result<Option<TicketOwner>, StoreError> {
        let at = now();
        let row = sqlx::query(
            "UPDATE console_tickets SET used_at = $1
             WHERE ticket_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING user_id, fleet_id",
        )
        .bind(at)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = parse_col("console_tickets", &row.try_get::<String, _>("user_id")?)?;
        let fleet =
            row.try_get::<Option<String>, _>("fleet_id")?.map(|f| parse_col("console_tickets", &f)).transpose()?;
        Ok(Some(TicketOwner { user, fleet }))
    }

    async fn fleet_audit(&self, fleet: FleetId, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE fleet_id = $1 ORDER BY id DESC LIMIT $2");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(fleet.to_string()).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(rows::audit_row).collect()
    }
}
