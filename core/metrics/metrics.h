/* metrics: counters and gauges by name, rendered in Prometheus' text exposition format
 * (version 0.0.4) for the metrics listener.
 *
 * A metric is one sample: a name, an optional constant label set, and a value kept as an
 * atomic 64-bit integer, so any thread may change it without a lock. Several metrics may
 * share a name (one per label set); they render as one family under one # HELP and # TYPE.
 * Counts that a module already keeps for itself (control_get_stats, derp_server_stats) are
 * copied in by a collector that runs before each render instead of being counted twice.
 *
 * A histogram (struct metrics_hist) is kept by the module that observes, as a few atomic
 * counters (one per bucket and the sum), and registered here by pointer: the render reads
 * it, makes the buckets cumulative and adds +Inf, _sum and _count. */
#ifndef HS_METRICS_H
#define HS_METRICS_H

#include <stdint.h>

#include "util/util.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_TEXT (4u << 20) /* the most a render writes */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* What a metric is. The strings are borrowed for the registry's lifetime (string literals).
 * name: [a-zA-Z_:][a-zA-Z0-9_:]*, a counter's ending in _total. labels: NULL or the text
 * between the braces, k="v" pairs separated by commas, written by us (not escaped here).
 * help: one line, no backslash. per_unit: the value counts 1/per_unit of the unit shown
 * (1000000 for microseconds shown as seconds); 0 or 1 shows it as it is. */
struct metric_def {
    const char *name, *labels, *help;
    enum metric_type type;
    int64_t per_unit;
};

struct metrics;
struct metric;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m); /* NULL is fine; every metric handle goes with it */

/* Registers d (copied; its strings borrowed). NULL when the name is not a valid metric name,
 * a counter's name does not end in _total, or the name is taken with another type. Any
 * thread; the metric renders from the next render on. */
struct metric *metrics_add(struct metrics *m, const struct metric_def *d);

/* Any thread, lock-free. NULL does nothing (a metric that failed to register). */
void metric_add(struct metric *x, int64_t n);
void metric_set(struct metric *x, int64_t v);
int64_t metric_get(const struct metric *x);

/* Buckets by upper bound (inclusive, ascending, in the unit observed); +Inf is implied.
 * Observing is a few relaxed atomic adds, from any thread. */
#define METRICS_HIST_MAX_BUCKETS 16
struct metrics_hist {
    const int64_t *bounds; /* borrowed (a static table) */
    size_t nbounds;
    uint64_t n[METRICS_HIST_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
    int64_t sum;
};

/* -EINVAL (nothing set) when there are more than METRICS_HIST_MAX_BUCKETS bounds or they do
 * not ascend. */
int metrics_hist_init(struct metrics_hist *h, const int64_t *bounds, size_t nbounds);
void metrics_hist_observe(struct metrics_hist *h, int64_t v);
/* Reads h into cumulative counts (cum[i]: observations <= bounds[i]; cum[nbounds]: all of
 * them) and the sum. Observations made meanwhile may be in the counts and not the sum. */
void metrics_hist_read(const struct metrics_hist *h, uint64_t *cum, int64_t *sum);

/* Registers the histogram h under d (d->type METRIC_HISTOGRAM; the name without _bucket,
 * _sum, _count; labels as for metrics_add, without le). h is borrowed: it must outlive the
 * registry. d->per_unit scales bounds and sum as for metrics_add. -EINVAL as metrics_add
 * refuses. Any thread. */
int metrics_add_hist(struct metrics *m, const struct metric_def *d, const struct metrics_hist *h);

/* fn(arg) runs at the start of every render, on the rendering thread, to copy counts kept
 * elsewhere into their metrics. It may run on two threads at once (two scrapes). */
void metrics_on_render(struct metrics *m, void (*fn)(void *arg), void *arg);

/* Runs the collectors, then appends every family to out: # HELP, # TYPE, its samples, in
 * the order of first registration. 0, or -E2BIG when out's maximum was reached. */
int metrics_render(struct metrics *m, struct hs_buf *out);

#endif
