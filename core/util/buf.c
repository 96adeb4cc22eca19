#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

void hs_buf_init(struct hs_buf *b, size_t max)
{
    *b = (struct hs_buf){ .max = max };
}

void hs_buf_free(struct hs_buf *b)
{
    free(b->data);
    *b = (struct hs_buf){ .max = b->max };
}

void hs_buf_reset(struct hs_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int buf_reserve(struct hs_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 64;
    char *p;

    if (need <= b->cap)
        return 0;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if ((p = realloc(b->data, cap)) == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int hs_buf_append(struct hs_buf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return -E2BIG;
    if (buf_reserve(b, b->len + n + 1) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int hs_buf_puts(struct hs_buf *b, const char *s)
{
    return hs_buf_append(b, s, strlen(s));
}

int hs_buf_appendf(struct hs_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n > b->max - b->len)
        return -E2BIG;
    if (buf_reserve(b, b->len + (size_t)n + 1) < 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *hs_buf_steal(struct hs_buf *b)
{
    char *p = b->data ? b->data : hs_strdup("");
    *b = (struct hs_buf){ .max = b->max };
    return p;
}

int hs_buf_reserve(struct hs_buf *b, size_t n)
{
    if (n > b->max - b->len)
        return -E2BIG;
    return buf_reserve(b, b->len + n + 1);
}

void hs_buf_consume(struct hs_buf *b, size_t n)
{
    if (n >= b->len) {
        hs_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void hs_buf_truncate(struct hs_buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

void hs_buf_trim(struct hs_buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep)
        hs_buf_free(b);
}
