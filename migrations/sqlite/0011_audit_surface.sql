-- The client surface an event came through (`cli`, `mcp`, `web`, `link`; '' for events that
-- have none, such as an enrollment). Console rows written before it named their surface at the
-- start of the detail (`surface=web ...`): move that into the column.
ALTER TABLE audit_events ADD COLUMN surface TEXT NOT NULL DEFAULT '';
UPDATE audit_events SET surface = 'web', detail = ltrim(substr(detail, 12))
    WHERE detail = 'surface=web' OR detail LIKE 'surface=web %';
