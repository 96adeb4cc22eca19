/* routes list | enable | disable | delete: headscale 0.22.3's route commands, kept for the
 * scripts written against them. Routes are addressed by the route id `routes list` shows;
 * the current way is `nodes list-routes` / `nodes approve-routes` (both change the same
 * approval). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

static void route_primary(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell)
{
    const char *p = hs_json_str(row, "prefix");

    (void)ctx;
    if (hs_streq(p, "0.0.0.0/0") || hs_streq(p, "::/0"))
        hs_buf_puts(cell, "-"); /* exit routes have no primary */
    else
        hs_buf_puts(cell, json_is_true(json_object_get(row, "isPrimary")) ? "true" : "false");
}

static const struct cli_column route_columns[] = {
    { "ID", "id", CELL_STR, NULL },
    { "Machine", "machine.givenName", CELL_STR, NULL },
    { "Prefix", "prefix", CELL_STR, NULL },
    { "Advertised", "advertised", CELL_BOOL, NULL },
    { "Enabled", "enabled", CELL_BOOL, NULL },
    { "Primary", NULL, CELL_FN, route_primary },
};

/* All routes, or those of the node -i names (0 = all, cobra's default). */
int cli_cmd_routes_list(struct cli_ctx *ctx)
{
    const char *id;
    char *path;
    json_t *resp;
    int rc;

    if (cli_uint_flag(ctx, "identifier", 'i', "an ID", false, &id) < 0)
        return 1;
    if (id && strspn(id, "0") == strlen(id))
        id = NULL;
    path = id ? cli_pathf("/api/v1/machine/%s/routes", id) : hs_strdup("/api/v1/routes");
    rc = cli_api(ctx, "GET", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print_list(ctx, json_object_get(resp, "routes"), &cli_msg_route, route_columns,
                        HS_ARRAY_LEN(route_columns));
    json_decref(resp);
    return rc;
}

static int route_call(struct cli_ctx *ctx, const char *method, const char *fmt,
                      const char *human)
{
    const char *id;
    char *path;
    json_t *resp;
    int rc;

    if (cli_uint_flag(ctx, "route", 'r', "an ID", true, &id) < 0)
        return 1;
    path = cli_pathf(fmt, id);
    rc = cli_api(ctx, method, path, NULL, &resp);
    free(path);
    if (rc < 0)
        return 1;
    rc = cli_print(ctx, resp, &cli_msg_empty, human);
    json_decref(resp);
    return rc;
}

int cli_cmd_routes_enable(struct cli_ctx *ctx)
{
    return route_call(ctx, "POST", "/api/v1/routes/%s/enable", "Route enabled");
}

int cli_cmd_routes_disable(struct cli_ctx *ctx)
{
    return route_call(ctx, "POST", "/api/v1/routes/%s/disable", "Route disabled");
}

int cli_cmd_routes_delete(struct cli_ctx *ctx)
{
    return route_call(ctx, "DELETE", "/api/v1/routes/%s", "Route deleted");
}
