#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "keys/keys.h"
#include "state/state.h"

/* Protojson (headscale <= 0.29's gateway, golden-tested by main) emits "" for empty strings,
 * null for unset timestamps and messages, [] for empty lists, and uint64 as strings. */

json_t *api_json_time(int64_t us)
{
    char buf[48];
    if (!us)
        return json_null();
    hs_format_rfc3339(us, buf, sizeof(buf));
    return json_string(buf);
}

json_t *api_json_id(uint64_t id)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)id);
    return json_string(buf);
}

static json_t *str_or_empty(const char *s)
{
    return json_string(s ? s : "");
}

json_t *api_json_strv(const struct hs_strv *sv)
{
    json_t *a = json_array();
    for (size_t i = 0; i < sv->n; i++)
        json_array_append_new(a, json_string(sv->v[i]));
    return a;
}

json_t *api_json_user(const struct store_user *u)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", api_json_id(u->id));
    json_object_set_new(j, "name", str_or_empty(u->name));
    json_object_set_new(j, "createdAt", api_json_time(u->created_at));
    json_object_set_new(j, "displayName", str_or_empty(u->display_name));
    json_object_set_new(j, "email", str_or_empty(u->email));
    json_object_set_new(j, "providerId", str_or_empty(u->provider_id));
    json_object_set_new(j, "provider", str_or_empty(u->provider));
    json_object_set_new(j, "profilePicUrl", str_or_empty(u->profile_pic_url));
    return j;
}

static json_t *user_by_id(struct api_call *c, uint64_t id)
{
    struct store_user u;
    json_t *j;

    if (!id || store_user_get(c->api->st, id, &u) < 0)
        return json_null();
    j = api_json_user(&u);
    store_user_free(&u);
    return j;
}

json_t *api_json_preauthkey(struct api_call *c, const struct store_preauthkey *k,
                            const char *full_key)
{
    char masked[AUTH_KEY_TEXT_MAX];
    json_t *j = json_object();

    auth_cred_mask(AUTH_CRED_PREAUTH, k->prefix, masked, sizeof(masked));
    json_object_set_new(j, "user", user_by_id(c, k->user_id));
    json_object_set_new(j, "id", api_json_id(k->id));
    json_object_set_new(j, "key", json_string(full_key ? full_key : masked));
    json_object_set_new(j, "reusable", json_boolean(k->reusable));
    json_object_set_new(j, "ephemeral", json_boolean(k->ephemeral));
    json_object_set_new(j, "used", json_boolean(k->used));
    json_object_set_new(j, "expiration", api_json_time(k->expiration));
    json_object_set_new(j, "createdAt", api_json_time(k->created_at));
    json_object_set_new(j, "aclTags", api_json_strv(&k->tags));
    return j;
}

json_t *api_json_apikey(const struct store_apikey *k)
{
    char masked[AUTH_KEY_TEXT_MAX];
    json_t *j = json_object();

    auth_cred_mask(AUTH_CRED_API, k->prefix, masked, sizeof(masked));
    json_object_set_new(j, "id", api_json_id(k->id));
    json_object_set_new(j, "prefix", json_string(masked));
    json_object_set_new(j, "expiration", api_json_time(k->expiration));
    json_object_set_new(j, "createdAt", api_json_time(k->created_at));
    json_object_set_new(j, "lastSeen", api_json_time(k->last_seen));
    return j;
}

static json_t *key_text(const char *prefix, const uint8_t key[KEY_LEN])
{
    static const uint8_t zero[KEY_LEN];
    char buf[KEY_TEXT_MAX];
    if (memcmp(key, zero, KEY_LEN) == 0)
        return json_string("");
    keys_format(prefix, key, buf);
    return json_string(buf);
}

static const char *register_method_name(enum register_method m)
{
    switch (m) {
    case REGISTER_AUTH_KEY: return "REGISTER_METHOD_AUTH_KEY";
    case REGISTER_CLI: return "REGISTER_METHOD_CLI";
    case REGISTER_OIDC: return "REGISTER_METHOD_OIDC";
    default: return "REGISTER_METHOD_UNSPECIFIED";
    }
}

/* Announced routes come from Hostinfo.RoutableIPs. */
static json_t *available_routes(const struct store_node *n)
{
    json_t *hi = n->hostinfo_json ? json_loads(n->hostinfo_json, 0, NULL) : NULL;
    json_t *r = json_object_get(hi, "RoutableIPs");
    json_t *out = json_is_array(r) ? json_deep_copy(r) : json_array();
    json_decref(hi);
    return out;
}

/* A node with tags is owned by its tags (headscale >= 0.28): lists show the pseudo user. */
static json_t *node_user(struct api_call *c, const struct store_node *n, bool in_list)
{
    if (n->user_id && n->tags.n == 0)
        return user_by_id(c, n->user_id);
    if (!in_list)
        return json_null();
    /* Tagged nodes belong to headscale's pseudo user in lists. */
    return json_pack("{s:s, s:s, s:n, s:s, s:s, s:s, s:s, s:s}", "id", "2147455555", "name",
                     "tagged-devices", "createdAt", "displayName", "Tagged Devices", "email", "",
                     "providerId", "", "provider", "", "profilePicUrl", "");
}

/* Online is runtime state (a map stream is open), not a column. */
static bool node_online(struct api_call *c, uint64_t id)
{
    const struct state_node *sn;
    bool online = false;

    if (!c->api->state)
        return false;
    state_rdlock(c->api->state);
    if ((sn = state_node_by_id(c->api->state, id)))
        online = sn->online;
    state_unlock(c->api->state);
    return online;
}

json_t *api_json_node(struct api_call *c, const struct store_node *n, bool in_list)
{
    json_t *j = json_object(), *ips = json_array();
    struct store_preauthkey k;
    bool online = node_online(c, n->id);

    if (n->ipv4)
        json_array_append_new(ips, json_string(n->ipv4));
    if (n->ipv6)
        json_array_append_new(ips, json_string(n->ipv6));
    json_object_set_new(j, "id", api_json_id(n->id));
    json_object_set_new(j, "machineKey", key_text("mkey:", n->machine_key));
    json_object_set_new(j, "nodeKey", key_text("nodekey:", n->node_key));
    json_object_set_new(j, "discoKey", key_text("discokey:", n->disco_key));
    json_object_set_new(j, "ipAddresses", ips);
    json_object_set_new(j, "name", str_or_empty(n->hostname));
    json_object_set_new(j, "user", node_user(c, n, in_list));
    json_object_set_new(j, "lastSeen", api_json_time(online ? hs_now_us() : n->last_seen));
    json_object_set_new(j, "expiry", api_json_time(n->expiry));
    if (n->auth_key_id && store_preauthkey_get(c->api->st, n->auth_key_id, &k) == 0) {
        json_object_set_new(j, "preAuthKey", api_json_preauthkey(c, &k, NULL));
        store_preauthkey_free(&k);
    } else {
        json_object_set_new(j, "preAuthKey", json_null());
    }
    json_object_set_new(j, "createdAt", api_json_time(n->created_at));
    json_object_set_new(j, "registerMethod",
                        json_string(register_method_name(n->register_method)));
    json_object_set_new(j, "givenName", str_or_empty(n->given_name));
    json_object_set_new(j, "online", json_boolean(online));
    json_object_set_new(j, "approvedRoutes", api_json_strv(&n->approved_routes));
    json_object_set_new(j, "availableRoutes", available_routes(n));
    json_object_set_new(j, "subnetRoutes", json_array());
    json_object_set_new(j, "tags", api_json_strv(&n->tags));
    return j;
}
