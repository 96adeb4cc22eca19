-- 0001_init: the initial schema (PostgreSQL). Same logical schema as sql/sqlite/0001_init.sql.
-- Times are microseconds since the epoch (NULL = unset); lists and objects are JSON text;
-- keys are text 'mkey:'/'nodekey:'/'discokey:' + hex as in headscale.

-- Server-wide values shared by every replica (server_secret, ...).
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    display_name TEXT,
    email TEXT,
    provider_identifier TEXT UNIQUE,
    provider TEXT,
    profile_pic_url TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A local "alice" and an OIDC "alice" may coexist; two local ones may not.
CREATE UNIQUE INDEX users_local_name ON users (name) WHERE provider_identifier IS NULL;

CREATE TABLE pre_auth_keys (
    id BIGSERIAL PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    user_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    reusable BOOLEAN NOT NULL DEFAULT FALSE,
    ephemeral BOOLEAN NOT NULL DEFAULT FALSE,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    tags TEXT NOT NULL DEFAULT '[]',
    expiration BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX pre_auth_keys_user_id ON pre_auth_keys (user_id);

CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    expiration BIGINT,
    last_seen BIGINT,
    created_at BIGINT NOT NULL
);

-- user_id RESTRICT: deleting a user who still owns nodes is refused (headscale's DestroyUser).
CREATE TABLE nodes (
    id BIGSERIAL PRIMARY KEY,
    machine_key TEXT NOT NULL, -- one machine may hold several nodes (one per user)
    node_key TEXT NOT NULL,
    disco_key TEXT,
    endpoints TEXT NOT NULL DEFAULT '[]',
    host_info TEXT NOT NULL DEFAULT '{}',
    ipv4 TEXT UNIQUE,
    ipv6 TEXT UNIQUE,
    hostname TEXT NOT NULL DEFAULT '',
    given_name TEXT NOT NULL UNIQUE CHECK (length(given_name) <= 63), -- a DNS label
    user_id BIGINT REFERENCES users (id) ON DELETE RESTRICT,
    register_method TEXT,
    ephemeral BOOLEAN NOT NULL DEFAULT FALSE, -- removed after node.ephemeral.inactivity_timeout offline
    tags TEXT NOT NULL DEFAULT '[]',
    auth_key_id BIGINT REFERENCES pre_auth_keys (id) ON DELETE SET NULL,
    last_seen BIGINT,
    expiry BIGINT,
    approved_routes TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX nodes_node_key ON nodes (node_key);
CREATE INDEX nodes_machine_key ON nodes (machine_key);
CREATE INDEX nodes_user_id ON nodes (user_id);
CREATE INDEX nodes_auth_key_id ON nodes (auth_key_id);

-- headscale 0.22's routes API (advertised/enabled per node and prefix).
CREATE TABLE routes (
    id BIGSERIAL PRIMARY KEY,
    node_id BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    prefix TEXT NOT NULL,
    advertised BOOLEAN NOT NULL DEFAULT FALSE,
    enabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (node_id, prefix)
);

-- Append-only history; the row with the highest id is the active policy.
CREATE TABLE policies (
    id BIGSERIAL PRIMARY KEY,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Pending interactive logins ('hskey-authreq-...'), shared so any replica can finish them.
CREATE TABLE registrations (
    id TEXT PRIMARY KEY,
    machine_key TEXT NOT NULL,
    node_key TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    user_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    node_id BIGINT REFERENCES nodes (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX registrations_expires_at ON registrations (expires_at);
