/* Pending interactive logins, operator side (headscale 0.29's /api/v1/auth/approve and
 * /reject), and /api/v1/debug/node, which makes one up. POST /api/v1/auth/register lives with
 * the node administration it shares with /api/v1/node/register (api_node_admin.c). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "keys/keys.h"

#define DEBUG_NODE_NAME_MAX 255 /* a host name */
#define DEBUG_NODE_ROUTES_MAX 256

/* "authId" of the body, well formed; NULL after replying 400. */
static const char *auth_id_arg(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *id = NULL;

    if (!body || api_field_str(c, body, "authId", &id) < 0)
        return NULL;
    if (!auth_registration_id_valid(id)) {
        api_error(c, 400, "invalid authId \"%s\": a login id is \"hskey-authreq-\" followed by "
                          "24 letters, digits, '-' or '_'", id ? id : "");
        return NULL;
    }
    return id;
}

static void not_pending(struct api_call *c, const char *id)
{
    api_error(c, 404, "no pending login \"%s\": unknown, expired, completed or refused", id);
}

/* {} on success, as headscale answers. */
void api_auth_approve(struct api_call *c)
{
    const char *id = auth_id_arg(c);
    struct store_node n;
    int rc;

    if (!id)
        return;
    rc = auth_registration_approve(c->api->auth, id, &n);
    if (rc == -ENOENT)
        not_pending(c, id);
    else if (rc == -ENXIO)
        api_error(c, 400, "login \"%s\" comes from a machine with no node yet, so it has no "
                          "owner to approve it for: complete it with auth register and a user",
                  id);
    else if (rc == -EPERM)
        api_error(c, 400, "the node's requested tags (--advertise-tags) are not permitted for "
                          "its user by the policy's tagOwners");
    else if (rc < 0)
        api_store_error(c, rc, "node");
    else {
        store_node_free(&n);
        api_reply(c, 200, json_object());
    }
}

void api_auth_reject(struct api_call *c)
{
    const char *id = auth_id_arg(c);
    int rc;

    if (!id)
        return;
    rc = auth_registration_reject(c->api->auth, id);
    if (rc == -ENOENT)
        not_pending(c, id);
    else if (rc < 0)
        api_store_error(c, rc, "login");
    else
        api_reply(c, 200, json_object());
}

/* The Hostinfo a debug node announces: its name, "TestOS" and its routes. */
static char *debug_hostinfo(const char *name, const struct hs_strv *routes)
{
    json_t *ips = json_array(), *hi;
    char *text;

    for (size_t i = 0; i < routes->n; i++)
        json_array_append_new(ips, json_string(routes->v[i]));
    hi = json_pack("{s:s, s:s, s:o}", "Hostname", name, "OS", "TestOS", "RoutableIPs", ips);
    text = hs_json_dump(hi, JSON_COMPACT);
    json_decref(hi);
    return text;
}

static int debug_routes_valid(struct api_call *c, const struct hs_strv *routes)
{
    struct ip_prefix pfx;

    if (routes->n > DEBUG_NODE_ROUTES_MAX) {
        api_error(c, 400, "at most %d routes", DEBUG_NODE_ROUTES_MAX);
        return -E2BIG;
    }
    for (size_t i = 0; i < routes->n; i++) {
        if (config_parse_prefix(routes->v[i], &pfx) < 0) {
            api_error(c, 400, "invalid route \"%s\": not an IP prefix", routes->v[i]);
            return -EINVAL;
        }
    }
    return 0;
}

/* The node as it will be once registered, as headscale echoes it: not stored yet (id 0, no
 * addresses or given name, Go's zero time for its times; 0.22.3's Machine writes those so
 * itself, and echoed the name as given name). */
static json_t *debug_node_json(struct api_call *c, struct store_node *n)
{
    json_t *j;

    if (c->v022) {
        n->given_name = n->hostname;
        return api_json_node(c, n, false);
    }
    j = api_json_node(c, n, false);
    json_object_set_new(j, "lastSeen", json_string("0001-01-01T00:00:00Z"));
    json_object_set_new(j, "expiry", json_string("0001-01-01T00:00:00Z"));
    json_object_set_new(j, "createdAt", json_string("0001-01-01T00:00:00Z"));
    return j;
}

/* Starts the pending login `key` from a made-up machine and answers with its node. */
static void debug_login(struct api_call *c, const char *key, const char *name,
                        const struct hs_strv *routes, uint64_t user_id)
{
    struct auth_node_request rq = { .hostname = name };
    struct store_node n = { .hostname = (char *)name, .user_id = user_id };
    struct key_pair mk, nk;
    int rc;

    keys_generate(&mk);
    keys_generate(&nk);
    memcpy(rq.machine_key, mk.pub, KEY_LEN);
    memcpy(rq.node_key, nk.pub, KEY_LEN);
    memcpy(n.machine_key, mk.pub, KEY_LEN);
    memcpy(n.node_key, nk.pub, KEY_LEN);
    sodium_memzero(&mk, sizeof(mk));
    sodium_memzero(&nk, sizeof(nk));
    rq.hostinfo_json = n.hostinfo_json = debug_hostinfo(name, routes);
    rc = auth_registration_add(c->api->auth, key, &rq);
    if (rc == -EEXIST)
        api_error(c, 409, "a login \"%s\" is pending already", key);
    else if (rc < 0)
        api_store_error(c, rc, "login");
    else
        api_reply(c, 200, json_pack("{s:o}", api_node_member(c, false), debug_node_json(c, &n)));
    free(n.hostinfo_json);
}

/* A debug login's id: a login id, or, as headscale 0.22.3 took it, a node key's text
 * ("nodekey:<64 hex>"), which `nodes register --key` then names. */
static bool debug_key_valid(const char *key)
{
    uint8_t k[KEY_LEN];

    return auth_registration_id_valid(key) || (key && keys_parse("nodekey:", key, k) == 0);
}

/* POST /api/v1/debug/node {user, key, name, routes}: a pending login under the id `key`, from
 * a made-up machine, for `auth register` (or approve/reject) to act on; answers {"node"}.
 * 0.22.3's POST /api/v1/debug/machine is the same, answering {"machine"}. */
void api_debug_create_node(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *user = NULL, *key = NULL, *name = "";
    struct hs_strv routes = { 0 };
    struct store_user u;

    if (!body || api_field_str(c, body, "user", &user) < 0 ||
        api_field_str(c, body, "key", &key) < 0 || api_field_str(c, body, "name", &name) < 0 ||
        api_field_strv(c, body, "routes", &routes) < 0)
        return;
    if (!debug_key_valid(key)) {
        api_error(c, 400, "invalid key \"%s\": a login id is \"hskey-authreq-\" followed by 24 "
                          "letters, digits, '-' or '_' (or, as in 0.22, \"nodekey:\" and 64 hex "
                          "digits)", key ? key : "");
    } else if (strlen(name) > DEBUG_NODE_NAME_MAX) {
        api_error(c, 400, "name longer than %d bytes", DEBUG_NODE_NAME_MAX);
    } else if (debug_routes_valid(c, &routes) == 0 && api_lookup_user(c, user, &u) == 0) {
        debug_login(c, key, name, &routes, u.id);
        store_user_free(&u);
    }
    hs_strv_free(&routes);
}
