/* Lists of ids (node, user and key ids): grown by doubling, sorted for binary searches. */
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

int hs_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void hs_ids_push(struct hs_ids *s, uint64_t id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = hs_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = id;
}

void hs_ids_free(struct hs_ids *s)
{
    free(s->v);
    *s = (struct hs_ids){ 0 };
}

size_t hs_ids_lower(const uint64_t *v, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool hs_ids_has(const uint64_t *v, size_t n, uint64_t id)
{
    size_t i = hs_ids_lower(v, n, id);
    return i < n && v[i] == id;
}

size_t hs_ids_sort_unique(uint64_t *v, size_t n)
{
    size_t k = 0;

    if (n > 1)
        qsort(v, n, sizeof(*v), hs_u64_cmp);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || v[k - 1] != v[i])
            v[k++] = v[i];
    return k;
}

bool hs_ids_set(struct hs_ids *s, uint64_t id, bool in)
{
    size_t i = hs_ids_lower(s->v, s->n, id);
    bool there = i < s->n && s->v[i] == id;

    if (in == there)
        return false;
    if (!in) {
        memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof(*s->v));
        s->n--;
        return true;
    }
    hs_ids_push(s, id); /* makes room; the id goes in its place below */
    memmove(s->v + i + 1, s->v + i, (s->n - 1 - i) * sizeof(*s->v));
    s->v[i] = id;
    return true;
}
