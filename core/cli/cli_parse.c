/* argv parsing in two passes. Pass 1 finds the command path; a flag met before the
 * command is fully known takes a value if it does so anywhere below the current command
 * (when that is ambiguous, a following subcommand name wins). Pass 2 parses every flag
 * strictly against the resolved command, its ancestors' inherited flags and the globals. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

#define KIND_BOOL 1
#define KIND_VALUE 2

/* -h/--help is implied on every command. */
static const struct cli_flag help_flags[] = { { "help", 'h', CLI_BOOL, "false", "help", false },
                                              { 0 } };

static bool cmd_matches(const struct cli_cmd *c, const char *word)
{
    if (strcmp(c->name, word) == 0)
        return true;
    for (const char *const *a = c->aliases; a && *a; a++)
        if (strcmp(*a, word) == 0)
            return true;
    return false;
}

static const struct cli_cmd *cmd_child(const struct cli_cmd *c, const char *word)
{
    for (const struct cli_cmd *const *s = c->subs; s && *s; s++)
        if (cmd_matches(*s, word))
            return *s;
    return NULL;
}

/* "--name[=v]" or "-n[v]" → the flag's name text in (name, len); short sets *is_short. */
static void flag_token(const char *tok, const char **name, size_t *len, bool *is_short)
{
    if (tok[1] == '-') {
        *name = tok + 2;
        *len = strcspn(*name, "=");
        *is_short = false;
    } else {
        *name = tok + 1;
        *len = 1;
        *is_short = true;
    }
}

static const struct cli_flag *flag_in(const struct cli_flag *fl, const char *name, size_t len,
                                      bool is_short)
{
    for (; fl && fl->name; fl++) {
        if (is_short ? fl->shorthand == name[0]
                     : strlen(fl->name) == len && memcmp(fl->name, name, len) == 0)
            return fl;
    }
    return NULL;
}

static int flag_kind(const struct cli_flag *f)
{
    return f ? (f->type == CLI_BOOL ? KIND_BOOL : KIND_VALUE) : 0;
}

/* Kinds of every definition of the flag in c's subtree (pass 1). */
static int subtree_kind(const struct cli_cmd *c, const char *name, size_t len, bool is_short)
{
    int k = flag_kind(flag_in(c->flags, name, len, is_short)) |
            flag_kind(flag_in(c->pflags, name, len, is_short));
    for (const struct cli_cmd *const *s = c->subs; s && *s; s++)
        k |= subtree_kind(*s, name, len, is_short);
    return k;
}

static int path_kind(const struct cli_args *a, const char *name, size_t len, bool is_short)
{
    int k = subtree_kind(a->path[a->depth - 1], name, len, is_short);
    for (size_t i = 0; i + 1 < a->depth; i++)
        k |= flag_kind(flag_in(a->path[i]->pflags, name, len, is_short));
    return k;
}

/* Pass 2: the definition visible from the resolved command. */
static const struct cli_flag *flag_lookup(const struct cli_args *a, const char *name, size_t len,
                                          bool is_short)
{
    const struct cli_flag *f = flag_in(a->path[a->depth - 1]->flags, name, len, is_short);
    for (size_t i = a->depth; !f && i > 0; i--)
        f = flag_in(a->path[i - 1]->pflags, name, len, is_short);
    if (!f)
        f = flag_in(help_flags, name, len, is_short);
    return f;
}

/* Does the flag token at argv[i] consume argv[i + 1]? */
static bool takes_next(int kind, const char *tok, const char *next, const struct cli_cmd *cur)
{
    bool inline_value = tok[1] == '-' ? strchr(tok, '=') != NULL : tok[2] != '\0';
    if (inline_value || !next || !(kind & KIND_VALUE))
        return false;
    if (kind & KIND_BOOL) /* ambiguous: a subcommand name or another flag is not a value */
        return next[0] != '-' && !cmd_child(cur, next);
    return true;
}

static bool is_flag(const char *tok)
{
    return tok[0] == '-' && tok[1] != '\0';
}

/* Pass 1: walk the command words, marking them in is_cmd. */
static int resolve_path(struct cli_args *a, int argc, char **argv, bool *is_cmd)
{
    bool positional_seen = false;

    for (int i = 1; i < argc; i++) {
        const char *tok = argv[i], *name;
        const struct cli_cmd *cur = a->path[a->depth - 1], *child;
        size_t len;
        bool is_short;

        if (strcmp(tok, "--") == 0)
            break;
        if (is_flag(tok)) {
            flag_token(tok, &name, &len, &is_short);
            if (takes_next(path_kind(a, name, len, is_short), tok, i + 1 < argc ? argv[i + 1] : NULL,
                           cur))
                i++;
            continue;
        }
        if (positional_seen || !(child = cmd_child(cur, tok))) {
            positional_seen = true;
            continue;
        }
        if (a->depth == CLI_MAX_DEPTH)
            return -EINVAL;
        a->path[a->depth++] = child;
        is_cmd[i] = true;
    }
    return 0;
}

static int add_val(struct cli_args *a, const struct cli_flag *f, const char *value)
{
    if (f == help_flags) {
        a->help = true;
        return 0;
    }
    if (a->nvals == CLI_MAX_FLAGS) {
        snprintf(a->err, sizeof(a->err), "too many flags (at most %d)", CLI_MAX_FLAGS);
        return -E2BIG;
    }
    a->vals[a->nvals++] = (struct cli_flagval){ f, value };
    return 0;
}

static int bool_value(struct cli_args *a, const char *tok, const char *v, const char **out)
{
    bool b;
    if (!v) {
        *out = "true";
        return 0;
    }
    if (hs_parse_bool(v, &b) < 0) {
        snprintf(a->err, sizeof(a->err), "%s takes true or false, not \"%s\"", tok, v);
        return -EINVAL;
    }
    *out = b ? "true" : "false";
    return 0;
}

/* Pass 2 for one flag token; *i advances past a separate value. */
static int parse_flag(struct cli_args *a, int argc, char **argv, const bool *is_cmd, int *i)
{
    const char *tok = argv[*i], *name, *value = NULL;
    const struct cli_flag *f;
    size_t len;
    bool is_short;

    flag_token(tok, &name, &len, &is_short);
    if (!(f = flag_lookup(a, name, len, is_short))) {
        if (is_short)
            snprintf(a->err, sizeof(a->err), "-%c (in %s) is not a flag of this command", name[0],
                     tok);
        else
            snprintf(a->err, sizeof(a->err), "--%.*s is not a flag of this command", (int)len,
                     name);
        return -EINVAL;
    }
    if (name[len] != '\0')
        value = name + len + (name[len] == '=');
    if (is_short && value && value[0] == '=')
        value++;
    if (f->type == CLI_BOOL) {
        if (bool_value(a, tok, value, &value) < 0)
            return -EINVAL;
        return add_val(a, f, value);
    }
    if (!value) {
        if (*i + 1 >= argc || is_cmd[*i + 1]) {
            snprintf(a->err, sizeof(a->err), "%s needs a value", tok);
            return -EINVAL;
        }
        value = argv[++*i];
    }
    return add_val(a, f, value);
}

static int add_pos(struct cli_args *a, const char *tok)
{
    if (a->npos == CLI_MAX_POSITIONAL) {
        snprintf(a->err, sizeof(a->err), "more than %d arguments", CLI_MAX_POSITIONAL);
        return -E2BIG;
    }
    a->pos[a->npos++] = tok;
    return 0;
}

static int parse_all(struct cli_args *a, int argc, char **argv, const bool *is_cmd)
{
    bool dashdash = false;

    for (int i = 1; i < argc; i++) {
        int rc = 0;

        if (is_cmd[i])
            continue;
        if (!dashdash && strcmp(argv[i], "--") == 0)
            dashdash = true;
        else if (!dashdash && is_flag(argv[i]))
            rc = parse_flag(a, argc, argv, is_cmd, &i);
        else
            rc = add_pos(a, argv[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int check_args(struct cli_args *a)
{
    const struct cli_cmd *c = cli_args_cmd(a);

    if (a->help)
        return 0;
    if (!c->run) {
        if (a->npos == 0)
            return 0;
        snprintf(a->err, sizeof(a->err), "\"%s\" has no command \"%s\"",
                 c == a->path[0] ? c->name : c->use, a->pos[0]);
        return -EINVAL;
    }
    if ((int)a->npos < c->min_args) {
        snprintf(a->err, sizeof(a->err), "missing argument: the usage is \"%s\"", c->use);
        return -EINVAL;
    }
    if (c->max_args >= 0 && (int)a->npos > c->max_args) {
        snprintf(a->err, sizeof(a->err), "%s takes at most %d argument(s), got %zu", c->name,
                 c->max_args, a->npos);
        return -EINVAL;
    }
    return 0;
}

int cli_parse(const struct cli_cmd *root, int argc, char **argv, struct cli_args *out)
{
    bool *is_cmd = hs_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof(bool));
    int rc;

    *out = (struct cli_args){ .path = { root }, .depth = 1 };
    rc = resolve_path(out, argc, argv, is_cmd);
    if (rc < 0)
        snprintf(out->err, sizeof(out->err), "command nesting too deep");
    if (rc == 0)
        rc = parse_all(out, argc, argv, is_cmd);
    if (rc == 0)
        rc = check_args(out);
    free(is_cmd);
    return rc;
}

const struct cli_cmd *cli_args_cmd(const struct cli_args *a)
{
    return a->path[a->depth - 1];
}

static const struct cli_flagval *last_val(const struct cli_args *a, const char *name)
{
    for (size_t i = a->nvals; i > 0; i--)
        if (strcmp(a->vals[i - 1].flag->name, name) == 0)
            return &a->vals[i - 1];
    return NULL;
}

const char *cli_flag_str(const struct cli_args *a, const char *name)
{
    const struct cli_flagval *v = last_val(a, name);
    const struct cli_flag *f;

    if (v)
        return v->value;
    f = flag_lookup(a, name, strlen(name), false);
    return f ? f->def : NULL;
}

bool cli_flag_bool(const struct cli_args *a, const char *name)
{
    return hs_streq(cli_flag_str(a, name), "true");
}

bool cli_flag_given(const struct cli_args *a, const char *name)
{
    return last_val(a, name) != NULL;
}

int cli_flag_list(const struct cli_args *a, const char *name, struct hs_strv *out)
{
    int rc = 0;
    for (size_t i = 0; i < a->nvals && rc == 0; i++)
        if (strcmp(a->vals[i].flag->name, name) == 0)
            rc = hs_strv_split(out, a->vals[i].value, ",");
    return rc;
}
