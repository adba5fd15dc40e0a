-- cmdop server schema (PostgreSQL; the same tables and columns as migrations/sqlite). Times are
-- unix seconds (UTC) in BIGINT. Every secret is stored as a SHA-256 hash.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    -- Creation order within one second (SQLite's implicit rowid plays this part there).
    seq           BIGINT GENERATED ALWAYS AS IDENTITY
);
-- Emails are unique whatever their case; lookups go through lower(email).
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

CREATE TABLE fleets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    fleet_id TEXT NOT NULL REFERENCES fleets(id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    PRIMARY KEY (user_id, fleet_id)
);

CREATE TABLE machines (
    id              TEXT PRIMARY KEY,
    fleet_id        TEXT NOT NULL REFERENCES fleets(id),
    hostname        TEXT NOT NULL,
    display_name    TEXT,
    os              TEXT NOT NULL DEFAULT '',
    arch            TEXT NOT NULL DEFAULT '',
    credential_hash TEXT NOT NULL UNIQUE,
    revoked_at      BIGINT,
    online          BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen       BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX machines_fleet ON machines(fleet_id);

CREATE TABLE enroll_tokens (
    token_hash TEXT PRIMARY KEY,
    fleet_id   TEXT NOT NULL REFERENCES fleets(id),
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    machine_id TEXT
);

CREATE TABLE oauth_tokens (
    token_hash  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_name TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX oauth_tokens_user ON oauth_tokens(user_id);

CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    fleet_id   TEXT,
    machine_id TEXT,
    link_id    TEXT,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_link ON audit_events(link_id);
