#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"

struct metric {
    struct metric_def d;
    int64_t v; /* __atomic */
};

struct collector {
    void (*fn)(void *arg);
    void *arg;
};

struct metrics {
    pthread_mutex_t mu; /* the two lists (the values are atomic) */
    struct metric **v;
    size_t n, cap;
    struct collector *col;
    size_t ncol;
};

struct metrics *metrics_new(void)
{
    struct metrics *m = hs_xcalloc(1, sizeof(*m));

    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i]);
    free(m->v);
    free(m->col);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_name(const char *s)
{
    static const char first[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:";
    size_t len = s ? strlen(s) : 0;

    return len && strchr(first, s[0]) &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:") == len;
}

static bool valid_def(const struct metric_def *d)
{
    size_t len = d->name ? strlen(d->name) : 0;

    if (!valid_name(d->name) || !d->help || strpbrk(d->help, "\\\n"))
        return false;
    return d->type != METRIC_COUNTER || (len > 6 && strcmp(d->name + len - 6, "_total") == 0);
}

/* Under mu: another type under the same name would make two families of one name. */
static bool type_clash(const struct metrics *m, const struct metric_def *d)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i]->d.name, d->name) == 0 && m->v[i]->d.type != d->type)
            return true;
    return false;
}

struct metric *metrics_add(struct metrics *m, const struct metric_def *d)
{
    struct metric *x = NULL;

    if (!valid_def(d))
        return NULL;
    pthread_mutex_lock(&m->mu);
    if (!type_clash(m, d)) {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 32;
            m->v = hs_xrealloc(m->v, m->cap * sizeof(*m->v));
        }
        x = hs_xcalloc(1, sizeof(*x));
        x->d = *d;
        if (x->d.per_unit < 1)
            x->d.per_unit = 1;
        m->v[m->n++] = x;
    }
    pthread_mutex_unlock(&m->mu);
    return x;
}

void metric_add(struct metric *x, int64_t n)
{
    if (x)
        __atomic_add_fetch(&x->v, n, __ATOMIC_RELAXED);
}

void metric_set(struct metric *x, int64_t v)
{
    if (x)
        __atomic_store_n(&x->v, v, __ATOMIC_RELAXED);
}

int64_t metric_get(const struct metric *x)
{
    return x ? __atomic_load_n(&x->v, __ATOMIC_RELAXED) : 0;
}

void metrics_on_render(struct metrics *m, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&m->mu);
    m->col = hs_xrealloc(m->col, (m->ncol + 1) * sizeof(*m->col));
    m->col[m->ncol++] = (struct collector){ fn, arg };
    pthread_mutex_unlock(&m->mu);
}

static int render_sample(const struct metric *x, struct hs_buf *out)
{
    int64_t v = metric_get(x);
    const char *open = x->d.labels ? "{" : "", *labels = x->d.labels ? x->d.labels : "",
               *close = x->d.labels ? "}" : "";

    if (x->d.per_unit == 1)
        return hs_buf_appendf(out, "%s%s%s%s %lld\n", x->d.name, open, labels, close,
                              (long long)v);
    return hs_buf_appendf(out, "%s%s%s%s %.15g\n", x->d.name, open, labels, close,
                          (double)v / (double)x->d.per_unit);
}

/* Under mu: the family of m->v[first], its samples wherever they were registered. */
static int render_family(const struct metrics *m, size_t first, struct hs_buf *out)
{
    const struct metric_def *d = &m->v[first]->d;
    int rc = hs_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                            d->type == METRIC_COUNTER ? "counter" : "gauge");

    for (size_t i = first; i < m->n && rc == 0; i++)
        if (strcmp(m->v[i]->d.name, d->name) == 0)
            rc = render_sample(m->v[i], out);
    return rc;
}

static bool rendered_before(const struct metrics *m, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(m->v[j]->d.name, m->v[i]->d.name) == 0)
            return true;
    return false;
}

int metrics_render(struct metrics *m, struct hs_buf *out)
{
    struct collector *col;
    size_t ncol;
    int rc = 0;

    /* Collectors run outside mu: they take other modules' locks. */
    pthread_mutex_lock(&m->mu);
    ncol = m->ncol;
    col = hs_xcalloc(ncol ? ncol : 1, sizeof(*col));
    if (ncol)
        memcpy(col, m->col, ncol * sizeof(*col));
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < ncol; i++)
        col[i].fn(col[i].arg);
    free(col);
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n && rc == 0; i++)
        if (!rendered_before(m, i))
            rc = render_family(m, i, out);
    pthread_mutex_unlock(&m->mu);
    return rc;
}
