-- The client surface an event came through (`cli`, `mcp`, `web`, `link`; '' for events that
-- have none, such as an enrollment), and an index for listing a fleet's log by time.
ALTER TABLE audit_events ADD COLUMN surface TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_events_fleet_at ON audit_events(fleet_id, at);
