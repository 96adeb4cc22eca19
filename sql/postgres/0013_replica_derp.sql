-- 0013_replica_derp: where each replica's embedded DERP relay can be dialled by the others
-- (derp.server.mesh_url, or the address the database sees the replica connect from). The
-- replicas mesh their relays with every live replica listed here: no list to keep in config.
ALTER TABLE replicas ADD COLUMN derp_url TEXT;
