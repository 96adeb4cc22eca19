-- 0001_init: the initial schema (SQLite). Same logical schema as sql/postgres/0001_init.sql.
-- Times are microseconds since the epoch (NULL = unset); booleans 0/1; lists and objects are
-- JSON text; keys are text 'mkey:'/'nodekey:'/'discokey:' + hex as in headscale.
-- STRICT tables: a value of the wrong type is an error instead of being stored as text.

-- Server-wide values shared by every replica (server_secret, ...).
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    display_name TEXT,
    email TEXT,
    provider_identifier TEXT UNIQUE,
    provider TEXT,
    profile_pic_url TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
-- A local "alice" and an OIDC "alice" may coexist; two local ones may not.
CREATE UNIQUE INDEX users_local_name ON users (name) WHERE provider_identifier IS NULL;

CREATE TABLE pre_auth_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    reusable INTEGER NOT NULL DEFAULT 0,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    used INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]',
    expiration INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX pre_auth_keys_user_id ON pre_auth_keys (user_id);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    expiration INTEGER,
    last_seen INTEGER,
    created_at INTEGER NOT NULL
) STRICT;

-- user_id RESTRICT: deleting a user who still owns nodes is refused (headscale's DestroyUser).
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_key TEXT NOT NULL, -- one machine may hold several nodes (one per user)
    node_key TEXT NOT NULL,
    disco_key TEXT,
    endpoints TEXT NOT NULL DEFAULT '[]',
    host_info TEXT NOT NULL DEFAULT '{}',
    ipv4 TEXT UNIQUE,
    ipv6 TEXT UNIQUE,
    hostname TEXT NOT NULL DEFAULT '',
    given_name TEXT NOT NULL UNIQUE CHECK (length(given_name) <= 63), -- a DNS label
    user_id INTEGER REFERENCES users (id) ON DELETE RESTRICT,
    register_method TEXT,
    ephemeral INTEGER NOT NULL DEFAULT 0, -- removed after node.ephemeral.inactivity_timeout offline
    tags TEXT NOT NULL DEFAULT '[]',
    auth_key_id INTEGER REFERENCES pre_auth_keys (id) ON DELETE SET NULL,
    last_seen INTEGER,
    expiry INTEGER,
    approved_routes TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX nodes_node_key ON nodes (node_key);
CREATE INDEX nodes_machine_key ON nodes (machine_key);
CREATE INDEX nodes_user_id ON nodes (user_id);
CREATE INDEX nodes_auth_key_id ON nodes (auth_key_id);

-- headscale 0.22's routes API (advertised/enabled per node and prefix).
CREATE TABLE routes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    prefix TEXT NOT NULL,
    advertised INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (node_id, prefix)
) STRICT;

-- Append-only history; the row with the highest id is the active policy.
CREATE TABLE policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Pending interactive logins ('hskey-authreq-...'), shared so any replica can finish them.
CREATE TABLE registrations (
    id TEXT PRIMARY KEY,
    machine_key TEXT NOT NULL,
    node_key TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    node_id INTEGER REFERENCES nodes (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX registrations_expires_at ON registrations (expires_at);
