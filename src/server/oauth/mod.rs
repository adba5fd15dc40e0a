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

/// Mints and stores (hashed) a new access and refresh token for `user`.
pub(crate) async fn issue_pair(store: &Store, user: UserId, client_name: &str) -> Result<TokenPair, StoreError> {
    let access = secret::new_token(prefix::ACCESS);
    let refresh = secret::new_token(prefix::REFRESH);
    let t = now();
    let access_hash = secret::hash_token(access.expose());
    store.insert_token(&access_hash, TokenKind::Access, user, client_name, t + ACCESS_TTL_SECS).await?;
    let refresh_hash = secret::hash_token(refresh.expose());
    store.insert_token(&refresh_hash, TokenKind::Refresh, user, client_name, t + REFRESH_TTL_SECS).await?;
    Ok(TokenPair {
        access_token: access.expose().clone(),
        refresh_token: refresh.expose().clone(),
        token_type: "Bearer".into(),
        expires_in: ACCESS_TTL_SECS,
    })
}

/// Trades a live refresh token for a new pair; the old refresh token dies (rotation), so a
/// stolen one works at most once.
pub(crate) async fn refresh(store: &Store, refresh_token: &str) -> Result<Option<TokenPair>, StoreError> {
    let hash = secret::hash_token(refresh_token);
    let Some(user) = store.token_user(&hash, TokenKind::Refresh).await? else {
        return Ok(None);
    };
    if !store.revoke_token(&hash).await? {
        return Ok(None);
    }
    issue_pair(store, user, "refresh").await.map(Some)
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
        store.insert_token(&old_hash, TokenKind::Access, user.id, "test", now() - 1).await.unwrap();
        assert_eq!(store.token_user(&old_hash, TokenKind::Access).await.unwrap(), None, "expired by the clock");

        let pair = issue_pair(&store, user.id, "test").await.unwrap();
        let access_hash = secret::hash_token(&pair.access_token);
        assert_eq!(store.token_user(&access_hash, TokenKind::Access).await.unwrap(), Some(user.id));
        assert!(refresh(&store, &pair.refresh_token).await.unwrap().is_some());
        assert!(refresh(&store, &pair.refresh_token).await.unwrap().is_none(), "rotated: single use");
        assert!(refresh(&store, &pair.access_token).await.unwrap().is_none(), "an access token is no refresh token");
    }
}
