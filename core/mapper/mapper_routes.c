/* mapper: the routes a peer carries in AllowedIPs and PrimaryRoutes, as one viewer sees them.
 *
 * A peer's routes depend on who looks (the policy lets a viewer reach a subnet route or not;
 * `via` grants steer viewers to routers), but for most pairs they are the peer's default set:
 * its exit routes and the subnet routes it is the elected primary for. That set is in the
 * peer's cached JSON (mapper__peer_json); a viewer whose set differs gets the peer's Node
 * built for it alone (mapper__view_default says which), so the cache still serves every node
 * that is no router, and every viewer under a policy that lets all reach the routes. */
#include <stdlib.h>
#include <string.h>

#include "mapper/mapper_internal.h"

void mapper__routes_free(struct mapper__routes *r)
{
    free(r->v);
    *r = (struct mapper__routes){ 0 };
}

static void push(struct mapper__routes *r, const char *route)
{
    r->v = hs_xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
    r->v[r->n++] = route;
}

void mapper__default_routes(const struct state_node *n, struct mapper__routes *out)
{
    *out = (struct mapper__routes){ 0 };
    for (size_t k = 0; k < n->serving.n; k++) {
        if (state_route_is_exit(n->serving.v[k]))
            push(out, n->serving.v[k]);
    }
    for (size_t k = 0; k < n->primary.n; k++)
        push(out, n->primary.v[k]);
}

/* The routes of peer n (index b in net) that viewer a gets: what the compiled policy says. */
static void policy_routes(const struct state_net *net, size_t a, size_t b,
                          struct mapper__routes *out)
{
    const struct policy_net *pn = state_net_policy(net);
    size_t n;

    *out = (struct mapper__routes){ 0 };
    if (a == STATE_NET_NONE || b == STATE_NET_NONE)
        return;
    if ((n = policy_net_peer_routes(pn, a, b, NULL, 0)) == 0)
        return;
    out->v = hs_xcalloc(n, sizeof(*out->v));
    out->n = policy_net_peer_routes(pn, a, b, out->v, n);
}

bool mapper__same_routes(const struct mapper__routes *x, const struct mapper__routes *y)
{
    if (x->n != y->n)
        return false;
    for (size_t i = 0; i < x->n; i++) {
        bool found = false;
        for (size_t j = 0; j < y->n && !found; j++)
            found = strcmp(x->v[i], y->v[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

void mapper__view_routes(const struct state_net *net, uint64_t viewer, const struct state_node *n,
                         struct mapper__routes *out)
{
    /* Without a policy every viewer gets the default set (the net's primaries are the
     * state's: it compiles them in). */
    if (viewer == 0 || viewer == n->n.id || state_net_all(net)) {
        mapper__default_routes(n, out);
        return;
    }
    if (n->serving.n == 0) {
        *out = (struct mapper__routes){ 0 };
        return;
    }
    policy_routes(net, state_net_index(net, viewer), state_net_index(net, n->n.id), out);
}

bool mapper__view_default(const struct state_net *net, uint64_t viewer,
                          const struct state_node *n)
{
    struct mapper__routes d, v;
    bool same;

    if (n->serving.n == 0 || state_net_all(net) || viewer == n->n.id)
        return true; /* the common case: no routes to differ in */
    mapper__default_routes(n, &d);
    mapper__view_routes(net, viewer, n, &v);
    same = mapper__same_routes(&d, &v);
    mapper__routes_free(&d);
    mapper__routes_free(&v);
    return same;
}

uint64_t mapper__view_hash(const struct state_net *net, uint64_t viewer,
                           const struct state_node *n)
{
    struct mapper__routes v;
    uint64_t h = 1469598103934665603ull ^ n->n.id;

    mapper__view_routes(net, viewer, n, &v);
    for (size_t i = 0; i < v.n; i++) {
        for (const char *p = v.v[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ ',') * 1099511628211ull;
    }
    mapper__routes_free(&v);
    return h;
}

bool mapper__views_differ(const struct state_net *a, const struct state_net *b, uint64_t viewer,
                          const struct state_node *n)
{
    struct mapper__routes x, y;
    bool differ;

    mapper__view_routes(a, viewer, n, &x);
    mapper__view_routes(b, viewer, n, &y);
    differ = !mapper__same_routes(&x, &y);
    mapper__routes_free(&x);
    mapper__routes_free(&y);
    return differ;
}
