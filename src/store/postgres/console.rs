//! PostgreSQL: console sign-in tickets and the fleet's audit log.

use async_trait::async_trait;
use sqlx::Row;

use super::PgStore;
use crate::core::clock::now;
use crate::core::ids::FleetId;
use crate::store::console::*;
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
        let rows = sqlx::query(
            "SELECT at, actor, action, machine_id, link_id, detail FROM audit_events
             WHERE fleet_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(fleet.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    machine_id: r.try_get("machine_id")?,
                    link_id: r.try_get("link_id")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
