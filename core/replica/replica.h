/* replica: what makes several `serve` processes on one PostgreSQL database act as one server.
 * Every replica writes through its own store; the store announces each committed change
 * (store_feed). The follower here listens on a connection of its own and publishes the other
 * replicas' changes on the local bus, where the state applies them as it applies its own and
 * the map streams hear of them. Numbers that skip (a lost connection, a restarted database)
 * make it publish NOTIFY_RESYNC: the state then reads everything again.
 *
 * Presence: each replica holds a lease (renewed every 10 s, 30 s long, timed by the database's
 * clock, so a replica's own clock does not matter) and a row per node with a map stream on it,
 * so every replica knows which nodes are online. One replica, elected by a PostgreSQL advisory
 * lock on its feed's connection (taken over when that connection ends), deletes the rows of
 * replicas whose lease ran out; the state learns of the election (state_set_elected) and has
 * it choose the primary routers of HA routes for all replicas.
 *
 * DERP mesh: each replica writes the URL of its embedded relay beside its lease; at start and
 * at each renewal it reads the other live replicas' URLs and hands them to the relay, which
 * meshes with them. A replica that dies drops out of the list with its lease. SQLite has no
 * replicas:
 * replica_start does nothing there.
 *
 * Thread-safety: start and stop from one thread; the follower runs on its own thread and
 * calls notify_publish from it. */
#ifndef HS_REPLICA_H
#define HS_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#include "notify/notify.h"
#include "state/state.h"
#include "store/store.h"

struct replica;

/* The DERP mesh as replicas find it in the database (replica_start's mesh may be NULL: none). */
struct replica_mesh {
    const char *url; /* our relay, as the other replicas dial it; NULL: we offer none */
    /* The other live replicas' relay URLs, sorted, whenever that list changes (it starts
     * empty); called on the presence thread. NULL: we look for none. */
    void (*peers)(void *arg, const struct hs_strv *urls);
    void *arg;
};

/* Follows the changes committed after number seq (store_change_seq, read before the state
 * loaded), takes this replica's lease and keeps its presence rows for state's nodes. *out is
 * NULL on SQLite. The follower connects on its own thread: a database that is down now only
 * delays it. */
int replica_start(struct store *st, struct notify_bus *bus, struct state *state, uint64_t seq,
                  const struct replica_mesh *mesh, struct replica **out);
/* Stops both threads and deletes our presence rows and lease (our nodes go offline
 * everywhere at once). The state may still call in afterwards: free only after state_free. */
void replica_stop(struct replica *r);
void replica_free(struct replica *r); /* NULL is fine */

/* For /debug, any thread: this replica's name in the replicas table (host:pid, valid as long
 * as r), whether it hears the others now, whether it does the work done once for all, and
 * the number of the last change it applied. */
struct replica_status {
    const char *name;
    bool listening, leader;
    uint64_t applied;
    size_t mesh_peers; /* relays of other replicas found in the database */
};
void replica_status(struct replica *r, struct replica_status *out);
/* How long other replicas' changes took from the writer's clock before its COMMIT to being
 * published here (us; the hosts' clocks must agree for it to mean anything). Lives as long
 * as r. */
const struct metrics_hist *replica_lag(const struct replica *r);

#endif
