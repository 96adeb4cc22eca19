/* store: pre-auth keys and API keys. Both are stored as a public prefix (the lookup key) and a
 * 32-byte keyed hash of the secret in hex; the secret itself never reaches the database. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define PAK_COLS                                                                           \
    "id, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at"
#define APIKEY_COLS "id, prefix, hash, expiration, last_seen, created_at"

static bool valid_prefix(const char *prefix)
{
    size_t len = strnlen(prefix, STORE_PREFIX_MAX);

    return len > 0 && len < STORE_PREFIX_MAX;
}

/* UPDATE/DELETE ... WHERE id = $1 [$2 = at] RETURNING id, with its event after commit. */
static int write_by_id(struct store *st, const char *sql, uint64_t id, const int64_t *at,
                       enum notify_entity e, enum notify_op op)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    if (at)
        store__p_time(&p, *at);
    return store__write_row(st, sql, &p, e, op, NULL, NULL);
}

/* The hash cell: our keyed hash in hex, or the bcrypt hash of a key imported from headscale. */
static void hash_from_cell(const struct store_result *r, size_t row, uint8_t hash[STORE_KEY_LEN],
                           char bcrypt[HS_BCRYPT_LEN + 1])
{
    const char *cell = store__cell(r, row, 2);

    if (hs_bcrypt_is_hash(cell))
        memcpy(bcrypt, cell, HS_BCRYPT_LEN + 1);
    else
        store__cell_key(r, row, 2, NULL, hash);
}

/* ---- pre-auth keys ---- */

void store_preauthkey_free(struct store_preauthkey *k)
{
    if (!k)
        return;
    hs_strv_free(&k->tags);
    sodium_memzero(k->hash, sizeof(k->hash));
    sodium_memzero(k->bcrypt, sizeof(k->bcrypt));
}

static void preauthkey_free_elem(void *elem)
{
    store_preauthkey_free(elem);
}

void store_preauthkey_list_free(struct store_preauthkey *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        store_preauthkey_free(&v[i]);
    free(v);
}

static int preauthkey_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_preauthkey *k = out;

    memset(k, 0, sizeof(*k));
    k->id = store__cell_u64(r, row, 0);
    hs_strlcpy(k->prefix, store__cell(r, row, 1) ? store__cell(r, row, 1) : "",
               sizeof(k->prefix));
    hash_from_cell(r, row, k->hash, k->bcrypt);
    k->user_id = store__cell_u64(r, row, 3);
    k->reusable = store__cell_bool(r, row, 4);
    k->ephemeral = store__cell_bool(r, row, 5);
    k->used = store__cell_bool(r, row, 6);
    store__cell_strv(r, row, 7, &k->tags);
    k->expiration = store__cell_i64(r, row, 8);
    k->created_at = store__cell_i64(r, row, 9);
    return 0;
}

int store_preauthkey_create(struct store *st, const struct store_preauthkey *in,
                            struct store_preauthkey *out)
{
    struct store_params p;
    int rc;

    if (!in || !valid_prefix(in->prefix))
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, in->prefix);
    store__p_key(&p, NULL, in->hash);
    store__p_id(&p, in->user_id);
    store__p_bool(&p, in->reusable);
    store__p_bool(&p, in->ephemeral);
    store__p_bool(&p, in->used);
    store__p_strv(&p, &in->tags);
    store__p_time(&p, in->expiration);
    store__p_i64(&p, hs_now_us());
    rc = store__write_row(st,
                          "INSERT INTO pre_auth_keys (prefix, hash, user_id, reusable, ephemeral,"
                          " used, tags, expiration, created_at)"
                          " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING " PAK_COLS,
                          &p, NOTIFY_PREAUTHKEY, NOTIFY_CREATE, preauthkey_from_row, out);
    store__params_free(&p);
    return rc;
}

int store_preauthkey_get(struct store *st, uint64_t id, struct store_preauthkey *out)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__get_one(st, "SELECT " PAK_COLS " FROM pre_auth_keys WHERE id = $1", &p,
                          preauthkey_from_row, out);
}

int store_preauthkey_get_by_prefix(struct store *st, const char *prefix,
                                   struct store_preauthkey *out)
{
    struct store_params p;

    if (!prefix)
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, prefix);
    return store__get_one(st, "SELECT " PAK_COLS " FROM pre_auth_keys WHERE prefix = $1", &p,
                          preauthkey_from_row, out);
}

int store_preauthkey_list(struct store *st, uint64_t user_id, struct store_preauthkey **out,
                          size_t *n)
{
    struct store_params p;

    if (!out || !n)
        return -EINVAL;
    store__params_init(&p);
    store__p_u64(&p, user_id);
    return store__get_all(st,
                          "SELECT " PAK_COLS " FROM pre_auth_keys"
                          " WHERE CAST($1 AS BIGINT) = 0 OR user_id = CAST($1 AS BIGINT)"
                          " ORDER BY id",
                          &p, preauthkey_from_row, sizeof(**out), preauthkey_free_elem,
                          (void **)out, n);
}

int store_preauthkey_expire(struct store *st, uint64_t id, int64_t at)
{
    return write_by_id(st, "UPDATE pre_auth_keys SET expiration = $2 WHERE id = $1 RETURNING id",
                       id, &at, NOTIFY_PREAUTHKEY, NOTIFY_UPDATE);
}

static int bool_from_row(struct store_result *r, size_t row, void *out)
{
    *(bool *)out = store__cell_bool(r, row, 0);
    return 0;
}

/* The UPDATE is the atomic gate: of two registrations racing for a single-use key exactly one
 * flips `used`. A reusable key that is already marked used has nothing to change, so it gets
 * no event. */
int store_preauthkey_use(struct store *st, uint64_t id)
{
    struct store_params p;
    bool reusable = false;
    int rc;

    rc = write_by_id(st, "UPDATE pre_auth_keys SET used = TRUE WHERE id = $1 AND NOT used"
                         " RETURNING id",
                     id, NULL, NOTIFY_PREAUTHKEY, NOTIFY_UPDATE);
    if (rc != -ENOENT)
        return rc;
    store__params_init(&p);
    store__p_u64(&p, id);
    rc = store__get_one(st, "SELECT reusable FROM pre_auth_keys WHERE id = $1", &p,
                        bool_from_row, &reusable);
    if (rc < 0)
        return rc;
    return reusable ? 0 : -EACCES;
}

int store_preauthkey_release(struct store *st, uint64_t id)
{
    return write_by_id(st, "UPDATE pre_auth_keys SET used = FALSE WHERE id = $1 RETURNING id",
                       id, NULL, NOTIFY_PREAUTHKEY, NOTIFY_UPDATE);
}

int store_preauthkey_delete(struct store *st, uint64_t id)
{
    return write_by_id(st, "DELETE FROM pre_auth_keys WHERE id = $1 RETURNING id", id, NULL,
                       NOTIFY_PREAUTHKEY, NOTIFY_DELETE);
}

/* ---- API keys ---- */

void store_apikey_list_free(struct store_apikey *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        sodium_memzero(v[i].hash, sizeof(v[i].hash));
        sodium_memzero(v[i].bcrypt, sizeof(v[i].bcrypt));
    }
    free(v);
}

static void apikey_free_elem(void *elem)
{
    (void)elem; /* no owned members */
}

static int apikey_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_apikey *k = out;

    memset(k, 0, sizeof(*k));
    k->id = store__cell_u64(r, row, 0);
    hs_strlcpy(k->prefix, store__cell(r, row, 1) ? store__cell(r, row, 1) : "",
               sizeof(k->prefix));
    hash_from_cell(r, row, k->hash, k->bcrypt);
    k->expiration = store__cell_i64(r, row, 3);
    k->last_seen = store__cell_i64(r, row, 4);
    k->created_at = store__cell_i64(r, row, 5);
    return 0;
}

int store_apikey_create(struct store *st, const struct store_apikey *in, struct store_apikey *out)
{
    struct store_params p;
    int rc;

    if (!in || !valid_prefix(in->prefix))
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, in->prefix);
    store__p_key(&p, NULL, in->hash);
    store__p_time(&p, in->expiration);
    store__p_time(&p, in->last_seen);
    store__p_i64(&p, hs_now_us());
    rc = store__write_row(st,
                          "INSERT INTO api_keys (prefix, hash, expiration, last_seen, created_at)"
                          " VALUES ($1, $2, $3, $4, $5) RETURNING " APIKEY_COLS,
                          &p, NOTIFY_APIKEY, NOTIFY_CREATE, apikey_from_row, out);
    store__params_free(&p);
    return rc;
}

int store_apikey_get(struct store *st, uint64_t id, struct store_apikey *out)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__get_one(st, "SELECT " APIKEY_COLS " FROM api_keys WHERE id = $1", &p,
                          apikey_from_row, out);
}

int store_apikey_get_by_prefix(struct store *st, const char *prefix, struct store_apikey *out)
{
    struct store_params p;

    if (!prefix)
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, prefix);
    return store__get_one(st, "SELECT " APIKEY_COLS " FROM api_keys WHERE prefix = $1", &p,
                          apikey_from_row, out);
}

int store_apikey_list(struct store *st, struct store_apikey **out, size_t *n)
{
    if (!out || !n)
        return -EINVAL;
    return store__get_all(st, "SELECT " APIKEY_COLS " FROM api_keys ORDER BY id", NULL,
                          apikey_from_row, sizeof(**out), apikey_free_elem, (void **)out, n);
}

int store_apikey_expire(struct store *st, uint64_t id, int64_t at)
{
    return write_by_id(st, "UPDATE api_keys SET expiration = $2 WHERE id = $1 RETURNING id", id,
                       &at, NOTIFY_APIKEY, NOTIFY_UPDATE);
}

int store_apikey_delete(struct store *st, uint64_t id)
{
    return write_by_id(st, "DELETE FROM api_keys WHERE id = $1 RETURNING id", id, NULL,
                       NOTIFY_APIKEY, NOTIFY_DELETE);
}

/* Runs on every API request: autocommit, no transaction, no event. */
int store_apikey_touch(struct store *st, uint64_t id, int64_t at)
{
    struct store_params p;
    struct store_result res;
    int rc;

    store__params_init(&p);
    store__p_u64(&p, id);
    store__p_time(&p, at);
    rc = store__query(st, "UPDATE api_keys SET last_seen = $2 WHERE id = $1 RETURNING id", &p,
                      &res);
    if (rc < 0)
        return rc;
    rc = res.nrows ? 0 : -ENOENT;
    store__result_free(&res);
    return rc;
}
