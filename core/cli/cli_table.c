/* Human tables in pterm's DefaultTable layout ("ID | Name | Created"), and the mapping from
 * REST objects to cells. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

#define CLI_HEADER_COLOUR "96" /* pterm's light cyan table header */

void cli_table_init(struct cli_table *t, const char *const *header, size_t ncols)
{
    *t = (struct cli_table){ .ncols = ncols };
    for (size_t i = 0; header && i < ncols; i++)
        cli_table_add(t, header[i]);
}

void cli_table_add(struct cli_table *t, const char *cell)
{
    t->cells = hs_xrealloc(t->cells, (t->ncells + 1) * sizeof(*t->cells));
    t->cells[t->ncells++] = hs_strdup(cell ? cell : "");
}

void cli_table_free(struct cli_table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    *t = (struct cli_table){ 0 };
}

/* Terminal columns: UTF-8 code points, not counting ANSI "ESC [ ... m" sequences. */
static size_t display_width(const char *s)
{
    size_t w = 0;

    while (*s) {
        if (s[0] == '\033' && s[1] == '[') {
            s += 2 + strcspn(s + 2, "m");
            s += *s == 'm';
            continue;
        }
        w += ((unsigned char)*s & 0xC0) != 0x80;
        s++;
    }
    return w;
}

static int render_cell(const struct cli_table *t, size_t i, const size_t *width, bool color,
                       struct hs_buf *out)
{
    size_t col = i % t->ncols;
    bool last = col + 1 == t->ncols;
    int rc;

    if (color && i < t->ncols)
        rc = hs_buf_appendf(out, "\033[%sm%s\033[0m", CLI_HEADER_COLOUR, t->cells[i]);
    else
        rc = hs_buf_puts(out, t->cells[i]);
    /* pterm pads every cell; the last column's padding would only be trailing blanks. */
    if (rc == 0 && !last)
        rc = hs_buf_appendf(out, "%*s | ", (int)(width[col] - display_width(t->cells[i])), "");
    if (rc == 0 && last)
        rc = hs_buf_puts(out, "\n");
    return rc;
}

int cli_table_render(const struct cli_table *t, bool color, struct hs_buf *out)
{
    size_t *width = hs_xcalloc(t->ncols ? t->ncols : 1, sizeof(*width));
    size_t ncells = t->ncols ? t->ncells - t->ncells % t->ncols : 0;
    int rc = 0;

    for (size_t i = 0; i < ncells; i++) {
        size_t w = display_width(t->cells[i]);
        if (w > width[i % t->ncols])
            width[i % t->ncols] = w;
    }
    for (size_t i = 0; i < ncells && rc == 0; i++)
        rc = render_cell(t, i, width, color, out);
    free(width);
    return rc;
}

const json_t *cli_json_path(const json_t *obj, const char *path)
{
    const char *dot = strchr(path, '.');
    char head[64];

    if (!dot)
        return json_object_get(obj, path);
    if ((size_t)(dot - path) >= sizeof(head))
        return NULL;
    memcpy(head, path, (size_t)(dot - path));
    head[dot - path] = '\0';
    return cli_json_path(json_object_get(obj, head), dot + 1);
}

void cli_colour(const struct cli_ctx *ctx, const char *code, const char *s, struct hs_buf *out)
{
    if (ctx->color)
        hs_buf_appendf(out, "\033[%sm%s\033[0m", code, s);
    else
        hs_buf_puts(out, s);
}

static void cell_scalar(const json_t *v, struct hs_buf *cell)
{
    char *text;

    if (json_is_string(v)) {
        hs_buf_puts(cell, json_string_value(v));
    } else if (json_is_number(v) || json_is_boolean(v)) {
        text = hs_json_dump(v, JSON_ENCODE_ANY);
        hs_buf_puts(cell, text);
        free(text);
    }
}

static void cell_time(const struct cli_ctx *ctx, const json_t *v, bool expiry, struct hs_buf *cell)
{
    char human[40];
    int64_t us;

    if (!cli_json_time(v, &us)) {
        hs_buf_puts(cell, expiry ? "-" : "");
        return;
    }
    hs_format_human(us, human, sizeof(human));
    if (expiry)
        cli_colour(ctx, us > ctx->now_us ? CLI_GREEN : CLI_RED, human, cell);
    else
        hs_buf_puts(cell, human);
}

static void cell_strv(const json_t *v, struct hs_buf *cell)
{
    size_t i;
    json_t *s;

    json_array_foreach(v, i, s)
        hs_buf_appendf(cell, "%s%s", i ? "," : "", json_is_string(s) ? json_string_value(s) : "");
}

static void cell_render(const struct cli_ctx *ctx, const struct cli_column *c, const json_t *row,
                        struct hs_buf *cell)
{
    const json_t *v = c->key ? cli_json_path(row, c->key) : NULL;

    switch (c->kind) {
    case CELL_STR:
        cell_scalar(v, cell);
        break;
    case CELL_BOOL:
        hs_buf_puts(cell, json_is_true(v) ? "true" : "false");
        break;
    case CELL_TIME:
    case CELL_EXPIRY:
        cell_time(ctx, v, c->kind == CELL_EXPIRY, cell);
        break;
    case CELL_STRV:
        cell_strv(v, cell);
        break;
    case CELL_FN:
        c->fn(ctx, row, cell);
        break;
    }
}

void cli_table_rows(const struct cli_ctx *ctx, struct cli_table *t, const struct cli_column *cols,
                    size_t ncols, const json_t *rows)
{
    struct hs_buf cell;
    size_t i;
    json_t *row;

    hs_buf_init(&cell, 1u << 20);
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < ncols; c++) {
            hs_buf_reset(&cell);
            cell_render(ctx, &cols[c], row, &cell);
            cli_table_add(t, cell.data);
        }
    }
    hs_buf_free(&cell);
}
