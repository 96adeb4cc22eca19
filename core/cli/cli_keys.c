/* preauthkeys and apikeys. Keys are addressed by id (current) or by the key / its prefix
 * (0.22 `preauthkeys expire KEY`, `apikeys expire -p PREFIX`). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

#define AUTH_KEY_KIND "hskey-auth-"
#define API_KEY_KIND "hskey-api-"
#define PREFIX_MAX 128

/* ---- shared ---- */

static bool valid_id(const char *s)
{
    uint64_t v;
    return s && hs_parse_u64(s, UINT64_MAX, &v) == 0 && v > 0;
}

/* Prints the reply of an expire/delete call ({} from the server) or the human message. */
static int print_done(struct cli_ctx *ctx, int api_rc, json_t *resp, const char *human)
{
    int rc;

    if (api_rc < 0)
        return 1;
    rc = cli_print(ctx, resp, &cli_msg_empty, human);
    json_decref(resp);
    return rc;
}

/* -e/--expiration as an RFC 3339 time; prints the error itself. */
static json_t *expiration_json(struct cli_ctx *ctx)
{
    const char *dur = cli_flag_str(&ctx->args, "expiration");
    char when[40];

    if (cli_expiration(dur, ctx->now_us, when, sizeof(when)) < 0) {
        cli_fail(ctx, "could not parse duration \"%s\" (use e.g. 30m, 24h, 90d)", dur);
        return NULL;
    }
    return json_string(when);
}

/* The id of the element of list whose key field (masked or full) has the prefix of text. */
static const char *id_by_key(const json_t *list, const char *field, const char *kind,
                             const char *text)
{
    char want[PREFIX_MAX], have[PREFIX_MAX];
    size_t i;
    json_t *k;

    if (cli_key_prefix(kind, text, want, sizeof(want)) < 0)
        return NULL;
    json_array_foreach(list, i, k) {
        const char *shown = hs_json_str(k, field);
        if (shown && (strcmp(shown, text) == 0 ||
                      (cli_key_prefix(kind, shown, have, sizeof(have)) == 0 &&
                       strcmp(have, want) == 0)))
            return hs_json_str(k, "id");
    }
    return NULL;
}

/* ---- preauthkeys ---- */

static void pak_owner(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    const json_t *tags = json_object_get(row, "aclTags");
    const char *user = hs_json_str(cli_json_path(row, "user"), "name");
    size_t i;
    json_t *t;

    (void)ctx;
    json_array_foreach(tags, i, t)
        hs_buf_appendf(cell, "%s%s", i ? "," : "", json_is_string(t) ? json_string_value(t) : "");
    if (cell->len == 0)
        hs_buf_puts(cell, user && *user ? user : "-");
}

static const struct cli_column pak_columns[] = {
    { "ID", "id", CELL_STR, NULL },
    { "Key/Prefix", "key", CELL_STR, NULL },
    { "Reusable", "reusable", CELL_BOOL, NULL },
    { "Ephemeral", "ephemeral", CELL_BOOL, NULL },
    { "Used", "used", CELL_BOOL, NULL },
    { "Expiration", "expiration", CELL_EXPIRY, NULL },
    { "Created", "createdAt", CELL_TIME, NULL },
    { "Owner", NULL, CELL_FN, pak_owner },
};

/* -u/--user, or the deprecated -n/--namespace. */
static const char *pak_user_ref(const struct cli_ctx *ctx)
{
    const char *u = cli_flag_str(&ctx->args, "user");
    if (!u || !*u)
        u = cli_flag_str(&ctx->args, "namespace");
    return u && *u ? u : NULL;
}

static json_t *pak_create_body(struct cli_ctx *ctx, const char *user_id, struct hs_strv *tags)
{
    json_t *exp = expiration_json(ctx), *acl = json_array(), *body;

    if (!exp) {
        json_decref(acl);
        return NULL;
    }
    for (size_t i = 0; i < tags->n; i++)
        json_array_append_new(acl, json_string(tags->v[i]));
    body = json_pack("{s:b, s:b, s:o, s:o}", "reusable", cli_flag_bool(&ctx->args, "reusable"),
                     "ephemeral", cli_flag_bool(&ctx->args, "ephemeral"), "expiration", exp,
                     "aclTags", acl);
    if (user_id)
        json_object_set_new(body, "user", json_string(user_id));
    return body;
}

static int pak_create(struct cli_ctx *ctx, const char *user_id, struct hs_strv *tags)
{
    json_t *body = pak_create_body(ctx, user_id, tags), *resp, *key;
    int rc;

    if (!body || cli_api(ctx, "POST", "/api/v1/preauthkey", body, &resp) < 0)
        return 1;
    key = json_object_get(resp, "preAuthKey");
    rc = cli_print(ctx, key, &cli_msg_pre_auth_key, hs_json_str(key, "key"));
    json_decref(resp);
    return rc;
}

int cli_cmd_preauthkeys_create(struct cli_ctx *ctx)
{
    const char *ref = pak_user_ref(ctx);
    struct hs_strv tags = { 0 };
    json_t *user = NULL;
    int rc = 1;

    cli_flag_list(&ctx->args, "tags", &tags);
    if (!ref && tags.n == 0)
        cli_fail(ctx, "--user or --tags is required to create a preauthkey");
    else if (!ref || cli_user_find(ctx, ref, false, &user) == 0)
        rc = pak_create(ctx, hs_json_str(user, "id"), &tags);
    json_decref(user);
    hs_strv_free(&tags);
    return rc;
}

/* All keys, or only those of -u when given. *out is the list to print. */
static int pak_fetch(struct cli_ctx *ctx, json_t **resp, json_t **out)
{
    const char *ref = pak_user_ref(ctx), *id;
    json_t *user = NULL, *keys, *k;
    size_t i;

    if (cli_api(ctx, "GET", "/api/v1/preauthkey", NULL, resp) < 0)
        return -1;
    keys = json_object_get(*resp, "preAuthKeys");
    *out = json_array();
    if (ref && cli_user_find(ctx, ref, false, &user) < 0) {
        json_decref(*out);
        json_decref(*resp);
        return -1;
    }
    id = hs_json_str(user, "id");
    json_array_foreach(keys, i, k)
        if (!id || hs_streq(hs_json_str(json_object_get(k, "user"), "id"), id))
            json_array_append(*out, k);
    json_decref(user);
    return 0;
}

int cli_cmd_preauthkeys_list(struct cli_ctx *ctx)
{
    json_t *resp, *keys;
    int rc;

    if (pak_fetch(ctx, &resp, &keys) < 0)
        return 1;
    rc = cli_print_list(ctx, keys, &cli_msg_pre_auth_key, pak_columns, HS_ARRAY_LEN(pak_columns));
    json_decref(keys);
    json_decref(resp);
    return rc;
}

/* The key's id from -i/--id, or by looking the positional KEY's prefix up in the list. */
static char *pak_target(struct cli_ctx *ctx)
{
    const char *id = cli_flag_str(&ctx->args, "id"), *found;
    json_t *resp, *keys;
    char *out;

    if (id && *id) {
        if (valid_id(id))
            return hs_strdup(id);
        cli_fail(ctx, "invalid preauthkey ID \"%s\"", id);
        return NULL;
    }
    if (ctx->args.npos == 0) {
        cli_fail(ctx, "name the key with --id, or give the key itself");
        return NULL;
    }
    if (pak_fetch(ctx, &resp, &keys) < 0)
        return NULL;
    found = id_by_key(keys, "key", AUTH_KEY_KIND, ctx->args.pos[0]);
    out = hs_strdup(found);
    if (!found)
        cli_fail(ctx, "no pre-auth key matches \"%s\"", ctx->args.pos[0]);
    json_decref(keys);
    json_decref(resp);
    return out;
}

int cli_cmd_preauthkeys_expire(struct cli_ctx *ctx)
{
    char *id = pak_target(ctx);
    json_t *resp = NULL;
    int rc;

    if (!id)
        return 1;
    rc = cli_api(ctx, "POST", "/api/v1/preauthkey/expire", json_pack("{s:s}", "id", id), &resp);
    free(id);
    return print_done(ctx, rc, resp, "The key can no longer be used");
}

int cli_cmd_preauthkeys_delete(struct cli_ctx *ctx)
{
    char *id = pak_target(ctx), *path;
    json_t *resp = NULL;
    int rc;

    if (!id)
        return 1;
    path = cli_pathf("/api/v1/preauthkey?id=%s", id);
    rc = cli_api(ctx, "DELETE", path, NULL, &resp);
    free(path);
    free(id);
    return print_done(ctx, rc, resp, "The key is removed");
}

/* ---- apikeys ---- */

static const struct cli_column api_columns[] = {
    { "ID", "id", CELL_STR, NULL },
    { "Prefix", "prefix", CELL_STR, NULL },
    { "Expiration", "expiration", CELL_EXPIRY, NULL },
    { "Created", "createdAt", CELL_TIME, NULL },
};

int cli_cmd_apikeys_create(struct cli_ctx *ctx)
{
    json_t *exp = expiration_json(ctx), *resp;
    int rc;

    if (!exp || cli_api(ctx, "POST", "/api/v1/apikey", json_pack("{s:o}", "expiration", exp),
                        &resp) < 0)
        return 1;
    rc = cli_print(ctx, json_object_get(resp, "apiKey"), NULL, hs_json_str(resp, "apiKey"));
    json_decref(resp);
    return rc;
}

int cli_cmd_apikeys_list(struct cli_ctx *ctx)
{
    json_t *resp;
    int rc;

    if (cli_api(ctx, "GET", "/api/v1/apikey", NULL, &resp) < 0)
        return 1;
    rc = cli_print_list(ctx, json_object_get(resp, "apiKeys"), &cli_msg_api_key, api_columns,
                        HS_ARRAY_LEN(api_columns));
    json_decref(resp);
    return rc;
}

/* Exactly one of -p/--prefix and -i/--id. Fills prefix (normalized) or id. */
static int api_select(struct cli_ctx *ctx, char *prefix, size_t size, const char **id)
{
    const char *p = cli_flag_str(&ctx->args, "prefix");
    bool has_p = p && *p;

    *id = cli_flag_str(&ctx->args, "id");
    if (*id && !**id)
        *id = NULL;
    if (!has_p && !*id)
        cli_fail(ctx, "name the key with --id or --prefix");
    else if (has_p && *id)
        cli_fail(ctx, "name the key with --id or --prefix, not both");
    else if (*id && !valid_id(*id))
        cli_fail(ctx, "invalid api key ID \"%s\"", *id);
    else if (has_p && cli_key_prefix(API_KEY_KIND, p, prefix, size) < 0)
        cli_fail(ctx, "invalid api key prefix \"%s\"", p);
    else
        return 0;
    return -1;
}

int cli_cmd_apikeys_expire(struct cli_ctx *ctx)
{
    char prefix[PREFIX_MAX];
    const char *id;
    json_t *resp = NULL, *body;
    int rc;

    if (api_select(ctx, prefix, sizeof(prefix), &id) < 0)
        return 1;
    body = id ? json_pack("{s:s}", "id", id) : json_pack("{s:s}", "prefix", prefix);
    rc = cli_api(ctx, "POST", "/api/v1/apikey/expire", body, &resp);
    return print_done(ctx, rc, resp, "The key can no longer be used");
}

/* DELETE addresses the key by prefix in the path: an id is resolved through the list. */
static int api_prefix_of(struct cli_ctx *ctx, const char *id, char *prefix, size_t size)
{
    json_t *resp, *k;
    size_t i;
    int rc = -1;

    if (cli_api(ctx, "GET", "/api/v1/apikey", NULL, &resp) < 0)
        return -1;
    json_array_foreach(json_object_get(resp, "apiKeys"), i, k)
        if (hs_streq(hs_json_str(k, "id"), id))
            rc = cli_key_prefix(API_KEY_KIND, hs_json_str(k, "prefix"), prefix, size);
    if (rc < 0)
        cli_fail(ctx, "api key %s not found", id);
    json_decref(resp);
    return rc;
}

int cli_cmd_apikeys_delete(struct cli_ctx *ctx)
{
    char prefix[PREFIX_MAX], *path;
    const char *id;
    json_t *resp = NULL;
    int rc;

    if (api_select(ctx, prefix, sizeof(prefix), &id) < 0 ||
        (id && api_prefix_of(ctx, id, prefix, sizeof(prefix)) < 0))
        return 1;
    path = cli_pathf("/api/v1/apikey/%s", prefix);
    rc = cli_api(ctx, "DELETE", path, NULL, &resp);
    free(path);
    return print_done(ctx, rc, resp, "The key is removed");
}
