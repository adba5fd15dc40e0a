//! Share-link rows: who made which link for which machine, its opens and its revocation.

use async_trait::async_trait;

use super::StoreError;
use crate::core::ids::{FleetId, LinkId, MachineId, UserId};

/// A share link as stored (never the token: `token_hash` only).
#[derive(Clone, Debug)]
pub(crate) struct LinkRow {
    /// Link id (also inside the token).
    pub(crate) id: LinkId,
    /// Fleet of the machine.
    pub(crate) fleet_id: FleetId,
    /// Target machine.
    pub(crate) machine_id: MachineId,
    /// Creator.
    pub(crate) created_by: UserId,
    /// Creator's email, for listings and the page.
    pub(crate) created_by_email: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds; the token carries the same deadline.
    pub(crate) expires_at: i64,
    /// Viewer link.
    pub(crate) read_only: bool,
    /// Most sessions it may open, if limited.
    pub(crate) max_opens: Option<i64>,
    /// Persistent session to join instead of a new shell.
    pub(crate) session_id: Option<String>,
    /// When revoked, unix seconds.
    pub(crate) revoked_at: Option<i64>,
    /// Sessions opened so far.
    pub(crate) opens: i64,
}

/// A new link to store.
#[derive(Debug)]
pub(crate) struct NewLink<'a> {
    /// Link id.
    pub(crate) id: LinkId,
    /// Fleet.
    pub(crate) fleet_id: FleetId,
    /// Machine.
    pub(crate) machine_id: MachineId,
    /// SHA-256 of the token.
    pub(crate) token_hash: &'a str,
    /// Creator.
    pub(crate) created_by: UserId,
    /// Deadline, unix seconds.
    pub(crate) expires_at: i64,
    /// Viewer link.
    pub(crate) read_only: bool,
    /// Limit on opens.
    pub(crate) max_opens: Option<i64>,
    /// Persistent session to join.
    pub(crate) session_id: Option<String>,
}

/// Share-link rows, their opens and revocations, and a link's audit trail.
#[async_trait]
pub(crate) trait LinkStore: Send + Sync {
    /// Stores a new link.
    async fn insert_link(&self, link: &NewLink<'_>) -> Result<(), StoreError>;

    /// One link by id.
    async fn link(&self, id: LinkId) -> Result<Option<LinkRow>, StoreError>;

    /// Links of a fleet (optionally one machine), newest first.
    async fn list_links(&self, fleet: FleetId, machine: Option<MachineId>) -> Result<Vec<LinkRow>, StoreError>;

    /// Marks links revoked; returns those that were live (id and deadline).
    async fn revoke_links(&self, ids: &[LinkId]) -> Result<Vec<(LinkId, i64)>, StoreError>;

    /// Revoked links whose deadline has not passed: the start-up state of the in-memory
    /// revocation set.
    async fn live_revocations(&self) -> Result<Vec<(LinkId, i64)>, StoreError>;

    /// Counts one more session opened through the link, unless that passes `max_opens` or
    /// the link was revoked meanwhile. One statement: two racing opens cannot both take the
    /// last slot.
    async fn record_open(&self, id: LinkId) -> Result<bool, StoreError>;

    /// Gives back an open counted by `record_open` that the machine then refused (its attach
    /// password asked for a token the browser did not have yet): being asked for a password
    /// must not use up a link's `max_opens`.
    async fn release_open(&self, id: LinkId) -> Result<(), StoreError>;

    /// The audit trail of one link, oldest first: (unix seconds, actor, action, detail).
    async fn link_audit(&self, id: LinkId) -> Result<Vec<(i64, String, String, String)>, StoreError>;
}
