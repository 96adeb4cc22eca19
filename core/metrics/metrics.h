/* metrics: counters and gauges by name, rendered in Prometheus' text exposition format
 * (version 0.0.4) for the metrics listener.
 *
 * A metric is one sample: a name, an optional constant label set, and a value kept as an
 * atomic 64-bit integer, so any thread may change it without a lock. Several metrics may
 * share a name (one per label set); they render as one family under one # HELP and # TYPE.
 * Counts that a module already keeps for itself (control_get_stats, derp_server_stats) are
 * copied in by a collector that runs before each render instead of being counted twice. */
#ifndef HS_METRICS_H
#define HS_METRICS_H

#include <stdint.h>

#include "util/util.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_TEXT (4u << 20) /* the most a render writes */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE };

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

/* fn(arg) runs at the start of every render, on the rendering thread, to copy counts kept
 * elsewhere into their metrics. It may run on two threads at once (two scrapes). */
void metrics_on_render(struct metrics *m, void (*fn)(void *arg), void *arg);

/* Runs the collectors, then appends every family to out: # HELP, # TYPE, its samples, in
 * the order of first registration. 0, or -E2BIG when out's maximum was reached. */
int metrics_render(struct metrics *m, struct hs_buf *out);

#endif
