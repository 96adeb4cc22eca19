/* store: pending interactive registrations. They live in the database, not in one process's
 * memory, so an operator's `nodes register` on any replica completes a login that a client
 * started on another; completion publishes NOTIFY_REGISTRATION to wake the waiting request. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define REG_COLS \
    "id, machine_key, node_key, data, user_id, node_id, created_at, expires_at, rejected"

void store_registration_free(struct store_registration *r)
{
    if (!r)
        return;
    free(r->id);
    free(r->data_json);
    memset(r, 0, sizeof(*r));
}

static int reg_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_registration *g = out;

    memset(g, 0, sizeof(*g));
    g->id = store__cell_take(r, row, 0);
    store__cell_key(r, row, 1, "mkey:", g->machine_key);
    store__cell_key(r, row, 2, "nodekey:", g->node_key);
    g->data_json = store__cell_take(r, row, 3);
    g->user_id = store__cell_u64(r, row, 4);
    g->node_id = store__cell_u64(r, row, 5);
    g->created_at = store__cell_i64(r, row, 6);
    g->expires_at = store__cell_i64(r, row, 7);
    g->rejected = store__cell_bool(r, row, 8);
    return 0;
}

int store_registration_create(struct store *st, const struct store_registration *in)
{
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_str(&p, in->id);
    store__p_key(&p, "mkey:", in->machine_key);
    store__p_key(&p, "nodekey:", in->node_key);
    store__p_str(&p, in->data_json ? in->data_json : "{}");
    store__p_i64(&p, hs_now_us());
    store__p_i64(&p, in->expires_at);
    rc = store__write_row(st,
                          "INSERT INTO registrations (id, machine_key, node_key, data, "
                          "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING 0",
                          &p, NOTIFY_REGISTRATION, NOTIFY_CREATE, NULL, NULL);
    store__params_free(&p);
    return rc;
}

int store_registration_get(struct store *st, const char *id, struct store_registration *out)
{
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_str(&p, id);
    rc = store__get_one(st, "SELECT " REG_COLS " FROM registrations WHERE id = $1", &p,
                        reg_from_row, out);
    store__params_free(&p);
    return rc;
}

int store_registration_complete(struct store *st, const char *id, uint64_t user_id,
                                uint64_t node_id)
{
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_str(&p, id);
    store__p_id(&p, user_id);
    store__p_id(&p, node_id);
    store__p_i64(&p, hs_now_us());
    store__p_bool(&p, false);
    rc = store__write_row(st,
                          "UPDATE registrations SET user_id = $2, node_id = $3 WHERE id = $1 "
                          "AND expires_at > $4 AND rejected = $5 RETURNING 0",
                          &p, NOTIFY_REGISTRATION, NOTIFY_UPDATE, NULL, NULL);
    store__params_free(&p);
    return rc;
}

int store_registration_reject(struct store *st, const char *id)
{
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_str(&p, id);
    store__p_i64(&p, hs_now_us());
    store__p_bool(&p, true);
    rc = store__write_row(st,
                          "UPDATE registrations SET rejected = $3 WHERE id = $1 "
                          "AND expires_at > $2 AND node_id IS NULL RETURNING 0",
                          &p, NOTIFY_REGISTRATION, NOTIFY_UPDATE, NULL, NULL);
    store__params_free(&p);
    return rc;
}

/* Expired rows go, and so do all but the `keep` that expire last: every row has the same
 * lifetime, so those are the newest. Deletions publish nothing: a waiting follow-up learns
 * it from its next look-up. */
int store_registration_trim(struct store *st, int64_t now, size_t keep)
{
    struct store_result res;
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_i64(&p, now);
    store__p_u64(&p, keep);
    rc = store__query(st,
                      "DELETE FROM registrations WHERE expires_at <= $1 OR expires_at <= "
                      "(SELECT expires_at FROM registrations ORDER BY expires_at DESC "
                      "LIMIT 1 OFFSET CAST($2 AS BIGINT)) RETURNING id",
                      &p, &res);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    rc = res.nrows > INT_MAX ? INT_MAX : (int)res.nrows;
    store__result_free(&res);
    return rc;
}

int store_registration_count(struct store *st, size_t *out)
{
    struct store_result res;
    int rc = store__query(st, "SELECT count(*) FROM registrations", NULL, &res);

    if (rc < 0)
        return rc;
    *out = res.nrows ? (size_t)store__cell_u64(&res, 0, 0) : 0;
    store__result_free(&res);
    return 0;
}

/* ---- OIDC logins of pending registrations ---- */

int store_oidc_login_create(struct store *st, const uint8_t state_hash[STORE_KEY_LEN],
                            const char *reg_id, int64_t expires_at)
{
    struct store_params p, q;
    struct store_tx tx;
    int64_t now = hs_now_us();
    int rc;

    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    store__params_init(&p);
    store__p_key(&p, NULL, state_hash);
    store__p_str(&p, reg_id);
    store__p_i64(&p, now);
    store__p_i64(&p, expires_at);
    rc = store__tx_exec(&tx,
                        "INSERT INTO oidc_logins (state_hash, registration_id, created_at,"
                        " expires_at) VALUES ($1, $2, $3, $4)",
                        &p, NULL);
    store__params_free(&p);
    /* Expired logins go, and those of this registration beyond the newest few (a page
     * reloaded over and over must not fill the table). */
    store__params_init(&q);
    store__p_i64(&q, now);
    store__p_str(&q, reg_id);
    store__p_u64(&q, STORE_OIDC_LOGINS_KEPT);
    if (rc == 0)
        rc = store__tx_exec(&tx,
                            "DELETE FROM oidc_logins WHERE expires_at <= $1 OR"
                            " (registration_id = $2 AND state_hash NOT IN (SELECT state_hash"
                            " FROM oidc_logins WHERE registration_id = $2 ORDER BY created_at"
                            " DESC, state_hash LIMIT CAST($3 AS BIGINT)))",
                            &q, NULL);
    store__params_free(&q);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    return store__commit(&tx);
}

int store_oidc_login_take(struct store *st, const uint8_t state_hash[STORE_KEY_LEN],
                          int64_t now, char **reg_id)
{
    struct store_params p;
    struct store_result r;
    int rc;

    store__params_init(&p);
    store__p_key(&p, NULL, state_hash);
    /* The delete is the test: of two callbacks with one state (two replicas, a replay),
     * only one gets the row. */
    rc = store__query(st,
                      "DELETE FROM oidc_logins WHERE state_hash = $1"
                      " RETURNING registration_id, expires_at",
                      &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    rc = r.nrows == 1 && store__cell_i64(&r, 0, 1) > now ? 0 : -ENOENT;
    if (rc == 0)
        *reg_id = store__cell_take(&r, 0, 0);
    store__result_free(&r);
    return rc;
}
