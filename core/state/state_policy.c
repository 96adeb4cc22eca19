/* state: the policy in force and its compiled forms (state.h, "the policy in force"). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_internal.h"

#define STATE_POLICY_ERR_MAX 512

static void net_free(struct state_net *n)
{
    if (!n)
        return;
    policy_net_free(n->pn);
    free(n->ids);
    free(n);
}

void state_net_ref(struct state_net *n)
{
    __atomic_add_fetch(&n->refs, 1, __ATOMIC_RELAXED);
}

void state_net_unref(struct state_net *n)
{
    if (n && __atomic_sub_fetch(&n->refs, 1, __ATOMIC_ACQ_REL) == 0)
        net_free(n);
}

struct state_net *state_net_current(struct state *s) { return s->net; }
const struct policy_net *state_net_policy(const struct state_net *n) { return n->pn; }
uint64_t state_net_gen(const struct state_net *n) { return n->gen; }
bool state_net_all(const struct state_net *n) { return n->all; }
size_t state_net_count(const struct state_net *n) { return n->n; }
uint64_t state_net_id(const struct state_net *n, size_t i) { return n->ids[i]; }

size_t state_net_index(const struct state_net *n, uint64_t id)
{
    size_t lo = 0, hi = n->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (n->ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n->n && n->ids[lo] == id ? lo : STATE_NET_NONE;
}

bool state_net_exact(struct state *s, const struct state_net *n)
{
    return n == s->net && s->net_exact;
}

size_t state_net_index_at(struct state *s, const struct state_net *n, size_t i)
{
    if (state_net_exact(s, n))
        return i;
    return state_net_index(n, state_node_at(s, i)->n.id);
}

bool state_net_sees_all(const struct state_net *n, size_t a)
{
    return a != STATE_NET_NONE && (n->all || policy_net_sees_all(n->pn, a));
}

bool state_net_sees(const struct state_net *n, size_t a, size_t b)
{
    if (a == STATE_NET_NONE || b == STATE_NET_NONE || a == b)
        return false;
    return n->all || policy_net_sees(n->pn, a, b);
}

uint64_t *state_net_sees_row(const struct state_net *n, size_t a)
{
    size_t words = (n->n + 63) / 64;
    uint64_t *row = hs_xcalloc(words ? words : 1, sizeof(*row));

    if (a == STATE_NET_NONE || a >= n->n)
        return row;
    if (!n->all) {
        policy_net_sees_row(n->pn, a, row);
        return row;
    }
    for (size_t b = 0; b < n->n; b++)
        if (b != a)
            row[b / 64] |= UINT64_C(1) << (b % 64);
    return row;
}

const uint64_t *state_net_ids(const struct state_net *n)
{
    return n->ids;
}

uint64_t *state_net_minus(const struct state_net *n, const struct state_net *other, size_t *count)
{
    uint64_t *v = hs_xcalloc(n->n ? n->n : 1, sizeof(*v));
    size_t k = 0, j = 0;

    /* Both lists ascend: one merge walk. */
    for (size_t i = 0; i < n->n; i++) {
        while (other && j < other->n && other->ids[j] < n->ids[i])
            j++;
        if (!other || j == other->n || other->ids[j] != n->ids[i])
            v[k++] = n->ids[i];
    }
    *count = k;
    return v;
}

const struct policy_net *state_policy_net(struct state *s) { return s->net->pn; }

size_t state_node_net_index(struct state *s, uint64_t id)
{
    return state_net_index(s->net, id);
}

/* ---- compiling ---- */

/* The tailnet as policy_compile() wants it; strings borrowed from the state (wmu held). */
struct topology {
    struct policy_topology t;
    struct policy_user *users;
    struct policy_node *nodes;
};

/* u as the policy sees it (strings borrowed). */
static struct policy_user policy_user_of(const struct store_user *u)
{
    return (struct policy_user){ .id = u->id, .name = u->name, .email = u->email,
                                 .groups = (const char *const *)u->groups.v,
                                 .ngroups = u->groups.n };
}

static void topology_build(struct state *s, struct topology *tp)
{
    tp->users = hs_xcalloc(s->nusers ? s->nusers : 1, sizeof(*tp->users));
    tp->nodes = hs_xcalloc(s->nnodes ? s->nnodes : 1, sizeof(*tp->nodes));
    for (size_t i = 0; i < s->nusers; i++) {
        const struct store_user *u = &s->users[i]->u;
        tp->users[i] = policy_user_of(u);
    }
    for (size_t i = 0; i < s->nnodes; i++) {
        const struct state_node *sn = s->nodes[i];
        const struct store_node *n = &sn->n;
        tp->nodes[i] = (struct policy_node){
            .id = n->id, .name = n->given_name, .user_id = n->user_id,
            .tags = (const char *const *)n->tags.v, .ntags = n->tags.n,
            .ipv4 = n->ipv4, .ipv6 = n->ipv6,
            .routes = (const char *const *)sn->routes.v, .nroutes = sn->routes.n,
            /* Only the routes it serves: an approved route it no longer advertises is
             * in no filter and no AllowedIPs (reference §6). */
            .approved = (const char *const *)sn->serving.v, .napproved = sn->serving.n,
            .primary = (const char *const *)sn->primary.v, .nprimary = sn->primary.n,
        };
    }
    tp->t = (struct policy_topology){ .users = tp->users, .nusers = s->nusers,
                                      .nodes = tp->nodes, .nnodes = s->nnodes,
                                      .server_url = s->server_url, .elected = true };
}

/* A net around pn, for the current nodes (wmu held). */
static struct state_net *net_new(struct state *s, struct policy_net *pn, bool all)
{
    struct state_net *n = hs_xcalloc(1, sizeof(*n));

    n->pn = pn;
    n->all = all;
    n->refs = 1;
    n->n = s->nnodes;
    n->ids = hs_xcalloc(n->n ? n->n : 1, sizeof(*n->ids));
    for (size_t i = 0; i < n->n; i++)
        n->ids[i] = s->nodes[i]->n.id;
    return n;
}

void state_compile_stats(struct state *s, uint64_t *compiles, uint64_t *us)
{
    *compiles = __atomic_load_n(&s->compiles, __ATOMIC_RELAXED);
    *us = __atomic_load_n(&s->compile_us, __ATOMIC_RELAXED);
}

/* A compile that started at `started` (monotonic us) is over. */
static void compile_counted(struct state *s, int64_t started)
{
    __atomic_add_fetch(&s->compiles, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->compile_us, (uint64_t)(hs_monotonic_us() - started), __ATOMIC_RELAXED);
}

int state__compile(struct state *s, const struct policy *p, struct state_net **out, char *err,
                   size_t errsize)
{
    int64_t started = hs_monotonic_us();
    struct topology tp;
    struct policy_net *pn;
    int rc;

    topology_build(s, &tp);
    rc = policy_compile(p, &tp.t, &pn, err, errsize);
    compile_counted(s, started);
    free(tp.users);
    free(tp.nodes);
    if (rc < 0)
        return rc;
    *out = net_new(s, pn, p == NULL);
    return 0;
}

/* wmu held: makes n (compiled for the current nodes) the current net; the state's reference
 * to the previous one is dropped (sessions may hold their own). */
static void net_install(struct state *s, struct state_net *n)
{
    struct state_net *old;

    pthread_rwlock_wrlock(&s->lock);
    n->gen = ++s->gens;
    old = s->net;
    s->net = n;
    s->net_exact = true;
    pthread_rwlock_unlock(&s->lock);
    state_net_unref(old);
}

void state__recompile(struct state *s, const uint64_t *changed, size_t nchanged)
{
    int64_t started = hs_monotonic_us();
    struct topology tp;
    struct policy_net *pn;
    int rc;

    /* An empty tailnet leaves nothing to carry over: compile it whole. */
    if (s->net->n == 0)
        changed = NULL;
    topology_build(s, &tp);
    rc = policy_recompile(s->net->pn, &tp.t, changed, nchanged, &pn);
    compile_counted(s, started);
    free(tp.users);
    free(tp.nodes);
    if (rc < 0) {
        log_errorx("policy: cannot compile the policy for the changed tailnet: %s; the "
                   "previous compiled form stays (nodes added since see no one)",
                   hs_strerror(rc));
        return;
    }
    net_install(s, net_new(s, pn, s->net->all));
}

/* ---- the source ---- */

void state_set_server_url(struct state *s, const char *url)
{
    pthread_mutex_lock(&s->wmu);
    s->server_url = url;
    pthread_mutex_unlock(&s->wmu);
}

void state_policy_source(struct state *s, enum state_policy_from from, const char *path)
{
    pthread_mutex_lock(&s->wmu);
    s->policy_from = from;
    free(s->policy_path);
    s->policy_path = path && *path ? hs_strdup(path) : NULL;
    if (from == STATE_POLICY_FILE && !s->policy_path)
        s->policy_from = STATE_POLICY_NONE; /* policy.path empty: allow all */
    pthread_mutex_unlock(&s->wmu);
}

/* wmu held. The source's text (NULL with rc 0: there is none), and its name for messages. */
static int read_source(struct state *s, char **text, size_t *len, int64_t *at, char *name,
                       size_t namesize)
{
    int rc;

    *text = NULL;
    *len = 0;
    *at = 0;
    switch (s->policy_from) {
    case STATE_POLICY_FILE:
        snprintf(name, namesize, "policy file %s", s->policy_path);
        return hs_read_file(s->policy_path, POLICY_MAX_BYTES, text, len);
    case STATE_POLICY_STORE:
        snprintf(name, namesize, "stored policy");
        rc = store_policy_get(s->st, text, at);
        if (rc == -ENOENT)
            return 0;
        if (rc == 0)
            *len = strlen(*text);
        return rc;
    default:
        snprintf(name, namesize, "policy");
        return 0;
    }
}

/* wmu held: puts p (text) in force with net n; takes ownership of all three. */
static void policy_install(struct state *s, struct policy *p, char *text, int64_t at,
                           struct state_net *n)
{
    struct policy *old;
    char *old_text;

    pthread_rwlock_wrlock(&s->lock);
    old = s->policy;
    old_text = s->policy_text;
    s->policy = p;
    s->policy_text = text;
    s->policy_updated_at = at;
    pthread_rwlock_unlock(&s->lock);
    net_install(s, n);
    policy_free(old);
    free(old_text);
}

/* A rule naming a user the tailnet lacks (or a provider group no user holds) matches no one
 * until that user exists or logs in with it (an OIDC user
 * who has not logged in yet, say): taken, as headscale takes it, with a warning. */
static void warn_unknown_users(const struct state_net *n, const char *name)
{
    char msg[STATE_POLICY_ERR_MAX];

    if (policy_net_check_users(n->pn, msg, sizeof(msg)) < 0)
        log_warnx("policy: %s: %s: the rule matches no one until then", name, msg);
}

/* wmu held. 1: installed; 0: unchanged; <0 with err. */
static int reload_locked(struct state *s, char *err, size_t errsize)
{
    char name[PATH_MAX + 32], msg[STATE_POLICY_ERR_MAX], *text;
    struct policy *p = NULL;
    struct state_net *n;
    enum policy_format fmt = POLICY_FORMAT_AUTO;
    size_t len;
    int64_t at;
    int rc;

    if ((rc = read_source(s, &text, &len, &at, name, sizeof(name))) < 0) {
        snprintf(err, errsize, "%s: cannot read it: %s", name, hs_strerror(rc));
        return rc;
    }
    if (hs_streq(text, s->policy_text)) {
        free(text);
        return 0;
    }
    if (s->policy_from == STATE_POLICY_FILE)
        fmt = policy_format_for_path(s->policy_path);
    msg[0] = '\0';
    /* An empty stored policy is none (allow all), as headscale clears its policy with it. */
    if (text && (*text || s->policy_from != STATE_POLICY_STORE) &&
        (rc = policy_load(text, len, fmt, &p, msg, sizeof(msg))) < 0)
        goto fail;
    if ((rc = state__compile(s, p, &n, msg, sizeof(msg))) < 0)
        goto fail;
    if (p)
        warn_unknown_users(n, name);
    policy_install(s, p, text, at, n);
    return 1;
fail:
    snprintf(err, errsize, "%s: %s", name, msg[0] ? msg : hs_strerror(rc));
    policy_free(p);
    free(text);
    return rc;
}

static int reload(struct state *s, char *err, size_t errsize)
{
    int rc;

    pthread_mutex_lock(&s->wmu);
    rc = reload_locked(s, err, errsize);
    pthread_mutex_unlock(&s->wmu);
    if (rc > 0) {
        state__emit(s, STATE_POLICY_CHANGED, 0);
        state__auto_approve_all(s);
    }
    return rc < 0 ? rc : 0;
}

int state_policy_load(struct state *s, char *err, size_t errsize)
{
    return reload(s, err, errsize);
}

int state_policy_reload(struct state *s, char *err, size_t errsize)
{
    return reload(s, err, errsize);
}

void state__policy_event(struct state *s)
{
    char err[STATE_POLICY_ERR_MAX];
    int rc;

    if (s->policy_from != STATE_POLICY_STORE)
        return; /* file mode: the store's policy rows are not in force */
    rc = state_policy_reload(s, err, sizeof(err));
    if (rc == -EIO)
        state__stale(s, "the stored policy", rc);
    else if (rc < 0)
        log_errorx("policy: %s; the policy in force stays", err);
    else
        log_info("policy: the stored policy is in force");
}

int state_policy_check(struct state *s, const char *text, size_t len, enum policy_format fmt,
                       char *err, size_t errsize)
{
    struct policy *p;
    struct state_net *n;
    int rc;

    if ((rc = policy_load(text, len, fmt, &p, err, errsize)) < 0)
        return rc;
    pthread_mutex_lock(&s->wmu);
    rc = state__compile(s, p, &n, err, errsize);
    pthread_mutex_unlock(&s->wmu);
    if (rc == 0)
        net_free(n);
    policy_free(p);
    return rc;
}

/* wmu held: node i as a preview lists it. */
static void preview_node(struct state *s, size_t i, struct state_preview_node *out)
{
    const struct store_node *n = &s->nodes[i]->n;
    const struct state_user *u = n->user_id ? state_user_by_id(s, n->user_id) : NULL;
    struct hs_buf tags;

    out->id = n->id;
    out->name = hs_strdup(n->given_name ? n->given_name : "");
    out->tagged = n->tags.n > 0;
    if (!out->tagged) {
        out->owner = hs_strdup(u && u->u.name ? u->u.name : "(no user)");
        return;
    }
    hs_buf_init(&tags, 1u << 16);
    for (size_t k = 0; k < n->tags.n; k++)
        hs_buf_appendf(&tags, "%s%s", k ? "," : "", n->tags.v[k]);
    out->owner = hs_strdup(tags.data ? tags.data : "");
    hs_buf_free(&tags);
}

int state_policy_preview(struct state *s, const struct policy *draft, struct state_preview *out,
                         char *err, size_t errsize)
{
    struct state_preview p = { 0 };
    struct topology tp;
    int rc;

    pthread_mutex_lock(&s->wmu);
    topology_build(s, &tp);
    rc = policy_compile_untested(draft, &tp.t, &p.draft, err, errsize);
    if (rc == 0)
        rc = policy_compile_untested(s->policy, &tp.t, &p.current, err, errsize);
    if (rc == 0) {
        p.n = s->nnodes;
        p.nodes = hs_xcalloc(p.n ? p.n : 1, sizeof(*p.nodes));
        for (size_t i = 0; i < p.n; i++)
            preview_node(s, i, &p.nodes[i]);
    }
    pthread_mutex_unlock(&s->wmu);
    free(tp.users);
    free(tp.nodes);
    if (rc < 0) {
        state_preview_fini(&p);
        return rc;
    }
    *out = p;
    return 0;
}

void state_preview_fini(struct state_preview *p)
{
    policy_net_free(p->draft);
    policy_net_free(p->current);
    for (size_t i = 0; i < p->n; i++) {
        free(p->nodes[i].name);
        free(p->nodes[i].owner);
    }
    free(p->nodes);
    *p = (struct state_preview){ 0 };
}

bool state_policy_tag_allowed(struct state *s, uint64_t user_id, const char *tag)
{
    const struct state_user *su;
    struct policy_user u;
    bool ok;

    pthread_rwlock_rdlock(&s->lock);
    su = user_id ? state_user_by_id(s, user_id) : NULL;
    if (su)
        u = policy_user_of(&su->u);
    ok = policy_tag_allowed(s->policy, su ? &u : NULL, NULL, 0, tag);
    pthread_rwlock_unlock(&s->lock);
    return ok;
}

int state_policy_text(struct state *s, char **text, int64_t *updated_at)
{
    int rc = -ENOENT;

    pthread_rwlock_rdlock(&s->lock);
    if (s->policy_text) {
        *text = hs_strdup(s->policy_text);
        if (updated_at)
            *updated_at = s->policy_updated_at;
        rc = 0;
    }
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

void state__policy_free(struct state *s)
{
    state_net_unref(s->net);
    s->net = NULL;
    policy_free(s->policy);
    free(s->policy_text);
    free(s->policy_path);
}
