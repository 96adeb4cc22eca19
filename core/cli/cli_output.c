/* Output: the -o formats (json with TAB indentation, json-line, yaml), success and error
 * printing. Tables are in cli_table.c. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cli/cli_internal.h"

#define CLI_YAML_MAX_DEPTH 64

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

static int yaml_write(void *data, unsigned char *buf, size_t size)
{
    return hs_buf_append(data, buf, size) == 0;
}

/* Would a plain scalar read back as something other than this string? (YAML 1.1 and 1.2
 * booleans, null, numbers, timestamps.) */
static bool yaml_needs_quotes(const char *s)
{
    static const char *const special[] = {
        "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "-.inf", "+.inf", ".nan", ".NaN", ".NAN", "<<",
    };
    char *end;

    if (!*s)
        return true;
    for (size_t i = 0; i < HS_ARRAY_LEN(special); i++)
        if (strcmp(s, special[i]) == 0)
            return true;
    (void)strtod(s, &end);
    if (*end == '\0')
        return true;
    return strlen(s) >= 10 && s[4] == '-' && s[7] == '-' && strspn(s, "0123456789") == 4;
}

static int yaml_scalar(yaml_emitter_t *e, const char *text, bool quote)
{
    yaml_event_t ev;
    yaml_scalar_style_t style = quote ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE;

    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1, 1,
                                 style);
    return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
}

static int yaml_node(yaml_emitter_t *e, const json_t *j, int depth);

static int yaml_mapping(yaml_emitter_t *e, const json_t *j, int depth)
{
    yaml_event_t ev;
    const char *key;
    json_t *v;

    yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
    if (!yaml_emitter_emit(e, &ev))
        return -EIO;
    json_object_foreach((json_t *)j, key, v) {
        if (yaml_scalar(e, key, yaml_needs_quotes(key)) < 0 || yaml_node(e, v, depth + 1) < 0)
            return -EIO;
    }
    yaml_mapping_end_event_initialize(&ev);
    return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
}

static int yaml_sequence(yaml_emitter_t *e, const json_t *j, int depth)
{
    yaml_event_t ev;
    size_t i;
    json_t *v;

    yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
    if (!yaml_emitter_emit(e, &ev))
        return -EIO;
    json_array_foreach(j, i, v) {
        if (yaml_node(e, v, depth + 1) < 0)
            return -EIO;
    }
    yaml_sequence_end_event_initialize(&ev);
    return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
}

/* Numbers, booleans and null print as their JSON text, unquoted. */
static int yaml_other(yaml_emitter_t *e, const json_t *j)
{
    char *text = hs_json_dump(j, 0);
    int rc = yaml_scalar(e, text, false);
    free(text);
    return rc;
}

static int yaml_node(yaml_emitter_t *e, const json_t *j, int depth)
{
    if (depth > CLI_YAML_MAX_DEPTH)
        return -E2BIG;
    if (json_is_object(j))
        return yaml_mapping(e, j, depth);
    if (json_is_array(j))
        return yaml_sequence(e, j, depth);
    if (json_is_string(j))
        return yaml_scalar(e, json_string_value(j), yaml_needs_quotes(json_string_value(j)));
    return yaml_other(e, j);
}

static int yaml_document(yaml_emitter_t *e, const json_t *j)
{
    yaml_event_t ev;

    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    if (!yaml_emitter_emit(e, &ev))
        return -EIO;
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
    if (!yaml_emitter_emit(e, &ev) || yaml_node(e, j, 0) < 0)
        return -EIO;
    yaml_document_end_event_initialize(&ev, 1);
    if (!yaml_emitter_emit(e, &ev))
        return -EIO;
    yaml_stream_end_event_initialize(&ev);
    return yaml_emitter_emit(e, &ev) && yaml_emitter_flush(e) ? 0 : -EIO;
}

int cli_render_yaml(const json_t *j, struct hs_buf *out)
{
    yaml_emitter_t e;
    int rc;

    if (!yaml_emitter_initialize(&e))
        return -ENOMEM;
    yaml_emitter_set_output(&e, yaml_write, out);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 4);
    rc = yaml_document(&e, j);
    yaml_emitter_delete(&e);
    /* The emitter ends the document with a newline; callers add their own. */
    while (rc == 0 && out->len && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
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

int cli_print(struct cli_ctx *ctx, const json_t *result, const char *human)
{
    if (emit(ctx->out, ctx->fmt, result, human) < 0)
        return cli_fail(ctx, "output too large");
    return 0;
}

int cli_print_list(struct cli_ctx *ctx, const json_t *rows, const struct cli_column *cols,
                   size_t ncols)
{
    struct cli_table t;
    struct hs_buf b;
    int rc;

    if (ctx->fmt != CLI_FMT_HUMAN)
        return cli_print(ctx, rows, NULL);
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
