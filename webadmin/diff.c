/* A line diff for the policy page: a version against the policy in force. The common head
 * and tail are matched directly; the lines between go through a longest-common-subsequence
 * table, which is why the middle is bounded (WA_DIFF_MAX_LINES each side). */
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

struct lines {
    const char **p; /* starts, into the text */
    size_t *len;
    size_t n;
};

static void split_lines(const char *text, struct lines *l)
{
    size_t cap = 1;

    for (const char *s = text; *s; s++)
        cap += *s == '\n';
    l->p = hs_xcalloc(cap, sizeof(*l->p));
    l->len = hs_xcalloc(cap, sizeof(*l->len));
    l->n = 0;
    for (const char *s = text; *s;) {
        size_t len = strcspn(s, "\n");
        l->p[l->n] = s;
        l->len[l->n++] = len;
        s += len + (s[len] == '\n');
    }
}

static bool same(const struct lines *a, size_t i, const struct lines *b, size_t j)
{
    return a->len[i] == b->len[j] && memcmp(a->p[i], b->p[j], a->len[i]) == 0;
}

static void emit(json_t *out, const char *op, const char *p, size_t len)
{
    char *text = hs_strndup(p, len);

    json_array_append_new(out, json_pack("{s:s, s:s}", "op", op, "text", text));
    free(text);
}

/* The middle a[lo..ahi) against b[lo..bhi): table[i][j] is the LCS length of the suffixes. */
static void diff_middle(const struct lines *a, const struct lines *b, size_t lo, size_t ahi,
                        size_t bhi, json_t *out)
{
    size_t na = ahi - lo, nb = bhi - lo, w = nb + 1;
    uint32_t *t = hs_xcalloc((na + 1) * w, sizeof(*t));
    size_t i = 0, j = 0;

    for (size_t x = na; x-- > 0;)
        for (size_t y = nb; y-- > 0;)
            t[x * w + y] = same(a, lo + x, b, lo + y)
                               ? t[(x + 1) * w + y + 1] + 1
                               : (t[(x + 1) * w + y] > t[x * w + y + 1] ? t[(x + 1) * w + y]
                                                                        : t[x * w + y + 1]);
    while (i < na || j < nb) {
        if (i < na && j < nb && same(a, lo + i, b, lo + j)) {
            emit(out, " ", a->p[lo + i], a->len[lo + i]);
            i++, j++;
        } else if (i < na && (j == nb || t[(i + 1) * w + j] >= t[i * w + j + 1])) {
            emit(out, "-", a->p[lo + i], a->len[lo + i]); /* removals first, as diff(1) */
            i++;
        } else {
            emit(out, "+", b->p[lo + j], b->len[lo + j]);
            j++;
        }
    }
    free(t);
}

json_t *wa__line_diff(const char *from, const char *to)
{
    struct lines a, b;
    size_t head = 0, tail = 0;
    json_t *out = NULL;

    split_lines(from, &a);
    split_lines(to, &b);
    while (head < a.n && head < b.n && same(&a, head, &b, head))
        head++;
    while (tail < a.n - head && tail < b.n - head &&
           same(&a, a.n - 1 - tail, &b, b.n - 1 - tail))
        tail++;
    if (a.n - head - tail > WA_DIFF_MAX_LINES || b.n - head - tail > WA_DIFF_MAX_LINES)
        goto out;
    out = json_array();
    for (size_t i = 0; i < head; i++)
        emit(out, " ", a.p[i], a.len[i]);
    diff_middle(&a, &b, head, a.n - tail, b.n - tail, out);
    for (size_t i = a.n - tail; i < a.n; i++)
        emit(out, " ", a.p[i], a.len[i]);
out:
    free(a.p);
    free(a.len);
    free(b.p);
    free(b.len);
    return out;
}
