//! What the web console keeps: one-time sign-in tickets (hashed) and its view of the audit log.

use async_trait::async_trait;

use super::StoreError;
use crate::core::ids::{FleetId, UserId};

/// Who a consumed sign-in ticket signs in.
#[derive(Clone, Debug)]
pub(crate) struct TicketOwner {
    /// The user.
    pub(crate) user: UserId,
    /// The fleet the CLI had active, if it named one.
    pub(crate) fleet: Option<FleetId>,
}

/// One line of a fleet's audit log, newest first.
#[derive(Clone, Debug)]
pub(crate) struct AuditRow {
    /// Unix seconds.
    pub(crate) at: i64,
    /// Who did it (email, user id, `anonymous`, `system`).
    pub(crate) actor: String,
    /// What happened, e.g. `link.revoke`.
    pub(crate) action: String,
    /// The machine concerned, if any.
    pub(crate) machine_id: Option<String>,
    /// The link concerned, if any.
    pub(crate) link_id: Option<String>,
    /// Free text.
    pub(crate) detail: String,
}

/// Console sign-in tickets and the audit log as the console reads it.
#[async_trait]
pub(crate) trait ConsoleStore: Send + Sync {
    /// Stores the hash of a new ticket.
    async fn insert_console_ticket(&self, hash: &str, owner: &TicketOwner, expires_at: i64) -> Result<(), StoreError>;

    /// Uses a ticket up: one conditional update, so of two racing requests only one wins.
    /// `None` when it is unknown, used or expired.
    async fn consume_console_ticket(&self, hash: &str) -> Result<Option<TicketOwner>, StoreError>;

    /// The fleet's latest `limit` audit events, newest first.
    async fn fleet_audit(&self, fleet: FleetId, limit: i64) -> Result<Vec<AuditRow>, StoreError>;
}
