-- 0009_node_revision: every update of a node row counts up its revision, so a process holding
-- the node in memory can tell a row it reads (or hears announced) from one older than what it
-- has: it installs only rows at least as new (core/state).
ALTER TABLE nodes ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
