/* --help and usage text in cobra's layout. */
#include <string.h>

#include "cli/cli_internal.h"

#define HELP_MAX (64u << 10)

/* "headscale users create" for the resolved path. */
static void cmd_path(const struct cli_args *a, struct hs_buf *b)
{
    for (size_t i = 0; i < a->depth; i++)
        hs_buf_appendf(b, "%s%s", i ? " " : "", a->path[i]->name);
}

static void flag_line(const struct cli_flag *f, struct hs_buf *b)
{
    struct hs_buf left;

    hs_buf_init(&left, 256);
    if (f->shorthand)
        hs_buf_appendf(&left, "  -%c, --%s", f->shorthand, f->name);
    else
        hs_buf_appendf(&left, "      --%s", f->name);
    if (f->type == CLI_STRING)
        hs_buf_puts(&left, " string");
    else if (f->type == CLI_LIST)
        hs_buf_puts(&left, " strings");
    /* A name longer than the column still gets two spaces, so the text stays apart. */
    hs_buf_appendf(b, "%-30s%s%s", left.data, left.len >= 30 ? "  " : " ", f->help);
    if (f->def && f->type != CLI_BOOL)
        hs_buf_appendf(b, " (default \"%s\")", f->def);
    hs_buf_puts(b, "\n");
    hs_buf_free(&left);
}

static void flag_lines(const struct cli_flag *fl, struct hs_buf *b)
{
    for (const struct cli_flag *f = fl; f && f->name; f++)
        if (!f->hidden)
            flag_line(f, b);
}

/* The command's own flags (and, for a group, the ones it hands down), then the inherited. */
static void flags_blocks(const struct cli_args *a, struct hs_buf *b)
{
    static const struct cli_flag help_flag = { "help", 'h', CLI_BOOL, NULL,
                                               "Show this help", false };
    const struct cli_cmd *c = cli_args_cmd(a);
    size_t mark;

    hs_buf_puts(b, "\nFlags:\n");
    flag_line(&help_flag, b);
    flag_lines(c->flags, b);
    flag_lines(c->pflags, b);
    hs_buf_puts(b, "\nGlobal Flags:\n");
    mark = b->len;
    for (size_t i = a->depth - 1; i > 0; i--)
        flag_lines(a->path[i - 1]->pflags, b);
    if (b->len == mark) { /* the root has no inherited flags */
        b->len = mark - strlen("\nGlobal Flags:\n");
        b->data[b->len] = '\0';
    }
}

static void subs_block(const struct cli_cmd *c, struct hs_buf *b)
{
    if (!c->subs)
        return;
    hs_buf_puts(b, "\nAvailable Commands:\n");
    for (const struct cli_cmd *const *s = c->subs; *s; s++)
        hs_buf_appendf(b, "  %-12s %s\n", (*s)->name, (*s)->summary);
}

static void aliases_block(const struct cli_cmd *c, struct hs_buf *b)
{
    if (!c->aliases)
        return;
    hs_buf_appendf(b, "\nAliases:\n  %s", c->name);
    for (const char *const *a = c->aliases; *a; a++)
        hs_buf_appendf(b, ", %s", *a);
    hs_buf_puts(b, "\n");
}

void cli_help(const struct cli_args *a, FILE *f)
{
    const struct cli_cmd *c = cli_args_cmd(a);
    struct hs_buf b, parent;

    hs_buf_init(&b, HELP_MAX);
    hs_buf_init(&parent, 256);
    for (size_t i = 0; i + 1 < a->depth; i++)
        hs_buf_appendf(&parent, "%s ", a->path[i]->name);
    hs_buf_appendf(&b, "%s\n\nUsage:\n", c->long_help ? c->long_help : c->summary);
    if (c->run)
        hs_buf_appendf(&b, "  %s%s [flags]\n", parent.data, c->use);
    if (c->subs) {
        hs_buf_puts(&b, "  ");
        cmd_path(a, &b);
        hs_buf_puts(&b, " [command]\n");
    }
    aliases_block(c, &b);
    subs_block(c, &b);
    flags_blocks(a, &b);
    if (c->subs) {
        hs_buf_puts(&b, "\nEach command explains itself: \"");
        cmd_path(a, &b);
        hs_buf_puts(&b, " COMMAND --help\".\n");
    }
    fputs(b.data, f);
    hs_buf_free(&parent);
    hs_buf_free(&b);
}

/* "headscale help [COMMAND...]": the help of that command, as "COMMAND... --help" gives. A
 * word that names no command is reported, and the help of the group it was looked up in is
 * shown (exit status 0, as cobra's help command does). */
int cli_cmd_help(struct cli_ctx *ctx)
{
    char *argv[CLI_MAX_POSITIONAL + 2];
    struct cli_args topic;
    int argc = 0;

    argv[argc++] = "headscale";
    for (size_t i = 0; i < ctx->args.npos; i++)
        argv[argc++] = (char *)ctx->args.pos[i];
    argv[argc++] = "--help";
    if (cli_parse(&cli_root, argc, argv, &topic) < 0) {
        fprintf(ctx->err, "Error: %s\n", topic.err);
        cli_help(&topic, ctx->err);
        return 1;
    }
    if (cli_args_cmd(&topic)->subs && topic.npos > 0)
        fprintf(ctx->err, "No command \"%s\" here: the help of \"%s\" follows.\n",
                topic.pos[0], cli_args_cmd(&topic)->name);
    cli_help(&topic, ctx->out);
    return 0;
}
