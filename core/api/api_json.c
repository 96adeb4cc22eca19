#include <stddef.h>
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

/* ---- the shapes of users, pre-auth keys and nodes, written with api_jw (one implementation
 * for lists and single objects) ---- */

static void kstr_or_empty(struct api_jw *w, const char *key, const char *s)
{
    api_jw_kstr(w, key, s ? s : "");
}

/* Go's zero time.Time, which headscale 0.22.3 writes for an unset time (0.29: null). */
#define GO_ZERO_TIME "0001-01-01T00:00:00Z"

static void jw_time_v022(struct api_jw *w, int64_t us)
{
    if (us)
        api_jw_time(w, us);
    else
        api_jw_str(w, GO_ZERO_TIME);
}

/* v022: headscale 0.22.3's User, {id, name, createdAt}. */
static void jw_user(struct api_jw *w, const struct store_user *u, bool v022)
{
    api_jw_obj(w);
    api_jw_key(w, "id");
    api_jw_id(w, u->id);
    kstr_or_empty(w, "name", u->name);
    api_jw_key(w, "createdAt");
    if (v022) {
        jw_time_v022(w, u->created_at);
        api_jw_obj_end(w);
        return;
    }
    api_jw_time(w, u->created_at);
    kstr_or_empty(w, "displayName", u->display_name);
    kstr_or_empty(w, "email", u->email);
    kstr_or_empty(w, "providerId", u->provider_id);
    kstr_or_empty(w, "provider", u->provider);
    kstr_or_empty(w, "profilePicUrl", u->profile_pic_url);
    api_jw_obj_end(w);
}

json_t *api_json_user(const struct api_call *c, const struct store_user *u)
{
    struct hs_buf b;
    struct api_jw w;

    hs_buf_init(&b, API_MAX_RESPONSE);
    api_jw_begin(&w, &b);
    jw_user(&w, u, c && c->v022);
    return api_jw_to_json(&b);
}

const char *api_node_member(const struct api_call *c, bool list)
{
    if (c->v022)
        return list ? "machines" : "machine";
    return list ? "nodes" : "node";
}

/* ---- rows the shapes refer to: queried one by one, or found in tables loaded once ---- */

void api_refs_free(struct api_refs *r)
{
    for (size_t i = 0; r->user_json && i < r->nusers; i++)
        free(r->user_json[i]);
    for (size_t i = 0; r->key_json && i < r->nkeys; i++)
        free(r->key_json[i]);
    free(r->user_json);
    free(r->key_json);
    store_user_list_free(r->users, r->nusers);
    store_preauthkey_list_free(r->keys, r->nkeys);
    memset(r, 0, sizeof(*r));
}

/* Rows created after the list they serve was read are harmless; rows deleted meanwhile render
 * as null, as a per-row lookup that lost the same race would. */
int api_refs_load(struct api_call *c, bool with_keys, struct api_refs *out)
{
    int rc;

    memset(out, 0, sizeof(*out));
    rc = store_user_list(c->api->st, NULL, &out->users, &out->nusers);
    if (rc == 0 && with_keys)
        rc = store_preauthkey_list(c->api->st, 0, &out->keys, &out->nkeys);
    if (rc < 0) {
        api_refs_free(out);
        return rc;
    }
    out->user_json = hs_xcalloc(out->nusers ? out->nusers : 1, sizeof(char *));
    out->key_json = hs_xcalloc(out->nkeys ? out->nkeys : 1, sizeof(char *));
    return 0;
}

/* Binary search over an array sorted by a leading uint64_t id field. */
_Static_assert(offsetof(struct store_user, id) == 0, "find_by_id needs id first");
_Static_assert(offsetof(struct store_preauthkey, id) == 0, "find_by_id needs id first");
static const void *find_by_id(const void *base, size_t n, size_t size, uint64_t id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const void *e = (const char *)base + mid * size;
        uint64_t eid = *(const uint64_t *)e;
        if (eid == id)
            return e;
        if (eid < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* JSON text of one object, for the refs cache; NULL (render null) if it did not fit. */
static char *render_user(const struct api_call *c, const struct store_user *u)
{
    struct hs_buf b;
    struct api_jw w;

    hs_buf_init(&b, API_MAX_RESPONSE);
    api_jw_begin(&w, &b);
    jw_user(&w, u, c->v022);
    if (api_jw_end(&w) < 0) {
        hs_buf_free(&b);
        return NULL;
    }
    return hs_buf_steal(&b);
}

/* The user as a value; null when there is none (or it is gone). A list names the same few
 * users thousands of times, so each is rendered once and then copied. */
static void jw_user_by_id(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                          uint64_t id)
{
    const struct store_user *found;
    struct store_user u;
    size_t i;

    if (id && refs) {
        found = find_by_id(refs->users, refs->nusers, sizeof(*refs->users), id);
        if (found) {
            i = (size_t)(found - refs->users);
            if (!refs->user_json[i])
                refs->user_json[i] = render_user(c, found); /* one shape per call */
            api_jw_raw(w, refs->user_json[i] ? refs->user_json[i] : "null");
            return;
        }
        refs->missed = true;
    } else if (id && store_user_get(c->api->st, id, &u) == 0) {
        jw_user(w, &u, c->v022);
        store_user_free(&u);
        return;
    }
    api_jw_null(w);
}

/* 0.22.3's PreAuthKey names its user by name. */
static void jw_user_name(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                         uint64_t id)
{
    const struct store_user *found = NULL;
    struct store_user u = { 0 };

    if (id && refs)
        found = find_by_id(refs->users, refs->nusers, sizeof(*refs->users), id);
    else if (id && store_user_get(c->api->st, id, &u) == 0)
        found = &u;
    if (!found || !api_jw_str(w, found->name))
        api_jw_str(w, "");
    if (found == &u)
        store_user_free(&u);
}

static void jw_preauthkey(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                          const struct store_preauthkey *k, const char *full_key)
{
    char masked[AUTH_KEY_TEXT_MAX];

    auth_cred_mask(AUTH_CRED_PREAUTH, k->prefix, masked, sizeof(masked));
    api_jw_obj(w);
    api_jw_key(w, "user");
    if (c->v022)
        jw_user_name(c, w, refs, k->user_id);
    else
        jw_user_by_id(c, w, refs, k->user_id);
    api_jw_key(w, "id");
    api_jw_id(w, k->id);
    api_jw_kstr(w, "key", full_key ? full_key : masked);
    api_jw_key(w, "reusable");
    api_jw_bool(w, k->reusable);
    api_jw_key(w, "ephemeral");
    api_jw_bool(w, k->ephemeral);
    api_jw_key(w, "used");
    api_jw_bool(w, k->used && !k->reusable); /* as headscale: a reusable key is never used up */
    api_jw_key(w, "expiration");
    c->v022 ? jw_time_v022(w, k->expiration) : api_jw_time(w, k->expiration);
    api_jw_key(w, "createdAt");
    c->v022 ? jw_time_v022(w, k->created_at) : api_jw_time(w, k->created_at);
    api_jw_key(w, "aclTags");
    api_jw_strv(w, &k->tags);
    api_jw_obj_end(w);
}

json_t *api_json_preauthkey(struct api_call *c, const struct store_preauthkey *k,
                            const char *full_key)
{
    struct hs_buf b;
    struct api_jw w;

    hs_buf_init(&b, API_MAX_RESPONSE);
    api_jw_begin(&w, &b);
    jw_preauthkey(c, &w, NULL, k, full_key);
    return api_jw_to_json(&b);
}

void api_jw_preauthkeys(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                        const struct store_preauthkey *v, size_t n)
{
    api_jw_arr(w);
    for (size_t i = 0; i < n; i++)
        jw_preauthkey(c, w, refs, &v[i], NULL);
    api_jw_arr_end(w);
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

/* A key not known yet (a node's disco key before its first map request) is all zeros, and
 * written as such, as headscale writes it. */
static void jw_key_text(struct api_jw *w, const char *member, const char *prefix,
                        const uint8_t key[KEY_LEN])
{
    char buf[KEY_TEXT_MAX];

    keys_format(prefix, key, buf);
    api_jw_kascii(w, member, buf, strlen(buf));
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

/* Announced routes come from Hostinfo.RoutableIPs, copied as they are. The stored Hostinfo is
 * a JSON dump (ours or Go's: neither escapes letters), so a text without the literal key has
 * no such member and the parse, the costliest step of a node, can be skipped. */
static void jw_available_routes(struct api_jw *w, const struct store_node *n)
{
    json_t *hi, *r;
    char *text;

    if (!n->hostinfo_json || !strstr(n->hostinfo_json, "\"RoutableIPs\"")) {
        api_jw_raw(w, "[]");
        return;
    }
    hi = json_loads(n->hostinfo_json, 0, NULL);
    r = json_object_get(hi, "RoutableIPs");
    if (!json_is_array(r)) {
        api_jw_raw(w, "[]");
    } else {
        text = hs_json_dump(r, JSON_COMPACT);
        api_jw_raw(w, text);
        free(text);
    }
    json_decref(hi);
}

/* A node with tags is owned by its tags (headscale >= 0.28): lists show the pseudo user. */
static void jw_node_user(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                         const struct store_node *n, bool in_list)
{
    if (n->user_id && n->tags.n == 0)
        jw_user_by_id(c, w, refs, n->user_id);
    else if (!in_list)
        api_jw_null(w);
    else /* tagged nodes belong to headscale's pseudo user in lists */
        api_jw_raw(w, "{\"id\":\"2147455555\",\"name\":\"tagged-devices\","
                      "\"createdAt\":\"0001-01-01T00:00:00Z\","
                      "\"displayName\":\"Tagged Devices\",\"email\":\"\",\"providerId\":\"\","
                      "\"provider\":\"\",\"profilePicUrl\":\"\"}");
}

static char *render_preauthkey(struct api_call *c, struct api_refs *refs,
                               const struct store_preauthkey *k)
{
    struct hs_buf b;
    struct api_jw w;

    hs_buf_init(&b, API_MAX_RESPONSE);
    api_jw_begin(&w, &b);
    jw_preauthkey(c, &w, refs, k, NULL);
    if (api_jw_end(&w) < 0) {
        hs_buf_free(&b);
        return NULL;
    }
    return hs_buf_steal(&b);
}

/* Like users, a shared (reusable) key is rendered once per list. */
static void jw_node_preauthkey(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                               const struct store_node *n)
{
    const struct store_preauthkey *found;
    struct store_preauthkey k;
    size_t i;

    if (n->auth_key_id && refs) {
        found = find_by_id(refs->keys, refs->nkeys, sizeof(*refs->keys), n->auth_key_id);
        if (found) {
            i = (size_t)(found - refs->keys);
            if (!refs->key_json[i])
                refs->key_json[i] = render_preauthkey(c, refs, found);
            api_jw_raw(w, refs->key_json[i] ? refs->key_json[i] : "null");
            return;
        }
        refs->missed = true;
    } else if (n->auth_key_id && store_preauthkey_get(c->api->st, n->auth_key_id, &k) == 0) {
        jw_preauthkey(c, w, NULL, &k, NULL);
        store_preauthkey_free(&k);
        return;
    }
    api_jw_null(w);
}

/* Online is runtime state (a map stream is open), not a column. */
static bool node_online(struct api_call *c, uint64_t id)
{
    const struct state_node *sn;
    bool online;

    state_rdlock(c->api->state);
    online = (sn = state_node_by_id(c->api->state, id)) && sn->online;
    state_unlock(c->api->state);
    return online;
}

/* 0.22.3 had one list of tags per origin: forced by an operator, asked for by the node
 * (Hostinfo.RequestTags) and given (valid), or asked for and refused (invalid). */
static void machine_tags(const struct store_node *n, struct hs_strv *forced,
                         struct hs_strv *valid, struct hs_strv *invalid)
{
    json_t *hi = n->hostinfo_json ? json_loads(n->hostinfo_json, 0, NULL) : NULL, *t;
    struct hs_strv asked = { 0 };
    size_t i;

    json_array_foreach(json_object_get(hi, "RequestTags"), i, t)
        if (json_is_string(t) && !hs_strv_contains(&asked, json_string_value(t)))
            hs_strv_push(&asked, json_string_value(t));
    json_decref(hi);
    for (i = 0; i < n->tags.n; i++)
        hs_strv_push(hs_strv_contains(&asked, n->tags.v[i]) ? valid : forced, n->tags.v[i]);
    for (i = 0; i < asked.n; i++)
        if (!hs_strv_contains(&n->tags, asked.v[i]))
            hs_strv_push(invalid, asked.v[i]);
    hs_strv_free(&asked);
}

/* A key, or "" while it is all zeros (0.22.3 wrote an unset key so). */
static void jw_key_v022(struct api_jw *w, const char *member, const char *prefix,
                        const uint8_t key[KEY_LEN])
{
    static const uint8_t zero[KEY_LEN];
    char buf[KEY_TEXT_MAX];

    if (memcmp(key, zero, KEY_LEN) == 0) {
        api_jw_kascii(w, member, "", 0);
        return;
    }
    keys_format(prefix, key, buf);
    api_jw_kascii(w, member, buf, strlen(buf));
}

/* Opens a node object with the members both shapes start with: id, the three keys (written
 * by key: 0.22.3 wrote an unset one as ""), the addresses and the host name. */
static void jw_node_head(struct api_jw *w, const struct store_node *n,
                         void (*key)(struct api_jw *, const char *, const char *,
                                     const uint8_t *))
{
    api_jw_obj(w);
    api_jw_key(w, "id");
    api_jw_id(w, n->id);
    key(w, "machineKey", "mkey:", n->machine_key);
    key(w, "nodeKey", "nodekey:", n->node_key);
    key(w, "discoKey", "discokey:", n->disco_key);
    api_jw_key(w, "ipAddresses");
    api_jw_arr(w);
    if (n->ipv4)
        api_jw_str(w, n->ipv4);
    if (n->ipv6)
        api_jw_str(w, n->ipv6);
    api_jw_arr_end(w);
    kstr_or_empty(w, "name", n->hostname);
}

/* headscale 0.22.3's Machine, the node as its paths (/api/v1/machine..., /api/v1/routes)
 * answered it. Nodes owned by their tags alone, which 0.22.3 could not have, belong to the
 * tagged-devices user as in 0.29's lists. It tracked no separate last update: lastSeen
 * stands for it. */
static void jw_machine(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                       const struct store_node *n, bool online)
{
    struct hs_strv forced = { 0 }, valid = { 0 }, invalid = { 0 };
    int64_t seen = online ? hs_now_us() : n->last_seen;

    jw_node_head(w, n, jw_key_v022);
    api_jw_key(w, "user");
    if (n->user_id) /* 0.22 tags were a node's attribute: a tagged node kept its user */
        jw_user_by_id(c, w, refs, n->user_id);
    else
        api_jw_raw(w, "{\"id\":\"2147455555\",\"name\":\"tagged-devices\",\"createdAt\":\""
                      GO_ZERO_TIME "\"}");
    api_jw_key(w, "lastSeen");
    jw_time_v022(w, seen);
    api_jw_key(w, "lastSuccessfulUpdate");
    jw_time_v022(w, seen);
    api_jw_key(w, "expiry");
    jw_time_v022(w, n->expiry);
    api_jw_key(w, "preAuthKey");
    jw_node_preauthkey(c, w, refs, n);
    api_jw_key(w, "createdAt");
    jw_time_v022(w, n->created_at);
    api_jw_kstr(w, "registerMethod", register_method_name(n->register_method));
    machine_tags(n, &forced, &valid, &invalid);
    api_jw_key(w, "forcedTags");
    api_jw_strv(w, &forced);
    api_jw_key(w, "invalidTags");
    api_jw_strv(w, &invalid);
    api_jw_key(w, "validTags");
    api_jw_strv(w, &valid);
    kstr_or_empty(w, "givenName", n->given_name);
    api_jw_key(w, "online");
    api_jw_bool(w, online);
    api_jw_obj_end(w);
    hs_strv_free(&forced);
    hs_strv_free(&valid);
    hs_strv_free(&invalid);
}

/* subnet: what "subnetRoutes" lists (NULL: none). headscale 0.29 fills it only in lists
 * (primary routes, then approved exit routes) and in the answer to approve_routes (primary
 * routes); every other answer has it empty. */
static void jw_node(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                    const struct store_node *n, bool in_list, bool online,
                    const struct hs_strv *subnet)
{
    if (c->v022) {
        jw_machine(c, w, refs, n, online);
        return;
    }
    jw_node_head(w, n, jw_key_text);
    api_jw_key(w, "user");
    jw_node_user(c, w, refs, n, in_list);
    api_jw_key(w, "lastSeen");
    api_jw_time(w, online ? hs_now_us() : n->last_seen);
    api_jw_key(w, "expiry");
    api_jw_time(w, n->expiry);
    api_jw_key(w, "preAuthKey");
    jw_node_preauthkey(c, w, refs, n);
    api_jw_key(w, "createdAt");
    api_jw_time(w, n->created_at);
    api_jw_kstr(w, "registerMethod", register_method_name(n->register_method));
    kstr_or_empty(w, "givenName", n->given_name);
    api_jw_key(w, "online");
    api_jw_bool(w, online);
    api_jw_key(w, "approvedRoutes");
    api_jw_strv(w, &n->approved_routes);
    api_jw_key(w, "availableRoutes");
    jw_available_routes(w, n);
    api_jw_key(w, "subnetRoutes");
    if (subnet)
        api_jw_strv(w, subnet);
    else
        api_jw_raw(w, "[]");
    api_jw_key(w, "tags");
    api_jw_strv(w, &n->tags);
    api_jw_obj_end(w);
}

json_t *api_json_node(struct api_call *c, const struct store_node *n, bool in_list)
{
    return api_json_node_subnet(c, n, in_list, NULL);
}

static json_t *node_json(struct api_call *c, const struct store_node *n, bool in_list,
                         bool online, const struct hs_strv *subnet)
{
    struct hs_buf b;
    struct api_jw w;

    hs_buf_init(&b, API_MAX_RESPONSE);
    api_jw_begin(&w, &b);
    jw_node(c, &w, NULL, n, in_list, online, subnet);
    return api_jw_to_json(&b);
}

json_t *api_json_node_subnet(struct api_call *c, const struct store_node *n, bool in_list,
                             const struct hs_strv *subnet)
{
    return node_json(c, n, in_list, node_online(c, n->id), subnet);
}

void api_jw_state_node(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                       const struct state_node *sn)
{
    jw_node(c, w, refs, &sn->n, false, sn->online, NULL);
}

void api_node_subnet_routes(struct state *s, const struct state_node *sn, bool with_exit,
                            struct hs_strv *out)
{
    state_node_primary_routes(s, sn, out);
    for (size_t k = 0; with_exit && k < sn->serving.n; k++)
        if (state_route_is_exit(sn->serving.v[k]))
            hs_strv_push(out, sn->serving.v[k]);
}

void api_jw_state_list_node(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                            const struct state_node *sn)
{
    struct hs_strv subnet = { 0 };

    if (sn->serving.n)
        api_node_subnet_routes(c->api->state, sn, true, &subnet);
    jw_node(c, w, refs, &sn->n, true, sn->online, &subnet);
    hs_strv_free(&subnet);
}

bool api_jw_state_nodes(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                        uint64_t user_id)
{
    struct state *s = c->api->state;
    const struct state_node *sn;

    refs->missed = false;
    api_jw_arr(w);
    state_rdlock(s);
    for (size_t i = 0; i < state_node_count(s); i++) {
        sn = state_node_at(s, i);
        /* Tagged nodes are the tags' (headscale 0.29 leaves them out of a user's list). */
        if (user_id && (sn->n.user_id != user_id || sn->n.tags.n))
            continue;
        api_jw_state_list_node(c, w, refs, sn);
    }
    state_unlock(s);
    api_jw_arr_end(w);
    return !refs->missed;
}
