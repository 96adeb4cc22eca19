/* store: route ids for headscale 0.22's routes API (store.h, "route ids"). */
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define ROUTE_COLS "id, node_id, prefix, created_at, updated_at"

void store_route_free(struct store_route *r)
{
    if (!r)
        return;
    free(r->prefix);
    memset(r, 0, sizeof(*r));
}

static void route_free_elem(void *elem)
{
    store_route_free(elem);
}

void store_route_list_free(struct store_route *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        store_route_free(&v[i]);
    free(v);
}

static int route_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_route *rt = out;

    memset(rt, 0, sizeof(*rt));
    rt->id = store__cell_u64(r, row, 0);
    rt->node_id = store__cell_u64(r, row, 1);
    rt->prefix = store__cell_take(r, row, 2);
    rt->created_at = store__cell_i64(r, row, 3);
    rt->updated_at = store__cell_i64(r, row, 4);
    return rt->prefix ? 0 : -EIO;
}

int store_route_list(struct store *st, uint64_t node_id, struct store_route **out, size_t *n)
{
    struct store_params p;

    if (!out || !n)
        return -EINVAL;
    store__params_init(&p);
    store__p_u64(&p, node_id);
    return store__get_all(st,
                          "SELECT " ROUTE_COLS " FROM routes"
                          " WHERE CAST($1 AS BIGINT) = 0 OR node_id = CAST($1 AS BIGINT)"
                          " ORDER BY id",
                          &p, route_from_row, sizeof(**out), route_free_elem, (void **)out, n);
}

int store_route_get(struct store *st, uint64_t id, struct store_route *out)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__get_one(st, "SELECT " ROUTE_COLS " FROM routes WHERE id = $1", &p,
                          route_from_row, out);
}

/* A pair that has its id already is left alone (on PostgreSQL the sequence value drawn is
 * lost: callers add only pairs they did not see listed). */
int store_route_add(struct store *st, uint64_t node_id, const char *prefix)
{
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_u64(&p, node_id);
    store__p_str(&p, prefix);
    store__p_i64(&p, hs_now_us());
    rc = store__query(st,
                      "INSERT INTO routes (node_id, prefix, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $3) ON CONFLICT (node_id, prefix) DO NOTHING",
                      &p, NULL);
    store__params_free(&p);
    return rc;
}

int store_route_delete(struct store *st, uint64_t id)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__write_row(st, "DELETE FROM routes WHERE id = $1 RETURNING id", &p,
                            NOTIFY_ROUTE, NOTIFY_DELETE, NULL, NULL);
}
