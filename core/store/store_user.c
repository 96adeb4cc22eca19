/* store: users. */
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define USER_COLS                                                                          \
    "id, name, display_name, email, provider_identifier, provider, profile_pic_url, "      \
    "created_at, updated_at, provider_groups"

void store_user_free(struct store_user *u)
{
    if (!u)
        return;
    free(u->name);
    free(u->display_name);
    free(u->email);
    free(u->provider_id);
    free(u->provider);
    free(u->profile_pic_url);
    hs_strv_free(&u->groups);
    memset(u, 0, sizeof(*u));
}

static void user_free_elem(void *elem)
{
    store_user_free(elem);
}

void store_user_list_free(struct store_user *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        store_user_free(&v[i]);
    free(v);
}

static int user_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_user *u = out;

    *u = (struct store_user){
        .id = store__cell_u64(r, row, 0),
        .name = store__cell_take(r, row, 1),
        .display_name = store__cell_take(r, row, 2),
        .email = store__cell_take(r, row, 3),
        .provider_id = store__cell_take(r, row, 4),
        .provider = store__cell_take(r, row, 5),
        .profile_pic_url = store__cell_take(r, row, 6),
        .created_at = store__cell_i64(r, row, 7),
        .updated_at = store__cell_i64(r, row, 8),
    };
    return store__cell_strv(r, row, 9, &u->groups);
}

int store_user_create(struct store *st, const struct store_user *in, struct store_user *out)
{
    struct store_params p;
    int64_t now = hs_now_us();
    int rc;

    if (!in || !in->name || !*in->name)
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, in->name);
    store__p_str(&p, in->display_name);
    store__p_str(&p, in->email);
    store__p_str(&p, in->provider_id);
    store__p_str(&p, in->provider);
    store__p_str(&p, in->profile_pic_url);
    store__p_i64(&p, now);
    store__p_strv(&p, &in->groups);
    rc = store__write_row(st,
                          "INSERT INTO users (name, display_name, email, provider_identifier,"
                          " provider, profile_pic_url, created_at, updated_at, provider_groups)"
                          " VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING " USER_COLS,
                          &p, NOTIFY_USER, NOTIFY_CREATE, user_from_row, out);
    store__params_free(&p);
    return rc;
}

int store_user_get(struct store *st, uint64_t id, struct store_user *out)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__get_one(st, "SELECT " USER_COLS " FROM users WHERE id = $1", &p,
                          user_from_row, out);
}

int store_user_get_by_provider_id(struct store *st, const char *provider_id,
                                  struct store_user *out)
{
    struct store_params p;

    if (!provider_id || !*provider_id)
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, provider_id);
    return store__get_one(st, "SELECT " USER_COLS " FROM users WHERE provider_identifier = $1",
                          &p, user_from_row, out);
}

/* Names are unique only among local users; a local user wins over an OIDC one. */
int store_user_get_by_name(struct store *st, const char *name, struct store_user *out)
{
    struct store_params p;

    if (!name)
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, name);
    return store__get_one(st,
                          "SELECT " USER_COLS " FROM users WHERE name = $1"
                          " ORDER BY CASE WHEN provider_identifier IS NULL THEN 0 ELSE 1 END,"
                          " id LIMIT 1",
                          &p, user_from_row, out);
}

int store_user_list(struct store *st, const struct store_user_filter *f, struct store_user **out,
                    size_t *n)
{
    struct store_params p;

    if (!out || !n)
        return -EINVAL;
    store__params_init(&p);
    store__p_u64(&p, f ? f->id : 0);
    store__p_str(&p, f ? f->name : NULL);
    store__p_str(&p, f ? f->email : NULL);
    return store__get_all(st,
                          "SELECT " USER_COLS " FROM users"
                          " WHERE (CAST($1 AS BIGINT) = 0 OR id = CAST($1 AS BIGINT))"
                          " AND (CAST($2 AS TEXT) IS NULL OR name = CAST($2 AS TEXT))"
                          " AND (CAST($3 AS TEXT) IS NULL OR email = CAST($3 AS TEXT))"
                          " ORDER BY id",
                          &p, user_from_row, sizeof(**out), user_free_elem, (void **)out, n);
}

int store_user_rename(struct store *st, uint64_t id, const char *new_name)
{
    struct store_params p;

    if (!new_name || !*new_name)
        return -EINVAL;
    store__params_init(&p);
    store__p_u64(&p, id);
    store__p_str(&p, new_name);
    store__p_i64(&p, hs_now_us());
    return store__write_row(st,
                            "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1"
                            " RETURNING id",
                            &p, NOTIFY_USER, NOTIFY_UPDATE, NULL, NULL);
}

int store_user_update_profile(struct store *st, uint64_t id, const struct store_user *in,
                              struct store_user *out)
{
    struct store_params p;
    int rc;

    store__params_init(&p);
    store__p_u64(&p, id);
    store__p_str(&p, in->display_name);
    store__p_str(&p, in->email);
    store__p_str(&p, in->profile_pic_url);
    store__p_strv(&p, &in->groups);
    store__p_i64(&p, hs_now_us());
    rc = store__write_row(st,
                          "UPDATE users SET display_name = $2, email = $3, profile_pic_url = $4,"
                          " provider_groups = $5, updated_at = $6 WHERE id = $1"
                          " RETURNING " USER_COLS,
                          &p, NOTIFY_USER, NOTIFY_UPDATE, user_from_row, out);
    store__params_free(&p);
    return rc;
}

static int user_has_nodes(struct store_tx *tx, struct store_params *p, bool *yes)
{
    struct store_result res;
    int rc;

    rc = store__tx_exec(tx, "SELECT 1 FROM nodes WHERE user_id = $1 LIMIT 1", p, &res);
    if (rc == 0) {
        *yes = res.nrows > 0;
        store__result_free(&res);
    }
    return rc;
}

/* Deletes with RETURNING id and queues one event per deleted row. */
static int delete_rows(struct store_tx *tx, const char *sql, struct store_params *p,
                       enum notify_entity e, size_t *n)
{
    struct store_result res;
    int rc;

    if ((rc = store__tx_exec(tx, sql, p, &res)) < 0)
        return rc;
    for (size_t i = 0; i < res.nrows; i++)
        store__tx_event(tx, e, NOTIFY_DELETE, store__cell_u64(&res, i, 0));
    *n = res.nrows;
    store__result_free(&res);
    return 0;
}

/* The keys go explicitly rather than by ON DELETE CASCADE so each gets its delete event; the
 * node check is explicit for a clear -EBUSY (the RESTRICT foreign key would also refuse). */
int store_user_delete(struct store *st, uint64_t id)
{
    struct store_params p;
    struct store_tx tx;
    bool busy = false;
    size_t n = 0;
    int rc;

    store__params_init(&p);
    store__p_u64(&p, id);
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    rc = user_has_nodes(&tx, &p, &busy);
    if (rc == 0 && busy)
        rc = -EBUSY;
    if (rc == 0)
        rc = delete_rows(&tx, "DELETE FROM pre_auth_keys WHERE user_id = $1 RETURNING id", &p,
                         NOTIFY_PREAUTHKEY, &n);
    if (rc == 0)
        rc = delete_rows(&tx, "DELETE FROM users WHERE id = $1 RETURNING id", &p, NOTIFY_USER,
                         &n);
    if (rc == 0 && n == 0)
        rc = -ENOENT;
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    return store__commit(&tx);
}
