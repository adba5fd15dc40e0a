//! First-run set-up done with direct access to the data folder (the operator's root of trust):
//! the first owner and fleet, and signing a local CLI in as that owner.

use crate::core::wire::TokenPair;
use crate::server::oauth;
use crate::store::{Role, Store, User};

/// The fleet created on first run.
pub(crate) const DEFAULT_FLEET: &str = "default";

/// The server's first user (created as owner of the default fleet when there is none).
pub(crate) async fn first_owner(store: &Store, email: &str) -> anyhow::Result<User> {
    if let Some(user) = store.first_user().await? {
        return Ok(user);
    }
    let user = store.create_user(email).await?;
    let fleet = store.fleet_named(DEFAULT_FLEET).await?;
    store.set_membership(user.id, fleet.id, Role::Owner).await?;
    tracing::info!(email, fleet = DEFAULT_FLEET, "created the first owner");
    Ok(user)
}

/// Issues tokens for the first owner, as a device-flow sign-in would.
pub(crate) async fn sign_in_owner(store: &Store, email: &str, client: &str) -> anyhow::Result<TokenPair> {
    let user = first_owner(store, email).await?;
    Ok(oauth::issue_pair(store, user.id, client).await?)
}
