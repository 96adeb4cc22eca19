/* Routes, in both of headscale's vocabularies. Current (0.26+): a node's approved routes are
 * replaced as a whole (POST /api/v1/node/{id}/approve_routes). 0.22.3: every (node, prefix)
 * has a route id (GET /api/v1/routes, /api/v1/machine/{id}/routes) that is enabled, disabled
 * or deleted one at a time. Both change nodes.approved_routes, so they always agree; the
 * announced routes, online status and primaries come from the state. */
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

static int node_id_arg(struct api_call *c, uint64_t *id)
{
    return api_parse_id(c, c->args[0], "node", id);
}

/* The approved routes become v (canonical); answers with the node or the error. */
static int set_approved(struct api_call *c, uint64_t id, const struct hs_strv *v,
                        struct store_node *out)
{
    struct store_node patch = { .approved_routes = *v };
    int rc = store_node_update(c->api->st, id, STORE_NODE_BIT(STORE_NODE_APPROVED_ROUTES),
                               &patch, out);
    if (rc < 0)
        api_store_error(c, rc, "node");
    return rc;
}

/* POST /api/v1/node/{id}/approve_routes {routes}: replaces the approved set. Routes the node
 * does not announce may be approved (headscale 0.29 allows it: they apply once announced). */
void api_node_approve_routes(struct api_call *c)
{
    json_t *body = api_body(c);
    struct hs_strv in = { 0 }, v = { 0 }, subnet = { 0 };
    struct store_node n;
    const struct state_node *sn;
    char err[256];
    uint64_t id;

    if (!body || node_id_arg(c, &id) < 0 || api_field_strv(c, body, "routes", &in) < 0)
        return;
    if (state_routes_normalize((const char *const *)in.v, in.n, &v, err, sizeof(err)) < 0) {
        api_error(c, 400, "%s", err);
    } else if (set_approved(c, id, &v, &n) == 0) {
        /* The state applied the write before it returned: primaries are current. */
        state_rdlock(c->api->state);
        if ((sn = state_node_by_id(c->api->state, id)))
            api_node_subnet_routes(c->api->state, sn, false, &subnet);
        state_unlock(c->api->state);
        api_reply(c, 200, json_pack("{s:o}", "node", api_json_node_subnet(c, &n, false, &subnet)));
        store_node_free(&n);
    }
    hs_strv_free(&in);
    hs_strv_free(&v);
    hs_strv_free(&subnet);
}

/* ---- 0.22.3: route ids ---- */

/* Every announced or approved (node, prefix) gets its id before the ids are shown or used,
 * so an id seen once keeps naming the same route. */
static int sync_ids(struct api_call *c, uint64_t only)
{
    struct state *s = c->api->state;
    struct { uint64_t id; struct hs_strv p; } *v;
    size_t n = 0;
    int rc = 0;

    state_rdlock(s);
    v = hs_xcalloc(state_node_count(s) + 1, sizeof(*v));
    for (size_t i = 0; i < state_node_count(s); i++) {
        const struct state_node *sn = state_node_at(s, i);
        if ((only && sn->n.id != only) || (!sn->routes.n && !sn->n.approved_routes.n))
            continue;
        v[n].id = sn->n.id;
        hs_strv_copy(&v[n].p, &sn->routes);
        for (size_t k = 0; k < sn->n.approved_routes.n; k++)
            if (!hs_strv_contains(&v[n].p, sn->n.approved_routes.v[k]))
                hs_strv_push(&v[n].p, sn->n.approved_routes.v[k]);
        n++;
    }
    state_unlock(s);
    for (size_t i = 0; i < n; i++) {
        int r = store_route_ensure(c->api->st, v[i].id, &v[i].p);
        if (r < 0 && r != -ENOENT && rc == 0) /* a node deleted meanwhile has no routes */
            rc = r;
        hs_strv_free(&v[i].p);
    }
    free(v);
    return rc;
}

/* Route (0.22.3 protojson): {id, machine, prefix, advertised, enabled, isPrimary, createdAt,
 * updatedAt, deletedAt}; machine is the node as the other answers show it. Read lock held
 * for sn; NULL when the state has no such node (deleted since: left out). */
static json_t *route_json(struct api_call *c, const struct store_route *r,
                          const struct state_node *sn)
{
    bool exit = state_route_is_exit(r->prefix);
    json_t *j = json_object();

    json_object_set_new(j, "id", api_json_id(r->id));
    json_object_set_new(j, "machine", api_json_state_node(c, sn));
    json_object_set_new(j, "prefix", json_string(r->prefix));
    json_object_set_new(j, "advertised", json_boolean(hs_strv_contains(&sn->routes, r->prefix)));
    json_object_set_new(j, "enabled",
                        json_boolean(hs_strv_contains(&sn->n.approved_routes, r->prefix)));
    json_object_set_new(j, "isPrimary", json_boolean(!exit && state_route_primary(
                                            c->api->state, r->prefix) == sn->n.id));
    json_object_set_new(j, "createdAt", api_json_time(r->created_at));
    json_object_set_new(j, "updatedAt", api_json_time(r->updated_at));
    json_object_set_new(j, "deletedAt", json_null());
    return j;
}

static void reply_routes(struct api_call *c, uint64_t node_id)
{
    struct store_route *v = NULL;
    size_t n = 0;
    json_t *arr;
    int rc;

    if ((rc = sync_ids(c, node_id)) < 0 || (rc = store_route_list(c->api->st, node_id, &v, &n)) < 0) {
        api_store_error(c, rc, "route");
        return;
    }
    arr = json_array();
    state_rdlock(c->api->state);
    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_by_id(c->api->state, v[i].node_id);
        if (sn)
            json_array_append_new(arr, route_json(c, &v[i], sn));
    }
    state_unlock(c->api->state);
    store_route_list_free(v, n);
    api_reply(c, 200, json_pack("{s:o}", "routes", arr));
}

/* GET /api/v1/routes */
void api_routes_list(struct api_call *c)
{
    reply_routes(c, 0);
}

/* GET /api/v1/machine/{id}/routes */
void api_routes_node_list(struct api_call *c)
{
    bool known;
    uint64_t id;

    if (node_id_arg(c, &id) < 0)
        return;
    state_rdlock(c->api->state);
    known = state_node_by_id(c->api->state, id) != NULL;
    state_unlock(c->api->state);
    if (!known)
        api_error(c, 404, "node %llu not found", (unsigned long long)id);
    else
        reply_routes(c, id);
}

enum route_op { ROUTE_ENABLE, ROUTE_DISABLE, ROUTE_DELETE };

/* The route's prefix, or both exit routes: 0.22 switched those together. */
static void route_prefixes(const char *prefix, struct hs_strv *out)
{
    if (state_route_is_exit(prefix)) {
        hs_strv_push(out, "0.0.0.0/0");
        hs_strv_push(out, "::/0");
    } else {
        hs_strv_push(out, prefix);
    }
}

/* The node's approved routes after op, into v. -EINVAL (answered) when enabling a route the
 * node does not announce (0.22: "route is not available"). */
static int new_approval(struct api_call *c, const struct store_route *r, enum route_op op,
                        const struct hs_strv *which, struct hs_strv *v)
{
    const struct state_node *sn;
    const char *missing = NULL;
    int rc = 0;

    state_rdlock(c->api->state);
    sn = state_node_by_id(c->api->state, r->node_id);
    if (!sn) {
        rc = -ENOENT;
    } else {
        for (size_t k = 0; k < sn->n.approved_routes.n; k++)
            if (op == ROUTE_ENABLE || !hs_strv_contains(which, sn->n.approved_routes.v[k]))
                hs_strv_push(v, sn->n.approved_routes.v[k]);
        for (size_t k = 0; op == ROUTE_ENABLE && k < which->n; k++) {
            if (!hs_strv_contains(&sn->routes, which->v[k]) && !missing)
                missing = which->v[k];
            if (!hs_strv_contains(v, which->v[k]))
                hs_strv_push(v, which->v[k]);
        }
    }
    state_unlock(c->api->state);
    if (rc < 0) {
        api_error(c, 404, "route %llu not found (its node is gone)", (unsigned long long)r->id);
    } else if (missing) {
        api_error(c, 400, "route %llu (%s) is not available: node %llu does not announce %s",
                  (unsigned long long)r->id, r->prefix, (unsigned long long)r->node_id, missing);
        rc = -EINVAL;
    }
    state_routes_sort(v);
    return rc;
}

/* Rows of the node for the prefixes (0.22 deleted both exit rows together). */
static int delete_rows(struct api_call *c, const struct store_route *r, const struct hs_strv *which)
{
    struct store_route *v = NULL;
    size_t n = 0;
    int rc;

    if ((rc = store_route_list(c->api->st, r->node_id, &v, &n)) < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (hs_strv_contains(which, v[i].prefix)) {
            rc = store_route_delete(c->api->st, v[i].id);
            rc = rc == -ENOENT ? 0 : rc;
        }
    }
    store_route_list_free(v, n);
    return rc;
}

static void route_change(struct api_call *c, enum route_op op)
{
    struct hs_strv which = { 0 }, v = { 0 };
    struct store_route r;
    struct store_node n;
    uint64_t id;
    int rc;

    if (api_parse_id(c, c->args[0], "route", &id) < 0)
        return;
    if ((rc = sync_ids(c, 0)) < 0 || (rc = store_route_get(c->api->st, id, &r)) < 0) {
        if (rc == -ENOENT)
            api_error(c, 404, "route %llu not found", (unsigned long long)id);
        else
            api_store_error(c, rc, "route");
        return;
    }
    route_prefixes(r.prefix, &which);
    if (new_approval(c, &r, op, &which, &v) == 0 && set_approved(c, r.node_id, &v, &n) == 0) {
        store_node_free(&n);
        if (op == ROUTE_DELETE && (rc = delete_rows(c, &r, &which)) < 0)
            api_store_error(c, rc, "route");
        else
            api_reply(c, 200, json_object());
    }
    store_route_free(&r);
    hs_strv_free(&which);
    hs_strv_free(&v);
}

void api_route_enable(struct api_call *c) { route_change(c, ROUTE_ENABLE); }
void api_route_disable(struct api_call *c) { route_change(c, ROUTE_DISABLE); }
void api_route_delete(struct api_call *c) { route_change(c, ROUTE_DELETE); }
