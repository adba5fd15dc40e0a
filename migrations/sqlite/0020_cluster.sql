-- Several nodes: each node's lease, the machine -> node routes, and the events every node
-- applies (revocations, key rotations). A single SQLite node uses the same tables for itself.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    advertise TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);

CREATE TABLE routes (
    machine_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    since INTEGER NOT NULL
);
CREATE INDEX routes_node ON routes (node_id);

CREATE TABLE cluster_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);

CREATE TABLE cluster_secrets (
    name TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    version INTEGER NOT NULL
);
