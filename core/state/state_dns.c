/* state: the DNS settings in force. The config file's dns section until settings are saved
 * through the API; then the stored ones, on every replica (the store's event reaches each),
 * until they are cleared. Readers take a reference to an immutable snapshot, so a map built
 * while the settings change sees one version whole. */
#include <stdlib.h>
#include <string.h>

#include "state/state_internal.h"

static struct state_dns *snapshot_new(void)
{
    struct state_dns *d = hs_xcalloc(1, sizeof(*d));

    d->refs = 1;
    return d;
}

void state_dns_put(const struct state_dns *cd)
{
    struct state_dns *d = (struct state_dns *)cd; /* the count is the one mutable part */

    if (!d || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    config_dns_settings_fini(&d->d);
    free(d);
}

const struct state_dns *state_dns_get(struct state *s)
{
    struct state_dns *d;

    pthread_mutex_lock(&s->dns_mu);
    if ((d = s->dns))
        __atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->dns_mu);
    return d;
}

/* The settings the store holds, or the config file's when it holds none (or, logged, when
 * they no longer pass against this config file). NULL when the store cannot be read. */
static struct state_dns *read_settings(struct state *s)
{
    struct state_dns *d = snapshot_new();
    struct dns_settings file;
    char *text = NULL, err[512];
    int rc;

    config_dns_settings_of(s->dns_cfg, &file);
    rc = store_dns_get(s->st, &text, &d->updated_at);
    if (rc == 0 && config_dns_settings_parse(s->dns_cfg, &file, text, strlen(text), &d->d, err,
                                             sizeof(err)) == 0) {
        d->stored = true;
        config_dns_settings_fini(&file);
    } else {
        if (rc == 0)
            log_errorx("dns: the settings saved through the API do not fit this config file "
                       "(%s): the config file's are in force", err);
        else if (rc != -ENOENT)
            state__stale(s, "the DNS settings", rc); /* read again with everything */
        d->d = file;
        d->updated_at = 0;
    }
    free(text);
    if (rc < 0 && rc != -ENOENT) {
        state_dns_put(d);
        return NULL;
    }
    return d;
}

/* Puts d in force; true when what nodes are sent changed. */
static bool install(struct state *s, struct state_dns *d)
{
    struct state_dns *old;
    bool changed;

    pthread_mutex_lock(&s->dns_mu);
    old = s->dns;
    s->dns = d;
    pthread_mutex_unlock(&s->dns_mu);
    changed = !old || !config_dns_settings_equal(&old->d, &d->d);
    state_dns_put(old);
    return changed;
}

int state_dns_configure(struct state *s, const struct hs_config *cfg)
{
    struct state_dns *d;

    s->dns_cfg = cfg;
    if (!(d = read_settings(s)))
        return -EIO;
    if (d->stored)
        log_info("dns: the settings saved through the API are in force, not the config file's "
                 "dns section (DELETE /api/v1/dns goes back to the file's)");
    install(s, d);
    return 0;
}

void state__dns_event(struct state *s)
{
    struct state_dns *d;
    bool stored;

    if (!s->dns_cfg || !(d = read_settings(s)))
        return;
    stored = d->stored;
    if (!install(s, d))
        return;
    log_info("dns: %s: sending every node the new DNS configuration",
             stored ? "new settings saved through the API" : "back to the config file's settings");
    state__emit(s, STATE_DNS_CHANGED, 0);
}
