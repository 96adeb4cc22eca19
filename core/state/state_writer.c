/* state: writes. What nodes report about themselves is stored by one thread that coalesces
 * (each node's newest values once per interval, all in one transaction): a reconnect storm
 * of thousands of nodes, each reporting endpoints and Hostinfo several times, becomes a few
 * transactions instead of one commit per report. The rest goes to the store at once. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "state/state_internal.h"
#include "util/util.h"

#define WRITE_FAILED_LOG_EVERY_US (60 * HS_USEC_PER_SEC)

void state__writer_init(struct state *s)
{
    struct state_writer *w = &s->wr;

    pthread_mutex_init(&w->flush_mu, NULL);
    pthread_mutex_init(&w->mu, NULL);
    hs_cond_init_monotonic(&w->cond); /* writer_wait's deadline */
    w->interval_us = STATE_WRITE_INTERVAL_DEFAULT_US;
}

void state_set_write_interval(struct state *s, int64_t us)
{
    pthread_mutex_lock(&s->wr.mu);
    if (us > 0)
        s->wr.interval_us = us;
    pthread_cond_signal(&s->wr.cond); /* the next wait is the new length */
    pthread_mutex_unlock(&s->wr.mu);
}

void state__writer_queue(struct state *s, struct state_node *sn)
{
    if (sn->queued)
        return;
    sn->queued = true;
    pthread_mutex_lock(&s->wr.mu);
    hs_ids_push(&s->wr.queued, sn->n.id);
    pthread_mutex_unlock(&s->wr.mu);
}

/* What one flush writes: per queued node its unsaved fields (copied) and its report count
 * when they were copied. */
struct flush {
    struct store_node_patch *v;
    uint32_t *reports;
    size_t n;
};

/* Takes the queue and copies out each node's unsaved fields (nodes gone meanwhile write
 * nothing). */
static void flush_take(struct state *s, struct flush *f)
{
    struct hs_ids ids;

    pthread_mutex_lock(&s->wr.mu);
    ids = s->wr.queued;
    s->wr.queued = (struct hs_ids){ 0 };
    pthread_mutex_unlock(&s->wr.mu);
    f->n = ids.n;
    f->v = hs_xcalloc(ids.n + 1, sizeof(*f->v));
    f->reports = hs_xcalloc(ids.n + 1, sizeof(*f->reports));
    pthread_rwlock_wrlock(&s->lock);
    for (size_t i = 0; i < ids.n; i++) {
        struct state_node *sn = state__node(s, ids.v[i]);
        struct store_node *v = &f->v[i].v;
        f->v[i].id = ids.v[i];
        if (!sn)
            continue;
        sn->queued = false;
        f->v[i].fields = sn->unsaved;
        f->reports[i] = sn->reports;
        memcpy(v->disco_key, sn->n.disco_key, 32);
        v->endpoints_json = hs_strdup(sn->n.endpoints_json);
        v->hostinfo_json = hs_strdup(sn->n.hostinfo_json);
        v->hostname = hs_strdup(sn->n.hostname);
        v->last_seen = sn->n.last_seen;
    }
    pthread_rwlock_unlock(&s->lock);
    hs_ids_free(&ids);
}

static void flush_free(struct flush *f)
{
    for (size_t i = 0; i < f->n; i++)
        store_node_free(&f->v[i].v);
    free(f->v);
    free(f->reports);
}

/* After the write: nodes with no report since are saved; with rc < 0 all are queued again.
 * Under wmu, so no row read from the store before the commit is installed after it without
 * the unsaved fields laid over it. */
static void flush_done(struct state *s, const struct flush *f, int rc)
{
    pthread_mutex_lock(&s->wmu);
    pthread_rwlock_wrlock(&s->lock);
    for (size_t i = 0; i < f->n; i++) {
        struct state_node *sn = state__node(s, f->v[i].id);
        if (!sn || !f->v[i].fields)
            continue;
        if (rc < 0)
            state__writer_queue(s, sn);
        else if (sn->reports == f->reports[i])
            sn->unsaved = 0; /* else the newer report queued it again */
    }
    pthread_rwlock_unlock(&s->lock);
    pthread_mutex_unlock(&s->wmu);
}

static bool failed_log_due(struct state_writer *w)
{
    int64_t now = hs_monotonic_us();
    bool due;

    pthread_mutex_lock(&w->mu);
    due = !w->failed_log_at || now - w->failed_log_at >= WRITE_FAILED_LOG_EVERY_US;
    if (due)
        w->failed_log_at = now;
    pthread_mutex_unlock(&w->mu);
    return due;
}

int state_flush(struct state *s)
{
    struct flush f;
    int rc;

    pthread_mutex_lock(&s->wr.flush_mu);
    flush_take(s, &f);
    rc = store_node_update_many(s->st, f.v, f.n);
    flush_done(s, &f, rc);
    pthread_mutex_unlock(&s->wr.flush_mu);
    if (rc < 0 && failed_log_due(&s->wr))
        log_warnx("state: cannot store what %zu nodes reported: %s; trying again", f.n,
                  hs_strerror(rc));
    flush_free(&f);
    return rc;
}

/* Waits (mu held) until the interval since start has passed, or the writer is stopped; a
 * change of the interval applies to the wait under way. */
static void writer_wait(struct state_writer *w, int64_t start)
{
    while (!w->stop && hs_monotonic_us() < start + w->interval_us)
        hs_cond_wait_until(&w->cond, &w->mu, start + w->interval_us);
}

static void *writer_main(void *arg)
{
    struct state *s = arg;
    struct state_writer *w = &s->wr;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        writer_wait(w, hs_monotonic_us());
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->mu);
        state_flush(s);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void state__writer_start(struct state *s)
{
    if (pthread_create(&s->wr.thread, NULL, writer_main, s) == 0)
        s->wr.running = true;
    else
        log_warnx("state: cannot start the writer thread: reports are stored at exit only");
}

void state__writer_stop(struct state *s)
{
    struct state_writer *w = &s->wr;

    if (w->running) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        w->running = false;
    }
    if (s->st)
        state_flush(s);
    hs_ids_free(&w->queued);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->flush_mu);
}

/* ---- at once ---- */

int state_node_write(struct state *s, uint64_t id, unsigned fields, const struct store_node *v)
{
    return store_node_update(s->st, id, fields, v, NULL);
}

int state_node_delete(struct state *s, uint64_t id)
{
    return store_node_delete(s->st, id);
}

int state_registration_get(struct state *s, const char *id, struct store_registration *out)
{
    return store_registration_get(s->st, id, out);
}

int state_registration_trim(struct state *s, int64_t now, size_t keep)
{
    return store_registration_trim(s->st, now, keep);
}
