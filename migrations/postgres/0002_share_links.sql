-- Share links. The token itself is never stored: only its SHA-256.
CREATE TABLE share_links (
    id          TEXT PRIMARY KEY,
    fleet_id    TEXT NOT NULL REFERENCES fleets(id),
    machine_id  TEXT NOT NULL REFERENCES machines(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    read_only   BOOLEAN NOT NULL DEFAULT FALSE,
    max_opens   BIGINT,
    session_id  TEXT,
    revoked_at  BIGINT,
    opens       BIGINT NOT NULL DEFAULT 0,
    -- Creation order within one second (SQLite's implicit rowid plays this part there).
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX share_links_fleet ON share_links(fleet_id);
CREATE INDEX share_links_machine ON share_links(machine_id);
