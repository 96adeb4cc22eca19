#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "metrics/metrics.h"

static struct metric *counter(struct metrics *m, const char *name, const char *labels)
{
    return metrics_add(m, &(struct metric_def){ .name = name, .labels = labels, .help = "h",
                                                .type = METRIC_COUNTER });
}

static struct metric *gauge(struct metrics *m, const char *name, int64_t per_unit)
{
    return metrics_add(m, &(struct metric_def){ .name = name, .help = "a gauge",
                                                .type = METRIC_GAUGE, .per_unit = per_unit });
}

static char *render(struct metrics *m)
{
    struct hs_buf b;

    hs_buf_init(&b, METRICS_MAX_TEXT);
    cr_assert_eq(metrics_render(m, &b), 0);
    return hs_buf_steal(&b);
}

Test(metrics, samples_of_a_name_render_as_one_family)
{
    struct metrics *m = metrics_new();
    struct metric *full = counter(m, "x_sent_total", "type=\"full\"");
    struct metric *g = gauge(m, "y", 0);
    struct metric *delta = counter(m, "x_sent_total", "type=\"delta\"");
    char *text;

    metric_add(full, 2);
    metric_add(full, 1);
    metric_set(g, -4);
    metric_add(delta, 7);
    text = render(m);
    cr_assert_str_eq(text, "# HELP x_sent_total h\n# TYPE x_sent_total counter\n"
                           "x_sent_total{type=\"full\"} 3\nx_sent_total{type=\"delta\"} 7\n"
                           "# HELP y a gauge\n# TYPE y gauge\ny -4\n");
    free(text);
    metrics_free(m);
}

Test(metrics, per_unit_shows_fractions)
{
    struct metrics *m = metrics_new();
    char *text;

    metric_set(gauge(m, "t_seconds", 1000000), 1250000);
    text = render(m);
    cr_assert(strstr(text, "\nt_seconds 1.25\n"), "%s", text);
    free(text);
    metrics_free(m);
}

Test(metrics, bad_definitions_are_refused)
{
    struct metrics *m = metrics_new();

    cr_assert_null(counter(m, "no_suffix", NULL), "a counter ends in _total");
    cr_assert_null(counter(m, "9lives_total", NULL));
    cr_assert_null(counter(m, "a-b_total", NULL));
    cr_assert_null(counter(m, "", NULL));
    cr_assert_null(metrics_add(m, &(struct metric_def){ .name = "z", .help = "two\nlines",
                                                        .type = METRIC_GAUGE }));
    cr_assert_not_null(gauge(m, "same_total", 0));
    cr_assert_null(counter(m, "same_total", NULL), "one name, one type");
    metric_add(NULL, 1); /* a metric that did not register is a no-op */
    cr_assert_eq(metric_get(NULL), 0);
    metrics_free(m);
}

static void bump(void *arg)
{
    metric_add(arg, 10);
}

Test(metrics, collectors_run_before_each_render)
{
    struct metrics *m = metrics_new();
    struct metric *g = gauge(m, "g", 0);
    char *text;

    metrics_on_render(m, bump, g);
    free(render(m));
    text = render(m);
    cr_assert(strstr(text, "\ng 20\n"), "%s", text);
    free(text);
    metrics_free(m);
}

Test(metrics, render_stops_at_the_buffer_maximum)
{
    struct metrics *m = metrics_new();
    struct hs_buf b;

    gauge(m, "a_rather_long_metric_name", 0);
    hs_buf_init(&b, 16);
    cr_assert_eq(metrics_render(m, &b), -E2BIG);
    hs_buf_free(&b);
    metrics_free(m);
}

static const int64_t ms_bounds[] = { 1000, 5000, 25000 };

Test(metrics, histogram_renders_cumulative_buckets_sum_and_count)
{
    struct metrics *m = metrics_new();
    struct metrics_hist h;
    char *text;

    cr_assert_eq(metrics_hist_init(&h, ms_bounds, 3), 0);
    cr_assert_eq(metrics_add_hist(m, &(struct metric_def){ .name = "op_seconds", .help = "ops",
                                                           .labels = "operation=\"select\"",
                                                           .type = METRIC_HISTOGRAM,
                                                           .per_unit = 1000000 }, &h), 0);
    metrics_hist_observe(&h, 1000);   /* on a bound: that bucket */
    metrics_hist_observe(&h, 1001);   /* just past it: the next */
    metrics_hist_observe(&h, 3000);
    metrics_hist_observe(&h, 900000); /* past every bound: +Inf only */
    text = render(m);
    cr_assert_str_eq(text, "# HELP op_seconds ops\n# TYPE op_seconds histogram\n"
                           "op_seconds_bucket{operation=\"select\",le=\"0.001\"} 1\n"
                           "op_seconds_bucket{operation=\"select\",le=\"0.005\"} 3\n"
                           "op_seconds_bucket{operation=\"select\",le=\"0.025\"} 3\n"
                           "op_seconds_bucket{operation=\"select\",le=\"+Inf\"} 4\n"
                           "op_seconds_sum{operation=\"select\"} 0.905001\n"
                           "op_seconds_count{operation=\"select\"} 4\n");
    free(text);
    metrics_free(m);
}

Test(metrics, histogram_without_labels_and_empty)
{
    struct metrics *m = metrics_new();
    struct metrics_hist h;
    char *text;

    cr_assert_eq(metrics_hist_init(&h, ms_bounds, 1), 0);
    cr_assert_eq(metrics_add_hist(m, &(struct metric_def){ .name = "size", .help = "s",
                                                           .type = METRIC_HISTOGRAM }, &h), 0);
    text = render(m);
    cr_assert_str_eq(text, "# HELP size s\n# TYPE size histogram\nsize_bucket{le=\"1000\"} 0\n"
                           "size_bucket{le=\"+Inf\"} 0\nsize_sum 0\nsize_count 0\n");
    free(text);
    metrics_free(m);
}

Test(metrics, histogram_bad_bounds_and_definitions_are_refused)
{
    static const int64_t down[] = { 5, 5 };
    static const int64_t many[METRICS_HIST_MAX_BUCKETS + 1] = { 0 };
    struct metrics *m = metrics_new();
    struct metrics_hist h = { 0 };
    struct metric_def d = { .name = "x_count", .help = "h", .type = METRIC_HISTOGRAM };

    cr_assert_eq(metrics_hist_init(&h, down, 2), -EINVAL);
    cr_assert_eq(metrics_hist_init(&h, many, METRICS_HIST_MAX_BUCKETS + 1), -EINVAL);
    cr_assert_eq(metrics_hist_init(&h, ms_bounds, 3), 0);
    cr_assert_eq(metrics_add_hist(m, &d, &h), -EINVAL); /* a suffix of the render's */
    d.name = "x";
    cr_assert_eq(metrics_add_hist(m, &d, NULL), -EINVAL);
    cr_assert_null(metrics_add(m, &d)); /* a histogram needs its counts */
    d.type = METRIC_GAUGE;
    cr_assert_eq(metrics_add_hist(m, &d, &h), -EINVAL);
    cr_assert_not_null(metrics_add(m, &d));
    d.type = METRIC_HISTOGRAM; /* the name is a gauge's now */
    cr_assert_eq(metrics_add_hist(m, &d, &h), -EINVAL);
    metrics_free(m);
}

static void *observe_3000(void *arg)
{
    for (int i = 0; i < 3000; i++)
        metrics_hist_observe(arg, i * 10);
    return NULL;
}

Test(metrics, histogram_observes_from_many_threads)
{
    struct metrics_hist h;
    pthread_t t[4];
    uint64_t cum[4];
    int64_t sum;

    cr_assert_eq(metrics_hist_init(&h, ms_bounds, 3), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, observe_3000, &h), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    metrics_hist_read(&h, cum, &sum);
    cr_assert_eq(cum[0], 4 * 101); /* 0..1000 */
    cr_assert_eq(cum[1], 4 * 501);
    cr_assert_eq(cum[2], 4 * 2501);
    cr_assert_eq(cum[3], 4 * 3000);
    cr_assert_eq(sum, 4 * 10 * 2999 * 3000 / 2);
}
