#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_internal.h"
#include "util/util.h"

/* Nodes and users in arrays sorted by id: lookups by id are binary searches, iteration is in
 * id order (what the API and the mapper want), and thousands of nodes stay compact. The
 * struct is in state_internal.h. */

static size_t node_pos(const struct state *s, uint64_t id)
{
    size_t lo = 0, hi = s->nnodes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->nodes[mid]->n.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t user_pos(const struct state *s, uint64_t id)
{
    size_t lo = 0, hi = s->nusers;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->users[mid]->u.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Write lock held. */
static void drop_cache(struct state *s, struct state_node *n)
{
    free(n->peer_json);
    n->peer_json = NULL;
    free(n->peer_json_bare);
    n->peer_json_bare = NULL;
    n->version = ++s->versions;
}

void state__drop_cache(struct state *s, struct state_node *n)
{
    drop_cache(s, n);
}

static void node_free(struct state_node *n)
{
    if (!n)
        return;
    free(n->peer_json);
    free(n->peer_json_bare);
    hs_strv_free(&n->routes);
    hs_strv_free(&n->serving);
    hs_strv_free(&n->primary);
    store_node_free(&n->n);
    free(n);
}

static void user_free(struct state_user *u)
{
    if (!u)
        return;
    store_user_free(&u->u);
    free(u);
}

/* What the state keeps from the node's Hostinfo: its home DERP region and advertised routes
 * (one parse; routes may be NULL). */
static int hostinfo_facts(const struct store_node *n, struct hs_strv *routes)
{
    json_t *hi = n->hostinfo_json ? json_loads(n->hostinfo_json, 0, NULL) : NULL;
    json_t *d = json_object_get(json_object_get(hi, "NetInfo"), "PreferredDERP"), *r;
    int region = json_is_integer(d) ? (int)json_integer_value(d) : 0;
    size_t i;

    if (routes) {
        json_array_foreach(json_object_get(hi, "RoutableIPs"), i, r) {
            if (json_is_string(r))
                hs_strv_push(routes, json_string_value(r));
        }
    }
    json_decref(hi);
    return region;
}

static int home_derp_of(const struct store_node *n)
{
    return hostinfo_facts(n, NULL);
}

/* When a node read from the store went offline, on the monotonic clock: its last_seen that
 * many us ago (one ahead of our wall clock, which was set back, counts as now); 0 when it was
 * never seen. */
static int64_t offline_since(const struct store_node *n)
{
    int64_t ago = hs_now_us() - n->last_seen, since = hs_monotonic_us();

    if (!n->last_seen)
        return 0;
    since -= ago > 0 ? ago : 0;
    return since ? since : -1; /* 0 means online */
}

/* Inserts or replaces (keeping runtime fields); takes ownership of n. Write lock held. */
static bool put_node(struct state *s, struct store_node *n)
{
    size_t i = node_pos(s, n->id);
    struct state_node *sn;

    if (i < s->nnodes && s->nodes[i]->n.id == n->id) {
        sn = s->nodes[i];
        drop_cache(s, sn);
        state__keys_del(&s->keys, sn);
        store_node_free(&sn->n);
        hs_strv_free(&sn->routes);
        sn->n = *n;
        state__keys_add(&s->keys, sn);
        sn->home_derp = hostinfo_facts(n, &sn->routes);
        state__node_serving(sn); /* its primaries stay until the next election */
        return false;
    }
    if (s->nnodes == s->capnodes) {
        s->capnodes = s->capnodes ? 2 * s->capnodes : 64;
        s->nodes = hs_xrealloc(s->nodes, s->capnodes * sizeof(*s->nodes));
    }
    memmove(s->nodes + i + 1, s->nodes + i, (s->nnodes - i) * sizeof(*s->nodes));
    sn = hs_xcalloc(1, sizeof(*sn));
    sn->n = *n;
    sn->version = ++s->versions;
    sn->disconnected_at = offline_since(n);
    sn->home_derp = hostinfo_facts(n, &sn->routes);
    state__node_serving(sn);
    state__keys_add(&s->keys, sn);
    s->nodes[i] = sn;
    s->nnodes++;
    return true;
}

static bool drop_node(struct state *s, uint64_t id)
{
    size_t i = node_pos(s, id);
    if (i >= s->nnodes || s->nodes[i]->n.id != id)
        return false;
    state__keys_del(&s->keys, s->nodes[i]);
    node_free(s->nodes[i]);
    memmove(s->nodes + i, s->nodes + i + 1, (s->nnodes - i - 1) * sizeof(*s->nodes));
    s->nnodes--;
    return true;
}

static void put_user(struct state *s, struct store_user *u)
{
    size_t i = user_pos(s, u->id);
    if (i < s->nusers && s->users[i]->u.id == u->id) {
        store_user_free(&s->users[i]->u);
        s->users[i]->u = *u;
        return;
    }
    if (s->nusers == s->capusers) {
        s->capusers = s->capusers ? 2 * s->capusers : 16;
        s->users = hs_xrealloc(s->users, s->capusers * sizeof(*s->users));
    }
    memmove(s->users + i + 1, s->users + i, (s->nusers - i) * sizeof(*s->users));
    s->users[i] = hs_xcalloc(1, sizeof(struct state_user));
    s->users[i]->u = *u;
    s->nusers++;
}

static void drop_user(struct state *s, uint64_t id)
{
    size_t i = user_pos(s, id);
    if (i >= s->nusers || s->users[i]->u.id != id)
        return;
    user_free(s->users[i]);
    memmove(s->users + i, s->users + i + 1, (s->nusers - i - 1) * sizeof(*s->users));
    s->nusers--;
}

static void emit_fields(struct state *s, enum state_change_kind kind, uint64_t id,
                        unsigned fields)
{
    struct state_change ch = { .kind = kind, .id = id, .fields = fields };
    for (size_t i = 0; i < s->nlisteners; i++)
        s->listeners[i].fn(s->listeners[i].arg, &ch);
}

static void emit(struct state *s, enum state_change_kind kind, uint64_t id)
{
    emit_fields(s, kind, id, STATE_F_OTHER);
}

void state__emit(struct state *s, enum state_change_kind kind, uint64_t id)
{
    emit(s, kind, id);
}

/* Hostinfo without NetInfo: NetInfo (DERP latencies, mostly) changes all the time and peers
 * need only the home region from it, which travels separately. */
static bool hostinfo_same(const char *a, const char *b)
{
    json_t *ja, *jb;
    bool same;

    if (hs_streq(a, b))
        return true;
    ja = a ? json_loads(a, 0, NULL) : json_object();
    jb = b ? json_loads(b, 0, NULL) : json_object();
    json_object_del(ja, "NetInfo");
    json_object_del(jb, "NetInfo");
    same = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return same;
}

/* What differs between two versions of a node, as peers see it (0 = nothing visible). */
static unsigned node_diff(const struct store_node *a, const struct store_node *b, int old_derp,
                          int new_derp)
{
    unsigned f = 0;

    if (!hs_streq(a->endpoints_json, b->endpoints_json))
        f |= STATE_F_ENDPOINTS;
    if (memcmp(a->disco_key, b->disco_key, 32) != 0)
        f |= STATE_F_DISCO_KEY;
    if (memcmp(a->node_key, b->node_key, 32) != 0)
        f |= STATE_F_NODE_KEY;
    if (old_derp != new_derp)
        f |= STATE_F_HOME_DERP;
    if (!hostinfo_same(a->hostinfo_json, b->hostinfo_json))
        f |= STATE_F_HOSTINFO;
    if (!hs_streq(a->ipv4, b->ipv4) ||
        !hs_streq(a->ipv6, b->ipv6) || !hs_streq(a->hostname, b->hostname) ||
        !hs_streq(a->given_name, b->given_name) || a->user_id != b->user_id ||
        !hs_strv_equal(&a->tags, &b->tags) ||
        !hs_strv_equal(&a->approved_routes, &b->approved_routes) ||
        a->expiry != b->expiry || memcmp(a->machine_key, b->machine_key, 32) != 0)
        f |= STATE_F_OTHER;
    return f;
}

/* Whether the compiled policy depends on what differs between two versions of a node (the
 * fields of struct policy_node; routes compared as the Hostinfo they come from). */
static bool policy_relevant(const struct state_node *old, const struct store_node *b)
{
    const struct store_node *a = &old->n;
    struct hs_strv routes = { 0 };
    bool differ;

    if (!hs_streq(a->ipv4, b->ipv4) || !hs_streq(a->ipv6, b->ipv6) ||
        !hs_streq(a->given_name, b->given_name) || a->user_id != b->user_id ||
        !hs_strv_equal(&a->tags, &b->tags) ||
        !hs_strv_equal(&a->approved_routes, &b->approved_routes))
        return true;
    if (hs_streq(a->hostinfo_json, b->hostinfo_json))
        return false;
    if (old->routes.n == 0 && (!b->hostinfo_json || !strstr(b->hostinfo_json, "\"RoutableIPs\"")))
        return false; /* most Hostinfo updates: no routes before or after, nothing to parse */
    hostinfo_facts(b, &routes);
    differ = !hs_strv_equal(&old->routes, &routes);
    hs_strv_free(&routes);
    return differ;
}

/* Nodes whose primary routes moved, reported to listeners as changed. */
struct moved {
    uint64_t *v;
    size_t n;
};

static void emit_moved(struct state *s, struct moved *m, uint64_t skip)
{
    bool any = m->n > 0;

    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i] != skip)
            emit(s, STATE_NODE_CHANGED, m->v[i]);
    }
    free(m->v);
    *m = (struct moved){ 0 };
    if (any) /* the other replicas' clients follow the elected replica's election */
        state__publish(s);
}

/* The ids a recompile after a change of node id must look at: id and the nodes whose
 * primaries the election moved (malloc'd). */
static uint64_t *with_moved(uint64_t id, const struct moved *m, size_t *n)
{
    uint64_t *v = hs_xcalloc(m->n + 1, sizeof(*v));
    size_t k = 0;

    v[k++] = id;
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i] != id)
            v[k++] = m->v[i];
    }
    *n = k;
    return v;
}

/* A deep copy of a node's stored fields. */
static void node_copy(const struct store_node *a, struct store_node *b)
{
    *b = *a;
    b->ipv4 = hs_strdup(a->ipv4);
    b->ipv6 = hs_strdup(a->ipv6);
    b->hostname = hs_strdup(a->hostname);
    b->given_name = hs_strdup(a->given_name);
    b->endpoints_json = hs_strdup(a->endpoints_json);
    b->hostinfo_json = hs_strdup(a->hostinfo_json);
    b->tags = (struct hs_strv){ 0 };
    b->approved_routes = (struct hs_strv){ 0 };
    hs_strv_copy(&b->tags, &a->tags);
    hs_strv_copy(&b->approved_routes, &a->approved_routes);
}

static void set_text(char **dst, const char *src)
{
    free(*dst);
    *dst = hs_strdup(src);
}

/* The fields (STORE_NODE_BIT()s of what nodes report) of from, copied into to. */
static void copy_reported(struct store_node *to, const struct store_node *from, unsigned fields)
{
    if (fields & STORE_NODE_BIT(STORE_NODE_DISCO_KEY))
        memcpy(to->disco_key, from->disco_key, 32);
    if (fields & STORE_NODE_BIT(STORE_NODE_ENDPOINTS))
        set_text(&to->endpoints_json, from->endpoints_json);
    if (fields & STORE_NODE_BIT(STORE_NODE_HOSTINFO))
        set_text(&to->hostinfo_json, from->hostinfo_json);
    if (fields & STORE_NODE_BIT(STORE_NODE_HOSTNAME))
        set_text(&to->hostname, from->hostname ? from->hostname : ""); /* as stored */
    if (fields & STORE_NODE_BIT(STORE_NODE_LAST_SEEN))
        to->last_seen = from->last_seen;
}

struct state_node *state__node(struct state *s, uint64_t id)
{
    size_t i = node_pos(s, id);
    return i < s->nnodes && s->nodes[i]->n.id == id ? s->nodes[i] : NULL;
}

/* wmu held. Installs row (taken over; NULL: the node is gone) as the node id. A row from the
 * store (reported 0) older than the one in memory is dropped, and the fields the node
 * reported that are not stored yet stay as in memory; a row that is the node's own report
 * (its fields in reported) marks them unsaved. Returns the change to report, what differs
 * in *fields (0: nothing to tell); routers whose primaries moved because of it are left in
 * *m. */
static enum state_change_kind install_node(struct state *s, uint64_t id, struct store_node *row,
                                           unsigned reported, unsigned *fields, struct moved *m)
{
    enum state_change_kind kind;
    struct state_node *old;
    bool relevant = true, exact;

    *fields = STATE_F_OTHER;
    pthread_rwlock_wrlock(&s->lock);
    old = state__node(s, id);
    if (row && old && !reported && row->revision < old->n.revision) {
        pthread_rwlock_unlock(&s->lock); /* a stale read: memory has newer */
        store_node_free(row);
        *fields = 0;
        return STATE_NODE_CHANGED;
    }
    if (row && old) {
        if (!reported)
            copy_reported(row, &old->n, old->unsaved);
        *fields = node_diff(&old->n, row, old->home_derp, home_derp_of(row));
        relevant = policy_relevant(old, row);
    }
    if (row) {
        kind = put_node(s, row) ? STATE_NODE_ADDED : STATE_NODE_CHANGED;
        if (reported) {
            struct state_node *sn = state__node(s, id);
            sn->unsaved |= reported;
            sn->reports++;
            state__writer_queue(s, sn);
        }
    } else {
        kind = drop_node(s, id) ? STATE_NODE_REMOVED : STATE_NODE_CHANGED;
        relevant = kind == STATE_NODE_REMOVED;
    }
    /* Its served routes may have changed: so may the primaries. */
    if (relevant && (m->n = state__elect(s, &m->v)) > 0) {
        for (size_t i = 0; i < m->n; i++)
            if (m->v[i] == id)
                *fields |= STATE_F_OTHER;
    }
    exact = s->net_exact;
    if (relevant)
        s->net_exact = false; /* until the recompile below installs a net for these nodes */
    pthread_rwlock_unlock(&s->lock);
    if (relevant) { /* only these nodes changed since the net was compiled, if it was exact */
        size_t nids;
        uint64_t *ids = with_moved(id, m, &nids);
        state__recompile(s, exact ? ids : NULL, exact ? nids : 0);
        free(ids);
    }
    return kind;
}

/* Whether memory has the node at this revision or a newer one (an announcement of a write
 * already installed, or overtaken by a newer one: nothing to read). */
static bool have_revision(struct state *s, uint64_t id, uint64_t revision)
{
    const struct state_node *sn;
    bool have;

    if (!revision)
        return false;
    pthread_rwlock_rdlock(&s->lock);
    sn = state__node(s, id);
    have = sn && sn->n.revision >= revision;
    pthread_rwlock_unlock(&s->lock);
    return have;
}

/* Re-reads the node; returns the change to report (as install_node). */
static enum state_change_kind reload_node(struct state *s, uint64_t id, unsigned *fields,
                                          struct moved *m)
{
    struct store_node n;
    enum state_change_kind kind;
    int rc;

    /* Read and installed under wmu: two reloads of one row (ours and another replica's
     * announcement of it) install in the order they read, so the newer row stays. */
    pthread_mutex_lock(&s->wmu);
    rc = store_node_get(s->st, id, &n);
    if (rc < 0 && rc != -ENOENT) {
        /* Not "gone": the database did not answer. Peers keep the node as it was. */
        pthread_mutex_unlock(&s->wmu);
        state__stale(s, "a node", rc);
        *fields = 0;
        return STATE_NODE_CHANGED;
    }
    kind = install_node(s, id, rc == 0 ? &n : NULL, 0, fields, m);
    pthread_mutex_unlock(&s->wmu);
    return kind;
}

/* Whether the policy can tell the two apart: its users are ids, names, emails and the
 * provider's groups. */
static bool user_relevant(const struct state *s, uint64_t id, const struct store_user *u)
{
    const struct state_user *old = state_user_by_id((struct state *)s, id);

    if (!old || !u)
        return old || u;
    return !hs_streq(old->u.name, u->name) || !hs_streq(old->u.email, u->email) ||
           !hs_strv_equal(&old->u.groups, &u->groups);
}

/* Whether the user was read (or found gone). */
static bool reload_user(struct state *s, uint64_t id)
{
    struct store_user u;
    bool relevant;
    int rc;

    pthread_mutex_lock(&s->wmu); /* read under it too, as reload_node */
    rc = store_user_get(s->st, id, &u);
    if (rc < 0 && rc != -ENOENT) {
        pthread_mutex_unlock(&s->wmu);
        state__stale(s, "a user", rc);
        return false;
    }
    pthread_rwlock_wrlock(&s->lock);
    relevant = user_relevant(s, id, rc == 0 ? &u : NULL);
    if (rc == 0)
        put_user(s, &u);
    else
        drop_user(s, id);
    /* A user's name can be part of its nodes' names (0.22 MagicDNS form). */
    for (size_t i = 0; i < s->nnodes; i++)
        if (s->nodes[i]->n.user_id == id)
            drop_cache(s, s->nodes[i]);
    if (relevant)
        s->net_exact = false;
    pthread_rwlock_unlock(&s->lock);
    if (relevant)
        state__recompile(s, NULL, 0); /* users changed: everything may have */
    pthread_mutex_unlock(&s->wmu);
    return true;
}

/* ---- reading everything again (changes from other replicas were missed) ---- */

/* What a resync found different, to report once the locks are released. */
struct found {
    struct state_change *v;
    size_t n, cap;
};

static void found_add(struct found *f, enum state_change_kind kind, uint64_t id,
                      unsigned fields)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 16;
        f->v = hs_xrealloc(f->v, f->cap * sizeof(*f->v));
    }
    f->v[f->n++] = (struct state_change){ .kind = kind, .id = id, .fields = fields };
}

static bool user_same(const struct store_user *a, const struct store_user *b)
{
    return hs_streq(a->name, b->name) && hs_streq(a->display_name, b->display_name) &&
           hs_streq(a->email, b->email) && hs_streq(a->provider_id, b->provider_id) &&
           hs_streq(a->profile_pic_url, b->profile_pic_url) &&
           hs_strv_equal(&a->groups, &b->groups);
}

/* Write lock held: the users as listed (id order; taken over), the ones gone dropped. */
static void resync_users(struct state *s, struct store_user *v, size_t n, struct found *f)
{
    uint64_t *ids = hs_xcalloc(n + 1, sizeof(*ids));

    for (size_t i = 0; i < n; i++) {
        const struct state_user *old = state_user_by_id(s, v[i].id);
        ids[i] = v[i].id;
        if (old && user_same(&old->u, &v[i])) {
            store_user_free(&v[i]);
            continue;
        }
        found_add(f, STATE_USER_CHANGED, v[i].id, STATE_F_OTHER);
        put_user(s, &v[i]);
    }
    for (size_t i = s->nusers; i-- > 0;) {
        uint64_t id = s->users[i]->u.id;
        if (!hs_ids_has(ids, n, id)) {
            found_add(f, STATE_USER_CHANGED, id, STATE_F_OTHER);
            drop_user(s, id);
        }
    }
    free(ids);
}

/* Write lock held: the same for nodes (as install_node would have them); runtime fields
 * (online, sessions) stay. */
static void resync_nodes(struct state *s, struct store_node *v, size_t n, struct found *f)
{
    uint64_t *ids = hs_xcalloc(n + 1, sizeof(*ids));

    for (size_t i = 0; i < n; i++) {
        size_t pos = node_pos(s, v[i].id);
        unsigned fields = STATE_F_OTHER;
        ids[i] = v[i].id;
        if (pos < s->nnodes && s->nodes[pos]->n.id == v[i].id) {
            struct state_node *sn = s->nodes[pos];
            if (v[i].revision < sn->n.revision) { /* memory has newer (install_node) */
                store_node_free(&v[i]);
                continue;
            }
            copy_reported(&v[i], &sn->n, sn->unsaved);
            fields = node_diff(&sn->n, &v[i], sn->home_derp, home_derp_of(&v[i]));
            if (!fields) {
                store_node_free(&v[i]);
                continue;
            }
        }
        found_add(f, put_node(s, &v[i]) ? STATE_NODE_ADDED : STATE_NODE_CHANGED, ids[i],
                  fields);
    }
    for (size_t i = s->nnodes; i-- > 0;) {
        uint64_t id = s->nodes[i]->n.id;
        if (!hs_ids_has(ids, n, id)) {
            found_add(f, STATE_NODE_REMOVED, id, STATE_F_OTHER);
            drop_node(s, id);
        }
    }
    free(ids);
}

/* Everything read again and compared: what differs is installed, compiled once and reported
 * as the single-row events would have reported it. Under wmu throughout, so no single-row
 * reload interleaves. */
static void resync(struct state *s)
{
    struct store_user *users = NULL;
    struct store_node *nodes = NULL;
    size_t nu = 0, nn = 0;
    struct found f = { 0 };
    struct moved m = { 0 };
    bool users_changed;
    int rc;

    pthread_mutex_lock(&s->wmu);
    if ((rc = store_user_list(s->st, NULL, &users, &nu)) < 0 ||
        (rc = store_node_list(s->st, 0, &nodes, &nn)) < 0) {
        pthread_mutex_unlock(&s->wmu);
        store_user_list_free(users, nu);
        state__stale(s, "users and nodes", rc);
        return;
    }
    pthread_rwlock_wrlock(&s->lock);
    resync_users(s, users, nu, &f);
    users_changed = f.n > 0;
    resync_nodes(s, nodes, nn, &f);
    free(users); /* members now belong to the state, or were freed */
    free(nodes);
    for (size_t i = 0; users_changed && i < s->nnodes; i++)
        drop_cache(s, s->nodes[i]); /* user names are in node names (0.22 MagicDNS form) */
    m.n = state__elect(s, &m.v);
    s->net_exact = false;
    pthread_rwlock_unlock(&s->lock);
    state__recompile(s, NULL, 0);
    pthread_mutex_unlock(&s->wmu);
    log_info("state: read again: %zu users and %zu nodes, %zu changes", nu, nn, f.n);
    for (size_t i = 0; i < f.n; i++)
        emit_fields(s, f.v[i].kind, f.v[i].id, f.v[i].fields);
    free(f.v);
    emit_moved(s, &m, 0);
    state__policy_event(s);
    state__dns_event(s);
    emit(s, STATE_REGISTRATION_CHANGED, 0);
    state__auto_approve_all(s);
}

static void presence_all(struct state *s);
static void shared_all(struct state *s);
static void apply_health(struct state *s, const uint64_t *ids, const bool *healthy, size_t n);

/* Another replica published primaries (or we did: the store tells us too). A follower applies
 * them; the elected replica keeps its own choice and only notes what the table holds, so
 * that state_retry writes its choice again should a deposed replica have replaced it. */
static void primaries_event(struct state *s)
{
    struct store_primary *v = NULL;
    struct moved m = { 0 };
    size_t n = 0;
    int rc;

    if ((rc = store_primaries_get(s->st, &v, &n)) < 0) {
        state__stale(s, "the primary routers", rc);
        return;
    }
    pthread_mutex_lock(&s->wmu);
    pthread_rwlock_wrlock(&s->lock);
    state__published_install(s, v, n);
    pthread_rwlock_unlock(&s->lock);
    if (!state_elected(s))
        m.n = state__elect_compile(s, &m.v);
    pthread_mutex_unlock(&s->wmu);
    store_primaries_free(v, n);
    emit_moved(s, &m, 0);
}

static void remote_presence(struct state *s, uint64_t id)
{
    bool elsewhere;
    int rc = store_presence_node(s->st, id, &elsewhere);

    if (rc < 0)
        log_warnx("state: cannot read where node %llu is connected: %s",
                  (unsigned long long)id, hs_strerror(rc));
    else
        state_node_remote(s, id, elsewhere);
}

static void on_event(const struct notify_event *ev, void *arg)
{
    struct state *s = arg;

    switch (ev->entity) {
    case NOTIFY_NODE: {
        struct moved m = { 0 };
        unsigned fields;
        enum state_change_kind kind;
        if (have_revision(s, ev->id, ev->revision))
            break;
        kind = reload_node(s, ev->id, &fields, &m);
        if (kind != STATE_NODE_CHANGED || fields)
            emit_fields(s, kind, ev->id, fields);
        if (kind != STATE_NODE_REMOVED)
            state__auto_approve(s, ev->id); /* its announced routes may be new */
        emit_moved(s, &m, ev->id);
        break;
    }
    case NOTIFY_USER:
        if (reload_user(s, ev->id))
            emit(s, STATE_USER_CHANGED, ev->id);
        break;
    case NOTIFY_POLICY:
        state__policy_event(s); /* reloads the stored row and tells listeners if it took */
        break;
    case NOTIFY_DNS:
        state__dns_event(s);
        break;
    case NOTIFY_REGISTRATION:
        emit(s, STATE_REGISTRATION_CHANGED, 0);
        break;
    case NOTIFY_PRESENCE: /* ours too: the rows we delete for a dead replica */
        remote_presence(s, ev->id);
        break;
    case NOTIFY_PRIMARY:
        primaries_event(s);
        break;
    case NOTIFY_HEALTH: { /* a mark made is announced as created, a mark cleared as deleted */
        bool healthy = ev->op == NOTIFY_DELETE;
        apply_health(s, &ev->id, &healthy, 1);
        break;
    }
    case NOTIFY_RESYNC:
        resync(s);
        presence_all(s);
        shared_all(s);
        break;
    default:
        break;
    }
}

static int load_all(struct state *s)
{
    struct store_user *users;
    struct store_node *nodes;
    size_t nu, nn;
    int rc;

    if ((rc = store_user_list(s->st, NULL, &users, &nu)) < 0)
        return rc;
    for (size_t i = 0; i < nu; i++)
        put_user(s, &users[i]);
    free(users); /* members now belong to the state */
    if ((rc = store_node_list(s->st, 0, &nodes, &nn)) < 0)
        return rc;
    for (size_t i = 0; i < nn; i++)
        put_node(s, &nodes[i]);
    free(nodes);
    return 0;
}

int state_new(struct store *st, struct notify_bus *bus, struct state **out)
{
    struct state *s = hs_xcalloc(1, sizeof(*s));
    char err[256];
    int rc;

    pthread_rwlock_init(&s->lock, NULL);
    state__keys_init(&s->keys);
    /* Among replicas nothing is done once for all before the election says so. */
    atomic_init(&s->elected, !store_shared(st));
    s->shared = store_shared(st);
    pthread_mutex_init(&s->pub_mu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    pthread_mutex_init(&s->dns_mu, NULL);
    state__writer_init(s);
    s->st = st;
    s->bus = bus;
    s->expiry_checked = hs_now_us(); /* already expired at start: clients learn it on connect */
    if ((rc = load_all(s)) < 0) {
        state_free(s);
        return rc;
    }
    state__list_routers(s); /* no one online yet: no primaries to elect */
    pthread_mutex_lock(&s->wmu);
    /* No policy yet: everyone sees everyone. */
    rc = state__compile(s, NULL, &s->net, err, sizeof(err));
    if (rc == 0)
        s->net->gen = ++s->gens;
    s->net_exact = rc == 0;
    pthread_mutex_unlock(&s->wmu);
    if (rc < 0) {
        state_free(s);
        return rc;
    }
    presence_all(s); /* nodes connected to other replicas are online */
    shared_all(s);   /* and routed as the elected replica decided */
    if (bus && (s->sub_id = notify_subscribe(bus, on_event, s)) < 0) {
        rc = s->sub_id;
        state_free(s);
        return rc;
    }
    if (bus)
        state__writer_start(s);
    *out = s;
    return 0;
}

void state_free(struct state *s)
{
    if (!s)
        return;
    state__writer_stop(s); /* writes what nodes reported last */
    if (s->sub_id > 0)
        notify_unsubscribe(s->bus, s->sub_id);
    for (size_t i = 0; i < s->nnodes; i++)
        node_free(s->nodes[i]);
    for (size_t i = 0; i < s->nusers; i++)
        user_free(s->users[i]);
    free(s->nodes);
    state__keys_free(&s->keys);
    free(s->users);
    state__policy_free(s);
    state_dns_put(s->dns);
    pthread_mutex_destroy(&s->dns_mu);
    state__routes_free(s);
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->pub_mu);
    pthread_mutex_destroy(&s->hmu);
    free(s);
}

void state_listen(struct state *s, state_listener_fn fn, void *arg)
{
    if (s->nlisteners < STATE_MAX_LISTENERS) {
        s->listeners[s->nlisteners].fn = fn;
        s->listeners[s->nlisteners].arg = arg;
        s->nlisteners++;
    }
}

void state_rdlock(struct state *s) { pthread_rwlock_rdlock(&s->lock); }
void state_unlock(struct state *s) { pthread_rwlock_unlock(&s->lock); }

const struct state_node *state_node_by_id(struct state *s, uint64_t id)
{
    return state__node(s, id);
}

const struct state_node *state_node_find(struct state *s, const uint8_t machine_key[32],
                                         const uint8_t node_key[32])
{
    return state__keys_find(&s->keys, machine_key, node_key);
}

const struct state_node *state_node_by_nodekey(struct state *s, const uint8_t key[32])
{
    return state_node_find(s, NULL, key);
}

const struct state_user *state_user_by_id(struct state *s, uint64_t id)
{
    size_t i = user_pos(s, id);
    return i < s->nusers && s->users[i]->u.id == id ? s->users[i] : NULL;
}

size_t state_node_count(struct state *s) { return s->nnodes; }
const struct state_node *state_node_at(struct state *s, size_t i) { return s->nodes[i]; }
size_t state_user_count(struct state *s) { return s->nusers; }
const struct state_user *state_user_at(struct state *s, size_t i) { return s->users[i]; }

/* Write lock held: online again from sessions here and there; whether it flipped. */
static bool update_online(struct state *s, struct state_node *n)
{
    bool online = n->sessions > 0 || n->remote;

    if (n->online == online)
        return false;
    n->online = online;
    drop_cache(s, n); /* Online and LastSeen are in it */
    if (online)
        n->online_since = hs_now_us();
    n->disconnected_at = online ? 0 : hs_monotonic_us();
    if (!online)
        n->unhealthy = false; /* an offline node is no candidate */
    return true;
}

/* After the online flags of ids flipped (or a health mark changed): if a router came or went
 * (router), primaries may move (failover); listeners hear it all. Most nodes route nothing and
 * never wait for wmu here. */
static void online_changed(struct state *s, const uint64_t *ids, size_t n, bool router)
{
    struct moved m = { 0 };

    if (router) {
        pthread_mutex_lock(&s->wmu);
        m.n = state__elect_compile(s, &m.v);
        pthread_mutex_unlock(&s->wmu);
    }
    for (size_t i = 0; i < n; i++)
        emit(s, STATE_NODE_ONLINE, ids[i]);
    emit_moved(s, &m, 0);
}

void state_node_session(struct state *s, uint64_t id, bool opened, uint16_t capver)
{
    bool changed = false, router = false, here = false, new_cap = false;
    size_t i;

    pthread_rwlock_wrlock(&s->lock);
    i = node_pos(s, id);
    if (i < s->nnodes && s->nodes[i]->n.id == id) {
        struct state_node *n = s->nodes[i];
        bool was_unhealthy = n->unhealthy;
        here = opened ? n->sessions == 0 : n->sessions == 1;
        if (opened)
            n->sessions++;
        else if (n->sessions)
            n->sessions--;
        changed = update_online(s, n);
        if (capver && opened && n->capver != capver) {
            n->capver = capver;
            drop_cache(s, n); /* Cap is in its peer JSON (online may not have flipped) */
            new_cap = true;
        }
        if (opened) {
            n->session_epoch++;
            n->unhealthy = false; /* a new session proves the node reachable again */
        }
        router = (changed || was_unhealthy != n->unhealthy) && state__serves_subnet(n);
    }
    pthread_rwlock_unlock(&s->lock);
    if (here)
        emit(s, STATE_NODE_HERE, id);
    /* Peers that were sent the node before its first map request (at its registration, or
     * before a restart) hold it without its capability version: a full map has it, so
     * deltas must tell it too. */
    if (new_cap)
        emit_fields(s, STATE_NODE_CHANGED, id, STATE_F_CAP);
    online_changed(s, &id, changed ? 1 : 0, router);
}

void state_node_remote(struct state *s, uint64_t id, bool elsewhere)
{
    bool changed = false, router = false;
    size_t i;

    pthread_rwlock_wrlock(&s->lock);
    i = node_pos(s, id);
    if (i < s->nnodes && s->nodes[i]->n.id == id) {
        s->nodes[i]->remote = elsewhere;
        changed = update_online(s, s->nodes[i]);
        router = changed && state__serves_subnet(s->nodes[i]);
    }
    pthread_rwlock_unlock(&s->lock);
    online_changed(s, &id, changed ? 1 : 0, router);
}

/* Every node's presence on other replicas read again (at start and after a resync). */
static void presence_all(struct state *s)
{
    uint64_t *ids;
    size_t n;
    struct hs_ids flipped = { 0 };
    bool router = false;
    int rc;

    if ((rc = store_presence_others(s->st, &ids, &n)) < 0) {
        log_warnx("state: cannot read which nodes other replicas serve: %s", hs_strerror(rc));
        return;
    }
    pthread_rwlock_wrlock(&s->lock);
    for (size_t i = 0; i < s->nnodes; i++) {
        struct state_node *sn = s->nodes[i];
        sn->remote = hs_ids_has(ids, n, sn->n.id);
        if (update_online(s, sn)) {
            hs_ids_push(&flipped, sn->n.id);
            router = router || state__serves_subnet(sn);
        }
    }
    pthread_rwlock_unlock(&s->lock);
    free(ids);
    online_changed(s, flipped.v, flipped.n, router);
    hs_ids_free(&flipped);
}

static void apply_health(struct state *s, const uint64_t *ids, const bool *healthy, size_t n)
{
    struct moved m = { 0 };

    pthread_mutex_lock(&s->wmu);
    if (state__set_health(s, ids, healthy, n))
        m.n = state__elect_compile(s, &m.v);
    pthread_mutex_unlock(&s->wmu);
    emit_moved(s, &m, 0);
}

void state_set_health(struct state *s, const uint64_t *ids, const bool *healthy, size_t n)
{
    int rc;

    if (!s->shared) {
        apply_health(s, ids, healthy, n);
        return;
    }
    /* Every replica, this one too, gets the marks from the store's announcements: the
     * elected one decides with them. */
    if ((rc = store_health_set(s->st, ids, healthy, n)) < 0)
        log_warnx("state: cannot record the verdicts of HA probes: %s", hs_strerror(rc));
}

/* Replicas: the published primaries and the health marks read again (at start, and after
 * changes were missed). */
static void shared_all(struct state *s)
{
    struct store_primary *v = NULL;
    uint64_t *bad = NULL;
    size_t nv = 0, nbad = 0;
    struct moved m = { 0 };
    int rc;

    if (!s->shared)
        return;
    if ((rc = store_primaries_get(s->st, &v, &nv)) < 0 ||
        (rc = store_health_unhealthy(s->st, &bad, &nbad)) < 0) {
        store_primaries_free(v, nv);
        state__stale(s, "the primary routers", rc);
        return;
    }
    pthread_mutex_lock(&s->wmu);
    pthread_rwlock_wrlock(&s->lock);
    state__published_install(s, v, nv);
    state__health_install(s, bad, nbad);
    pthread_rwlock_unlock(&s->lock);
    m.n = state__elect_compile(s, &m.v);
    pthread_mutex_unlock(&s->wmu);
    store_primaries_free(v, nv);
    free(bad);
    emit_moved(s, &m, 0);
}

void state_refresh_node(struct state *s, uint64_t id)
{
    struct moved m = { 0 };
    unsigned fields;

    reload_node(s, id, &fields, &m);
    emit_moved(s, &m, 0);
}

/* A report (install_node) and what follows it: listeners told, autoApprovers asked when
 * the Hostinfo (its routes) changed. */
int state_node_report(struct state *s, uint64_t id, unsigned fields, const struct store_node *v)
{
    struct store_node row;
    struct moved m = { 0 };
    enum state_change_kind kind;
    const struct state_node *sn;
    unsigned changed;

    fields &= STATE_REPORTED;
    if (!fields)
        return 0;
    pthread_mutex_lock(&s->wmu); /* the node's stored fields change under it only */
    pthread_rwlock_rdlock(&s->lock);
    if ((sn = state__node(s, id)))
        node_copy(&sn->n, &row);
    pthread_rwlock_unlock(&s->lock);
    if (!sn) {
        pthread_mutex_unlock(&s->wmu);
        return -ENOENT;
    }
    copy_reported(&row, v, fields);
    kind = install_node(s, id, &row, fields, &changed, &m);
    pthread_mutex_unlock(&s->wmu);
    if (changed)
        emit_fields(s, kind, id, changed);
    if (fields & STORE_NODE_BIT(STORE_NODE_HOSTINFO))
        state__auto_approve(s, id);
    emit_moved(s, &m, id);
    return 0;
}

void state_node_seen(struct state *s, uint64_t id, int64_t at)
{
    struct state_node *sn;

    pthread_mutex_lock(&s->wmu);
    pthread_rwlock_wrlock(&s->lock);
    if ((sn = state__node(s, id))) {
        sn->n.last_seen = at;
        drop_cache(s, sn); /* LastSeen is in it */
        sn->unsaved |= STORE_NODE_BIT(STORE_NODE_LAST_SEEN);
        sn->reports++;
        state__writer_queue(s, sn);
    }
    pthread_rwlock_unlock(&s->lock);
    pthread_mutex_unlock(&s->wmu);
}

/* Whether expiry e passed between the last check and now, or, the wall clock having been set
 * back past it, is to come again: either way the node's "Expired" changed. */
static bool expiry_flipped(const struct state *s, int64_t e, int64_t now)
{
    return e && (e <= now) != (e <= s->expiry_checked);
}

static bool expiry_due(struct state *s, int64_t now)
{
    bool due = false;

    pthread_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < s->nnodes && !due; i++)
        due = expiry_flipped(s, s->nodes[i]->n.expiry, now);
    pthread_rwlock_unlock(&s->lock);
    return due;
}

void state__stale(struct state *s, const char *what, int rc)
{
    if (!atomic_exchange(&s->stale, true))
        log_warnx("state: cannot read %s: %s; keeping what is known, and reading everything "
                  "again once the database answers", what, hs_strerror(rc));
}

void state_set_elected(struct state *s, bool elected)
{
    struct moved m = { 0 };

    if (atomic_exchange(&s->elected, elected) == elected || !s->shared)
        return;
    /* Elected: the primaries are ours to decide from now on, starting from the published
     * ones (a primary stays while online and healthy: no flap). Deposed: the next elected
     * replica's choice is applied. */
    pthread_mutex_lock(&s->wmu);
    m.n = state__elect_compile(s, &m.v);
    pthread_mutex_unlock(&s->wmu);
    emit_moved(s, &m, 0);
    state__publish(s);
}
bool state_elected(struct state *s) { return atomic_load(&s->elected); }

void state_retry(struct state *s)
{
    state__publish(s); /* a publication that failed, or a deposed replica's that replaced ours */
    if (!atomic_exchange(&s->stale, false))
        return;
    resync(s); /* marks the state stale again if the database still does not answer */
    if (!atomic_load(&s->stale)) {
        presence_all(s);
        shared_all(s);
    }
}

void state_check_expiry(struct state *s, int64_t now)
{
    struct { uint64_t *v; size_t n; } due = { 0 };

    /* Called every second: look under the read lock, write only when something flipped. */
    if (!expiry_due(s, now)) {
        s->expiry_checked = now;
        return;
    }
    pthread_rwlock_wrlock(&s->lock);
    for (size_t i = 0; i < s->nnodes; i++) {
        struct state_node *n = s->nodes[i];
        if (expiry_flipped(s, n->n.expiry, now)) {
            drop_cache(s, n); /* "Expired" is in it */
            due.v = hs_xrealloc(due.v, (due.n + 1) * sizeof(*due.v));
            due.v[due.n++] = n->n.id;
        }
    }
    s->expiry_checked = now;
    pthread_rwlock_unlock(&s->lock);
    for (size_t i = 0; i < due.n; i++)
        emit(s, STATE_NODE_CHANGED, due.v[i]);
    free(due.v);
}
