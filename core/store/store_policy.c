/* store: server-wide data — the policy history and the server secret (kv table). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define KV_SERVER_SECRET "server_secret"

/* ---- policy ---- */

struct text_row {
    char *text;
    int64_t at;
};

static int text_from_row(struct store_result *r, size_t row, void *out)
{
    struct text_row *t = out;

    t->text = store__cell_take(r, row, 0);
    t->at = store__cell_i64(r, row, 1);
    return 0;
}

int store__get_text(struct store *st, const char *sql, char **text, int64_t *at)
{
    struct text_row row = { 0 };
    int rc;

    if (!text)
        return -EINVAL;
    if ((rc = store__get_one(st, sql, NULL, text_from_row, &row)) < 0)
        return rc;
    *text = row.text;
    if (at)
        *at = row.at;
    return 0;
}

int store_policy_get(struct store *st, char **text, int64_t *updated_at)
{
    return store__get_text(st, "SELECT data, created_at FROM policies ORDER BY id DESC LIMIT 1",
                           text, updated_at);
}

/* The newest STORE_POLICY_VERSIONS rows stay; the subquery's LIMIT finds the oldest kept. */
static const char trim_sql[] =
    "DELETE FROM policies WHERE id < (SELECT MIN(id) FROM"
    " (SELECT id FROM policies ORDER BY id DESC LIMIT $1) AS kept)";

/* Append-only: the new row becomes the active policy; the event carries id 0 (notify.h). */
int store_policy_set(struct store *st, const char *text, const char *saved_by,
                     uint64_t restored_from, int64_t *updated_at, uint64_t *id_out)
{
    char who[STORE_POLICY_WHO_MAX];
    struct store_params p, keep;
    struct store_result res;
    struct store_tx tx;
    int64_t now = hs_now_us();
    uint64_t id;
    int rc;

    if (!text)
        return -EINVAL;
    hs_strlcpy(who, saved_by ? saved_by : "", sizeof(who));
    store__params_init(&p);
    store__p_str(&p, text);
    store__p_i64(&p, now);
    store__p_str(&p, who);
    store__p_u64(&p, strlen(text));
    store__p_u64(&p, restored_from);
    store__params_init(&keep);
    store__p_u64(&keep, STORE_POLICY_VERSIONS);
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    rc = store__tx_exec(&tx,
                        "INSERT INTO policies (data, created_at, saved_by, size, restored_from)"
                        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                        &p, &res);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    id = res.nrows ? store__cell_u64(&res, 0, 0) : 0;
    store__result_free(&res);
    if ((rc = store__tx_exec(&tx, trim_sql, &keep, NULL)) < 0) {
        store__rollback(&tx);
        return rc;
    }
    store__tx_event(&tx, NOTIFY_POLICY, NOTIFY_UPDATE, 0);
    if ((rc = store__commit(&tx)) < 0)
        return rc;
    if (updated_at)
        *updated_at = now;
    if (id_out)
        *id_out = id;
    return 0;
}

#define VERSION_COLS "id, created_at, saved_by, restored_from, size"

static int version_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_policy_version *v = out;

    *v = (struct store_policy_version){
        .id = store__cell_u64(r, row, 0), .saved_at = store__cell_i64(r, row, 1),
        .restored_from = store__cell_u64(r, row, 3), .size = store__cell_u64(r, row, 4),
    };
    hs_strlcpy(v->saved_by, store__cell(r, row, 2) ? store__cell(r, row, 2) : "",
               sizeof(v->saved_by));
    if (r->ncols > 5)
        v->text = store__cell_take(r, row, 5);
    return 0;
}

static void version_free_elem(void *elem)
{
    free(((struct store_policy_version *)elem)->text);
}

int store_policy_versions(struct store *st, struct store_policy_version **out, size_t *n)
{
    if (!out || !n)
        return -EINVAL;
    return store__get_all(st, "SELECT " VERSION_COLS " FROM policies ORDER BY id DESC", NULL,
                          version_from_row, sizeof(**out), version_free_elem, (void **)out, n);
}

void store_policy_versions_free(struct store_policy_version *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].text);
    free(v);
}

int store_policy_version_get(struct store *st, uint64_t id, struct store_policy_version *out)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__get_one(st, "SELECT " VERSION_COLS ", data FROM policies WHERE id = $1", &p,
                          version_from_row, out);
}

/* ---- server secret ---- */

/* Reads the secret back; the hex copy in the result is wiped before it is freed. */
static int read_secret(struct store *st, uint8_t out[STORE_KEY_LEN])
{
    struct store_params p;
    struct store_result res;
    char *cell;
    int rc;

    store__params_init(&p);
    store__p_str(&p, KV_SERVER_SECRET);
    if ((rc = store__query(st, "SELECT value FROM kv WHERE key = $1", &p, &res)) < 0)
        return rc;
    rc = res.nrows ? store__cell_key(&res, 0, 0, NULL, out) : -ENOENT;
    if (res.nrows && (cell = res.cells[0]))
        sodium_memzero(cell, strlen(cell));
    store__result_free(&res);
    return rc;
}

/* Every replica offers a fresh secret and the first insert wins; all then read the winner. */
int store_server_secret(struct store *st, uint8_t out[STORE_KEY_LEN])
{
    uint8_t fresh[STORE_KEY_LEN], secret[STORE_KEY_LEN];
    char hex[2 * STORE_KEY_LEN + 1];
    struct store_params p;
    int rc;

    randombytes_buf(fresh, sizeof(fresh));
    hs_hex_encode(fresh, sizeof(fresh), hex);
    sodium_memzero(fresh, sizeof(fresh));
    store__params_init(&p);
    store__p_str(&p, KV_SERVER_SECRET);
    store__p_str(&p, hex);
    rc = store__query(st,
                      "INSERT INTO kv (key, value) VALUES ($1, $2)"
                      " ON CONFLICT (key) DO NOTHING",
                      &p, NULL);
    sodium_memzero(hex, sizeof(hex));
    if (rc < 0)
        return rc;
    if ((rc = read_secret(st, secret)) == 0)
        memcpy(out, secret, STORE_KEY_LEN);
    sodium_memzero(secret, sizeof(secret));
    return rc;
}

/* DELETE ... RETURNING: of replicas starting together, one gets the entry. */
int store_kv_take(struct store *st, const char *key, bool *taken)
{
    struct store_params p;
    struct store_result res;
    int rc;

    store__params_init(&p);
    store__p_str(&p, key);
    if ((rc = store__query(st, "DELETE FROM kv WHERE key = $1 RETURNING key", &p, &res)) < 0)
        return rc;
    *taken = res.nrows > 0;
    store__result_free(&res);
    return 0;
}
