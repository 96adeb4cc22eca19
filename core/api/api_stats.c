/* Ours, not headscale's: what the web admin's overview, node and DERP pages show that
 * headscale's API does not carry. GET /api/v1/node/stats: the online count over the last
 * 24 h and the client versions in use; GET /api/v1/node/{id}/hostinfo: what a node reports
 * of itself (Hostinfo, endpoints); GET /api/v1/derpmap: the DERP map sent to clients, its
 * sources and the embedded relay's region id (null without one). */
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "derp/derp.h"

#define VERSION_MAX_LEN 64 /* a client version longer than this is cut (it is the client's word) */

/* Hostinfo.IPNVersion of a stored Hostinfo text, or NULL. Found by its key rather than by
 * parsing: at thousands of nodes a full parse of every Hostinfo would cost more than the
 * rest of the overview. The stored text is compact JSON, so the key is `"IPNVersion":`. */
static json_t *ipn_version(const char *hostinfo)
{
    static const char key[] = "\"IPNVersion\":";
    const char *p = hostinfo ? strstr(hostinfo, key) : NULL;
    json_t *v;

    if (!p)
        return NULL;
    p += strlen(key);
    v = json_loadb(p, strlen(p), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, NULL);
    if (!json_is_string(v) || json_string_length(v) == 0) {
        json_decref(v);
        return NULL;
    }
    if (json_string_length(v) > VERSION_MAX_LEN) {
        json_t *cut = json_stringn(json_string_value(v), VERSION_MAX_LEN);
        json_decref(v);
        v = cut;
    }
    return v;
}

/* {"<version>": nodes} over every node that reported one. */
static json_t *version_counts(struct state *s)
{
    json_t *counts = json_object(), *v;

    state_rdlock(s);
    for (size_t i = 0; i < state_node_count(s); i++) {
        if (!(v = ipn_version(state_node_at(s, i)->n.hostinfo_json)))
            continue;
        json_object_set_new(counts, json_string_value(v),
                            json_integer(json_integer_value(
                                json_object_get(counts, json_string_value(v))) + 1));
        json_decref(v);
    }
    state_unlock(s);
    return counts;
}

static int by_nodes_then_version(const void *a, const void *b)
{
    json_t *const *x = a, *const *y = b;
    json_int_t nx = json_integer_value(json_object_get(*x, "nodes"));
    json_int_t ny = json_integer_value(json_object_get(*y, "nodes"));

    if (nx != ny)
        return nx > ny ? -1 : 1;
    return strcmp(hs_json_str(*x, "version"), hs_json_str(*y, "version"));
}

/* [{"version", "nodes"}], most used first. */
static json_t *client_versions(struct state *s)
{
    json_t *counts = version_counts(s), *out = json_array(), *v, **rows;
    size_t n = json_object_size(counts), i = 0;
    const char *k;

    rows = hs_xcalloc(n + 1, sizeof(*rows));
    json_object_foreach(counts, k, v)
        rows[i++] = json_pack("{s:s, s:O}", "version", k, "nodes", v);
    qsort(rows, n, sizeof(*rows), by_nodes_then_version);
    for (i = 0; i < n; i++)
        json_array_append_new(out, rows[i]);
    free(rows);
    json_decref(counts);
    return out;
}

static json_t *online_history(struct state *s)
{
    struct state_history_point *p = hs_xcalloc(STATE_HISTORY_POINTS, sizeof(*p));
    size_t n = state_online_history(s, p);
    json_t *points = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(points, json_pack("{s:o, s:I}", "time", api_json_time(p[i].at),
                                                "online", (json_int_t)p[i].online));
    free(p);
    return json_pack("{s:I, s:o}", "stepSeconds",
                     (json_int_t)(STATE_HISTORY_STEP_US / HS_USEC_PER_SEC), "points", points);
}

void api_node_stats(struct api_call *c)
{
    api_reply(c, 200, json_pack("{s:o, s:o}", "onlineHistory", online_history(c->api->state),
                                "clientVersions", client_versions(c->api->state)));
}

/* A stored JSON text, or fallback when it is absent or does not parse. */
static json_t *stored_json(const char *text, json_t *fallback)
{
    json_t *j = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;

    if (!j)
        return fallback;
    json_decref(fallback);
    return j;
}

void api_node_hostinfo(struct api_call *c)
{
    struct state *s = c->api->state;
    const struct state_node *sn;
    json_t *j = NULL;
    uint64_t id;

    if (api_parse_id(c, c->args[0], "node", &id) < 0)
        return;
    state_rdlock(s);
    if ((sn = state_node_by_id(s, id)))
        j = json_pack("{s:o, s:o, s:i, s:i}", "hostinfo",
                      stored_json(sn->n.hostinfo_json, json_object()), "endpoints",
                      stored_json(sn->n.endpoints_json, json_array()), "capabilityVersion",
                      (int)sn->capver, "homeDerp", sn->home_derp);
    state_unlock(s);
    if (!j)
        return api_store_error(c, -ENOENT, "node");
    api_reply(c, 200, j);
}

void api_derpmap(struct api_call *c)
{
    size_t loaded = 0, configured = 0;

    const struct hs_config *cfg = c->api->cfg;

    derpmap_source_counts(c->api->derpmap, &loaded, &configured);
    api_reply(c, 200, json_pack("{s:o, s:{s:I, s:I}, s:o}", "derpMap",
                                derpmap_get(c->api->derpmap), "sources", "configured",
                                (json_int_t)configured, "loaded", (json_int_t)loaded,
                                "embeddedRegionId",
                                cfg->derp_server_enabled
                                    ? json_integer(cfg->derp_server_region_id)
                                    : json_null()));
}

void api_set_derpmap(struct api *a, struct derpmap *dm)
{
    a->derpmap = dm;
}
