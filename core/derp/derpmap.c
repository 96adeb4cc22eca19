/* derp: the current DERP map, merged from derp.urls and derp.paths, and its refresher.
 *
 * Each source keeps the regions of its last good load, so a source that fails on a refresh
 * keeps contributing what it had instead of dropping its regions. A source that cannot be
 * loaded at start does not stop the server (headscale 0.22.3 started without it, 0.29.3
 * refuses to start): it is retried with a backoff until it loads, even without auto-update.
 * The published map is a deep copy that shares nothing with the sources; derpmap_get()
 * hands out deep copies too, so no jansson object is ever shared between threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "derp/derp_internal.h"

#define DERPMAP_RETRY_MIN_US (5 * HS_USEC_PER_SEC)
#define DERPMAP_RETRY_MAX_SHIFT 6 /* 5 s doubling stops at 320 s... */
#define DERPMAP_RETRY_MAX_US (300 * HS_USEC_PER_SEC) /* ...and never waits past 5 min */
#define DERPMAP_ERR_MAX 256

struct derp_source {
    char *where; /* URL or file path */
    bool url;
    json_t *regions; /* last good load: {"<id>": region or null}; NULL before the first */
};

struct derpmap {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled on stop */
    json_t *map;       /* guarded by mu */
    struct derp_source *src;
    size_t nsrc;
    bool refresh; /* derp.auto_update_enabled with a period: reload every source each period */
    int64_t period_us;
    atomic_bool stop;
    bool running;
    pthread_t thread;
    derpmap_change_fn on_change;
    void *on_change_arg;
    json_t *embedded; /* the embedded relay's region, guarded by mu; wins every clash */
    size_t published_loaded, published_nsrc; /* sources behind map, guarded by mu */
};

static char *resolve_path(const struct hs_config *cfg, const char *path)
{
    if (path[0] == '/' || !cfg->dir || !*cfg->dir)
        return hs_strdup(path);
    return hs_aprintf("%s/%s", cfg->dir, path);
}

/* headscale's order: every URL, then every file; later sources win a region-id clash. */
static void add_sources(struct derpmap *dm, const struct hs_config *cfg)
{
    dm->nsrc = cfg->derp_urls.n + cfg->derp_paths.n;
    dm->src = hs_xcalloc(dm->nsrc ? dm->nsrc : 1, sizeof(*dm->src));
    for (size_t i = 0; i < cfg->derp_urls.n; i++) {
        dm->src[i].where = hs_strdup(cfg->derp_urls.v[i]);
        dm->src[i].url = true;
    }
    for (size_t i = 0; i < cfg->derp_paths.n; i++)
        dm->src[cfg->derp_urls.n + i].where = resolve_path(cfg, cfg->derp_paths.v[i]);
}

static int read_source(struct derpmap *dm, const struct derp_source *s, char **text, size_t *len,
                       char *err, size_t errsize)
{
    struct hs_buf b;
    int rc;

    if (!s->url) {
        if ((rc = hs_read_file(s->where, DERPMAP_MAX_BYTES, text, len)) < 0)
            snprintf(err, errsize, "%s", hs_strerror(rc));
        return rc;
    }
    if ((rc = derp__fetch_url(s->where, &dm->stop, &b, err, errsize)) < 0)
        return rc;
    *len = b.len;
    *text = hs_buf_steal(&b);
    return 0;
}

/* Loads one source; on failure its previous regions stay and err says why. */
static int load_source(struct derpmap *dm, struct derp_source *s, char *err, size_t errsize)
{
    char *text = NULL;
    size_t len = 0;
    json_t *m = NULL;
    int rc;

    if ((rc = read_source(dm, s, &text, &len, err, errsize)) == 0) {
        m = derpmap_parse(text, len, err, errsize);
        rc = m ? 0 : -EINVAL;
    }
    free(text);
    if (rc < 0)
        return rc;
    json_decref(s->regions);
    s->regions = json_incref(json_object_get(m, "Regions"));
    json_decref(m);
    return 0;
}

static json_t *merge_sources(const struct derpmap *dm, json_t *embedded)
{
    json_t *regions = json_object(), *v;
    const char *k;
    char id[24];

    for (size_t i = 0; i < dm->nsrc; i++) {
        json_object_foreach(dm->src[i].regions, k, v) {
            if (json_is_null(v))
                json_object_del(regions, k);
            else
                json_object_set_new(regions, k, json_deep_copy(v));
        }
    }
    if (embedded) {
        snprintf(id, sizeof(id), "%lld",
                 (long long)json_integer_value(json_object_get(embedded, "RegionID")));
        json_object_set_new(regions, id, json_deep_copy(embedded));
    }
    return json_pack("{s:o}", "Regions", regions);
}

/* Loads every source, or only those that never loaded; returns how many failed. */
static size_t load_all(struct derpmap *dm, bool only_missing)
{
    char err[DERPMAP_ERR_MAX];
    size_t failed = 0;

    for (size_t i = 0; i < dm->nsrc && !atomic_load(&dm->stop); i++) {
        if (only_missing && dm->src[i].regions)
            continue;
        err[0] = '\0';
        if (load_source(dm, &dm->src[i], err, sizeof(err)) < 0) {
            log_warnx("derp: %s: cannot load the DERP map: %s", dm->src[i].where, err);
            failed++;
        }
    }
    return failed;
}

static size_t never_loaded(const struct derpmap *dm)
{
    size_t n = 0;

    for (size_t i = 0; i < dm->nsrc; i++)
        n += !dm->src[i].regions;
    return n;
}

/* Swaps in the merged map; true when it differs from the previous one. */
static bool publish(struct derpmap *dm)
{
    json_t *m, *old, *embedded;
    bool changed;

    pthread_mutex_lock(&dm->mu);
    embedded = json_incref(dm->embedded);
    pthread_mutex_unlock(&dm->mu);
    m = merge_sources(dm, embedded);
    json_decref(embedded);

    pthread_mutex_lock(&dm->mu);
    old = dm->map;
    changed = !json_equal(old, m);
    dm->map = m;
    dm->published_nsrc = dm->nsrc;
    dm->published_loaded = dm->nsrc - never_loaded(dm);
    pthread_mutex_unlock(&dm->mu);
    json_decref(old);
    return changed;
}

static void init_sync(struct derpmap *dm)
{
    pthread_mutex_init(&dm->mu, NULL);
    hs_cond_init_monotonic(&dm->cv);
}

/* After a failure, retry sooner than the period (5 s, doubling), never later than it or
 * DERPMAP_RETRY_MAX_US. */
static int64_t next_wait(const struct derpmap *dm, unsigned failures)
{
    int64_t retry, cap = DERPMAP_RETRY_MAX_US;

    if (failures == 0)
        return dm->period_us;
    if (dm->period_us > 0 && dm->period_us < cap)
        cap = dm->period_us;
    retry = DERPMAP_RETRY_MIN_US
            << (failures - 1 < DERPMAP_RETRY_MAX_SHIFT ? failures - 1 : DERPMAP_RETRY_MAX_SHIFT);
    return retry < cap ? retry : cap;
}

int derpmap_new(const struct hs_config *cfg, struct derpmap **out)
{
    struct derpmap *dm = hs_xcalloc(1, sizeof(*dm));

    init_sync(dm);
    atomic_init(&dm->stop, false);
    dm->period_us = cfg->derp_update_frequency_us;
    dm->refresh = cfg->derp_auto_update && dm->period_us > 0;
    add_sources(dm, cfg);
    if (dm->nsrc > 0 && load_all(dm, false) > 0)
        log_warnx("derp: %zu of %zu DERP map sources could not be loaded; trying again in %.3gs",
                  never_loaded(dm), dm->nsrc,
                  (double)next_wait(dm, 1) / HS_USEC_PER_SEC);
    publish(dm);
    *out = dm;
    return 0;
}

void derpmap_set_listener(struct derpmap *dm, derpmap_change_fn fn, void *arg)
{
    dm->on_change = fn;
    dm->on_change_arg = arg;
}

/* Sleeps up to us, or until stop; mu held. Returns true when stopping. */
static bool wait_or_stop(struct derpmap *dm, int64_t us)
{
    int64_t at = hs_monotonic_us() + us;

    while (!atomic_load(&dm->stop))
        if (hs_cond_wait_until(&dm->cv, &dm->mu, at))
            break;
    return atomic_load(&dm->stop);
}

/* Without refresh, only the sources that never loaded are tried, until all have. */
static void *refresh_main(void *arg)
{
    struct derpmap *dm = arg;
    unsigned failures = never_loaded(dm) ? 1 : 0;

    pthread_mutex_lock(&dm->mu);
    while ((dm->refresh || failures) && !wait_or_stop(dm, next_wait(dm, failures))) {
        pthread_mutex_unlock(&dm->mu);
        failures = load_all(dm, !dm->refresh) ? failures + 1 : 0;
        if (!atomic_load(&dm->stop) && publish(dm)) {
            log_info("derp: DERP map updated");
            if (dm->on_change)
                dm->on_change(dm->on_change_arg);
        }
        pthread_mutex_lock(&dm->mu);
    }
    pthread_mutex_unlock(&dm->mu);
    return NULL;
}

int derpmap_start(struct derpmap *dm)
{
    int rc;

    if (dm->running || !((dm->refresh && dm->nsrc > 0) || never_loaded(dm)))
        return 0;
    if ((rc = pthread_create(&dm->thread, NULL, refresh_main, dm)) != 0)
        return -rc;
    dm->running = true;
    return 0;
}

void derpmap_stop(struct derpmap *dm)
{
    if (!dm)
        return;
    pthread_mutex_lock(&dm->mu);
    atomic_store(&dm->stop, true);
    pthread_cond_broadcast(&dm->cv);
    pthread_mutex_unlock(&dm->mu);
    if (dm->running)
        pthread_join(dm->thread, NULL);
    dm->running = false;
}

static void free_sources(struct derp_source *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(src[i].where);
        json_decref(src[i].regions);
    }
    free(src);
}

void derpmap_free(struct derpmap *dm)
{
    if (!dm)
        return;
    derpmap_stop(dm);
    free_sources(dm->src, dm->nsrc);
    json_decref(dm->map);
    json_decref(dm->embedded);
    pthread_cond_destroy(&dm->cv);
    pthread_mutex_destroy(&dm->mu);
    free(dm);
}

json_t *derpmap_get(struct derpmap *dm)
{
    json_t *m;

    if (!dm)
        return json_pack("{s:{}}", "Regions");
    pthread_mutex_lock(&dm->mu);
    m = json_deep_copy(dm->map);
    pthread_mutex_unlock(&dm->mu);
    return m;
}

void derpmap_source_counts(struct derpmap *dm, size_t *loaded, size_t *configured)
{
    *loaded = *configured = 0;
    if (!dm)
        return;
    pthread_mutex_lock(&dm->mu);
    *loaded = dm->published_loaded;
    *configured = dm->published_nsrc;
    pthread_mutex_unlock(&dm->mu);
}

void derpmap_set_embedded(struct derpmap *dm, json_t *region)
{
    json_t *old;

    pthread_mutex_lock(&dm->mu);
    old = dm->embedded;
    dm->embedded = region;
    pthread_mutex_unlock(&dm->mu);
    json_decref(old);
    publish(dm);
}

/* The new sources are loaded aside (a fetch is not cancelled by derpmap_stop here: it ends
 * within DERPMAP_FETCH_TIMEOUT_MS), then swapped in with the refresher stopped, since it
 * reads and writes the sources without the lock; the embedded region goes in then too, as
 * publishing reads the sources. */
int derpmap_reload(struct derpmap *dm, const struct hs_config *cfg, json_t *embedded, char *err,
                   size_t errsize)
{
    struct derpmap fresh = { 0 };
    char why[DERPMAP_ERR_MAX];
    struct derp_source *old;
    json_t *old_embedded;
    size_t nold;

    atomic_init(&fresh.stop, false);
    add_sources(&fresh, cfg);
    for (size_t i = 0; i < fresh.nsrc; i++) {
        why[0] = '\0';
        if (load_source(&fresh, &fresh.src[i], why, sizeof(why)) < 0) {
            snprintf(err, errsize, "%s: %s", fresh.src[i].where, why);
            free_sources(fresh.src, fresh.nsrc);
            json_decref(embedded);
            return -EINVAL;
        }
    }
    derpmap_stop(dm);
    old = dm->src;
    nold = dm->nsrc;
    dm->src = fresh.src;
    dm->nsrc = fresh.nsrc;
    dm->period_us = cfg->derp_update_frequency_us;
    dm->refresh = cfg->derp_auto_update && dm->period_us > 0;
    free_sources(old, nold);
    pthread_mutex_lock(&dm->mu);
    old_embedded = dm->embedded;
    dm->embedded = embedded;
    pthread_mutex_unlock(&dm->mu);
    json_decref(old_embedded);
    publish(dm);
    atomic_store(&dm->stop, false);
    if (derpmap_start(dm) < 0)
        log_warnx("derp: cannot restart the DERP map refresher; the map stays as loaded now");
    return 0;
}
