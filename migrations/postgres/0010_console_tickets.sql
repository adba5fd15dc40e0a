-- One-time sign-in URLs of the web console (`cmdop console`): single use, 60 s. The ticket
-- itself is never stored, only its SHA-256.
CREATE TABLE console_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    fleet_id    TEXT REFERENCES fleets(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX audit_events_fleet ON audit_events(fleet_id, id);
