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

static int route_cmp(const void *pa, const void *pb)
{
    const struct store_route *a = *(const struct store_route *const *)pa;
    const struct store_route *b = *(const struct store_route *const *)pb;

    if (a->node_id != b->node_id)
        return a->node_id < b->node_id ? -1 : 1;
    return strcmp(a->prefix, b->prefix);
}

static bool has_id(struct store_route **sorted, size_t n, uint64_t node_id, const char *prefix)
{
    struct store_route key = { .node_id = node_id, .prefix = (char *)prefix }, *kp = &key;

    return n && bsearch(&kp, sorted, n, sizeof(*sorted), route_cmp) != NULL;
}

/* Pairs the state has (announced or approved routes of node only, or of all) that v lacks. */
static size_t missing_pairs(struct api_call *c, uint64_t only, const struct store_route *v,
                            size_t n, uint64_t **ids, struct hs_strv *prefixes)
{
    struct state *s = c->api->state;
    struct store_route **sorted = hs_xcalloc(n + 1, sizeof(*sorted));
    size_t count = 0;

    for (size_t i = 0; i < n; i++)
        sorted[i] = (struct store_route *)&v[i];
    qsort(sorted, n, sizeof(*sorted), route_cmp);
    state_rdlock(s);
    for (size_t i = 0; i < state_node_count(s); i++) {
        const struct state_node *sn = state_node_at(s, i);
        const struct hs_strv *lists[2] = { &sn->routes, &sn->n.approved_routes };
        if (only && sn->n.id != only)
            continue;
        for (size_t l = 0; l < 2; l++) {
            for (size_t k = 0; k < lists[l]->n; k++) {
                if (has_id(sorted, n, sn->n.id, lists[l]->v[k]))
                    continue;
                *ids = hs_xrealloc(*ids, (count + 1) * sizeof(**ids));
                (*ids)[count++] = sn->n.id;
                hs_strv_push(prefixes, lists[l]->v[k]);
            }
        }
    }
    state_unlock(s);
    free(sorted);
    return count;
}

/* The route ids of node only (0: all), after every announced or approved (node, prefix)
 * got one, so an id seen once keeps naming the same route. One query when none is new. */
static int route_ids(struct api_call *c, uint64_t only, struct store_route **out, size_t *nout)
{
    struct hs_strv prefixes = { 0 };
    uint64_t *ids = NULL;
    size_t missing;
    int rc;

    if ((rc = store_route_list(c->api->st, only, out, nout)) < 0)
        return rc;
    missing = missing_pairs(c, only, *out, *nout, &ids, &prefixes);
    for (size_t i = 0; i < missing && rc == 0; i++) {
        rc = store_route_add(c->api->st, ids[i], prefixes.v[i]);
        rc = rc == -ENOENT ? 0 : rc; /* a node deleted meanwhile has no routes */
    }
    free(ids);
    hs_strv_free(&prefixes);
    if (missing && rc == 0) {
        store_route_list_free(*out, *nout);
        rc = store_route_list(c->api->st, only, out, nout);
    }
    return rc;
}

/* Route (0.22.3 protojson): {id, machine, prefix, advertised, enabled, isPrimary, createdAt,
 * updatedAt, deletedAt}; machine is 0.22.3's Machine. Read lock held. */
static void jw_route(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                     const struct store_route *r, const struct state_node *sn)
{
    bool exit = state_route_is_exit(r->prefix);

    api_jw_obj(w);
    api_jw_key(w, "id");
    api_jw_id(w, r->id);
    api_jw_key(w, "machine");
    api_jw_state_node(c, w, refs, sn);
    api_jw_kstr(w, "prefix", r->prefix);
    api_jw_key(w, "advertised");
    api_jw_bool(w, hs_strv_contains(&sn->routes, r->prefix));
    api_jw_key(w, "enabled");
    api_jw_bool(w, hs_strv_contains(&sn->n.approved_routes, r->prefix));
    api_jw_key(w, "isPrimary");
    api_jw_bool(w, !exit && state_route_primary(c->api->state, r->prefix) == sn->n.id);
    api_jw_key(w, "createdAt");
    api_jw_time(w, r->created_at);
    api_jw_key(w, "updatedAt");
    api_jw_time(w, r->updated_at);
    api_jw_key(w, "deletedAt");
    api_jw_null(w);
    api_jw_obj_end(w);
}

/* Users and keys are loaded once for the whole list (as GET /api/v1/node does); a second
 * pass only when one appeared between the two reads. Routes of nodes deleted since are left
 * out. */
static void reply_routes(struct api_call *c, uint64_t node_id)
{
    struct store_route *v = NULL;
    struct api_refs refs;
    struct api_jw w;
    bool complete = false;
    size_t n = 0;
    int rc;

    c->v022 = true; /* a 0.22.3 answer: each route's machine in its Machine shape */
    if ((rc = route_ids(c, node_id, &v, &n)) < 0) {
        api_store_error(c, rc, "route");
        return;
    }
    for (int pass = 0; pass < 2 && !complete; pass++) {
        if ((rc = api_refs_load(c, true, &refs)) < 0) {
            api_store_error(c, rc, "route");
            break;
        }
        api_reply_begin(c, &w);
        api_jw_obj(&w);
        api_jw_key(&w, "routes");
        api_jw_arr(&w);
        state_rdlock(c->api->state);
        for (size_t i = 0; i < n; i++) {
            const struct state_node *sn = state_node_by_id(c->api->state, v[i].node_id);
            if (sn)
                jw_route(c, &w, &refs, &v[i], sn);
        }
        state_unlock(c->api->state);
        api_jw_arr_end(&w);
        api_jw_obj_end(&w);
        complete = !refs.missed;
        if (complete || pass == 1)
            api_reply_end(c, &w);
        api_refs_free(&refs);
    }
    store_route_list_free(v, n);
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

/* The route of the path's id, or an answered error. An id may name a route no one listed
 * yet (scripts count on the first announced route being 1): ids are then given out first. */
static int find_route(struct api_call *c, struct store_route *r)
{
    struct store_route *all = NULL;
    size_t nall = 0;
    uint64_t id;
    int rc;

    if (api_parse_id(c, c->args[0], "route", &id) < 0)
        return -EINVAL;
    rc = store_route_get(c->api->st, id, r);
    if (rc == -ENOENT && (rc = route_ids(c, 0, &all, &nall)) == 0)
        rc = store_route_get(c->api->st, id, r);
    store_route_list_free(all, nall);
    if (rc == -ENOENT)
        api_error(c, 404, "route %llu not found", (unsigned long long)id);
    else if (rc < 0)
        api_store_error(c, rc, "route");
    return rc;
}

static void route_change(struct api_call *c, enum route_op op)
{
    struct hs_strv which = { 0 }, v = { 0 };
    struct store_route r;
    struct store_node n;
    int rc;

    if (find_route(c, &r) < 0)
        return;
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
