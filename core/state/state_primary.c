/* state: the primary router of each subnet route.
 *
 * A node serves a route it both announces (Hostinfo.RoutableIPs) and has approved. Exit routes
 * are offered by every node that serves them; a subnet route is given to peers by one router
 * at a time, its primary: among the online nodes that serve it, the current primary stays
 * while it is online and healthy (a router coming back does not take the route back, which
 * would move every peer's traffic twice), otherwise the lowest healthy node id wins; with no
 * healthy one the current primary stays if still online, else the route has none (reference
 * §6; headscale's electPrimaryRoutes). The election runs whenever a router comes or goes
 * online, whenever a node's routes change and when an HA probe cycle changed a router's
 * health; the nodes whose primaries moved are compiled again into the policy (so the policy's
 * route viewers and the maps agree) and reported to listeners as changed.
 *
 * Among replicas only the elected one elects; it publishes its choice in the store and the
 * others take it as their election's result (state.h, "routes"). */
#include <stdlib.h>
#include <string.h>

#include "state/state_internal.h"

bool state__serves_subnet(const struct state_node *sn)
{
    for (size_t i = 0; i < sn->serving.n; i++) {
        if (!state_route_is_exit(sn->serving.v[i]))
            return true;
    }
    return sn->primary.n > 0;
}

static int cmp_primary(const void *a, const void *b)
{
    const struct state_primary *x = a, *y = b;
    int c = strcmp(x->route, y->route);

    return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* The primary of route in a sorted list, 0 when none. */
static uint64_t lookup(const struct state_primary *v, size_t n, const char *route)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(v[mid].route, route);
        if (c == 0)
            return v[mid].id;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Every (subnet route, online node serving it), sorted by route then node id. Routes are
 * borrowed from the nodes. */
static struct state_primary *candidates(struct state *s, size_t *count)
{
    struct state_primary *v = NULL;
    size_t n = 0, cap = 0;

    for (size_t i = 0; i < s->nnodes; i++) {
        const struct state_node *sn = s->nodes[i];
        for (size_t k = 0; sn->online && k < sn->serving.n; k++) {
            if (state_route_is_exit(sn->serving.v[k]))
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                v = hs_xrealloc(v, cap * sizeof(*v));
            }
            v[n++] = (struct state_primary){ .route = sn->serving.v[k], .id = sn->n.id,
                                             .unhealthy = sn->unhealthy };
        }
    }
    if (n)
        qsort(v, n, sizeof(*v), cmp_primary);
    *count = n;
    return v;
}

/* The pick among one route's candidates c[0..n) (ids ascending): the previous primary while
 * it is a healthy candidate, else the first healthy one, else the previous one if it is still
 * a candidate; 0 for none. */
static uint64_t pick(const struct state_primary *c, size_t n, uint64_t prev)
{
    const struct state_primary *was = NULL, *healthy = NULL;

    for (size_t i = 0; i < n; i++) {
        if (c[i].id == prev)
            was = &c[i];
        if (!healthy && !c[i].unhealthy)
            healthy = &c[i];
    }
    if (was && !was->unhealthy)
        return prev;
    return healthy ? healthy->id : was ? prev : 0;
}

/* One primary per route among the candidates (a group per route, ids ascending). Routes are
 * copied. */
static struct state_primary *choose(const struct state *s, const struct state_primary *c,
                                    size_t n, size_t *count)
{
    struct state_primary *out = hs_xcalloc(n ? n : 1, sizeof(*out));
    size_t k = 0;

    for (size_t i = 0, j; i < n; i = j) {
        uint64_t id;
        for (j = i; j < n && strcmp(c[j].route, c[i].route) == 0; j++)
            ;
        id = pick(c + i, j - i, lookup(s->prim, s->nprim, c[i].route));
        if (id)
            out[k++] = (struct state_primary){ .route = hs_strdup(c[i].route), .id = id };
    }
    *count = k;
    return out;
}

static void prim_free(struct state_primary *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)v[i].route);
    free(v);
}

/* Gives sn the routes it is now primary for; whether they differ from before. */
static bool node_primaries(struct state *s, struct state_node *sn)
{
    struct hs_strv now = { 0 };
    bool same;

    for (size_t k = 0; k < sn->serving.n; k++) {
        const char *r = sn->serving.v[k];
        if (!state_route_is_exit(r) && lookup(s->prim, s->nprim, r) == sn->n.id)
            hs_strv_push(&now, r);
    }
    same = now.n == sn->primary.n;
    for (size_t k = 0; same && k < now.n; k++)
        same = strcmp(now.v[k], sn->primary.v[k]) == 0;
    if (same) {
        hs_strv_free(&now);
        return false;
    }
    hs_strv_free(&sn->primary);
    sn->primary = now;
    return true;
}

void state__list_routers(struct state *s)
{
    s->nrouters = 0;
    for (size_t i = 0; i < s->nnodes; i++) {
        if (!s->nodes[i]->serving.n)
            continue;
        s->routers = hs_xrealloc(s->routers, (s->nrouters + 1) * sizeof(*s->routers));
        s->routers[s->nrouters++] = s->nodes[i]->n.id;
    }
}

const uint64_t *state_router_ids(struct state *s, size_t *n)
{
    *n = s->nrouters;
    return s->routers;
}

/* A copy of v with routes of its own. */
static struct state_primary *prim_copy(const struct state_primary *v, size_t n)
{
    struct state_primary *out = hs_xcalloc(n ? n : 1, sizeof(*out));

    for (size_t i = 0; i < n; i++)
        out[i] = (struct state_primary){ .route = hs_strdup(v[i].route), .id = v[i].id };
    return out;
}

/* The primaries this replica gives its clients: its own election alone on its database or
 * when elected among replicas, else the choice the elected one published. */
static struct state_primary *primaries_now(struct state *s, size_t *n)
{
    size_t nc;
    struct state_primary *c, *p;

    if (s->shared && !state_elected(s)) {
        *n = s->npublished;
        return prim_copy(s->published, s->npublished);
    }
    c = candidates(s, &nc);
    p = choose(s, c, nc, n);
    free(c);
    return p;
}

size_t state__elect(struct state *s, uint64_t **changed)
{
    size_t np, k = 0;
    struct state_primary *p = primaries_now(s, &np);

    state__list_routers(s); /* the election follows every change of what nodes serve */
    prim_free(s->prim, s->nprim);
    s->prim = p;
    s->nprim = np;
    *changed = NULL;
    for (size_t i = 0; i < s->nnodes; i++) {
        struct state_node *sn = s->nodes[i];
        if ((sn->serving.n || sn->primary.n) && node_primaries(s, sn)) {
            state__drop_cache(s, sn); /* AllowedIPs and PrimaryRoutes are in it */
            *changed = hs_xrealloc(*changed, (k + 1) * sizeof(**changed));
            (*changed)[k++] = sn->n.id;
        }
    }
    return k;
}

size_t state__elect_compile(struct state *s, uint64_t **changed)
{
    size_t n;
    bool exact;

    pthread_rwlock_wrlock(&s->lock);
    n = state__elect(s, changed);
    exact = s->net_exact;
    if (n)
        s->net_exact = false;
    pthread_rwlock_unlock(&s->lock);
    if (n) /* only the routers whose primaries moved changed, if the net was exact */
        state__recompile(s, exact ? *changed : NULL, exact ? n : 0);
    return n;
}

void state__routes_free(struct state *s)
{
    prim_free(s->prim, s->nprim);
    s->prim = NULL;
    s->nprim = 0;
    prim_free(s->published, s->npublished);
    s->published = NULL;
    s->npublished = 0;
    free(s->routers);
    s->routers = NULL;
    s->nrouters = 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

uint64_t *state_ha_nodes(struct state *s, size_t *count)
{
    size_t nc, n = 0;
    struct state_primary *c;
    uint64_t *ids;

    pthread_rwlock_rdlock(&s->lock);
    c = candidates(s, &nc);
    pthread_rwlock_unlock(&s->lock);
    ids = hs_xcalloc(nc ? nc : 1, sizeof(*ids));
    for (size_t i = 0, j; i < nc; i = j) {
        for (j = i; j < nc && strcmp(c[j].route, c[i].route) == 0; j++)
            ;
        for (size_t k = i; k < j; k++) {
            if (j - i >= 2 || c[k].unhealthy)
                ids[n++] = c[k].id;
        }
    }
    free(c); /* its routes were borrowed from the nodes: use none after the lock */
    qsort(ids, n, sizeof(*ids), cmp_u64);
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!*count || ids[*count - 1] != ids[i])
            ids[(*count)++] = ids[i];
    }
    return ids;
}

/* Write lock held: applies one verdict; whether the mark changed. */
static bool set_health(struct state *s, uint64_t id, bool healthy)
{
    const struct state_node *c = state_node_by_id(s, id);
    struct state_node *sn = (struct state_node *)c;

    if (!sn || sn->unhealthy == !healthy)
        return false;
    if (!healthy && (!sn->online || !sn->serving.n))
        return false; /* it left HA candidacy while the probe was out */
    sn->unhealthy = !healthy;
    return true;
}

bool state__set_health(struct state *s, const uint64_t *ids, const bool *healthy, size_t n)
{
    bool any = false;

    pthread_rwlock_wrlock(&s->lock);
    for (size_t i = 0; i < n; i++)
        any |= set_health(s, ids[i], healthy[i]);
    pthread_rwlock_unlock(&s->lock);
    return any;
}

uint64_t state_route_primary(struct state *s, const char *route)
{
    return lookup(s->prim, s->nprim, route);
}

/* ---- one decision for all replicas ---- */

void state__published_install(struct state *s, const struct store_primary *v, size_t n)
{
    struct state_primary *p = hs_xcalloc(n ? n : 1, sizeof(*p));

    for (size_t i = 0; i < n; i++)
        p[i] = (struct state_primary){ .route = hs_strdup(v[i].route), .id = v[i].node_id };
    if (n) /* the database's collation is not strcmp's */
        qsort(p, n, sizeof(*p), cmp_primary);
    prim_free(s->published, s->npublished);
    s->published = p;
    s->npublished = n;
}

static bool prim_equal(const struct state_primary *a, size_t na, const struct state_primary *b,
                       size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        if (a[i].id != b[i].id || strcmp(a[i].route, b[i].route) != 0)
            return false;
    }
    return true;
}

void state__publish(struct state *s)
{
    /* Our own write's announcement comes back on this thread, inside the write: what it
     * makes us do must not publish again. */
    static __thread bool publishing;
    struct store_primary *v = NULL;
    size_t n = 0;
    int rc;

    if (!s->shared || !state_elected(s) || publishing)
        return;
    pthread_mutex_lock(&s->pub_mu); /* publications in the order of the elections */
    pthread_rwlock_rdlock(&s->lock);
    if (!prim_equal(s->prim, s->nprim, s->published, s->npublished)) {
        n = s->nprim;
        v = hs_xcalloc(n + 1, sizeof(*v));
        for (size_t i = 0; i < n; i++)
            v[i] = (struct store_primary){ .route = hs_strdup(s->prim[i].route),
                                           .node_id = s->prim[i].id };
    }
    pthread_rwlock_unlock(&s->lock);
    publishing = true;
    rc = v ? store_primaries_set(s->st, v, n) : 0;
    publishing = false;
    if (rc < 0) {
        log_warnx("state: cannot publish the primary routers of HA routes: %s; retrying",
                  hs_strerror(rc));
    } else if (v) {
        pthread_mutex_lock(&s->wmu);
        pthread_rwlock_wrlock(&s->lock);
        state__published_install(s, v, n);
        pthread_rwlock_unlock(&s->lock);
        pthread_mutex_unlock(&s->wmu);
        log_info("state: published the primary routers of %zu HA routes for every replica", n);
    }
    store_primaries_free(v, n);
    pthread_mutex_unlock(&s->pub_mu);
}

void state__health_install(struct state *s, const uint64_t *unhealthy, size_t n)
{
    for (size_t i = 0; i < s->nnodes; i++) {
        struct state_node *sn = s->nodes[i];
        bool mark = hs_ids_has(unhealthy, n, sn->n.id) && sn->online && sn->serving.n;
        sn->unhealthy = mark;
    }
}
