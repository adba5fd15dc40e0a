-- OAuth 2.0 device authorization grants (RFC 8628). The device code is stored hashed; the
-- user code is short-lived (15 min) and typed by people, so it is kept as is.
CREATE TABLE device_grants (
    device_code_hash TEXT PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    client_name      TEXT NOT NULL DEFAULT '',
    client_host      TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    interval_secs    BIGINT NOT NULL,
    last_poll_at     BIGINT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'consumed')),
    user_id          TEXT REFERENCES users(id) ON DELETE CASCADE
);
