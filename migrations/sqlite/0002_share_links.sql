-- Share links. The token itself is never stored: only its SHA-256.
CREATE TABLE share_links (
    id          TEXT PRIMARY KEY,
    fleet_id    TEXT NOT NULL REFERENCES fleets(id),
    machine_id  TEXT NOT NULL REFERENCES machines(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    read_only   INTEGER NOT NULL DEFAULT 0,
    max_opens   INTEGER,
    session_id  TEXT,
    revoked_at  INTEGER,
    opens       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX share_links_fleet ON share_links(fleet_id);
CREATE INDEX share_links_machine ON share_links(machine_id);
