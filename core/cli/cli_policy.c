/* policy get|set|check: through the running server, or with
 * --bypass-grpc-and-access-database-directly on the database the configuration names, for a
 * server that is stopped (a running one would not see what is written behind its back). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"
#include "state/state.h"
#include "store/store.h"

#define BYPASS_FLAG "bypass-grpc-and-access-database-directly"

/* What the offline path opens, in the order it is opened. */
struct offline {
    struct hs_config cfg;
    bool have_cfg;
    struct store *st;
    struct state *state;
};

static void offline_close(struct offline *o)
{
    state_free(o->state);
    store_close(o->st);
    if (o->have_cfg)
        config_free(&o->cfg);
}

/* Asks first (unless --force), then opens the configuration, the database (migrating it as
 * the server would) and the users and nodes the policy is compiled for. Prints any error. */
static int offline_open(struct cli_ctx *ctx, struct offline *o)
{
    int ok, rc;

    *o = (struct offline){ 0 };
    ok = cli_confirm(ctx, "This reads and writes the database directly. Go on only if no "
                          "headscale server is running on it. Go on?");
    if (ok == 0)
        cli_fail(ctx, "nothing done: not confirmed");
    if (ok <= 0)
        return -1;
    if (cli_server_config(ctx, true, &o->cfg) < 0) {
        cli_fail(ctx, "the configuration does not load");
        return -1;
    }
    o->have_cfg = true;
    if ((rc = store_open(&o->cfg, NULL, &o->st)) < 0) {
        cli_fail(ctx, "cannot open the %s database: %s",
                 o->cfg.db_type == DB_POSTGRES ? "postgres" : "sqlite", hs_strerror(rc));
        offline_close(o);
        return -1;
    }
    if ((rc = state_new(o->st, NULL, &o->state)) < 0) {
        cli_fail(ctx, "cannot load the users and nodes: %s", hs_strerror(rc));
        offline_close(o);
        return -1;
    }
    state_set_server_url(o->state, o->cfg.server_url);
    return 0;
}

/* The --file to send or check; prints the error. Caller frees *text. */
static int policy_file(struct cli_ctx *ctx, char **text, size_t *len)
{
    const char *file = cli_flag_str(&ctx->args, "file");
    int rc;

    if (!file || !*file) {
        cli_fail(ctx, "--file is required");
        return -EINVAL;
    }
    if ((rc = hs_read_file(file, CLI_MAX_POLICY, text, len)) < 0)
        cli_fail(ctx, "cannot read %s: %s", file, hs_strerror(rc));
    return rc;
}

/* The stored policy (database mode) or the policy file (file mode), raw. */
static int offline_get(struct cli_ctx *ctx, struct offline *o)
{
    const char *path = o->cfg.policy_path;
    int64_t updated_at;
    char *text = NULL;
    size_t len;
    int rc;

    if (o->cfg.policy_mode == POLICY_MODE_DATABASE)
        rc = store_policy_get(o->st, &text, &updated_at);
    else if (path && *path)
        rc = hs_read_file(path, CLI_MAX_POLICY, &text, &len);
    else
        return cli_fail(ctx, "no policy file is configured (policy.path is empty)");
    if (rc == -ENOENT && o->cfg.policy_mode == POLICY_MODE_DATABASE)
        return cli_fail(ctx, "no policy has been stored in the database");
    if (rc < 0)
        return cli_fail(ctx, "cannot read the policy: %s", hs_strerror(rc));
    fprintf(ctx->out, "%s\n", text);
    free(text);
    return 0;
}

/* Checks the --file policy against the stored users and nodes; with store, stores it too. */
static int offline_send(struct cli_ctx *ctx, struct offline *o, bool store)
{
    char err[1024];
    int64_t updated_at;
    char *text;
    size_t len;
    int rc;

    if (store && o->cfg.policy_mode != POLICY_MODE_DATABASE)
        return cli_fail(ctx, "policy.mode is \"file\": edit the policy file instead");
    if (policy_file(ctx, &text, &len) < 0)
        return 1;
    rc = state_policy_check(o->state, text, len, POLICY_FORMAT_AUTO, err, sizeof(err));
    if (rc < 0)
        cli_fail(ctx, "invalid policy: %s", err);
    else if (store && (rc = store_policy_set(o->st, text, "cli", 0, &updated_at, NULL)) < 0)
        cli_fail(ctx, "cannot store the policy: %s", hs_strerror(rc));
    else
        fprintf(ctx->out, "%s\n", store ? "The policy is stored: a server started on this "
                                          "database puts it in force"
                                        : "The policy loads and compiles, and its tests pass");
    free(text);
    return rc < 0 ? 1 : 0;
}

enum policy_op { POLICY_GET, POLICY_SET, POLICY_CHECK };

static int offline(struct cli_ctx *ctx, enum policy_op op)
{
    struct offline o;
    int rc;

    if (offline_open(ctx, &o) < 0)
        return 1;
    rc = op == POLICY_GET ? offline_get(ctx, &o) : offline_send(ctx, &o, op == POLICY_SET);
    offline_close(&o);
    return rc;
}

/* Sends the --file policy to the server: PUT stores it, POST .../check only checks it. */
static int policy_send(struct cli_ctx *ctx, const char *method, const char *path,
                       const char *done)
{
    char *text;
    size_t len;
    json_t *resp;
    int rc;

    if (policy_file(ctx, &text, &len) < 0)
        return 1;
    rc = cli_api(ctx, method, path, json_pack("{s:s%}", "policy", text, len), &resp);
    free(text);
    if (rc < 0)
        return 1;
    json_decref(resp);
    fprintf(ctx->out, "%s\n", done);
    return 0;
}

/* The policy is HuJSON text: printed raw whatever -o says, as headscale does. */
int cli_cmd_policy_get(struct cli_ctx *ctx)
{
    json_t *resp;
    const char *policy;

    if (cli_flag_bool(&ctx->args, BYPASS_FLAG))
        return offline(ctx, POLICY_GET);
    if (cli_api(ctx, "GET", "/api/v1/policy", NULL, &resp) < 0)
        return 1;
    policy = hs_json_str(resp, "policy");
    fprintf(ctx->out, "%s\n", policy ? policy : "");
    json_decref(resp);
    return 0;
}

int cli_cmd_policy_set(struct cli_ctx *ctx)
{
    if (cli_flag_bool(&ctx->args, BYPASS_FLAG))
        return offline(ctx, POLICY_SET);
    return policy_send(ctx, "PUT", "/api/v1/policy", "The new policy is in force");
}

int cli_cmd_policy_check(struct cli_ctx *ctx)
{
    if (cli_flag_bool(&ctx->args, BYPASS_FLAG))
        return offline(ctx, POLICY_CHECK);
    return policy_send(ctx, "POST", "/api/v1/policy/check",
                       "The policy loads and compiles, and its tests pass");
}
