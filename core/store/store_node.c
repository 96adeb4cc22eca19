/* store: nodes. Reads and delete for now; the control-protocol issue adds the writes
 * (register, update endpoints/hostinfo, expire, rename, approve routes). A write binds keys
 * with store__p_key(p, NODE_*_PREFIX, key), lists with store__p_strv, register_methods[] for
 * the method, and goes through store__write_row(... "RETURNING " NODE_COLS, node_from_row),
 * which publishes its NOTIFY_NODE event after commit. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define NODE_COLS                                                                          \
    "id, machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, user_id, "    \
    "register_method, tags, auth_key_id, endpoints, host_info, approved_routes, "          \
    "last_seen, expiry, created_at, updated_at, ephemeral, revision"

/* register_method as stored by headscale (util.RegisterMethodAuthKey, ...). */
static const char *const register_methods[] = {
    [REGISTER_UNSPECIFIED] = NULL,
    [REGISTER_AUTH_KEY] = "authkey",
    [REGISTER_CLI] = "cli",
    [REGISTER_OIDC] = "oidc",
};

static enum register_method register_method_parse(const char *s)
{
    for (size_t i = 1; s && i < HS_ARRAY_LEN(register_methods); i++) {
        if (strcmp(s, register_methods[i]) == 0)
            return (enum register_method)i;
    }
    return REGISTER_UNSPECIFIED;
}

void store_node_free(struct store_node *n)
{
    if (!n)
        return;
    free(n->ipv4);
    free(n->ipv6);
    free(n->hostname);
    free(n->given_name);
    hs_strv_free(&n->tags);
    free(n->endpoints_json);
    free(n->hostinfo_json);
    hs_strv_free(&n->approved_routes);
    memset(n, 0, sizeof(*n));
}

static void node_free_elem(void *elem)
{
    store_node_free(elem);
}

void store_node_list_free(struct store_node *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        store_node_free(&v[i]);
    free(v);
}

static int node_from_row(struct store_result *r, size_t row, void *out)
{
    struct store_node *n = out;

    memset(n, 0, sizeof(*n));
    n->id = store__cell_u64(r, row, 0);
    store__cell_key(r, row, 1, NODE_MKEY_PREFIX, n->machine_key);
    store__cell_key(r, row, 2, NODE_NODEKEY_PREFIX, n->node_key);
    store__cell_key(r, row, 3, NODE_DISCO_PREFIX, n->disco_key);
    n->ipv4 = store__cell_take(r, row, 4);
    n->ipv6 = store__cell_take(r, row, 5);
    n->hostname = store__cell_take(r, row, 6);
    n->given_name = store__cell_take(r, row, 7);
    n->user_id = store__cell_u64(r, row, 8);
    n->register_method = register_method_parse(store__cell(r, row, 9));
    store__cell_strv(r, row, 10, &n->tags);
    n->auth_key_id = store__cell_u64(r, row, 11);
    n->endpoints_json = store__cell_take(r, row, 12);
    n->hostinfo_json = store__cell_take(r, row, 13);
    store__cell_strv(r, row, 14, &n->approved_routes);
    n->last_seen = store__cell_i64(r, row, 15);
    n->expiry = store__cell_i64(r, row, 16);
    n->created_at = store__cell_i64(r, row, 17);
    n->updated_at = store__cell_i64(r, row, 18);
    n->ephemeral = store__cell_bool(r, row, 19);
    n->revision = store__cell_u64(r, row, 20);
    return 0;
}

int store_node_list(struct store *st, uint64_t user_id, struct store_node **out, size_t *n)
{
    struct store_params p;

    if (!out || !n)
        return -EINVAL;
    store__params_init(&p);
    store__p_u64(&p, user_id);
    return store__get_all(st,
                          "SELECT " NODE_COLS " FROM nodes"
                          " WHERE CAST($1 AS BIGINT) = 0 OR user_id = CAST($1 AS BIGINT)"
                          " ORDER BY id",
                          &p, node_from_row, sizeof(**out), node_free_elem, (void **)out, n);
}

int store_node_get(struct store *st, uint64_t id, struct store_node *out)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__get_one(st, "SELECT " NODE_COLS " FROM nodes WHERE id = $1", &p,
                          node_from_row, out);
}

/* Its routes and pending registrations go with it (ON DELETE CASCADE). */
int store_node_delete(struct store *st, uint64_t id)
{
    struct store_params p;

    store__params_init(&p);
    store__p_u64(&p, id);
    return store__write_row(st, "DELETE FROM nodes WHERE id = $1 RETURNING id", &p, NOTIFY_NODE,
                            NOTIFY_DELETE, NULL, NULL);
}

/* ---- writes ---- */

/* Given names taken by name or name-N, to pick the first free suffix (headscale >= 0.29). */
static int pick_given_name(struct store_tx *tx, const char *want, char *out, size_t size)
{
    struct store_params p;
    struct store_result r;
    int rc;

    store__params_init(&p);
    store__p_str(&p, want);
    store__p_own(&p, hs_aprintf("%s-%%", want));
    rc = store__tx_exec(tx, "SELECT given_name FROM nodes WHERE given_name = $1 OR "
                            "given_name LIKE $2", &p, &r);
    store__params_free(&p);
    if (rc < 0)
        return rc;
    snprintf(out, size, "%s", want);
    for (unsigned i = 1; i <= r.nrows + 1; i++) {
        bool taken = false;
        for (size_t row = 0; row < r.nrows && !taken; row++)
            taken = hs_streq(store__cell(&r, row, 0), out);
        if (!taken)
            break;
        /* Keep the label within 63 characters with the suffix. */
        snprintf(out, size, "%.*s-%u", (int)(63 - 1 - (i < 10 ? 1 : i < 100 ? 2 : 6)), want, i);
    }
    store__result_free(&r);
    return 0;
}

static int pick_ip(struct store_tx *tx, const struct ip_prefix *pfx, bool random,
                   const char *column, char *out, size_t size)
{
    struct store_result r;
    const char **used;
    char sql[64];
    int rc;

    out[0] = '\0';
    if (!pfx || !pfx->family)
        return 0;
    snprintf(sql, sizeof(sql), "SELECT %s FROM nodes WHERE %s IS NOT NULL", column, column);
    if ((rc = store__tx_exec(tx, sql, NULL, &r)) < 0)
        return rc;
    used = hs_xcalloc(r.nrows ? r.nrows : 1, sizeof(*used));
    for (size_t i = 0; i < r.nrows; i++)
        used[i] = store__cell(&r, i, 0);
    rc = store__ip_next(pfx, random, used, r.nrows, out, size);
    free(used);
    store__result_free(&r);
    return rc;
}

/* Concurrent registrations on PostgreSQL (READ COMMITTED) could pick the same address or
 * name: replicas registering nodes at once refused one in ten in a storm. Such transactions
 * now take turns (begin_alloc); the UNIQUE columns still refuse a loser (a name or address
 * written by another path), which then tries again with a fresh look. */
#define NODE_CREATE_ATTEMPTS 8

static int begin_alloc(struct store *st, struct store_tx *tx)
{
    int rc = store__begin(st, tx);

    if (rc == 0 && st->ops->alloc_lock_sql &&
        (rc = store__tx_exec(tx, st->ops->alloc_lock_sql, NULL, NULL)) < 0)
        store__rollback(tx);
    return rc;
}

static int node_create_once(struct store *st, const struct store_node *in,
                            const struct store_ip_config *ips, struct store_node *out);

int store_node_create(struct store *st, const struct store_node *in,
                      const struct store_ip_config *ips, struct store_node *out)
{
    int rc = -EEXIST;

    for (int i = 0; i < NODE_CREATE_ATTEMPTS && rc == -EEXIST; i++)
        rc = node_create_once(st, in, ips, out);
    return rc;
}

static int node_create_once(struct store *st, const struct store_node *in,
                            const struct store_ip_config *ips, struct store_node *out)
{
    char v4[64], v6[64], name[64];
    struct store_params p;
    struct store_result r;
    struct store_tx tx;
    int64_t now = hs_now_us();
    int rc;

    if (!in->given_name || !*in->given_name)
        return -EINVAL;
    if ((rc = begin_alloc(st, &tx)) < 0)
        return rc;
    if ((rc = pick_given_name(&tx, in->given_name, name, sizeof(name))) < 0 ||
        (rc = pick_ip(&tx, ips ? ips->v4 : NULL, ips && ips->random, "ipv4", v4, sizeof(v4))) ||
        (rc = pick_ip(&tx, ips ? ips->v6 : NULL, ips && ips->random, "ipv6", v6, sizeof(v6)))) {
        store__rollback(&tx);
        return rc;
    }
    store__params_init(&p);
    store__p_key(&p, NODE_MKEY_PREFIX, in->machine_key);
    store__p_key(&p, NODE_NODEKEY_PREFIX, in->node_key);
    store__p_key(&p, NODE_DISCO_PREFIX, in->disco_key);
    store__p_str(&p, in->endpoints_json ? in->endpoints_json : "[]");
    store__p_str(&p, in->hostinfo_json ? in->hostinfo_json : "{}");
    store__p_str(&p, v4[0] ? v4 : NULL);
    store__p_str(&p, v6[0] ? v6 : NULL);
    store__p_str(&p, in->hostname ? in->hostname : "");
    store__p_str(&p, name);
    store__p_id(&p, in->user_id);
    store__p_str(&p, register_methods[in->register_method]);
    store__p_strv(&p, &in->tags);
    store__p_id(&p, in->auth_key_id);
    store__p_time(&p, in->last_seen);
    store__p_time(&p, in->expiry);
    store__p_strv(&p, &in->approved_routes);
    store__p_i64(&p, now);
    store__p_bool(&p, in->ephemeral);
    rc = store__tx_exec(&tx,
                        "INSERT INTO nodes (machine_key, node_key, disco_key, endpoints, "
                        "host_info, ipv4, ipv6, hostname, given_name, user_id, register_method, "
                        "tags, auth_key_id, last_seen, expiry, approved_routes, created_at, "
                        "updated_at, ephemeral) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                        "$11, $12, $13, $14, $15, $16, $17, $17, $18) RETURNING " NODE_COLS,
                        &p, &r);
    store__params_free(&p);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    node_from_row(&r, 0, out);
    store__result_free(&r);
    store__tx_event(&tx, NOTIFY_NODE, NOTIFY_CREATE, out->id);
    if ((rc = store__commit(&tx)) < 0)
        store_node_free(out);
    return rc;
}

/* Column names for the patch bits, in bit order; values come from the patch, never from
 * input, so the generated SQL is a fixed set of texts. */
static void patch_param(struct store_params *p, unsigned bit, const struct store_node *v)
{
    switch (bit) {
    case STORE_NODE_NODE_KEY: store__p_key(p, NODE_NODEKEY_PREFIX, v->node_key); break;
    case STORE_NODE_DISCO_KEY: store__p_key(p, NODE_DISCO_PREFIX, v->disco_key); break;
    case STORE_NODE_ENDPOINTS: store__p_str(p, v->endpoints_json ? v->endpoints_json : "[]");
        break;
    case STORE_NODE_HOSTINFO: store__p_str(p, v->hostinfo_json ? v->hostinfo_json : "{}");
        break;
    case STORE_NODE_HOSTNAME: store__p_str(p, v->hostname ? v->hostname : ""); break;
    case STORE_NODE_GIVEN_NAME: store__p_str(p, v->given_name); break;
    case STORE_NODE_USER: store__p_id(p, v->user_id); break;
    case STORE_NODE_REGISTER_METHOD: store__p_str(p, register_methods[v->register_method]);
        break;
    case STORE_NODE_TAGS: store__p_strv(p, &v->tags); break;
    case STORE_NODE_AUTH_KEY: store__p_id(p, v->auth_key_id); break;
    case STORE_NODE_LAST_SEEN: store__p_time(p, v->last_seen); break;
    case STORE_NODE_EXPIRY: store__p_time(p, v->expiry); break;
    case STORE_NODE_APPROVED_ROUTES: store__p_strv(p, &v->approved_routes); break;
    default: break;
    }
}

static const char *const patch_columns[] = {
    [STORE_NODE_NODE_KEY] = "node_key", [STORE_NODE_DISCO_KEY] = "disco_key",
    [STORE_NODE_ENDPOINTS] = "endpoints", [STORE_NODE_HOSTINFO] = "host_info",
    [STORE_NODE_HOSTNAME] = "hostname", [STORE_NODE_GIVEN_NAME] = "given_name",
    [STORE_NODE_USER] = "user_id", [STORE_NODE_REGISTER_METHOD] = "register_method",
    [STORE_NODE_TAGS] = "tags", [STORE_NODE_AUTH_KEY] = "auth_key_id",
    [STORE_NODE_LAST_SEEN] = "last_seen", [STORE_NODE_EXPIRY] = "expiry",
    [STORE_NODE_APPROVED_ROUTES] = "approved_routes",
};

/* The UPDATE of one patch into sql and p (p's $1 is the id): updated_at, the revision and
 * the named fields. */
static void patch_sql(uint64_t id, unsigned fields, const struct store_node *v,
                      struct hs_buf *sql, struct store_params *p)
{
    store__params_init(p);
    store__p_u64(p, id);
    store__p_i64(p, hs_now_us());
    hs_buf_puts(sql, "UPDATE nodes SET updated_at = $2, revision = revision + 1");
    for (unsigned bit = 0; bit < HS_ARRAY_LEN(patch_columns); bit++) {
        if (!(fields & (1u << bit)) || !patch_columns[bit])
            continue;
        patch_param(p, bit, v);
        hs_buf_appendf(sql, ", %s = $%d", patch_columns[bit], p->n);
    }
}

/* last_seen alone changes nothing peers see: no event, no map churn. */
static bool patch_silent(unsigned fields)
{
    return fields == (1u << STORE_NODE_LAST_SEEN);
}

/* One patch in tx, announced (unless silent) with the row's new revision; -ENOENT when the
 * node is gone. out (may be NULL) gets the new row. */
static int patch_exec(struct store_tx *tx, uint64_t id, unsigned fields,
                      const struct store_node *v, struct store_node *out)
{
    struct store_params p;
    struct store_result r;
    struct hs_buf sql;
    int rc;

    hs_buf_init(&sql, 1024);
    patch_sql(id, fields, v, &sql, &p);
    hs_buf_puts(&sql, out ? " WHERE id = $1 RETURNING " NODE_COLS
                          : " WHERE id = $1 RETURNING id, revision");
    rc = store__tx_exec(tx, sql.data, &p, &r);
    store__params_free(&p);
    hs_buf_free(&sql);
    if (rc < 0)
        return rc;
    if (r.nrows == 0) {
        store__result_free(&r);
        return -ENOENT;
    }
    if (!patch_silent(fields))
        store__tx_event_rev(tx, NOTIFY_NODE, NOTIFY_UPDATE, id,
                            store__cell_u64(&r, 0, out ? 20 : 1));
    if (out)
        node_from_row(&r, 0, out);
    store__result_free(&r);
    return 0;
}

int store_node_update(struct store *st, uint64_t id, unsigned fields,
                      const struct store_node *v, struct store_node *out)
{
    struct store_node row;
    struct store_tx tx;
    int rc;

    if (!fields)
        return -EINVAL;
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    if ((rc = patch_exec(&tx, id, fields, v, &row)) < 0) {
        store__rollback(&tx);
        return rc;
    }
    if ((rc = store__commit(&tx)) < 0) {
        store_node_free(&row);
        return rc;
    }
    if (out)
        *out = row;
    else
        store_node_free(&row);
    return 0;
}

int store_node_update_many(struct store *st, const struct store_node_patch *v, size_t n)
{
    struct store_tx tx;
    int rc;

    if (n == 0)
        return 0;
    if ((rc = store__begin(st, &tx)) < 0)
        return rc;
    tx.quiet = true;
    for (size_t i = 0; i < n; i++) {
        rc = v[i].fields ? patch_exec(&tx, v[i].id, v[i].fields, &v[i].v, NULL) : 0;
        if (rc < 0 && rc != -ENOENT) { /* a node deleted meanwhile is no reason to fail */
            store__rollback(&tx);
            return rc;
        }
    }
    return store__commit(&tx);
}

int store_node_find(struct store *st, const uint8_t machine_key[STORE_KEY_LEN],
                    const uint8_t node_key[STORE_KEY_LEN], struct store_node *out)
{
    /* One statement per combination, each able to use its key's index: a single statement
     * with "($n OR ...)" conditions scans the table, once per map poll. */
    static const char *const sql[] = {
        "SELECT " NODE_COLS " FROM nodes WHERE node_key = $1 ORDER BY id DESC",
        "SELECT " NODE_COLS " FROM nodes WHERE machine_key = $1 ORDER BY id DESC",
        "SELECT " NODE_COLS " FROM nodes WHERE node_key = $1 AND machine_key = $2"
        " ORDER BY id DESC",
    };
    struct store_params p;
    int rc;

    if (!machine_key && !node_key)
        return -EINVAL;
    store__params_init(&p);
    if (node_key)
        store__p_key(&p, NODE_NODEKEY_PREFIX, node_key);
    if (machine_key)
        store__p_key(&p, NODE_MKEY_PREFIX, machine_key);
    rc = store__get_one(st, sql[machine_key ? (node_key ? 2 : 1) : 0], &p, node_from_row, out);
    store__params_free(&p);
    return rc;
}

/* ---- addresses after a change of prefixes ---- */

/* One node's addresses brought in line with ips; its changes described in changes. */
static int backfill_node(struct store_tx *tx, const struct store_ip_config *ips,
                         struct store_result *nodes, size_t row, struct hs_strv *changes)
{
    const struct ip_prefix *pfx[2] = { ips->v4, ips->v6 };
    static const char *const family[2] = { "IPv4", "IPv6" }, *const column[2] = { "ipv4", "ipv6" };
    const char *name = store__cell(nodes, row, 1);
    uint64_t id = store__cell_u64(nodes, row, 0);
    char addr[2][64], msg[256];
    bool changed = false;
    struct store_params p;
    int rc;

    for (int f = 0; f < 2; f++) {
        const char *now = store__cell(nodes, row, 2 + (size_t)f);
        bool want = pfx[f] && pfx[f]->family;
        snprintf(addr[f], sizeof(addr[f]), "%s", now ? now : "");
        if (want && !now) {
            if ((rc = pick_ip(tx, pfx[f], ips->random, column[f], addr[f], sizeof(addr[f]))) < 0)
                return rc;
            snprintf(msg, sizeof(msg), "node %" PRIu64 " (%s): %s %s given", id, name,
                     family[f], addr[f]);
        } else if (!want && now) {
            snprintf(msg, sizeof(msg), "node %" PRIu64 " (%s): %s %s taken away, no %s prefix "
                     "is configured", id, name, family[f], now, family[f]);
            addr[f][0] = '\0';
        } else {
            continue;
        }
        hs_strv_push(changes, msg);
        changed = true;
    }
    if (!changed)
        return 0;
    store__params_init(&p);
    store__p_u64(&p, id);
    store__p_str(&p, addr[0][0] ? addr[0] : NULL);
    store__p_str(&p, addr[1][0] ? addr[1] : NULL);
    rc = store__tx_exec(tx, "UPDATE nodes SET ipv4 = $2, ipv6 = $3, revision = revision + 1 "
                        "WHERE id = $1", &p, NULL);
    store__params_free(&p);
    if (rc == 0)
        store__tx_event(tx, NOTIFY_NODE, NOTIFY_UPDATE, id);
    return rc;
}

static int backfill_once(struct store *st, const struct store_ip_config *ips,
                         struct hs_strv *changes)
{
    struct store_result nodes;
    struct store_tx tx;
    int rc;

    if ((rc = begin_alloc(st, &tx)) < 0)
        return rc;
    rc = store__tx_exec(&tx, "SELECT id, given_name, ipv4, ipv6 FROM nodes ORDER BY id", NULL,
                        &nodes);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    for (size_t row = 0; row < nodes.nrows && rc == 0; row++)
        rc = backfill_node(&tx, ips, &nodes, row, changes);
    store__result_free(&nodes);
    if (rc < 0) {
        store__rollback(&tx);
        return rc;
    }
    return store__commit(&tx);
}

int store_node_backfill_ips(struct store *st, const struct store_ip_config *ips,
                            struct hs_strv *changes)
{
    int rc = -EEXIST;

    /* As in store_node_create: a registration racing us for an address makes us look again. */
    for (int i = 0; i < NODE_CREATE_ATTEMPTS && rc == -EEXIST; i++) {
        hs_strv_free(changes);
        rc = backfill_once(st, ips, changes);
    }
    if (rc < 0)
        hs_strv_free(changes);
    return rc;
}
