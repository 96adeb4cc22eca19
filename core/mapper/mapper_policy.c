/* mapper: what the compiled policy puts in a node's maps (the peers it sees, its
 * PacketFilter, SSH policy and CapMap) and, after a change, the plan of what one node is to
 * be told. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "mapper/mapper_internal.h"

/* tailcfg.CapabilitySSH, tailcfg.CapabilityAdmin */
#define CAP_SSH "https://tailscale.com/cap/ssh"
#define CAP_ADMIN "https://tailscale.com/cap/is-admin"
#define CAP_DEFAULT_AUTO_UPDATE "default-auto-update" /* tailcfg.NodeAttrDefaultAutoUpdate */
#define EMPTY_RULES "[]"
#define EMPTY_CAPS "{}"
#define POLICY_TEXT_MAX MAPPER_MAX_FRAME

/* ---- views ---- */

void mapper__view_init(struct mapper__view *v, struct state *s, uint64_t self,
                       struct state_net *net)
{
    const struct state_node *me = state_node_by_id(s, self);

    v->net = net ? net : state_net_current(s);
    v->self = state_net_index(v->net, self);
    /* An expired node is told of no one, and may reach no one, until it logs in again. */
    if (me && mapper__expired(&me->n, hs_now_us()))
        v->self = STATE_NET_NONE;
    /* Seeing everyone (no policy, or one that lets it), in a net compiled for exactly these
     * nodes: no per-node questions. */
    v->everyone = state_net_sees_all(v->net, v->self) && state_net_exact(s, v->net);
}

bool mapper__view_sees(const struct mapper__view *v, struct state *s, size_t i)
{
    if (v->everyone)
        return i != v->self; /* exact: the state index is the net index */
    return state_net_sees(v->net, v->self, state_net_index_at(s, v->net, i));
}

bool mapper_sees_everyone(const struct state_net *net, uint64_t self)
{
    return state_net_all(net) && state_net_index(net, self) != STATE_NET_NONE;
}

/* ---- policy texts ---- */

uint64_t mapper__hash(const struct mapper *m, const char *text, size_t len)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, (const unsigned char *)text, len, m->hash_key);
    memcpy(&v, h, sizeof(v));
    return v;
}

void mapper__texts_init(struct mapper__texts *t)
{
    t->filter_parts = (struct policy_parts){ 0 };
    hs_buf_init(&t->filter, POLICY_TEXT_MAX);
    hs_buf_init(&t->ssh, POLICY_TEXT_MAX);
    hs_buf_init(&t->capmap, POLICY_TEXT_MAX);
}

void mapper__texts_free(struct mapper__texts *t)
{
    policy_parts_free(&t->filter_parts);
    hs_buf_free(&t->filter);
    hs_buf_free(&t->ssh);
    hs_buf_free(&t->capmap);
}

/* A node the net does not know (it joined after a recompile failed) may reach nothing. */
int mapper__texts_get(const struct state_net *net, size_t i, struct mapper__texts *t)
{
    const struct policy_net *pn = state_net_policy(net);
    int rc;

    hs_buf_reset(&t->filter);
    t->filter_parts.n = 0;
    hs_buf_reset(&t->ssh);
    hs_buf_reset(&t->capmap);
    if (i == STATE_NET_NONE) {
        rc = hs_buf_puts(&t->filter, EMPTY_RULES);
        if (rc == 0)
            rc = hs_buf_puts(&t->ssh, EMPTY_RULES);
        return rc ? rc : hs_buf_puts(&t->capmap, EMPTY_CAPS);
    }
    rc = policy_net_filter_parts(pn, i, &t->filter, &t->filter_parts);
    if (rc == 0)
        rc = policy_net_ssh(pn, i, &t->ssh);
    if (rc == 0)
        rc = policy_net_capmap(pn, i, &t->capmap);
    return rc;
}

void mapper__texts_told(const struct mapper *m, const struct mapper__texts *t,
                        struct state_net *net, struct mapper_policy_state *told)
{
    told->net = net;
    told->gen = state_net_gen(net);
    told->filter = mapper__filter_hash(m, t);
    told->ssh = mapper__hash(m, t->ssh.data, t->ssh.len);
    told->capmap = mapper__hash(m, t->capmap.data, t->capmap.len);
}

uint64_t mapper__filter_hash(const struct mapper *m, const struct mapper__texts *t)
{
    const struct policy_parts *pp = &t->filter_parts;
    uint64_t *v;
    uint64_t h;

    if (pp->n == 0)
        return mapper__hash(m, t->filter.data, t->filter.len);
    /* The own text's hash, then each part's place and hash, hashed again. */
    v = hs_xcalloc(1 + 2 * pp->n, sizeof(*v));
    v[0] = mapper__hash(m, t->filter.data, t->filter.len);
    for (size_t i = 0; i < pp->n; i++) {
        v[1 + 2 * i] = pp->v[i].at;
        v[2 + 2 * i] = pp->v[i].hash;
    }
    h = mapper__hash(m, (const char *)v, (1 + 2 * pp->n) * sizeof(*v));
    free(v);
    return h;
}

bool mapper__rules_empty(const struct hs_buf *b)
{
    return b->len == 0 || (b->len == 2 && memcmp(b->data, EMPTY_RULES, 2) == 0);
}

/* The node's own CapMap: the config's attributes (in every Node), what every node may do on
 * itself (headscale's baseline: without the SSH capability a client refuses `tailscale set
 * --ssh`), auto_update.enabled as default-auto-update (always sent, [true] or [false], as
 * headscale does: a client adopts it once, on its first map), and the policy's nodeAttrs. */
void mapper__self_capmap(const struct mapper *m, json_t *node, const struct state_net *net,
                         size_t i)
{
    json_t *caps = json_object_get(node, "CapMap"), *add;
    struct hs_buf text;

    if (!json_is_object(caps)) {
        caps = json_object();
        json_object_set_new(node, "CapMap", caps);
    }
    json_object_set_new(caps, CAP_SSH, json_array());
    json_object_set_new(caps, CAP_ADMIN, json_array());
    json_object_set_new(caps, CAP_DEFAULT_AUTO_UPDATE,
                        json_pack("[b]", m->cfg && m->cfg->auto_update_enabled));
    if (i == STATE_NET_NONE || state_net_all(net))
        return;
    hs_buf_init(&text, POLICY_TEXT_MAX);
    if (policy_net_capmap(state_net_policy(net), i, &text) == 0 &&
        (add = json_loadb(text.data, text.len, 0, NULL))) {
        if (json_is_object(add))
            json_object_update(caps, add);
        json_decref(add);
    }
    hs_buf_free(&text);
}

/* ---- plans ---- */

static void ids_add(struct mapper_ids *l, uint64_t id, unsigned f)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = hs_xrealloc(l->v, l->cap * sizeof(*l->v));
        l->f = hs_xrealloc(l->f, l->cap * sizeof(*l->f));
    }
    l->v[l->n] = id;
    l->f[l->n++] = f;
}

static void ids_free(struct mapper_ids *l)
{
    free(l->v);
    free(l->f);
    *l = (struct mapper_ids){ 0 };
}

static int cmp_idf(const void *a, const void *b)
{
    const struct { uint64_t id; unsigned f; } *x = a, *y = b;

    return x->id < y->id ? -1 : x->id > y->id;
}

/* Sorts, merging duplicates (their fields ORed). */
static void ids_normalise(struct mapper_ids *l)
{
    struct { uint64_t id; unsigned f; } *p;
    size_t k = 0;

    size_t asc = 1;

    while (asc < l->n && l->v[asc - 1] < l->v[asc])
        asc++;
    if (asc >= l->n)
        return; /* ascending already, as the merge walks leave their lists */
    p = hs_xcalloc(l->n, sizeof(*p));
    for (size_t i = 0; i < l->n; i++) {
        p[i].id = l->v[i];
        p[i].f = l->f[i];
    }
    qsort(p, l->n, sizeof(*p), cmp_idf);
    for (size_t i = 0; i < l->n; i++) {
        if (k > 0 && l->v[k - 1] == p[i].id) {
            l->f[k - 1] |= p[i].f;
            continue;
        }
        l->v[k] = p[i].id;
        l->f[k++] = p[i].f;
    }
    l->n = k;
    free(p);
}

static bool ids_has(const struct mapper_ids *sorted, uint64_t id)
{
    size_t lo = 0, hi = sorted->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sorted->v[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sorted->n && sorted->v[lo] == id;
}

/* Drops from l the ids in sorted. */
static void ids_minus(struct mapper_ids *l, const struct mapper_ids *sorted)
{
    size_t k = 0;

    if (sorted->n == 0)
        return;
    for (size_t i = 0; i < l->n; i++) {
        if (ids_has(sorted, l->v[i]))
            continue;
        l->v[k] = l->v[i];
        l->f[k++] = l->f[i];
    }
    l->n = k;
}

/* The ids of a batch list the viewer sees in net (viewer index vi). */
static void keep_seen(struct mapper_ids *out, const uint64_t *ids, const unsigned *f, size_t n,
                      uint64_t self, const struct state_net *net, size_t vi)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == self)
            continue;
        if (net && !state_net_sees(net, vi, state_net_index(net, ids[i])))
            continue;
        ids_add(out, ids[i], f ? f[i] : 0);
    }
}

/* Peers that appeared and vanished for a viewer that sees everyone in both nets: the ids
 * one net has and the other lacks, the same for every such viewer, so worked out once per
 * pair of nets (under the mapper's lock; a flush asks for it thousands of times). */
static void everyone_diff(struct mapper *m, struct state_net *a, struct state_net *b,
                          uint64_t self, struct mapper_plan *p)
{
    pthread_mutex_lock(&m->diff_mu);
    if (m->diff_a != state_net_gen(a) || m->diff_b != state_net_gen(b)) {
        free(m->appeared);
        free(m->vanished);
        m->appeared = state_net_minus(b, a, &m->nappeared);
        m->vanished = state_net_minus(a, b, &m->nvanished);
        m->diff_a = state_net_gen(a);
        m->diff_b = state_net_gen(b);
    }
    for (size_t i = 0; i < m->nappeared; i++)
        if (m->appeared[i] != self)
            ids_add(&p->changed, m->appeared[i], STATE_F_OTHER);
    for (size_t i = 0; i < m->nvanished; i++)
        if (m->vanished[i] != self)
            ids_add(&p->removed, m->vanished[i], 0);
    pthread_mutex_unlock(&m->diff_mu);
}

static bool row_bit(const uint64_t *row, size_t i)
{
    return (row[i / 64] >> (i % 64)) & 1;
}

/* Any viewer: one merge walk over the two nets' ids (both ascend), with the viewer's peer
 * list in each taken whole. A node only the state has (it joined after b was compiled) is in
 * neither: it comes with a later batch. */
static void general_diff(struct state_net *a, size_t va, struct state_net *b, size_t vb,
                         uint64_t self, struct mapper_plan *p)
{
    size_t na = state_net_count(a), nb = state_net_count(b), i = 0, j = 0;
    const uint64_t *ida = state_net_ids(a), *idb = state_net_ids(b);
    uint64_t *ra = state_net_sees_row(a, va), *rb = state_net_sees_row(b, vb);

    while (i < na || j < nb) {
        uint64_t aid = i < na ? ida[i] : UINT64_MAX;
        uint64_t bid = j < nb ? idb[j] : UINT64_MAX;
        uint64_t id = aid < bid ? aid : bid;
        bool was = false, is = false;

        if (aid == id)
            was = row_bit(ra, i++);
        if (bid == id)
            is = row_bit(rb, j++);
        if (id == self || was == is)
            continue;
        if (is)
            ids_add(&p->changed, id, STATE_F_OTHER);
        else
            ids_add(&p->removed, id, 0);
    }
    free(ra);
    free(rb);
}

/* Routers the viewer sees in both nets whose routes for it differ between them: a policy
 * change that leaves the peer list alone can still give or take a route. */
static void route_diffs(struct state *s, uint64_t self, struct state_net *a, size_t va,
                        struct state_net *b, size_t vb, struct mapper_plan *p)
{
    size_t n;
    const uint64_t *ids = state_router_ids(s, &n);

    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_by_id(s, ids[i]);
        if (!sn || ids[i] == self || !state_net_sees(b, vb, state_net_index(b, ids[i])) ||
            !state_net_sees(a, va, state_net_index(a, ids[i])))
            continue; /* appeared or vanished whole (general_diff) */
        if (mapper__views_differ(a, b, self, sn))
            ids_add(&p->changed, ids[i], STATE_F_OTHER);
    }
}

/* What the routers sent whole look like to this viewer where that is not the default (the
 * routers are few; `changed`, after a policy change, may be thousands: look up the former in
 * the latter, sorted by then). */
static uint64_t plan_views(struct state *s, uint64_t self, const struct mapper_plan *p)
{
    size_t n;
    const uint64_t *ids = state_router_ids(s, &n);
    uint64_t h = 0;

    for (size_t i = 0; i < n && p->changed.n; i++) {
        const struct state_node *sn;
        if (!ids_has(&p->changed, ids[i]) || !(sn = state_node_by_id(s, ids[i])))
            continue;
        if (!mapper__view_default(p->now, self, sn))
            h = h * 31 + mapper__view_hash(p->now, self, sn) + 1;
    }
    return h;
}

/* The viewer's policy texts in net b, against what it was told: those that differ
 * go into the plan, and what it will have been told replaces `told`. */
static int plan_texts(struct mapper *m, struct state_net *b, size_t vb,
                      const struct mapper_policy_state *was, struct mapper_plan *p)
{
    struct mapper__texts t;
    struct mapper_policy_state now;
    int rc;

    mapper__texts_init(&t);
    if ((rc = mapper__texts_get(b, vb, &t)) == 0) {
        mapper__texts_told(m, &t, b, &now);
        if (now.filter != was->filter) {
            p->filter_len = t.filter.len;
            p->filter = hs_buf_steal(&t.filter);
            p->filter_parts = t.filter_parts;
            t.filter_parts = (struct policy_parts){ 0 };
        }
        if (now.ssh != was->ssh)
            p->ssh = hs_buf_steal(&t.ssh);
        if (now.capmap != was->capmap)
            p->node = true;
        p->told = now;
    }
    mapper__texts_free(&t);
    return rc;
}

int mapper_plan(struct mapper *m, struct state *s, uint64_t self, const struct mapper_changes *ch,
                const struct mapper_policy_state *was, struct state_net *now,
                struct mapper_plan *p)
{
    struct state_net *b = now ? now : state_net_current(s), *a = NULL;
    size_t vb = state_net_index(b, self), va;
    int rc = 0;

    /* Unpinned (was->net NULL): only its generation is known; if that is b's, it is b. */
    if (was)
        a = was->net ? was->net : was->gen && was->gen == state_net_gen(b) ? b : NULL;
    va = a ? state_net_index(a, self) : STATE_NET_NONE;
    memset(p, 0, sizeof(*p));
    p->now = b;
    if (was)
        p->told = *was;
    for (size_t i = 0; i < ch->nchanged; i++)
        if (ch->changed[i] == self)
            p->node = true; /* its own Node */
    keep_seen(&p->changed, ch->changed, NULL, ch->nchanged, self, b, vb);
    keep_seen(&p->patched, ch->patched, ch->patched_fields, ch->npatched, self, b, vb);
    keep_seen(&p->online, ch->online, NULL, ch->nonline, self, b, vb);
    /* Removed nodes are in no current net: only the one the viewer was told about can say
     * whether it had them. Not knowing that (its first map is still on its way), tell it. */
    keep_seen(&p->removed, ch->removed, NULL, ch->nremoved, self, a, va);
    if (a && a != b) {
        if (state_net_sees_all(a, va) && state_net_sees_all(b, vb))
            everyone_diff(m, a, b, self, p);
        else
            general_diff(a, va, b, vb, self, p);
        route_diffs(s, self, a, va, b, vb, p);
        rc = plan_texts(m, b, vb, was, p);
    }
    ids_normalise(&p->changed);
    ids_normalise(&p->removed);
    ids_normalise(&p->patched);
    ids_normalise(&p->online);
    /* A peer sent whole needs no patch besides. */
    ids_minus(&p->patched, &p->changed);
    p->views = plan_views(s, self, p);
    if (rc < 0)
        mapper_plan_free(p);
    return rc;
}

bool mapper_plan_shareable(const struct mapper_plan *p)
{
    return !p->node && !p->filter && !p->ssh;
}

bool mapper_plan_empty(const struct mapper_plan *p)
{
    return mapper_plan_shareable(p) && !p->changed.n && !p->patched.n && !p->removed.n &&
           !p->online.n;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

uint64_t mapper_plan_hash(const struct mapper_plan *p)
{
    const struct mapper_ids *l[] = { &p->changed, &p->patched, &p->removed, &p->online };
    uint64_t h = p->views;

    for (size_t k = 0; k < HS_ARRAY_LEN(l); k++) {
        h = mix(h, l[k]->n);
        for (size_t i = 0; i < l[k]->n; i++)
            h = mix(mix(h, l[k]->v[i]), l[k]->f[i]);
    }
    return h;
}

static bool ids_same(const struct mapper_ids *a, const struct mapper_ids *b)
{
    return a->n == b->n && (a->n == 0 || (memcmp(a->v, b->v, a->n * sizeof(*a->v)) == 0 &&
                                          memcmp(a->f, b->f, a->n * sizeof(*a->f)) == 0));
}

bool mapper_plan_same(const struct mapper_plan *a, const struct mapper_plan *b)
{
    return mapper_plan_shareable(a) && mapper_plan_shareable(b) && a->views == b->views &&
           ids_same(&a->changed, &b->changed) && ids_same(&a->patched, &b->patched) &&
           ids_same(&a->removed, &b->removed) && ids_same(&a->online, &b->online);
}

void mapper_plan_free(struct mapper_plan *p)
{
    ids_free(&p->changed);
    ids_free(&p->patched);
    ids_free(&p->removed);
    ids_free(&p->online);
    free(p->filter);
    free(p->ssh);
    policy_parts_free(&p->filter_parts);
    p->filter = p->ssh = NULL;
    p->filter_len = 0;
}
