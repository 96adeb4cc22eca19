/* The protocol service: routes requests arriving over Noise to register and map handling,
 * and runs the map thread that batches state changes into deltas, sends keep-alives,
 * answers interactive-login follow-ups and removes idle ephemeral nodes. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "control/service_internal.h"

#define MAP_THREAD_TICK_US (1000 * 1000)
#define TRIM_EVERY_TICKS 60 /* hand freed heap pages back to the system every minute */

static ssize_t idset_find(const struct idset *s, uint64_t id);

void idset_add_fields(struct idset *s, uint64_t id, unsigned fields)
{
    ssize_t i = idset_find(s, id);

    if (i >= 0) {
        s->f[i] |= fields;
        return;
    }
    s->sorted = false;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = hs_xrealloc(s->v, s->cap * sizeof(*s->v));
        s->f = hs_xrealloc(s->f, s->cap * sizeof(*s->f));
    }
    s->v[s->n] = id;
    s->f[s->n++] = fields;
}

void idset_add(struct idset *s, uint64_t id)
{
    idset_add_fields(s, id, 0);
}

static ssize_t idset_find(const struct idset *s, uint64_t id)
{
    if (s->n == 0)
        return -1;
    if (s->sorted) {
        const uint64_t *p = bsearch(&id, s->v, s->n, sizeof(*s->v), hs_u64_cmp);
        return p ? p - s->v : -1;
    }
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == id)
            return (ssize_t)i;
    return -1;
}

bool idset_has(const struct idset *s, uint64_t id)
{
    return idset_find(s, id) >= 0;
}

unsigned idset_fields(const struct idset *s, uint64_t id)
{
    ssize_t i = idset_find(s, id);
    return i >= 0 ? s->f[i] : 0;
}

struct id_fields {
    uint64_t id;
    unsigned f;
};

static int cmp_pair(const void *a, const void *b)
{
    return hs_u64_cmp(&((const struct id_fields *)a)->id, &((const struct id_fields *)b)->id);
}

/* Sorts ids with their fields. */
void idset_sort(struct idset *s)
{
    struct id_fields *p;

    if (s->n > 1) {
        p = hs_xcalloc(s->n, sizeof(*p));
        for (size_t i = 0; i < s->n; i++)
            p[i] = (struct id_fields){ s->v[i], s->f[i] };
        qsort(p, s->n, sizeof(*p), cmp_pair);
        for (size_t i = 0; i < s->n; i++) {
            s->v[i] = p[i].id;
            s->f[i] = p[i].f;
        }
        free(p);
    }
    s->sorted = true;
}

void idset_free(struct idset *s)
{
    free(s->v);
    free(s->f);
    *s = (struct idset){ 0 };
}

void service_reply_json(struct control_service *s, const struct control_request *rq, int status,
                        json_t *body)
{
    char *text = hs_json_dump(body, JSON_COMPACT);
    control_reply(s->ctl, rq->conn_id, rq->stream_id, status, "application/json", text,
                  strlen(text), true);
    free(text);
}

void service_reply_text(struct control_service *s, const struct control_request *rq, int status,
                        const char *text)
{
    control_reply(s->ctl, rq->conn_id, rq->stream_id, status, "text/plain; charset=utf-8",
                  text, strlen(text), true);
}

/* HEAD /machine/ping-response?id=ID over Noise: an HA probe answered (haprobe.c). */
static void ping_response(struct control_service *s, const struct control_request *rq)
{
    const char *q = strchr(rq->path, '?');
    char id[HAPROBE_ID_LEN + 1] = "";

    if (strcmp(rq->method, "HEAD") != 0) {
        service_reply_text(s, rq, 405, "method not allowed\n");
        return;
    }
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 3 && len - 3 <= HAPROBE_ID_LEN && memcmp(p, "id=", 3) == 0)
            hs_strlcpy(id, p + 3, len - 3 + 1);
        p = amp ? amp + 1 : NULL;
    }
    service_reply_text(s, rq, control_service_ping_answered(s, id) ? 200 : 404, "");
}

static void on_request(void *ctx, struct control_request *rq)
{
    struct control_service *s = ctx;
    char err[256];
    json_t *req = NULL;
    bool reg = strcmp(rq->path, "/machine/register") == 0;
    bool map = strcmp(rq->path, "/machine/map") == 0;
    size_t ping_len = strlen("/machine/ping-response");

    if (strncmp(rq->path, "/machine/ping-response", ping_len) == 0 &&
        (rq->path[ping_len] == '?' || rq->path[ping_len] == '\0')) {
        ping_response(s, rq);
        goto out;
    }
    if (!reg && !map) {
        /* Optional endpoints (set-dns, id-token, audit-log, ...): the client carries on. */
        service_reply_text(s, rq, 501, "not implemented\n");
        goto out;
    }
    if (strcmp(rq->method, "POST") != 0) {
        service_reply_text(s, rq, 405, "method not allowed\n");
        goto out;
    }
    if (!(req = hs_json_load(rq->body.data ? rq->body.data : "", rq->body.len,
                             CONTROL_MAX_REQUEST_BODY, err, sizeof(err))) || !json_is_object(req)) {
        log_info("control: conn %llu: %s: bad request body: %s", (unsigned long long)rq->conn_id,
                 rq->path, req ? "not an object" : err);
        service_reply_text(s, rq, 400, "malformed JSON request\n");
        goto out;
    }
    if (json_integer_value(json_object_get(req, "Version")) < CONTROL_MIN_CAPVER) {
        service_reply_text(s, rq, 400, "unsupported client version: Tailscale v1.80 or newer "
                                       "is required\n");
        goto out;
    }
    if (reg)
        register_handle(s, rq, req);
    else
        poll_handle(s, rq, req);
out:
    json_decref(req);
    control_request_free(rq);
}

static void on_stream_closed(void *ctx, uint64_t conn_id, int32_t stream_id)
{
    poll_stream_closed(ctx, conn_id, stream_id);
    register_stream_closed(ctx, conn_id, stream_id);
}

static void *map_thread(void *arg)
{
    struct control_service *s = arg;
    int64_t next_tick = hs_monotonic_us() + MAP_THREAD_TICK_US;
    unsigned ticks = 0;

    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        int64_t now = hs_monotonic_us(), wake = next_tick;

        if (s->batch_due && s->batch_due < wake)
            wake = s->batch_due;
        if (wake > now) {
            hs_cond_wait_until(&s->cond, &s->mu, wake);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        if (s->batch_due && s->batch_due <= now)
            poll_flush_batch(s);
        register_check_followups(s);
        register_sweep(s);
        if (now >= next_tick) {
            next_tick = now + MAP_THREAD_TICK_US;
            poll_keepalives(s);
            poll_gc_ephemeral(s);
            state_check_expiry(s->state, hs_now_us());
            state_sample_online(s->state, hs_now_us());
            state_retry(s->state);
            haprobe_tick(s, now);
            if (++ticks % TRIM_EVERY_TICKS == 0)
                malloc_trim(0);
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Microseconds for the window and the duration (1 ms to 10 s; the window is
 * tuning.batch_change_delay, longer under load); node changes for the size. */
static const int64_t batch_us_bounds[] = { 1000,   5000,   10000,   25000,   50000,  100000,
                                           250000, 500000, 1000000, 2500000, 10000000 };
static const int64_t batch_size_bounds[] = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000 };

static void init_batch_hists(struct control_service *s)
{
    metrics_hist_init(&s->batch_hist[CONTROL_BATCH_WINDOW], batch_us_bounds,
                      HS_ARRAY_LEN(batch_us_bounds));
    metrics_hist_init(&s->batch_hist[CONTROL_BATCH_DURATION], batch_us_bounds,
                      HS_ARRAY_LEN(batch_us_bounds));
    metrics_hist_init(&s->batch_hist[CONTROL_BATCH_SIZE], batch_size_bounds,
                      HS_ARRAY_LEN(batch_size_bounds));
}

int control_service_new(const struct control_service_deps *d, struct control_service **out)
{
    struct control_service *s = hs_xcalloc(1, sizeof(*s));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct control_handlers h = {
        .ctx = s, .request = on_request, .stream_closed = on_stream_closed,
    };

    s->cfg = d->cfg;
    s->auth = d->auth;
    s->state = d->state;
    s->mapper = d->mapper;
    s->reglimit = control__reglimit_new((unsigned)d->cfg->tuning_register_rate_limit,
                                        60 * HS_USEC_PER_SEC, REGLIMIT_SOURCES);
    s->regturnover = control__reglimit_new((unsigned)d->cfg->tuning_register_cache_max_entries,
                                           d->cfg->tuning_register_cache_expiration_us, 1);
    pthread_mutex_init(&s->mu, NULL);
    init_batch_hists(s);
    hs_cond_init_monotonic(&s->cond);
    haprobe_init(&s->probe);
    /* Asked once: sysconf reads /sys each time, and batches come many times a second. */
    s->cores = cores > 1 ? (size_t)cores : 1;
    s->ctl = control_new(d->noise_key, &h, 4);
    control_set_limits(s->ctl, &(struct control_limits){
        .handshakes_per_minute = (unsigned)d->cfg->tuning_handshake_rate_limit,
        .body_bytes = (size_t)d->cfg->tuning_control_max_body_buffer_mib << 20,
    });
    state_listen(s->state, poll_on_state_change, s);
    *out = s;
    return 0;
}

int control_service_start(struct control_service *s)
{
    int rc = control_start(s->ctl);
    if (rc < 0)
        return rc;
    if (pthread_create(&s->thread, NULL, map_thread, s) != 0)
        return -EAGAIN;
    pthread_setname_np(s->thread, "hs-map"); /* shows in top -H, perf, gdb */
    s->thread_started = true;
    return 0;
}

void control_service_get_stats(struct control_service *s, struct control_service_stats *out)
{
    uint64_t n = 0;

    pthread_mutex_lock(&s->mu);
    for (const struct session *x = s->sessions; x; x = x->next)
        n++;
    pthread_mutex_unlock(&s->mu);
    out->sessions = n;
    for (int k = 0; k < CONTROL_MAP_KINDS; k++) {
        out->sent[k] = __atomic_load_n(&s->stats.sent[k], __ATOMIC_RELAXED);
        out->sent_bytes[k] = __atomic_load_n(&s->stats.sent_bytes[k], __ATOMIC_RELAXED);
    }
    out->sessions_ended = __atomic_load_n(&s->stats.sessions_ended, __ATOMIC_RELAXED);
    out->sessions_cancelled = __atomic_load_n(&s->stats.sessions_cancelled, __ATOMIC_RELAXED);
    out->lite_updates = __atomic_load_n(&s->stats.lite_updates, __ATOMIC_RELAXED);
}

static struct control_session_info session_info(const struct session *x)
{
    return (struct control_session_info){
        .node_id = x->node_id, .conn_id = x->conn_id, .stream_id = x->stream_id,
        .opened_at = x->opened_at, .capver = x->capver, .zstd = x->zstd,
        .messages = __atomic_load_n(&x->sent_msgs, __ATOMIC_RELAXED),
        .bytes = __atomic_load_n(&x->sent_bytes, __ATOMIC_RELAXED),
        .last_kind = __atomic_load_n(&x->last_kind, __ATOMIC_RELAXED) - 1,
    };
}

size_t control_service_sessions(struct control_service *s, uint64_t node_id,
                                struct control_session_info **out)
{
    struct control_session_info *v = NULL;
    size_t n = 0, cap = 0;

    pthread_mutex_lock(&s->mu);
    for (const struct session *x = s->sessions; x; x = x->next) {
        if (node_id && x->node_id != node_id)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            v = hs_xrealloc(v, cap * sizeof(*v));
        }
        v[n++] = session_info(x);
    }
    pthread_mutex_unlock(&s->mu);
    *out = v;
    return n;
}

const struct metrics_hist *control_service_batch_hist(struct control_service *s,
                                                      enum control_batch_hist which)
{
    return &s->batch_hist[which];
}

struct control *control_service_control(struct control_service *s)
{
    return s->ctl;
}

void control_service_free(struct control_service *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    bool started = s->thread_started;
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    if (started)
        pthread_join(s->thread, NULL);
    control_free(s->ctl); /* closes streams: poll_stream_closed may run, sessions get freed */
    while (s->sessions) {
        struct session *x = s->sessions;
        s->sessions = x->next;
        poll_session_free(x);
    }
    while (s->dead) {
        struct session *x = s->dead;
        s->dead = x->next;
        poll_session_free(x);
    }
    while (s->followups) {
        struct followup *f = s->followups;
        s->followups = f->next;
        free(f);
    }
    idset_free(&s->changed);
    idset_free(&s->patched);
    idset_free(&s->removed);
    idset_free(&s->online);
    free(s->ended);
    control__reglimit_free(s->reglimit);
    control__reglimit_free(s->regturnover);
    haprobe_free(&s->probe);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
}
