/* replica internals shared by follow.c (the feed) and presence.c (leases and presence). */
#ifndef HS_REPLICA_INTERNAL_H
#define HS_REPLICA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "replica/replica.h"
#include "state/state.h"

struct replica {
    struct store *st;
    struct notify_bus *bus;
    struct state *state;
    uint64_t origin;

    /* The follower (its thread only, but leader) */
    uint64_t last;    /* every change up to here has been applied (atomic stores: /debug) */
    uint64_t behind;  /* the database's number at the last quiet check, if past last */
    struct store_feed *feed;
    int stop_pipe[2];
    pthread_t thread;
    atomic_bool leader; /* the feed's connection holds the lock of the work done once */
    atomic_bool listening; /* the feed is connected */
    struct metrics_hist lag; /* other replicas' changes: their commit to our publishing (us) */

    /* Presence: the writer thread and what it is told (under mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hs_ids pending; /* nodes whose streams here began or ended, not yet written */
    bool stopping;
    bool writer_started;
    pthread_t writer;
    struct hs_ids held; /* the nodes we have presence rows for, ascending (writer only) */
    char name[128];     /* host:pid, in the replicas table */
    struct replica_mesh mesh; /* url owned */
    struct hs_strv mesh_seen; /* the list last handed to mesh.peers (writer only) */
    atomic_size_t mesh_count;
};

int replica__follow_start(struct replica *r);
void replica__follow_stop(struct replica *r);
int replica__presence_start(struct replica *r);
void replica__presence_stop(struct replica *r);

#endif
