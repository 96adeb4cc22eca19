/* YAML laid out as gopkg.in/yaml.v3 lays it out (headscale's -o yaml): an indentation step of
 * four that aligns nested blocks to multiples of four, except that the first level inside a
 * "- " item sits just after the dash; sequences in a mapping are indented; empty collections
 * are [] and {}. Scalars are plain when they read back as the same string, double-quoted when
 * they would read back as another type, single-quoted when plain text would not parse. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

#define YAML_STEP 4
#define YAML_MAX_DEPTH 64

static const char DIGITS[] = "0123456789";

/* yaml.v3's numbers, once the underscores are gone: 0x1f, 0o17, 0b1, and the decimal or
 * float forms [-+]?(.5|5|5.|5.5)([eE][-+]?5)? */
static bool is_number(const char *s)
{
    char buf[128];
    size_t n = 0;
    const char *q = buf, *base;

    for (; *s && n + 1 < sizeof(buf); s++)
        if (*s != '_')
            buf[n++] = *s;
    if (*s)
        return false;
    buf[n] = '\0';
    q += *q == '-' || *q == '+';
    base = q[0] == '0' && q[1] ? strchr("xXoObB", q[1]) : NULL;
    if (base && q[2]) {
        const char *set = strchr("xX", *base) ? "0123456789abcdefABCDEF"
                          : strchr("oO", *base) ? "01234567" : "01";
        return strspn(q + 2, set) == strlen(q + 2);
    }
    n = strspn(q, DIGITS);
    if (n == 0 && (q[0] != '.' || !q[1] || !strchr(DIGITS, q[1])))
        return false;
    q += n;
    if (*q == '.')
        q += 1 + strspn(q + 1, DIGITS);
    if (*q == 'e' || *q == 'E') {
        q += 1 + (q[1] == '-' || q[1] == '+');
        if (strspn(q, DIGITS) == 0)
            return false;
        q += strspn(q, DIGITS);
    }
    return *q == '\0';
}

/* YAML 1.1's sexagesimal numbers, which yaml.v3 quotes: [-+]?5[5_]*(:[0-5]?5)+(.[5_]*)? */
static bool is_base60(const char *s)
{
    size_t groups = 0, n;

    s += *s == '-' || *s == '+';
    if (!*s || !strchr(DIGITS, *s))
        return false;
    s += strspn(s, "0123456789_");
    while (*s == ':') {
        n = strspn(s + 1, DIGITS);
        if (n == 0 || n > 2 || (n == 2 && s[1] > '5'))
            return false;
        s += 1 + n;
        groups++;
    }
    if (*s == '.')
        s += 1 + strspn(s + 1, "0123456789_");
    return groups > 0 && *s == '\0';
}

/* Would this plain text read back as something other than a string (null, bool, number,
 * timestamp, merge key)? yaml.v3 also quotes YAML 1.1 booleans and sexagesimal numbers. */
static bool resolves_to_other(const char *s)
{
    static const char *const special[] = {
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE",
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off",
        "Off", "OFF", ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", "+.Inf",
        "+.INF", ".nan", ".NaN", ".NAN", "<<",
    };

    for (size_t i = 0; i < HS_ARRAY_LEN(special); i++)
        if (strcmp(s, special[i]) == 0)
            return true;
    /* a date (2006-1-2) and the date-times that start with one */
    if (strspn(s, DIGITS) == 4 && s[4] == '-' && s[5] && strchr(DIGITS, s[5]))
        return true;
    return is_number(s) || is_base60(s);
}

/* libyaml's rules for a plain scalar in block context. */
static bool plain_allowed(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || s[0] == ' ' || s[n - 1] == ' ' || s[n - 1] == ':')
        return false;
    if (strchr(",[]{}#&*!|>'\"%@`", s[0]))
        return false;
    if (strchr("-?:", s[0]) && (s[1] == ' ' || s[1] == '\0'))
        return false;
    if (strncmp(s, "---", 3) == 0 || strncmp(s, "...", 3) == 0)
        return false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f || (p[0] == ':' && p[1] == ' ') || (p[0] == ' ' && p[1] == '#'))
            return false;
    }
    return true;
}

static bool printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int double_quoted(struct hs_buf *out, const char *s)
{
    int rc = hs_buf_puts(out, "\"");

    for (const unsigned char *p = (const unsigned char *)s; *p && rc == 0; p++) {
        if (*p == '"' || *p == '\\')
            rc = hs_buf_appendf(out, "\\%c", *p);
        else if (*p == '\n')
            rc = hs_buf_puts(out, "\\n");
        else if (*p == '\t')
            rc = hs_buf_puts(out, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            rc = hs_buf_appendf(out, "\\x%02X", *p);
        else
            rc = hs_buf_append(out, p, 1);
    }
    return rc == 0 ? hs_buf_puts(out, "\"") : rc;
}

static int single_quoted(struct hs_buf *out, const char *s)
{
    int rc = hs_buf_puts(out, "'");

    for (const char *p = s; *p && rc == 0; p++)
        rc = *p == '\'' ? hs_buf_puts(out, "''") : hs_buf_append(out, p, 1);
    return rc == 0 ? hs_buf_puts(out, "'") : rc;
}

static int indent_to(struct hs_buf *out, int col)
{
    int rc = 0;
    for (int i = 0; i < col && rc == 0; i++)
        rc = hs_buf_puts(out, " ");
    return rc;
}

static int newline(struct hs_buf *out, int col)
{
    int rc = hs_buf_puts(out, "\n");
    return rc == 0 ? indent_to(out, col) : rc;
}

/* A string with line breaks: a literal block ("|-" without a final newline), its lines one
 * step in. */
static int literal(struct hs_buf *out, const char *s, int indent)
{
    size_t n = strlen(s);
    int rc = hs_buf_puts(out, n && s[n - 1] == '\n' ? "|" : "|-");

    for (const char *p = s; rc == 0 && *p;) {
        size_t len = strcspn(p, "\n");
        rc = hs_buf_puts(out, "\n");
        if (rc == 0 && len)
            rc = indent_to(out, indent);
        if (rc == 0)
            rc = hs_buf_append(out, p, len);
        p += len + (p[len] == '\n');
    }
    return rc;
}

static int scalar(struct hs_buf *out, const char *s, int indent)
{
    if (strchr(s, '\n'))
        return literal(out, s, indent);
    if (resolves_to_other(s))
        return double_quoted(out, s);
    if (plain_allowed(s))
        return hs_buf_puts(out, s);
    return printable(s) ? single_quoted(out, s) : double_quoted(out, s);
}

/* The indentation of a block nested in one at col: the next multiple of the step. */
static int nested(int col)
{
    return YAML_STEP * ((col + YAML_STEP) / YAML_STEP);
}

static bool is_block(const json_t *v)
{
    return (json_is_object(v) && json_object_size(v)) || (json_is_array(v) && json_array_size(v));
}

static int node(struct hs_buf *out, const json_t *j, int col, int depth);

/* Keys start at col; the first one is already positioned (after "- " or at column 0). */
static int mapping(struct hs_buf *out, const json_t *j, int col, int depth)
{
    const char *key;
    json_t *v;
    bool first = true;
    int rc = 0;

    json_object_foreach((json_t *)j, key, v) {
        if (!first && rc == 0)
            rc = newline(out, col);
        first = false;
        if (rc == 0)
            rc = scalar(out, key, nested(col));
        if (rc == 0)
            rc = hs_buf_puts(out, ":");
        if (rc == 0)
            rc = is_block(v) ? newline(out, nested(col)) : hs_buf_puts(out, " ");
        if (rc == 0)
            rc = node(out, v, nested(col), depth + 1);
    }
    return rc;
}

/* "- " items at col; a mapping inside one starts right after the dash. */
static int sequence(struct hs_buf *out, const json_t *j, int col, int depth)
{
    size_t i;
    json_t *v;
    int rc = 0;

    json_array_foreach(j, i, v) {
        if (i && rc == 0)
            rc = newline(out, col);
        if (rc == 0)
            rc = hs_buf_puts(out, "- ");
        if (rc == 0)
            rc = node(out, v, col + 2, depth + 1);
    }
    return rc;
}

static int node(struct hs_buf *out, const json_t *j, int col, int depth)
{
    char *text;
    int rc;

    if (depth > YAML_MAX_DEPTH)
        return -E2BIG;
    if (json_is_object(j))
        return json_object_size(j) ? mapping(out, j, col, depth) : hs_buf_puts(out, "{}");
    if (json_is_array(j))
        return json_array_size(j) ? sequence(out, j, col, depth) : hs_buf_puts(out, "[]");
    if (json_is_string(j))
        return scalar(out, json_string_value(j), col);
    text = hs_json_dump(j, JSON_ENCODE_ANY);
    rc = hs_buf_puts(out, text);
    free(text);
    return rc;
}

int cli_render_yaml(const json_t *j, struct hs_buf *out)
{
    int rc = node(out, j, 0, 0);
    return rc == 0 ? hs_buf_puts(out, "\n") : rc;
}
