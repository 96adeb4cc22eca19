#include <stdlib.h>

#include "api/api_internal.h"

void api_node_list(struct api_call *c)
{
    const char *user = api_query(c, "user");
    struct store_user u = { 0 };
    struct store_node *v;
    json_t *arr;
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
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_json_node(c, &v[i], true));
    store_node_list_free(v, n);
    api_reply(c, 200, json_pack("{s:o}", "nodes", arr));
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
