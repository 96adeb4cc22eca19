#include <criterion/criterion.h>
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
