//! OAuth 2.0 tokens: access (1 h) and refresh (30 d, single use, rotated), stored hashed, and
//! the device authorization grant that issues them (`device`).

pub(crate) mod device;

use crate::core::clock::now;
use crate::core::ids::UserId;
use crate::core::secret::{self, prefix};
use crate::core::wire::TokenPair;
use crate::store::{Store, StoreError, TokenKind};

/// Access-token lifetime: 1 hour.
pub(crate) const ACCESS_TTL_SECS: i64 = 3600;
/// Refresh-token lifetime: 30 days.
pub(crate) const REFRESH_TTL_SECS: i64 = 30 * 86_400;

/// Mints and stores (hashed) a new access and refresh token for `user`, starting a new token
/// family (one per grant).
pub(crate) async fn issue_pair(store: &Store, user: UserId, client_name: &str) -> Result<TokenPair, StoreError> {
    issue_in_family(store, user, client_name, &uuid::Uuid::new_v4().to_string()).await
}

/// Mints a pair in `family`: the tokens a refresh hands out stay in their grant's family, so a
/// replay anywhere in the chain can revoke all of it.
async fn issue_in_family(
    store: &Store,
    user: UserId,
    client_name: &str,
    family: &str,
) -> Result<TokenPair, StoreError> {
    let access = secret::new_token(prefix::ACCESS);
    let refresh = secret::new_token(prefix::REFRESH);
    let t = now();
    let access_hash = secret::hash_token(access.expose());
    store.insert_token(&access_hash, TokenKind::Access, user, client_name, t + ACCESS_TTL_SECS, family).await?;
    let refresh_hash = secret::hash_token(refresh.expose());
    store.insert_token(&refresh_hash, TokenKind::Refresh, user, client_name, t + REFRESH_TTL_SECS, family).await?;
    Ok(TokenPair {
        access_token: access.expose().clone(),
        refresh_token: refresh.expose().clone(),
        token_type: "Bearer".into(),
        expires_in: ACCESS_TTL_SECS,
    })
}

/// Why a refresh grant gave no tokens.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    /// Unknown, expired or revoked (by logout): nothing else changes.
    #[error("refresh token expired, revoked or unknown: run `cmdop login`")]
    Invalid,
    /// A used refresh token came back: one of its two holders is a thief, and the server cannot
    /// tell which, so every token of its grant is revoked (RFC 6819 5.2.2.3, OAuth 2.1 4.3.1).
    #[error("refresh token already used: every token of this sign-in is revoked; run `cmdop login`")]
    Reused,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Trades a live refresh token for a new pair in the same family; the old refresh token dies
/// (rotation). Presenting a used one again, or racing two uses of one, revokes the family.
pub(crate) async fn refresh(store: &Store, refresh_token: &str) -> Result<TokenPair, RefreshError> {
    let hash = secret::hash_token(refresh_token);
    let row = store.refresh_token(&hash).await?.ok_or(RefreshError::Invalid)?;
    if row.revoked_at.is_some() {
        store.revoke_family(&row.family).await?;
        return Err(RefreshError::Reused);
    }
    if row.expires_at <= now() {
        return Err(RefreshError::Invalid);
    }
    if !store.revoke_token(&hash).await? {
        // Another request used it between our read and our update: a replay as well.
        store.revoke_family(&row.family).await?;
        return Err(RefreshError::Reused);
    }
    Ok(issue_in_family(store, row.user, "refresh", &row.family).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret;

    #[tokio::test]
    async fn expired_tokens_stop_working_and_refresh_tokens_work_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).await.unwrap();
        let user = store.create_user("eve@example.com").await.unwrap();
        let old = secret::new_token(prefix::ACCESS);
        let old_hash = secret::hash_token(old.expose());
        store.insert_token(&old_hash, TokenKind::Access, user.id, "test", now() - 1, "f").await.unwrap();
        assert_eq!(store.token_user(&old_hash, TokenKind::Access).await.unwrap(), None, "expired by the clock");

        let pair = issue_pair(&store, user.id, "test").await.unwrap();
        let access_hash = secret::hash_token(&pair.access_token);
        assert_eq!(store.token_user(&access_hash, TokenKind::Access).await.unwrap(), Some(user.id));
        assert!(
            matches!(refresh(&store, &pair.access_token).await, Err(RefreshError::Invalid)),
            "an access token is no refresh token"
        );
        let second = refresh(&store, &pair.refresh_token).await.unwrap();
        let third = refresh(&store, &second.refresh_token).await.unwrap();
        assert!(matches!(refresh(&store, &pair.refresh_token).await, Err(RefreshError::Reused)), "rotated: single use");
        for token in [&second.access_token, &third.access_token] {
            let hash = secret::hash_token(token);
            assert_eq!(store.token_user(&hash, TokenKind::Access).await.unwrap(), None, "the replay revoked the chain");
        }
        assert!(matches!(refresh(&store, &third.refresh_token).await, Err(RefreshError::Reused)), "chain revoked");

        let other = issue_pair(&store, user.id, "other").await.unwrap();
        assert!(refresh(&store, &other.refresh_token).await.is_ok(), "another sign-in's family lives on");
    }
}
