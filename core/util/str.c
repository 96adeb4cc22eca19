#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

void *hs_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *hs_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        abort();
    return p;
}

void *hs_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

char *hs_strdup(const char *s)
{
    return s ? hs_strndup(s, strlen(s)) : NULL;
}

char *hs_strndup(const char *s, size_t n)
{
    char *p;
    if (!s)
        return NULL;
    p = hs_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *hs_aprintf(const char *fmt, ...)
{
    va_list ap;
    char *p;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return p;
}

bool hs_streq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool hs_has_prefix(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

size_t hs_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int hs_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (!s || !*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

int hs_parse_i64(const char *s, int64_t *out)
{
    uint64_t v;
    bool neg = false;
    int rc;

    if (s && (*s == '-' || *s == '+')) {
        neg = *s == '-';
        s++;
    }
    if ((rc = hs_parse_u64(s, neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &v)) < 0)
        return rc;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int hs_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1", "t", "y" };
    static const char *const no[] = { "false", "no", "off", "0", "f", "n" };
    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < HS_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Doubles when full: lists built from untrusted input (split DNS, tags) may hold thousands. */
int hs_strv_push(struct hs_strv *sv, const char *s)
{
    if (sv->n + 2 > sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 4;
        sv->cap = cap < sv->n + 2 ? sv->n + 2 : cap;
        sv->v = hs_xrealloc(sv->v, sv->cap * sizeof(char *));
    }
    sv->v[sv->n++] = hs_strdup(s);
    sv->v[sv->n] = NULL;
    return 0;
}

void hs_strv_free(struct hs_strv *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    *sv = (struct hs_strv){ 0 };
}

bool hs_strv_contains(const struct hs_strv *sv, const char *s)
{
    for (size_t i = 0; i < sv->n; i++)
        if (strcmp(sv->v[i], s) == 0)
            return true;
    return false;
}

bool hs_strv_equal(const struct hs_strv *a, const struct hs_strv *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

int hs_strv_copy(struct hs_strv *dst, const struct hs_strv *src)
{
    *dst = (struct hs_strv){ 0 };
    for (size_t i = 0; i < src->n; i++)
        hs_strv_push(dst, src->v[i]);
    return 0;
}

int hs_strv_split(struct hs_strv *sv, const char *s, const char *seps)
{
    while (s && *s) {
        size_t n = strcspn(s, seps);
        if (n) {
            char *part = hs_strndup(s, n);
            hs_strv_push(sv, part);
            free(part);
        }
        s += n;
        s += strspn(s, seps);
    }
    return 0;
}

void hs_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Nibble values plus one (0: not a hex digit): keys are decoded for every row a list reads. */
static const uint8_t hex_value[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
    ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int hs_hex_decode(const char *in, size_t inlen, uint8_t *out, size_t n)
{
    unsigned bad = 0;

    if (inlen != 2 * n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned hi = hex_value[(uint8_t)in[2 * i]], lo = hex_value[(uint8_t)in[2 * i + 1]];
        bad |= (hi == 0) | (lo == 0);
        out[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
    }
    return bad ? -EINVAL : 0;
}

const char *hs_strerror(int rc)
{
    return strerror(rc < 0 ? -rc : rc);
}
