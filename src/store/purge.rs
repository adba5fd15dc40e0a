//! Deleting what has ended: expired or used device grants, OAuth tokens, console sign-in
//! tickets and enrollment tokens. Without it these tables only grow (anyone may start a device
//! grant). Run periodically by the server (`crate::server::purge`); with several nodes on
//! PostgreSQL, under an advisory lock so one node does it at a time.

use async_trait::async_trait;

use super::StoreError;

/// Rows deleted by one purge, per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Device grants.
    pub(crate) grants: u64,
    /// Access and refresh tokens.
    pub(crate) tokens: u64,
    /// Console sign-in tickets.
    pub(crate) tickets: u64,
    /// Enrollment tokens.
    pub(crate) enroll_tokens: u64,
}

impl Purged {
    /// Every row deleted.
    pub(crate) fn total(&self) -> u64 {
        self.grants + self.tokens + self.tickets + self.enroll_tokens
    }
}

/// The purge.
#[async_trait]
pub(crate) trait PurgeStore: Send + Sync {
    /// Deletes rows that ended (expired, used, revoked) before `before` (unix seconds). A
    /// refresh token is kept until it expires even when used, so a replay is still recognised
    /// and revokes its family. `None` when another node holds the purge lock (PostgreSQL).
    async fn purge_ended(&self, before: i64) -> Result<Option<Purged>, StoreError>;
}
