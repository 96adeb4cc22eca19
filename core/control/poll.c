/* POST /machine/map: lite updates (endpoints, Hostinfo, disco key), one-shot maps, and
 * streaming polls. A stream gets a full map at once, then deltas: state changes are collected
 * for tuning.batch_change_delay and turned into one message per session by the map thread,
 * plus keep-alives well inside the client's 120 s watchdog. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/service_internal.h"

#define BATCH_DELAY_DEFAULT_US (20 * 1000)
#define BATCH_DELAY_MAX_US (250 * 1000)
/* A batch that ended longer ago than this no longer stretches the next one's wait. */
#define BATCH_BUSY_US HS_USEC_PER_SEC
/* From this many node changes a second on, changes come in a herd: every session then gets
 * one delta a second instead of one every few tens of milliseconds. Each message costs the
 * server a write per session and every client a decode, whatever its size; at thousands of
 * sessions the message count, not the bytes, is what a herd costs. A lone change still goes
 * out after tuning.batch_change_delay. */
#define HERD_CHANGES_PER_S 20
#define HERD_DELAY_US HS_USEC_PER_SEC
#define KEEPALIVE_DEFAULT_US (50 * HS_USEC_PER_SEC)
/* The longest a full map waits for the clients to catch up on reading (control.h). */
#define POLL_BACKLOG_WAIT_US (2 * HS_USEC_PER_SEC)

static int64_t keepalive_interval(const struct control_service *s)
{
    int64_t base = s->cfg->tuning_keepalive_interval_us ? s->cfg->tuning_keepalive_interval_us
                                                        : KEEPALIVE_DEFAULT_US;
    /* Up to 1/6 jitter so thousands of streams don't wake together. */
    return base + (int64_t)(random() % (base / 6 + 1));
}

/* Queues one encoded message on a stream; the first one also sends the headers. A message
 * of one node's own is taken (enc is left empty), one shared by several is copied. */
static void session_write(struct control_service *s, uint64_t conn_id, int32_t stream_id,
                          struct hs_buf *enc, bool first, bool end, bool shared)
{
    if (first && shared)
        control_reply(s->ctl, conn_id, stream_id, 200, "application/json", enc->data,
                      enc->len, end);
    else if (first)
        control_reply_buf(s->ctl, conn_id, stream_id, 200, "application/json", enc, end);
    else if (shared)
        control_stream_write(s->ctl, conn_id, stream_id, enc->data, enc->len);
    else
        control_stream_write_buf(s->ctl, conn_id, stream_id, enc);
}

static void encode_failed(struct control_service *s, uint64_t conn_id)
{
    log_warnx("control: cannot encode a map response for conn %llu",
              (unsigned long long)conn_id);
    control_close_conn(s->ctl, conn_id);
}

/* Builds and sends the full map under the state read lock; -ENOENT if the node is gone.
 * net: the compiled policy to build it under (NULL: the current one). told (may be NULL) gets
 * what the map told about the policy, its net referenced when it was given, else unpinned
 * (only its generation kept). */
static int send_full_map(struct control_service *s, struct session *x, uint64_t conn_id,
                         int32_t stream_id, uint64_t node_id, bool zstd, bool first, bool end,
                         struct state_net *net, struct mapper_policy_state *told)
{
    struct mapper_policy_state t = { 0 };
    struct hs_buf out;
    int rc;

    hs_buf_init(&out, MAPPER_MAX_FRAME + 8);
    state_rdlock(s->state);
    rc = mapper_full_encoded(s->mapper, s->state, node_id, hs_now_us(), net, zstd, &out, &t);
    state_unlock(s->state);
    if (rc == 0 && told) {
        t.net = net;
        if (net)
            state_net_ref(net);
        *told = t;
    }
    if (rc == 0) {
        service_sent(s, x, CONTROL_MAP_FULL, out.len); /* before the client can have it */
        session_write(s, conn_id, stream_id, &out, first, end, false);
    } else if (rc != -ENOENT)
        encode_failed(s, conn_id);
    hs_buf_free(&out);
    return rc;
}

static bool node_expired(int64_t expiry)
{
    return expiry && expiry <= hs_now_us();
}

/* What a map request needs of its node, copied out of the state under its read lock: the
 * lock is not held across the store write and the reply that follow. */
struct poll_node {
    uint64_t id;
    uint8_t disco_key[32];
    int64_t expiry;
    char *hostinfo_json, *endpoints_json; /* owned; NULL as in struct store_node */
};

/* The node with this node key, from the state (no SQL on the map path): 404 when there is
 * none, 401 when it belongs to another machine, else 0 and *out filled. The store publishes
 * each commit to the bus on the writer's thread before its call returns, and the state
 * applies it there, so a node registered (or a key rotated) before its client's map request
 * is in the state when that request comes: no fallback to the store is needed. */
static int poll_node_find(struct control_service *s, const uint8_t node_key[32],
                          const uint8_t machine_key[32], struct poll_node *out)
{
    const struct state_node *sn;
    int status = 0;

    state_rdlock(s->state);
    sn = state_node_by_nodekey(s->state, node_key);
    if (!sn)
        status = 404;
    else if (memcmp(sn->n.machine_key, machine_key, 32) != 0)
        status = 401;
    if (status == 0) {
        out->id = sn->n.id;
        memcpy(out->disco_key, sn->n.disco_key, 32);
        out->expiry = sn->n.expiry;
        out->hostinfo_json = hs_strdup(sn->n.hostinfo_json);
        out->endpoints_json = hs_strdup(sn->n.endpoints_json);
    }
    state_unlock(s->state);
    return status;
}

static void poll_node_free(struct poll_node *n)
{
    free(n->hostinfo_json);
    free(n->endpoints_json);
}

/* The Hostinfo to store: NULL to keep the stored one (none sent, or one over the limit,
 * which is logged now and then: the rest of the request still counts). */
static char *hostinfo_update(struct control_service *s, const struct poll_node *n, json_t *hi)
{
    char *text = NULL;
    size_t len = 0;

    if (!json_is_object(hi) || control__hostinfo_text(hi, &text, &len) == 0)
        return text;
    if (control__log_due(&s->log_refused_at))
        log_info("control: node %llu: Hostinfo of %zu bytes ignored (limit %u)",
                 (unsigned long long)n->id, len, CONTROL_HOSTINFO_MAX);
    return NULL;
}

/* Hands the state what the client reports, when it differs from what we have, within the
 * limits of what a node may make its peers carry (CONTROL_HOSTINFO_MAX,
 * CONTROL_ENDPOINTS_MAX): peers hear it at once, the store gets it from the state's writer.
 * An expired node's reports are not taken: its peers must not learn where it is now. */
static void update_node_info(struct control_service *s, const struct poll_node *n, json_t *req,
                             const uint8_t disco[32])
{
    struct store_node v = { 0 };
    json_t *hi = json_object_get(req, "Hostinfo"), *ep = json_object_get(req, "Endpoints");
    unsigned fields = 0;
    char *hi_text, *ep_text;

    if (node_expired(n->expiry))
        return;
    hi_text = hostinfo_update(s, n, hi);
    ep_text = json_is_array(ep) ? control__endpoints_text(ep, NULL) : NULL;
    memcpy(v.disco_key, disco, 32);
    if (memcmp(n->disco_key, disco, 32) != 0)
        fields |= STORE_NODE_BIT(STORE_NODE_DISCO_KEY);
    if (hi_text && !hs_streq(hi_text, n->hostinfo_json)) {
        v.hostinfo_json = hi_text;
        v.hostname = (char *)hs_json_str(hi, "Hostname");
        fields |= STORE_NODE_BIT(STORE_NODE_HOSTINFO) | STORE_NODE_BIT(STORE_NODE_HOSTNAME);
    }
    if (ep_text && !hs_streq(ep_text, n->endpoints_json)) {
        v.endpoints_json = ep_text;
        fields |= STORE_NODE_BIT(STORE_NODE_ENDPOINTS);
    }
    if (fields)
        state_node_report(s->state, n->id, fields, &v); /* -ENOENT: removed meanwhile */
    free(hi_text);
    free(ep_text);
}

/* Whether the node of a map session has its key expired: it is then told nothing about its
 * peers (mapper: its full maps list none) until it logs in again or an admin extends it. */
static bool session_expired(struct control_service *s, uint64_t node_id)
{
    const struct state_node *sn;
    bool expired;

    state_rdlock(s->state);
    sn = state_node_by_id(s->state, node_id);
    expired = sn && node_expired(sn->n.expiry);
    state_unlock(s->state);
    return expired;
}

/* Recorded at connect and disconnect; peers learn it only when the node goes offline. */
static void touch_last_seen(struct control_service *s, uint64_t node_id)
{
    state_node_seen(s->state, node_id, hs_now_us());
}

void poll_session_free(struct session *x)
{
    if (!x)
        return;
    state_net_unref(x->told.net);
    free(x);
}

/* After the first map: the session is the map thread's from now on, or, if its stream
 * closed meanwhile, gone. */
static bool session_opened(struct control_service *s, struct session *x,
                           const struct mapper_policy_state *told)
{
    bool closed;

    pthread_mutex_lock(&s->mu);
    closed = x->closed;
    x->told = *told;
    x->opening = false;
    pthread_mutex_unlock(&s->mu);
    if (closed)
        poll_session_free(x);
    return !closed;
}

static void session_open(struct control_service *s, const struct control_request *rq,
                         uint64_t node_id, bool zstd, uint16_t capver)
{
    struct session *x = hs_xcalloc(1, sizeof(*x));
    struct mapper_policy_state told = { 0 };
    int rc;

    x->conn_id = rq->conn_id;
    x->stream_id = rq->stream_id;
    x->node_id = node_id;
    x->zstd = zstd;
    x->capver = capver;
    x->opening = true;
    x->next_keepalive = hs_monotonic_us() + keepalive_interval(s);
    x->opened_at = hs_now_us();
    /* Register before sending: a change racing with the first map then arrives as a delta.
     * The node is online from here on, before its first map: a close right after that map
     * must find the session counted, or it would leave the node online for good. */
    pthread_mutex_lock(&s->mu);
    x->next = s->sessions;
    s->sessions = x;
    pthread_mutex_unlock(&s->mu);
    state_node_session(s->state, node_id, true, capver);
    rc = send_full_map(s, x, rq->conn_id, rq->stream_id, node_id, zstd, true, false, NULL,
                       &told);
    if (rc == -ENOENT)
        control_reply(s->ctl, rq->conn_id, rq->stream_id, 404, "text/plain", "node gone\n", 10,
                      true); /* the stream's close removes the session */
    if (!session_opened(s, x, &told) || rc < 0)
        return;
    touch_last_seen(s, node_id);
}

void poll_handle(struct control_service *s, struct control_request *rq, json_t *req)
{
    uint8_t node_key[32], disco[32] = { 0 };
    const char *nk = hs_json_str(req, "NodeKey"), *dk = hs_json_str(req, "DiscoKey");
    bool stream = json_is_true(json_object_get(req, "Stream"));
    bool omit_peers = json_is_true(json_object_get(req, "OmitPeers"));
    bool zstd = hs_streq(hs_json_str(req, "Compress"), "zstd");
    uint16_t capver = (uint16_t)json_integer_value(json_object_get(req, "Version"));
    struct poll_node n = { 0 };

    if (keys_parse("nodekey:", nk, node_key) < 0 || (dk && *dk &&
                                                     keys_parse("discokey:", dk, disco) < 0)) {
        service_reply_text(s, rq, 400, "malformed MapRequest\n");
        return;
    }
    switch (poll_node_find(s, node_key, rq->machine_key, &n)) {
    case 404: service_reply_text(s, rq, 404, "node not found\n"); return;
    case 401: service_reply_text(s, rq, 401, "node key belongs to another machine\n"); return;
    default: break;
    }
    if (!dk || !*dk)
        memcpy(disco, n.disco_key, 32);
    update_node_info(s, &n, req, disco);
    if (stream || !omit_peers) /* a full map follows: not while clients are behind reading */
        control_wait_backlog(s->ctl, POLL_BACKLOG_WAIT_US);
    if (stream) {
        session_open(s, rq, n.id, zstd, capver);
    } else if (omit_peers) {
        SERVICE_COUNT(s->stats.lite_updates, 1); /* before the client can have the answer */
        control_reply(s->ctl, rq->conn_id, rq->stream_id, 200, "application/json", "", 0, true);
    } else if (send_full_map(s, NULL, rq->conn_id, rq->stream_id, n.id, zstd, true, true, NULL,
                             NULL) < 0) {
        service_reply_text(s, rq, 404, "node not found\n");
    }
    poll_node_free(&n);
}

/* Loop thread: keep it short. The session's end is told to the state on the map thread. */
void poll_stream_closed(struct control_service *s, uint64_t conn_id, int32_t stream_id)
{
    struct session **pp, *x;

    pthread_mutex_lock(&s->mu);
    for (pp = &s->sessions; (x = *pp); pp = &x->next) {
        if (x->conn_id == conn_id && x->stream_id == stream_id) {
            *pp = x->next;
            if (s->nended == s->capended) {
                s->capended = s->capended ? 2 * s->capended : 64;
                s->ended = hs_xrealloc(s->ended, s->capended * sizeof(*s->ended));
            }
            s->ended[s->nended++] = x->node_id;
            if (x->cancelled)
                SERVICE_COUNT(s->stats.sessions_cancelled, 1);
            else
                SERVICE_COUNT(s->stats.sessions_ended, 1);
            if (x->opening) {
                x->closed = true; /* session_open frees it */
            } else {
                x->next = s->dead;
                s->dead = x;
            }
            if (!s->batch_due)
                s->batch_due = hs_monotonic_us();
            pthread_cond_signal(&s->cond);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* Under mu: counts a change; whether changes are coming in a herd. */
static bool herd_count(struct control_service *s, int64_t now)
{
    if (now - s->rate_since >= HS_USEC_PER_SEC) {
        s->rate_prev = now - s->rate_since < 2 * HS_USEC_PER_SEC ? s->rate_now : 0;
        s->rate_now = 0;
        s->rate_since = now;
    }
    s->rate_now++;
    return s->rate_now >= HERD_CHANGES_PER_S || s->rate_prev >= HERD_CHANGES_PER_S;
}

/* Any thread (the store writer's, after commit): collect, let the map thread batch. */
void poll_on_state_change(void *arg, const struct state_change *ch)
{
    struct control_service *s = arg;
    int64_t delay = s->cfg->tuning_batch_change_delay_us ? s->cfg->tuning_batch_change_delay_us
                                                         : BATCH_DELAY_DEFAULT_US;
    int64_t now = hs_monotonic_us();

    if (ch->kind == STATE_NODE_HERE)
        return; /* for the presence of other replicas; peers hear STATE_NODE_ONLINE */
    pthread_mutex_lock(&s->mu);
    /* Under load a batch takes long to write out; wait as long as the last one took, so each
     * session gets one larger delta instead of a queue of small ones; in a herd, a second.
     * A long batch that ended a while ago says nothing about load now: the first change after
     * a quiet spell goes out at once. */
    if (s->last_batch_us > delay && now - s->last_batch_end < BATCH_BUSY_US)
        delay = s->last_batch_us < BATCH_DELAY_MAX_US ? s->last_batch_us : BATCH_DELAY_MAX_US;
    if (herd_count(s, now) && delay < HERD_DELAY_US)
        delay = HERD_DELAY_US;
    switch (ch->kind) {
    case STATE_NODE_ADDED: idset_add_fields(&s->changed, ch->id, STATE_F_OTHER); break;
    case STATE_NODE_CHANGED:
        /* Endpoints, keys and home region travel as a small patch; anything else as the
         * whole node. */
        if (ch->fields & ~STATE_F_PATCHABLE)
            idset_add_fields(&s->changed, ch->id, ch->fields);
        else
            idset_add_fields(&s->patched, ch->id, ch->fields);
        break;
    case STATE_NODE_REMOVED: idset_add(&s->removed, ch->id); break;
    case STATE_NODE_ONLINE: idset_add(&s->online, ch->id); break;
    case STATE_REGISTRATION_CHANGED: s->registrations_changed = true; break;
    /* Sessions compare the compiled policy they were told about with the current one: a
     * batch with no lists still tells each what changed for it. */
    case STATE_POLICY_CHANGED: break;
    case STATE_DNS_CHANGED: s->dns_for_all = true; break;
    default: s->full_for_all = true; break; /* a user's profile or name */
    }
    /* 0.22 naming: a node coming, going or moving between users may change which user
     * domains its peers route to MagicDNS. */
    if (mapper_dns_per_user(s->mapper) &&
        (ch->kind == STATE_NODE_ADDED || ch->kind == STATE_NODE_REMOVED ||
         (ch->kind == STATE_NODE_CHANGED && (ch->fields & STATE_F_OTHER))))
        s->dns_for_all = true;
    /* nodeAttrs may pick another NextDNS profile or stop the device info (headscale sends
     * DNSConfig with every policy change) */
    if (ch->kind == STATE_POLICY_CHANGED && mapper_dns_has_nextdns(s->mapper, s->state))
        s->dns_for_all = true;
    if (!s->batch_due)
        s->batch_due = now + delay;
    if (!s->batch_first)
        s->batch_first = now;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* The changes of one batch, and the compiled policy they are told under (the current one
 * when the batch began; referenced). */
struct batch {
    struct idset changed, patched, removed, online;
    bool full;
    bool dns; /* the DNS configuration changed: a DNSConfig for everyone not sent a full map */
    struct state_net *net;
};

static struct mapper_changes batch_changes(const struct batch *b)
{
    return (struct mapper_changes){
        .changed = b->changed.v, .nchanged = b->changed.n,
        .patched = b->patched.v, .patched_fields = b->patched.f, .npatched = b->patched.n,
        .removed = b->removed.v, .nremoved = b->removed.n,
        .online = b->online.v, .nonline = b->online.n,
    };
}

/* Snapshot of the sessions to write to, taken under the lock. x is NULL for a session whose
 * first map is still being sent: its `told` is not the batch's to update. */
struct target {
    uint64_t conn_id, node_id;
    int32_t stream_id;
    bool zstd;
    struct session *x;
    struct mapper_policy_state told; /* net borrowed from the session */
};

static struct target *snapshot_sessions(struct control_service *s, size_t *n)
{
    struct target *t;
    size_t i = 0;

    for (struct session *x = s->sessions; x; x = x->next)
        i++;
    t = hs_xcalloc(i ? i : 1, sizeof(*t));
    *n = i;
    i = 0;
    for (struct session *x = s->sessions; x; x = x->next, i++) {
        t[i] = (struct target){ x->conn_id, x->node_id, x->stream_id, x->zstd,
                                x->opening ? NULL : x, x->opening ? (struct mapper_policy_state){ 0 }
                                                                  : x->told };
    }
    return t;
}

/* Map thread: what the node has now been told replaces what it had. Takes the reference to
 * told->net the caller took. */
static void session_told(struct control_service *s, const struct target *t,
                         const struct mapper_policy_state *told)
{
    struct state_net *old;

    if (!t->x) { /* still opening: its first map will say what it was told */
        state_net_unref(told->net);
        return;
    }
    pthread_mutex_lock(&s->mu);
    old = t->x->told.net;
    t->x->told = *told;
    pthread_mutex_unlock(&s->mu);
    state_net_unref(old);
}

/* One entry per closed session (a node may have had several). */
static void sessions_ended(struct control_service *s, const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        touch_last_seen(s, ids[i]);
        state_node_session(s->state, ids[i], false, 0);
    }
}

/* Map thread: we end the stream (headscale counts such an end as "cancelled"). */
static void session_cancel(struct control_service *s, const struct target *t)
{
    pthread_mutex_lock(&s->mu);
    for (struct session *x = s->sessions; x; x = x->next)
        if (x->conn_id == t->conn_id && x->stream_id == t->stream_id)
            x->cancelled = true;
    pthread_mutex_unlock(&s->mu);
    control_stream_end(s->ctl, t->conn_id, t->stream_id);
}

static bool batch_mentions(const struct batch *b, uint64_t id)
{
    return idset_has(&b->changed, id) || idset_has(&b->patched, id) ||
           idset_has(&b->removed, id) || idset_has(&b->online, id);
}

/* Deltas that several sessions share, built and encoded once: the batch as it is for nodes
 * that see everyone (`generic`), and one per distinct plan otherwise (mapper_plan_same). */
struct shared {
    uint64_t hash;
    struct mapper_plan plan;
    bool built;
    json_t *msg;              /* NULL: nothing to send */
    struct hs_buf enc[2];     /* by zstd; filled on first use */
};

struct share_table {
    struct shared *v;
    size_t n, cap;
};

#define SHARE_MAX 1024 /* distinct plans kept per batch; past that, deltas are built per node */

static void shared_init(struct shared *e)
{
    memset(e, 0, sizeof(*e));
    hs_buf_init(&e->enc[0], MAPPER_MAX_FRAME + 8);
    hs_buf_init(&e->enc[1], MAPPER_MAX_FRAME + 8);
}

static void shared_fini(struct shared *e)
{
    mapper_plan_free(&e->plan);
    json_decref(e->msg);
    hs_buf_free(&e->enc[0]);
    hs_buf_free(&e->enc[1]);
}

static void share_table_free(struct share_table *tb)
{
    for (size_t i = 0; i < tb->n; i++)
        shared_fini(&tb->v[i]);
    free(tb->v);
}

/* Read lock held. The entry for plan p, built if new (takes p's lists then); NULL when the
 * table is full. It is built as nobody's view, unless the routers it sends whole give its
 * nodes other routes than their default (p->views): then as the first one's, which every
 * node sharing the plan sees alike. */
static struct shared *share_get(struct control_service *s, struct share_table *tb,
                                struct mapper_plan *p, uint64_t viewer)
{
    uint64_t h = mapper_plan_hash(p);
    struct shared *e;

    for (size_t i = 0; i < tb->n; i++)
        if (tb->v[i].hash == h && mapper_plan_same(&tb->v[i].plan, p))
            return &tb->v[i];
    if (tb->n == SHARE_MAX)
        return NULL;
    if (tb->n == tb->cap) {
        tb->cap = tb->cap ? 2 * tb->cap : 16;
        tb->v = hs_xrealloc(tb->v, tb->cap * sizeof(*tb->v));
    }
    e = &tb->v[tb->n++];
    shared_init(e);
    e->hash = h;
    e->built = true;
    e->msg = mapper_plan_delta(s->mapper, s->state, p->views ? viewer : 0, p, hs_now_us());
    e->plan = *p;
    p->changed = p->patched = p->removed = p->online = (struct mapper_ids){ 0 };
    return e;
}

static void send_shared(struct control_service *s, const struct target *t, struct shared *e)
{
    struct hs_buf *enc = &e->enc[t->zstd];

    if (!e->msg)
        return;
    if (enc->len == 0 && mapper_encode(e->msg, t->zstd, enc) < 0)
        return;
    service_sent(s, t->x, CONTROL_MAP_DELTA, enc->len);
    control_stream_write(s->ctl, t->conn_id, t->stream_id, enc->data, enc->len);
}

/* What the node was told is the batch's net (pinned, or its generation). */
static bool told_batch_net(const struct target *t, const struct batch *b)
{
    return t->told.net == b->net || (!t->told.net && t->told.gen == state_net_gen(b->net));
}

/* The node was told about the batch's net, sees everyone in it, and nothing in the batch is
 * about it: the generic delta is its. */
static bool sees_batch_whole(const struct target *t, const struct batch *b)
{
    return told_batch_net(t, b) && b->removed.n == 0 && !batch_mentions(b, t->node_id) &&
           mapper_sees_everyone(b->net, t->node_id);
}

static bool told_same(const struct mapper_policy_state *a, const struct mapper_policy_state *b)
{
    return a->net == b->net && a->gen == b->gen && a->filter == b->filter && a->ssh == b->ssh &&
           a->capmap == b->capmap;
}

/* One session's delta: shared when it can be, else its own. */
static void send_delta(struct control_service *s, const struct batch *b, const struct target *t,
                       struct share_table *tb, struct shared *generic)
{
    struct mapper_changes ch = batch_changes(b);
    struct mapper_policy_state told = t->told;
    struct mapper_plan p;
    struct shared *e = NULL;
    struct hs_buf own;
    int rc = -ENODATA;

    hs_buf_init(&own, MAPPER_MAX_FRAME + 8);
    state_rdlock(s->state);
    if (sees_batch_whole(t, b)) {
        if (!generic->built) {
            generic->built = true;
            generic->msg = mapper_delta(s->mapper, s->state, 0, &ch, hs_now_us());
        }
        e = generic;
    } else if (mapper_plan(s->mapper, s->state, t->node_id, &ch, &t->told, b->net, &p) == 0) {
        told = p.told;
        /* A node the batch names gets lists without itself: a plan of its own, not worth
         * keeping for others (at thousands of new nodes a second, that memory adds up). */
        if (!mapper_plan_empty(&p) &&
            (!mapper_plan_shareable(&p) || batch_mentions(b, t->node_id) ||
             !(e = share_get(s, tb, &p, t->node_id))))
            rc = mapper_plan_encoded(s->mapper, s->state, t->node_id, &p, hs_now_us(),
                                     t->zstd, &own);
        mapper_plan_free(&p);
    }
    state_unlock(s->state);
    if (e)
        send_shared(s, t, e);
    else if (rc == 0) {
        service_sent(s, t->x, CONTROL_MAP_DELTA, own.len);
        session_write(s, t->conn_id, t->stream_id, &own, false, false, false);
    } else if (rc != -ENODATA)
        encode_failed(s, t->conn_id);
    hs_buf_free(&own);
    /* It now knows the batch's net: pin that (an unpinned generation that is the batch's
     * counts as it). Either net is alive here: the session's, or the batch's. */
    if (!told.net && told.gen && told.gen == state_net_gen(b->net))
        told.net = b->net;
    if (told_same(&told, &t->told))
        return;
    if (told.net)
        state_net_ref(told.net);
    session_told(s, t, &told);
}

/* The DNSConfig message for one session. The same for every node unless it names users (the
 * 0.22 layout) or NextDNS device info: then each its own. shared[zstd] keeps the common one
 * encoded for the batch. */
static void send_dns(struct control_service *s, const struct target *t, struct hs_buf shared[2])
{
    bool same = !mapper_dns_per_user(s->mapper) && !mapper_dns_has_nextdns(s->mapper, s->state);
    struct hs_buf own, *enc = same ? &shared[t->zstd] : &own;
    json_t *msg = NULL;
    int rc = 0;

    hs_buf_init(&own, MAPPER_MAX_FRAME + 8);
    if (enc->len == 0) {
        state_rdlock(s->state);
        msg = mapper_dns_update(s->mapper, s->state, t->node_id);
        state_unlock(s->state);
        rc = msg ? mapper_encode(msg, t->zstd, enc) : -ENOENT;
    }
    if (rc == 0) {
        service_sent(s, t->x, CONTROL_MAP_DELTA, enc->len);
        session_write(s, t->conn_id, t->stream_id, enc, false, false, enc != &own);
    } else if (rc != -ENOENT)
        encode_failed(s, t->conn_id);
    json_decref(msg);
    hs_buf_free(&own);
}

static void send_batch(struct control_service *s, const struct batch *b, const struct target *t,
                       size_t n)
{
    struct share_table tb = { 0 };
    struct shared generic;
    struct hs_buf dns[2];

    shared_init(&generic);
    hs_buf_init(&dns[0], MAPPER_MAX_FRAME + 8);
    hs_buf_init(&dns[1], MAPPER_MAX_FRAME + 8);
    for (size_t i = 0; i < n; i++) {
        struct mapper_policy_state told = { 0 };
        if (idset_has(&b->removed, t[i].node_id)) {
            session_cancel(s, &t[i]); /* deleted: log it out */
            continue;
        }
        /* Its own node changed, or everything did: a full map. A patch of its own endpoints
         * or keys tells a node nothing it does not know. So does a node whose first map came
         * from a compiled policy older than the batch's, which it no longer pins. */
        if (b->full || (idset_fields(&b->changed, t[i].node_id) & ~STATE_F_SELF_REPORTED) ||
            (t[i].x && !t[i].told.net && !told_batch_net(&t[i], b))) {
            if (send_full_map(s, t[i].x, t[i].conn_id, t[i].stream_id, t[i].node_id, t[i].zstd,
                              false, false, b->net, &told) == 0)
                session_told(s, &t[i], &told);
            continue;
        }
        if (session_expired(s, t[i].node_id)) /* its full maps are all an expired node gets */
            continue;
        if (b->dns)
            send_dns(s, &t[i], dns);
        send_delta(s, b, &t[i], &tb, &generic);
    }
    shared_fini(&generic);
    share_table_free(&tb);
    hs_buf_free(&dns[0]);
    hs_buf_free(&dns[1]);
}

/* A batch is shared among threads, one per core (up to BATCH_THREADS_MAX) with at least
 * BATCH_SPLIT_MIN sessions each: after a policy change every node gets a delta of its own,
 * thousands of them, each a plan and a compression. Starting a thread costs about as much
 * as one small delta. */
#define BATCH_SPLIT_MIN 8
#define BATCH_THREADS_MAX 8

struct batch_share {
    struct control_service *s;
    const struct batch *b;
    const struct target *t;
    size_t n;
};

static void *batch_share_run(void *arg)
{
    struct batch_share *p = arg;

    send_batch(p->s, p->b, p->t, p->n);
    return NULL;
}

/* send_batch over the targets in contiguous shares, the first on this thread. Each share
 * has its own table of shared deltas: alike nodes in two shares cost two builds, not a
 * lock per node. */
static void send_batch_split(struct control_service *s, const struct batch *b,
                             const struct target *t, size_t n)
{
    size_t k = s->cores, started = 0, each;
    struct batch_share share[BATCH_THREADS_MAX];
    pthread_t th[BATCH_THREADS_MAX];
    bool running[BATCH_THREADS_MAX] = { false };

    if (k > BATCH_THREADS_MAX)
        k = BATCH_THREADS_MAX;
    if (k > n / BATCH_SPLIT_MIN)
        k = n / BATCH_SPLIT_MIN;
    if (k < 2) {
        send_batch(s, b, t, n);
        return;
    }
    each = (n + k - 1) / k;
    for (size_t i = 0; i < k; i++, started += each)
        share[i] = (struct batch_share){ s, b, t + started,
                                         n - started < each ? n - started : each };
    for (size_t i = 1; i < k; i++)
        running[i] = pthread_create(&th[i], NULL, batch_share_run, &share[i]) == 0;
    send_batch(s, b, share[0].t, share[0].n);
    for (size_t i = 1; i < k; i++) {
        if (running[i])
            pthread_join(th[i], NULL);
        else /* no thread to be had: this one does it */
            send_batch(s, b, share[i].t, share[i].n);
    }
}

/* Map thread: sessions closed since the last batch (none of them is in a snapshot now). */
static void free_dead(struct control_service *s)
{
    struct session *dead;

    pthread_mutex_lock(&s->mu);
    dead = s->dead;
    s->dead = NULL;
    pthread_mutex_unlock(&s->mu);
    while (dead) {
        struct session *x = dead;
        dead = x->next;
        poll_session_free(x);
    }
}

void poll_flush_batch(struct control_service *s)
{
    struct batch b = { 0 };
    struct idset patched;
    uint64_t *ended;
    size_t nended;
    int64_t started, first;
    struct target *t;
    size_t n;

    free_dead(s);
    pthread_mutex_lock(&s->mu);
    b.changed = s->changed;
    patched = s->patched;
    b.removed = s->removed;
    b.online = s->online;
    ended = s->ended;
    nended = s->nended;
    s->ended = NULL;
    s->nended = s->capended = 0;
    b.full = s->full_for_all;
    b.dns = s->dns_for_all;
    s->changed = s->patched = s->removed = s->online = (struct idset){ 0 };
    s->full_for_all = s->dns_for_all = false;
    s->batch_due = 0;
    first = s->batch_first;
    s->batch_first = 0;
    t = snapshot_sessions(s, &n);
    pthread_mutex_unlock(&s->mu);
    state_rdlock(s->state);
    b.net = state_net_current(s->state);
    state_net_ref(b.net);
    state_unlock(s->state);
    /* A node that also changed otherwise goes out whole; no need to patch it too. */
    for (size_t i = 0; i < patched.n; i++)
        if (!idset_has(&b.changed, patched.v[i]))
            idset_add_fields(&b.patched, patched.v[i], patched.f[i]);
    idset_free(&patched);

    /* Going offline changes state, which queues the next batch for the peers. */
    started = hs_monotonic_us();
    if (first)
        metrics_hist_observe(&s->batch_hist[CONTROL_BATCH_WINDOW], started - first);
    sessions_ended(s, ended, nended);
    idset_sort(&b.changed);
    idset_sort(&b.patched);
    idset_sort(&b.removed);
    idset_sort(&b.online);
    send_batch_split(s, &b, t, n);
    pthread_mutex_lock(&s->mu);
    s->last_batch_end = hs_monotonic_us();
    s->last_batch_us = s->last_batch_end - started;
    pthread_mutex_unlock(&s->mu);
    metrics_hist_observe(&s->batch_hist[CONTROL_BATCH_DURATION], hs_monotonic_us() - started);
    metrics_hist_observe(&s->batch_hist[CONTROL_BATCH_SIZE],
                         (int64_t)(b.changed.n + b.patched.n + b.removed.n + b.online.n));
    free(t);
    state_net_unref(b.net);
    idset_free(&b.changed);
    idset_free(&b.patched);
    idset_free(&b.removed);
    idset_free(&b.online);
    free(ended);
}

void poll_keepalives(struct control_service *s)
{
    int64_t now = hs_monotonic_us();
    json_t *ka = mapper_keepalive();
    struct hs_buf raw, z;

    hs_buf_init(&raw, 256);
    hs_buf_init(&z, 256);
    mapper_encode(ka, false, &raw);
    mapper_encode(ka, true, &z);
    pthread_mutex_lock(&s->mu);
    for (struct session *x = s->sessions; x; x = x->next) {
        if (x->next_keepalive > now)
            continue;
        x->next_keepalive = now + keepalive_interval(s);
        service_sent(s, x, CONTROL_MAP_KEEPALIVE, x->zstd ? z.len : raw.len);
        control_stream_write(s->ctl, x->conn_id, x->stream_id, x->zstd ? z.data : raw.data,
                             x->zstd ? z.len : raw.len);
    }
    pthread_mutex_unlock(&s->mu);
    hs_buf_free(&raw);
    hs_buf_free(&z);
    json_decref(ka);
}

/* Ephemeral nodes go once offline for node.ephemeral.inactivity_timeout, timed on the
 * monotonic clock (a step of the wall clock neither removes them all at once nor keeps them);
 * among replicas, only the elected one removes them. */
void poll_gc_ephemeral(struct control_service *s)
{
    int64_t now = hs_monotonic_us(), timeout = s->cfg->ephemeral_inactivity_timeout_us;
    struct idset doomed = { 0 };

    if (timeout <= 0 || !state_elected(s->state))
        return;
    state_rdlock(s->state);
    for (size_t i = 0; i < state_node_count(s->state); i++) {
        const struct state_node *n = state_node_at(s->state, i);
        int64_t since = n->disconnected_at;
        if (n->n.ephemeral && !n->online && since && now - since >= timeout)
            idset_add(&doomed, n->n.id);
    }
    state_unlock(s->state);
    for (size_t i = 0; i < doomed.n; i++) {
        log_info("control: ephemeral node %llu inactive: removing",
                 (unsigned long long)doomed.v[i]);
        state_node_delete(s->state, doomed.v[i]);
    }
    idset_free(&doomed);
}

void control_service_dns_changed(struct control_service *s)
{
    pthread_mutex_lock(&s->mu);
    s->dns_for_all = true;
    if (!s->batch_due)
        s->batch_due = hs_monotonic_us();
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* A new DERP map: everyone gets a full map with the next batch. */
void control_service_resync(struct control_service *s)
{
    pthread_mutex_lock(&s->mu);
    s->full_for_all = true;
    if (!s->batch_due)
        s->batch_due = hs_monotonic_us();
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}
