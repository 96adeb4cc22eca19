/* state: the in-memory view of users and nodes that map generation reads, so a map poll never
 * queries SQL. Loaded from the store at start, then kept current by the notify bus (each event
 * re-reads the one changed row). Online status and the live map sessions are runtime-only.
 *
 * Thread-safety: readers take state_rdlock()/state_unlock() around any use of the pointers
 * they get; the notify callback takes the write lock. Listeners are called after the write
 * lock is released. */
#ifndef HS_STATE_H
#define HS_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "notify/notify.h"
#include "store/store.h"

struct state;

/* A node as the mapper sees it: the stored row plus runtime fields. */
struct state_node {
    struct store_node n;    /* owned */
    bool online;            /* a map stream is open (on this replica) */
    int64_t online_since;   /* us */
    int64_t disconnected_at; /* us; 0 while online */
    uint16_t capver;        /* from the last map request */
    int home_derp;          /* Hostinfo.NetInfo.PreferredDERP */
    /* The node serialised as a peer (tailcfg.Node JSON), built once by the mapper under the
     * read lock (installed with an atomic compare-and-swap) and dropped by the state under
     * the write lock whenever anything in it may change. */
    char *peer_json;
    /* Changes (from one counter for all nodes, never reused) whenever peer_json is dropped:
     * what the mapper checks its cached runs of consecutive peers against. */
    uint64_t version;
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
    STATE_USER_CHANGED,  /* a user's profile (name...) changed */
    STATE_POLICY_CHANGED,
    STATE_REGISTRATION_CHANGED, /* a pending interactive login changed (id 0) */
};
/* For STATE_NODE_CHANGED: which parts changed. Only the first four fit a
 * PeersChangedPatch; anything else needs the full Node. */
enum state_field {
    STATE_F_ENDPOINTS = 1 << 0,
    STATE_F_DISCO_KEY = 1 << 1,
    STATE_F_NODE_KEY = 1 << 2,
    STATE_F_HOME_DERP = 1 << 3,
    STATE_F_HOSTINFO = 1 << 4, /* what the node itself reported (peers need the full Node) */
    STATE_F_OTHER = 1 << 5,    /* anything else: admin changes the node must hear about too */
};
#define STATE_F_PATCHABLE (STATE_F_ENDPOINTS | STATE_F_DISCO_KEY | STATE_F_NODE_KEY | \
                           STATE_F_HOME_DERP)
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

/* Lookups: valid until state_unlock(). NULL when absent. */
const struct state_node *state_node_by_id(struct state *s, uint64_t id);
const struct state_node *state_node_by_nodekey(struct state *s, const uint8_t key[32]);
const struct state_user *state_user_by_id(struct state *s, uint64_t id);
/* Iteration in id order: for (i = 0; i < state_node_count(s); i++) state_node_at(s, i). */
size_t state_node_count(struct state *s);
const struct state_node *state_node_at(struct state *s, size_t i);
size_t state_user_count(struct state *s);
const struct state_user *state_user_at(struct state *s, size_t i);

/* Runtime-only updates (no store write): notify listeners with STATE_NODE_ONLINE. */
void state_set_online(struct state *s, uint64_t id, bool online, uint16_t capver);
/* Re-reads one node from the store (after a write that published no event, e.g. last_seen). */
void state_refresh_node(struct state *s, uint64_t id);
/* Nodes whose key expiry passed since the last call (now in us) are reported to listeners
 * as changed (their peers must see them expired). Call about once a second. */
void state_check_expiry(struct state *s, int64_t now);

#endif
