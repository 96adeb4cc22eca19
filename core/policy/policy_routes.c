/* Routes in AllowedIPs: which of a router's approved routes each viewer is given, from the
 * rules that join the viewer and the route, the route's primary router, and `via` grants. */
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* covers_node: some node's address lies in the route (then every entry counts; otherwise
 * only those of address sources can overlap it). */
static bool src_touches(const struct pol_crule *cr, const struct pol_ent *route,
                        bool covers_node)
{
    const struct pol_ents *e = covers_node ? &cr->src : &cr->src_lit;

    for (size_t k = 0; k < e->n; k++) {
        if (pol__ent_overlaps(&e->v[k], route))
            return true;
    }
    return false;
}

static bool covers_a_node(const struct policy_net *c, const struct pol_ent *route)
{
    bool maybe = false;

    for (int f = 0; f < 2; f++) /* most routes lie outside the tailnet's addresses */
        maybe |= route->lo <= c->addr_hi[f] && c->addr_lo[f] <= route->hi;
    for (size_t i = 0; maybe && i < c->nnodes; i++) {
        const struct pol_node *n = c->nodes[i];
        if ((n->has[0] && pol__ent_contains(route, n->ip[0])) ||
            (n->has[1] && pol__ent_contains(route, n->ip[1])))
            return true;
    }
    return false;
}

/* Whether some destination of r is `*` or an address alias overlapping the route. */
static bool dst_overlaps(const struct pol_rule *r, const struct pol_ent *route)
{
    for (size_t k = 0; k < r->ndst; k++) {
        const struct pol_alias *a = &r->dst[k].a;
        if (a->kind == PA_STAR ||
            ((a->kind == PA_PREFIX || a->kind == PA_HOST) && pol__ent_overlaps(&a->ent, route)))
            return true;
    }
    return false;
}

static bool dst_touches(const struct pol_crule *cr, const struct pol_node *n,
                        const struct pol_ent *route)
{
    const struct pol_rule *r = cr->r;

    return (!r->nvia || pol__has_via_tag(r, n)) && dst_overlaps(r, route);
}

/* Whether n serves the subnet route. Only routers (c->routers) can: an approved route that is
 * not an exit route is in the node's routes. */
static bool has_route(const struct pol_node *n, const char *route)
{
    for (size_t k = 0; k < n->routes.n; k++) {
        if (strcmp(n->route_text[k], route) == 0)
            return true;
    }
    return false;
}

/* Whether b is the primary router of its k-th route: the one the server elected (the state
 * elects among the online routers, net->elected), or else the first router that serves it. */
static bool primary(const struct policy_net *c, size_t b, size_t k)
{
    const char *route = c->nodes[b]->route_text[k];

    if (c->elected)
        return c->nodes[b]->route_prim[k];
    for (size_t x = 0; x < c->nrouters && c->routers[x].node < b; x++) {
        if (has_route(c->nodes[c->routers[x].node], route))
            return false;
    }
    return true;
}

/* Whether b is the first router of the route among those a via grant names. */
static bool via_primary(const struct policy_net *c, const struct pol_rule *r, size_t b,
                        const char *route)
{
    for (size_t x = 0; x < c->nrouters && c->routers[x].node <= b; x++) {
        const struct pol_node *n = c->nodes[c->routers[x].node];
        if (has_route(n, route) && pol__has_via_tag(r, n))
            return c->routers[x].node == b;
    }
    return false;
}

/* The other routers of a route that are peers of its primary get it too (HA standbys). */
static void secondaries(const struct policy_net *c, size_t b, const char *route, uint64_t *v)
{
    for (size_t x = 0; x < c->nrouters; x++) {
        size_t i = c->routers[x].node;
        if (i != b && has_route(c->nodes[i], route) && policy_net_sees(c, i, b))
            pol__set(v, i);
    }
}

/* The primary's viewers of a route, if router x is not its primary: NULL otherwise. */
static const uint64_t *primary_viewers(const struct policy_net *c, size_t x, const char *route)
{
    for (size_t y = 0; y < c->nrouters; y++) {
        const struct pol_node *n = c->nodes[c->routers[y].node];
        for (size_t k = 0; k < n->routes.n; k++) {
            if (strcmp(n->route_text[k], route) != 0 || !primary(c, c->routers[y].node, k))
                continue;
            return y == x ? NULL : c->routers[y].viewers[k];
        }
    }
    return NULL;
}

/* A viewer that reaches a route through its primary gets it from there only, even when a
 * via grant would also steer it to another router. */
static void drop_doubles(struct policy_net *c)
{
    for (size_t x = 0; x < c->nrouters; x++) {
        const struct pol_node *n = c->nodes[c->routers[x].node];
        for (size_t k = 0; k < n->routes.n; k++) {
            const uint64_t *pv = primary_viewers(c, x, n->route_text[k]);
            for (size_t w = 0; pv && w < c->words; w++)
                c->routers[x].viewers[k][w] &= ~pv[w];
        }
    }
}

/* A viewer gets a subnet route in the router's AllowedIPs when some rule lets it reach the
 * route or lets the route reach it. */
static uint64_t *viewers_of(const struct policy_net *c, size_t b, size_t k)
{
    const struct pol_node *n = c->nodes[b];
    uint64_t *v = pol__bits_new(c);
    bool prim = primary(c, b, k);
    bool covers = prim && covers_a_node(c, &n->routes.v[k]);

    for (size_t r = 0; r < c->nrules; r++) {
        const struct pol_crule *cr = &c->rules[r];
        /* A via grant steers its sources to its routers, primary or not. */
        bool in_src = prim && src_touches(cr, &n->routes.v[k], covers);
        bool in_dst = (cr->r->nvia ? via_primary(c, cr->r, b, n->route_text[k]) : prim) &&
                      dst_touches(cr, n, &n->routes.v[k]);
        for (size_t w = 0; (in_src || in_dst) && w < c->words; w++)
            v[w] |= (in_src ? cr->dst_nodes[w] : 0) | (in_dst ? cr->src_nodes[w] : 0);
    }
    if (!prim)
        return v;
    if (!c->p) {
        for (size_t i = 0; i < c->nnodes; i++)
            pol__set(v, i);
    }
    secondaries(c, b, n->route_text[k], v);
    return v;
}

void pol__route_viewers(struct policy_net *c)
{
    for (size_t x = 0; x < c->nrouters; x++) {
        size_t b = c->routers[x].node;
        const struct pol_node *n = c->nodes[b];
        c->routers[x].viewers = hs_xcalloc(n->routes.n + 1, sizeof(uint64_t *));
        for (size_t k = 0; k < n->routes.n; k++)
            c->routers[x].viewers[k] = viewers_of(c, b, k);
    }
    drop_doubles(c);
}

/* ---- after a change (policy_update.c) ---- */

/* Whether rule cr may give anyone the route, wherever it is served (src_touches and
 * dst_touches, without their conditions on the router). */
static bool may_touch(const struct pol_crule *cr, const struct pol_ent *route)
{
    return src_touches(cr, route, true) || dst_overlaps(cr->r, route);
}

static bool node_concerns(const struct pol_node *n, const char *text, const struct pol_ent *e)
{
    return has_route(n, text) || (n->has[0] && pol__ent_contains(e, n->ip[0])) ||
           (n->has[1] && pol__ent_contains(e, n->ip[1]));
}

/* Whether a route's viewers may differ from old's: a node that came or went serves it or has
 * an address in it (its primary, standbys or covers_a_node), or a rule resolved again may
 * give it (before or after). Otherwise every rule that gives it has the same node sets, and
 * the peers between its routers are the same: so are its viewers. The answer depends on the
 * route only, so all routers of a route are carried or all worked out again (drop_doubles
 * needs its primary's final viewers). */
static bool route_changed(const struct policy_net *c, const struct policy_net *old,
                          const struct pol_plan *pl, const bool *redone, const char *text,
                          const struct pol_ent *e)
{
    for (size_t g = 0; g < pl->ngone; g++) {
        if (node_concerns(old->nodes[pl->gone[g]], text, e))
            return true;
    }
    for (size_t f = 0; f < pl->nfresh; f++) {
        if (node_concerns(c->nodes[pl->fresh[f]], text, e))
            return true;
    }
    for (size_t r = 0; r < c->nrules; r++) {
        if (redone[r] && (may_touch(&c->rules[r], e) || may_touch(&old->rules[r], e)))
            return true;
    }
    return false;
}

void pol__carry_route_viewers(struct policy_net *c, const struct policy_net *old,
                              const struct pol_plan *pl, const bool *redone)
{
    size_t y = 0;

    for (size_t x = 0; x < c->nrouters; x++) {
        size_t b = c->routers[x].node;
        const struct pol_node *n = c->nodes[b];
        const struct pol_router *o = NULL;
        /* old's router at the same node, if it was carried (the map keeps the order) */
        for (; y < old->nrouters && pl->map[old->routers[y].node] <= b; y++) {
            if (pl->map[old->routers[y].node] == b)
                o = &old->routers[y];
        }
        c->routers[x].viewers = hs_xcalloc(n->routes.n + 1, sizeof(uint64_t *));
        for (size_t k = 0; k < n->routes.n; k++) {
            if (o && !route_changed(c, old, pl, redone, n->route_text[k], &n->routes.v[k]))
                c->routers[x].viewers[k] = pol__remap_bits(c, pl, o->viewers[k]);
            else
                c->routers[x].viewers[k] = viewers_of(c, b, k);
        }
    }
    drop_doubles(c);
}

void pol__routers_free(struct policy_net *c)
{
    for (size_t x = 0; x < c->nrouters; x++) {
        const struct pol_node *n = c->nodes[c->routers[x].node];
        for (size_t k = 0; c->routers[x].viewers && k < n->routes.n; k++)
            free(c->routers[x].viewers[k]);
        free(c->routers[x].viewers);
    }
    free(c->routers);
}

/* Router b's entry, or NULL. */
static const struct pol_router *router(const struct policy_net *c, size_t b)
{
    size_t lo = 0, hi = c->nrouters;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->routers[mid].node == b)
            return &c->routers[mid];
        if (c->routers[mid].node < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t policy_net_peer_routes(const struct policy_net *c, size_t a, size_t b, const char **out,
                              size_t cap)
{
    const struct pol_node *n = c->nodes[b];
    const struct pol_router *rt = n->routes.n ? router(c, b) : NULL;
    size_t count = 0;

    for (size_t k = 0; k < n->napproved; k++) {
        struct pol_ent e;
        if (pol__parse_prefix(n->approved[k], true, &e) == 0 && pol__is_exit_route(&e)) {
            if (count < cap)
                out[count] = n->approved[k];
            count++;
        }
    }
    for (size_t k = 0; rt && k < n->routes.n; k++) {
        if (!pol__bit(rt->viewers[k], a))
            continue;
        if (count < cap)
            out[count] = n->route_text[k];
        count++;
    }
    return count;
}

const char *const *policy_net_approved(const struct policy_net *c, size_t i, size_t *n)
{
    *n = c->nodes[i]->napproved;
    return (const char *const *)c->nodes[i]->approved;
}
