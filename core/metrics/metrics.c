#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"

struct metric {
    struct metric_def d;
    int64_t v;                     /* __atomic */
    const struct metrics_hist *h; /* a histogram's counts (borrowed) */
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
    if (d->type == METRIC_HISTOGRAM) /* the suffixes are the render's */
        return !strstr(d->name, "_bucket") && !strstr(d->name, "_count") &&
               !strstr(d->name, "_sum");
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

static struct metric *add(struct metrics *m, const struct metric_def *d,
                          const struct metrics_hist *h)
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
        x->h = h;
        if (x->d.per_unit < 1)
            x->d.per_unit = 1;
        m->v[m->n++] = x;
    }
    pthread_mutex_unlock(&m->mu);
    return x;
}

struct metric *metrics_add(struct metrics *m, const struct metric_def *d)
{
    return d->type == METRIC_HISTOGRAM ? NULL : add(m, d, NULL);
}

int metrics_add_hist(struct metrics *m, const struct metric_def *d, const struct metrics_hist *h)
{
    return d->type == METRIC_HISTOGRAM && h && add(m, d, h) ? 0 : -EINVAL;
}

int metrics_hist_init(struct metrics_hist *h, const int64_t *bounds, size_t nbounds)
{
    if (nbounds > METRICS_HIST_MAX_BUCKETS)
        return -EINVAL;
    for (size_t i = 1; i < nbounds; i++)
        if (bounds[i] <= bounds[i - 1])
            return -EINVAL;
    *h = (struct metrics_hist){ .bounds = bounds, .nbounds = nbounds };
    return 0;
}

void metrics_hist_observe(struct metrics_hist *h, int64_t v)
{
    size_t i = 0;

    while (i < h->nbounds && v > h->bounds[i]) /* a dozen bounds: a scan beats a search */
        i++;
    __atomic_add_fetch(&h->n[i], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->sum, v, __ATOMIC_RELAXED);
}

void metrics_hist_read(const struct metrics_hist *h, uint64_t *cum, int64_t *sum)
{
    uint64_t total = 0;

    for (size_t i = 0; i <= h->nbounds; i++) {
        total += __atomic_load_n(&h->n[i], __ATOMIC_RELAXED);
        cum[i] = total;
    }
    *sum = __atomic_load_n(&h->sum, __ATOMIC_RELAXED);
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

static double scaled(const struct metric *x, int64_t v)
{
    return (double)v / (double)x->d.per_unit;
}

/* name_bucket{labels,le="b"} for each bound and +Inf, then _sum and _count: the count is the
 * +Inf bucket's, so the two always agree. */
static int render_hist(const struct metric *x, struct hs_buf *out)
{
    uint64_t cum[METRICS_HIST_MAX_BUCKETS + 1];
    const char *labels = x->d.labels ? x->d.labels : "", *comma = x->d.labels ? "," : "";
    const char *open = x->d.labels ? "{" : "", *close = x->d.labels ? "}" : "";
    size_t nb = x->h->nbounds;
    int64_t sum;
    int rc = 0;

    metrics_hist_read(x->h, cum, &sum);
    for (size_t i = 0; i < nb && rc == 0; i++)
        rc = hs_buf_appendf(out, "%s_bucket{%s%sle=\"%.15g\"} %llu\n", x->d.name, labels, comma,
                            scaled(x, x->h->bounds[i]), (unsigned long long)cum[i]);
    if (rc == 0)
        rc = hs_buf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", x->d.name, labels, comma,
                            (unsigned long long)cum[nb]);
    if (rc == 0)
        rc = hs_buf_appendf(out, "%s_sum%s%s%s %.15g\n%s_count%s%s%s %llu\n", x->d.name, open,
                            labels, close, scaled(x, sum), x->d.name, open, labels, close,
                            (unsigned long long)cum[nb]);
    return rc;
}

static int render_sample(const struct metric *x, struct hs_buf *out)
{
    int64_t v = metric_get(x);
    const char *open = x->d.labels ? "{" : "", *labels = x->d.labels ? x->d.labels : "",
               *close = x->d.labels ? "}" : "";

    if (x->h)
        return render_hist(x, out);
    if (x->d.per_unit == 1)
        return hs_buf_appendf(out, "%s%s%s%s %lld\n", x->d.name, open, labels, close,
                              (long long)v);
    return hs_buf_appendf(out, "%s%s%s%s %.15g\n", x->d.name, open, labels, close,
                          scaled(x, v));
}

static const char *const type_names[] = {
    [METRIC_COUNTER] = "counter", [METRIC_GAUGE] = "gauge", [METRIC_HISTOGRAM] = "histogram",
};

/* Under mu: the family of m->v[first], its samples wherever they were registered. */
static int render_family(const struct metrics *m, size_t first, struct hs_buf *out)
{
    const struct metric_def *d = &m->v[first]->d;
    int rc = hs_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                            type_names[d->type]);

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
