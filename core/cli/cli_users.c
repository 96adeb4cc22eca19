/* users create | list | destroy | rename. Users are addressed by name (0.22: positional
 * NAME) or by id (current: -i/--identifier, -n/--name). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

static const struct cli_column user_columns[] = {
    { "ID", "id", CELL_STR, NULL },
    { "Name", "displayName", CELL_STR, NULL },
    { "Username", "name", CELL_STR, NULL },
    { "Email", "email", CELL_STR, NULL },
    { "Created", "createdAt", CELL_TIME, NULL },
};

static void set_if(json_t *obj, const char *key, const char *value)
{
    if (value && *value)
        json_object_set_new(obj, key, json_string(value));
}

int cli_cmd_users_create(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "name", ctx->args.pos[0]), *resp;
    int rc;

    set_if(body, "displayName", cli_flag_str(&ctx->args, "display-name"));
    set_if(body, "email", cli_flag_str(&ctx->args, "email"));
    set_if(body, "pictureUrl", cli_flag_str(&ctx->args, "picture-url"));
    if (cli_api(ctx, "POST", "/api/v1/user", body, &resp) < 0)
        return 1;
    rc = cli_print(ctx, json_object_get(resp, "user"), &cli_msg_user, "The user is created");
    json_decref(resp);
    return rc;
}

/* One filter at most: an id > 0 wins, then the name, then the email. */
int cli_cmd_users_list(struct cli_ctx *ctx)
{
    static const struct {
        const char *flag, *path;
    } filters[] = {
        { "identifier", "/api/v1/user?id=%s" },
        { "name", "/api/v1/user?name=%s" },
        { "email", "/api/v1/user?email=%s" },
    };
    const char *id = cli_flag_str(&ctx->args, "identifier");
    char *path = NULL;
    json_t *resp;
    int rc;

    if (id && *id && cli_user_ref_kind(id) != CLI_USER_BY_ID && !hs_streq(id, "-1"))
        return cli_fail(ctx, "invalid user identifier \"%s\"", id);
    for (size_t i = 0; i < HS_ARRAY_LEN(filters) && !path; i++) {
        const char *v = cli_flag_str(&ctx->args, filters[i].flag);
        if (v && *v && !(i == 0 && (v[0] == '-' || strspn(v, "0") == strlen(v))))
            path = cli_pathf(filters[i].path, v);
    }
    rc = cli_api(ctx, "GET", path ? path : "/api/v1/user", NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print_list(ctx, json_object_get(resp, "users"), &cli_msg_user, user_columns,
                        HS_ARRAY_LEN(user_columns));
    json_decref(resp);
    return rc;
}

/* The user named by a positional reference, -i/--identifier or -n/--name. */
static int target_user(struct cli_ctx *ctx, const char *positional, json_t **user)
{
    const char *id = cli_flag_str(&ctx->args, "identifier");
    const char *name = cli_flag_str(&ctx->args, "name");

    if (positional)
        return cli_user_find(ctx, positional, false, user);
    if (id && *id) {
        if (cli_user_ref_kind(id) == CLI_USER_BY_ID)
            return cli_user_find(ctx, id, false, user);
        cli_fail(ctx, "invalid user identifier \"%s\"", id);
        return -1;
    }
    if (name && *name)
        return cli_user_find(ctx, name, true, user);
    cli_fail(ctx, "name the user with --name or --identifier");
    return -1;
}

static int destroy(struct cli_ctx *ctx, const json_t *user)
{
    char *prompt, *path;
    json_t *resp;
    int ok, rc;

    prompt = hs_aprintf("Remove user \"%s\" (ID %s) and its pre-auth keys?",
                        hs_json_str(user, "name"), hs_json_str(user, "id"));
    ok = cli_confirm(ctx, prompt);
    free(prompt);
    if (ok < 0)
        return 1;
    if (ok == 0) {
        resp = json_pack("{s:s}", "Result", "Nothing removed: not confirmed");
        rc = cli_print(ctx, resp, NULL, "Nothing removed: not confirmed");
        json_decref(resp);
        return rc;
    }
    path = cli_pathf("/api/v1/user/%s", hs_json_str(user, "id"));
    rc = cli_api(ctx, "DELETE", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print(ctx, resp, &cli_msg_empty, "The user is removed");
    json_decref(resp);
    return rc;
}

int cli_cmd_users_destroy(struct cli_ctx *ctx)
{
    json_t *user;
    int rc;

    if (target_user(ctx, ctx->args.npos ? ctx->args.pos[0] : NULL, &user) < 0)
        return 1;
    rc = destroy(ctx, user);
    json_decref(user);
    return rc;
}

/* `rename OLD NEW` (0.22) or `rename -i ID|-n NAME -r NEW` (current). */
int cli_cmd_users_rename(struct cli_ctx *ctx)
{
    const char *old = ctx->args.npos == 2 ? ctx->args.pos[0] : NULL;
    const char *new_name = old ? ctx->args.pos[1] : cli_flag_str(&ctx->args, "new-name");
    char *path;
    json_t *user, *resp;
    int rc;

    if (ctx->args.npos == 1)
        return cli_fail(ctx, "give OLD_NAME and NEW_NAME, or --new-name with --name or "
                              "--identifier");
    if (!new_name || !*new_name)
        return cli_fail(ctx, "--new-name is required");
    if (target_user(ctx, old, &user) < 0)
        return 1;
    path = cli_pathf("/api/v1/user/%s/rename/%s", hs_json_str(user, "id"), new_name);
    json_decref(user);
    rc = cli_api(ctx, "POST", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print(ctx, json_object_get(resp, "user"), &cli_msg_user,
                   "The user has its new name");
    json_decref(resp);
    return rc;
}
