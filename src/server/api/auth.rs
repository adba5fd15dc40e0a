//! Who is calling the CLI API: the access token's user, the active fleet and their role there.

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::core::secret;
use crate::core::wire::FLEET_HEADER;
use crate::server::grpc::{bearer, internal};
use crate::store::{Fleet, Role, Store, TokenKind, User};

/// An authenticated caller, scoped to one fleet.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The user.
    pub(crate) user: User,
    /// The active fleet; every call is scoped to it.
    pub(crate) fleet: Fleet,
    /// The user's role in it.
    pub(crate) role: Role,
}

impl Caller {
    /// Refuses (PERMISSION_DENIED, the CLI's exit 6) unless the role is at least `min`.
    pub(crate) fn require(&self, min: Role, action: &str) -> Result<(), Status> {
        if self.role >= min {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "permission denied: your role in fleet {:?} is {}; {action} needs {min} or higher",
            self.fleet.name, self.role
        )))
    }
}

/// Resolves the bearer access token and fleet header to a `Caller`.
pub(crate) async fn authenticate(store: &Store, meta: &MetadataMap) -> Result<Caller, Status> {
    let token = bearer(meta).ok_or_else(|| Status::unauthenticated("not signed in: run `cmdop login`"))?;
    let user_id = store
        .token_user(&secret::hash_token(token), TokenKind::Access)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::unauthenticated("access token expired or revoked: run `cmdop login`"))?;
    let user = store
        .user(user_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::unauthenticated("account no longer exists: run `cmdop login`"))?;
    let memberships = store.memberships(user.id).await.map_err(internal)?;
    let wanted = meta.get(FLEET_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let chosen = match wanted {
        Some(name) => memberships.into_iter().find(|m| m.fleet.name == name).ok_or_else(|| {
            Status::permission_denied(format!(
                "permission denied: you are not a member of fleet {name:?}; see `cmdop fleet list`"
            ))
        })?,
        None => memberships
            .into_iter()
            .next()
            .ok_or_else(|| Status::permission_denied("permission denied: you belong to no fleet"))?,
    };
    Ok(Caller { user, fleet: chosen.fleet, role: chosen.role })
}
