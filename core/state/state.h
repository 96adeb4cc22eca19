/* state: the in-memory view of users and nodes that map generation reads, so a map poll never
 * queries SQL. Loaded from the store at start, then kept current by the notify bus (each event
 * re-reads the one changed row). Online status and the live map sessions are runtime-only.
 * It also holds the policy in force and its compiled form for the current nodes (below), and
 * is control's only way to the nodes and registrations in the store ("writes" below).
 *
 * Newer wins: every node row carries a revision the store counts up with each update. A row
 * read back (after an announcement, ours or another replica's, or when everything is read
 * again) is installed only if its revision is not below the one in memory, and an
 * announcement of a revision memory has already installed reads nothing. What a node
 * reported and the writer has not stored yet stays as reported whatever row comes in.
 *
 * Thread-safety: readers take state_rdlock()/state_unlock() around any use of the pointers
 * they get; the notify callback takes the write lock. Listeners are called after the write
 * lock is released. */
#ifndef HS_STATE_H
#define HS_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "notify/notify.h"
#include "policy/policy.h"
#include "store/store.h"

struct state;

/* A node as the mapper sees it: the stored row plus runtime fields. */
struct state_node {
    struct store_node n;    /* owned */
    bool online;            /* a map stream is open, here or on another replica */
    unsigned sessions;      /* map streams open on this replica */
    bool remote;            /* another replica has one open (presence; PostgreSQL) */
    int64_t online_since;   /* us */
    int64_t disconnected_at; /* monotonic us (hs_monotonic_us) when it went offline here, or
                              * its last_seen as of loading; 0 while online or never seen */
    uint64_t session_epoch; /* map sessions opened so far (runtime): an HA probe is judged
                             * against the session it was sent on */
    bool unhealthy;         /* its last HA probe went unanswered (runtime; see "routes") */
    uint16_t capver;        /* from the last map request */
    int home_derp;          /* Hostinfo.NetInfo.PreferredDERP */
    /* Routes (see "routes" below): announced = Hostinfo.RoutableIPs as the client sent them;
     * approved = n.approved_routes (stored: the operator's, and autoApprovers' once written
     * back); serving = those announced and approved, in announced order, exit routes
     * included: the only routes the node may route. */
    struct hs_strv routes;  /* announced */
    struct hs_strv serving; /* announced and approved */
    struct hs_strv primary; /* the subnet routes it is the elected primary router for (runtime:
                             * see "routes" below); in serving's order */
    /* The node serialised as a peer (tailcfg.Node JSON), built once by the mapper under the
     * read lock (installed with an atomic compare-and-swap) and dropped by the state under
     * the write lock whenever anything in it may change. */
    char *peer_json;
    /* The same without its routes (AllowedIPs its addresses alone): a router as seen by the
     * peers the policy gives none of its routes. Built and dropped like peer_json. */
    char *peer_json_bare;
    /* Changes (from one counter for all nodes, never reused) whenever peer_json is dropped:
     * what the mapper checks its cached runs of consecutive peers against. */
    uint64_t version;
    struct state_node *key_next; /* the state's own: the next in its node-key hash chain */
    /* What the node reported that the writer has not stored yet (STORE_NODE_BIT()s; under
     * the write lock): rows read from the store keep these fields as in memory. */
    unsigned unsaved;
    uint32_t reports;  /* counts its reports: one that came while the writer wrote shows */
    bool queued;       /* in the writer's list */
};

struct state_user {
    struct store_user u; /* owned */
};

/* What changed, for listeners (the map sessions). */
enum state_change_kind {
    STATE_NODE_ADDED,
    STATE_NODE_CHANGED,  /* any stored field */
    STATE_NODE_REMOVED,
    STATE_NODE_ONLINE,   /* online flag flipped (runtime only) */
    STATE_NODE_HERE,     /* its map streams on this replica began, or all ended (presence) */
    STATE_USER_CHANGED,  /* a user's profile (name...) changed */
    STATE_POLICY_CHANGED, /* a new policy is in force (its compiled form changed too) */
    STATE_REGISTRATION_CHANGED, /* a pending interactive login changed (id 0) */
    STATE_DNS_CHANGED,    /* other DNS settings are in force (id 0) */
};
/* For STATE_NODE_CHANGED: which parts changed. STATE_F_PATCHABLE ones fit a
 * PeersChangedPatch; anything else needs the full Node. */
enum state_field {
    STATE_F_ENDPOINTS = 1 << 0,
    STATE_F_DISCO_KEY = 1 << 1,
    STATE_F_NODE_KEY = 1 << 2,
    STATE_F_HOME_DERP = 1 << 3,
    STATE_F_HOSTINFO = 1 << 4, /* what the node itself reported (peers need the full Node) */
    STATE_F_OTHER = 1 << 5,    /* anything else: admin changes the node must hear about too */
    STATE_F_CAP = 1 << 6,      /* capability version, from a map request (runtime only) */
};
#define STATE_F_PATCHABLE (STATE_F_ENDPOINTS | STATE_F_DISCO_KEY | STATE_F_NODE_KEY | \
                           STATE_F_HOME_DERP | STATE_F_CAP)
/* Changes that come from the node's own requests: nothing it needs to be told. */
#define STATE_F_SELF_REPORTED (STATE_F_PATCHABLE | STATE_F_HOSTINFO)

struct state_change {
    enum state_change_kind kind;
    uint64_t id;
    unsigned fields; /* enum state_field bits, for STATE_NODE_CHANGED */
};
typedef void (*state_listener_fn)(void *arg, const struct state_change *ch);

/* Loads every user and node and subscribes to bus (NULL: a static snapshot, for tools). */
int state_new(struct store *st, struct notify_bus *bus, struct state **out);
void state_free(struct state *s);
void state_listen(struct state *s, state_listener_fn fn, void *arg);

void state_rdlock(struct state *s);
void state_unlock(struct state *s);

/* Lookups: valid until state_unlock(). NULL when absent. By key: the newest node (highest
 * id) with this node key and this machine key (NULL = any), as store_node_find answers; a
 * hash lookup. */
const struct state_node *state_node_by_id(struct state *s, uint64_t id);
const struct state_node *state_node_by_nodekey(struct state *s, const uint8_t key[32]);
const struct state_node *state_node_find(struct state *s, const uint8_t machine_key[32],
                                         const uint8_t node_key[32]);
const struct state_user *state_user_by_id(struct state *s, uint64_t id);
/* Iteration in id order: for (i = 0; i < state_node_count(s); i++) state_node_at(s, i). */
size_t state_node_count(struct state *s);
const struct state_node *state_node_at(struct state *s, size_t i);
size_t state_user_count(struct state *s);
const struct state_user *state_user_at(struct state *s, size_t i);

/* Runtime-only (no store write): a map session of node id opened or closed. The node is
 * online while it has any, so sessions may open and close in any order (a client's new
 * stream often opens before its old one is seen closing); each opened one must be closed
 * exactly once. Listeners hear STATE_NODE_ONLINE when that flips. */
void state_node_session(struct state *s, uint64_t id, bool opened, uint16_t capver);
/* Whether another replica holds a map stream of node id (its presence, as the store says).
 * Online is sessions here or there; listeners hear STATE_NODE_ONLINE when that flips. */
void state_node_remote(struct state *s, uint64_t id, bool elsewhere);
/* Re-reads one node from the store (a static snapshot's way to see a write: it has no bus). */
void state_refresh_node(struct state *s, uint64_t id);

/* ---- writes ----
 * control/ writes through these, never to the store itself. An operator's kind of write (a
 * logout's expiry, a node-key rotation, a removal) goes to the store at once and comes back
 * through the bus like any other. What a node reports about itself (endpoints, Hostinfo and
 * the hostname in it, disco key, last seen) is taken in memory at once, so its peers here
 * hear it at once, and stored by the state's writer thread: every write interval
 * (tuning.node_write_interval) the nodes that reported since, each with its newest values
 * only, in one transaction; other replicas hear it from that commit. state_free() writes what
 * is left (a clean stop loses nothing); a crash loses at most the last interval's reports. */
#define STATE_WRITE_INTERVAL_DEFAULT_US (HS_USEC_PER_SEC / 10)
/* The writer's interval (us > 0); call before serving. */
void state_set_write_interval(struct state *s, int64_t us);
/* The node's own report: the fields of STATE_REPORTED (STORE_NODE_BIT()s; others are
 * ignored) from v. Listeners hear what changed. -ENOENT when there is no such node. */
#define STATE_REPORTED (STORE_NODE_BIT(STORE_NODE_DISCO_KEY) | \
                        STORE_NODE_BIT(STORE_NODE_ENDPOINTS) | \
                        STORE_NODE_BIT(STORE_NODE_HOSTINFO) | STORE_NODE_BIT(STORE_NODE_HOSTNAME))
int state_node_report(struct state *s, uint64_t id, unsigned fields, const struct store_node *v);
/* The node was seen at `at` (us; a map stream opened or closed): a report as above. Peers are
 * not told (see poll.c). */
void state_node_seen(struct state *s, uint64_t id, int64_t at);
/* Writes the reports taken so far now (the writer's own step; state_free does it too).
 * -errno when the store refused them: they stay and are tried again. */
int state_flush(struct state *s);
/* At once, through the store (store_node_update, store_node_delete). */
int state_node_write(struct state *s, uint64_t id, unsigned fields, const struct store_node *v);
int state_node_delete(struct state *s, uint64_t id);
/* Pending interactive registrations: the store's (shared by replicas; they are few and
 * short-lived, read only by logins waiting for an operator). */
int state_registration_get(struct state *s, const char *id, struct store_registration *out);
/* Deletes the expired ones and all but the `keep` newest others; how many went. */
int state_registration_trim(struct state *s, int64_t now, size_t keep);
/* Nodes whose key expiry passed since the last call (now: the wall clock, us) are reported
 * to listeners as changed (their peers must see them expired); so are those whose expiry is
 * ahead again because the wall clock was set back past it. Call about once a second. */
void state_check_expiry(struct state *s, int64_t now);
/* When a read of the store failed since the last call (the database was unreachable while a
 * change was announced), reads everything again, as after missed announcements; until then
 * the state keeps what it had. Among replicas the elected one also writes its primary
 * routers again here if the store holds others. Call about once a second. */
void state_retry(struct state *s);
/* Whether this process does the work done once for all replicas (removing inactive ephemeral
 * nodes, choosing the primary routers of HA routes): alone on its database it always does;
 * among replicas, the one core/replica says was elected (none until then). Replicas that all
 * did it would race on the same deletes with clocks of their own, and could give their
 * clients different primaries. On being elected the primaries are chosen again, starting
 * from the published ones. */
void state_set_elected(struct state *s, bool elected);
bool state_elected(struct state *s);

/* ---- online history ----
 * The number of online nodes (here and, through presence, on other replicas) sampled every
 * STATE_HISTORY_STEP_US; the last STATE_HISTORY_POINTS samples (24 h) are kept in memory, for
 * the web admin's chart. A point stands for its step and holds the step's latest sample, so
 * the newest point follows the count until its step ends. Lost on restart. */
#define STATE_HISTORY_STEP_US (300 * HS_USEC_PER_SEC)
#define STATE_HISTORY_POINTS 288

struct state_history_point {
    int64_t at;      /* the start of its step, us since the epoch */
    uint32_t online;
};
struct state_history {
    struct state_history_point p[STATE_HISTORY_POINTS];
    size_t head, n;  /* p[head] is the oldest of n points */
};

/* Records online at now: into the newest point while now is in its step, else as a new point
 * (dropping the oldest when full). A time before the newest point's step (the wall clock was
 * set back) drops the points after it, so the chart goes on from now instead of stopping
 * until the clock catches up; a time before the epoch is ignored. */
void state_history_add(struct state_history *h, int64_t now, uint32_t online);
/* Copies the points, oldest first, into out; returns their count. */
size_t state_history_read(const struct state_history *h,
                          struct state_history_point out[STATE_HISTORY_POINTS]);
/* Samples the online count now into the state's history. Call about once a second; any
 * thread. */
void state_sample_online(struct state *s, int64_t now);
/* The state's history, oldest first; returns the count. Any thread. */
size_t state_online_history(struct state *s,
                            struct state_history_point out[STATE_HISTORY_POINTS]);

/* ---- routes ----
 * A route is usable when the node announces it (Hostinfo.RoutableIPs: --advertise-routes,
 * --advertise-exit-node) and it is approved (nodes.approved_routes: `nodes approve-routes`,
 * 0.22's `routes enable`, or the policy's autoApprovers). Approval outlives the announcement.
 * The policy is compiled with each node's serving routes as its approved ones, so filters
 * and route visibility follow every approval and announcement change.
 *
 * autoApprovers: whenever a node's routes or the policy change, the routes the policy
 * approves (policy_net_approved) that the store does not list are written to
 * nodes.approved_routes, as headscale 0.29 does; they then stay approved as if the operator
 * had approved them (a later policy without them does not take them back).
 *
 * Primary routers: each subnet route has at most one, elected among the online nodes serving
 * it: the current one stays while online and healthy, else the lowest healthy node id takes
 * over (no flapping back). Health comes from control's HA probes (node.routes.ha): a router
 * that leaves a ping unanswered while its stream stays open is unhealthy until it answers
 * one, reconnects or stops serving routes. When every router of a route is unhealthy the
 * current primary keeps it if still online, else the route has none (pointing peers at a
 * router known not to answer helps no one). Routers whose primaries move are compiled again
 * into the policy and reported to listeners as STATE_NODE_CHANGED (their peers' AllowedIPs
 * and PrimaryRoutes change).
 *
 * Replicas on one PostgreSQL database make this one decision: the elected replica elects from
 * every replica's presence and health marks and publishes the primaries in the store; the
 * others apply what it published (store_primaries_*), so every client of every replica sees
 * the same primary. A new elected replica starts from the published choice.
 *
 * Read lock held for the three below. */
/* The nodes an HA probe asks: the online ones that serve a subnet route some other online
 * node serves too, and those marked unhealthy (a lone router left of a pair must be able to
 * prove itself healthy again, or its route would stay without a router). Ascending,
 * deduplicated; *n their count. Caller frees. Takes the lock. */
uint64_t *state_ha_nodes(struct state *s, size_t *n);
/* One probe cycle's verdicts: healthy[i] for ids[i]. An unhealthy mark sticks only on a node
 * still online and serving routes. Primaries are elected again when a mark changed; the
 * routers that moved are reported as STATE_NODE_CHANGED. Among replicas the verdicts go to
 * the store, whose announcements bring the marks to every replica (this one too). Takes the
 * locks; among replicas, one store write. */
void state_set_health(struct state *s, const uint64_t *ids, const bool *healthy, size_t n);
/* Whether node sn announces and has approved prefix (canonical text). */
bool state_node_serves(const struct state_node *sn, const char *prefix);
/* The primary router of a subnet route (not 0.0.0.0/0 or ::/0): the node whose route peers
 * use, as the election left it (0 when no online node serves it). Exit routes have no
 * primary: every approved exit node is offered. */
uint64_t state_route_primary(struct state *s, const char *prefix);
/* The ids of the nodes that serve any route (exit routes too), ascending; n set to their
 * count. Borrowed until state_unlock(). */
const uint64_t *state_router_ids(struct state *s, size_t *n);
/* Node sn's subnet routes for which it is the primary (sorted as headscale sorts prefixes:
 * IPv4 first, then by length, then by address) are appended to out. */
void state_node_primary_routes(struct state *s, const struct state_node *sn,
                               struct hs_strv *out);

/* Canonical route list from operator input: each prefix parsed (host bits must be clear;
 * "10.0.0.1/24" is refused, not guessed), 0.0.0.0/0 or ::/0 bringing the other exit route
 * along, duplicates dropped, sorted as above. -EINVAL naming the first bad entry in err. */
int state_routes_normalize(const char *const *in, size_t n, struct hs_strv *out, char *err,
                           size_t errsize);
/* Sorts canonical prefixes in place as above (unparsable ones last, as given). */
void state_routes_sort(struct hs_strv *v);
bool state_route_is_exit(const char *prefix); /* "0.0.0.0/0" or "::/0" */

/* ---- the policy in force ----
 * Compiled for the current users and nodes, and compiled again whenever something it depends
 * on changes: a node added or removed, or its tags, user, addresses, name, advertised or
 * approved routes; a user added, renamed or removed; a new policy. Not for endpoints, keys,
 * Hostinfo or online changes. Without a policy every node reaches every other.
 *
 * A compiled policy is a struct state_net: immutable and reference counted, so a map session
 * can keep the one its node was last told about and compare it with the next. Its nodes are
 * addressed by index into its own id-sorted list: for the current net that is the state's
 * order (state_net_index_at() is then the identity). A recompile for a changed tailnet does
 * not run the policy's tests (a node joining is never refused); should one still fail (out of
 * memory), the previous net stays in force and does not know the nodes added since: they see
 * no one and no one sees them. */
#define STATE_NET_NONE SIZE_MAX
struct state_net;

/* The current net: read lock held; borrowed until state_unlock() unless referenced. */
struct state_net *state_net_current(struct state *s);
void state_net_ref(struct state_net *n);
void state_net_unref(struct state_net *n); /* NULL is fine; any thread, no lock needed */
const struct policy_net *state_net_policy(const struct state_net *n);
uint64_t state_net_gen(const struct state_net *n); /* increases with every compile */
/* Policy compiles (whole, or for the changed nodes; taken or not) and the microseconds they
 * took, since start. Any thread, no lock needed. */
void state_compile_stats(struct state *s, uint64_t *compiles, uint64_t *us);
/* Compiled without a policy: every node it knows sees every other. */
bool state_net_all(const struct state_net *n);
/* The nodes n was compiled for: count, and the id at an index (ascending). */
size_t state_net_count(const struct state_net *n);
uint64_t state_net_id(const struct state_net *n, size_t i);
/* Index of node id in n, or STATE_NET_NONE. */
size_t state_net_index(const struct state_net *n, uint64_t id);
/* Index in n of state_node_at(s, i) (read lock held), or STATE_NET_NONE. */
size_t state_net_index_at(struct state *s, const struct state_net *n, size_t i);
/* n is the current net and was compiled for exactly the current nodes (read lock held). */
bool state_net_exact(struct state *s, const struct state_net *n);
/* Whether a has b in its peer list (indexes in n; STATE_NET_NONE sees and is seen by none). */
bool state_net_sees(const struct state_net *n, size_t a, size_t b);
/* a's whole peer list as bits over n's indexes (malloc'd, state_net_count bits rounded up to
 * 64): what state_net_sees answers for every b at once. */
uint64_t *state_net_sees_row(const struct state_net *n, size_t a);
/* n's node ids, ascending (state_net_count of them; borrowed). */
const uint64_t *state_net_ids(const struct state_net *n);
/* Whether node a (a net index) sees every other node: no policy, or one that lets it. May say
 * false when it does (then ask state_net_sees). */
bool state_net_sees_all(const struct state_net *n, size_t a);
/* Ids in n that are not in other, ascending (other NULL: all of n's). Caller frees. */
uint64_t *state_net_minus(const struct state_net *n, const struct state_net *other, size_t *count);

/* Read lock held: the current compiled policy, and a node's index in it (STATE_NET_NONE). */
const struct policy_net *state_policy_net(struct state *s);
size_t state_node_net_index(struct state *s, uint64_t id);

/* The server's URL (server_url), where SSH `check` rules send clients; borrowed for the
 * state's life. Call before the policy is loaded. */
void state_set_server_url(struct state *s, const char *url);
/* Where the policy comes from (policy.mode, policy.path): nothing, a file (format from its
 * name), or the newest stored row. */
enum state_policy_from { STATE_POLICY_NONE, STATE_POLICY_FILE, STATE_POLICY_STORE };
void state_policy_source(struct state *s, enum state_policy_from from, const char *path);
/* Reads the source (again) and puts what it holds in force, compiled for the current nodes;
 * listeners then get STATE_POLICY_CHANGED. Nothing changes when the text is the one in force,
 * or on failure: unreadable, invalid, failing its own tests, naming a user the tailnet lacks:
 * -errno and a message naming the source in err ("policy file /etc/x.hujson: ..."). In
 * STATE_POLICY_STORE mode a policy event on the bus calls this. Any thread. */
int state_policy_reload(struct state *s, char *err, size_t errsize);
/* The same at start: users the policy names may be missing (the operator may be about to
 * create them). */
int state_policy_load(struct state *s, char *err, size_t errsize);
/* Whether text would load and compile for the current users and nodes, naming no missing
 * user (what a new policy must pass before it is stored). Installs nothing. -EINVAL/-E2BIG
 * with a message in err. */
int state_policy_check(struct state *s, const char *text, size_t len, enum policy_format fmt,
                       char *err, size_t errsize);
/* A draft beside the policy in force, both compiled without their tests (policy_compile_
 * untested) for one snapshot of the nodes: index i of both nets is nodes[i]. */
struct state_preview_node {
    uint64_t id;
    char *name;  /* given name */
    char *owner; /* a tagged node's tags joined with ","; else its user's name */
    bool tagged;
};
struct state_preview {
    struct policy_net *draft, *current;
    struct state_preview_node *nodes;
    size_t n;
};
/* draft (borrowed; NULL: no policy) compiled as above; installs nothing. 0 and out filled
 * (state_preview_fini), or -EINVAL with the compiler's message in err. Any thread. */
int state_policy_preview(struct state *s, const struct policy *draft, struct state_preview *out,
                         char *err, size_t errsize);
void state_preview_fini(struct state_preview *p);
/* Whether a node of user_id (0: none) may take tag under the policy in force: the tag is in
 * its tagOwners and lists the user or a group the user is in. Without a policy every tag is
 * allowed (policy_tag_allowed). Any thread. */
bool state_policy_tag_allowed(struct state *s, uint64_t user_id, const char *tag);
/* A copy of the policy text in force (caller frees) and when it was stored (0 for a file).
 * -ENOENT when there is none. */
int state_policy_text(struct state *s, char **text, int64_t *updated_at);

/* ---- the DNS settings in force ----
 * The config file's dns section until settings are saved through the API (store_dns_set);
 * from then on the saved ones, on every replica, until they are cleared (store_dns_clear).
 * A snapshot is immutable and reference counted. */
struct state_dns {
    struct dns_settings d;
    bool stored;        /* saved through the API, not the config file's */
    int64_t updated_at; /* when they were saved (0 for the config file's) */
    int refs;           /* atomic */
};
/* cfg (borrowed for the state's life) gives the settings to fall back to; the saved ones, if
 * any, are read and put in force (logged: they win over the file's). Call once before
 * serving; until then state_dns_get answers NULL. -EIO when the store cannot be read. */
int state_dns_configure(struct state *s, const struct hs_config *cfg);
/* The snapshot in force, referenced (NULL before state_dns_configure); any thread, no lock. */
const struct state_dns *state_dns_get(struct state *s);
void state_dns_put(const struct state_dns *d); /* NULL is fine */

#endif
