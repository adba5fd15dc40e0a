//! SQLite: users, fleets, memberships and OAuth tokens.

use super::SqliteStore;
use crate::core::clock::now;
use crate::core::ids::{FleetId, UserId};
use crate::store::StoreError;
use crate::store::identity::*;
use crate::store::rows::{self, Cols};
use async_trait::async_trait;

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn create_user(&self, email: &str) -> Result<User, StoreError> {
        let user = User { id: UserId::random(), email: email.to_string() };
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)")
            .bind(user.id.to_string())
            .bind(email)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(user)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row =
            sqlx::query("SELECT id, email FROM users WHERE email = ?").bind(email).fetch_optional(&self.pool).await?;
        row.map(|r| rows::user(&r)).transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, email FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::user(&r)).transpose()
    }

    async fn first_user(&self) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, email FROM users ORDER BY created_at, rowid LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::user(&r)).transpose()
    }

    async fn fleet_named(&self, name: &str) -> Result<Fleet, StoreError> {
        sqlx::query("INSERT OR IGNORE INTO fleets (id, name, created_at) VALUES (?, ?, ?)")
            .bind(FleetId::random().to_string())
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT id, name FROM fleets WHERE name = ?").bind(name).fetch_one(&self.pool).await?;
        rows::fleet(&row)
    }

    async fn set_membership(&self, user: UserId, fleet: FleetId, role: Role) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO memberships (user_id, fleet_id, role) VALUES (?, ?, ?)")
            .bind(user.to_string())
            .bind(fleet.to_string())
            .bind(role.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        let found = sqlx::query(
            "SELECT f.id, f.name, m.role FROM memberships m JOIN fleets f ON f.id = m.fleet_id
             WHERE m.user_id = ? ORDER BY f.created_at, f.name",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::membership).collect()
    }

    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        user: UserId,
        client_name: &str,
        expires_at: i64,
        family: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_tokens (token_hash, kind, user_id, client_name, created_at, expires_at, family_id)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(kind.as_str())
        .bind(user.to_string())
        .bind(client_name)
        .bind(now())
        .bind(expires_at)
        .bind(family)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token_user(&self, hash: &str, kind: TokenKind) -> Result<Option<UserId>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM oauth_tokens
             WHERE token_hash = ? AND kind = ? AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(hash)
        .bind(kind.as_str())
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.parsed("oauth_tokens", "user_id")).transpose()
    }

    async fn revoke_token(&self, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE oauth_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL")
            .bind(now())
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshToken>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, COALESCE(family_id, token_hash) AS family, expires_at, revoked_at FROM oauth_tokens
             WHERE token_hash = ? AND kind = 'refresh'",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(RefreshToken {
            user: r.parsed("oauth_tokens", "user_id")?,
            family: r.text("family")?,
            expires_at: r.int("expires_at")?,
            revoked_at: r.opt_int("revoked_at")?,
        }))
    }

    async fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = ?
             WHERE (family_id = ? OR token_hash = ?) AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(family)
        .bind(family)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
