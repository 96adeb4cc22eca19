/* Output: the -o formats (json with TAB indentation, json-line; yaml is in cli_yaml.c),
 * success and error printing. Tables are in cli_table.c. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

static const struct {
    const char *name;
    enum cli_format fmt;
} formats[] = {
    { "", CLI_FMT_HUMAN },
    { "json", CLI_FMT_JSON },
    { "json-line", CLI_FMT_JSON_LINE },
    { "yaml", CLI_FMT_YAML },
};

int cli_format_parse(const char *s, enum cli_format *out)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(formats); i++) {
        if (strcmp(s ? s : "", formats[i].name) == 0) {
            *out = formats[i].fmt;
            return 0;
        }
    }
    return -EINVAL;
}

bool cli_machine_output(int argc, char **argv)
{
    enum cli_format f;
    for (int i = 1; i < argc; i++)
        if (argv[i][0] && cli_format_parse(argv[i], &f) == 0)
            return true;
    return false;
}

/* jansson indents with spaces; with an indent of 1 the number of leading spaces is the
 * depth. JSON strings hold no raw newlines, so every line start is an indentation. */
int cli_render_json(const json_t *j, struct hs_buf *out)
{
    char *text = hs_json_dump(j, JSON_INDENT(1));
    const char *p = text;
    int rc = 0;

    while (*p && rc == 0) {
        size_t depth = strspn(p, " "), len = strcspn(p + depth, "\n");
        for (size_t i = 0; i < depth && rc == 0; i++)
            rc = hs_buf_append(out, "\t", 1);
        if (rc == 0)
            rc = hs_buf_append(out, p + depth, len);
        p += depth + len;
        if (*p == '\n' && rc == 0) {
            rc = hs_buf_append(out, "\n", 1);
            p++;
        }
    }
    free(text);
    return rc;
}

int cli_render(const json_t *j, enum cli_format fmt, struct hs_buf *out)
{
    char *text;
    int rc;

    if (fmt == CLI_FMT_JSON)
        return cli_render_json(j, out);
    if (fmt == CLI_FMT_YAML)
        return cli_render_yaml(j, out);
    text = hs_json_dump(j, JSON_COMPACT);
    rc = hs_buf_puts(out, text);
    free(text);
    return rc;
}

/* Human text as is; otherwise the rendered value. Always ends with a newline. */
static int emit(FILE *f, enum cli_format fmt, const json_t *j, const char *human)
{
    struct hs_buf b;
    int rc = 0;

    hs_buf_init(&b, CLI_MAX_OUTPUT);
    if (fmt == CLI_FMT_HUMAN || !j)
        rc = hs_buf_puts(&b, human ? human : "");
    else
        rc = cli_render(j, fmt, &b);
    if (rc == 0)
        fprintf(f, "%s\n", b.data ? b.data : "");
    hs_buf_free(&b);
    return rc;
}

int cli_fail(struct cli_ctx *ctx, const char *fmt, ...)
{
    char msg[1024], human[1040];
    json_t *j;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(human, sizeof(human), "Error: %s", msg);
    j = json_pack("{s:s}", "error", msg);
    emit(ctx->err, ctx->fmt, j, human);
    json_decref(j);
    return 1;
}

int cli_print(struct cli_ctx *ctx, const json_t *result, const struct cli_msg *msg,
              const char *human)
{
    json_t *shaped = msg && ctx->fmt != CLI_FMT_HUMAN
                         ? cli_proto(result, msg, ctx->fmt == CLI_FMT_YAML) : NULL;
    int rc = emit(ctx->out, ctx->fmt, shaped ? shaped : result, human);

    json_decref(shaped);
    return rc < 0 ? cli_fail(ctx, "output too large") : 0;
}

int cli_print_rows(struct cli_ctx *ctx, const json_t *rows, const struct cli_msg *msg)
{
    json_t *shaped = cli_proto_list(rows, msg, ctx->fmt == CLI_FMT_YAML);
    int rc = emit(ctx->out, ctx->fmt, shaped, NULL);

    json_decref(shaped);
    return rc < 0 ? cli_fail(ctx, "output too large") : 0;
}

int cli_print_list(struct cli_ctx *ctx, const json_t *rows, const struct cli_msg *msg,
                   const struct cli_column *cols, size_t ncols)
{
    struct cli_table t;
    struct hs_buf b;
    int rc;

    if (ctx->fmt != CLI_FMT_HUMAN)
        return cli_print_rows(ctx, rows, msg);
    cli_table_init(&t, NULL, ncols);
    for (size_t i = 0; i < ncols; i++)
        cli_table_add(&t, cols[i].title);
    cli_table_rows(ctx, &t, cols, ncols, rows);
    hs_buf_init(&b, CLI_MAX_OUTPUT);
    rc = cli_table_render(&t, ctx->color, &b);
    if (rc == 0)
        fputs(b.data, ctx->out);
    hs_buf_free(&b);
    cli_table_free(&t);
    return rc < 0 ? cli_fail(ctx, "output too large") : 0;
}
