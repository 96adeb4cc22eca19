/* auth approve|reject (pending interactive logins), nodes backfillips, debug create-node. */
#include <stdlib.h>

#include "cli/cli_internal.h"

/* POST path with {"authId": --auth-id}; prints human on success ({} in machine formats). */
static int auth_verdict(struct cli_ctx *ctx, const char *path, const char *human)
{
    static const char *const required[] = { "auth-id", NULL };
    json_t *resp;
    int rc;

    if (cli_require_flags(ctx, required) < 0)
        return 1;
    if (cli_api(ctx, "POST", path,
                json_pack("{s:s}", "authId", cli_flag_str(&ctx->args, "auth-id")), &resp) < 0)
        return 1;
    rc = cli_print(ctx, resp, &cli_msg_empty, human);
    json_decref(resp);
    return rc;
}

int cli_cmd_auth_approve(struct cli_ctx *ctx)
{
    return auth_verdict(ctx, "/api/v1/auth/approve", "Login approved");
}

int cli_cmd_auth_reject(struct cli_ctx *ctx)
{
    return auth_verdict(ctx, "/api/v1/auth/reject", "Login refused");
}

/* Asks first unless --force: it renumbers nodes. Prints each change. */
int cli_cmd_nodes_backfill_ips(struct cli_ctx *ctx)
{
    json_t *resp, *changes, *c;
    struct hs_buf human;
    size_t i;
    int ok, rc;

    ok = cli_confirm(ctx, "Give nodes the addresses they lack, and take away those of a family "
                          "no prefix is configured for?");
    if (ok < 0)
        return 1;
    if (ok == 0) {
        resp = json_pack("{s:s}", "Result", "Nothing changed");
        rc = cli_print(ctx, resp, NULL, "Nothing changed");
        json_decref(resp);
        return rc;
    }
    if (cli_api(ctx, "POST", "/api/v1/node/backfillips?confirmed=true", NULL, &resp) < 0)
        return 1;
    changes = json_object_get(resp, "changes");
    hs_buf_init(&human, CLI_MAX_OUTPUT);
    hs_buf_puts(&human, json_array_size(changes) ? "Node addresses changed:"
                                                 : "Every node has the addresses it should");
    json_array_foreach(changes, i, c)
        hs_buf_appendf(&human, "\n  %s", json_string_value(c) ? json_string_value(c) : "");
    rc = cli_print(ctx, resp, &cli_msg_backfill, human.data);
    hs_buf_free(&human);
    json_decref(resp);
    return rc;
}

/* POST /api/v1/debug/node: a pending login from a made-up machine. */
int cli_cmd_debug_create_node(struct cli_ctx *ctx)
{
    static const char *const required[] = { "key", "name", "user", NULL };
    struct hs_strv routes = { 0 };
    json_t *body, *list, *resp;
    char *human;
    int rc;

    if (cli_require_flags(ctx, required) < 0)
        return 1;
    cli_flag_list(&ctx->args, "route", &routes);
    list = json_array();
    for (size_t i = 0; i < routes.n; i++)
        json_array_append_new(list, json_string(routes.v[i]));
    hs_strv_free(&routes);
    body = json_pack("{s:s, s:s, s:s, s:o}", "user", cli_flag_str(&ctx->args, "user"), "key",
                     cli_flag_str(&ctx->args, "key"), "name", cli_flag_str(&ctx->args, "name"),
                     "routes", list);
    if (cli_api(ctx, "POST", "/api/v1/debug/node", body, &resp) < 0)
        return 1;
    human = hs_aprintf("Pending login %s created: complete it with \"headscale auth register "
                       "--auth-id %s --user %s\"", cli_flag_str(&ctx->args, "key"),
                       cli_flag_str(&ctx->args, "key"), cli_flag_str(&ctx->args, "user"));
    rc = cli_print(ctx, json_object_get(resp, "node"), &cli_msg_node, human);
    free(human);
    json_decref(resp);
    return rc;
}
