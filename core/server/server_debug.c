/* /debug pages on the metrics listener, as JSON: headscale 0.29's paths where it has the page
 * (overview, batcher, derp; it answers them in text unless asked for JSON, we always answer
 * JSON), and ours for one node's map streams. Public facts only: names, counts, times, no key
 * of any kind. */
#include <stdlib.h>
#include <string.h>

#include "replica/replica.h"
#include "server/server_internal.h"
#include "state/state.h"

#define TAGGED_OWNER "tagged-devices" /* the owner name headscale gives tagged nodes */

static const char *kind_name(int kind)
{
    static const char *const names[CONTROL_MAP_KINDS] = {
        [CONTROL_MAP_FULL] = "full", [CONTROL_MAP_DELTA] = "delta",
        [CONTROL_MAP_KEEPALIVE] = "keepalive",
    };

    return kind >= 0 && kind < CONTROL_MAP_KINDS ? names[kind] : NULL;
}

static json_t *time_json(int64_t us)
{
    char buf[48];

    if (!us)
        return json_null();
    hs_format_rfc3339(us, buf, sizeof(buf));
    return json_string(buf);
}

static const char *owner_name(struct state *st, const struct state_node *sn)
{
    const struct state_user *u = sn->n.user_id ? state_user_by_id(st, sn->n.user_id) : NULL;

    return u ? u->u.name : TAGGED_OWNER;
}

/* Under the read lock: headscale's node counts and nodes per owner, and its count of routes
 * with a primary. */
static void overview_nodes(struct state *st, json_t *out)
{
    json_t *users = json_object();
    size_t n = state_node_count(st), online = 0, expired = 0, ephemeral = 0, primary = 0;
    int64_t now = hs_now_us();

    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_at(st, i);
        const char *owner = owner_name(st, sn);
        json_t *c = json_object_get(users, owner);

        json_object_set_new(users, owner, json_integer((c ? json_integer_value(c) : 0) + 1));
        online += sn->online;
        expired += sn->n.expiry && sn->n.expiry <= now;
        ephemeral += sn->n.ephemeral;
        primary += sn->primary.n;
    }
    json_object_set_new(out, "nodes",
                        json_pack("{sI sI sI sI}", "total", (json_int_t)n, "online",
                                  (json_int_t)online, "expired", (json_int_t)expired,
                                  "ephemeral", (json_int_t)ephemeral));
    json_object_set_new(out, "users", users);
    json_object_set_new(out, "total_users", json_integer((json_int_t)state_user_count(st)));
    json_object_set_new(out, "primary_routes", json_integer((json_int_t)primary));
    json_object_set_new(out, "policy_version",
                        json_integer((json_int_t)state_net_gen(state_net_current(st))));
}

static json_t *replica_json(struct replica *r)
{
    struct replica_status rs;

    if (!r)
        return json_null(); /* SQLite: one server, no feed */
    replica_status(r, &rs);
    return json_pack("{ss sb sb sI sI}", "id", rs.name, "listening", rs.listening, "leader",
                     rs.leader, "applied_change", (json_int_t)rs.applied, "derp_mesh_found",
                     (json_int_t)rs.mesh_peers);
}

static json_t *overview(const struct server_debug_deps *d)
{
    const struct hs_config *cfg = d->cfg;
    json_t *out = json_object(), *dm = derpmap_get(d->derpmap);
    size_t regions = json_object_size(json_object_get(dm, "Regions"));
    struct control_service_stats ss;
    bool file = cfg->policy_mode == POLICY_MODE_FILE;

    state_rdlock(d->state);
    overview_nodes(d->state, out);
    state_unlock(d->state);
    json_object_set_new(out, "policy", json_pack("{ss}", "mode", file ? "file" : "database"));
    if (file && cfg->policy_path && *cfg->policy_path)
        json_object_set_new(json_object_get(out, "policy"), "path",
                            json_string(cfg->policy_path));
    json_object_set_new(out, "derp", json_pack("{sb sI}", "configured", regions > 0, "regions",
                                               (json_int_t)regions));
    control_service_get_stats(d->svc, &ss);
    json_object_set_new(out, "sessions", json_integer((json_int_t)ss.sessions));
    json_object_set_new(out, "replica", replica_json(d->replica));
    json_decref(dm);
    return out;
}

/* headscale's batcher page: the nodes with a map stream here and how many each has. */
static json_t *batcher(const struct server_debug_deps *d)
{
    struct control_session_info *v;
    size_t n = control_service_sessions(d->svc, 0, &v);
    json_t *nodes = json_object();

    for (size_t i = 0; i < n; i++) {
        char id[24];
        json_t *e;

        snprintf(id, sizeof(id), "%llu", (unsigned long long)v[i].node_id);
        if ((e = json_object_get(nodes, id)))
            json_object_set_new(e, "active_connections",
                                json_integer(json_integer_value(
                                                 json_object_get(e, "active_connections")) + 1));
        else
            json_object_set_new(nodes, id, json_pack("{sb si}", "connected", 1,
                                                     "active_connections", 1));
    }
    free(v);
    return json_pack("{so sI}", "connected_nodes", nodes, "total_nodes",
                     (json_int_t)json_object_size(nodes));
}

static const char *str_or_empty(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));

    return v ? v : "";
}

/* headscale's DERP page, from the DERP map the clients get. */
static json_t *derp_region(json_t *r)
{
    json_t *nodes = json_array(), *x;
    size_t i;

    json_array_foreach(json_object_get(r, "Nodes"), i, x) {
        json_t *e = json_pack("{ss ss sI}", "name", str_or_empty(x, "Name"), "hostname",
                              str_or_empty(x, "HostName"), "derp_port",
                              json_integer_value(json_object_get(x, "DERPPort")));
        json_int_t stun = json_integer_value(json_object_get(x, "STUNPort"));

        if (stun > 0)
            json_object_set_new(e, "stun_port", json_integer(stun));
        json_array_append_new(nodes, e);
    }
    return json_pack("{sI ss so}", "region_id", json_integer_value(json_object_get(r, "RegionID")),
                     "region_name", str_or_empty(r, "RegionName"), "nodes", nodes);
}

static json_t *derp(const struct server_debug_deps *d)
{
    json_t *dm = derpmap_get(d->derpmap), *regions = json_object(), *r;
    const char *id;

    json_object_foreach(json_object_get(dm, "Regions"), id, r)
        json_object_set_new(regions, id, derp_region(r));
    json_decref(dm);
    return json_pack("{sb sI so}", "configured", json_object_size(regions) > 0,
                     "total_regions", (json_int_t)json_object_size(regions), "regions",
                     regions);
}

static json_t *session_json(const struct control_session_info *x)
{
    const char *last = kind_name(x->last_kind);

    return json_pack("{so sI si sI sI so sb si}", "opened_at", time_json(x->opened_at),
                     "connection", (json_int_t)x->conn_id, "stream", (int)x->stream_id,
                     "messages_sent", (json_int_t)x->messages, "bytes_sent",
                     (json_int_t)x->bytes, "last_map_kind",
                     last ? json_string(last) : json_null(), "zstd", x->zstd,
                     "capability_version", (int)x->capver);
}

/* Under the read lock: what the state knows of the node; NULL when there is no such node. */
static json_t *node_json(struct state *st, uint64_t id)
{
    const struct state_node *sn = state_node_by_id(st, id);
    json_t *hi, *out;

    if (!sn)
        return NULL;
    hi = sn->n.hostinfo_json ? json_loads(sn->n.hostinfo_json, 0, NULL) : NULL;
    out = json_pack("{sI ss ss ss sb so so ss ss si}", "id", (json_int_t)id, "hostname",
                    sn->n.hostname ? sn->n.hostname : "", "given_name",
                    sn->n.given_name ? sn->n.given_name : "", "user", owner_name(st, sn),
                    "online", sn->online, "online_since",
                    time_json(sn->online ? sn->online_since : 0), "last_seen",
                    time_json(sn->n.last_seen), "client_version", str_or_empty(hi, "IPNVersion"),
                    "os", str_or_empty(hi, "OS"), "capability_version", (int)sn->capver);
    json_decref(hi);
    return out;
}

/* Ours: one node (?id=N) and its map streams on this server. */
static int node_page(const struct server_debug_deps *d, const char *idtext, json_t **out)
{
    struct control_session_info *v;
    json_t *node, *sessions;
    uint64_t id;
    size_t n;

    if (!idtext || hs_parse_u64(idtext, UINT64_MAX, &id) < 0 || id == 0) {
        *out = json_pack("{ss}", "error", "give the node as ?id=<node id>");
        return 400;
    }
    state_rdlock(d->state);
    node = node_json(d->state, id);
    state_unlock(d->state);
    if (!node) {
        *out = json_pack("{ss}", "error", "no such node");
        return 404;
    }
    sessions = json_array();
    n = control_service_sessions(d->svc, id, &v);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(sessions, session_json(&v[i]));
    free(v);
    json_object_set_new(node, "sessions", sessions);
    *out = node;
    return 200;
}

int server_debug_page(const struct server_debug_deps *d, const char *path, const char *id,
                      char **body)
{
    json_t *j = NULL;
    int status = 200;

    if (strcmp(path, "/debug/overview") == 0)
        j = overview(d);
    else if (strcmp(path, "/debug/batcher") == 0)
        j = batcher(d);
    else if (strcmp(path, "/debug/derp") == 0)
        j = derp(d);
    else if (strcmp(path, "/debug/node") == 0)
        status = node_page(d, id, &j);
    else
        return 404;
    *body = hs_json_dump(j, JSON_INDENT(2));
    json_decref(j);
    return status;
}
