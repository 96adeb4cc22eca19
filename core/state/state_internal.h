/* state internals shared by state.c (users, nodes, events) and state_policy.c (the policy in
 * force and its compiled forms). */
#ifndef HS_STATE_INTERNAL_H
#define HS_STATE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "policy/policy.h"
#include "state/state.h"

#define STATE_MAX_LISTENERS 8

/* A compiled policy for the nodes it was compiled for (ids ascending: index i is node ids[i]).
 * Immutable after state__net_install(); freed with the last reference. */
struct state_net {
    struct policy_net *pn;
    uint64_t gen;  /* from one counter per state, never reused */
    uint64_t *ids;
    size_t n;
    bool all;      /* compiled without a policy: every node sees every other */
    int refs;      /* atomic */
};

/* A subnet route and its primary router. */
struct state_primary {
    const char *route;
    uint64_t id;
    bool unhealthy; /* candidates only: the node's HA probe mark */
};

/* Nodes by node key (state_keys.c); changed with the node array, under the same locks. */
struct state_keys {
    struct state_node **buckets; /* chains through state_node.key_next */
    size_t nbuckets, n;          /* nbuckets a power of two */
    uint8_t secret[16];          /* the hash's key (crypto_shorthash_KEYBYTES) */
};

void state__keys_init(struct state_keys *k);
void state__keys_free(struct state_keys *k);
void state__keys_add(struct state_keys *k, struct state_node *sn);
void state__keys_del(struct state_keys *k, struct state_node *sn);
/* The newest node with this node key (and machine key, unless NULL), or NULL. */
struct state_node *state__keys_find(const struct state_keys *k, const uint8_t machine_key[32],
                                    const uint8_t node_key[32]);

/* The writer of what nodes report (state_writer.c). Lock order: flush_mu, then the state's
 * wmu and lock, then mu. */
struct state_writer {
    pthread_mutex_t flush_mu; /* one flush at a time: a node's writes stay in order */
    pthread_mutex_t mu;       /* guards the rest */
    pthread_cond_t cond;
    pthread_t thread;
    bool running, stop;
    int64_t interval_us;
    struct hs_ids queued;     /* the nodes to write (state_node.queued) */
    int64_t failed_log_at;    /* when a failed write was last logged (monotonic us) */
};

void state__writer_init(struct state *s);
void state__writer_start(struct state *s);
/* Stops the thread and writes what is left. */
void state__writer_stop(struct state *s);
/* Write lock held: the node has unsaved reports; queues it unless it is queued. */
void state__writer_queue(struct state *s, struct state_node *sn);
/* wmu held, no lock: marks the node's reports stored when none came after `reports`. */
void state__writer_saved(struct state *s, uint64_t id, uint32_t reports);

/* Lock order: wmu, then lock. Every change of a node's stored fields or of the node and user
 * arrays holds wmu (and lock while it writes), so a compile that holds wmu alone may read them
 * while map builders hold the read lock. Runtime fields (online, peer_json, version) change
 * under lock only; no compile reads them. */
struct state {
    pthread_rwlock_t lock;
    pthread_mutex_t wmu;
    struct store *st;
    struct state_node **nodes;
    size_t nnodes, capnodes;
    struct state_keys keys;   /* the same nodes by node key */
    struct state_user **users;
    size_t nusers, capusers;
    struct { state_listener_fn fn; void *arg; } listeners[STATE_MAX_LISTENERS];
    size_t nlisteners;
    int sub_id;
    struct notify_bus *bus;
    int64_t expiry_checked; /* expiries up to here have been reported */
    uint64_t versions;      /* the last state_node.version handed out */
    struct state_primary *prim; /* each served subnet route's primary, sorted by route (owned
                                 * texts; under wmu and lock to change) */
    size_t nprim;
    uint64_t *routers;          /* ids of the nodes serving any route, ascending (same locks) */
    size_t nrouters;
    /* Replicas on one database (store_shared): the primaries the elected replica chose, as
     * the store last said or as we last wrote them when elected, sorted by route (owned
     * texts; same locks). Followers apply them; the elected one starts from them. */
    bool shared;
    struct state_primary *published;
    size_t npublished;
    pthread_mutex_t pub_mu;     /* orders publications; taken before wmu */

    /* The policy (under wmu to change, lock to swap). */
    enum state_policy_from policy_from;
    char *policy_path;
    const char *server_url;    /* for SSH check rules (borrowed) */
    struct policy *policy;     /* NULL: none, everyone reaches everyone */
    char *policy_text;         /* the text in force, NULL with no policy */
    int64_t policy_updated_at; /* stored row's time; 0 for a file */
    struct state_net *net;     /* never NULL after state_new() */
    bool net_exact;            /* net was compiled for exactly the current nodes */
    uint64_t gens;             /* the last state_net.gen handed out */
    uint64_t compiles, compile_us; /* policy compiles and their time (atomic; for /metrics) */
    pthread_mutex_t hmu;           /* guards history */
    struct state_history history;

    /* The DNS settings (state_dns.c): the snapshot in force (NULL until configured), swapped
     * under dns_mu; the config file whose dns section they fall back to. */
    pthread_mutex_t dns_mu;
    struct state_dns *dns;
    const struct hs_config *dns_cfg;
    atomic_bool stale; /* a store read failed: state_retry() reads everything again */
    atomic_bool elected; /* see state_elected() */
    struct state_writer wr;
};

/* A lock held: the node id, or NULL (state_node_by_id, writable). */
struct state_node *state__node(struct state *s, uint64_t id);

/* wmu held. Compiles the policy in force again for the current users and nodes, after the
 * nodes listed changed (NULL: anything may have; a user change), and installs the result; on
 * failure logs why and keeps the previous net (which then misses the new nodes). The policy's
 * tests are not run: a tailnet change is never refused. */
void state__recompile(struct state *s, const uint64_t *changed, size_t nchanged);
/* wmu held: compiles p (NULL: no policy) for the current users and nodes. */
int state__compile(struct state *s, const struct policy *p, struct state_net **out, char *err,
                   size_t errsize);
/* A policy event from the store (database mode): reload, log a refusal. */
void state__policy_event(struct state *s);
void state__policy_free(struct state *s);
/* A DNS event from the store (or a resync): read the saved settings again; listeners hear
 * STATE_DNS_CHANGED when what nodes are sent changed. */
void state__dns_event(struct state *s);
/* A read of the store failed (rc < 0, not -ENOENT): what the state holds may be stale until
 * state_retry(). Logged once per outage. */
void state__stale(struct state *s, const char *what, int rc);
/* Write lock held: sn->serving from its announced and approved routes. */
void state__node_serving(struct state_node *sn);
/* No lock held: the routes the policy's autoApprovers approve for the node (all nodes that
 * announce routes) that the store lacks are written to it. */
void state__auto_approve(struct state *s, uint64_t id);
void state__auto_approve_all(struct state *s);
void state__emit(struct state *s, enum state_change_kind kind, uint64_t id);
/* Write lock held: drops n's serialised form (it changed). */
void state__drop_cache(struct state *s, struct state_node *n);
/* wmu held: marks each node healthy or not (see state_set_health); whether any mark changed. */
bool state__set_health(struct state *s, const uint64_t *ids, const bool *healthy, size_t n);

/* state_primary.c. Whether sn serves a subnet route or is primary for one (a change of its online flag may move
 * a primary). */
bool state__serves_subnet(const struct state_node *sn);
/* wmu and the write lock held: elects every subnet route's primary again. Returns how many
 * nodes' primaries changed, their ids in *changed (caller frees; NULL when none); their
 * cached peer JSON is dropped. */
size_t state__elect(struct state *s, uint64_t **changed);
/* wmu held: the same, taking the write lock itself, then compiles the policy again for the
 * nodes it changed. */
size_t state__elect_compile(struct state *s, uint64_t **changed);
void state__routes_free(struct state *s);
/* Replicas (no-ops unless shared). wmu and the write lock held: the published choice is v. */
void state__published_install(struct state *s, const struct store_primary *v, size_t n);
/* Write lock held: the health marks are those of the unhealthy ids (ascending), for the nodes
 * online and serving routes (the others are no candidates). */
void state__health_install(struct state *s, const uint64_t *unhealthy, size_t n);
/* No lock held: when elected, writes the primaries to the store for the other replicas if
 * they differ from the published ones (a failure is logged; the next call tries again). */
void state__publish(struct state *s);
/* Write lock held (or no one else yet): s->routers again from the nodes' serving routes. */
void state__list_routers(struct state *s);

#endif
