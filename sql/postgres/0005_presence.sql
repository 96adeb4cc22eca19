-- 0005_presence: which replica holds which node's map streams, so that every replica knows
-- who is online. A replica renews its lease while it runs; when one dies its lease runs out
-- and the elected replica deletes its rows (its nodes go offline everywhere).
CREATE TABLE replicas (
    origin BIGINT PRIMARY KEY,      -- the process's random origin (store_origin), as int64
    name TEXT NOT NULL,             -- host and pid, for operators
    started_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE TABLE presence (
    node_id BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    origin BIGINT NOT NULL REFERENCES replicas (origin) ON DELETE CASCADE,
    since BIGINT NOT NULL,
    PRIMARY KEY (node_id, origin)
);
CREATE INDEX presence_origin ON presence (origin);
