/* nodes list | list-routes | register | delete | expire | rename | move | tag |
 * approve-routes, and auth register. Nodes are addressed by -i/--identifier (a numeric ID);
 * users by name or ID (-u/--user, 0.22's hidden -n/--namespace), which the server resolves.
 * Like cobra, a missing required flag or a malformed ID prints the usage and fails before
 * any request is made. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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
    rc = cli_print_list(ctx, json_object_get(resp, "nodes"), &cli_msg_node, node_columns,
                        ncols);
    json_decref(resp);
    return rc;
}

/* ---- argument checks (cobra's, before Run) ---- */

/* "Error: msg" and the command's usage on stderr; exit status 1. */
static int usage_fail(struct cli_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_fail(struct cli_ctx *ctx, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(ctx->err, "Error: %s\n", msg);
    cli_help(&ctx->args, ctx->err);
    return 1;
}

/* -u/--user, or the deprecated -n/--namespace where the command has it. */
static const char *user_ref(const struct cli_ctx *ctx)
{
    const char *u = cli_flag_str(&ctx->args, "user");
    if (!u || !*u)
        u = cli_flag_str(&ctx->args, "namespace");
    return u && *u ? u : NULL;
}

static bool flag_set(const struct cli_ctx *ctx, const char *name)
{
    if (strcmp(name, "user") == 0 && cli_flag_given(&ctx->args, "namespace"))
        return true;
    return cli_flag_given(&ctx->args, name);
}

int cli_require_flags(struct cli_ctx *ctx, const char *const *names)
{
    struct hs_buf missing;
    int rc = 0;

    hs_buf_init(&missing, 256);
    for (; *names; names++)
        if (!flag_set(ctx, *names))
            hs_buf_appendf(&missing, "%s--%s", missing.len ? ", " : "", *names);
    if (missing.len) {
        usage_fail(ctx, "%s %s required", missing.data, strchr(missing.data, ',') ? "are" : "is");
        rc = -1;
    }
    hs_buf_free(&missing);
    return rc;
}

/* -i/--identifier as cobra's Uint64 flag. *id is NULL when the flag is absent and optional. */
static int node_id(struct cli_ctx *ctx, bool required, const char **id)
{
    return cli_uint_flag(ctx, "identifier", 'i', "a node ID", required, id);
}

int cli_uint_flag(struct cli_ctx *ctx, const char *name, char shorthand, const char *what,
                  bool required, const char **out)
{
    const char *names[] = { name, NULL };
    const char *v = cli_flag_str(&ctx->args, name);
    uint64_t n;

    *out = NULL;
    if (required && cli_require_flags(ctx, names) < 0)
        return -1;
    if (!v)
        return 0;
    if (hs_parse_u64(v, UINT64_MAX, &n) < 0) {
        usage_fail(ctx, "-%c/--%s: \"%s\" is not %s", shorthand, name, v, what);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- requests answered with {node} ---- */

/* path is freed; body is stolen. Prints the node (machine formats) or human. */
static int node_call(struct cli_ctx *ctx, char *path, json_t *body, const char *human)
{
    json_t *resp;
    int rc;

    rc = cli_api(ctx, "POST", path, body, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print(ctx, json_object_get(resp, "node"), &cli_msg_node, human);
    json_decref(resp);
    return rc;
}

/* Names the node by its given name. */
static int print_registered(struct cli_ctx *ctx, char *path, json_t *body)
{
    const json_t *node;
    const char *name;
    json_t *resp;
    char *human;
    int rc;

    rc = cli_api(ctx, "POST", path, body, &resp);
    free(path);
    if (rc < 0)
        return 1;
    node = json_object_get(resp, "node");
    name = hs_json_str(node, "givenName");
    human = hs_aprintf("Login finished: node %s joined the tailnet", name ? name : "");
    rc = cli_print(ctx, node, &cli_msg_node, human);
    free(human);
    json_decref(resp);
    return rc;
}

/* POST /api/v1/node/register?user=&key= (deprecated since 0.29 for `auth register`). */
int cli_cmd_nodes_register(struct cli_ctx *ctx)
{
    static const char *const required[] = { "key", "user", NULL };

    if (cli_require_flags(ctx, required) < 0)
        return 1;
    return print_registered(ctx,
                            cli_pathf("/api/v1/node/register?user=%s&key=%s",
                                      user_ref(ctx) ? user_ref(ctx) : "",
                                      cli_flag_str(&ctx->args, "key")),
                            NULL);
}

/* POST /api/v1/auth/register {user, authId} (0.29). */
int cli_cmd_auth_register(struct cli_ctx *ctx)
{
    static const char *const required[] = { "auth-id", "user", NULL };
    const char *user = user_ref(ctx);

    if (cli_require_flags(ctx, required) < 0)
        return 1;
    return print_registered(ctx, hs_strdup("/api/v1/auth/register"),
                            json_pack("{s:s, s:s}", "user", user ? user : "", "authId",
                                      cli_flag_str(&ctx->args, "auth-id")));
}

/* No flags: expire now. -e: that time (future → "expiration updated"). -d: never expire. */
int cli_cmd_nodes_expire(struct cli_ctx *ctx)
{
    const char *id, *expiry = cli_flag_str(&ctx->args, "expiry");
    bool disable = cli_flag_bool(&ctx->args, "disable");
    int64_t when = ctx->now_us;
    const char *human = "The node is logged out: it must log in again";
    json_t *body = json_object();
    char text[40];

    if (node_id(ctx, true, &id) < 0)
        goto fail;
    if (expiry && *expiry && disable) {
        cli_fail(ctx, "cannot use both --expiry and --disable flags together");
        goto fail;
    }
    if (expiry && *expiry) {
        if (hs_parse_rfc3339(expiry, &when) < 0) {
            cli_fail(ctx, "invalid expiry \"%s\": use RFC 3339, e.g. 2025-08-27T10:00:00Z", expiry);
            goto fail;
        }
        hs_format_rfc3339(when, text, sizeof(text));
        json_object_set_new(body, "expiry", json_string(text));
        if (when > ctx->now_us)
            human = "The node's key expiry is set";
    }
    if (disable) {
        json_object_set_new(body, "disableExpiry", json_true());
        human = "The node's key no longer expires";
    }
    return node_call(ctx, cli_pathf("/api/v1/node/%s/expire", id), body, human);
fail:
    json_decref(body);
    return 1;
}

int cli_cmd_nodes_rename(struct cli_ctx *ctx)
{
    const char *id;

    if (node_id(ctx, true, &id) < 0)
        return 1;
    return node_call(ctx, cli_pathf("/api/v1/node/%s/rename/%s", id, ctx->args.pos[0]), NULL,
                     "The node has its new name");
}

/* 0.22 path shape: POST .../user?user=REF; the server takes a name or an ID. */
int cli_cmd_nodes_move(struct cli_ctx *ctx)
{
    static const char *const required[] = { "identifier", "user", NULL };
    const char *id;

    if (cli_require_flags(ctx, required) < 0 || node_id(ctx, true, &id) < 0)
        return 1;
    return node_call(ctx, cli_pathf("/api/v1/node/%s/user?user=%s", id, user_ref(ctx)), NULL,
                     "The node belongs to its new user");
}

static json_t *list_flag_json(const struct cli_ctx *ctx, const char *name)
{
    struct hs_strv v = { 0 };
    json_t *arr = json_array();

    cli_flag_list(&ctx->args, name, &v);
    for (size_t i = 0; i < v.n; i++)
        json_array_append_new(arr, json_string(v.v[i]));
    hs_strv_free(&v);
    return arr;
}

/* Replaces the node's tags; no -t sends an empty list (the server decides if that is valid). */
int cli_cmd_nodes_tag(struct cli_ctx *ctx)
{
    const char *id;

    if (node_id(ctx, true, &id) < 0)
        return 1;
    return node_call(ctx, cli_pathf("/api/v1/node/%s/tags", id),
                     json_pack("{s:o}", "tags", list_flag_json(ctx, "tags")),
                     "The node has its new tags");
}

/* Replaces the approved routes; -r "" clears them. */
int cli_cmd_nodes_approve_routes(struct cli_ctx *ctx)
{
    const char *id;

    if (node_id(ctx, true, &id) < 0)
        return 1;
    return node_call(ctx, cli_pathf("/api/v1/node/%s/approve_routes", id),
                     json_pack("{s:o}", "routes", list_flag_json(ctx, "routes")),
                     "The node's approved routes are set");
}

/* ---- delete ---- */

static int node_delete(struct cli_ctx *ctx, const char *id)
{
    char *path = cli_pathf("/api/v1/node/%s", id);
    json_t *resp;
    int rc;

    rc = cli_api(ctx, "DELETE", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    json_decref(resp);
    resp = json_pack("{s:s}", "Result", "The node is removed");
    rc = cli_print(ctx, resp, NULL, "The node is removed");
    json_decref(resp);
    return rc;
}

/* Looks the node up first (an unknown ID fails here), then asks unless --force. */
int cli_cmd_nodes_delete(struct cli_ctx *ctx)
{
    const char *id, *name;
    char *path, *prompt;
    json_t *resp, *declined;
    int ok, rc;

    if (node_id(ctx, true, &id) < 0)
        return 1;
    path = cli_pathf("/api/v1/node/%s", id);
    rc = cli_api(ctx, "GET", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    name = hs_json_str(json_object_get(resp, "node"), "name");
    prompt = hs_aprintf("Remove node %s from the tailnet?", name ? name : id);
    json_decref(resp);
    ok = cli_confirm(ctx, prompt);
    free(prompt);
    if (ok < 0)
        return 1;
    if (ok > 0)
        return node_delete(ctx, id);
    declined = json_pack("{s:s}", "Result", "Nothing removed: not confirmed");
    rc = cli_print(ctx, declined, NULL, "Nothing removed: not confirmed");
    json_decref(declined);
    return rc;
}

/* ---- list-routes ---- */

static bool has_routes(const json_t *node)
{
    return json_array_size(json_object_get(node, "approvedRoutes")) > 0 ||
           json_array_size(json_object_get(node, "availableRoutes")) > 0 ||
           json_array_size(json_object_get(node, "subnetRoutes")) > 0;
}

/* The nodes having any route: all of them, or the one of -i. From the list, as headscale 0.29
 * does: only lists fill subnetRoutes. An unknown -i is an error (0.29 then listed all). */
static int routes_fetch(struct cli_ctx *ctx, const char *id, json_t **out)
{
    json_t *resp, *n;
    bool found = false;
    size_t i;

    if (cli_api(ctx, "GET", "/api/v1/node", NULL, &resp) < 0)
        return -1;
    *out = json_array();
    json_array_foreach(json_object_get(resp, "nodes"), i, n) {
        bool match = !id || hs_streq(hs_json_str(n, "id"), id);
        found |= match;
        if (match && has_routes(n))
            json_array_append(*out, n);
    }
    json_decref(resp);
    if (id && !found) {
        json_decref(*out);
        cli_fail(ctx, "node %s not found", id);
        return -1;
    }
    return 0;
}

static const char *route_at(const json_t *node, const char *field, size_t i)
{
    const json_t *v = json_array_get(json_object_get(node, field), i);
    return json_is_string(v) ? json_string_value(v) : "";
}

/* pterm prints a multi-line cell (one prefix per line) as extra rows with the other cells
 * blank: the same layout, built here row by row. */
static void routes_rows(struct cli_table *t, const json_t *node)
{
    static const char *const fields[] = { "approvedRoutes", "availableRoutes", "subnetRoutes" };
    size_t lines = 1;

    for (size_t f = 0; f < HS_ARRAY_LEN(fields); f++)
        if (json_array_size(json_object_get(node, fields[f])) > lines)
            lines = json_array_size(json_object_get(node, fields[f]));
    for (size_t l = 0; l < lines; l++) {
        cli_table_add(t, l ? "" : hs_json_str(node, "id"));
        cli_table_add(t, l ? "" : hs_json_str(node, "givenName"));
        for (size_t f = 0; f < HS_ARRAY_LEN(fields); f++)
            cli_table_add(t, route_at(node, fields[f], l));
    }
}

static int routes_table(struct cli_ctx *ctx, const json_t *nodes)
{
    static const char *const header[] = { "ID", "Hostname", "Approved", "Available",
                                          "Serving (Primary)" };
    struct cli_table t;
    struct hs_buf b;
    size_t i;
    json_t *n;
    int rc;

    cli_table_init(&t, header, HS_ARRAY_LEN(header));
    json_array_foreach(nodes, i, n)
        routes_rows(&t, n);
    hs_buf_init(&b, CLI_MAX_OUTPUT);
    rc = cli_table_render(&t, ctx->color, &b);
    if (rc == 0)
        fputs(b.data, ctx->out);
    hs_buf_free(&b);
    cli_table_free(&t);
    return rc < 0 ? cli_fail(ctx, "output too large") : 0;
}

int cli_cmd_nodes_list_routes(struct cli_ctx *ctx)
{
    const char *id;
    json_t *nodes;
    int rc;

    if (node_id(ctx, false, &id) < 0)
        return 1;
    if (id && strspn(id, "0") == strlen(id)) /* cobra's default 0: all nodes */
        id = NULL;
    if (routes_fetch(ctx, id, &nodes) < 0)
        return 1;
    /* headscale filters into a new slice: no routes print as [], not as a nil list's null */
    if (ctx->fmt == CLI_FMT_HUMAN)
        rc = routes_table(ctx, nodes);
    else
        rc = json_array_size(nodes) ? cli_print_rows(ctx, nodes, &cli_msg_node)
                                    : cli_print(ctx, nodes, NULL, NULL);
    json_decref(nodes);
    return rc;
}
