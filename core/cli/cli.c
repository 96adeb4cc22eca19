/* cli_main: parse, set up output and logging, dispatch to the command's handler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_internal.h"

int cli_config(struct cli_ctx *ctx)
{
    struct config_diags diags;
    int rc;

    if (ctx->have_cfg)
        return 0;
    rc = config_load(cli_flag_str(&ctx->args, "config"), CONFIG_FOR_CLI, &ctx->cfg, &diags);
    ctx->have_cfg = true;
    if (!ctx->machine) {
        log_set_level(ctx->cfg.log_level);
        log_set_json(ctx->cfg.log_json);
    }
    if (rc < 0) {
        config_diags_print(&diags, ctx->err);
        cli_fail(ctx, "failed to load the configuration");
    } else {
        config_diags_log(&diags);
    }
    config_diags_free(&diags);
    return rc < 0 ? -EINVAL : 0;
}

int cli_confirm(struct cli_ctx *ctx, const char *prompt)
{
    char line[64] = "";
    size_t n;

    if (cli_flag_bool(&ctx->args, "force"))
        return 1;
    if (!isatty(STDIN_FILENO)) {
        cli_fail(ctx, "confirmation required but stdin is not a terminal: use --force");
        return -1;
    }
    fprintf(stderr, "%s [y/n] ", prompt);
    fflush(stderr);
    if (!fgets(line, sizeof(line), stdin))
        return 0;
    n = strcspn(line, " \r\n");
    line[n] = '\0';
    return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0 ||
           strcasecmp(line, "sure") == 0;
}

/* Parse errors print the error and the command's usage; exit status 1. */
static int usage_error(struct cli_ctx *ctx)
{
    fprintf(ctx->err, "Error: %s\n", ctx->args.err);
    cli_help(&ctx->args, ctx->err);
    return 1;
}

static int setup_output(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *no_color = getenv("NO_COLOR");

    ctx->machine = cli_machine_output(argc, argv);
    if (ctx->machine)
        log_set_level(LOG_OFF);
    ctx->color = ctx->out == stdout && isatty(STDOUT_FILENO) && !(no_color && *no_color);
    ctx->now_us = hs_now_us();
    if (cli_format_parse(cli_flag_str(&ctx->args, "output"), &ctx->fmt) < 0)
        return cli_fail(ctx, "invalid output format \"%s\": use json, json-line or yaml",
                        cli_flag_str(&ctx->args, "output"));
    if (ctx->fmt != CLI_FMT_HUMAN && !ctx->machine) { /* -o=json: also keep stdout clean */
        ctx->machine = true;
        log_set_level(LOG_OFF);
    }
    return 0;
}

static int dispatch(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *c;

    if (argc >= 2 && strcmp(argv[1], "__complete") == 0)
        return cli_complete(argc - 2, argv + 2, ctx->out);
    if (cli_parse(&cli_root, argc, argv, &ctx->args) < 0)
        return usage_error(ctx);
    c = cli_args_cmd(&ctx->args);
    if (ctx->args.help || !c->run) {
        cli_help(&ctx->args, ctx->out);
        return 0;
    }
    if (setup_output(ctx, argc, argv) != 0)
        return 1;
    return c->run(ctx);
}

int cli_run(int argc, char **argv, FILE *out, FILE *err)
{
    struct cli_ctx ctx = { .out = out, .err = err };
    int rc = dispatch(&ctx, argc, argv);

    cli_http_close(ctx.http);
    if (ctx.have_cfg)
        config_free(&ctx.cfg);
    fflush(out);
    return rc;
}

int cli_main(int argc, char **argv)
{
    return cli_run(argc, argv, stdout, stderr);
}
