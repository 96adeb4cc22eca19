#include <stdlib.h>

#include "api/api_internal.h"

/* Three queries whatever the size (nodes, users, keys) and no JSON tree: the list is what
 * dashboards poll, also while thousands of nodes reconnect at once. */
void api_node_list(struct api_call *c)
{
    const char *user = api_query(c, "user");
    struct store_user u = { 0 };
    struct store_node *v;
    struct api_refs refs;
    struct api_jw w;
    size_t n;
    int rc;

    if (user && api_lookup_user(c, user, &u) < 0)
        return;
    rc = store_node_list(c->api->st, u.id, &v, &n);
    store_user_free(&u);
    if (rc < 0) {
        api_store_error(c, rc, "node");
        return;
    }
    /* After the nodes: every user and key they name exists by then, unless deleted since. */
    if ((rc = api_refs_load(c, true, &refs)) < 0) {
        store_node_list_free(v, n);
        api_store_error(c, rc, "node");
        return;
    }
    api_reply_begin(c, &w);
    /* A node takes about 1 KiB: growing by doubling would copy the body a dozen times
     * (should the guess not fit under the cap, the buffer just grows as it goes). */
    hs_buf_reserve(&c->resp->body, n * 1024);
    api_jw_obj(&w);
    api_jw_key(&w, "nodes");
    api_jw_nodes(c, &w, &refs, v, n);
    api_jw_obj_end(&w);
    api_reply_end(c, &w);
    api_refs_free(&refs);
    store_node_list_free(v, n);
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
    api_reply(c, 200, json_pack("{s:o}", "node", api_json_node(c, &n, false)));
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
