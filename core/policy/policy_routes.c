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
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct pol_node *n = &c->nodes[i];
        if ((n->has[0] && pol__ent_contains(route, n->ip[0])) ||
            (n->has[1] && pol__ent_contains(route, n->ip[1])))
            return true;
    }
    return false;
}

static bool dst_touches(const struct pol_crule *cr, const struct pol_node *n,
                        const struct pol_ent *route)
{
    const struct pol_rule *r = cr->r;

    if (r->nvia && !pol__has_via_tag(r, n))
        return false;
    for (size_t k = 0; k < r->ndst; k++) {
        const struct pol_alias *a = &r->dst[k].a;
        if (a->kind == PA_STAR ||
            ((a->kind == PA_PREFIX || a->kind == PA_HOST) && pol__ent_overlaps(&a->ent, route)))
            return true;
    }
    return false;
}

/* Whether an earlier node already serves the same route: the first router is its primary. */
static bool primary(const struct policy_net *c, size_t b, const char *route)
{
    for (size_t i = 0; i < b; i++) {
        for (size_t k = 0; k < c->nodes[i].napproved; k++) {
            if (strcmp(c->nodes[i].approved[k], route) == 0)
                return false;
        }
    }
    return true;
}

/* Whether b is the first router of the route among those a via grant names. */
static bool via_primary(const struct policy_net *c, const struct pol_rule *r, size_t b,
                        const char *route)
{
    for (size_t i = 0; i <= b; i++) {
        for (size_t k = 0; k < c->nodes[i].napproved; k++) {
            if (strcmp(c->nodes[i].approved[k], route) == 0 && pol__has_via_tag(r, &c->nodes[i]))
                return i == b;
        }
    }
    return false;
}

/* The other routers of a route that are peers of its primary get it too (HA standbys). */
static void secondaries(const struct policy_net *c, size_t b, const char *route, uint64_t *v)
{
    for (size_t i = 0; i < c->nnodes; i++) {
        for (size_t k = 0; i != b && k < c->nodes[i].napproved; k++) {
            if (strcmp(c->nodes[i].approved[k], route) == 0 && policy_net_sees(c, i, b))
                pol__set(v, i);
        }
    }
}

/* The primary's viewers of a route, if b is not its primary: NULL otherwise. */
static const uint64_t *primary_viewers(const struct policy_net *c, size_t b, const char *route)
{
    for (size_t i = 0; i < b; i++) {
        const struct pol_node *n = &c->nodes[i];
        for (size_t k = 0; k < n->routes.n; k++) {
            if (strcmp(n->route_text[k], route) == 0)
                return n->route_viewers[k];
        }
    }
    return NULL;
}

/* A viewer that reaches a route through its primary gets it from there only, even when a
 * via grant would also steer it to another router. */
static void drop_doubles(struct policy_net *c)
{
    for (size_t b = 0; b < c->nnodes; b++) {
        struct pol_node *n = &c->nodes[b];
        for (size_t k = 0; k < n->routes.n; k++) {
            const uint64_t *pv = primary_viewers(c, b, n->route_text[k]);
            for (size_t w = 0; pv && w < c->words; w++)
                n->route_viewers[k][w] &= ~pv[w];
        }
    }
}

/* A viewer gets a subnet route in the router's AllowedIPs when some rule lets it reach the
 * route or lets the route reach it. */
void pol__route_viewers(struct policy_net *c)
{
    for (size_t b = 0; b < c->nnodes; b++) {
        struct pol_node *n = &c->nodes[b];
        n->route_viewers = hs_xcalloc(n->routes.n + 1, sizeof(*n->route_viewers));
        for (size_t k = 0; k < n->routes.n; k++) {
            uint64_t *v = n->route_viewers[k] = pol__bits_new(c);
            bool prim = primary(c, b, n->route_text[k]);
            bool covers = prim && covers_a_node(c, &n->routes.v[k]);
            for (size_t r = 0; r < c->nrules; r++) {
                const struct pol_crule *cr = &c->rules[r];
                /* A via grant steers its sources to its routers, primary or not. */
                bool in_src = prim && src_touches(cr, &n->routes.v[k], covers);
                bool in_dst = (cr->r->nvia ? via_primary(c, cr->r, b, n->route_text[k]) : prim) &&
                              dst_touches(cr, n, &n->routes.v[k]);
                for (size_t w = 0; w < c->words; w++)
                    v[w] |= (in_src ? cr->dst_nodes[w] : 0) | (in_dst ? cr->src_nodes[w] : 0);
            }
            if (!prim)
                continue;
            if (!c->p)
                memset(v, 0xff, c->words * sizeof(*v));
            secondaries(c, b, n->route_text[k], v);
        }
    }
    drop_doubles(c);
}


size_t policy_net_peer_routes(const struct policy_net *c, size_t a, size_t b, const char **out,
                              size_t cap)
{
    const struct pol_node *n = &c->nodes[b];
    size_t count = 0;

    for (size_t k = 0; k < n->napproved; k++) {
        struct pol_ent e;
        if (pol__parse_prefix(n->approved[k], true, &e) == 0 && pol__is_exit_route(&e)) {
            if (count < cap)
                out[count] = n->approved[k];
            count++;
        }
    }
    for (size_t k = 0; k < n->routes.n; k++) {
        if (!pol__bit(n->route_viewers[k], a))
            continue;
        if (count < cap)
            out[count] = n->route_text[k];
        count++;
    }
    return count;
}

const char *const *policy_net_approved(const struct policy_net *c, size_t i, size_t *n)
{
    *n = c->nodes[i].napproved;
    return (const char *const *)c->nodes[i].approved;
}
