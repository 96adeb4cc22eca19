/* mapper: cached zstd frames of runs of consecutive peers, for full maps.
 *
 * Most of a full map is the other nodes' JSON, the same bytes whoever asks. A zstd stream may
 * be several frames one after another (RFC 8878 §3.1; the client's decoder reads them all), so
 * each run of tuning.map_peer_run consecutive nodes (by state index) is compressed once and its frame
 * copied into every full map until a node of the run changes (state_node.version) or the run
 * shifts. The viewer's own run is made of smaller cached spans the same way, so only the
 * viewer's own span and the map's head and tail are compressed per viewer: after a restart,
 * thousands of returning nodes each need a full map of thousands of peers. */
#include <stdlib.h>
#include <string.h>

#include "mapper/mapper_internal.h"

struct mapper_run {
    size_t lo, n;     /* state indexes [lo, lo + n) */
    uint64_t *ver;    /* the n nodes' versions when it was built */
    struct hs_buf z;  /* one zstd frame */
};

static void run_free(struct mapper_run *r)
{
    if (!r)
        return;
    free(r->ver);
    hs_buf_free(&r->z);
    free(r);
}

void mapper__runs_init(struct mapper_runs *c, size_t size)
{
    *c = (struct mapper_runs){ .size = size };
    pthread_mutex_init(&c->mu, NULL);
}

void mapper__runs_free(struct mapper_runs *c)
{
    for (size_t i = 0; i < c->n; i++)
        run_free(c->v[i]);
    free(c->v);
    pthread_mutex_destroy(&c->mu);
    c->v = NULL;
    c->n = 0;
}

/* State read lock held: the nodes cannot change under us. */
static bool run_current(const struct mapper_run *r, struct state *s, size_t lo, size_t n)
{
    if (!r || r->lo != lo || r->n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (state_node_at(s, lo + i)->version != r->ver[i])
            return false;
    return true;
}

/* The run's text: its nodes' peer JSON, each after a comma but the very first node's. */
static struct mapper_run *run_build(struct mapper *m, struct state *s, size_t lo, size_t n,
                                    int64_t now)
{
    struct mapper_run *r = hs_xcalloc(1, sizeof(*r));
    struct hs_buf text;
    int rc = 0;

    r->lo = lo;
    r->n = n;
    r->ver = hs_xcalloc(n, sizeof(*r->ver));
    hs_buf_init(&r->z, MAPPER_MAX_FRAME);
    hs_buf_init(&text, MAPPER_MAX_FRAME);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct state_node *sn = state_node_at(s, lo + i);
        r->ver[i] = sn->version;
        if (lo + i > 0)
            rc = hs_buf_append(&text, ",", 1);
        if (rc == 0)
            rc = hs_buf_puts(&text, mapper__peer_json(m, s, sn, now));
    }
    if (rc == 0)
        rc = mapper__zstd_frame(&r->z, text.data, text.len);
    hs_buf_free(&text);
    if (rc < 0) {
        run_free(r);
        return NULL;
    }
    return r;
}

int mapper__append_run(struct mapper *m, struct mapper_runs *c, struct state *s, size_t lo,
                       size_t n, int64_t now, struct hs_buf *out)
{
    size_t k = lo / c->size;
    struct mapper_run *fresh = NULL, *r;
    int rc;

    pthread_mutex_lock(&c->mu);
    if (k >= c->n || !run_current(c->v[k], s, lo, n)) {
        /* Compress without the lock; another thread may install the same run meanwhile. */
        pthread_mutex_unlock(&c->mu);
        if (!(fresh = run_build(m, s, lo, n, now)))
            return -ENOMEM;
        pthread_mutex_lock(&c->mu);
        if (k >= c->n) {
            c->v = hs_xrealloc(c->v, (k + 1) * sizeof(*c->v));
            memset(c->v + c->n, 0, (k + 1 - c->n) * sizeof(*c->v));
            c->n = k + 1;
        }
        if (!run_current(c->v[k], s, lo, n)) {
            run_free(c->v[k]);
            c->v[k] = fresh;
            fresh = NULL;
        }
    }
    r = c->v[k];
    rc = hs_buf_append(out, r->z.data, r->z.len);
    pthread_mutex_unlock(&c->mu);
    run_free(fresh);
    return rc;
}
