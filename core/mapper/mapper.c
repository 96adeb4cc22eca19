/* mapper: full MapResponses and deltas (protocol §6.3, §6.6; headscale mapper/builder.go). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derp/derp.h"
#include "mapper/mapper_internal.h"

/* The user ids the nodes of one response name (struct hs_ids, repeats allowed). */
/* UserProfiles sorted by id (as headscale); frees the set. */
static json_t *profiles(struct state *s, struct hs_ids *u)
{
    json_t *a = json_array();

    u->n = hs_ids_sort_unique(u->v, u->n);
    for (size_t i = 0; i < u->n; i++)
        json_array_append_new(a, mapper__user_profile(s, u->v[i]));
    hs_ids_free(u);
    return a;
}

static const char *nonempty(const char *a, const char *b)
{
    return a && *a ? a : b;
}

json_t *mapper__user_profile(struct state *s, uint64_t uid)
{
    const struct state_user *su = state_user_by_id(s, uid);
    const struct store_user *u = su ? &su->u : NULL;
    json_t *p;

    if (uid == MAPPER_TAGGED_USER_ID)
        return json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)uid, "LoginName",
                         MAPPER_TAGGED_USER_NAME, "DisplayName", MAPPER_TAGGED_DISPLAY_NAME);
    if (!u) /* deleted meanwhile: still answer the reference (headscale: login name = id) */
        return json_pack("{s:I, s:o, s:s}", "ID", (json_int_t)uid, "LoginName",
                         json_sprintf("%llu", (unsigned long long)uid), "DisplayName", "");
    p = json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)uid, "LoginName",
                  nonempty(u->email, nonempty(u->name, "")), "DisplayName",
                  nonempty(u->display_name, nonempty(u->name, "")));
    if (u->profile_pic_url && *u->profile_pic_url)
        json_object_set_new(p, "ProfilePicURL", json_string(u->profile_pic_url));
    return p;
}

struct mapper *mapper_new(const struct hs_config *cfg, struct derpmap *dm)
{
    struct mapper *m = hs_xcalloc(1, sizeof(*m));
    size_t run = cfg->tuning_map_peer_run >= 2 ? (size_t)cfg->tuning_map_peer_run
                                               : MAPPER_RUN_DEFAULT;
    size_t span = run / MAPPER_SPANS_PER_RUN;

    m->cfg = cfg;
    m->dm = dm;
    while (span >= 2 && run % span) /* spans tile a run exactly */
        span--;
    mapper__runs_init(&m->runs, run);
    mapper__runs_init(&m->spans, span >= 2 ? span : 0);
    pthread_mutex_init(&m->diff_mu, NULL);
    pthread_mutex_init(&m->parts_mu, NULL);
    pthread_mutex_init(&m->dns_mu, NULL);
    randombytes_buf(m->hash_key, sizeof(m->hash_key));
    return m;
}

void mapper_free(struct mapper *m)
{
    if (!m)
        return;
    mapper__runs_free(&m->runs);
    mapper__runs_free(&m->spans);
    pthread_mutex_destroy(&m->diff_mu);
    mapper__zparts_free(m);
    pthread_mutex_destroy(&m->parts_mu);
    config_dns_records_free(m->file_records, m->nfile_records);
    pthread_mutex_destroy(&m->dns_mu);
    free(m->appeared);
    free(m->vanished);
    free(m);
}

json_t *mapper_keepalive(void)
{
    return json_pack("{s:b}", "KeepAlive", 1);
}

/* The host of server_url, brackets of an IPv6 literal dropped (Go's URL.Hostname()); false
 * when there is none. */
static bool url_host(const char *url, char *out, size_t size)
{
    const char *p = strstr(url, "://"), *end;
    size_t n;

    if (!p)
        return false;
    p += 3;
    end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(end - p))) /* user info */
        p = (const char *)memchr(p, '@', (size_t)(end - p)) + 1;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close)
            return false;
        p++;
        n = (size_t)(close - p);
    } else {
        n = strcspn(p, ":/?#");
    }
    if (n == 0 || n >= size)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

/* The tailnet name (clients show it as the tailnet's): headscale 0.29 sends server_url's
 * host; the 0.22 layout base_domain; failing those, the self node's user. */
static json_t *domain(const struct mapper *m, struct state *s, const struct state_node *self)
{
    const struct state_user *u;
    char host[256];

    if (!m->cfg->legacy && m->cfg->server_url && url_host(m->cfg->server_url, host, sizeof(host)))
        return json_string(host);
    if (m->cfg->dns_base_domain && *m->cfg->dns_base_domain)
        return json_string(m->cfg->dns_base_domain);
    u = state_user_by_id(s, mapper__user_id(self));
    return json_string(u && u->u.name ? u->u.name : MAPPER_TAGGED_USER_NAME);
}

/* The 0.22 naming's users for a viewer's DNSConfig: its own and its peers' owners (tagged
 * nodes had owners then, and their names carry them). Empty in other layouts. */
static void dns_users(const struct mapper *m, struct state *s, const struct mapper__view *v,
                      const struct state_node *me, struct hs_ids *out)
{
    if (!mapper_dns_per_user(m))
        return;
    hs_ids_push(out, me->n.user_id ? me->n.user_id : MAPPER_TAGGED_USER_ID);
    for (size_t i = 0; i < state_node_count(s); i++) {
        const struct state_node *n = state_node_at(s, i);
        if (n != me && mapper__view_sees(v, s, i))
            hs_ids_push(out, n->n.user_id ? n->n.user_id : MAPPER_TAGGED_USER_ID);
    }
    out->n = hs_ids_sort_unique(out->v, out->n);
}

static void add_tailnet(json_t *resp, struct mapper *m, struct state *s,
                        const struct state_node *self, const struct mapper__view *v, int64_t now)
{
    json_t *capmap = json_object_get(json_object_get(resp, "Node"), "CapMap");
    struct hs_ids users = { 0 };

    dns_users(m, s, v, self, &users);
    json_object_set_new(resp, "DNSConfig",
                        mapper__dns_config(m, s, self, capmap, users.v, users.n));
    free(users.v);
    json_object_set_new(resp, "DERPMap", derpmap_get(m->dm));
    json_object_set_new(resp, "Domain", domain(m, s, self));
    json_object_set_new(resp, "CollectServices", json_false()); /* opt.Bool: a JSON bool */
    mapper__set_time(resp, "ControlTime", now);
    if (!m->cfg->logtail_enabled)
        json_object_set_new(resp, "Debug", json_pack("{s:b}", "DisableLogTail", 1));
}

/* A peer's Node JSON in one of its two cached views (slot: the state node's peer_json or
 * peer_json_bare), serialised once and kept until the node changes. The caller holds the
 * state read lock; concurrent builders race benignly (one CAS wins). */
static const char *cached(struct mapper *m, struct state *s, const struct state_node *n,
                          int64_t now, char *const *slot, bool bare)
{
    char *have = __atomic_load_n(slot, __ATOMIC_ACQUIRE), *fresh, *expected = NULL;
    struct mapper__routes none = { 0 };
    json_t *o;

    if (have)
        return have;
    o = bare ? mapper__node_routes(m, s, n, 0, now, &none) : mapper__node(m, s, n, 0, now, NULL);
    fresh = hs_json_dump(o, JSON_COMPACT);
    json_decref(o);
    /* The cache slots are the one mutable part of a state node (see state.h). */
    if (__atomic_compare_exchange_n((char **)slot, &expected, fresh, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return fresh;
    free(fresh);
    return expected;
}

const char *mapper__peer_json(struct mapper *m, struct state *s, const struct state_node *n,
                              int64_t now)
{
    return cached(m, s, n, now, &n->peer_json, false);
}

const char *mapper__peer_json_bare(struct mapper *m, struct state *s, const struct state_node *n,
                                   int64_t now)
{
    return cached(m, s, n, now, &n->peer_json_bare, true);
}

/* A peer's JSON for the viewer: one of its cached views (its default routes, or none of
 * them: the two a policy mostly gives), or its Node built for this viewer alone when the
 * routes it gets from the peer are another set (mapper_routes.c). */
static int put_peer(struct mapper *m, struct state *s, const struct mapper__view *v,
                    uint64_t viewer, const struct state_node *n, int64_t now, struct hs_buf *out)
{
    struct mapper__routes d, r;
    const char *text = NULL;
    char *own = NULL;
    json_t *o;
    int rc;

    if (n->serving.n == 0 || state_net_all(v->net))
        return hs_buf_puts(out, mapper__peer_json(m, s, n, now));
    mapper__default_routes(n, &d);
    mapper__view_routes(v->net, viewer, n, &r);
    if (mapper__same_routes(&d, &r))
        text = mapper__peer_json(m, s, n, now);
    else if (r.n == 0)
        text = mapper__peer_json_bare(m, s, n, now);
    else if ((o = mapper__node_routes(m, s, n, viewer, now, &r))) {
        text = own = hs_json_dump(o, JSON_COMPACT);
        json_decref(o);
    }
    mapper__routes_free(&d);
    mapper__routes_free(&r);
    rc = text ? hs_buf_puts(out, text) : -ENOMEM;
    free(own);
    return rc;
}

/* The policy part of a full map, spliced in as text: the compiled filter is JSON already.
 * PacketFilter always (an empty one blocks everything: tailcfg.MapResponse), SSHPolicy only
 * when there are rules (a new stream starts without one). */
static int policy_tail(struct mapper *m, const struct mapper__view *v, struct mapper__sink *k,
                       struct mapper_policy_state *told)
{
    struct mapper__texts t;
    int rc;

    mapper__texts_init(&t);
    rc = mapper__texts_get(v->net, v->self, &t);
    if (rc == 0)
        rc = hs_buf_puts(k->text, ",\"PacketFilter\":");
    if (rc == 0)
        rc = mapper__sink_put(k, t.filter.data, t.filter.len, &t.filter_parts);
    if (rc == 0 && !mapper__rules_empty(&t.ssh)) {
        rc = hs_buf_puts(k->text, ",\"SSHPolicy\":{\"rules\":");
        if (rc == 0)
            rc = hs_buf_append(k->text, t.ssh.data, t.ssh.len);
        if (rc == 0)
            rc = hs_buf_append(k->text, "}", 1);
    }
    if (rc == 0 && told)
        mapper__texts_told(m, &t, v->net, told);
    mapper__texts_free(&t);
    return rc;
}

/* What follows the peers in a full map: `],` and the rest of the response (Node,
 * UserProfiles of the viewer's and its peers' users, DNS, DERP map, policy, ...) without its
 * opening brace. Frees users. */
static int full_tail(struct mapper *m, struct state *s, const struct state_node *me,
                     const struct mapper__view *v, struct hs_ids *users, int64_t now,
                     struct mapper__sink *k, struct mapper_policy_state *told)
{
    json_t *resp = json_object(), *node;
    char *rest;
    int rc;

    hs_ids_push(users, mapper__user_id(me));
    node = mapper__node(m, s, me, me->n.id, now, v->net);
    mapper__self_capmap(m, node, v->net, v->self);
    json_object_set_new(resp, "Node", node);
    add_tailnet(resp, m, s, me, v, now);
    json_object_set_new(resp, "UserProfiles", profiles(s, users));
    rest = hs_json_dump(resp, JSON_COMPACT);
    /* rest is "{...}": drop both braces, the policy part and the closing brace follow. */
    rc = hs_buf_appendf(k->text, "],%.*s", (int)(strlen(rest) - 2), rest + 1);
    free(rest);
    json_decref(resp);
    if (rc == 0)
        rc = policy_tail(m, v, k, told);
    return rc ? rc : hs_buf_append(k->text, "}", 1);
}

static int full_text(struct mapper *m, struct state *s, const struct state_node *me, int64_t now,
                     struct state_net *net, struct hs_buf *out,
                     struct mapper_policy_state *told)
{
    struct hs_ids users = { 0 };
    struct mapper__view v;
    bool first = true;
    int rc;

    /* Peers are spliced in as cached text: with thousands of nodes, building and dumping
     * their JSON trees for every full map is what would cost the most. */
    mapper__view_init(&v, s, me->n.id, net);
    rc = hs_buf_puts(out, "{\"Peers\":[");
    for (size_t i = 0; i < state_node_count(s) && rc == 0; i++) {
        const struct state_node *n = state_node_at(s, i);
        if (n == me || !mapper__view_sees(&v, s, i))
            continue;
        if (!first)
            rc = hs_buf_append(out, ",", 1);
        if (rc == 0)
            rc = put_peer(m, s, &v, me->n.id, n, now, out);
        hs_ids_push(&users, mapper__user_id(n));
        first = false;
    }
    if (rc == 0) {
        struct mapper__sink k = { .m = m, .text = out };
        return full_tail(m, s, me, &v, &users, now, &k, told);
    }
    free(users.v);
    return rc;
}

int mapper_full_text(struct mapper *m, struct state *s, uint64_t self, int64_t now,
                     struct state_net *net, struct hs_buf *out, struct mapper_policy_state *told)
{
    const struct state_node *me = state_node_by_id(s, self);

    return me ? full_text(m, s, me, now, net, out, told) : -ENOENT;
}

/* Whether the viewer sees every node of the run (it is not in it) as the cached run has them:
 * whole, with every router's default routes. */
static bool run_all_seen(const struct mapper__view *v, struct state *s, uint64_t viewer,
                         size_t lo, size_t len)
{
    for (size_t i = lo; i < lo + len; i++) {
        const struct state_node *sn = state_node_at(s, i);
        if (!v->everyone && !mapper__view_sees(v, s, i))
            return false;
        if (sn->serving.n && !mapper__view_default(v->net, viewer, sn))
            return false;
    }
    return true;
}

/* A full map being written as zstd frames (full_zstd). */
struct full {
    struct mapper *m;
    struct state *s;
    const struct state_node *me;
    struct mapper__view v;
    struct hs_buf text; /* not compressed yet */
    struct hs_buf *out;
    struct hs_ids users;
    int64_t now;
    bool any; /* a peer is out: the next one needs a comma. A cached run starts with one
               * unless it is the first run, so it can follow a peer only. */
};

static int put_each(struct full *f, size_t lo, size_t len)
{
    int rc = 0;

    for (size_t i = lo; i < lo + len && rc == 0; i++) {
        const struct state_node *sn = state_node_at(f->s, i);
        if (sn == f->me || !mapper__view_sees(&f->v, f->s, i))
            continue;
        if (f->any)
            rc = hs_buf_append(&f->text, ",", 1);
        if (rc == 0)
            rc = put_peer(f->m, f->s, &f->v, f->me->n.id, sn, f->now, &f->text);
        hs_ids_push(&f->users, mapper__user_id(sn));
        f->any = true;
    }
    return rc;
}

static int put_cached(struct full *f, struct mapper_runs *c, size_t lo, size_t len)
{
    int rc = 0;

    if (f->text.len > 0) /* what came before goes out as a frame of its own */
        rc = mapper__zstd_frame(f->out, f->text.data, f->text.len);
    hs_buf_reset(&f->text);
    if (rc == 0)
        rc = mapper__append_run(f->m, c, f->s, lo, len, f->now, f->out);
    for (size_t i = lo; i < lo + len; i++)
        hs_ids_push(&f->users, mapper__user_id(state_node_at(f->s, i)));
    f->any = true;
    return rc;
}

/* Nodes [lo, hi) in runs of c: a run the viewer sees whole is a cached frame; the viewer's own
 * run is cut into the smaller spans, if c has them; the rest is written peer by peer. */
static int put_runs(struct full *f, struct mapper_runs *c, struct mapper_runs *inner, size_t lo,
                    size_t hi)
{
    uint64_t self = f->me->n.id;
    int rc = 0;

    for (; lo < hi && rc == 0; lo += c->size) {
        size_t len = hi - lo < c->size ? hi - lo : c->size;
        /* Nodes are sorted by id: is the viewer in this run? */
        bool mine = state_node_at(f->s, lo)->n.id <= self &&
                    self <= state_node_at(f->s, lo + len - 1)->n.id;
        if (mine && inner)
            rc = put_runs(f, inner, NULL, lo, lo + len);
        else if (!mine && (lo == 0 || f->any) && run_all_seen(&f->v, f->s, self, lo, len))
            rc = put_cached(f, c, lo, len);
        else
            rc = put_each(f, lo, len);
    }
    return rc;
}

/* The full map as a zstd message: the peers in cached runs (put_runs); the viewer's own span,
 * runs it sees in part, and the head and tail are compressed here. */
static int full_zstd(struct mapper *m, struct state *s, const struct state_node *me, int64_t now,
                     struct state_net *net, struct hs_buf *out,
                     struct mapper_policy_state *told)
{
    struct full f = { .m = m, .s = s, .me = me, .out = out, .now = now };
    size_t start;
    int rc;

    if ((rc = mapper__begin_message(out, &start)) < 0)
        return rc;
    mapper__view_init(&f.v, s, me->n.id, net);
    hs_buf_init(&f.text, MAPPER_MAX_FRAME);
    if ((rc = hs_buf_puts(&f.text, "{\"Peers\":[")) == 0)
        rc = put_runs(&f, &m->runs, m->spans.size ? &m->spans : NULL, 0, state_node_count(s));
    if (rc == 0) {
        struct mapper__sink k = { .m = m, .text = &f.text, .z = out };
        if ((rc = full_tail(m, s, me, &f.v, &f.users, now, &k, told)) == 0)
            rc = mapper__sink_flush(&k);
    } else {
        free(f.users.v);
    }
    hs_buf_free(&f.text);
    return mapper__end_message(out, start, rc);
}

json_t *mapper_full(struct mapper *m, struct state *s, uint64_t self, int64_t now)
{
    struct hs_buf text;
    json_t *j = NULL;

    hs_buf_init(&text, MAPPER_MAX_FRAME);
    if (mapper_full_text(m, s, self, now, NULL, &text, NULL) == 0)
        j = json_loadb(text.data, text.len, 0, NULL);
    hs_buf_free(&text);
    return j;
}

int mapper_full_encoded(struct mapper *m, struct state *s, uint64_t self, int64_t now,
                        struct state_net *net, bool zstd, struct hs_buf *out,
                        struct mapper_policy_state *told)
{
    const struct state_node *me = state_node_by_id(s, self);
    struct hs_buf text;
    int rc;

    if (!me)
        return -ENOENT;
    if (zstd)
        return full_zstd(m, s, me, now, net, out, told);
    hs_buf_init(&text, MAPPER_MAX_FRAME);
    if ((rc = full_text(m, s, me, now, net, &text, told)) == 0)
        rc = mapper_encode_text(text.data, text.len, false, out);
    hs_buf_free(&text);
    return rc;
}

/* Changed peers as full Nodes; the node itself, if listed, comes back as "Node". */
static void add_changed(json_t *resp, struct mapper *m, struct state *s, uint64_t self,
                        const uint64_t *ids, size_t n, int64_t now, struct hs_ids *users,
                        const struct state_net *net)
{
    json_t *changed = json_array();

    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_by_id(s, ids[i]);
        if (!sn)
            continue; /* gone meanwhile: the caller reports it in `removed` */
        hs_ids_push(users, mapper__user_id(sn));
        if (ids[i] == self)
            json_object_set_new(resp, "Node", mapper__node(m, s, sn, self, now, net));
        else
            json_array_append_new(changed, mapper__node(m, s, sn, self, now, net));
    }
    if (json_array_size(changed))
        json_object_set_new(resp, "PeersChanged", changed);
    else
        json_decref(changed);
}

static void add_removed(json_t *resp, uint64_t self, const uint64_t *ids, size_t n)
{
    json_t *removed = json_array();

    for (size_t i = 0; i < n; i++) {
        if (ids[i] != self)
            json_array_append_new(removed, json_integer((json_int_t)ids[i]));
    }
    if (json_array_size(removed))
        json_object_set_new(resp, "PeersRemoved", removed);
    else
        json_decref(removed);
}

/* OnlineChange with the peers' current flags, and PeerSeenChange to match: true (LastSeen =
 * now) when a peer went offline, false (LastSeen cleared) when it came back, so an online
 * peer never carries a LastSeen. */
static void add_online(json_t *resp, struct state *s, uint64_t self, const uint64_t *ids,
                       size_t n)
{
    json_t *online = json_object(), *seen = json_object();

    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_by_id(s, ids[i]);
        char key[24];
        if (!sn || ids[i] == self)
            continue;
        snprintf(key, sizeof(key), "%llu", (unsigned long long)ids[i]);
        json_object_set_new(online, key, json_boolean(sn->online));
        json_object_set_new(seen, key, json_boolean(!sn->online));
    }
    if (json_object_size(online)) {
        json_object_set_new(resp, "OnlineChange", online);
        json_object_set_new(resp, "PeerSeenChange", seen);
    } else {
        json_decref(online);
        json_decref(seen);
    }
}

/* PeersChangedPatch: only what moved (absent fields mean unchanged to the client), so an
 * endpoint change costs a few dozen bytes per recipient. */
static json_t *patch_of(const struct state_node *sn, unsigned f)
{
    json_t *pc = json_pack("{s:I}", "NodeID", (json_int_t)sn->n.id);

    if (!f)
        f = STATE_F_PATCHABLE;
    if ((f & STATE_F_HOME_DERP) && sn->home_derp)
        json_object_set_new(pc, "DERPRegion", json_integer(sn->home_derp));
    if (f & STATE_F_ENDPOINTS)
        json_object_set_new(pc, "Endpoints", mapper__endpoints(&sn->n));
    if (f & STATE_F_NODE_KEY)
        mapper__set_key(pc, "Key", "nodekey:", sn->n.node_key);
    if (f & STATE_F_DISCO_KEY)
        mapper__set_key(pc, "DiscoKey", "discokey:", sn->n.disco_key);
    if ((f & STATE_F_CAP) && sn->capver)
        json_object_set_new(pc, "Cap", json_integer(sn->capver));
    return pc;
}

static void add_patched(json_t *resp, struct state *s, uint64_t self,
                        const struct mapper_changes *ch)
{
    json_t *patches = json_array();

    for (size_t i = 0; i < ch->npatched; i++) {
        const struct state_node *sn = state_node_by_id(s, ch->patched[i]);
        if (!sn || ch->patched[i] == self)
            continue;
        json_array_append_new(patches,
                              patch_of(sn, ch->patched_fields ? ch->patched_fields[i] : 0));
    }
    if (json_array_size(patches))
        json_object_set_new(resp, "PeersChangedPatch", patches);
    else
        json_decref(patches);
}

static json_t *delta_of(struct mapper *m, struct state *s, uint64_t self,
                        const struct mapper_changes *ch, const struct mapper_plan *p,
                        int64_t now)
{
    struct hs_ids users = { 0 };
    json_t *resp = json_object();
    const struct state_node *me;

    add_changed(resp, m, s, self, ch->changed, ch->nchanged, now, &users, p ? p->now : NULL);
    add_patched(resp, s, self, ch);
    add_removed(resp, self, ch->removed, ch->nremoved);
    add_online(resp, s, self, ch->online, ch->nonline);
    if (p && p->node && (me = state_node_by_id(s, self))) {
        json_t *node = mapper__node(m, s, me, self, now, p->now);
        mapper__self_capmap(m, node, p->now, state_net_index(p->now, self));
        hs_ids_push(&users, mapper__user_id(me));
        json_object_set_new(resp, "Node", node);
    }
    if (json_object_size(resp) == 0) {
        free(users.v);
        json_decref(resp);
        return NULL;
    }
    if (users.n)
        json_object_set_new(resp, "UserProfiles", profiles(s, &users));
    else
        free(users.v);
    return resp;
}

static bool removed_any(const struct mapper_plan *p, uint64_t self)
{
    return p->removed.n > 1 || (p->removed.n == 1 && p->removed.v[0] != self);
}

/* PeersRemoved (as add_removed writes it), after sep; nothing when none. */
static int put_removed(const struct mapper_plan *p, uint64_t self, const char *sep,
                       struct hs_buf *out)
{
    bool first = true;
    int rc = 0;

    if (!removed_any(p, self))
        return 0;
    rc = hs_buf_appendf(out, "%s\"PeersRemoved\":[", sep);
    for (size_t i = 0; i < p->removed.n && rc == 0; i++) {
        char num[24];
        size_t n = sizeof(num);
        uint64_t v = p->removed.v[i];
        if (v == self)
            continue;
        do /* by hand: printf is most of the cost of thousands of ids */
            num[--n] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        if (!first)
            num[--n] = ',';
        rc = hs_buf_append(out, num + n, sizeof(num) - n);
        first = false;
    }
    return rc ? rc : hs_buf_append(out, "]", 1);
}

/* The policy texts of a plan, after sep. An SSH policy that changed goes out even when
 * empty: that is how a client drops the old rules. */
static int plan_policy(const struct mapper_plan *p, const char *sep, struct mapper__sink *k)
{
    int rc = 0;

    if (p->filter) {
        rc = hs_buf_appendf(k->text, "%s\"PacketFilter\":", sep);
        if (rc == 0)
            rc = mapper__sink_put(k, p->filter, p->filter_len, &p->filter_parts);
        sep = ",";
    }
    if (rc == 0 && p->ssh)
        rc = hs_buf_appendf(k->text, "%s\"SSHPolicy\":{\"rules\":%s}", sep, p->ssh);
    return rc;
}

/* The plan's delta as JSON text into k: what delta_of builds, the policy texts spliced in
 * before the closing brace. -ENODATA when there is nothing to say. */
static int plan_body(struct mapper *m, struct state *s, uint64_t self,
                     const struct mapper_plan *p, int64_t now, struct mapper__sink *k)
{
    struct mapper_changes ch = {
        .changed = p->changed.v, .nchanged = p->changed.n,
        .patched = p->patched.v, .patched_fields = p->patched.f, .npatched = p->patched.n,
        .removed = p->removed.v, .nremoved = p->removed.n,
        .online = p->online.v, .nonline = p->online.n,
    };
    json_t *j;
    char *rest;
    int rc;

    ch.nremoved = 0; /* written by hand below: a policy change can remove thousands */
    j = delta_of(m, s, self, &ch, p, now);
    if (!j && !p->filter && !p->ssh && !removed_any(p, self))
        return -ENODATA;
    rest = j ? hs_json_dump(j, JSON_COMPACT) : NULL;
    json_decref(j);
    /* rest is "{...}": all but its closing brace, then the rest and the brace. */
    rc = rest ? hs_buf_append(k->text, rest, strlen(rest) - 1) : hs_buf_puts(k->text, "{");
    if (rc == 0)
        rc = put_removed(p, self, rest ? "," : "", k->text);
    if (rc == 0)
        rc = plan_policy(p, rest || removed_any(p, self) ? "," : "", k);
    free(rest);
    return rc ? rc : hs_buf_append(k->text, "}", 1);
}

json_t *mapper_plan_delta(struct mapper *m, struct state *s, uint64_t self,
                          const struct mapper_plan *p, int64_t now)
{
    struct hs_buf text;
    struct mapper__sink k = { .m = m, .text = &text };
    json_t *j = NULL;

    hs_buf_init(&text, MAPPER_MAX_FRAME);
    if (plan_body(m, s, self, p, now, &k) == 0)
        j = json_loadb(text.data, text.len, 0, NULL);
    hs_buf_free(&text);
    return j;
}

int mapper_plan_encoded(struct mapper *m, struct state *s, uint64_t self,
                        const struct mapper_plan *p, int64_t now, bool zstd,
                        struct hs_buf *out)
{
    struct hs_buf text;
    struct mapper__sink k = { .m = m, .text = &text, .z = zstd ? out : NULL };
    size_t start;
    int rc;

    hs_buf_init(&text, MAPPER_MAX_FRAME);
    if ((rc = mapper__begin_message(out, &start)) == 0) {
        rc = plan_body(m, s, self, p, now, &k);
        if (rc == 0 && zstd)
            rc = mapper__sink_flush(&k);
        else if (rc == 0)
            rc = hs_buf_append(out, text.data, text.len);
        rc = mapper__end_message(out, start, rc);
    }
    hs_buf_free(&text);
    return rc;
}

json_t *mapper_delta(struct mapper *m, struct state *s, uint64_t self,
                     const struct mapper_changes *ch, int64_t now)
{
    struct mapper_plan p;
    json_t *j;

    if (self == 0)
        return delta_of(m, s, 0, ch, NULL, now);
    if (mapper_plan(m, s, self, ch, NULL, NULL, &p) < 0)
        return NULL;
    j = mapper_plan_delta(m, s, self, &p, now);
    mapper_plan_free(&p);
    return j;
}

void mapper_set_extra_records(struct mapper *m, struct dns_record *v, size_t n)
{
    struct dns_record *old;
    size_t nold;

    pthread_mutex_lock(&m->dns_mu);
    old = m->file_records;
    nold = m->nfile_records;
    m->file_records = v;
    m->nfile_records = n;
    m->file_records_set = true;
    pthread_mutex_unlock(&m->dns_mu);
    config_dns_records_free(old, nold);
}

json_t *mapper_dns_update(struct mapper *m, struct state *s, uint64_t self)
{
    const struct state_node *me = state_node_by_id(s, self);
    struct hs_ids users = { 0 };
    struct mapper__view v;
    json_t *resp, *node;

    if (!me)
        return NULL;
    mapper__view_init(&v, s, self, NULL);
    dns_users(m, s, &v, me, &users);
    node = json_object(); /* only for its CapMap: NextDNS attributes */
    mapper__self_capmap(m, node, v.net, v.self);
    resp = json_pack("{s:o}", "DNSConfig",
                     mapper__dns_config(m, s, me, json_object_get(node, "CapMap"), users.v,
                                        users.n));
    json_decref(node);
    free(users.v);
    return resp;
}
