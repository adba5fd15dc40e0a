-- Refresh-token reuse detection (RFC 6819 5.2.2.3, OAuth 2.1): every access and refresh token
-- descended from one device grant shares a family; replaying a used refresh token revokes the
-- whole family. Tokens issued before this migration form a family of their own.
ALTER TABLE oauth_tokens ADD COLUMN family_id TEXT;
CREATE INDEX oauth_tokens_family ON oauth_tokens(family_id);
