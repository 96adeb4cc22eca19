/* Presence: our lease in the replicas table and a presence row for each node with a map
 * stream here. The state tells us (STATE_NODE_HERE) when a node's streams here begin or all
 * end; a writer thread turns that into rows in batches, so no map thread waits for SQL. Every
 * RENEW it extends our lease; the elected replica also deletes replicas whose lease ran out.
 * Leases run on the database's clock; our waits on the monotonic one: a step of this host's
 * clock moves neither. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replica/replica_internal.h"
#include "util/util.h"

#define RENEW_US (10 * HS_USEC_PER_SEC)
#define LEASE_US (30 * HS_USEC_PER_SEC)  /* a replica silent this long is taken for dead */
#define COALESCE_US (50 * 1000)          /* a connect storm is written in batches */
#define RETRY_US HS_USEC_PER_SEC

static void on_state(void *arg, const struct state_change *ch)
{
    struct replica *r = arg;

    if (ch->kind != STATE_NODE_HERE)
        return;
    pthread_mutex_lock(&r->mu);
    if (!r->stopping) {
        hs_ids_push(&r->pending, ch->id);
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Writes the rows the nodes in ids (sorted, distinct) need now: the state's count of streams
 * here decides, not the age of the event. Returns false on failure (the caller retries). */
static bool write_rows(struct replica *r, const uint64_t *ids, size_t n)
{
    uint64_t *on = hs_xcalloc(n + 1, sizeof(*on)), *off = hs_xcalloc(n + 1, sizeof(*off));
    size_t non = 0, noff = 0;
    int rc;

    state_rdlock(r->state);
    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_by_id(r->state, ids[i]);
        bool want = sn && sn->sessions > 0;
        bool have = hs_ids_has(r->held.v, r->held.n, ids[i]);
        if (want && !have)
            on[non++] = ids[i];
        else if (!want && have)
            off[noff++] = ids[i];
    }
    state_unlock(r->state);
    rc = store_presence_write(r->st, on, non, off, noff);
    if (rc == 0) {
        for (size_t i = 0; i < non; i++)
            hs_ids_set(&r->held, on[i], true);
        for (size_t i = 0; i < noff; i++)
            hs_ids_set(&r->held, off[i], false);
    } else {
        log_warnx("replica: cannot write which nodes are connected here: %s; retrying",
                  hs_strerror(rc));
    }
    free(on);
    free(off);
    return rc == 0;
}

/* Hands the other replicas' relays to the DERP mesh when the list changed (the relay starts
 * with none, as mesh_seen does). A failed read keeps the mesh as it is: a replica behind a
 * database outage is not dropped for it. */
static void find_relays(struct replica *r)
{
    struct hs_strv urls;
    int rc;

    if (!r->mesh.peers)
        return;
    if ((rc = store_replica_derp_urls(r->st, &urls)) < 0) {
        log_warnx("replica: cannot read the other replicas' DERP relays: %s", hs_strerror(rc));
        return;
    }
    if (!hs_strv_equal(&urls, &r->mesh_seen)) {
        r->mesh.peers(r->mesh.arg, &urls);
        atomic_store(&r->mesh_count, urls.n);
    }
    hs_strv_free(&r->mesh_seen);
    r->mesh_seen = urls;
}

/* Our lease again. If it had run out, the elected replica deleted our rows: all are written
 * again. The elected replica (maybe us) deletes the rows of replicas whose lease ran out. */
static void renew(struct replica *r)
{
    bool made = false;
    size_t gone = 0;
    int rc = store_replica_renew(r->st, r->name, r->mesh.url, LEASE_US, &made);

    if (rc < 0) {
        log_warnx("replica: cannot renew this replica's lease: %s", hs_strerror(rc));
    } else if (made && r->held.n) {
        log_warnx("replica: this replica's lease had run out; writing its %zu nodes again",
                  r->held.n);
        pthread_mutex_lock(&r->mu);
        for (size_t i = 0; i < r->held.n; i++)
            hs_ids_push(&r->pending, r->held.v[i]);
        pthread_mutex_unlock(&r->mu);
        r->held.n = 0;
    }
    if (atomic_load(&r->leader) && store_replicas_expire(r->st, &gone) == 0 &&
        gone)
        log_info("replica: %zu nodes of replicas whose lease ran out are offline", gone);
    find_relays(r);
}

static void *writer(void *arg)
{
    struct replica *r = arg;
    int64_t renew_at = hs_monotonic_us() + RENEW_US;

    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        if (r->pending.n == 0 && hs_monotonic_us() < renew_at) {
            hs_cond_wait_until(&r->cv, &r->mu, renew_at);
            continue;
        }
        if (r->pending.n) {
            struct hs_ids batch;
            pthread_mutex_unlock(&r->mu);
            usleep(COALESCE_US); /* let the rest of a burst arrive */
            pthread_mutex_lock(&r->mu);
            batch = r->pending;
            r->pending = (struct hs_ids){ 0 };
            pthread_mutex_unlock(&r->mu);
            batch.n = hs_ids_sort_unique(batch.v, batch.n);
            bool ok = write_rows(r, batch.v, batch.n);
            pthread_mutex_lock(&r->mu);
            if (!ok) {
                for (size_t i = 0; i < batch.n; i++)
                    hs_ids_push(&r->pending, batch.v[i]);
                hs_cond_wait_until(&r->cv, &r->mu, hs_monotonic_us() + RETRY_US);
            }
            hs_ids_free(&batch);
            continue;
        }
        pthread_mutex_unlock(&r->mu);
        renew(r);
        renew_at = hs_monotonic_us() + RENEW_US;
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    /* Our nodes go offline everywhere now, not when our lease runs out. */
    if (store_replica_leave(r->st) < 0)
        log_warnx("replica: cannot remove this replica's rows; others wait for its lease");
    return NULL;
}

int replica__presence_start(struct replica *r)
{
    bool made;
    char host[64] = "?";
    int rc;

    gethostname(host, sizeof(host) - 1);
    snprintf(r->name, sizeof(r->name), "%s:%d", host, (int)getpid());
    pthread_mutex_init(&r->mu, NULL);
    hs_cond_init_monotonic(&r->cv);
    /* Before any stream opens: presence rows refer to this row. */
    if ((rc = store_replica_renew(r->st, r->name, r->mesh.url, LEASE_US, &made)) < 0)
        return rc;
    find_relays(r);
    state_listen(r->state, on_state, r);
    if ((rc = pthread_create(&r->writer, NULL, writer, r)) != 0)
        return -rc;
    r->writer_started = true;
    return 0;
}

void replica__presence_stop(struct replica *r)
{
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->writer_started)
        pthread_join(r->writer, NULL);
    r->writer_started = false;
}
