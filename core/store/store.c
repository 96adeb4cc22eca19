/* store: opening, the backend-neutral query/transaction helpers, results and parameters.
 * Entity functions live in store_user.c, store_keys.c, store_node.c and store_policy.c. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "store/store_internal.h"

/* ---- open / close ---- */

/* The database named for messages, without credentials. */
static const char *store_where(const struct hs_config *cfg)
{
    return cfg->db_type == DB_POSTGRES ? (cfg->pg_name ? cfg->pg_name : "") : cfg->sqlite_path;
}

/* Microseconds: 100 us to 5 s, a local SQLite write to a PostgreSQL commit under load. */
static const int64_t latency_bounds[] = { 100,    250,    500,    1000,    2500,    5000,
                                          10000,  25000,  50000,  100000,  250000,  500000,
                                          1000000, 5000000 };

int store_open(const struct hs_config *cfg, struct notify_bus *bus, struct store **out)
{
    struct store *st;
    int rc;

    if (!cfg || !out)
        return -EINVAL;
    st = hs_xcalloc(1, sizeof(*st));
    st->ops = cfg->db_type == DB_POSTGRES ? &store__pg_ops : &store__sqlite_ops;
    st->bus = bus;
    st->debug = cfg->db_debug;
    for (int i = 0; i < STORE_OPS; i++)
        metrics_hist_init(&st->latency[i], latency_bounds, HS_ARRAY_LEN(latency_bounds));
    if (sodium_init() < 0) {
        free(st);
        return -EIO;
    }
    do /* 0 marks this process's own events on the bus */
        randombytes_buf(&st->origin, sizeof(st->origin));
    while (st->origin == 0);
    if ((rc = st->ops->open(cfg, &st->drv)) < 0) {
        free(st);
        return rc;
    }
    if ((rc = store__migrate(st, store_where(cfg))) < 0 ||
        (st->ops->ready && (rc = st->ops->ready(st->drv)) < 0)) {
        store_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

void store_close(struct store *st)
{
    if (!st)
        return;
    st->ops->close(st->drv);
    free(st);
}

const char *store_backend_name(const struct store *st)
{
    return st->ops->name;
}

int store_ping(struct store *st)
{
    return store__query(st, "SELECT 1", NULL, NULL);
}

int store_schema_version(struct store *st, int *applied, int *known)
{
    struct store_result res;
    int rc;

    rc = store__query(st, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL, &res);
    if (rc < 0)
        return rc;
    if (applied)
        *applied = (int)store__cell_i64(&res, 0, 0);
    if (known)
        *known = store__known_version(st->ops->name);
    store__result_free(&res);
    return 0;
}

int store__fk_errno(const char *sql)
{
    while (isspace((unsigned char)*sql))
        sql++;
    return strncasecmp(sql, "DELETE", 6) == 0 ? -EBUSY : -ENOENT;
}

/* ---- results ---- */

void store__result_init(struct store_result *r, size_t ncols)
{
    *r = (struct store_result){ .ncols = ncols };
}

char **store__result_add_row(struct store_result *r)
{
    size_t ncells = (r->nrows + 1) * r->ncols;
    char **row;

    if (ncells > r->cap || !r->cells) {
        r->cap = ncells > 2 * r->cap ? ncells : 2 * r->cap;
        r->cells = hs_xrealloc(r->cells, (r->cap ? r->cap : 1) * sizeof(*r->cells));
    }
    row = r->cells + r->nrows * r->ncols;
    memset(row, 0, r->ncols * sizeof(*row));
    r->nrows++;
    return row;
}

void store__result_free(struct store_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    *r = (struct store_result){ 0 };
}

/* The cell's slot; NULL outside the result. */
static char **cell_at(const struct store_result *r, size_t row, size_t col)
{
    if (row >= r->nrows || col >= r->ncols)
        return NULL;
    return &r->cells[row * r->ncols + col];
}

const char *store__cell(const struct store_result *r, size_t row, size_t col)
{
    char **cell = cell_at(r, row, col);

    return cell ? *cell : NULL;
}

uint64_t store__cell_u64(const struct store_result *r, size_t row, size_t col)
{
    const char *s = store__cell(r, row, col);
    uint64_t v = 0;

    if (s && hs_parse_u64(s, UINT64_MAX, &v) < 0)
        log_warnx("store: column %zu: not an unsigned number", col);
    return v;
}

int64_t store__cell_i64(const struct store_result *r, size_t row, size_t col)
{
    const char *s = store__cell(r, row, col);
    int64_t v = 0;

    if (s && hs_parse_i64(s, &v) < 0)
        log_warnx("store: column %zu: not a number", col);
    return v;
}

bool store__cell_bool(const struct store_result *r, size_t row, size_t col)
{
    const char *s = store__cell(r, row, col);

    /* PostgreSQL sends 't'/'f', SQLite stores 1/0. */
    return s && (s[0] == 't' || s[0] == 'T' || s[0] == '1');
}

char *store__cell_take(struct store_result *r, size_t row, size_t col)
{
    char **cell = cell_at(r, row, col), *s = cell ? *cell : NULL;

    if (cell)
        *cell = NULL;
    return s;
}

int store__cell_strv(const struct store_result *r, size_t row, size_t col, struct hs_strv *out)
{
    const char *s = store__cell(r, row, col);
    struct hs_strv sv = { 0 };
    json_t *arr, *item;
    size_t i;
    char err[128];

    if (!s || !*s) {
        *out = sv;
        return 0;
    }
    arr = hs_json_load(s, strlen(s), HS_JSON_MAX_BYTES, err, sizeof(err));
    if (!json_is_array(arr)) {
        log_warnx("store: column %zu: not a JSON array: %s", col, arr ? "wrong type" : err);
        json_decref(arr);
        *out = sv;
        return 0;
    }
    json_array_foreach(arr, i, item) {
        if (json_is_string(item))
            hs_strv_push(&sv, json_string_value(item));
    }
    json_decref(arr);
    *out = sv;
    return 0;
}

int store__cell_key(const struct store_result *r, size_t row, size_t col, const char *prefix,
                    uint8_t out[STORE_KEY_LEN])
{
    const char *s = store__cell(r, row, col);

    memset(out, 0, STORE_KEY_LEN);
    if (!s || !*s)
        return 0;
    if (prefix && hs_has_prefix(s, prefix))
        s += strlen(prefix);
    if (hs_hex_decode(s, strlen(s), out, STORE_KEY_LEN) < 0) {
        log_warnx("store: column %zu: malformed key", col);
        memset(out, 0, STORE_KEY_LEN);
        return -EINVAL;
    }
    return 0;
}

/* ---- parameters ---- */

void store__params_init(struct store_params *p)
{
    memset(p, 0, sizeof(*p));
}

void store__params_free(struct store_params *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        free(p->owned[i]);
    p->n = 0;
}

/* Overflowing the slots is a programming error in this module, not a runtime condition. */
static int param_slot(struct store_params *p)
{
    if (p->n >= STORE_MAX_PARAMS)
        log_fatalx("store: more than %d parameters", STORE_MAX_PARAMS);
    return p->n++;
}

void store__p_str(struct store_params *p, const char *s)
{
    p->v[param_slot(p)] = s;
}

void store__p_own(struct store_params *p, char *s)
{
    int i = param_slot(p);

    p->owned[i] = s;
    p->v[i] = s;
}

void store__p_u64(struct store_params *p, uint64_t v)
{
    int i = param_slot(p);

    snprintf(p->num[i], sizeof(p->num[i]), "%" PRIu64, v);
    p->v[i] = p->num[i];
}

void store__p_i64(struct store_params *p, int64_t v)
{
    int i = param_slot(p);

    snprintf(p->num[i], sizeof(p->num[i]), "%" PRId64, v);
    p->v[i] = p->num[i];
}

void store__p_id(struct store_params *p, uint64_t id)
{
    if (id)
        store__p_u64(p, id);
    else
        store__p_str(p, NULL);
}

void store__p_time(struct store_params *p, int64_t us)
{
    if (us)
        store__p_i64(p, us);
    else
        store__p_str(p, NULL);
}

void store__p_bool(struct store_params *p, bool b)
{
    store__p_str(p, b ? "1" : "0");
}

void store__p_strv(struct store_params *p, const struct hs_strv *sv)
{
    json_t *arr = json_array();

    for (size_t i = 0; sv && i < sv->n; i++)
        json_array_append_new(arr, json_string(sv->v[i]));
    store__p_own(p, hs_json_dump(arr, JSON_COMPACT));
    json_decref(arr);
}

void store__p_key(struct store_params *p, const char *prefix, const uint8_t key[STORE_KEY_LEN])
{
    size_t plen = prefix ? strlen(prefix) : 0;
    char *s = hs_xmalloc(plen + 2 * STORE_KEY_LEN + 1);

    if (plen)
        memcpy(s, prefix, plen);
    hs_hex_encode(key, STORE_KEY_LEN, s + plen);
    store__p_own(p, s);
}

/* ---- queries ---- */

const struct metrics_hist *store_latency(const struct store *st, enum store_op op)
{
    return &st->latency[op];
}

static enum store_op sql_op(const char *sql)
{
    static const char *const verbs[] = { [STORE_OP_SELECT] = "SELECT", [STORE_OP_INSERT] = "INSERT",
                                         [STORE_OP_UPDATE] = "UPDATE", [STORE_OP_DELETE] = "DELETE" };

    sql += strspn(sql, " \t\r\n");
    for (int i = 0; i < (int)HS_ARRAY_LEN(verbs); i++)
        if (strncasecmp(sql, verbs[i], 6) == 0)
            return i;
    return STORE_OP_OTHER;
}

/* Every query and statement goes through here. With database.debug its text is logged, as
 * headscale's ORM logs each statement whatever log.level says; parameters are left out, so
 * keys and passwords stay out of the log. */
static int run(struct store *st, struct store_conn *c, const char *sql, int nparams,
               const char *const *params, struct store_result *res)
{
    int64_t t0 = hs_monotonic_us();
    int rc;

    if (st->debug)
        log_info("store: sql: %s", sql);
    rc = st->ops->exec(c, sql, nparams, params, res);
    metrics_hist_observe(&st->latency[sql_op(sql)], hs_monotonic_us() - t0);
    return rc;
}

static int conn_exec(struct store *st, struct store_conn *c, const char *sql,
                     struct store_params *p, struct store_result *res)
{
    return run(st, c, sql, p ? p->n : 0, p ? p->v : NULL, res);
}

static int exec_on(struct store *st, bool read_only, const char *sql, int nparams,
                   const char *const *params, struct store_result *res)
{
    struct store_conn *c;
    int rc;

    rc = read_only ? st->ops->acquire_read(st->drv, &c) : st->ops->acquire(st->drv, &c);
    if (rc < 0)
        return rc;
    rc = run(st, c, sql, nparams, params, res);
    st->ops->release(st->drv, c);
    return rc;
}

int store__exec(struct store *st, const char *sql, int nparams, const char *const *params,
                struct store_result *res)
{
    return exec_on(st, false, sql, nparams, params, res);
}

int store__query(struct store *st, const char *sql, struct store_params *p,
                 struct store_result *res)
{
    return store__exec(st, sql, p ? p->n : 0, p ? p->v : NULL, res);
}

/* Reads go to the reader connection where there is one: a lookup or a list then never waits
 * behind a burst of writes. */
static int query_read(struct store *st, const char *sql, struct store_params *p,
                      struct store_result *res)
{
    return exec_on(st, true, sql, p ? p->n : 0, p ? p->v : NULL, res);
}

int store__get_one(struct store *st, const char *sql, struct store_params *p, store_row_fn fn,
                   void *out)
{
    struct store_result res;
    int rc;

    if ((rc = query_read(st, sql, p, &res)) < 0)
        return rc;
    rc = res.nrows ? fn(&res, 0, out) : -ENOENT;
    store__result_free(&res);
    return rc;
}

int store__get_all(struct store *st, const char *sql, struct store_params *p, store_row_fn fn,
                   size_t elem_size, void (*free_fn)(void *elem), void **out, size_t *n)
{
    struct store_result res;
    char *v;
    size_t i;
    int rc;

    if ((rc = query_read(st, sql, p, &res)) < 0)
        return rc;
    v = hs_xcalloc(res.nrows ? res.nrows : 1, elem_size);
    for (i = 0; i < res.nrows; i++) {
        if ((rc = fn(&res, i, v + i * elem_size)) < 0)
            break;
    }
    store__result_free(&res);
    if (rc < 0) {
        while (i-- > 0)
            free_fn(v + i * elem_size);
        free(v);
        return rc;
    }
    *out = v;
    *n = i;
    return 0;
}

/* ---- transactions ---- */

int store__begin(struct store *st, struct store_tx *tx)
{
    int rc;

    *tx = (struct store_tx){ .st = st };
    if ((rc = st->ops->acquire(st->drv, &tx->c)) < 0)
        return rc;
    if ((rc = st->ops->begin(tx->c)) < 0) {
        st->ops->release(st->drv, tx->c);
        tx->c = NULL;
    }
    return rc;
}

int store__tx_exec(struct store_tx *tx, const char *sql, struct store_params *p,
                   struct store_result *res)
{
    return conn_exec(tx->st, tx->c, sql, p, res);
}

void store__tx_event_rev(struct store_tx *tx, enum notify_entity e, enum notify_op op,
                         uint64_t id, uint64_t revision)
{
    if (tx->nev == tx->cap) {
        tx->cap = tx->cap ? 2 * tx->cap : 4;
        tx->ev = hs_xrealloc(tx->ev, tx->cap * sizeof(*tx->ev));
    }
    tx->ev[tx->nev++] = (struct notify_event){ .entity = e, .op = op, .id = id,
                                               .revision = revision };
}

void store__tx_event(struct store_tx *tx, enum notify_entity e, enum notify_op op, uint64_t id)
{
    store__tx_event_rev(tx, e, op, id, 0);
}

static void tx_end(struct store_tx *tx)
{
    if (tx->c)
        tx->st->ops->release(tx->st->drv, tx->c);
    tx->c = NULL;
    free(tx->ev);
    tx->ev = NULL;
    tx->nev = tx->cap = 0;
}

int store__commit(struct store_tx *tx)
{
    int64_t t0 = hs_monotonic_us();
    int rc = store__announce(tx);

    if (rc == 0)
        rc = tx->st->ops->commit(tx->c);
    metrics_hist_observe(&tx->st->latency[STORE_OP_COMMIT], hs_monotonic_us() - t0);

    if (rc < 0) {
        tx->st->ops->rollback(tx->c);
        tx_end(tx);
        return rc;
    }
    /* Publish with the connection back in the pool: subscribers may call into the store. */
    tx->st->ops->release(tx->st->drv, tx->c);
    tx->c = NULL;
    for (size_t i = 0; i < tx->nev && !tx->quiet; i++)
        notify_publish(tx->st->bus, &tx->ev[i]);
    tx_end(tx);
    return 0;
}

void store__rollback(struct store_tx *tx)
{
    if (tx->c)
        tx->st->ops->rollback(tx->c);
    tx_end(tx);
}

int store__write_row(struct store *st, const char *sql, struct store_params *p,
                     enum notify_entity e, enum notify_op op, store_row_fn fn, void *out)
{
    struct store_tx tx;
    struct store_result res = { 0 };
    int rc;

    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    if ((rc = store__tx_exec(&tx, sql, p, &res)) < 0)
        goto fail;
    if (res.nrows == 0) {
        rc = -ENOENT;
        goto fail;
    }
    store__tx_event(&tx, e, op, store__cell_u64(&res, 0, 0));
    if ((rc = store__commit(&tx)) < 0)
        goto out;
    if (out && fn)
        rc = fn(&res, 0, out);
    goto out;
fail:
    store__rollback(&tx);
out:
    store__result_free(&res);
    return rc;
}
