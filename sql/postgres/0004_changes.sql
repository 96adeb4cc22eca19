-- 0004_changes: replicas on one database tell each other what they committed. Every
-- transaction that changes a row numbers its changes from this one counter (the row lock
-- orders committing writers, so the numbers have no gaps and follow commit order) and
-- announces each with NOTIFY headscale_changes; a replica that sees a number skipped knows it
-- missed some and reads everything again.
CREATE TABLE changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO changes (id, seq) VALUES (1, 0);
