/* api: the DNS settings (ours; headscale changes DNS only in its config file). GET shows the
 * settings in force and where they come from, PUT saves new ones (in force at once on every
 * replica: the store's event reaches each state, which sends every node the new DNSConfig),
 * DELETE goes back to the config file's. The JSON is config_dns_settings_json's, plus the
 * read-only members baseDomain, extraRecordsPath, source and updatedAt. */
#include <stdlib.h>

#include "api/api_internal.h"

static void reply_settings(struct api_call *c, const struct dns_settings *d, bool stored,
                           int64_t updated_at)
{
    const struct hs_config *cfg = c->api->cfg;
    json_t *j = config_dns_settings_json(d);

    json_object_set_new(j, "baseDomain", json_string(cfg->dns_base_domain));
    if (*cfg->dns_extra_records_path) { /* the records are the file's, not these */
        json_object_del(j, "extraRecords");
        json_object_set_new(j, "extraRecordsPath", json_string(cfg->dns_extra_records_path));
    }
    json_object_set_new(j, "source", json_string(stored ? "database" : "config"));
    json_object_set_new(j, "updatedAt", api_json_time(updated_at));
    api_reply(c, 200, j);
}

/* What is in force: the state's snapshot, or the config file's settings for a state that was
 * never given them (unit tests). */
static void reply_in_force(struct api_call *c)
{
    const struct state_dns *snap = state_dns_get(c->api->state);
    struct dns_settings view = config_dns_settings_view(c->api->cfg);

    if (snap)
        reply_settings(c, &snap->d, snap->stored, snap->updated_at);
    else
        reply_settings(c, &view, false, 0);
    state_dns_put(snap);
}

void api_dns_get(struct api_call *c)
{
    reply_in_force(c);
}

/* The body over the settings in force, checked; 0 with *out filled, or a 400 sent. */
static int settings_from_body(struct api_call *c, struct dns_settings *out)
{
    const struct state_dns *snap = state_dns_get(c->api->state);
    struct dns_settings view = config_dns_settings_view(c->api->cfg);
    char err[512];
    int rc;

    rc = config_dns_settings_parse(c->api->cfg, snap ? &snap->d : &view,
                                   c->req->body ? c->req->body : "", c->req->body_len, out, err,
                                   sizeof(err));
    state_dns_put(snap);
    if (rc < 0)
        api_error(c, 400, "invalid DNS settings: %s", err);
    return rc;
}

void api_dns_set(struct api_call *c)
{
    struct dns_settings d;
    int64_t updated_at;
    json_t *j;
    char *text;
    int rc;

    if (settings_from_body(c, &d) < 0)
        return;
    j = config_dns_settings_json(&d);
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    rc = store_dns_set(c->api->st, text, &updated_at);
    free(text);
    if (rc < 0)
        api_store_error(c, rc, "DNS settings");
    else
        reply_settings(c, &d, true, updated_at);
    config_dns_settings_fini(&d);
}

void api_dns_clear(struct api_call *c)
{
    int rc = store_dns_clear(c->api->st);

    if (rc < 0 && rc != -ENOENT) { /* none saved: already the file's */
        api_store_error(c, rc, "DNS settings");
        return;
    }
    reply_in_force(c);
}
