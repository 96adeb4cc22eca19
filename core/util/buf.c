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
    free(b->data ? b->data - b->skip : NULL);
    *b = (struct hs_buf){ .max = b->max };
}

/* What was consumed becomes room again: the contents move to the front of the allocation. */
static void buf_unskip(struct hs_buf *b)
{
    if (!b->skip)
        return;
    memmove(b->data - b->skip, b->data, b->len + 1);
    b->data -= b->skip;
    b->cap += b->skip;
    b->skip = 0;
}

void hs_buf_reset(struct hs_buf *b)
{
    if (b->data) {
        b->data -= b->skip;
        b->cap += b->skip;
        b->skip = 0;
        b->data[0] = '\0';
    }
    b->len = 0;
}

static int buf_reserve(struct hs_buf *b, size_t need)
{
    size_t cap, total;
    char *p;

    if (need <= b->cap)
        return 0;
    if (b->skip >= b->len) { /* moving the rest costs no more than what was consumed */
        buf_unskip(b);
        if (need <= b->cap)
            return 0;
    }
    total = b->skip + b->cap;
    cap = total ? total : 64;
    if (need > SIZE_MAX - b->skip)
        return -ENOMEM;
    while (cap < b->skip + need)
        cap = cap > SIZE_MAX / 2 ? b->skip + need : cap * 2;
    if ((p = realloc(b->data ? b->data - b->skip : NULL, cap)) == NULL)
        return -ENOMEM;
    b->data = p + b->skip;
    b->cap = cap - b->skip;
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
    char *p;

    buf_unskip(b); /* the caller frees what it gets */
    p = b->data ? b->data : hs_strdup("");
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
    b->data += n; /* the NUL after the contents stays where it is */
    b->len -= n;
    b->cap -= n;
    b->skip += n;
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
