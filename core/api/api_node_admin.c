/* Node administration: expire, rename, tag, move, and completing an interactive
 * registration. Each change goes through the store, so the notify bus carries it to every
 * connected peer. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

static void reply_node(struct api_call *c, struct store_node *n)
{
    api_reply(c, 200, json_pack("{s:o}", api_node_member(c, false), api_json_node(c, n, false)));
    store_node_free(n);
}

/* Applies one update and answers with the node, or the error. */
static void update_node(struct api_call *c, uint64_t id, unsigned fields,
                        const struct store_node *v)
{
    struct store_node n;
    int rc = store_node_update(c->api->st, id, fields, v, &n);

    if (rc == -EEXIST)
        api_error(c, 409, "the name \"%s\" is already taken", v->given_name ? v->given_name : "");
    else if (rc < 0)
        api_store_error(c, rc, "node");
    else
        reply_node(c, &n);
}

static int node_id_arg(struct api_call *c, uint64_t *id)
{
    return api_parse_id(c, c->args[0], "node", id);
}

/* Body or query (0.29 sends query parameters, main a body): expiry, disableExpiry. */
void api_node_expire(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *q_expiry = api_query(c, "expiry"), *q_disable = api_query(c, "disableExpiry");
    struct store_node v = { 0 };
    bool disable = false;
    uint64_t id;

    if (!body || node_id_arg(c, &id) < 0 || api_field_time(c, body, "expiry", &v.expiry) < 0 ||
        api_field_bool(c, body, "disableExpiry", &disable) < 0)
        return;
    if (q_expiry && hs_parse_rfc3339(q_expiry, &v.expiry) < 0) {
        api_error(c, 400, "expiry \"%s\" is not an RFC 3339 time", q_expiry);
        return;
    }
    if (q_disable && hs_parse_bool(q_disable, &disable) < 0) {
        api_error(c, 400, "disableExpiry must be true or false");
        return;
    }
    if (disable && v.expiry) {
        api_error(c, 400, "give either an expiry or disableExpiry, not both");
        return;
    }
    if (!disable && !v.expiry)
        v.expiry = hs_now_us(); /* expire now: an admin logout */
    update_node(c, id, STORE_NODE_BIT(STORE_NODE_EXPIRY), &v);
}

/* A DNS label: lowercase letters, digits and inner hyphens, 1..63 characters. */
static bool valid_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-'))
            return false;
    return true;
}

void api_node_rename(struct api_call *c)
{
    struct store_node v = { .given_name = c->args[1] };
    uint64_t id;

    if (node_id_arg(c, &id) < 0)
        return;
    if (!valid_label(v.given_name)) {
        api_error(c, 400, "invalid name \"%s\": a node name is a DNS label (lowercase letters, "
                          "digits and '-', at most 63 characters)", v.given_name);
        return;
    }
    update_node(c, id, STORE_NODE_BIT(STORE_NODE_GIVEN_NAME), &v);
}

void api_node_tags(struct api_call *c)
{
    json_t *body = api_body(c);
    struct store_node v = { 0 };
    uint64_t id;

    if (!body || node_id_arg(c, &id) < 0 || api_field_tags(c, body, "tags", &v.tags) < 0)
        return;
    update_node(c, id, STORE_NODE_BIT(STORE_NODE_TAGS), &v);
    hs_strv_free(&v.tags);
}

/* 0.22: POST /api/v1/machine/{id}/user?user=NAME; 0.23-0.27: body {"user": id}. */
void api_node_move(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *user = api_query(c, "user");
    struct store_user u;
    struct store_node v = { 0 };
    char idbuf[32];
    uint64_t id;

    if (!body || node_id_arg(c, &id) < 0)
        return;
    if (!user) {
        json_t *uv = json_object_get(body, "user");
        if (json_is_integer(uv)) {
            snprintf(idbuf, sizeof(idbuf), "%lld", (long long)json_integer_value(uv));
            user = idbuf;
        } else if (api_field_str(c, body, "user", &user) < 0) {
            return;
        }
    }
    if (api_lookup_user(c, user, &u) < 0)
        return;
    v.user_id = u.id;
    store_user_free(&u);
    update_node(c, id, STORE_NODE_BIT(STORE_NODE_USER), &v);
}

/* The registration id may come bare, as the whole AuthURL, or as its path. */
static const char *registration_id(const char *key)
{
    const char *slash = key ? strrchr(key, '/') : NULL;
    return slash ? slash + 1 : key;
}

static void complete_registration(struct api_call *c, const char *user, const char *key)
{
    struct store_user u;
    struct store_node n;
    int rc;

    if (!key || !*key) {
        api_error(c, 400, "a registration key (the id from the login URL) is required");
        return;
    }
    if (api_lookup_user(c, user, &u) < 0)
        return;
    rc = auth_registration_complete(c->api->auth, registration_id(key), u.id, &n);
    store_user_free(&u);
    if (rc == -ENOENT)
        api_error(c, 404, "no pending registration \"%s\" (it may have expired)",
                  registration_id(key));
    else if (rc == -EPERM)
        api_error(c, 400, "the node's requested tags (--advertise-tags) are invalid or not "
                          "permitted for user \"%s\" by the policy's tagOwners", user);
    else if (rc < 0)
        api_store_error(c, rc, "node");
    else
        reply_node(c, &n);
}

/* POST /api/v1/node/register?user=&key= (and the 0.22 machine path). */
void api_node_register(struct api_call *c)
{
    complete_registration(c, api_query(c, "user"), api_query(c, "key"));
}

/* POST /api/v1/auth/register {user, authId} (0.29). */
void api_auth_register(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *user = NULL, *auth_id = NULL;

    if (!body || api_field_str(c, body, "user", &user) < 0 ||
        api_field_str(c, body, "authId", &auth_id) < 0)
        return;
    complete_registration(c, user, auth_id);
}
