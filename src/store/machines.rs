//! Machines and their one-time enrollment tokens.

use async_trait::async_trait;
use thiserror::Error;

use super::StoreError;
use crate::core::ids::{FleetId, MachineId, UserId};

/// A machine of a fleet, as the store knows it.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Stable id from enrollment on.
    pub id: MachineId,
    /// Its fleet.
    pub fleet_id: FleetId,
    /// Hostname the agent reported last.
    pub hostname: String,
    /// Optional friendly name.
    pub display_name: Option<String>,
    /// Operating system and CPU architecture reported by the agent.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Whether an agent stream is up and heartbeating.
    pub online: bool,
    /// Last heartbeat, unix seconds.
    pub last_seen: Option<i64>,
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

/// What an agent reports about itself.
#[derive(Clone, Debug, Default)]
pub struct MachineInfo {
    /// Hostname.
    pub hostname: String,
    /// Optional display name (empty keeps the stored one).
    pub display_name: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
}

/// Why an enrollment token was refused.
#[derive(Debug, Error)]
pub enum EnrollError {
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

/// Machines, their connection state and enrollment tokens.
#[async_trait]
pub trait MachineStore: Send + Sync {
    /// Stores the hash of a new enrollment token for `fleet`.
    async fn create_enroll_token(
        &self,
        hash: &str,
        fleet: FleetId,
        by: UserId,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Redeems an enrollment token once, creating the machine with its credential hash.
    /// One transaction: two agents racing with one token cannot both win.
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

    /// A heartbeat: the machine is alive now.
    async fn machine_heartbeat(&self, id: MachineId) -> Result<(), StoreError>;

    /// The machine's stream dropped.
    async fn machine_disconnected(&self, id: MachineId) -> Result<(), StoreError>;

    /// Marks offline every machine whose last heartbeat is older than `cutoff` (unix seconds).
    async fn mark_stale_offline(&self, cutoff: i64) -> Result<u64, StoreError>;

    /// At start-up of a single node no stream is up yet: every machine is offline.
    async fn mark_all_offline(&self) -> Result<(), StoreError>;
}
