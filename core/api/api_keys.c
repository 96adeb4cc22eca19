#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

#define API_KEY_DEFAULT_EXPIRY_US (90 * 86400 * HS_USEC_PER_SEC)

/* An expiration in the past would create a key that is dead on arrival. */
static int check_future(struct api_call *c, int64_t expiration)
{
    if (expiration && expiration <= hs_now_us()) {
        api_error(c, 400, "expiration must be in the future");
        return -EINVAL;
    }
    return 0;
}

void api_preauthkey_list(struct api_call *c)
{
    const char *user = api_query(c, "user");
    struct store_user u = { 0 };
    struct store_preauthkey *v;
    struct api_refs refs;
    struct api_jw w;
    size_t n;
    int rc;

    if (user && api_lookup_user(c, user, &u) < 0)
        return;
    c->v022 = user && hs_streq(user, u.name); /* 0.22.3 named the user: its shapes */
    rc = store_preauthkey_list(c->api->st, u.id, &v, &n);
    store_user_free(&u);
    if (rc == 0 && (rc = api_refs_load(c, false, &refs)) < 0)
        store_preauthkey_list_free(v, n);
    if (rc < 0) {
        api_store_error(c, rc, "pre-auth key");
        return;
    }
    api_reply_begin(c, &w);
    api_jw_obj(&w);
    api_jw_key(&w, "preAuthKeys");
    api_jw_preauthkeys(c, &w, &refs, v, n);
    api_jw_obj_end(&w);
    api_reply_end(c, &w);
    api_refs_free(&refs);
    store_preauthkey_list_free(v, n);
}

void api_preauthkey_create(struct api_call *c)
{
    json_t *body = api_body(c), *uv;
    struct store_preauthkey in = { 0 }, out;
    struct store_user u = { 0 };
    char full[AUTH_KEY_TEXT_MAX], idbuf[32];
    const char *user = NULL;
    int rc;

    if (!body)
        return;
    /* 0.29 sends the user id as a string; 0.22 sent the name; accept numbers too. */
    uv = json_object_get(body, "user");
    if (json_is_integer(uv)) {
        snprintf(idbuf, sizeof(idbuf), "%lld", (long long)json_integer_value(uv));
        user = idbuf;
    } else if (api_field_str(c, body, "user", &user) < 0) {
        return;
    }
    if (api_field_bool(c, body, "reusable", &in.reusable) ||
        api_field_bool(c, body, "ephemeral", &in.ephemeral) ||
        api_field_time(c, body, "expiration", &in.expiration) ||
        check_future(c, in.expiration) || api_field_tags(c, body, "aclTags", &in.tags) < 0)
        return;
    if ((!user || !*user) && in.tags.n == 0) {
        api_error(c, 400, "a pre-auth key needs a user or at least one tag");
        goto out;
    }
    if (user && *user) {
        if (api_lookup_user(c, user, &u) < 0)
            goto out;
        in.user_id = u.id;
        c->v022 = hs_streq(user, u.name); /* 0.22.3 named the user: its shapes */
    }
    if ((rc = auth_preauthkey_create(c->api->auth, &in, full, &out)) < 0) {
        api_store_error(c, rc, "pre-auth key");
        goto out;
    }
    api_reply(c, 200, json_pack("{s:o}", "preAuthKey", api_json_preauthkey(c, &out, full)));
    sodium_memzero(full, sizeof(full));
    store_preauthkey_free(&out);
out:
    store_user_free(&u);
    hs_strv_free(&in.tags);
}

/* 0.22 named the key's user too: a key of somebody else is not found. */
static int check_key_owner(struct api_call *c, json_t *body, const struct store_preauthkey *k)
{
    const char *user = NULL;
    struct store_user u;

    if (api_field_str(c, body, "user", &user) < 0)
        return -EINVAL;
    if (!user || !*user)
        return 0;
    if (api_lookup_user(c, user, &u) < 0)
        return -ENOENT;
    if (u.id != k->user_id) {
        api_error(c, 404, "user \"%s\" has no such pre-auth key", u.name);
        store_user_free(&u);
        return -ENOENT;
    }
    store_user_free(&u);
    return 0;
}

/* {id} (0.28+), or {user, key} with the full key or its prefix (0.22). */
static int find_preauthkey(struct api_call *c, json_t *body, uint64_t *id)
{
    const char *key = NULL;
    char prefix[AUTH_PREFIX_LEN + 1];
    struct store_preauthkey k;
    int rc;

    if (api_field_id(c, body, "id", id) < 0 || api_field_str(c, body, "key", &key) < 0)
        return -EINVAL;
    if (*id)
        return 0;
    if (!key) {
        api_error(c, 400, "field \"id\" is required");
        return -EINVAL;
    }
    if (auth_cred_prefix(AUTH_CRED_PREAUTH, key, prefix) < 0) {
        api_error(c, 400, "\"%.16s...\" is not a pre-auth key", key);
        return -EINVAL;
    }
    if ((rc = store_preauthkey_get_by_prefix(c->api->st, prefix, &k)) < 0) {
        api_store_error(c, rc, "pre-auth key");
        return rc;
    }
    rc = check_key_owner(c, body, &k);
    if (rc == 0)
        *id = k.id;
    store_preauthkey_free(&k);
    return rc;
}

void api_preauthkey_expire(struct api_call *c)
{
    json_t *body = api_body(c);
    uint64_t id = 0;
    int rc;

    if (!body || find_preauthkey(c, body, &id) < 0)
        return;
    if ((rc = store_preauthkey_expire(c->api->st, id, hs_now_us())) < 0)
        api_store_error(c, rc, "pre-auth key");
    else
        api_reply(c, 200, json_object());
}

void api_preauthkey_delete(struct api_call *c)
{
    uint64_t id;
    int rc;

    if (!api_query(c, "id")) {
        api_error(c, 400, "query parameter \"id\" is required");
        return;
    }
    if (api_parse_id(c, api_query(c, "id"), "pre-auth key", &id) < 0)
        return;
    if ((rc = store_preauthkey_delete(c->api->st, id)) < 0)
        api_store_error(c, rc, "pre-auth key");
    else
        api_reply(c, 200, json_object());
}

void api_apikey_list(struct api_call *c)
{
    struct store_apikey *v;
    json_t *arr;
    size_t n;
    int rc;

    if ((rc = store_apikey_list(c->api->st, &v, &n)) < 0) {
        api_store_error(c, rc, "API key");
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_json_apikey(&v[i]));
    free(v);
    api_reply(c, 200, json_pack("{s:o}", "apiKeys", arr));
}

void api_apikey_create(struct api_call *c)
{
    json_t *body = api_body(c);
    int64_t expiration = 0;
    struct store_apikey out;
    char full[AUTH_KEY_TEXT_MAX];
    int rc;

    if (!body || api_field_time(c, body, "expiration", &expiration) ||
        check_future(c, expiration))
        return;
    if (!expiration)
        expiration = hs_now_us() + API_KEY_DEFAULT_EXPIRY_US;
    if ((rc = auth_apikey_create(c->api->auth, expiration, full, &out)) < 0) {
        api_store_error(c, rc, "API key");
        return;
    }
    api_reply(c, 200, json_pack("{s:s}", "apiKey", full));
    sodium_memzero(full, sizeof(full));
}

/* Exactly one of a prefix (full key, masked prefix or bare prefix) and an id. */
static int find_apikey(struct api_call *c, const char *prefix_text, uint64_t id,
                       uint64_t *out)
{
    char prefix[AUTH_PREFIX_LEN + 1];
    struct store_apikey k;
    int rc;

    if ((prefix_text && id) || (!prefix_text && !id)) {
        api_error(c, 400, "give exactly one of an API key prefix and an id");
        return -EINVAL;
    }
    if (id) {
        *out = id;
        return 0;
    }
    if (auth_cred_prefix(AUTH_CRED_API, prefix_text, prefix) < 0) {
        api_error(c, 400, "\"%.24s\" is not an API key prefix", prefix_text);
        return -EINVAL;
    }
    if ((rc = store_apikey_get_by_prefix(c->api->st, prefix, &k)) < 0) {
        api_store_error(c, rc, "API key");
        return rc;
    }
    *out = k.id;
    return 0;
}

void api_apikey_expire(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *prefix = NULL;
    uint64_t id = 0, target;
    int rc;

    if (!body || api_field_str(c, body, "prefix", &prefix) || api_field_id(c, body, "id", &id))
        return;
    if (find_apikey(c, prefix && *prefix ? prefix : NULL, id, &target) < 0)
        return;
    if ((rc = store_apikey_expire(c->api->st, target, hs_now_us())) < 0)
        api_store_error(c, rc, "API key");
    else
        api_reply(c, 200, json_object());
}

void api_apikey_delete(struct api_call *c)
{
    const char *idq = api_query(c, "id");
    uint64_t id = 0, target;
    int rc;

    if (idq && api_parse_id(c, idq, "API key", &id) < 0)
        return;
    if (find_apikey(c, hs_streq(c->args[0], "-") ? NULL : c->args[0], id, &target) < 0)
        return;
    if ((rc = store_apikey_delete(c->api->st, target)) < 0)
        api_store_error(c, rc, "API key");
    else
        api_reply(c, 200, json_object());
}
