/* The routes page: every announced prefix with its node, approved or not, primary or not,
 * exit routes and HA groups (a prefix announced by several nodes); approve and disable. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

static bool is_exit(const char *prefix)
{
    return hs_streq(prefix, "0.0.0.0/0") || hs_streq(prefix, "::/0");
}

static bool has(const json_t *arr, const char *s)
{
    size_t i;
    json_t *el;

    json_array_foreach(arr, i, el)
        if (hs_streq(json_string_value(el), s))
            return true;
    return false;
}

static json_t *route_row(const json_t *node, const char *prefix)
{
    bool exit = is_exit(prefix);

    return json_pack("{s:O, s:O, s:s, s:b, s:b, s:b, s:O}", "node_id", json_object_get(node, "id"),
                     "node", json_object_get(node, "givenName"), "prefix", prefix, "approved",
                     has(json_object_get(node, "approvedRoutes"), prefix), "primary",
                     !exit && has(json_object_get(node, "subnetRoutes"), prefix), "exit", exit,
                     "online", json_object_get(node, "online"));
}

static int by_prefix(const void *a, const void *b)
{
    const json_t *ra = *(json_t *const *)a, *rb = *(json_t *const *)b;
    int c = strcmp(hs_json_str(ra, "prefix"), hs_json_str(rb, "prefix"));

    return c ? c : strcmp(hs_json_str(ra, "node"), hs_json_str(rb, "node"));
}

/* The rows sorted by prefix, each marked "ha" when its prefix has other routers. */
static json_t *sorted_rows(json_t **v, size_t n)
{
    json_t *out = json_array();

    qsort(v, n, sizeof(*v), by_prefix);
    for (size_t i = 0; i < n; i++) {
        const char *p = hs_json_str(v[i], "prefix");
        bool ha = (i > 0 && hs_streq(p, hs_json_str(v[i - 1], "prefix"))) ||
                  (i + 1 < n && hs_streq(p, hs_json_str(v[i + 1], "prefix")));
        json_object_set_new(v[i], "ha", json_boolean(ha && !is_exit(p)));
        json_array_append_new(out, v[i]);
    }
    return out;
}

void wa__page_routes(struct wa_ctx *x)
{
    json_t *nodes = wa__api_list(x, "/api/v1/node", "nodes"), *node, *route, *data;
    json_t **rows;
    size_t i, k, n = 0, cap = 0;

    if (!nodes)
        return;
    json_array_foreach(nodes, i, node)
        cap += json_array_size(json_object_get(node, "availableRoutes"));
    rows = hs_xcalloc(cap + 1, sizeof(*rows));
    json_array_foreach(nodes, i, node)
        json_array_foreach(json_object_get(node, "availableRoutes"), k, route)
            if (json_is_string(route) && n < cap)
                rows[n++] = route_row(node, json_string_value(route));
    data = json_pack("{s:o}", "routes", sorted_rows(rows, n));
    free(rows);
    json_decref(nodes);
    wa__render(x, wa__page_status(x, data), "routes", "Routes", data);
}

/* The node's approved routes with route added (approve) or taken out; an exit route counts
 * for both families, as clients announce and use them together. */
static json_t *changed_routes(const json_t *approved, const char *route, bool approve)
{
    json_t *out = json_array(), *el;
    size_t i;

    json_array_foreach(approved, i, el) {
        const char *r = json_string_value(el);
        if (!r || hs_streq(r, route) || (is_exit(route) && is_exit(r)))
            continue;
        json_array_append(out, el);
    }
    if (approve && is_exit(route)) {
        json_array_append_new(out, json_string("0.0.0.0/0"));
        json_array_append_new(out, json_string("::/0"));
    } else if (approve) {
        json_array_append_new(out, json_string(route));
    }
    return out;
}

static void route_change(struct wa_ctx *x, bool approve)
{
    const char *route = wa__form_get(&x->form, "route");
    json_t *answer, *node, *body, *done = NULL;
    uint64_t id;
    long status;
    char *path;

    if (!wa__id_arg(x, &id))
        return;
    if (!route)
        return wa__error_page(x, 400, "No route given.");
    if (!(node = wa__api_node(x, id, &answer))) {
        json_decref(answer);
        return;
    }
    body = json_pack("{s:o}", "routes", changed_routes(json_object_get(node, "approvedRoutes"),
                                                       route, approve));
    json_decref(answer);
    path = hs_aprintf("/api/v1/node/%" PRIu64 "/approve_routes", id);
    if (wa__api(x, "POST", path, body, &status, &done) == 0)
        wa__after_change(x, status, done, "/routes", wa__page_routes);
    json_decref(done);
    free(path);
}

void wa__post_route_approve(struct wa_ctx *x)
{
    route_change(x, true);
}

void wa__post_route_disable(struct wa_ctx *x)
{
    route_change(x, false);
}
