/* serve, configtest, version, health, generate private-key. */
#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>

#include "cli/cli_internal.h"
#include "keys/keys.h"
#include "server/server.h"

int cli_server_config(struct cli_ctx *ctx, bool print, struct hs_config *cfg)
{
    struct config_diags diags;
    int rc = config_load(cli_flag_str(&ctx->args, "config"), CONFIG_FOR_SERVER, cfg, &diags);

    log_set_level(cfg->log_level);
    log_set_json(cfg->log_json);
    if (print)
        config_diags_print(&diags, stderr);
    else
        config_diags_log(&diags);
    config_diags_free(&diags);
    if (rc < 0)
        config_free(cfg);
    return rc;
}

int cli_cmd_serve(struct cli_ctx *ctx)
{
    struct hs_config cfg;
    int rc;

    if (cli_server_config(ctx, false, &cfg) < 0)
        return 1;
    rc = server_run(&cfg);
    config_free(&cfg);
    return rc;
}

int cli_cmd_configtest(struct cli_ctx *ctx)
{
    struct hs_config cfg;
    int rc;

    if (cli_server_config(ctx, true, &cfg) < 0)
        return 1;
    rc = server_configtest(&cfg);
    config_free(&cfg);
    return rc;
}

/* yaml.v3 names a struct's members by their lowercased Go names ("buildTime" → "buildtime"). */
static json_t *lowercase_keys(const json_t *j)
{
    json_t *out, *v;
    const char *key;
    char lower[64];

    if (!json_is_object(j))
        return json_incref((json_t *)j);
    out = json_object();
    json_object_foreach((json_t *)j, key, v) {
        size_t n = 0;
        for (; key[n] && n + 1 < sizeof(lower); n++)
            lower[n] = (char)tolower((unsigned char)key[n]);
        lower[n] = '\0';
        json_object_set_new(out, lower, lowercase_keys(v));
    }
    return out;
}

int cli_cmd_version(struct cli_ctx *ctx)
{
    json_t *info = server_version_json();
    json_t *j = ctx->fmt == CLI_FMT_YAML ? lowercase_keys(info) : json_incref(info);
    char *human = server_version_text();
    int rc = cli_print(ctx, j, NULL, human);

    free(human);
    json_decref(j);
    json_decref(info);
    return rc;
}

/* Exit status 0 only when the server answers and says its database is reachable. */
int cli_cmd_health(struct cli_ctx *ctx)
{
    json_t *resp;
    int rc;

    if (cli_api(ctx, "GET", "/api/v1/health", NULL, &resp) < 0)
        return 1;
    if (!json_is_true(json_object_get(resp, "databaseConnectivity")))
        rc = cli_fail(ctx, "the server answers but cannot reach its database");
    else
        rc = cli_print(ctx, resp, &cli_msg_health,
                       "The server answers and its database is reachable");
    json_decref(resp);
    return rc;
}

int cli_cmd_generate_private_key(struct cli_ctx *ctx)
{
    struct key_pair kp;
    char text[KEY_TEXT_MAX];
    json_t *j;
    int rc;

    if (sodium_init() < 0)
        return cli_fail(ctx, "cannot initialise libsodium");
    keys_generate(&kp);
    keys_format("privkey:", kp.priv, text);
    j = json_pack("{s:s}", "private_key", text);
    rc = cli_print(ctx, j, NULL, text);
    json_decref(j);
    sodium_memzero(&kp, sizeof(kp));
    sodium_memzero(text, sizeof(text));
    return rc;
}
