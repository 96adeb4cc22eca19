/* nodes list (later: register, delete, expire, rename, move, tag, routes). */
#include <stdlib.h>

#include "cli/cli_internal.h"

static void node_key(const json_t *row, const char *field, struct hs_buf *cell)
{
    char s[16];
    cli_key_short(hs_json_str(row, field), s, sizeof(s));
    hs_buf_puts(cell, s);
}

static void node_mkey(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    (void)ctx;
    node_key(row, "machineKey", cell);
}

static void node_nkey(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    (void)ctx;
    node_key(row, "nodeKey", cell);
}

static void node_ips(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    size_t i;
    json_t *ip;

    (void)ctx;
    json_array_foreach(json_object_get(row, "ipAddresses"), i, ip)
        hs_buf_appendf(cell, "%s%s", i ? ", " : "", json_is_string(ip) ? json_string_value(ip) : "");
}

static void node_ephemeral(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    (void)ctx;
    hs_buf_puts(cell, json_is_true(cli_json_path(row, "preAuthKey.ephemeral")) ? "true" : "false");
}

static void node_expiration(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    char human[40];
    int64_t us;

    (void)ctx;
    if (!cli_json_time(json_object_get(row, "expiry"), &us)) {
        hs_buf_puts(cell, "N/A");
        return;
    }
    hs_format_human(us, human, sizeof(human));
    hs_buf_puts(cell, human);
}

static void node_online(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    bool on = json_is_true(json_object_get(row, "online"));
    cli_colour(ctx, on ? CLI_GREEN : CLI_RED, on ? "online" : "offline", cell);
}

static void node_expired(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    int64_t us;
    bool expired = cli_json_time(json_object_get(row, "expiry"), &us) && us <= ctx->now_us;
    cli_colour(ctx, expired ? CLI_RED : CLI_GREEN, expired ? "yes" : "no", cell);
}

/* 0.22's tag columns. The current Node only has "tags" (all of them valid); a server that
 * still sends forcedTags/invalidTags/validTags gets them shown as such. */
static void node_valid_tags(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    const json_t *v = json_object_get(row, "validTags");
    size_t i;
    json_t *t;

    json_array_foreach(v ? v : json_object_get(row, "tags"), i, t) {
        hs_buf_puts(cell, i ? "," : "");
        cli_colour(ctx, CLI_GREEN, json_is_string(t) ? json_string_value(t) : "", cell);
    }
}

static const struct cli_column node_columns[] = {
    { "ID", "id", CELL_STR, NULL },
    { "Hostname", "name", CELL_STR, NULL },
    { "Name", "givenName", CELL_STR, NULL },
    { "MachineKey", NULL, CELL_FN, node_mkey },
    { "NodeKey", NULL, CELL_FN, node_nkey },
    { "User", "user.name", CELL_STR, NULL },
    { "Tags", "tags", CELL_STRV, NULL },
    { "IP addresses", NULL, CELL_FN, node_ips },
    { "Ephemeral", NULL, CELL_FN, node_ephemeral },
    { "Last seen", "lastSeen", CELL_TIME, NULL },
    { "Expiration", NULL, CELL_FN, node_expiration },
    { "Connected", NULL, CELL_FN, node_online },
    { "Expired", NULL, CELL_FN, node_expired },
    /* with -t/--tags */
    { "ForcedTags", "forcedTags", CELL_STRV, NULL },
    { "InvalidTags", "invalidTags", CELL_STRV, NULL },
    { "ValidTags", NULL, CELL_FN, node_valid_tags },
};

#define NODE_BASE_COLUMNS 13

/* GET /api/v1/node?user= takes a user name; a numeric -u is an id and is looked up first. */
static char *nodes_path(struct cli_ctx *ctx)
{
    const char *ref = cli_flag_str(&ctx->args, "user");
    json_t *user;
    char *path;

    if (!ref || !*ref)
        ref = cli_flag_str(&ctx->args, "namespace");
    if (!ref || !*ref)
        return hs_strdup("/api/v1/node");
    if (cli_user_ref_kind(ref) == CLI_USER_BY_NAME)
        return cli_pathf("/api/v1/node?user=%s", ref);
    if (cli_user_find(ctx, ref, false, &user) < 0)
        return NULL;
    path = cli_pathf("/api/v1/node?user=%s", hs_json_str(user, "name"));
    json_decref(user);
    return path;
}

int cli_cmd_nodes_list(struct cli_ctx *ctx)
{
    size_t ncols = cli_flag_bool(&ctx->args, "tags") ? HS_ARRAY_LEN(node_columns)
                                                      : NODE_BASE_COLUMNS;
    char *path = nodes_path(ctx);
    json_t *resp;
    int rc;

    if (!path)
        return 1;
    rc = cli_api(ctx, "GET", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print_list(ctx, json_object_get(resp, "nodes"), node_columns, ncols);
    json_decref(resp);
    return rc;
}
