#include <stdlib.h>

#include "api/api_internal.h"
#include "state/state.h"

/* From the in-memory state, which holds every stored field of every node and is current for
 * every write committed here before the write returns: two small queries (users, keys) and no
 * copy per row, as dashboards poll this also while thousands of nodes reconnect at once. The
 * state's read lock is held only while the rows are written out. */
struct list_args {
    uint64_t user_id;
};

static bool write_list(struct api_call *c, struct api_jw *w, struct api_refs *refs, void *arg)
{
    const struct list_args *a = arg;
    bool complete;

    /* A node takes about 1 KiB: growing by doubling would copy the body a dozen times. */
    hs_buf_reserve(&c->resp->body, state_node_count(c->api->state) * 1024);
    api_jw_obj(w);
    api_jw_key(w, api_node_member(c, true));
    complete = api_jw_state_nodes(c, w, refs, a->user_id);
    api_jw_obj_end(w);
    return complete;
}

void api_node_list(struct api_call *c)
{
    const char *user = api_query(c, "user");
    struct store_user u = { 0 };
    struct list_args a;

    if (user && api_lookup_user(c, user, &u) < 0)
        return;
    a.user_id = u.id;
    api_reply_state_nodes(c, write_list, &a);
    store_user_free(&u);
}

void api_reply_state_nodes(struct api_call *c,
                           bool (*write)(struct api_call *c, struct api_jw *w,
                                         struct api_refs *refs, void *arg),
                           void *arg)
{
    struct api_refs refs;
    struct api_jw w;
    bool complete = false;
    int rc;

    /* A second pass only when a user or key appeared between the two reads (or one went). */
    for (int pass = 0; pass < 2 && !complete; pass++) {
        if ((rc = api_refs_load(c, true, &refs)) < 0) {
            api_store_error(c, rc, "node");
            break;
        }
        api_reply_begin(c, &w);
        complete = write(c, &w, &refs, arg);
        if (complete || pass == 1)
            api_reply_end(c, &w);
        api_refs_free(&refs);
    }
}

void api_node_get(struct api_call *c)
{
    struct store_node n;
    uint64_t id;
    int rc;

    if (api_parse_id(c, c->args[0], "node", &id) < 0)
        return;
    if ((rc = store_node_get(c->api->st, id, &n)) < 0) {
        api_store_error(c, rc, "node");
        return;
    }
    api_reply(c, 200, json_pack("{s:o}", api_node_member(c, false), api_json_node(c, &n, false)));
    store_node_free(&n);
}

void api_node_delete(struct api_call *c)
{
    uint64_t id;
    int rc;

    if (api_parse_id(c, c->args[0], "node", &id) < 0)
        return;
    if ((rc = store_node_delete(c->api->st, id)) < 0)
        api_store_error(c, rc, "node");
    else
        api_reply(c, 200, json_object());
}

/* POST /api/v1/node/backfillips?confirmed=true: addresses brought in line with the configured
 * prefixes (see store_node_backfill_ips); answers {"changes": [...]}. Without confirmed=true
 * nothing changes: the call renumbers nodes, so it must be meant. */
void api_node_backfill_ips(struct api_call *c)
{
    const struct hs_config *cfg = c->api->cfg;
    struct store_ip_config ips = {
        .v4 = &cfg->prefix_v4, .v6 = &cfg->prefix_v6,
        .random = cfg->ip_allocation == IP_ALLOC_RANDOM,
    };
    const char *q = api_query(c, "confirmed");
    struct hs_strv changes = { 0 };
    bool confirmed = false;
    json_t *list;
    int rc;

    if (q && hs_parse_bool(q, &confirmed) < 0) {
        api_error(c, 400, "confirmed must be true or false");
        return;
    }
    if (!confirmed) {
        api_error(c, 400, "not confirmed: nothing changed (add ?confirmed=true to give and take "
                          "away node addresses)");
        return;
    }
    if ((rc = store_node_backfill_ips(c->api->st, &ips, &changes)) == -ENOSPC) {
        api_error(c, 409, "a configured prefix has no free address left");
        return;
    } else if (rc < 0) {
        api_store_error(c, rc, "node");
        return;
    }
    list = json_array();
    for (size_t i = 0; i < changes.n; i++)
        json_array_append_new(list, json_string(changes.v[i]));
    hs_strv_free(&changes);
    api_reply(c, 200, json_pack("{s:o}", "changes", list));
}
