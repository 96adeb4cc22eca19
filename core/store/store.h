/* store: the only module that speaks SQL. One interface, two backends picked at run time
 * (SQLite: store_sqlite.c, PostgreSQL: store_pg.c) behind a small driver ops table.
 *
 * Contract for every function below:
 *  - returns 0 on success or a negative errno: -ENOENT (no such row), -EEXIST (a unique value
 *    is taken), -EBUSY (refused because of dependent rows), -EINVAL (bad argument), -EDQUOT
 *    (the database's disk is full: nothing written), -EIO (backend failure; details are
 *    logged);
 *  - out-parameters are written only on success and then belong to the caller
 *    (free with the matching *_free / *_list_free);
 *  - every committed write publishes exactly one notify event per changed row, after commit
 *    (store_node_update_many only announces them to other replicas: see there);
 *  - thread-safe: may be called from any thread (SQLite: one connection behind a mutex;
 *    PostgreSQL: a pool of database.postgres.max_open_conns connections).
 * Times are int64 microseconds since the epoch; 0 means NULL/unset. */
#ifndef HS_STORE_H
#define HS_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "metrics/metrics.h"
#include "notify/notify.h"
#include "util/util.h"

#define STORE_KEY_LEN 32
#define STORE_PREFIX_MAX 16 /* credential prefixes: 12 chars (headscale 0.22.3 API keys: 10) + NUL */

struct store;

/* Opens the database of cfg, applies pending migrations in one transaction each and records
 * them; refuses (-EPROTO, logged) a schema newer than this binary knows, and a database whose
 * tables are neither ours nor headscale's, which it leaves untouched. A headscale 0.22.3 or
 * 0.29 database is backed up and imported first (store_import.c). bus may be NULL. */
int store_open(const struct hs_config *cfg, struct notify_bus *bus, struct store **out);
void store_close(struct store *st); /* NULL is fine */
/* Cheap round trip to the database (health checks). */
int store_ping(struct store *st);
/* Highest applied migration version, and the highest this binary knows. */
int store_schema_version(struct store *st, int *applied, int *known);
const char *store_backend_name(const struct store *st); /* "sqlite" or "postgres" */
/* How long statements take, in microseconds, by their first SQL word, and COMMIT (a
 * transaction's end, with its announcement to other replicas): for /metrics. The histogram
 * lives as long as st. */
enum store_op { STORE_OP_SELECT, STORE_OP_INSERT, STORE_OP_UPDATE, STORE_OP_DELETE,
                STORE_OP_OTHER, STORE_OP_COMMIT, STORE_OPS };
const struct metrics_hist *store_latency(const struct store *st, enum store_op op);

/* serve claims the database for itself where only one process may use it: SQLite (a second
 * `serve` on the same file gets -EBUSY). PostgreSQL is shared by replicas: nothing to claim. */
int store_claim(struct store *st);

/* ---- changes from other replicas (PostgreSQL) ----
 * On PostgreSQL every committed transaction numbers its events from one counter in the
 * database (gap-free, in commit order) and announces each with NOTIFY, tagged with the
 * writing process's origin. A feed is a connection of its own that LISTENs for them; SQLite has
 * none (one process per file). */
struct store_change {
    struct notify_event ev; /* ev.entity 0: an announcement this binary cannot read */
    uint64_t seq;           /* the change's number in the database */
    uint64_t origin;        /* the process that wrote it (store_origin) */
    int64_t at;             /* the writer's clock before COMMIT (us since the epoch); 0: unknown */
};
struct store_feed;
/* Whether other processes may write the same database (PostgreSQL). */
bool store_shared(const struct store *st);
/* This process's origin: random, fixed for the store's life. */
uint64_t store_origin(const struct store *st);
/* The number of the last committed change (0 on SQLite). */
int store_change_seq(struct store *st, uint64_t *seq);
/* -ENOTSUP on SQLite, -EIO when the database cannot be reached. */
int store_feed_open(struct store *st, struct store_feed **out);
void store_feed_close(struct store_feed *f); /* NULL is fine */
/* Readable when announcements (or the end of the connection) arrived. */
int store_feed_fd(const struct store_feed *f);
/* What arrived, up to max, in commit order; 0 when nothing did; -EIO when the connection is
 * lost (close it and open another). A loss met after some announcements were read is returned
 * by the next call: read until 0 or an error. */
int store_feed_read(struct store_feed *f, struct store_change *out, size_t max);
/* A round trip on the feed's connection: the number of the last committed change (a dead
 * connection that never said so is found here). -EIO when lost. */
int store_feed_seq(struct store_feed *f, uint64_t *seq);
/* Tries to take the one lock that elects a replica for the work done once (a session lock on
 * the feed's connection: it is released when that connection ends, with its process or not).
 * *got says whether this feed holds it now. */
int store_feed_try_lead(struct store_feed *f, bool *got);

/* ---- presence across replicas (PostgreSQL; SQLite: each does nothing and succeeds) ----
 * A replica holds a lease in the replicas table while it runs and a presence row for each node
 * with a map stream open on it; each presence change is announced (NOTIFY_PRESENCE, the node's
 * id) so the others can tell online nodes apart from offline ones. */
/* Leases and presence times are the database's clock (PostgreSQL's now()), never a
 * replica's: one replica's clock set wrong must neither end another's lease early nor keep a
 * dead one's nodes online longer. */
/* Our row, with its lease extended to lease_us from now and the URL of our DERP relay for the
 * others' mesh (NULL: none); *made when it had to be made (the first call, or after it expired
 * and was deleted). */
int store_replica_renew(struct store *st, const char *name, const char *derp_url,
                        int64_t lease_us, bool *made);
/* The DERP relay URLs of the other replicas whose lease runs, ascending, distinct, at most
 * STORE_REPLICA_DERP_MAX (caller frees urls). */
#define STORE_REPLICA_DERP_MAX 64
int store_replica_derp_urls(struct store *st, struct hs_strv *urls);
/* The address the database sees this process connect from (empty over a unix socket, and on
 * SQLite): other hosts on the database's network can usually reach us there. */
int store_client_addr(struct store *st, char *out, size_t size);
/* In one transaction: our rows for the nodes in on made (a node deleted meanwhile gets none),
 * those for the nodes in off deleted; only the rows that changed are announced. */
int store_presence_write(struct store *st, const uint64_t *on, size_t non, const uint64_t *off,
                         size_t noff);
/* The nodes with a stream on another replica, ascending, distinct (caller frees *ids). */
int store_presence_others(struct store *st, uint64_t **ids, size_t *n);
/* Whether node id has a stream on another replica. */
int store_presence_node(struct store *st, uint64_t id, bool *elsewhere);
/* The replicas whose lease ran out, and their presence rows, deleted and announced; *nodes
 * counts the rows. Run by one replica (replica.h). */
int store_replicas_expire(struct store *st, size_t *nodes);
/* Our row and our presence rows deleted and announced (a clean shutdown). */
int store_replica_leave(struct store *st);

/* ---- HA subnet routes across replicas (PostgreSQL; SQLite: each does nothing, succeeds) ----
 * The primary router of each HA route is chosen by the elected replica and published here for
 * the others; the routers an HA probe found unhealthy are marked by the replica that probed
 * them (only the one holding a router's stream can ask it). */
struct store_primary {
    char *route;      /* canonical prefix */
    uint64_t node_id;
};
void store_primaries_free(struct store_primary *v, size_t n); /* NULL is fine */
/* The published choice, in no particular order (caller frees). */
int store_primaries_get(struct store *st, struct store_primary **out, size_t *n);
/* Replaces the published choice with v (routes of deleted nodes are left out), announced as
 * one NOTIFY_PRIMARY event (id 0). */
int store_primaries_set(struct store *st, const struct store_primary *v, size_t n);
/* Each router ids[i] marked unhealthy (healthy[i] false; a deleted node gets no mark) or
 * cleared, in one transaction, announced as NOTIFY_HEALTH with the node's id: every unhealthy
 * verdict (op NOTIFY_CREATE), and a cleared mark (NOTIFY_DELETE) when there was one. */
int store_health_set(struct store *st, const uint64_t *ids, const bool *healthy, size_t n);
/* The routers marked unhealthy, ascending (caller frees *ids). */
int store_health_unhealthy(struct store *st, uint64_t **ids, size_t *n);

/* A random 32-byte secret created once per database (kv table) and shared by all replicas:
 * the key of the keyed hash that protects credentials at rest. */
int store_server_secret(struct store *st, uint8_t out[STORE_KEY_LEN]);
/* Work a migration left for the server (STORE_KV_*): deletes the entry; *taken says whether
 * it was there (so one replica does the work). */
int store_kv_take(struct store *st, const char *key, bool *taken);
/* A headscale 0.22.3 import: nodes' requested tags (Hostinfo.RequestTags) are still to be
 * checked against the policy, as 0.22.3 did at run time (auth_adopt_requested_tags). */
#define STORE_KV_IMPORTED_REQUEST_TAGS "import_request_tags"

/* ---- users ---- */
struct store_user {
    uint64_t id;
    char *name;
    char *display_name;
    char *email;
    char *provider_id; /* OIDC "iss/sub"; NULL for local users */
    char *provider;    /* "oidc" or NULL */
    char *profile_pic_url;
    int64_t created_at, updated_at;
    struct hs_strv groups; /* the identity provider's groups at the last login (OIDC) */
};
void store_user_free(struct store_user *u); /* frees members, not u itself */
void store_user_list_free(struct store_user *v, size_t n);

/* in->id and timestamps are ignored. -EEXIST if a local user of that name exists. */
int store_user_create(struct store *st, const struct store_user *in, struct store_user *out);
int store_user_get(struct store *st, uint64_t id, struct store_user *out);
int store_user_get_by_name(struct store *st, const char *name, struct store_user *out);
/* The OIDC user of that "iss/sub" identifier; -ENOENT if none. */
int store_user_get_by_provider_id(struct store *st, const char *provider_id,
                                  struct store_user *out);
/* Filters are ANDed; NULL/0 means no filter. Sorted by id. */
struct store_user_filter {
    uint64_t id;
    const char *name;
    const char *email;
};
int store_user_list(struct store *st, const struct store_user_filter *f, struct store_user **out,
                    size_t *n);
int store_user_rename(struct store *st, uint64_t id, const char *new_name);
/* What the identity provider says of the user at a login: in's display_name, email,
 * profile_pic_url and groups replace the stored ones (name and identifier stay). */
int store_user_update_profile(struct store *st, uint64_t id, const struct store_user *in,
                              struct store_user *out);
/* Deletes the user and its pre-auth keys; -EBUSY while the user still owns nodes. */
int store_user_delete(struct store *st, uint64_t id);

/* ---- pre-auth keys ---- */
struct store_preauthkey {
    uint64_t id;
    char prefix[STORE_PREFIX_MAX];
    uint8_t hash[STORE_KEY_LEN];
    char bcrypt[HS_BCRYPT_LEN + 1]; /* see store_apikey */
    uint64_t user_id; /* 0 = none (tag-only key) */
    bool reusable, ephemeral, used;
    struct hs_strv tags;
    int64_t expiration; /* 0 = never */
    int64_t created_at;
};
void store_preauthkey_free(struct store_preauthkey *k);
void store_preauthkey_list_free(struct store_preauthkey *v, size_t n);
/* -EEXIST on a prefix clash (the caller draws a new key); -ENOENT if user_id is unknown. */
int store_preauthkey_create(struct store *st, const struct store_preauthkey *in,
                            struct store_preauthkey *out);
int store_preauthkey_get(struct store *st, uint64_t id, struct store_preauthkey *out);
int store_preauthkey_get_by_prefix(struct store *st, const char *prefix,
                                   struct store_preauthkey *out);
/* user_id 0 lists every key. Sorted by id. */
int store_preauthkey_list(struct store *st, uint64_t user_id, struct store_preauthkey **out,
                          size_t *n);
/* Sets expiration to `at` (callers pass now). */
int store_preauthkey_expire(struct store *st, uint64_t id, int64_t at);
/* Marks a key used; for a single-use key that is already used: -EACCES (atomic check). */
int store_preauthkey_use(struct store *st, uint64_t id);
/* Marks a key unused again (its use registered nothing after all). */
int store_preauthkey_release(struct store *st, uint64_t id);
int store_preauthkey_delete(struct store *st, uint64_t id);

/* ---- API keys ---- */
struct store_apikey {
    uint64_t id;
    char prefix[STORE_PREFIX_MAX];
    uint8_t hash[STORE_KEY_LEN];
    /* A key imported from a headscale database: its bcrypt hash (hash is then unused); ""
     * for keys made here. Read only: creating a key always stores hash. */
    char bcrypt[HS_BCRYPT_LEN + 1];
    int64_t expiration; /* 0 = never */
    int64_t last_seen;
    int64_t created_at;
};
int store_apikey_create(struct store *st, const struct store_apikey *in, struct store_apikey *out);
int store_apikey_get(struct store *st, uint64_t id, struct store_apikey *out);
int store_apikey_get_by_prefix(struct store *st, const char *prefix, struct store_apikey *out);
int store_apikey_list(struct store *st, struct store_apikey **out, size_t *n); /* by id */
void store_apikey_list_free(struct store_apikey *v, size_t n); /* wipes the hashes; NULL ok */
int store_apikey_expire(struct store *st, uint64_t id, int64_t at);
int store_apikey_delete(struct store *st, uint64_t id);
/* Records use; does not publish an event (it changes nothing a client sees). */
int store_apikey_touch(struct store *st, uint64_t id, int64_t at);

/* ---- nodes (filled by the control-protocol issue; the table and reads exist now) ---- */
enum register_method {
    REGISTER_UNSPECIFIED = 0,
    REGISTER_AUTH_KEY,
    REGISTER_CLI,
    REGISTER_OIDC,
};
struct store_node {
    uint64_t id;
    uint8_t machine_key[STORE_KEY_LEN];
    uint8_t node_key[STORE_KEY_LEN];
    uint8_t disco_key[STORE_KEY_LEN];
    char *ipv4, *ipv6;     /* text addresses, NULL if none */
    char *hostname;        /* raw Hostinfo.Hostname */
    char *given_name;      /* DNS label */
    uint64_t user_id;      /* 0 for tagged nodes */
    enum register_method register_method;
    bool ephemeral;        /* deleted after node.ephemeral.inactivity_timeout offline */
    struct hs_strv tags;
    uint64_t auth_key_id;  /* 0 = none */
    char *endpoints_json;  /* JSON array text, NULL = [] */
    char *hostinfo_json;   /* JSON object text, NULL = {} */
    struct hs_strv approved_routes;
    int64_t last_seen, expiry, created_at, updated_at;
    uint64_t revision;     /* counts the row's updates: of two reads, the higher is newer */
};
void store_node_free(struct store_node *n);
void store_node_list_free(struct store_node *v, size_t n);
/* user_id 0 lists every node. Sorted by id. */
int store_node_list(struct store *st, uint64_t user_id, struct store_node **out, size_t *n);
int store_node_get(struct store *st, uint64_t id, struct store_node *out);
int store_node_delete(struct store *st, uint64_t id);

/* Where new nodes get their addresses (either prefix may be NULL or unset). */
struct store_ip_config {
    const struct ip_prefix *v4, *v6;
    bool random; /* prefixes.allocation: random */
};
/* Inserts a node, allocating one address per configured family and making in->given_name
 * unique with a -1, -2, ... suffix, all in one transaction. -ENOSPC when a prefix is full. */
int store_node_create(struct store *st, const struct store_node *in,
                      const struct store_ip_config *ips, struct store_node *out);

/* `nodes backfillips`: gives every node an address of each family ips has a prefix for and
 * lacks, and takes away the addresses of a family it has none for (after the operator changed
 * prefixes.v4/v6), in one transaction. changes gets one line per address given or taken away
 * (empty when nothing changed; the caller frees it). -ENOSPC when a prefix is full. */
int store_node_backfill_ips(struct store *st, const struct store_ip_config *ips,
                            struct hs_strv *changes);

/* Fields for store_node_update (bit numbers). */
enum store_node_field {
    STORE_NODE_NODE_KEY,
    STORE_NODE_DISCO_KEY,
    STORE_NODE_ENDPOINTS,
    STORE_NODE_HOSTINFO,
    STORE_NODE_HOSTNAME,
    STORE_NODE_GIVEN_NAME,
    STORE_NODE_USER,
    STORE_NODE_REGISTER_METHOD,
    STORE_NODE_TAGS,
    STORE_NODE_AUTH_KEY,
    STORE_NODE_LAST_SEEN,
    STORE_NODE_EXPIRY,
    STORE_NODE_APPROVED_ROUTES,
};
#define STORE_NODE_BIT(f) (1u << (f))
/* Sets the fields named by the bit mask from v and counts up the revision; out (may be NULL)
 * gets the new row. -EEXIST when a new given name is taken. The event carries the new
 * revision; an update of last_seen alone publishes none. */
int store_node_update(struct store *st, uint64_t id, unsigned fields,
                      const struct store_node *v, struct store_node *out);
/* One node's fields for store_node_update_many (v's members borrowed). */
struct store_node_patch {
    uint64_t id;
    unsigned fields; /* STORE_NODE_BIT()s; 0 writes nothing */
    struct store_node v;
};
/* Several updates as store_node_update's, in one transaction (the state's writer of what
 * nodes report); a node gone meanwhile is skipped. The events are announced to other
 * replicas but not published on this process's bus: the caller holds the values already. */
int store_node_update_many(struct store *st, const struct store_node_patch *v, size_t n);
/* The newest node with this node key and/or machine key (NULL = any, but not both). */
int store_node_find(struct store *st, const uint8_t machine_key[STORE_KEY_LEN],
                    const uint8_t node_key[STORE_KEY_LEN], struct store_node *out);

/* ---- route ids (headscale 0.22's routes API) ----
 * Approval lives in nodes.approved_routes and announcement in the node's Hostinfo; the routes
 * table only gives each (node, prefix) pair an operator may address with `routes enable -r ID`
 * a stable id (the state answers whether it is announced and approved).
 * Rows go with their node (ON DELETE CASCADE). Creating ids publishes no event (clients see
 * nothing of them). */
struct store_route {
    uint64_t id, node_id;
    char *prefix;
    int64_t created_at, updated_at;
};
void store_route_free(struct store_route *r);
void store_route_list_free(struct store_route *v, size_t n);
/* node_id 0 lists every route. Sorted by id. */
int store_route_list(struct store *st, uint64_t node_id, struct store_route **out, size_t *n);
int store_route_get(struct store *st, uint64_t id, struct store_route *out);
/* Gives the pair an id unless it has one. -ENOENT if the node is gone. */
int store_route_add(struct store *st, uint64_t node_id, const char *prefix);
int store_route_delete(struct store *st, uint64_t id);

/* ---- pending interactive registrations (shared by replicas) ---- */
struct store_registration {
    char *id;        /* "hskey-authreq-<24 hex>" */
    uint8_t machine_key[STORE_KEY_LEN];
    uint8_t node_key[STORE_KEY_LEN];
    char *data_json; /* the RegisterRequest fields needed to create the node */
    uint64_t user_id, node_id; /* set once an operator completed it */
    int64_t created_at, expires_at;
    bool rejected;             /* an operator refused it: it can no longer be completed */
};
void store_registration_free(struct store_registration *r);
int store_registration_create(struct store *st, const struct store_registration *in);
int store_registration_get(struct store *st, const char *id, struct store_registration *out);
/* Records who completed it and the node it produced; -ENOENT if unknown, expired or
 * rejected. */
int store_registration_complete(struct store *st, const char *id, uint64_t user_id,
                                uint64_t node_id);
/* Marks it refused (again is fine); -ENOENT if unknown, expired or completed. */
int store_registration_reject(struct store *st, const char *id);
/* OIDC logins between the redirect to the provider and its callback, kept with their
 * registration (deleted with it) so that any replica can take the callback. A login is found
 * by a keyed hash of its state; no secret of it is stored. Creating one deletes the expired
 * logins and all but the STORE_OIDC_LOGINS_KEPT newest of its registration; -ENOENT when the
 * registration is gone. Neither publishes an event (no client sees them). */
#define STORE_OIDC_LOGINS_KEPT 4
int store_oidc_login_create(struct store *st, const uint8_t state_hash[STORE_KEY_LEN],
                            const char *reg_id, int64_t expires_at);
/* Deletes the login and gives its registration's id (*reg_id, caller frees): one caller gets
 * it, across replicas too. -ENOENT when there is none or it expired (then deleted as well). */
int store_oidc_login_take(struct store *st, const uint8_t state_hash[STORE_KEY_LEN],
                          int64_t now, char **reg_id);
/* Deletes the rows expired at `now` and all but the `keep` newest others → how many went. */
int store_registration_trim(struct store *st, int64_t now, size_t keep);
int store_registration_count(struct store *st, size_t *out);

/* ---- policy (policy.mode = database): newest row is the active policy ----
 * Every save is a version; a save keeps the STORE_POLICY_VERSIONS newest and deletes older
 * ones in the same transaction, so the history stays bounded. */
#define STORE_POLICY_VERSIONS 100
#define STORE_POLICY_WHO_MAX 32 /* "cli", "import", an API key's prefix, or "" */
struct store_policy_version {
    uint64_t id;
    int64_t saved_at;
    char saved_by[STORE_POLICY_WHO_MAX];
    uint64_t restored_from; /* the version a rollback copied, or 0 */
    uint64_t size;          /* bytes of text */
    char *text;             /* only from store_policy_version_get (caller frees) */
};
/* -ENOENT when no policy has been stored. */
int store_policy_get(struct store *st, char **text, int64_t *updated_at);
/* Stores text as the newest version. saved_by (cut to STORE_POLICY_WHO_MAX - 1) may be NULL;
 * restored_from 0 unless this is a rollback. *id_out (may be NULL): the new version's id. */
int store_policy_set(struct store *st, const char *text, const char *saved_by,
                     uint64_t restored_from, int64_t *updated_at, uint64_t *id_out);
/* The kept versions, newest first, without their text (store_policy_versions_free). */
int store_policy_versions(struct store *st, struct store_policy_version **out, size_t *n);
void store_policy_versions_free(struct store_policy_version *v, size_t n);
/* One version with its text; -ENOENT when it is not kept. */
int store_policy_version_get(struct store *st, uint64_t id, struct store_policy_version *out);

/* ---- DNS settings saved through the API (one row of JSON; config_dns_settings_parse) ----
 * -ENOENT when none are stored (the config file's are in force). Set and clear publish a
 * NOTIFY_DNS event (id 1, the row's); clearing what is not there publishes nothing and
 * returns -ENOENT. */
int store_dns_get(struct store *st, char **text, int64_t *updated_at);
int store_dns_set(struct store *st, const char *text, int64_t *updated_at);
int store_dns_clear(struct store *st);

#endif
