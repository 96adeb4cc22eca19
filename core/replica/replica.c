/* Starting and stopping the follower and the presence writer. */
#include <stdlib.h>

#include "replica/replica_internal.h"
#include "util/util.h"

/* Microseconds: a LISTEN round trip on one host to a replica seconds behind. */
static const int64_t lag_bounds[] = { 1000,   2500,   5000,    10000,   25000,   50000, 100000,
                                      250000, 500000, 1000000, 2500000, 5000000, 10000000 };

int replica_start(struct store *st, struct notify_bus *bus, struct state *state, uint64_t seq,
                  const struct replica_mesh *mesh, struct replica **out)
{
    struct replica *r;
    int rc;

    *out = NULL;
    if (!store_shared(st))
        return 0;
    r = hs_xcalloc(1, sizeof(*r));
    r->st = st;
    r->bus = bus;
    r->state = state;
    r->origin = store_origin(st);
    r->last = seq;
    r->stop_pipe[0] = r->stop_pipe[1] = -1;
    if (mesh) {
        r->mesh = *mesh;
        r->mesh.url = mesh->url ? hs_strdup(mesh->url) : NULL;
    }
    atomic_init(&r->mesh_count, 0);
    atomic_init(&r->leader, false);
    atomic_init(&r->listening, false);
    metrics_hist_init(&r->lag, lag_bounds, HS_ARRAY_LEN(lag_bounds));
    if ((rc = replica__presence_start(r)) < 0 || (rc = replica__follow_start(r)) < 0) {
        log_errorx("replica: cannot start: %s", hs_strerror(rc));
        replica_stop(r);
        replica_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void replica_stop(struct replica *r)
{
    if (!r)
        return;
    replica__follow_stop(r);
    replica__presence_stop(r);
}

void replica_free(struct replica *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    hs_ids_free(&r->pending);
    hs_ids_free(&r->held);
    hs_strv_free(&r->mesh_seen);
    free((char *)r->mesh.url);
    free(r);
}

const struct metrics_hist *replica_lag(const struct replica *r)
{
    return &r->lag;
}

void replica_status(struct replica *r, struct replica_status *out)
{
    *out = (struct replica_status){
        .name = r->name,
        .listening = atomic_load(&r->listening),
        .leader = atomic_load(&r->leader),
        .applied = __atomic_load_n(&r->last, __ATOMIC_RELAXED),
        .mesh_peers = atomic_load(&r->mesh_count),
    };
}
