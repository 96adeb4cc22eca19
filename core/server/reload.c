/* server: SIGHUP. The config file is read again, and what can change under connected clients
 * is put in force without dropping a map stream or a relay connection: the log level and
 * format, the policy (file mode: the file again, or a new policy.path), the DERP map (every
 * derp.urls / derp.paths source again, and the embedded region), the TLS certificate (its
 * files again: new handshakes use it, open connections keep theirs) and the extra records
 * file. Each part that fails keeps what is in force and says why in one line; every other
 * key that differs from the running configuration is listed as needing a restart. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derp/derp.h"
#include "server/dns_watch.h"
#include "server/server_internal.h"
#include "state/state.h"

/* Keys a reload puts in force (the others need a restart). */
static const char *const live_keys[] = {
    "log.level", "log.format", "policy.path", "derp.urls", "derp.paths",
    "derp.auto_update_enabled", "derp.update_frequency", "derp.server.region_id",
    "derp.server.region_code", "derp.server.region_name", "derp.server.ipv4",
    "derp.server.ipv6", "derp.server.automatically_add_embedded_derp_region",
    "tls_cert_path", "tls_key_path", "dns.extra_records_path",
};

struct reload {
    struct reload_deps d;
    char *policy_path; /* file mode: the policy file in force ("" for none) */
};

struct restart_list {
    const struct hs_config *now;
    struct hs_buf keys;
};

static bool is_live(const struct hs_config *running, const char *key)
{
    /* what was off at start has nothing to reload into */
    if (hs_has_prefix(key, "tls_") && !*running->tls_cert_path)
        return false;
    if (strcmp(key, "dns.extra_records_path") == 0 && !*running->dns_extra_records_path)
        return false;
    if (hs_has_prefix(key, "derp.server.") && !running->derp_server_enabled)
        return false;
    if (strcmp(key, "policy.path") == 0 && running->policy_mode != POLICY_MODE_FILE)
        return false;
    for (size_t i = 0; i < HS_ARRAY_LEN(live_keys); i++)
        if (strcmp(key, live_keys[i]) == 0)
            return true;
    return false;
}

static void note_restart(void *arg, const char *key)
{
    struct restart_list *l = arg;

    if (is_live(l->now, key))
        return;
    if (l->keys.len)
        hs_buf_puts(&l->keys, ", ");
    hs_buf_puts(&l->keys, key);
}

/* The first error of a config that did not load, as "file:line: key: message". */
static void first_error(const struct config_diags *d, char *out, size_t outsize)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct config_diag *g = &d->v[i];
        if (g->level != CONFIG_ERROR)
            continue;
        snprintf(out, outsize, "%s:%d: %s%s%s", g->file ? g->file : "config", g->line,
                 g->key ? g->key : "", g->key ? ": " : "", g->msg);
        return;
    }
    snprintf(out, outsize, "the configuration does not load");
}

static void set_policy_file(struct state *st, const char *path)
{
    state_policy_source(st, *path ? STATE_POLICY_FILE : STATE_POLICY_NONE, path);
}

static void reload_log(const struct hs_config *next)
{
    enum log_level was = log_get_level();
    bool was_json = log_get_json();

    log_set_json(next->log_json);
    log_set_level(next->log_level);
    if (was != next->log_level)
        log_info("reload: log.level %s -> %s", log_level_name(was),
                 log_level_name(next->log_level));
    if (was_json != next->log_json)
        log_info("reload: log.format %s -> %s", was_json ? "json" : "text",
                 next->log_json ? "json" : "text");
}

/* A failed read leaves the policy and its source as they were. */
static void reload_policy(struct reload *r, const struct hs_config *next)
{
    char err[1024], *before = NULL, *after = NULL;
    bool file = r->d.cfg->policy_mode == POLICY_MODE_FILE;
    bool moved = file && !hs_streq(next->policy_path, r->policy_path);
    int64_t at;

    state_policy_text(r->d.state, &before, &at);
    if (moved)
        set_policy_file(r->d.state, next->policy_path);
    if (state_policy_reload(r->d.state, err, sizeof(err)) < 0) {
        if (moved)
            set_policy_file(r->d.state, r->policy_path);
        log_errorx("reload: policy not reloaded: %s; the policy in force stays", err);
    } else {
        if (moved) {
            free(r->policy_path);
            r->policy_path = hs_strdup(next->policy_path);
        }
        state_policy_text(r->d.state, &after, &at);
        log_info("reload: policy %s (%s)", hs_streq(before, after) ? "unchanged" : "changed",
                 !file ? "the stored policy"
                 : *r->policy_path ? r->policy_path : "no policy file: allow all");
    }
    free(before);
    free(after);
}

/* "900, 901" */
static void region_ids(json_t *map, struct hs_buf *out)
{
    const char *id;
    json_t *v;

    json_object_foreach(json_object_get(map, "Regions"), id, v) {
        if (out->len)
            hs_buf_puts(out, ", ");
        hs_buf_puts(out, id);
    }
    if (!out->len)
        hs_buf_puts(out, "none");
}

static void reload_derp(const struct reload_deps *d, const struct hs_config *next)
{
    json_t *before = derpmap_get(d->derpmap), *after;
    json_t *embedded = d->derp && next->derp_server_auto_add_region
                           ? derp_server_region(d->derp, next) : NULL;
    struct hs_buf was, now;
    char err[512];

    if (derpmap_reload(d->derpmap, next, embedded, err, sizeof(err)) < 0) {
        log_errorx("reload: DERP map not reloaded: %s; the map in force stays", err);
        json_decref(before);
        return;
    }
    after = derpmap_get(d->derpmap);
    if (json_equal(before, after)) {
        log_info("reload: DERP map unchanged");
    } else {
        hs_buf_init(&was, 4096);
        hs_buf_init(&now, 4096);
        region_ids(before, &was);
        region_ids(after, &now);
        log_info("reload: DERP map changed (regions %s -> %s): sending it to every node",
                 was.data, now.data);
        hs_buf_free(&was);
        hs_buf_free(&now);
        control_service_resync(d->svc);
    }
    json_decref(before);
    json_decref(after);
}

static void reload_tls(struct net_tls *tls, const struct hs_config *next)
{
    char was[256], now[256], err[512];

    if (!tls)
        return;
    if (!*next->tls_cert_path) {
        log_errorx("reload: TLS certificate not reloaded: tls_cert_path is empty (turning TLS "
                   "off needs a restart); the certificate in force stays");
        return;
    }
    net_tls_describe(tls, was, sizeof(was));
    if (net_tls_reload(tls, next->tls_cert_path, next->tls_key_path, err, sizeof(err)) < 0) {
        log_errorx("reload: TLS certificate not reloaded: %s; the certificate in force stays",
                   err);
        return;
    }
    net_tls_describe(tls, now, sizeof(now));
    if (strcmp(was, now) == 0)
        log_info("reload: TLS certificate unchanged (%s)", now);
    else
        log_info("reload: TLS certificate changed: %s -> %s (new connections use it)", was,
                 now);
}

/* The same file is read again; a new path gets a watcher of its own, which must load first. */
static void reload_records(const struct reload_deps *d, const struct hs_config *next)
{
    struct dns_watch *w;

    if (!*d->dns)
        return;
    if (!*next->dns_extra_records_path) {
        log_errorx("reload: extra records not reloaded: dns.extra_records_path is empty "
                   "(dropping the file needs a restart); the records in force stay");
        return;
    }
    if (strcmp(next->dns_extra_records_path, dns_watch_path(*d->dns)) == 0) {
        if (dns_watch_reload(*d->dns) == 0)
            log_info("reload: extra records unchanged (%s)", next->dns_extra_records_path);
        return;
    }
    if (dns_watch_new(next->dns_extra_records_path, d->mapper, &w) < 0) {
        log_errorx("reload: extra records not reloaded from %s; the records in force stay",
                   next->dns_extra_records_path);
        return;
    }
    if (dns_watch_start(w, d->dns_changed, d->dns_arg) < 0) {
        dns_watch_free(w);
        return;
    }
    dns_watch_free(*d->dns);
    *d->dns = w;
    log_info("reload: extra records now from %s", next->dns_extra_records_path);
    d->dns_changed(d->dns_arg);
}

struct reload *reload_new(const struct reload_deps *d)
{
    struct reload *r = hs_xcalloc(1, sizeof(*r));

    r->d = *d;
    r->policy_path = hs_strdup(d->cfg->policy_path);
    return r;
}

void reload_free(struct reload *r)
{
    if (!r)
        return;
    free(r->policy_path);
    free(r);
}

void reload_run(struct reload *r)
{
    const struct hs_config *running = r->d.cfg;
    struct hs_config next;
    struct config_diags diags;
    struct restart_list restart = { .now = running };
    char err[1024];

    log_info("reload: SIGHUP: reading %s again", running->path ? running->path : "the config");
    if (config_load(running->path, CONFIG_FOR_SERVER, &next, &diags) < 0) {
        first_error(&diags, err, sizeof(err));
        log_errorx("reload: nothing reloaded: %s", err);
        config_free(&next);
        config_diags_free(&diags);
        return;
    }
    config_diags_free(&diags);
    reload_log(&next);
    reload_policy(r, &next);
    reload_derp(&r->d, &next);
    reload_tls(r->d.tls, &next);
    reload_records(&r->d, &next);
    hs_buf_init(&restart.keys, 1 << 16);
    config_each_changed(running, &next, note_restart, &restart);
    if (restart.keys.len)
        log_warnx("reload: changed but needs a restart, not applied: %s", restart.keys.data);
    hs_buf_free(&restart.keys);
    config_free(&next);
}
