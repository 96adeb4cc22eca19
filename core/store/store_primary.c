/* store: HA subnet routes decided once for all replicas (PostgreSQL; on SQLite every function
 * succeeds doing nothing: one process decides for itself). route_primaries holds the elected
 * replica's choice, route_health the routers found unhealthy by the replica that probes them. */
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

void store_primaries_free(struct store_primary *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].route);
    free(v);
}

static int primary_from_row(struct store_result *r, size_t row, void *out)
{
    *(struct store_primary *)out = (struct store_primary){
        .route = store__cell_take(r, row, 0), .node_id = store__cell_u64(r, row, 1) };
    return 0;
}

static void primary_free(void *p)
{
    free(((struct store_primary *)p)->route);
}

int store_primaries_get(struct store *st, struct store_primary **out, size_t *n)
{
    if (!store_shared(st)) {
        *out = NULL;
        *n = 0;
        return 0;
    }
    return store__get_all(st, "SELECT route, node_id FROM route_primaries", NULL,
                          primary_from_row, sizeof(**out), primary_free, (void **)out, n);
}

int store_primaries_set(struct store *st, const struct store_primary *v, size_t n)
{
    struct store_tx tx;
    int rc;

    if (!store_shared(st))
        return 0;
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    rc = store__tx_exec(&tx, "DELETE FROM route_primaries", NULL, NULL);
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct store_params p;
        /* A router deleted meanwhile has no row to point at: its route is left out. */
        store__params_init(&p);
        store__p_str(&p, v[i].route);
        store__p_u64(&p, v[i].node_id);
        rc = store__tx_exec(&tx,
                            "INSERT INTO route_primaries (route, node_id)"
                            " SELECT $1, $2 FROM nodes WHERE id = $2",
                            &p, NULL);
        store__params_free(&p);
    }
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    store__tx_event(&tx, NOTIFY_PRIMARY, NOTIFY_UPDATE, 0);
    return store__commit(&tx);
}

/* One router's mark made (or kept) or cleared. */
static int health_row(struct store_tx *tx, uint64_t id, bool healthy)
{
    struct store_params p;
    struct store_result r;
    int rc;

    store__params_init(&p);
    store__p_u64(&p, id);
    if (!healthy)
        store__p_i64(&p, hs_now_us());
    rc = store__tx_exec(tx,
                        healthy ? "DELETE FROM route_health WHERE node_id = $1 RETURNING node_id"
                                : "INSERT INTO route_health (node_id, since)"
                                  " SELECT $1, $2 FROM nodes WHERE id = $1"
                                  " ON CONFLICT (node_id) DO UPDATE SET since ="
                                  " route_health.since RETURNING node_id",
                        &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    if (r.nrows > 0) /* every unhealthy verdict: a replica may have cleared its mark early */
        store__tx_event(tx, NOTIFY_HEALTH, healthy ? NOTIFY_DELETE : NOTIFY_CREATE, id);
    store__result_free(&r);
    return 0;
}

int store_health_set(struct store *st, const uint64_t *ids, const bool *healthy, size_t n)
{
    struct store_tx tx;
    int rc = 0;

    if (!store_shared(st) || n == 0)
        return 0;
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = health_row(&tx, ids[i], healthy[i]);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    return store__commit(&tx);
}

static int id_from_row(struct store_result *r, size_t row, void *out)
{
    *(uint64_t *)out = store__cell_u64(r, row, 0);
    return 0;
}

static void id_free(void *p)
{
    (void)p;
}

int store_health_unhealthy(struct store *st, uint64_t **ids, size_t *n)
{
    if (!store_shared(st)) {
        *ids = NULL;
        *n = 0;
        return 0;
    }
    return store__get_all(st, "SELECT node_id FROM route_health ORDER BY node_id", NULL,
                          id_from_row, sizeof(**ids), id_free, (void **)ids, n);
}
