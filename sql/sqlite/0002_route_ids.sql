-- 0002_route_ids: the routes table only gives headscale 0.22's route ids to (node, prefix)
-- pairs. Approval lives in nodes.approved_routes and announcement in the node's Hostinfo, so
-- the advertised/enabled copies go rather than drift from them.
ALTER TABLE routes DROP COLUMN advertised;
ALTER TABLE routes DROP COLUMN enabled;
