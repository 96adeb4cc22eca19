/* policy: a YAML policy (headscale's acl.yaml) read into the JSON value the HuJSON path gives.
 *
 * Built from libyaml events with an explicit stack of open containers, never by recursion:
 * the nesting is the author's (or an API caller's) to choose, so it is capped at
 * POLICY_MAX_DEPTH before a container is made, and the text at POLICY_MAX_BYTES before
 * libyaml sees it. Anchors and aliases are refused, so an alias bomb cannot expand, and a
 * policy is one document, so a second one is refused rather than silently ignored.
 *
 * Plain scalars are resolved with the YAML 1.2 core schema: null, booleans (true/false only,
 * as gopkg.in/yaml.v3, headscale's parser, reads them into untyped values), decimal integers
 * and floats. yaml.v3 also keeps 1.1's 0777 octals and reads 0x/0o/0b; those stay text here,
 * since no policy field holds such a number and headscale's string fields take the text as
 * written anyway. Quoted and block scalars are always strings, as is anything tagged !!str. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "policy/policy.h"

_Static_assert(sizeof(json_int_t) >= sizeof(int64_t), "json_int_t holds an int64_t");

struct yj_frame {
    json_t *node; /* borrowed: its parent (or yj.root) holds the reference */
    char *key;    /* mapping: key read, value not yet */
};

struct yj {
    struct yj_frame stack[POLICY_MAX_DEPTH];
    int depth;
    int ndocs;
    json_t *root; /* owned until handed to the caller */
    char *err;
    size_t errsize;
};

static int fail(struct yj *y, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Every message starts "line N: " so an operator can find the spot whatever went wrong. */
static int fail(struct yj *y, size_t line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!y->err || !y->errsize)
        return -EINVAL;
    n = snprintf(y->err, y->errsize, "line %zu: ", line);
    if (n >= 0 && (size_t)n < y->errsize) {
        va_start(ap, fmt);
        vsnprintf(y->err + n, y->errsize - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* No tag, the non-specific "!" (which YAML defines as "the kind's default"), or the one
 * standard tag that names what the node already is. */
static bool tag_ok(const yaml_char_t *tag, const char *want)
{
    const char *t = (const char *)tag;
    return !t || !strcmp(t, "!") || !strcmp(t, want);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Core schema int: [-+]?[0-9]+ (leading zeros stay decimal: 010 is ten, not 1.1's eight).
 * Returns 1 with *out set, 0 when s is not an integer, -ERANGE when it is one out of range. */
static int parse_int(const char *s, size_t n, int64_t *out)
{
    bool neg = false;
    uint64_t v = 0, limit;
    size_t i = 0;

    if (n && (s[0] == '-' || s[0] == '+'))
        neg = s[i++] == '-';
    if (i == n)
        return 0;
    for (size_t j = i; j < n; j++)
        if (!is_digit(s[j]))
            return 0;
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    /* -(v - 1) - 1 reaches INT64_MIN without overflowing. */
    *out = neg ? (v ? -(int64_t)(v - 1) - 1 : 0) : (int64_t)v;
    return 1;
}

/* Core schema float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?. .inf and .nan
 * are left as text: JSON cannot carry them, and no policy field takes a number like that. */
static bool is_float(const char *s, size_t n)
{
    size_t i = 0, before = 0, after = 0;

    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    while (i < n && is_digit(s[i]))
        i++, before++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i]))
            i++, after++;
    }
    if (!before && !after)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t exp = 0;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        while (i < n && is_digit(s[i]))
            i++, exp++;
        if (!exp)
            return false;
    }
    return i == n;
}

static bool is_one_of(const char *s, const char *const *words, size_t nwords)
{
    for (size_t i = 0; i < nwords; i++)
        if (!strcmp(s, words[i]))
            return true;
    return false;
}

/* A plain scalar's value. s is NUL-terminated at n (libyaml's buffer, NULs refused earlier). */
static int resolve_plain(struct yj *y, const char *s, size_t n, size_t line, json_t **out)
{
    static const char *const nulls[] = { "~", "null", "Null", "NULL" };
    static const char *const trues[] = { "true", "True", "TRUE" };
    static const char *const falses[] = { "false", "False", "FALSE" };
    int64_t i;
    int rc;

    if (!n || is_one_of(s, nulls, HS_ARRAY_LEN(nulls)))
        *out = json_null();
    else if (is_one_of(s, trues, HS_ARRAY_LEN(trues)))
        *out = json_true();
    else if (is_one_of(s, falses, HS_ARRAY_LEN(falses)))
        *out = json_false();
    else if ((rc = parse_int(s, n, &i)) < 0)
        return fail(y, line, "integer %.40s is out of range (quote it to keep it as text)", s);
    else if (rc > 0)
        *out = json_integer((json_int_t)i);
    else if (is_float(s, n)) {
        char *end;
        double d = strtod(s, &end); /* the pattern above is all strtod reads in the C locale */
        if (end != s + n || !isfinite(d))
            return fail(y, line, "number %.40s is out of range (quote it to keep it as text)",
                        s);
        *out = json_real(d);
    } else
        *out = json_stringn(s, n);
    if (!*out)
        return fail(y, line, "out of memory");
    return 0;
}

/* Checks common to keys and values: no anchors, a tag we honour, no NUL bytes. */
static int check_scalar(struct yj *y, const yaml_event_t *ev, size_t line)
{
    const char *v = (const char *)ev->data.scalar.value;

    if (ev->data.scalar.anchor)
        return fail(y, line, "YAML anchors (&%.40s) are not supported",
                    (const char *)ev->data.scalar.anchor);
    if (!tag_ok(ev->data.scalar.tag, YAML_STR_TAG))
        return fail(y, line, "YAML tag %.60s is not supported (only !!str)",
                    (const char *)ev->data.scalar.tag);
    /* A "\0" escape in a double-quoted scalar; JSON text could carry it, C strings cannot. */
    if (strlen(v) != ev->data.scalar.length)
        return fail(y, line, "NUL byte in a value");
    return 0;
}

/* Hangs a finished value under the open container, or makes it the document. Steals v. */
static int place(struct yj *y, json_t *v, size_t line)
{
    struct yj_frame *top;
    int rc;

    if (y->depth == 0) {
        y->root = v;
        return 0;
    }
    top = &y->stack[y->depth - 1];
    if (json_is_array(top->node)) {
        rc = json_array_append_new(top->node, v);
    } else {
        rc = json_object_set_new(top->node, top->key, v);
        free(top->key);
        top->key = NULL;
    }
    return rc < 0 ? fail(y, line, "out of memory") : 0;
}

static bool expecting_key(const struct yj *y)
{
    const struct yj_frame *top = y->depth ? &y->stack[y->depth - 1] : NULL;
    return top && json_is_object(top->node) && !top->key;
}

/* JSON keys are strings, so a key is taken as written: `22:` names "22", not 22. */
static int take_key(struct yj *y, const yaml_event_t *ev, size_t line)
{
    struct yj_frame *top = &y->stack[y->depth - 1];
    const char *k = (const char *)ev->data.scalar.value;

    /* What libyaml gives for `: x` or a bare `?`: a slip, not a name. */
    if (!*k && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
        return fail(y, line, "empty mapping key");
    if (json_object_get(top->node, k))
        return fail(y, line, "duplicate key \"%.60s\"", k);
    top->key = hs_strdup(k);
    return 0;
}

static int on_scalar(struct yj *y, const yaml_event_t *ev, size_t line)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    json_t *j;
    int rc;

    if ((rc = check_scalar(y, ev, line)) < 0)
        return rc;
    if (expecting_key(y))
        return take_key(y, ev, line);
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag) {
        if ((rc = resolve_plain(y, v, n, line, &j)) < 0)
            return rc;
    } else if (!(j = json_stringn(v, n))) {
        return fail(y, line, "out of memory");
    }
    return place(y, j, line);
}

static int on_start(struct yj *y, const yaml_event_t *ev, size_t line)
{
    bool map = ev->type == YAML_MAPPING_START_EVENT;
    const yaml_char_t *anchor = map ? ev->data.mapping_start.anchor
                                    : ev->data.sequence_start.anchor;
    const yaml_char_t *tag = map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
    json_t *j;
    int rc;

    if (y->depth >= POLICY_MAX_DEPTH)
        return fail(y, line, "nested deeper than %d levels", POLICY_MAX_DEPTH);
    if (anchor)
        return fail(y, line, "YAML anchors (&%.40s) are not supported", (const char *)anchor);
    if (!tag_ok(tag, map ? YAML_MAP_TAG : YAML_SEQ_TAG))
        return fail(y, line, "YAML tag %.60s is not supported here", (const char *)tag);
    if (expecting_key(y))
        return fail(y, line, "a mapping key must be a scalar, not a %s",
                    map ? "mapping" : "sequence");
    if (!(j = map ? json_object() : json_array()))
        return fail(y, line, "out of memory");
    if ((rc = place(y, j, line)) < 0)
        return rc;
    y->stack[y->depth++] = (struct yj_frame){ .node = j };
    return 0;
}

/* At the end of the stream: exactly one document, and one that says something. */
static int on_stream_end(struct yj *y, size_t line)
{
    if (!y->ndocs || !y->root || json_is_null(y->root))
        return fail(y, line, "empty policy");
    return 1;
}

/* One event; 1 at the end of the stream, 0 to go on, < 0 to stop (message in y->err). */
static int on_event(struct yj *y, const yaml_event_t *ev)
{
    size_t line = ev->start_mark.line + 1;

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return on_stream_end(y, line);
    case YAML_DOCUMENT_START_EVENT:
        if (++y->ndocs > 1)
            return fail(y, line, "more than one YAML document (a policy is one)");
        return 0;
    case YAML_ALIAS_EVENT:
        return fail(y, line, "YAML aliases (*%.40s) are not supported",
                    (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT:
        return on_scalar(y, ev, line);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        return on_start(y, ev, line);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        /* libyaml pairs every end with a start and gives every key a value (an empty
         * scalar if need be), so depth > 0 here and the free is only a safety net. */
        y->depth--;
        free(y->stack[y->depth].key);
        y->stack[y->depth].key = NULL;
        return 0;
    default:
        return 0;
    }
}

/* libyaml's reader (encoding) errors carry a byte offset, not a mark. */
static size_t error_line(const yaml_parser_t *p, const char *text, size_t len)
{
    size_t line = 1;

    if (p->error != YAML_READER_ERROR)
        return p->problem_mark.line + 1;
    for (size_t i = 0; i < p->problem_offset && i < len; i++)
        line += text[i] == '\n';
    return line;
}

static int parse_error(struct yj *y, const yaml_parser_t *p, const char *text, size_t len)
{
    size_t line = error_line(p, text, len);

    if (p->error == YAML_MEMORY_ERROR)
        return fail(y, line, "out of memory");
    if (p->context)
        return fail(y, line, "invalid YAML: %s (%s at line %zu)",
                    p->problem ? p->problem : "syntax error", p->context,
                    p->context_mark.line + 1);
    return fail(y, line, "invalid YAML: %s", p->problem ? p->problem : "syntax error");
}

json_t *policy_yaml_to_json(const char *text, size_t len, char *err, size_t errsize)
{
    struct yj y = { .err = err, .errsize = errsize };
    yaml_parser_t parser;
    yaml_event_t ev;
    int rc = 0;

    /* Refused before libyaml allocates anything for it; line 1 keeps the message shape. */
    if (len > POLICY_MAX_BYTES) {
        fail(&y, 1, "policy of %zu bytes exceeds the limit of %u", len, POLICY_MAX_BYTES);
        return NULL;
    }
    if (!yaml_parser_initialize(&parser)) {
        fail(&y, 1, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (rc == 0) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parse_error(&y, &parser, text, len);
            break;
        }
        rc = on_event(&y, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    while (y.depth > 0)
        free(y.stack[--y.depth].key);
    if (rc < 0) {
        json_decref(y.root); /* the containers still open hang from it */
        return NULL;
    }
    return y.root;
}
