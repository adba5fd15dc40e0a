//! OAuth device authorization grants (RFC 8628): pending until a person approves or denies
//! them on the verification page, then consumed once by the polling client.

use async_trait::async_trait;

use super::StoreError;
use crate::core::ids::UserId;

/// Where a grant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrantStatus {
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
    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) struct DeviceGrant {
    /// SHA-256 of the device code.
    pub(crate) device_code_hash: String,
    /// What the person types, e.g. `KDFG-XRTQ`.
    pub(crate) user_code: String,
    /// Client's self-description, shown on the page.
    pub(crate) client_name: String,
    /// Host the client runs on, shown on the page.
    pub(crate) client_host: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
    /// Minimum seconds between polls.
    pub(crate) interval_secs: i64,
    /// Last poll, unix seconds.
    pub(crate) last_poll_at: Option<i64>,
    /// Where it stands.
    pub(crate) status: GrantStatus,
    /// Who approved or denied it.
    pub(crate) user_id: Option<UserId>,
}

/// OAuth device grants and users' sign-in password hashes.
#[async_trait]
pub(crate) trait GrantStore: Send + Sync {
    /// Stores a new pending grant.
    async fn insert_grant(&self, g: &DeviceGrant) -> Result<(), StoreError>;

    /// A grant by its device code's hash.
    async fn grant_by_device_code(&self, hash: &str) -> Result<Option<DeviceGrant>, StoreError>;

    /// A grant by its user code.
    async fn grant_by_user_code(&self, user_code: &str) -> Result<Option<DeviceGrant>, StoreError>;

    /// Records a poll and the (possibly raised) interval.
    async fn grant_polled(&self, hash: &str, at: i64, interval_secs: i64) -> Result<(), StoreError>;

    /// Moves a grant from `from` to `to` (by `user`); false when it was not in `from`, so two
    /// racing decisions or polls cannot both win.
    async fn transition_grant(
        &self,
        hash: &str,
        from: GrantStatus,
        to: GrantStatus,
        user: Option<UserId>,
    ) -> Result<bool, StoreError>;

    /// Sets a user's password hash (argon2id PHC string).
    async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<(), StoreError>;

    /// A user's password hash, if they have a password.
    async fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError>;

    /// Clears a user's password if it is still `hash` (a one-time password was used); false
    /// when another sign-in used it first (or it was replaced), so it works only once.
    async fn clear_password_hash(&self, user: UserId, hash: &str) -> Result<bool, StoreError>;
}
