-- 0011_route_primaries: the primary router of each HA subnet route, decided once for all
-- replicas. The elected replica (advisory lock, see 0005) writes its choice here and the
-- others apply it; when it dies the next one starts from this choice, so a router that came
-- back meanwhile does not take its routes back. route_health lists the routers whose last HA
-- probe went unanswered, written by the replica that holds their map stream (only it can ask
-- them); the elected replica counts them out.
CREATE TABLE route_primaries (
    route TEXT PRIMARY KEY,
    node_id BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE
);
CREATE TABLE route_health (
    node_id BIGINT PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    since BIGINT NOT NULL
);
