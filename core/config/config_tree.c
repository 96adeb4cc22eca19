/* config: libyaml events → a small node tree, without recursion.
 *
 * Limits: nesting CONFIG_MAX_DEPTH (checked on every *_START event, before a node is made),
 * CONFIG_MAX_NODES nodes, CONFIG_MAX_MAP_KEYS keys per mapping. Aliases are refused, so an
 * alias bomb cannot expand; only one document is read. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "config/config_internal.h"

struct frame {
    struct ynode *node;
    char *pending_key; /* mapping: key read, value not yet */
    int pending_line;
};

struct builder {
    struct ytree *t;
    ytree_report_fn report;
    void *arg;
    struct frame stack[CONFIG_MAX_DEPTH];
    int depth;
    int skip;   /* > 0: discarding the value of a duplicate key (nesting level + 1) */
    int ndocs;
};

static void report(struct builder *b, enum config_diag_level lvl, const char *key, int line,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void report(struct builder *b, enum config_diag_level lvl, const char *key, int line,
                   const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    b->report(b->arg, lvl, key, line, msg);
}

static struct ynode *node_new(struct ytree *t, enum ynode_kind kind, int line)
{
    struct ynode *n;

    if (t->n >= CONFIG_MAX_NODES)
        return NULL;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->all = hs_xrealloc(t->all, t->cap * sizeof(*t->all));
    }
    n = hs_xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->line = line;
    t->all[t->n++] = n;
    return n;
}

struct ynode *ytree_scalar(struct ytree *t, const char *s)
{
    struct ynode *n;

    /* The caps exist for file input; synthetic nodes are few, so grow past them. */
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->all = hs_xrealloc(t->all, t->cap * sizeof(*t->all));
    }
    n = hs_xcalloc(1, sizeof(*n));
    n->kind = YN_SCALAR;
    n->str = hs_strdup(s);
    t->all[t->n++] = n;
    return n;
}

void ytree_free(struct ytree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->all[i]->str);
        free(t->all[i]->key);
        free(t->all[i]);
    }
    free(t->all);
    *t = (struct ytree){ 0 };
}

/* Dotted path of the open mappings plus key, for messages. */
static void build_path(const struct builder *b, const char *key, char *out, size_t size)
{
    size_t len = 0;

    out[0] = '\0';
    for (int i = 0; i < b->depth; i++) {
        const char *k = b->stack[i].node->key;
        if (k)
            len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s%s",
                                    len ? "." : "", k);
    }
    if (key && len < size)
        snprintf(out + len, size - len, "%s%s", len ? "." : "", key);
}

static void append_child(struct ynode *parent, struct ynode *n)
{
    if (parent->last)
        parent->last->next = n;
    else
        parent->child = n;
    parent->last = n;
    parent->nchild++;
}

/* Hangs a finished value node under the open container (or makes it the root). */
static void attach(struct builder *b, struct ynode *n)
{
    struct frame *top;

    if (b->depth == 0) {
        b->t->root = n;
        return;
    }
    top = &b->stack[b->depth - 1];
    if (top->node->kind == YN_MAP) {
        n->key = top->pending_key;
        n->key_line = top->pending_line;
        top->pending_key = NULL;
    }
    append_child(top->node, n);
}

static bool expecting_key(const struct builder *b)
{
    const struct frame *top = b->depth ? &b->stack[b->depth - 1] : NULL;
    return top && top->node->kind == YN_MAP && !top->pending_key;
}

/* A scalar in key position: check the limits and duplicates, then remember it. */
static int take_key(struct builder *b, const char *key, int line)
{
    struct frame *top = &b->stack[b->depth - 1];
    char path[CONFIG_MAX_KEY_LEN];

    if (top->node->nchild >= CONFIG_MAX_MAP_KEYS) {
        report(b, CONFIG_ERROR, NULL, line, "more than %u keys in one mapping",
               CONFIG_MAX_MAP_KEYS);
        return -E2BIG;
    }
    /* Case-insensitive, as viper lower-cases every key. */
    for (const struct ynode *c = top->node->child; c; c = c->next) {
        if (strcasecmp(c->key, key) == 0) {
            build_path(b, key, path, sizeof(path));
            report(b, CONFIG_ERROR, path, line, "duplicate key (first given on line %d)",
                   c->key_line);
            b->skip = 1;
            return 0;
        }
    }
    top->pending_key = hs_strdup(key);
    top->pending_line = line;
    return 0;
}

static bool plain_null(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;

    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return !*v || !strcmp(v, "~") || !strcasecmp(v, "null");
}

static int on_scalar(struct builder *b, const yaml_event_t *ev, int line)
{
    const char *v = (const char *)ev->data.scalar.value;
    struct ynode *n;

    if (b->skip) {
        if (b->skip == 1)
            b->skip = 0;
        return 0;
    }
    if (strlen(v) != ev->data.scalar.length) {
        report(b, CONFIG_ERROR, NULL, line, "NUL byte in a value");
        return -EINVAL;
    }
    if (expecting_key(b))
        return take_key(b, v, line);
    if (!(n = node_new(b->t, YN_SCALAR, line))) {
        report(b, CONFIG_ERROR, NULL, line, "more than %u values", CONFIG_MAX_NODES);
        return -E2BIG;
    }
    n->str = hs_strdup(v);
    n->null = plain_null(ev);
    attach(b, n);
    return 0;
}

static int on_start(struct builder *b, enum ynode_kind kind, int line)
{
    struct ynode *n;

    if (b->depth >= CONFIG_MAX_DEPTH) {
        report(b, CONFIG_ERROR, NULL, line, "nested deeper than %d levels", CONFIG_MAX_DEPTH);
        return -E2BIG;
    }
    if (b->skip) {
        b->skip++;
        b->depth++;
        b->stack[b->depth - 1] = (struct frame){ 0 };
        return 0;
    }
    if (expecting_key(b)) {
        report(b, CONFIG_ERROR, NULL, line, "a mapping key must be a plain value");
        return -EINVAL;
    }
    if (!(n = node_new(b->t, kind, line))) {
        report(b, CONFIG_ERROR, NULL, line, "more than %u values", CONFIG_MAX_NODES);
        return -E2BIG;
    }
    attach(b, n);
    b->stack[b->depth++] = (struct frame){ .node = n };
    return 0;
}

static void on_end(struct builder *b)
{
    struct frame *top = &b->stack[--b->depth];

    if (b->skip) {
        if (--b->skip == 1)
            b->skip = 0;
        return;
    }
    free(top->pending_key); /* only set for malformed input libyaml already refused */
    top->pending_key = NULL;
}

/* One event; returns 1 at the end of the stream, 0 to continue, < 0 to stop. */
static int on_event(struct builder *b, const yaml_event_t *ev)
{
    int line = (int)ev->start_mark.line + 1;

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->ndocs > 1) {
            report(b, CONFIG_ERROR, NULL, line, "only one YAML document is allowed");
            return -EINVAL;
        }
        return 0;
    case YAML_ALIAS_EVENT:
        report(b, CONFIG_ERROR, NULL, line, "YAML aliases are not supported");
        return -EINVAL;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev, line);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(b, YN_SEQ, line);
    case YAML_MAPPING_START_EVENT:
        return on_start(b, YN_MAP, line);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        on_end(b);
        return 0;
    default:
        return 0;
    }
}

static void unwind(struct builder *b)
{
    while (b->depth > 0)
        free(b->stack[--b->depth].pending_key);
}

int ytree_parse(const char *text, size_t len, struct ytree *t, ytree_report_fn fn, void *arg)
{
    struct builder b = { .t = t, .report = fn, .arg = arg };
    yaml_parser_t parser;
    yaml_event_t ev;
    int rc = 0;

    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (rc == 0) {
        if (!yaml_parser_parse(&parser, &ev)) {
            report(&b, CONFIG_ERROR, NULL, (int)parser.problem_mark.line + 1,
                   "invalid YAML: %s%s%s", parser.problem ? parser.problem : "syntax error",
                   parser.context ? " " : "", parser.context ? parser.context : "");
            rc = -EINVAL;
            break;
        }
        rc = on_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    unwind(&b);
    yaml_parser_delete(&parser);
    return rc < 0 ? rc : 0;
}
