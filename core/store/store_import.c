/* store: recognising the database at open, and bringing a headscale database (0.22.3, or
 * 0.29.x) over to our schema in place, as headscale's own upgrades do.
 *
 * The import runs under the migration lock. The driver first keeps a usable copy (SQLite: a
 * file beside the database, attached; PostgreSQL: nothing yet), then one transaction sets
 * headscale's tables aside (SQLite drops them, the copy has them; PostgreSQL moves them into
 * the schema headscale_backup, which stays as the copy), creates our schema, and copies the
 * rows from headscale_backup.<table>: the same SQL text on both backends. A failure rolls back
 * the whole of it. Secrets keep headscale's bcrypt hashes (core/auth checks them); bare
 * pre-auth keys of 0.22.3, stored in clear there, are bcrypt-hashed here. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define IMPORT_LEGACY_PAK_LEN 48 /* 0.22.3's pre-auth keys: 24 random bytes in hex */
#define IMPORT_PREFIX_LEN 12     /* the prefix such a key is looked up by */
#define IMPORT_TIME_MAX 48
#define IMPORT_NAME_MAX 63       /* a DNS label, as nodes.given_name allows */

/* ---- recognising the schema ---- */

struct column_ref {
    const char *table, *column;
};

/* What one headscale version looks like: the tables it may have (others make the database
 * unknown) and the columns the import reads (all must be there). */
struct hs_schema {
    const char *name;
    const char *const *tables;
    const struct column_ref *needs;
};

static const char *const v022_tables[] = { "users", "machines", "pre_auth_keys",
                                           "pre_auth_key_acl_tags", "api_keys", "routes",
                                           "kvs", NULL };
static const struct column_ref v022_needs[] = {
    { "users", "name" },           { "users", "deleted_at" },
    { "machines", "ip_addresses" }, { "machines", "forced_tags" },
    { "machines", "machine_key" }, { "machines", "deleted_at" },
    { "pre_auth_keys", "key" },    { "pre_auth_key_acl_tags", "tag" },
    { "api_keys", "hash" },        { "routes", "machine_id" },
    { "routes", "enabled" },       { "routes", "deleted_at" },
    { NULL, NULL },
};
static const char *const v029_tables[] = { "users", "nodes", "pre_auth_keys", "api_keys",
                                           "policies", "migrations", "database_versions",
                                           NULL };
static const struct column_ref v029_needs[] = {
    { "migrations", "id" },          { "users", "provider_identifier" },
    { "users", "deleted_at" },       { "nodes", "ipv4" },
    { "nodes", "approved_routes" },  { "nodes", "tags" },
    { "nodes", "deleted_at" },       { "pre_auth_keys", "prefix" },
    { "pre_auth_keys", "hash" },     { "pre_auth_keys", "tags" },
    { "api_keys", "hash" },          { "policies", "data" },
    { NULL, NULL },
};

static const struct hs_schema hs_schemas[] = {
    [STORE_SCHEMA_HEADSCALE_022] = { "headscale 0.22.3", v022_tables, v022_needs },
    [STORE_SCHEMA_HEADSCALE_029] = { "headscale 0.29", v029_tables, v029_needs },
};

static bool has_column(const struct store_result *cols, const char *table, const char *column)
{
    for (size_t i = 0; i < cols->nrows; i++) {
        if (hs_streq(store__cell(cols, i, 0), table) &&
            (!column || hs_streq(store__cell(cols, i, 1), column)))
            return true;
    }
    return false;
}

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (hs_streq(*list, s))
            return true;
    return false;
}

static bool matches(const struct store_result *cols, const struct hs_schema *hs)
{
    for (size_t i = 0; i < cols->nrows; i++)
        if (!in_list(hs->tables, store__cell(cols, i, 0)))
            return false;
    for (const struct column_ref *c = hs->needs; c->table; c++)
        if (!has_column(cols, c->table, c->column))
            return false;
    return true;
}

/* The database's tables, named once each, for the refusal message; cut with ", ..." when
 * they do not fit. */
static void list_tables(const struct store_result *cols, char *out, size_t size)
{
    size_t len = 0;
    int n;

    out[0] = '\0';
    for (size_t i = 0; i < cols->nrows; i++) {
        const char *t = store__cell(cols, i, 0);
        if (i > 0 && hs_streq(t, store__cell(cols, i - 1, 0)))
            continue;
        n = snprintf(out + len, size - len, "%s%s", len ? ", " : "", t ? t : "?");
        if (n < 0 || (size_t)n >= size - len) {
            hs_strlcpy(out + size - sizeof(", ..."), ", ...", sizeof(", ..."));
            return;
        }
        len += (size_t)n;
    }
}

static enum store_schema classify(const struct store_result *cols)
{
    if (cols->nrows == 0)
        return STORE_SCHEMA_EMPTY;
    if (has_column(cols, "schema_migrations", NULL))
        return STORE_SCHEMA_OURS;
    if (matches(cols, &hs_schemas[STORE_SCHEMA_HEADSCALE_022]))
        return STORE_SCHEMA_HEADSCALE_022;
    if (matches(cols, &hs_schemas[STORE_SCHEMA_HEADSCALE_029]))
        return STORE_SCHEMA_HEADSCALE_029;
    return STORE_SCHEMA_UNKNOWN;
}

int store__schema_detect(const struct store_ops *ops, struct store_conn *c, const char *where,
                         enum store_schema *out)
{
    struct store_result cols;
    char tables[512];
    int rc;

    if ((rc = ops->exec(c, ops->columns_sql, 0, NULL, &cols)) < 0)
        return rc;
    *out = classify(&cols);
    if (*out == STORE_SCHEMA_UNKNOWN) {
        list_tables(&cols, tables, sizeof(tables));
        log_errorx("store: %s: refusing the database %s: its tables (%s) are neither this "
                   "server's nor those of a headscale version it can import (0.22.3, 0.29); "
                   "it was left untouched%s",
                   ops->name, where, tables,
                   has_column(&cols, "migrations", NULL) || has_column(&cols, "machines", NULL)
                       ? " (a headscale database of another version: upgrade it with headscale "
                         "0.29 first)"
                       : "");
    }
    store__result_free(&cols);
    return 0;
}

/* ---- reading headscale's values ---- */

/* Times as headscale's database gives them back: "2006-01-02 15:04:05.999999999+00:00" from
 * SQLite, "...+00" from PostgreSQL. Go's zero time (year 1) and anything unreadable are unset. */
static int64_t cell_time(const struct store_result *r, size_t row, size_t col)
{
    const char *s = store__cell(r, row, col);
    char buf[IMPORT_TIME_MAX];
    size_t n = s ? strlen(s) : 0;
    int64_t us;

    if (n < 19 || n + 4 > sizeof(buf))
        return 0;
    memcpy(buf, s, n + 1);
    if (buf[10] == ' ')
        buf[10] = 'T';
    if ((buf[n - 3] == '+' || buf[n - 3] == '-') && isdigit((unsigned char)buf[n - 1]))
        memcpy(buf + n, ":00", 4);
    if (hs_parse_rfc3339(buf, &us) < 0 || us <= 0)
        return 0;
    return us;
}

/* A time that must be set (created_at, updated_at): now when headscale had none. */
static void p_time_or_now(struct store_params *p, const struct store_result *r, size_t row,
                          size_t col)
{
    int64_t us = cell_time(r, row, col);

    store__p_i64(p, us ? us : hs_now_us());
}

/* Text that is NULL when empty. */
static void p_text(struct store_params *p, const struct store_result *r, size_t row, size_t col)
{
    const char *s = store__cell(r, row, col);

    store__p_str(p, s && *s ? s : NULL);
}

/* A hash column: bcrypt text, which PostgreSQL sends as bytea ("\x2432..."). */
static int cell_bcrypt(const struct store_result *r, size_t row, size_t col,
                       char out[HS_BCRYPT_LEN + 1])
{
    const char *s = store__cell(r, row, col);

    if (s && s[0] == '\\' && s[1] == 'x') {
        if (strlen(s + 2) != 2 * HS_BCRYPT_LEN ||
            hs_hex_decode(s + 2, 2 * HS_BCRYPT_LEN, (uint8_t *)out, HS_BCRYPT_LEN) < 0)
            return -EINVAL;
        out[HS_BCRYPT_LEN] = '\0';
    } else if (s) {
        hs_strlcpy(out, s, HS_BCRYPT_LEN + 1);
    } else {
        return -EINVAL;
    }
    return hs_bcrypt_is_hash(out) ? 0 : -EINVAL;
}

/* A key column: "mkey:<hex>" (0.29) or bare hex (0.22.3), stored with our prefix. */
static int p_key(struct store_params *p, const struct store_result *r, size_t row, size_t col,
                 const char *prefix)
{
    uint8_t key[STORE_KEY_LEN];

    if (store__cell_key(r, row, col, prefix, key) < 0)
        return -EINVAL;
    store__p_key(p, prefix, key);
    return 0;
}

/* A JSON array of strings; NULL, "" and "null" are the empty list. */
static void p_list(struct store_params *p, const struct store_result *r, size_t row, size_t col)
{
    struct hs_strv sv = { 0 };

    store__cell_strv(r, row, col, &sv);
    store__p_strv(p, &sv);
    hs_strv_free(&sv);
}

static void p_json(struct store_params *p, const struct store_result *r, size_t row, size_t col,
                   const char *empty)
{
    const char *s = store__cell(r, row, col);

    store__p_str(p, s && *s && strcmp(s, "null") != 0 ? s : empty);
}

/* ---- ids imported so far (rows come sorted by id) ---- */

static bool imported(const struct hs_ids *s, uint64_t id)
{
    return id && hs_ids_has(s->v, s->n, id);
}

/* ---- the import ---- */

struct import {
    struct store *st;
    struct store_conn *c;
    enum store_schema kind;
    struct hs_ids users, paks, nodes;
    struct store_result routes;  /* 0.22.3: id, machine_id, prefix, enabled, created, updated */
    struct store_result pak_tags; /* 0.22.3: pre_auth_key_id, tag */
    size_t skipped;
};

static int run(struct import *im, const char *sql, struct store_params *p,
               struct store_result *res)
{
    return im->st->ops->exec(im->c, sql, p ? p->n : 0, p ? p->v : NULL, res);
}

/* Runs an INSERT and frees its parameters. */
static int insert(struct import *im, const char *sql, struct store_params *p)
{
    int rc = run(im, sql, p, NULL);

    store__params_free(p);
    return rc;
}

static const char *const users_sql[] = {
    [STORE_SCHEMA_HEADSCALE_022] =
        "SELECT id, name, NULL, NULL, NULL, NULL, NULL, created_at, updated_at"
        " FROM headscale_backup.users WHERE deleted_at IS NULL ORDER BY id",
    [STORE_SCHEMA_HEADSCALE_029] =
        "SELECT id, name, display_name, email, provider_identifier, provider,"
        " profile_pic_url, created_at, updated_at"
        " FROM headscale_backup.users WHERE deleted_at IS NULL ORDER BY id",
};

static int import_users(struct import *im)
{
    struct store_result r;
    struct store_params p;
    int rc;

    if ((rc = run(im, users_sql[im->kind], NULL, &r)) < 0)
        return rc;
    for (size_t i = 0; i < r.nrows && rc == 0; i++) {
        const char *name = store__cell(&r, i, 1);
        store__params_init(&p);
        store__p_str(&p, store__cell(&r, i, 0));
        store__p_str(&p, name ? name : "");
        for (size_t col = 2; col <= 6; col++)
            p_text(&p, &r, i, col);
        p_time_or_now(&p, &r, i, 7);
        p_time_or_now(&p, &r, i, 8);
        rc = insert(im,
                    "INSERT INTO users (id, name, display_name, email, provider_identifier,"
                    " provider, profile_pic_url, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &p);
        hs_ids_push(&im->users, store__cell_u64(&r, i, 0));
    }
    log_info("store: import: %zu users", r.nrows);
    store__result_free(&r);
    return rc;
}

/* A key kept as headscale 0.29 keeps it: a prefix (column col) and a bcrypt hash (col + 1). */
static int cell_prefix_hash(const struct store_result *r, size_t row, size_t col,
                            char prefix[STORE_PREFIX_MAX], char hash[HS_BCRYPT_LEN + 1])
{
    const char *pfx = store__cell(r, row, col);

    if (!pfx || !*pfx || strlen(pfx) >= STORE_PREFIX_MAX || cell_bcrypt(r, row, col + 1, hash) < 0)
        return -EINVAL;
    hs_strlcpy(prefix, pfx, STORE_PREFIX_MAX);
    return 0;
}

/* The prefix and hash a pre-auth key is kept under: headscale 0.29's own (prefix + bcrypt), or
 * for a bare 0.22.3 key, its first 12 chars and a bcrypt hash of the whole key made now. */
static int pak_secret(const struct store_result *r, size_t row, char prefix[STORE_PREFIX_MAX],
                      char hash[HS_BCRYPT_LEN + 1])
{
    const char *plain = store__cell(r, row, 1);
    size_t n = plain ? strlen(plain) : 0;

    if (cell_prefix_hash(r, row, 2, prefix, hash) == 0)
        return 0;
    if (n != IMPORT_LEGACY_PAK_LEN || hs_bcrypt_hash(plain, n, hash) < 0)
        return -EINVAL;
    memcpy(prefix, plain, IMPORT_PREFIX_LEN);
    prefix[IMPORT_PREFIX_LEN] = '\0';
    return 0;
}

/* 0.29 keeps a key's tags in the row; 0.22.3 in pre_auth_key_acl_tags. */
static void pak_tags(const struct import *im, const struct store_result *r, size_t row,
                     struct store_params *p)
{
    struct hs_strv sv = { 0 };
    uint64_t id = store__cell_u64(r, row, 0);

    if (im->kind == STORE_SCHEMA_HEADSCALE_029) {
        p_list(p, r, row, 8);
        return;
    }
    for (size_t i = 0; i < im->pak_tags.nrows; i++)
        if (store__cell_u64(&im->pak_tags, i, 0) == id)
            hs_strv_push(&sv, store__cell(&im->pak_tags, i, 1));
    store__p_strv(p, &sv);
    hs_strv_free(&sv);
}

static const char *const paks_sql[] = {
    [STORE_SCHEMA_HEADSCALE_022] =
        "SELECT k.id, k.key, NULL, NULL, u.id, k.reusable, k.ephemeral, k.used, NULL,"
        " k.created_at, k.expiration FROM headscale_backup.pre_auth_keys k"
        " LEFT JOIN headscale_backup.users u ON u.id = k.user_id AND u.deleted_at IS NULL"
        " ORDER BY k.id",
    [STORE_SCHEMA_HEADSCALE_029] =
        "SELECT k.id, k.key, k.prefix, k.hash, u.id, k.reusable, k.ephemeral, k.used, k.tags,"
        " k.created_at, k.expiration FROM headscale_backup.pre_auth_keys k"
        " LEFT JOIN headscale_backup.users u ON u.id = k.user_id AND u.deleted_at IS NULL"
        " ORDER BY k.id",
};

static int import_paks(struct import *im)
{
    struct store_result r;
    struct store_params p;
    char prefix[STORE_PREFIX_MAX], hash[HS_BCRYPT_LEN + 1];
    int rc;

    if (im->kind == STORE_SCHEMA_HEADSCALE_022 &&
        (rc = run(im, "SELECT pre_auth_key_id, tag FROM headscale_backup.pre_auth_key_acl_tags"
                      " ORDER BY id", NULL, &im->pak_tags)) < 0)
        return rc;
    if ((rc = run(im, paks_sql[im->kind], NULL, &r)) < 0)
        return rc;
    for (size_t i = 0; i < r.nrows && rc == 0; i++) {
        if (pak_secret(&r, i, prefix, hash) < 0) {
            log_warnx("store: import: pre-auth key %s has no usable secret: left out",
                      store__cell(&r, i, 0));
            im->skipped++;
            continue;
        }
        store__params_init(&p);
        store__p_str(&p, store__cell(&r, i, 0));
        store__p_str(&p, prefix);
        store__p_str(&p, hash);
        store__p_str(&p, store__cell(&r, i, 4));
        for (size_t col = 5; col <= 7; col++)
            store__p_bool(&p, store__cell_bool(&r, i, col));
        pak_tags(im, &r, i, &p);
        store__p_time(&p, cell_time(&r, i, 10));
        p_time_or_now(&p, &r, i, 9);
        rc = insert(im,
                    "INSERT INTO pre_auth_keys (id, prefix, hash, user_id, reusable, ephemeral,"
                    " used, tags, expiration, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &p);
        hs_ids_push(&im->paks, store__cell_u64(&r, i, 0));
    }
    sodium_memzero(hash, sizeof(hash));
    log_info("store: import: %zu pre-auth keys", im->paks.n);
    store__result_free(&r);
    return rc;
}

static int import_apikeys(struct import *im)
{
    struct store_result r;
    struct store_params p;
    char prefix[STORE_PREFIX_MAX], hash[HS_BCRYPT_LEN + 1];
    size_t n = 0;
    int rc;

    rc = run(im, "SELECT id, prefix, hash, created_at, expiration, last_seen"
                 " FROM headscale_backup.api_keys ORDER BY id", NULL, &r);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r.nrows && rc == 0; i++) {
        if (cell_prefix_hash(&r, i, 1, prefix, hash) < 0) {
            log_warnx("store: import: API key %s has no usable hash: left out",
                      store__cell(&r, i, 0));
            im->skipped++;
            continue;
        }
        store__params_init(&p);
        store__p_str(&p, store__cell(&r, i, 0));
        store__p_str(&p, prefix);
        store__p_str(&p, hash);
        store__p_time(&p, cell_time(&r, i, 4));
        store__p_time(&p, cell_time(&r, i, 5));
        p_time_or_now(&p, &r, i, 3);
        rc = insert(im,
                    "INSERT INTO api_keys (id, prefix, hash, expiration, last_seen, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    &p);
        n++;
    }
    log_info("store: import: %zu API keys", n);
    store__result_free(&r);
    return rc;
}

/* Columns: 0 id, 1 machine_key, 2 node_key, 3 disco_key, 4 endpoints, 5 host_info, 6 ipv4 (0.22.3:
 * every address, comma-separated), 7 ipv6, 8 hostname, 9 given_name, 10 user_id (NULL unless
 * the user was imported), 11 register_method, 12 ephemeral (its key's), 13 tags, 14 auth_key_id,
 * 15 last_seen, 16 expiry, 17 approved_routes (0.22.3: NULL, see routes), 18 created_at,
 * 19 updated_at. */
static const char *const nodes_sql[] = {
    [STORE_SCHEMA_HEADSCALE_022] =
        "SELECT n.id, n.machine_key, n.node_key, n.disco_key, n.endpoints, n.host_info,"
        " n.ip_addresses, NULL, n.hostname, n.given_name, n.user_id, n.register_method,"
        " k.ephemeral, n.forced_tags, n.auth_key_id, n.last_seen, n.expiry, NULL,"
        " n.created_at, n.updated_at FROM headscale_backup.machines n"
        " LEFT JOIN headscale_backup.pre_auth_keys k ON k.id = n.auth_key_id"
        " WHERE n.deleted_at IS NULL ORDER BY n.id",
    [STORE_SCHEMA_HEADSCALE_029] =
        "SELECT n.id, n.machine_key, n.node_key, n.disco_key, n.endpoints, n.host_info,"
        " n.ipv4, n.ipv6, n.hostname, n.given_name, n.user_id, n.register_method,"
        " k.ephemeral, n.tags, n.auth_key_id, n.last_seen, n.expiry, n.approved_routes,"
        " n.created_at, n.updated_at FROM headscale_backup.nodes n"
        " LEFT JOIN headscale_backup.pre_auth_keys k ON k.id = n.auth_key_id"
        " WHERE n.deleted_at IS NULL ORDER BY n.id",
};

/* 0.22.3 keeps both addresses in one column ("fd7a:...::1,100.64.0.1"). */
static void p_addresses(struct store_params *p, const struct import *im,
                        const struct store_result *r, size_t row)
{
    struct hs_strv sv = { 0 };
    const char *v4 = NULL, *v6 = NULL;

    if (im->kind == STORE_SCHEMA_HEADSCALE_029) {
        p_text(p, r, row, 6);
        p_text(p, r, row, 7);
        return;
    }
    hs_strv_split(&sv, store__cell(r, row, 6) ? store__cell(r, row, 6) : "", ",");
    for (size_t i = 0; i < sv.n; i++) {
        if (strchr(sv.v[i], ':'))
            v6 = v6 ? v6 : sv.v[i];
        else if (*sv.v[i])
            v4 = v4 ? v4 : sv.v[i];
    }
    store__p_own(p, hs_strdup(v4));
    store__p_own(p, hs_strdup(v6));
    hs_strv_free(&sv);
}

/* 0.29 keeps approvals in the node; 0.22.3 as enabled rows of its routes table. */
static void p_approved(struct store_params *p, const struct import *im,
                       const struct store_result *r, size_t row)
{
    struct hs_strv sv = { 0 };
    uint64_t id = store__cell_u64(r, row, 0);

    if (im->kind == STORE_SCHEMA_HEADSCALE_029) {
        p_list(p, r, row, 17);
        return;
    }
    for (size_t i = 0; i < im->routes.nrows; i++)
        if (store__cell_u64(&im->routes, i, 1) == id && store__cell_bool(&im->routes, i, 3) &&
            !hs_strv_contains(&sv, store__cell(&im->routes, i, 2)))
            hs_strv_push(&sv, store__cell(&im->routes, i, 2));
    store__p_strv(p, &sv);
    hs_strv_free(&sv);
}

/* Nodes are owned by their tags when they have any (headscale 0.29 clears their user too). */
static bool node_tagged(const struct store_result *r, size_t row)
{
    struct hs_strv sv = { 0 };
    bool tagged;

    store__cell_strv(r, row, 13, &sv);
    tagged = sv.n > 0;
    hs_strv_free(&sv);
    return tagged;
}

/* given_name must be unique here; 0.22.3 made it unique per user only. A clash keeps the
 * first node's name and gives the others "<name>-<id>". */
static char *given_name(const struct store_result *r, size_t row)
{
    const char *name = store__cell(r, row, 9), *id = store__cell(r, row, 0);

    for (size_t i = 0; i < row; i++) {
        if (hs_streq(store__cell(r, i, 9), name)) {
            char *s = hs_aprintf("%.*s-%s", (int)(IMPORT_NAME_MAX - strlen(id) - 1), name, id);
            log_warnx("store: import: node %s: given name %s is taken, now %s", id, name, s);
            return s;
        }
    }
    return hs_strdup(name);
}

static int node_params(struct import *im, const struct store_result *r, size_t row,
                       struct store_params *p)
{
    uint64_t user = store__cell_u64(r, row, 10), key = store__cell_u64(r, row, 14);
    bool tagged = node_tagged(r, row);
    const char *name = store__cell(r, row, 9);

    if (!name || !*name || (!tagged && !imported(&im->users, user)))
        return -EINVAL;
    store__p_str(p, store__cell(r, row, 0));
    if (p_key(p, r, row, 1, NODE_MKEY_PREFIX) < 0 || p_key(p, r, row, 2, NODE_NODEKEY_PREFIX) < 0 ||
        p_key(p, r, row, 3, NODE_DISCO_PREFIX) < 0)
        return -EINVAL;
    p_json(p, r, row, 4, "[]");
    p_json(p, r, row, 5, "{}");
    p_addresses(p, im, r, row);
    store__p_str(p, store__cell(r, row, 8) ? store__cell(r, row, 8) : "");
    store__p_own(p, given_name(r, row));
    store__p_id(p, tagged ? 0 : user);
    p_text(p, r, row, 11);
    store__p_bool(p, store__cell_bool(r, row, 12));
    p_list(p, r, row, 13);
    store__p_id(p, imported(&im->paks, key) ? key : 0);
    store__p_time(p, cell_time(r, row, 15));
    store__p_time(p, cell_time(r, row, 16));
    p_approved(p, im, r, row);
    p_time_or_now(p, r, row, 18);
    p_time_or_now(p, r, row, 19);
    return 0;
}

static int import_nodes(struct import *im)
{
    struct store_result r;
    struct store_params p;
    int rc;

    if (im->kind == STORE_SCHEMA_HEADSCALE_022 &&
        (rc = run(im, "SELECT id, machine_id, prefix, enabled, created_at, updated_at"
                      " FROM headscale_backup.routes WHERE deleted_at IS NULL ORDER BY id",
                  NULL, &im->routes)) < 0)
        return rc;
    if ((rc = run(im, nodes_sql[im->kind], NULL, &r)) < 0)
        return rc;
    for (size_t i = 0; i < r.nrows && rc == 0; i++) {
        store__params_init(&p);
        if (node_params(im, &r, i, &p) < 0) {
            log_warnx("store: import: node %s (%s) has no owner or a malformed key: left out",
                      store__cell(&r, i, 0), store__cell(&r, i, 8));
            store__params_free(&p);
            im->skipped++;
            continue;
        }
        rc = insert(im,
                    "INSERT INTO nodes (id, machine_key, node_key, disco_key, endpoints,"
                    " host_info, ipv4, ipv6, hostname, given_name, user_id, register_method,"
                    " ephemeral, tags, auth_key_id, last_seen, expiry, approved_routes,"
                    " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                    " $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
                    &p);
        hs_ids_push(&im->nodes, store__cell_u64(&r, i, 0));
    }
    log_info("store: import: %zu nodes", im->nodes.n);
    store__result_free(&r);
    return rc;
}

/* 0.22.3 had no unique key on (machine, prefix): two map requests announcing a route at
 * once could both add it. The first row (the lowest id) is the one kept. */
static bool route_seen_before(const struct import *im, size_t row)
{
    uint64_t node = store__cell_u64(&im->routes, row, 1);
    const char *prefix = store__cell(&im->routes, row, 2);

    for (size_t i = 0; i < row; i++)
        if (store__cell_u64(&im->routes, i, 1) == node &&
            strcmp(store__cell(&im->routes, i, 2), prefix) == 0)
            return true;
    return false;
}

/* 0.22.3's route ids stay what operators' scripts know them as. */
static int import_route_ids(struct import *im)
{
    struct store_params p;
    int rc = 0;

    for (size_t i = 0; i < im->routes.nrows && rc == 0; i++) {
        if (!imported(&im->nodes, store__cell_u64(&im->routes, i, 1)) ||
            route_seen_before(im, i))
            continue;
        store__params_init(&p);
        for (size_t col = 0; col <= 2; col++)
            store__p_str(&p, store__cell(&im->routes, i, col));
        p_time_or_now(&p, &im->routes, i, 4);
        p_time_or_now(&p, &im->routes, i, 5);
        rc = insert(im,
                    "INSERT INTO routes (id, node_id, prefix, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    &p);
    }
    return rc;
}

static int import_policies(struct import *im)
{
    struct store_result r;
    struct store_params p;
    int rc;

    if (im->kind != STORE_SCHEMA_HEADSCALE_029)
        return 0; /* 0.22.3 read its policy from a file only */
    rc = run(im, "SELECT id, data, created_at FROM headscale_backup.policies"
                 " WHERE deleted_at IS NULL AND data IS NOT NULL ORDER BY id", NULL, &r);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r.nrows && rc == 0; i++) {
        store__params_init(&p);
        store__p_str(&p, store__cell(&r, i, 0));
        store__p_str(&p, store__cell(&r, i, 1));
        p_time_or_now(&p, &r, i, 2);
        store__p_u64(&p, strlen(store__cell(&r, i, 1)));
        rc = insert(im, "INSERT INTO policies (id, data, created_at, size, saved_by)"
                        " VALUES ($1, $2, $3, $4, 'import')", &p);
    }
    store__result_free(&r);
    return rc;
}

/* 0.22.3 gave a node the tags it requested when the policy let it, at run time, without
 * storing them; the store cannot read the policy, so the server does it once it has it. */
static int leave_request_tags(struct import *im)
{
    struct store_params p;

    if (im->kind != STORE_SCHEMA_HEADSCALE_022)
        return 0;
    store__params_init(&p);
    store__p_str(&p, STORE_KV_IMPORTED_REQUEST_TAGS);
    store__p_str(&p, "1");
    return insert(im, "INSERT INTO kv (key, value) VALUES ($1, $2)", &p);
}

static int copy_rows(struct import *im)
{
    int rc;

    if ((rc = import_users(im)) < 0 || (rc = import_paks(im)) < 0 ||
        (rc = import_apikeys(im)) < 0 || (rc = import_nodes(im)) < 0 ||
        (rc = import_route_ids(im)) < 0 || (rc = import_policies(im)) < 0 ||
        (rc = leave_request_tags(im)) < 0)
        return rc;
    if (im->st->ops->import_finish_sql)
        rc = im->st->ops->exec_script(im->c, im->st->ops->import_finish_sql);
    return rc;
}

static int import_tx(struct import *im)
{
    const struct store_ops *ops = im->st->ops;
    int rc;

    if ((rc = ops->begin(im->c)) < 0)
        return rc;
    if ((rc = ops->exec_script(im->c, ops->set_aside_sql)) < 0 ||
        (rc = store__migrate_all(im->st, im->c)) < 0 || (rc = copy_rows(im)) < 0 ||
        (rc = ops->commit(im->c)) < 0) {
        ops->rollback(im->c);
        return rc;
    }
    return 0;
}

static void import_free(struct import *im)
{
    free(im->users.v);
    free(im->paks.v);
    free(im->nodes.v);
    store__result_free(&im->routes);
    store__result_free(&im->pak_tags);
}

int store__import_headscale(struct store *st, struct store_conn *c, enum store_schema kind)
{
    struct import im = { .st = st, .c = c, .kind = kind };
    char where[1024];
    int rc;

    store__result_init(&im.routes, 0);
    store__result_init(&im.pak_tags, 0);
    log_info("store: %s: found a %s database: importing it", st->ops->name,
             hs_schemas[kind].name);
    if ((rc = st->ops->backup(st->drv, c, where, sizeof(where))) < 0) {
        log_errorx("store: %s: could not back the database up (%s): left untouched",
                   st->ops->name, hs_strerror(rc));
        return rc;
    }
    log_info("store: %s: the %s database is kept as it was in %s", st->ops->name,
             hs_schemas[kind].name, where);
    rc = import_tx(&im);
    if (st->ops->backup_done)
        st->ops->backup_done(st->drv, c);
    if (rc < 0)
        log_errorx("store: %s: import of the %s database failed (%s): nothing was changed",
                   st->ops->name, hs_schemas[kind].name, hs_strerror(rc));
    else
        log_info("store: %s: imported the %s database (%zu rows left out, see above)",
                 st->ops->name, hs_schemas[kind].name, im.skipped);
    import_free(&im);
    return rc;
}
