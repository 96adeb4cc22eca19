/* application/x-www-form-urlencoded bodies and queries, and Cookie headers: bounded, and
 * checked to be UTF-8 without NULs. */
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 32);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes s[0, n) ('+' is a space, %XX a byte) into a new string; -EINVAL on a bad escape,
 * a NUL or invalid UTF-8. */
static int decode(const char *s, size_t n, char **out)
{
    char *d = hs_xmalloc(n + 1);
    size_t j = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (c == '%') {
            int hi = n - i > 2 ? hexval(s[i + 1]) : -1;
            int lo = n - i > 2 ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                goto bad;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0')
            goto bad;
        d[j++] = c;
    }
    d[j] = '\0';
    if (!hs_utf8_valid(d, j))
        goto bad;
    *out = d;
    return 0;
bad:
    free(d);
    return -EINVAL;
}

static int add_field(struct wa_form *f, const char *s, size_t n)
{
    const char *eq = memchr(s, '=', n);
    size_t nlen = eq ? (size_t)(eq - s) : n;
    char *name, *value;

    if (f->n == WA_MAX_FIELDS || n > WA_MAX_FIELD_LEN)
        return -E2BIG;
    if (decode(s, nlen, &name) < 0)
        return -EINVAL;
    if (decode(eq ? eq + 1 : s + n, eq ? n - nlen - 1 : 0, &value) < 0) {
        free(name);
        return -EINVAL;
    }
    f->name[f->n] = name;
    f->value[f->n++] = value;
    return 0;
}

int wa__form_parse(struct wa_form *f, const char *s, size_t len)
{
    size_t pos = 0;

    *f = (struct wa_form){ 0 };
    while (pos < len) {
        const char *amp = memchr(s + pos, '&', len - pos);
        size_t n = amp ? (size_t)(amp - (s + pos)) : len - pos;
        int rc = n > 0 ? add_field(f, s + pos, n) : 0;

        if (rc < 0) {
            wa__form_free(f);
            return rc;
        }
        pos += n + 1;
    }
    return 0;
}

void wa__form_free(struct wa_form *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->name[i]);
        free(f->value[i]);
    }
    *f = (struct wa_form){ 0 };
}

const char *wa__form_get(const struct wa_form *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->name[i], name) == 0)
            return f->value[i];
    return NULL;
}

bool wa__cookie_get(const char *header, const char *name, char *out, size_t outsize)
{
    size_t nlen = strlen(name);
    const char *p = header;

    while (p && *p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);

        while (n > 0 && *p == ' ') {
            p++;
            n--;
        }
        if (n > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t vlen = n - nlen - 1;
            if (vlen >= outsize)
                return false;
            memcpy(out, p + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

json_t *wa__form_words(const struct wa_form *f, const char *name)
{
    const char *text = wa__form_get(f, name);
    struct hs_strv words = { 0 };
    json_t *arr = json_array();

    hs_strv_split(&words, text ? text : "", " ,\t\r\n");
    for (size_t i = 0; i < words.n; i++)
        json_array_append_new(arr, json_string(words.v[i]));
    hs_strv_free(&words);
    return arr;
}
