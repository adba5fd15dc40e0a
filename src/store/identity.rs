//! Users, fleets, memberships with roles, and OAuth tokens (hashed).

use async_trait::async_trait;
use std::fmt;
use std::str::FromStr;

use super::StoreError;
use crate::core::ids::{FleetId, UserId};

/// A fleet member's role, from most to least powerful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Reads only: may list machines.
    Viewer,
    /// May exec, attach and share.
    Member,
    /// May also revoke others' links, make enrollment tokens and add users.
    Admin,
    /// Everything, including the fleet itself.
    Owner,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!("unknown role {s:?}: use owner, admin, member or viewer")),
        }
    }
}

/// A user account.
#[derive(Clone, Debug)]
pub(crate) struct User {
    /// Stable id.
    pub(crate) id: UserId,
    /// Sign-in name.
    pub(crate) email: String,
}

/// A fleet.
#[derive(Clone, Debug)]
pub(crate) struct Fleet {
    /// Stable id.
    pub(crate) id: FleetId,
    /// Unique name users type.
    pub(crate) name: String,
}

/// A user's place in a fleet.
#[derive(Clone, Debug)]
pub(crate) struct Membership {
    /// The fleet.
    pub(crate) fleet: Fleet,
    /// The user's role there.
    pub(crate) role: Role,
}

/// OAuth token kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Short-lived bearer for API calls.
    Access,
    /// Long-lived, single-use, trades for a new pair.
    Refresh,
}

impl TokenKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// Users, fleets, memberships and OAuth tokens.
#[async_trait]
pub(crate) trait IdentityStore: Send + Sync {
    /// Creates a user (no password yet).
    async fn create_user(&self, email: &str) -> Result<User, StoreError>;

    /// Finds a user by email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    /// Finds a user by id.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The first user ever created: the server's owner, if any.
    async fn first_user(&self) -> Result<Option<User>, StoreError>;

    /// Finds a fleet by name, or creates it.
    async fn fleet_named(&self, name: &str) -> Result<Fleet, StoreError>;

    /// Gives `user` `role` in `fleet` (replacing any earlier role).
    async fn set_membership(&self, user: UserId, fleet: FleetId, role: Role) -> Result<(), StoreError>;

    /// Every fleet the user belongs to, oldest first.
    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError>;

    /// Stores the hash of a new OAuth token.
    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        user: UserId,
        client_name: &str,
        expires_at: i64,
        family: &str,
    ) -> Result<(), StoreError>;

    /// The user a live (unexpired, unrevoked) token of `kind` belongs to.
    async fn token_user(&self, hash: &str, kind: TokenKind) -> Result<Option<UserId>, StoreError>;

    /// Revokes a token by hash; true when it was live. A refresh token is single-use, so the
    /// refresh grant revokes it with this and checks the answer to detect replays.
    async fn revoke_token(&self, hash: &str) -> Result<bool, StoreError>;

    /// A refresh token whatever its state, so a replay of a used one can be told from an
    /// unknown one.
    async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshToken>, StoreError>;

    /// Revokes every live token of a family (all descended from one grant); how many.
    async fn revoke_family(&self, family: &str) -> Result<u64, StoreError>;
}

/// A refresh token's row, live or not.
#[derive(Clone, Debug)]
pub(crate) struct RefreshToken {
    /// Whose it is.
    pub(crate) user: UserId,
    /// The family: every token descended from the same grant.
    pub(crate) family: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
    /// Set once used (rotated) or revoked.
    pub(crate) revoked_at: Option<i64>,
}
