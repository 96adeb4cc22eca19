/* The overview (counts, the online chart, versions), the DERP and health page, and what a
 * node's page shows of the node's own report. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define OVERVIEW_ONLINE_MAX 20 /* online nodes listed by name on the overview */

/* The chart's drawing area inside its viewBox (CHART_W x CHART_H): the left margin holds the
 * count labels, the bottom one the time labels. */
#define CHART_W 720
#define CHART_H 180
#define CHART_X0 44
#define CHART_X1 (CHART_W - 12)
#define CHART_Y0 (CHART_H - 26) /* the zero line */
#define CHART_Y1 12             /* the top of the scale */
#define CHART_SPAN_US (24 * 3600 * HS_USEC_PER_SEC)
#define CHART_POINTS_MAX 300 /* the server keeps 288 (24 h at 5 min) */

/* The smallest 1, 2 or 5 times a power of ten that is at least n (at least 1). */
static int64_t scale_top(int64_t n)
{
    int64_t p = 1;

    for (;;) {
        if (n <= p)
            return p;
        if (n <= 2 * p)
            return 2 * p;
        if (n <= 5 * p)
            return 5 * p;
        if (p > INT64_MAX / 10)
            return n;
        p *= 10;
    }
}

static int chart_x(int64_t at, int64_t now)
{
    int64_t from = now - CHART_SPAN_US;

    if (at < from)
        at = from;
    if (at > now)
        at = now;
    return CHART_X0 + (int)((at - from) * (CHART_X1 - CHART_X0) / CHART_SPAN_US);
}

static int chart_y(int64_t online, int64_t top)
{
    return CHART_Y0 - (int)(online * (CHART_Y0 - CHART_Y1) / top);
}

/* The points of stats.onlineHistory in the last 24 h as (time, count) pairs; returns their
 * count and the largest count in *peak. */
static size_t chart_points(const json_t *points, int64_t now, int64_t *at, int64_t *online,
                           int64_t *peak)
{
    size_t i, n = 0;
    json_t *p;
    int64_t t;

    *peak = 0;
    json_array_foreach(points, i, p) {
        if (n == CHART_POINTS_MAX || hs_parse_rfc3339(hs_json_str(p, "time"), &t) < 0 ||
            t < now - CHART_SPAN_US - HS_USEC_PER_SEC * 300)
            continue;
        at[n] = t;
        online[n] = json_integer_value(json_object_get(p, "online"));
        if (online[n] < 0)
            online[n] = 0;
        if (online[n] > *peak)
            *peak = online[n];
        n++;
    }
    return n;
}

/* The chart's numbers for overview.html's <svg>: the series as a polyline's points and the
 * area under it, the newest point, the scale and a text alternative. Every value is a number
 * or made of numbers, and the template escapes them all the same. */
static json_t *online_chart(const json_t *history, int64_t online_now)
{
    int64_t now = hs_now_us(), at[CHART_POINTS_MAX], online[CHART_POINTS_MAX], peak, top;
    size_t n = chart_points(json_object_get(history, "points"), now, at, online, &peak);
    struct hs_buf line;
    char label[160];
    json_t *j;
    int x = 0, y = 0;

    top = scale_top(peak > online_now ? peak : online_now);
    hs_buf_init(&line, 1u << 16);
    for (size_t i = 0; i < n; i++) {
        x = chart_x(at[i], now);
        y = chart_y(online[i], top);
        hs_buf_appendf(&line, "%s%d,%d", i ? " " : "", x, y);
    }
    snprintf(label, sizeof(label),
             "Nodes online over the last 24 hours: %" PRId64 " now, %" PRId64 " at most "
             "(a sample every %" PRId64 " minutes)",
             n ? online[n - 1] : online_now, peak,
             (int64_t)json_integer_value(json_object_get(history, "stepSeconds")) / 60);
    j = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:s, s:b, s:s}", "w", CHART_W, "h",
                  CHART_H, "x0", CHART_X0, "x1", CHART_X1, "y0", CHART_Y0, "y1", CHART_Y1,
                  "ymid", (CHART_Y0 + CHART_Y1) / 2, "top", (json_int_t)top, "label", label,
                  "has_points", n > 0, "points", line.len ? line.data : "");
    json_object_set_new(j, "top_half", top % 2 ? json_null() : json_integer(top / 2));
    json_object_set_new(j, "xmid", json_integer((CHART_X0 + CHART_X1) / 2));
    if (n) {
        hs_buf_reset(&line);
        hs_buf_appendf(&line, "%d,%d %s %d,%d", chart_x(at[0], now), CHART_Y0,
                       json_string_value(json_object_get(j, "points")), x, CHART_Y0);
        json_object_set_new(j, "area", json_string(line.data));
        json_object_set_new(j, "last_x", json_integer(x));
        json_object_set_new(j, "last_y", json_integer(y));
        json_object_set_new(j, "last", json_integer(online[n - 1]));
    }
    hs_buf_free(&line);
    return j;
}

/* GET path as JSON, or NULL (nothing written) when the server answered otherwise than 200:
 * for what a page shows beside its main content. -EACCES/-EIO from wa__api mean the page
 * was written already. */
static int api_extra(struct wa_ctx *x, const char *path, json_t **out)
{
    long status;
    int rc;

    *out = NULL;
    if ((rc = wa__api(x, "GET", path, NULL, &status, out)) < 0)
        return rc;
    if (status != 200 || !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
    }
    return 0;
}

/* Renders page name with data (stolen) and the server's /version answer (borrowed; NULL when
 * it gave none) as "server". */
static void render_with_version(struct wa_ctx *x, const char *name, const char *title,
                                json_t *data, json_t *version)
{
    if (version)
        json_object_set(data, "server", version);
    wa__render(x, 200, name, title, data);
}

void wa__page_overview(struct wa_ctx *x)
{
    json_t *users = wa__api_list(x, "/api/v1/user", "users"), *page = NULL, *stats = NULL;
    json_t *version = NULL, *data;

    if (!users)
        return;
    if (!(page = wa__api_node_page(x, "status=online&limit=" WA_STR(OVERVIEW_ONLINE_MAX))) ||
        api_extra(x, "/api/v1/node/stats", &stats) < 0 || api_extra(x, "/version", &version) < 0)
        goto out;
    data = json_pack("{s:I, s:O, s:O, s:O, s:O}", "users", (json_int_t)json_array_size(users),
                     "nodes", json_object_get(page, "count"), "online",
                     json_object_get(page, "online"), "expired",
                     json_object_get(page, "expired"), "online_nodes",
                     json_object_get(page, "nodes"));
    if (stats) {
        json_object_set_new(data, "chart",
                            online_chart(json_object_get(stats, "onlineHistory"),
                                         json_integer_value(json_object_get(page, "online"))));
        json_object_set(data, "client_versions", json_object_get(stats, "clientVersions"));
    }
    render_with_version(x, "overview", "Overview", data, version);
out:
    json_decref(version);
    json_decref(stats);
    json_decref(page);
    json_decref(users);
}

/* ---- DERP map and health ---- */

/* The map's regions as a list ordered by id, each with its nodes, the embedded one marked. */
static json_t *derp_regions(const json_t *answer)
{
    json_t *regions = json_object_get(json_object_get(answer, "derpMap"), "Regions"), *r;
    json_int_t embedded = json_integer_value(json_object_get(answer, "embeddedRegionId"));
    json_t *list = json_array();
    const char *k;
    size_t n;

    json_object_foreach(regions, k, r) {
        json_t *row = json_deep_copy(r);
        json_int_t id = json_integer_value(json_object_get(r, "RegionID"));
        if (!row)
            continue;
        json_object_set_new(row, "embedded", json_boolean(embedded && id == embedded));
        /* insertion keeps the list sorted by id: maps hold tens of regions */
        for (n = 0; n < json_array_size(list); n++)
            if (json_integer_value(json_object_get(json_array_get(list, n), "RegionID")) > id)
                break;
        json_array_insert_new(list, n, row);
    }
    return list;
}

void wa__page_derp(struct wa_ctx *x)
{
    json_t *derp = NULL, *health = NULL, *api_health = NULL, *version = NULL, *data;

    if (api_extra(x, "/api/v1/derpmap", &derp) < 0 || api_extra(x, "/health", &health) < 0 ||
        api_extra(x, "/api/v1/health", &api_health) < 0 || api_extra(x, "/version", &version) < 0)
        goto out;
    data = json_pack("{s:b, s:b, s:b}", "healthy",
                     hs_streq(hs_json_str(health, "status"), "pass"), "database",
                     json_is_true(json_object_get(api_health, "databaseConnectivity")),
                     "have_map", derp != NULL);
    if (derp) {
        json_t *regions = derp_regions(derp);
        json_object_set_new(data, "region_count", json_integer(json_array_size(regions)));
        json_object_set_new(data, "regions", regions);
        json_object_set(data, "sources", json_object_get(derp, "sources"));
    }
    render_with_version(x, "derp", "DERP and health", data, version);
out:
    json_decref(version);
    json_decref(api_health);
    json_decref(health);
    json_decref(derp);
}

/* ---- a node's own report, for its page ---- */

int wa__node_reported(struct wa_ctx *x, uint64_t id, json_t *node)
{
    char *path = hs_aprintf("/api/v1/node/%" PRIu64 "/hostinfo", id);
    json_t *answer = NULL, *hi;
    int rc = api_extra(x, path, &answer);

    free(path);
    if (rc < 0 || !answer)
        return rc;
    hi = json_object_get(answer, "hostinfo");
    json_object_set(node, "endpoints", json_object_get(answer, "endpoints"));
    json_object_set_new(node, "client_version",
                        json_string(hs_json_str(hi, "IPNVersion") ? hs_json_str(hi, "IPNVersion")
                                                                  : ""));
    json_object_set_new(node, "os", json_string(hs_json_str(hi, "OS") ? hs_json_str(hi, "OS")
                                                                      : ""));
    json_object_set(node, "home_derp", json_object_get(answer, "homeDerp"));
    json_decref(answer);
    return 0;
}
