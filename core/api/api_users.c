#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

void api_health(struct api_call *c)
{
    bool ok = store_ping(c->api->st) == 0;
    api_reply(c, ok ? 200 : 503, json_pack("{s:b}", "databaseConnectivity", ok));
}

static void reply_user(struct api_call *c, int status, struct store_user *u)
{
    api_reply(c, status, json_pack("{s:o}", "user", api_json_user(c, u)));
    store_user_free(u);
}

void api_user_list(struct api_call *c)
{
    struct store_user_filter f = { .name = api_query(c, "name"), .email = api_query(c, "email") };
    /* Present but empty ("?id=") is a malformed id, as the gateway parses it. */
    const char *id = c->req->query ? c->req->query(c->req->qctx, "id") : NULL;
    struct store_user *v;
    json_t *arr;
    size_t n;
    int rc;

    if (id && api_parse_id(c, id, "user", &f.id) < 0)
        return;
    if ((rc = store_user_list(c->api->st, &f, &v, &n)) < 0) {
        api_store_error(c, rc, "user");
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_json_user(c, &v[i]));
    store_user_list_free(v, n);
    api_reply(c, 200, json_pack("{s:o}", "users", arr));
}

void api_user_get(struct api_call *c)
{
    struct store_user u;
    if (api_lookup_user(c, c->args[0], &u) == 0)
        reply_user(c, 200, &u);
}

void api_user_create(struct api_call *c)
{
    json_t *body = api_body(c);
    struct store_user in = { 0 }, out;
    const char *name = NULL, *display = NULL, *email = NULL, *pic = NULL;
    char why[160];
    int rc;

    if (!body || api_field_str(c, body, "name", &name) || api_field_str(c, body, "displayName",
        &display) || api_field_str(c, body, "email", &email) ||
        api_field_str(c, body, "pictureUrl", &pic))
        return;
    if (!name) {
        api_error(c, 400, "field \"name\" is required");
        return;
    }
    if (!api_valid_username(name, why, sizeof(why))) {
        api_error(c, 400, "invalid user name \"%s\": %s", name, why);
        return;
    }
    in.name = (char *)name;
    in.display_name = (char *)display;
    in.email = (char *)email;
    in.profile_pic_url = (char *)pic;
    if ((rc = store_user_create(c->api->st, &in, &out)) == -EEXIST)
        api_error(c, 409, "user \"%s\" already exists", name);
    else if (rc < 0)
        api_store_error(c, rc, "user");
    else
        reply_user(c, 200, &out);
}

void api_user_rename(struct api_call *c)
{
    const char *new_name = c->args[1];
    struct store_user u;
    char why[160];
    int rc;

    if (api_lookup_user(c, c->args[0], &u) < 0)
        return;
    /* 0.22.3 renamed by name (0.29: by id), and answers in its shape. */
    c->v022 = hs_streq(c->args[0], u.name);
    if (u.provider && *u.provider) {
        api_error(c, 400, "user \"%s\" comes from OIDC and cannot be renamed", u.name);
    } else if (!api_valid_username(new_name, why, sizeof(why))) {
        api_error(c, 400, "invalid user name \"%s\": %s", new_name, why);
    } else if ((rc = store_user_rename(c->api->st, u.id, new_name)) == -EEXIST) {
        api_error(c, 409, "user \"%s\" already exists", new_name);
    } else if (rc < 0) {
        api_store_error(c, rc, "user");
    } else {
        store_user_free(&u);
        if ((rc = store_user_get_by_name(c->api->st, new_name, &u)) < 0) {
            api_store_error(c, rc, "user");
            return;
        }
        reply_user(c, 200, &u);
        return;
    }
    store_user_free(&u);
}

void api_user_delete(struct api_call *c)
{
    struct store_user u;
    int rc;

    if (api_lookup_user(c, c->args[0], &u) < 0)
        return;
    rc = store_user_delete(c->api->st, u.id);
    if (rc == -EBUSY)
        api_error(c, 409, "user \"%s\" still owns nodes: delete or move them first", u.name);
    else if (rc < 0)
        api_store_error(c, rc, "user");
    else
        api_reply(c, 200, json_object());
    store_user_free(&u);
}
