/* The template engine: compile once (following the HTML to fix each value's escaping), render
 * many times. tmpl.h has the syntax and the contexts. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "webadmin/tmpl.h"

enum piece_kind { P_TEXT, P_VALUE, P_SECTION, P_INVERTED, P_END };

/* Where a value stands, which decides its escaping. */
enum value_ctx { CTX_TEXT, CTX_ATTR, CTX_URL_START, CTX_URL_PART };

struct piece {
    enum piece_kind kind;
    enum value_ctx ctx;     /* P_VALUE */
    size_t off, len;        /* P_TEXT: the bytes in src */
    char name[TMPL_MAX_NAME + 1];
    size_t end;             /* P_SECTION / P_INVERTED: index of the matching P_END */
};

struct tmpl {
    char *src;
    struct piece *pieces;
    size_t n;
};

/* ---- the HTML tokenizer state, as far as escaping needs it ---- */

enum html_state {
    H_TEXT, H_TAG_NAME, H_TAG, H_ATTR_NAME, H_AFTER_ATTR_NAME, H_BEFORE_VALUE, H_VALUE_DQ,
    H_VALUE_SQ, H_VALUE_UNQ, H_RAWTEXT, H_COMMENT,
};

#define HTML_NAME_MAX 16

struct html {
    enum html_state st;
    bool end_tag;
    char tag[HTML_NAME_MAX + 1];
    char attr[HTML_NAME_MAX + 1];
    size_t tag_len, attr_len;
    size_t value_len; /* bytes of the current attribute value so far (values count as one) */
};

static void name_add(char *name, size_t *len, char c)
{
    if (*len < HTML_NAME_MAX) {
        name[(*len)++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        name[*len] = '\0';
    }
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static void tag_done(struct html *h)
{
    bool raw = !h->end_tag && (strcmp(h->tag, "script") == 0 || strcmp(h->tag, "style") == 0);
    h->st = raw ? H_RAWTEXT : H_TEXT;
}

static void attr_start(struct html *h, char c)
{
    h->st = H_ATTR_NAME;
    h->attr_len = 0;
    h->attr[0] = '\0';
    h->value_len = 0;
    name_add(h->attr, &h->attr_len, c);
}

/* "<" in text: a tag, an end tag, a comment or declaration, or just a character. Returns the
 * bytes consumed after the '<'. */
static size_t text_lt(struct html *h, const char *p, const char *end)
{
    h->tag_len = 0;
    h->tag[0] = '\0';
    h->end_tag = false;
    if (end - p >= 3 && memcmp(p, "!--", 3) == 0) {
        h->st = H_COMMENT;
        return 3;
    }
    if (p < end && (*p == '!' || *p == '?')) {
        h->st = H_TAG; /* <!DOCTYPE ...>: attribute-like words up to '>' */
        return 1;
    }
    if (p < end && *p == '/') {
        h->end_tag = true;
        h->st = H_TAG_NAME;
        return 1;
    }
    if (p < end && ((*p | 32) >= 'a' && (*p | 32) <= 'z'))
        h->st = H_TAG_NAME;
    return 0;
}

/* In <script> or <style>: only "</tag" ends it. */
static size_t rawtext_step(struct html *h, const char *p, const char *end)
{
    size_t n = h->tag_len;

    if (*p == '<' && (size_t)(end - p) > n + 1 && p[1] == '/' &&
        strncasecmp(p + 2, h->tag, n) == 0) {
        h->st = H_TAG_NAME;
        h->end_tag = true;
        return n + 2;
    }
    return 1;
}

static size_t html_step(struct html *h, const char *p, const char *end)
{
    char c = *p;

    switch (h->st) {
    case H_TEXT:
        return c == '<' ? 1 + text_lt(h, p + 1, end) : 1;
    case H_RAWTEXT:
        return rawtext_step(h, p, end);
    case H_COMMENT:
        if (end - p >= 3 && memcmp(p, "-->", 3) == 0) {
            h->st = H_TEXT;
            return 3;
        }
        return 1;
    case H_TAG_NAME:
        if (is_space(c) || c == '/')
            h->st = H_TAG;
        else if (c == '>')
            tag_done(h);
        else
            name_add(h->tag, &h->tag_len, c);
        return 1;
    case H_TAG:
        if (c == '>')
            tag_done(h);
        else if (!is_space(c) && c != '/')
            attr_start(h, c);
        return 1;
    case H_ATTR_NAME:
    case H_AFTER_ATTR_NAME:
        if (c == '=')
            h->st = H_BEFORE_VALUE;
        else if (c == '>')
            tag_done(h);
        else if (is_space(c))
            h->st = H_AFTER_ATTR_NAME;
        else if (c == '/')
            h->st = H_TAG;
        else if (h->st == H_ATTR_NAME)
            name_add(h->attr, &h->attr_len, c);
        else
            attr_start(h, c);
        return 1;
    case H_BEFORE_VALUE:
        if (c == '"')
            h->st = H_VALUE_DQ;
        else if (c == '\'')
            h->st = H_VALUE_SQ;
        else if (c == '>')
            tag_done(h);
        else if (!is_space(c))
            h->st = H_VALUE_UNQ;
        return 1;
    case H_VALUE_DQ:
    case H_VALUE_SQ:
        if (c == (h->st == H_VALUE_DQ ? '"' : '\''))
            h->st = H_TAG;
        else
            h->value_len++;
        return 1;
    case H_VALUE_UNQ:
        if (is_space(c))
            h->st = H_TAG;
        else if (c == '>')
            tag_done(h);
        return 1;
    }
    return 1;
}

static void html_feed(struct html *h, const char *p, size_t n)
{
    const char *end = p + n;

    while (p < end)
        p += html_step(h, p, end);
}

static bool url_attr(const char *a)
{
    static const char *const names[] = { "href", "src", "action", "formaction", "poster",
                                         "cite", "data", "srcset", "xlink:href" };

    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++)
        if (strcmp(a, names[i]) == 0)
            return true;
    return false;
}

/* The context of a value at h, or -1 where no escaping makes it safe. */
static int value_ctx(const struct html *h)
{
    if (h->st == H_TEXT)
        return CTX_TEXT;
    if (h->st != H_VALUE_DQ && h->st != H_VALUE_SQ)
        return -1;
    if (strncmp(h->attr, "on", 2) == 0 || strcmp(h->attr, "style") == 0 ||
        strcmp(h->attr, "srcdoc") == 0 || h->attr_len == HTML_NAME_MAX)
        return -1;
    if (url_attr(h->attr))
        return h->value_len == 0 ? CTX_URL_START : CTX_URL_PART;
    return CTX_ATTR;
}

/* ---- compiling ---- */

struct compiler {
    struct tmpl *t;
    const char *src;
    size_t len;
    struct html html;
    size_t open[TMPL_MAX_DEPTH];        /* indices of the open sections */
    struct html open_html[TMPL_MAX_DEPTH];
    size_t depth;
    /* A section that starts between attributes may end inside an attribute name (as in
     * `{{#on}} selected{{/on}}>`): whether it was rendered or not, the tag must then end right
     * after it, so that what follows is read the same either way. */
    bool tag_must_end;
    size_t cap;                         /* pieces allocated */
    char *err;
    size_t errsize;
};

static int fail(struct compiler *c, size_t at, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct compiler *c, size_t at, int rc, const char *fmt, ...)
{
    size_t line = 1;
    int n;
    va_list ap;

    for (size_t i = 0; i < at && i < c->len; i++)
        line += c->src[i] == '\n';
    n = snprintf(c->err, c->errsize, "line %zu: ", line);
    if (n >= 0 && (size_t)n < c->errsize) {
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errsize - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static struct piece *add_piece(struct compiler *c, enum piece_kind kind)
{
    struct piece *p;

    if (c->t->n == c->cap) {
        if (c->cap == TMPL_MAX_PIECES)
            return NULL;
        c->cap = c->cap ? c->cap * 2 : 64;
        if (c->cap > TMPL_MAX_PIECES)
            c->cap = TMPL_MAX_PIECES;
        c->t->pieces = hs_xrealloc(c->t->pieces, c->cap * sizeof(struct piece));
    }
    p = &c->t->pieces[c->t->n++];
    *p = (struct piece){ .kind = kind };
    return p;
}

static bool name_valid(const char *s, size_t n)
{
    if (n == 0 || n > TMPL_MAX_NAME)
        return false;
    if (n == 1 && s[0] == '.')
        return true;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
                  (ch == '.' && i > 0 && i + 1 < n && s[i - 1] != '.');
        if (!ok)
            return false;
    }
    return true;
}

static int add_text(struct compiler *c, size_t off, size_t len)
{
    struct piece *p;

    if (len == 0)
        return 0;
    if (c->tag_must_end && c->src[off] != '>')
        return fail(c, off, -EINVAL, "a section that ends inside a tag's attributes must be "
                    "followed by the tag's '>'");
    c->tag_must_end = false;
    if (!(p = add_piece(c, P_TEXT)))
        return fail(c, off, -E2BIG, "more than %d pieces", TMPL_MAX_PIECES);
    p->off = off;
    p->len = len;
    html_feed(&c->html, c->src + off, len);
    /* "<" is read with the byte after it; a tag cannot be told from text across a {{...}} */
    if (c->html.st == H_TEXT && c->src[off + len - 1] == '<')
        return fail(c, off + len, -EINVAL, "'<' right before {{...}}: write the tag name out");
    return 0;
}

static int open_section(struct compiler *c, size_t at, enum piece_kind kind, const char *name)
{
    struct piece *p;

    if (c->depth == TMPL_MAX_DEPTH)
        return fail(c, at, -E2BIG, "sections nested deeper than %d", TMPL_MAX_DEPTH);
    if (!(p = add_piece(c, kind)))
        return fail(c, at, -E2BIG, "more than %d pieces", TMPL_MAX_PIECES);
    strcpy(p->name, name);
    c->open_html[c->depth] = c->html;
    c->open[c->depth++] = c->t->n - 1;
    return 0;
}

/* The same state, and inside an attribute value the same attribute. */
static bool same_context(const struct html *a, const struct html *b)
{
    bool in_value = a->st == H_VALUE_DQ || a->st == H_VALUE_SQ || a->st == H_VALUE_UNQ;

    return a->st == b->st && (!in_value || strcmp(a->attr, b->attr) == 0);
}

static bool in_tag(enum html_state st)
{
    return st == H_TAG_NAME || st == H_TAG || st == H_ATTR_NAME || st == H_AFTER_ATTR_NAME;
}

/* A section from inside a tag (its name or between attributes) to another such state. */
static bool between_attributes(const struct html *open, const struct html *now)
{
    return in_tag(open->st) && in_tag(now->st) && open->st != now->st;
}

static int close_section(struct compiler *c, size_t at, const char *name)
{
    const struct piece *open;

    if (c->depth == 0)
        return fail(c, at, -EINVAL, "{{/%s}} closes no section", name);
    open = &c->t->pieces[c->open[c->depth - 1]];
    if (strcmp(open->name, name) != 0)
        return fail(c, at, -EINVAL, "{{/%s}} closes {{#%s}}", name, open->name);
    if (between_attributes(&c->open_html[c->depth - 1], &c->html)) {
        c->html.st = H_TAG;
        c->tag_must_end = true;
    } else if (!same_context(&c->open_html[c->depth - 1], &c->html))
        return fail(c, at, -EINVAL, "section %s ends in another HTML context than it starts",
                    name);
    if (!add_piece(c, P_END))
        return fail(c, at, -E2BIG, "more than %d pieces", TMPL_MAX_PIECES);
    /* add_piece may have moved the pieces: find the opening one again */
    c->t->pieces[c->open[c->depth - 1]].end = c->t->n - 1;
    c->depth--;
    return 0;
}

static int add_value(struct compiler *c, size_t at, const char *name)
{
    int ctx = value_ctx(&c->html);
    struct piece *p;

    if (ctx < 0)
        return fail(c, at, -EINVAL, "{{%s}} stands where no escaping makes it safe (inside a "
                    "tag, an unquoted, event or style attribute, a script, style or comment)",
                    name);
    if (!(p = add_piece(c, P_VALUE)))
        return fail(c, at, -E2BIG, "more than %d pieces", TMPL_MAX_PIECES);
    p->ctx = (enum value_ctx)ctx;
    strcpy(p->name, name);
    c->html.value_len++;
    return 0;
}

/* One {{...}} whose inside is src[a, b). */
static int add_tag(struct compiler *c, size_t a, size_t b)
{
    char sigil = c->src[a], name[TMPL_MAX_NAME + 1];
    size_t n;

    if (sigil == '!')
        return 0;
    if (sigil == '#' || sigil == '^' || sigil == '/')
        a++;
    while (a < b && is_space(c->src[a]))
        a++;
    while (b > a && is_space(c->src[b - 1]))
        b--;
    n = b - a;
    if (!name_valid(c->src + a, n))
        return fail(c, a, -EINVAL, "\"%.*s\" is not a name (letters, digits, _ - and . "
                    "between words, at most %d)", (int)(n > 80 ? 80 : n), c->src + a,
                    TMPL_MAX_NAME);
    memcpy(name, c->src + a, n);
    name[n] = '\0';
    if (sigil == '#' || sigil == '^')
        return open_section(c, a, sigil == '#' ? P_SECTION : P_INVERTED, name);
    if (sigil == '/')
        return close_section(c, a, name);
    return add_value(c, a, name);
}

static int compile_all(struct compiler *c)
{
    size_t pos = 0;
    int rc;

    while (pos < c->len) {
        const char *open = memmem(c->src + pos, c->len - pos, "{{", 2), *close;
        size_t a;

        if (!open) {
            if ((rc = add_text(c, pos, c->len - pos)) < 0)
                return rc;
            break;
        }
        a = (size_t)(open - c->src);
        if ((rc = add_text(c, pos, a - pos)) < 0)
            return rc;
        close = memmem(open + 2, c->len - a - 2, "}}", 2);
        if (!close)
            return fail(c, a, -EINVAL, "{{ without }}");
        if (close == open + 2)
            return fail(c, a, -EINVAL, "empty {{}}");
        if ((rc = add_tag(c, a + 2, (size_t)(close - c->src))) < 0)
            return rc;
        pos = (size_t)(close - c->src) + 2;
    }
    if (c->depth > 0)
        return fail(c, c->len, -EINVAL, "section %s is not closed",
                    c->t->pieces[c->open[c->depth - 1]].name);
    if (c->tag_must_end)
        return fail(c, c->len, -EINVAL, "the template ends inside a tag");
    return 0;
}

int tmpl_compile(const char *src, size_t len, struct tmpl **out, char *err, size_t errsize)
{
    struct compiler c = { .src = src, .len = len, .err = err, .errsize = errsize };
    int rc;

    if (errsize)
        err[0] = '\0';
    if (len > TMPL_MAX_SOURCE) {
        snprintf(err, errsize, "template of %zu bytes, more than %u", len, TMPL_MAX_SOURCE);
        return -E2BIG;
    }
    c.t = hs_xcalloc(1, sizeof(*c.t));
    c.t->src = hs_xmalloc(len + 1);
    memcpy(c.t->src, src, len);
    c.t->src[len] = '\0';
    c.src = c.t->src;
    if ((rc = compile_all(&c)) < 0) {
        tmpl_free(c.t);
        return rc;
    }
    *out = c.t;
    return 0;
}

void tmpl_free(struct tmpl *t)
{
    if (!t)
        return;
    free(t->src);
    free(t->pieces);
    free(t);
}

/* ---- escaping ---- */

/* The replacement of one byte that cannot be written as it is. */
static int escape_html_byte(struct hs_buf *out, unsigned char ch)
{
    switch (ch) {
    case '&': return hs_buf_puts(out, "&amp;");
    case '<': return hs_buf_puts(out, "&lt;");
    case '>': return hs_buf_puts(out, "&gt;");
    case '"': return hs_buf_puts(out, "&quot;");
    case '\'': return hs_buf_puts(out, "&#39;");
    default: return hs_buf_append(out, "?", 1); /* NUL or a byte of broken UTF-8 */
    }
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_seq(const char *s, size_t n)
{
    for (size_t len = 1; len <= 4 && len <= n; len++)
        if (hs_utf8_valid(s, len))
            return len;
    return 0;
}

int tmpl_escape_html(struct hs_buf *out, const char *s, size_t n)
{
    size_t run = 0, i = 0;
    int rc;

    while (i < n) {
        unsigned char ch = (unsigned char)s[i];
        size_t seq = ch < 0x80 ? (ch != 0) : utf8_seq(s + i, n - i);

        if (seq > 0 && !strchr("&<>\"'", ch)) {
            i += seq;
            continue;
        }
        if ((rc = hs_buf_append(out, s + run, i - run)) < 0 ||
            (rc = escape_html_byte(out, ch)) < 0)
            return rc;
        run = ++i;
    }
    return hs_buf_append(out, s + run, n - run);
}

int tmpl_escape_url_component(struct hs_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;
    int rc;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char enc[3] = { '%', hex[ch >> 4], hex[ch & 15] };

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~')
            continue;
        if ((rc = hs_buf_append(out, s + run, i - run)) < 0 ||
            (rc = hs_buf_append(out, enc, 3)) < 0)
            return rc;
        run = i + 1;
    }
    return hs_buf_append(out, s + run, n - run);
}

/* A URL that may start an href: a path on this site ("/x", not "//host" or "/\host"), a
 * query or fragment, a relative path with no scheme, or http(s). */
static bool url_start_safe(const char *s, size_t n)
{
    size_t first = strcspn(s, "/?#:");

    if (n >= 1 && s[0] == '\\')
        return false;
    if (n >= 2 && s[0] == '/' && (s[1] == '/' || s[1] == '\\'))
        return false;
    if (first >= n || s[first] != ':')
        return true;
    return (first == 4 && strncasecmp(s, "http", 4) == 0) ||
           (first == 5 && strncasecmp(s, "https", 5) == 0);
}

static int write_string(struct hs_buf *out, enum value_ctx ctx, const char *s, size_t n)
{
    switch (ctx) {
    case CTX_TEXT:
    case CTX_ATTR:
        return tmpl_escape_html(out, s, n);
    case CTX_URL_START:
        if (strlen(s) != n || !url_start_safe(s, n))
            return hs_buf_append(out, "#", 1);
        return tmpl_escape_html(out, s, n);
    case CTX_URL_PART:
        return tmpl_escape_url_component(out, s, n);
    }
    return -EINVAL;
}

static int write_value(struct hs_buf *out, enum value_ctx ctx, const json_t *v)
{
    char num[64];

    if (json_is_string(v))
        return write_string(out, ctx, json_string_value(v), json_string_length(v));
    if (json_is_integer(v))
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(num, sizeof(num), "%g", json_real_value(v));
    else if (json_is_true(v))
        strcpy(num, "true");
    else
        return 0; /* missing, null, false, objects and arrays write nothing */
    return write_string(out, ctx, num, strlen(num));
}

/* ---- rendering ---- */

struct render {
    const struct tmpl *t;
    struct hs_buf *out;
    const json_t *stack[TMPL_MAX_DEPTH + 1];
    size_t depth;
};

/* key of an object, or element key (digits) of an array. */
static const json_t *member(const json_t *v, const char *key)
{
    uint64_t i;

    if (json_is_object(v))
        return json_object_get(v, key);
    if (json_is_array(v) && hs_parse_u64(key, SIZE_MAX, &i) == 0)
        return json_array_get(v, (size_t)i);
    return NULL;
}

static const json_t *lookup(const struct render *r, const char *name)
{
    const char *dot = strchr(name, '.');
    size_t first = dot ? (size_t)(dot - name) : strlen(name);
    const json_t *v = NULL;
    char key[TMPL_MAX_NAME + 1];

    if (strcmp(name, ".") == 0)
        return r->stack[r->depth - 1];
    memcpy(key, name, first);
    key[first] = '\0';
    for (size_t i = r->depth; i-- > 0 && !v;)
        v = json_is_object(r->stack[i]) ? json_object_get(r->stack[i], key) : NULL;
    while (v && dot) {
        name = dot + 1;
        dot = strchr(name, '.');
        first = dot ? (size_t)(dot - name) : strlen(name);
        memcpy(key, name, first);
        key[first] = '\0';
        v = member(v, key);
    }
    return v;
}

static bool truthy(const json_t *v)
{
    if (!v || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_string(v))
        return json_string_length(v) > 0;
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    if (json_is_real(v))
        return json_real_value(v) != 0;
    if (json_is_array(v))
        return json_array_size(v) > 0;
    return true;
}

static int render_range(struct render *r, size_t from, size_t to);

static int render_with(struct render *r, const json_t *ctx, size_t from, size_t to)
{
    int rc;

    r->stack[r->depth++] = ctx;
    rc = render_range(r, from, to);
    r->depth--;
    return rc;
}

static int render_section(struct render *r, const struct piece *p, size_t i)
{
    const json_t *v = lookup(r, p->name);
    size_t k;
    const json_t *el;

    if (p->kind == P_INVERTED)
        return truthy(v) ? 0 : render_range(r, i + 1, p->end);
    if (!truthy(v))
        return 0;
    if (!json_is_array(v))
        return render_with(r, v, i + 1, p->end);
    json_array_foreach(v, k, el) {
        int rc = render_with(r, el, i + 1, p->end);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Sections nest at most TMPL_MAX_DEPTH deep (checked at compile), so this recursion is
 * bounded by the template, not by the data. */
static int render_range(struct render *r, size_t from, size_t to)
{
    int rc = 0;

    for (size_t i = from; i < to && rc == 0; i++) {
        const struct piece *p = &r->t->pieces[i];

        switch (p->kind) {
        case P_TEXT:
            rc = hs_buf_append(r->out, r->t->src + p->off, p->len);
            break;
        case P_VALUE:
            rc = write_value(r->out, p->ctx, lookup(r, p->name));
            break;
        case P_SECTION:
        case P_INVERTED:
            rc = render_section(r, p, i);
            i = p->end;
            break;
        case P_END:
            break;
        }
    }
    return rc;
}

int tmpl_render(const struct tmpl *t, const json_t *data, struct hs_buf *out)
{
    struct render r = { .t = t, .out = out };
    size_t start = out->len;
    int rc = render_with(&r, data, 0, t->n);

    if (rc < 0)
        hs_buf_truncate(out, start);
    return rc;
}
