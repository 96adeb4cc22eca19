/* store: presence of map streams across replicas (PostgreSQL; on SQLite every function
 * succeeds doing nothing: one process knows its own streams). Origins are stored as int64. */
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

/* The database's clock in us since the epoch (PostgreSQL; only shared stores come here). */
#define DB_NOW_US "CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)"

static void p_origin(struct store_params *p, const struct store *st)
{
    store__p_i64(p, (int64_t)st->origin);
}

int store_replica_renew(struct store *st, const char *name, const char *derp_url,
                        int64_t lease_us, bool *made)
{
    struct store_params p;
    struct store_result r;
    int rc;

    *made = false;
    if (!store_shared(st))
        return 0;
    store__params_init(&p);
    p_origin(&p, st);
    store__p_str(&p, name);
    store__p_i64(&p, lease_us);
    store__p_str(&p, derp_url);
    /* xmax is 0 on a row this statement inserted (PostgreSQL): the lease was new or gone. */
    rc = store__query(st,
                      "INSERT INTO replicas (origin, name, started_at, lease_until, derp_url)"
                      " VALUES ($1, $2, " DB_NOW_US ", " DB_NOW_US " + $3, $4)"
                      " ON CONFLICT (origin) DO UPDATE SET lease_until = excluded.lease_until,"
                      " derp_url = excluded.derp_url"
                      " RETURNING xmax = 0",
                      &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    *made = store__cell_bool(&r, 0, 0);
    store__result_free(&r);
    return 0;
}

int store_replica_derp_urls(struct store *st, struct hs_strv *urls)
{
    struct store_params p;
    struct store_result r;
    int rc;

    *urls = (struct hs_strv){ 0 };
    if (!store_shared(st))
        return 0;
    store__params_init(&p);
    p_origin(&p, st);
    store__p_i64(&p, STORE_REPLICA_DERP_MAX);
    rc = store__query(st,
                      "SELECT DISTINCT derp_url FROM replicas WHERE origin <> $1"
                      " AND derp_url IS NOT NULL AND lease_until >= " DB_NOW_US
                      " ORDER BY derp_url LIMIT $2",
                      &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r.nrows; i++)
        hs_strv_push(urls, store__cell(&r, i, 0));
    store__result_free(&r);
    return 0;
}

int store_client_addr(struct store *st, char *out, size_t size)
{
    struct store_result r;
    const char *addr;
    int rc;

    *out = '\0';
    if (!store_shared(st))
        return 0;
    if ((rc = store__query(st, "SELECT host(inet_client_addr())", NULL, &r)) < 0)
        return rc;
    addr = r.nrows ? store__cell(&r, 0, 0) : NULL;
    if (addr && strlen(addr) < size)
        memcpy(out, addr, strlen(addr) + 1);
    store__result_free(&r);
    return 0;
}

/* One row made or deleted for node ($1) and our origin ($2). */
static int presence_row(struct store_tx *tx, const char *sql, uint64_t node, enum notify_op op)
{
    struct store_params p;
    struct store_result r;
    int rc;

    store__params_init(&p);
    store__p_u64(&p, node);
    p_origin(&p, tx->st);
    rc = store__tx_exec(tx, sql, &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    if (r.nrows > 0) /* changed something: others must hear it */
        store__tx_event(tx, NOTIFY_PRESENCE, op, node);
    store__result_free(&r);
    return 0;
}

int store_presence_write(struct store *st, const uint64_t *on, size_t non, const uint64_t *off,
                         size_t noff)
{
    struct store_tx tx;
    int rc = 0;

    if (!store_shared(st) || non + noff == 0)
        return 0;
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    /* A node deleted meanwhile has no row to hold (the foreign key): nothing is inserted. */
    for (size_t i = 0; i < non && rc == 0; i++)
        rc = presence_row(&tx,
                          "INSERT INTO presence (node_id, origin, since)"
                          " SELECT $1, $2, " DB_NOW_US " FROM nodes WHERE id = $1"
                          " ON CONFLICT DO NOTHING RETURNING node_id",
                          on[i], NOTIFY_CREATE);
    for (size_t i = 0; i < noff && rc == 0; i++)
        rc = presence_row(&tx,
                          "DELETE FROM presence WHERE node_id = $1 AND origin = $2"
                          " RETURNING node_id",
                          off[i], NOTIFY_DELETE);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    return store__commit(&tx);
}

/* Node ids (distinct, ascending) with a stream on another replica. */
int store_presence_others(struct store *st, uint64_t **ids, size_t *n)
{
    struct store_params p;
    struct store_result r;
    int rc;

    *ids = NULL;
    *n = 0;
    if (!store_shared(st))
        return 0;
    store__params_init(&p);
    p_origin(&p, st);
    rc = store__query(st, "SELECT DISTINCT node_id FROM presence WHERE origin <> $1"
                          " ORDER BY node_id", &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    *ids = hs_xcalloc(r.nrows + 1, sizeof(**ids));
    for (size_t i = 0; i < r.nrows; i++)
        (*ids)[i] = store__cell_u64(&r, i, 0);
    *n = r.nrows;
    store__result_free(&r);
    return 0;
}

int store_presence_node(struct store *st, uint64_t id, bool *elsewhere)
{
    struct store_params p;
    struct store_result r;
    int rc;

    *elsewhere = false;
    if (!store_shared(st))
        return 0;
    store__params_init(&p);
    store__p_u64(&p, id);
    p_origin(&p, st);
    rc = store__query(st, "SELECT 1 FROM presence WHERE node_id = $1 AND origin <> $2 LIMIT 1",
                      &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    *elsewhere = r.nrows > 0;
    store__result_free(&r);
    return 0;
}

/* Deletes the presence rows of the replicas chosen by where ($1: our origin, when asked for)
 * and then those replicas, announcing each node that lost one; *nodes counts them. */
static int drop_replicas(struct store *st, const char *presence_sql, const char *replicas_sql,
                         const int64_t *origin, size_t *nodes)
{
    struct store_tx tx;
    struct store_params p;
    struct store_result r;
    int rc;

    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    store__params_init(&p);
    if (origin)
        store__p_i64(&p, *origin);
    rc = store__tx_exec(&tx, presence_sql, &p, &r);
    if (rc == 0) {
        for (size_t i = 0; i < r.nrows; i++)
            store__tx_event(&tx, NOTIFY_PRESENCE, NOTIFY_DELETE, store__cell_u64(&r, i, 0));
        if (nodes)
            *nodes = r.nrows;
        store__result_free(&r);
        rc = store__tx_exec(&tx, replicas_sql, &p, NULL);
    }
    store__params_free(&p);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    return store__commit(&tx);
}

int store_replicas_expire(struct store *st, size_t *nodes)
{
    *nodes = 0;
    if (!store_shared(st))
        return 0;
    return drop_replicas(st,
                         "DELETE FROM presence WHERE origin IN"
                         " (SELECT origin FROM replicas WHERE lease_until < " DB_NOW_US ")"
                         " RETURNING node_id",
                         "DELETE FROM replicas WHERE lease_until < " DB_NOW_US, NULL, nodes);
}

int store_replica_leave(struct store *st)
{
    int64_t origin = (int64_t)st->origin;

    if (!store_shared(st))
        return 0;
    return drop_replicas(st, "DELETE FROM presence WHERE origin = $1 RETURNING node_id",
                         "DELETE FROM replicas WHERE origin = $1", &origin, NULL);
}
