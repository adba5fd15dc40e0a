//! Machines and their one-time enrollment tokens.

use async_trait::async_trait;
use thiserror::Error;

use super::StoreError;
use crate::core::ids::{FleetId, MachineId, UserId};

/// A machine of a fleet, as the store knows it.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    /// Stable id from enrollment on.
    pub(crate) id: MachineId,
    /// Its fleet.
    pub(crate) fleet_id: FleetId,
    /// Hostname the agent reported last.
    pub(crate) hostname: String,
    /// Optional friendly name.
    pub(crate) display_name: Option<String>,
    /// Operating system and CPU architecture reported by the agent.
    pub(crate) os: String,
    /// CPU architecture.
    pub(crate) arch: String,
    /// Whether a node with a live lease holds its agent's stream.
    pub(crate) online: bool,
    /// When its stream last opened or closed, unix seconds.
    pub(crate) last_seen: Option<i64>,
}

impl crate::core::resolver::Candidate for Machine {
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn hostname(&self) -> &str {
        &self.hostname
    }
    fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }
}

impl Machine {
    /// The machine an enrollment just created: offline until its stream opens.
    pub(crate) fn enrolled(id: MachineId, fleet_id: FleetId, info: &MachineInfo) -> Self {
        Self {
            id,
            fleet_id,
            hostname: info.hostname.clone(),
            display_name: info.given_display_name(),
            os: info.os.clone(),
            arch: info.arch.clone(),
            online: false,
            last_seen: None,
        }
    }
}

/// What an agent reports about itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct MachineInfo {
    /// Hostname.
    pub(crate) hostname: String,
    /// Optional display name (empty keeps the stored one).
    pub(crate) display_name: String,
    /// Operating system.
    pub(crate) os: String,
    /// CPU architecture.
    pub(crate) arch: String,
}

impl MachineInfo {
    /// The display name to store: none when the agent gave an empty one.
    pub(crate) fn given_display_name(&self) -> Option<String> {
        Some(self.display_name.clone()).filter(|d| !d.is_empty())
    }
}

/// Why an enrollment token was refused.
#[derive(Debug, Error)]
pub(crate) enum EnrollError {
    /// Never issued (or mistyped).
    #[error("unknown enrollment token: create one with `cmdop fleet token create`")]
    Unknown,
    /// Already redeemed by a machine.
    #[error("enrollment token already used: create a new one with `cmdop fleet token create`")]
    Used,
    /// Past its deadline.
    #[error("enrollment token expired: create a new one with `cmdop fleet token create`")]
    Expired,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnrollError {
    /// Why a token could not be claimed, from its row (`used_at`, `expires_at`) if it exists.
    /// Backends claim a token with one conditional update and ask this only when it failed.
    pub(crate) fn refusal(row: Option<(Option<i64>, i64)>) -> Self {
        match row {
            None => EnrollError::Unknown,
            Some((Some(_), _)) => EnrollError::Used,
            Some((None, _)) => EnrollError::Expired,
        }
    }
}

/// Machines, their connection state and enrollment tokens.
#[async_trait]
pub(crate) trait MachineStore: Send + Sync {
    /// Stores the hash of a new enrollment token for `fleet`.
    async fn create_enroll_token(
        &self,
        hash: &str,
        fleet: FleetId,
        by: UserId,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Redeems an enrollment token once, creating the machine with its credential hash. The
    /// token is claimed by one conditional update (`WHERE used_at IS NULL`) in the transaction
    /// that creates the machine: two agents racing with one token cannot both win, on SQLite
    /// (one writer at a time) or PostgreSQL (the second update waits for the first's row lock
    /// and then finds the token used).
    async fn enroll_machine(
        &self,
        token_hash: &str,
        credential_hash: &str,
        info: &MachineInfo,
    ) -> Result<Machine, EnrollError>;

    /// The machine a live (unrevoked) credential belongs to.
    async fn machine_by_credential(&self, hash: &str) -> Result<Option<Machine>, StoreError>;

    /// One machine by id.
    async fn machine(&self, id: MachineId) -> Result<Option<Machine>, StoreError>;

    /// Every machine of a fleet, by hostname.
    async fn list_machines(&self, fleet: FleetId) -> Result<Vec<Machine>, StoreError>;

    /// Records what the agent said in its hello and marks the machine online.
    async fn machine_connected(&self, id: MachineId, info: &MachineInfo) -> Result<(), StoreError>;

    /// The machine's stream dropped: it was last seen now.
    async fn machine_disconnected(&self, id: MachineId) -> Result<(), StoreError>;
}
