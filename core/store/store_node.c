/* store: nodes. Reads and delete for now; the control-protocol issue adds the writes
 * (register, update endpoints/hostinfo, expire, rename, approve routes). A write binds keys
 * with store__p_key(p, NODE_*_PREFIX, key), lists with store__p_strv, register_methods[] for
 * the method, and goes through store__write_row(... "RETURNING " NODE_COLS, node_from_row),
 * which publishes its NOTIFY_NODE event after commit. */
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

/* headscale's text encodings of the three keys (key.MachinePublic.MarshalText & co). */
#define NODE_MKEY_PREFIX "mkey:"
#define NODE_NODEKEY_PREFIX "nodekey:"
#define NODE_DISCO_PREFIX "discokey:"

#define NODE_COLS                                                                          \
    "id, machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, user_id, "    \
    "register_method, tags, auth_key_id, endpoints, host_info, approved_routes, "          \
    "last_seen, expiry, created_at, updated_at"

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

static int node_from_row(const struct store_result *r, size_t row, void *out)
{
    struct store_node *n = out;

    memset(n, 0, sizeof(*n));
    n->id = store__cell_u64(r, row, 0);
    store__cell_key(r, row, 1, NODE_MKEY_PREFIX, n->machine_key);
    store__cell_key(r, row, 2, NODE_NODEKEY_PREFIX, n->node_key);
    store__cell_key(r, row, 3, NODE_DISCO_PREFIX, n->disco_key);
    n->ipv4 = store__cell_strdup(r, row, 4);
    n->ipv6 = store__cell_strdup(r, row, 5);
    n->hostname = store__cell_strdup(r, row, 6);
    n->given_name = store__cell_strdup(r, row, 7);
    n->user_id = store__cell_u64(r, row, 8);
    n->register_method = register_method_parse(store__cell(r, row, 9));
    store__cell_strv(r, row, 10, &n->tags);
    n->auth_key_id = store__cell_u64(r, row, 11);
    n->endpoints_json = store__cell_strdup(r, row, 12);
    n->hostinfo_json = store__cell_strdup(r, row, 13);
    store__cell_strv(r, row, 14, &n->approved_routes);
    n->last_seen = store__cell_i64(r, row, 15);
    n->expiry = store__cell_i64(r, row, 16);
    n->created_at = store__cell_i64(r, row, 17);
    n->updated_at = store__cell_i64(r, row, 18);
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
