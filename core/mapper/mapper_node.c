/* mapper: one node as tailcfg.Node (protocol §6.4; headscale hscontrol/mapper/tail.go). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "keys/keys.h"
#include "mapper/mapper_internal.h"

/* Node attributes (tailcfg.NodeCapMap keys) headscale grants from the config. */
#define CAP_FILE_SHARING "https://tailscale.com/cap/file-sharing"
#define CAP_RANDOMIZE_CLIENT_PORT "randomize-client-port"
/* The legacy home-DERP form clients < capver 111 understand (tailcfg.DerpMagicIP). */
#define LEGACY_DERP_IP "127.3.3.40"

void mapper__set_time(json_t *o, const char *field, int64_t us)
{
    char buf[40];

    hs_format_rfc3339(us, buf, sizeof(buf));
    json_object_set_new(o, field, json_string(buf));
}

void mapper__set_key(json_t *o, const char *field, const char *prefix, const uint8_t key[KEY_LEN])
{
    char text[KEY_TEXT_MAX];

    keys_format(prefix, key, text);
    json_object_set_new(o, field, json_string(text));
}

static bool key_is_zero(const uint8_t key[KEY_LEN])
{
    uint8_t acc = 0;

    for (size_t i = 0; i < KEY_LEN; i++)
        acc |= key[i];
    return acc == 0;
}

/* The stored JSON text (client input originally), or NULL when absent or of another type. */
static json_t *load_stored(const char *text, json_type type)
{
    char err[128];
    json_t *j;

    if (!text)
        return NULL;
    j = hs_json_load(text, strlen(text), HS_JSON_MAX_BYTES, err, sizeof(err));
    if (j && json_typeof(j) != type) {
        json_decref(j);
        return NULL;
    }
    return j;
}

uint64_t mapper__user_id(const struct state_node *n)
{
    /* headscale's tags-as-identity: a tagged node belongs to no user, even if user_id is set. */
    if (n->n.tags.n > 0 || n->n.user_id == 0)
        return MAPPER_TAGGED_USER_ID;
    return n->n.user_id;
}

/* headscale 0.22's NormalizeToFQDNRules for the user label of "<given>.<user>.<base>". */
void mapper__user_label(const struct mapper *m, struct state *s, uint64_t user_id, char *out,
                        size_t size)
{
    const struct state_user *u = user_id && user_id != MAPPER_TAGGED_USER_ID
                                     ? state_user_by_id(s, user_id) : NULL;
    const char *name = u && u->u.name ? u->u.name : MAPPER_TAGGED_USER_NAME;
    const char *at = strchr(name, '@');
    size_t o = 0;
    bool dash = false;

    for (const char *p = name; *p && o + 1 < size; p++) {
        int c = tolower((unsigned char)*p);
        if (p == at && m->cfg->oidc_strip_email_domain && p != name)
            break;
        if (c == '\'')
            continue;
        if (c == '@')
            c = '.';
        if (!isalnum(c) && c != '-' && c != '.') {
            if (!dash)
                out[o++] = '-';
            dash = true;
            continue;
        }
        out[o++] = (char)c;
        dash = false;
    }
    out[o] = '\0';
}

void mapper_fqdn(struct mapper *m, struct state *s, const struct state_node *n, char *out,
                 size_t size)
{
    const char *base = m->cfg->dns_base_domain ? m->cfg->dns_base_domain : "";
    const char *given = n->n.given_name && *n->n.given_name ? n->n.given_name : "node";
    int blen = (int)strnlen(base, MAPPER_FQDN_MAX);
    char user[MAPPER_FQDN_MAX];

    if (blen > 0 && base[blen - 1] == '.')
        blen--; /* tolerate "example.com." in the config */
    /* The 0.22 layout names nodes in the base domain only with MagicDNS on. */
    if (blen == 0 || (m->cfg->legacy && !m->cfg->dns_magic_dns)) {
        snprintf(out, size, "%s.", given);
    } else if (m->cfg->dns_use_username_in_magic_dns) {
        mapper__user_label(m, s, n->n.user_id, user, sizeof(user));
        snprintf(out, size, "%s.%s.%.*s.", given, user, blen, base);
    } else {
        snprintf(out, size, "%s.%.*s.", given, blen, base);
    }
}

static void node_identity(json_t *o, struct mapper *m, struct state *s,
                          const struct state_node *sn)
{
    const struct store_node *n = &sn->n;
    char fqdn[MAPPER_FQDN_MAX];

    mapper_fqdn(m, s, sn, fqdn, sizeof(fqdn));
    json_object_set_new(o, "ID", json_integer((json_int_t)n->id));
    json_object_set_new(o, "StableID", json_sprintf("%llu", (unsigned long long)n->id));
    json_object_set_new(o, "Name", json_string(fqdn));
    json_object_set_new(o, "User", json_integer((json_int_t)mapper__user_id(sn)));
    mapper__set_key(o, "Key", "nodekey:", n->node_key);
    if (n->expiry)
        mapper__set_time(o, "KeyExpiry", n->expiry);
    mapper__set_key(o, "Machine", "mkey:", n->machine_key);
    if (!key_is_zero(n->disco_key))
        mapper__set_key(o, "DiscoKey", "discokey:", n->disco_key);
}

static json_t *addresses(const struct store_node *n)
{
    json_t *a = json_array();

    if (n->ipv4 && *n->ipv4)
        json_array_append_new(a, json_sprintf("%s/32", n->ipv4));
    if (n->ipv6 && *n->ipv6)
        json_array_append_new(a, json_sprintf("%s/128", n->ipv6));
    return a;
}

static bool array_has_string(const json_t *a, const char *s)
{
    size_t i;
    json_t *v;

    json_array_foreach(a, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

/* Addresses and the routes the viewer gets (mapper_routes.c): served routes only, those
 * both approved and still advertised (reference §6). */
static json_t *allowed_ips(const json_t *addrs, const struct mapper__routes *r)
{
    json_t *a = json_deep_copy(addrs);

    for (size_t i = 0; i < r->n; i++) {
        if (!array_has_string(a, r->v[i]))
            json_array_append_new(a, json_string(r->v[i]));
    }
    return a;
}

/* The subnet routes among them (exit routes are never primary routes). */
static json_t *primary_routes(const struct mapper__routes *r)
{
    json_t *a = json_array();

    for (size_t i = 0; i < r->n; i++) {
        if (!state_route_is_exit(r->v[i]))
            json_array_append_new(a, json_string(r->v[i]));
    }
    return a;
}

json_t *mapper__endpoints(const struct store_node *n)
{
    json_t *stored = load_stored(n->endpoints_json, JSON_ARRAY), *out = json_array(), *v;
    size_t i;

    json_array_foreach(stored, i, v) {
        if (json_is_string(v))
            json_array_append(out, v);
    }
    json_decref(stored);
    return out;
}

static void node_network(json_t *o, const struct state_node *sn, const struct mapper__routes *r)
{
    const struct store_node *n = &sn->n;
    json_t *hostinfo = load_stored(n->hostinfo_json, JSON_OBJECT);
    json_t *addrs = addresses(n), *prim = primary_routes(r);

    if (!hostinfo)
        hostinfo = json_object();
    json_object_set_new(o, "AllowedIPs", allowed_ips(addrs, r));
    json_object_set_new(o, "Addresses", addrs);
    if (json_array_size(prim))
        json_object_set_new(o, "PrimaryRoutes", prim);
    else
        json_decref(prim);
    json_object_set_new(o, "Endpoints", mapper__endpoints(n));
    if (sn->home_derp > 0) {
        json_object_set_new(o, "HomeDERP", json_integer(sn->home_derp));
        json_object_set_new(o, "DERP", json_sprintf(LEGACY_DERP_IP ":%d", sn->home_derp));
    }
    json_object_set_new(o, "Hostinfo", hostinfo);
}

static json_t *cap_map(const struct hs_config *cfg)
{
    json_t *caps = json_object();

    if (cfg->taildrop_enabled)
        json_object_set_new(caps, CAP_FILE_SHARING, json_array());
    if (cfg->randomize_client_port)
        json_object_set_new(caps, CAP_RANDOMIZE_CLIENT_PORT, json_array());
    return caps;
}

static json_t *strv_json(const struct hs_strv *sv)
{
    json_t *a = json_array();

    for (size_t i = 0; i < sv->n; i++)
        json_array_append_new(a, json_string(sv->v[i]));
    return a;
}

bool mapper__expired(const struct store_node *n, int64_t now)
{
    return n->expiry != 0 && n->expiry <= now;
}

static void node_status(json_t *o, const struct mapper *m, const struct state_node *sn,
                        int64_t now)
{
    const struct store_node *n = &sn->n;
    bool expired = mapper__expired(n, now);

    if (n->created_at)
        mapper__set_time(o, "Created", n->created_at);
    if (sn->capver)
        json_object_set_new(o, "Cap", json_integer(sn->capver));
    if (n->tags.n)
        json_object_set_new(o, "Tags", strv_json(&n->tags));
    json_object_set_new(o, "Online", json_boolean(sn->online));
    /* Never on online nodes: clients may then treat them as offline (headscale types/node.go). */
    if (!sn->online && n->last_seen)
        mapper__set_time(o, "LastSeen", n->last_seen);
    json_object_set_new(o, "MachineAuthorized", json_true());
    if (expired)
        json_object_set_new(o, "Expired", json_true());
    json_object_set_new(o, "CapMap", cap_map(m->cfg));
}

/* An expired node as its peers see it: marked Expired (node_status), with no endpoints and
 * no home DERP region, and a node key that is not its own. That is what Tailscale's control
 * server sends (ipn/ipnlocal/expiry.go relies on it): a peer that trusted the real key would
 * still take WireGuard packets from the node, which can reach it through DERP without any
 * endpoint. The broken key starts with the bytes Tailscale uses for this, which base64 as
 * "bad01", so it is recognisable in logs and `tailscale status`. */
static void expired_peer_view(json_t *o, const struct store_node *n)
{
    static const uint8_t bad01[6] = { 0x6d, 0xa7, 0x74, 0xd5, 0xd7, 0x74 };
    uint8_t key[KEY_LEN];

    memcpy(key, n->node_key, KEY_LEN);
    memcpy(key, bad01, sizeof(bad01));
    mapper__set_key(o, "Key", "nodekey:", key);
    json_object_set_new(o, "Endpoints", json_array());
    json_object_del(o, "HomeDERP");
    json_object_del(o, "DERP");
}

json_t *mapper__node(struct mapper *m, struct state *s, const struct state_node *n,
                     uint64_t viewer, int64_t now, const struct state_net *net)
{
    struct mapper__routes r;
    json_t *o;

    mapper__view_routes(net ? net : state_net_current(s), viewer, n, &r);
    o = mapper__node_routes(m, s, n, viewer, now, &r);
    mapper__routes_free(&r);
    return o;
}

json_t *mapper__node_routes(struct mapper *m, struct state *s, const struct state_node *n,
                            uint64_t viewer, int64_t now, const struct mapper__routes *r)
{
    json_t *o = json_object();

    node_identity(o, m, s, n);
    node_network(o, n, r);
    node_status(o, m, n, now);
    if (viewer != n->n.id && mapper__expired(&n->n, now))
        expired_peer_view(o, &n->n);
    return o;
}

json_t *mapper_node(struct mapper *m, struct state *s, const struct state_node *n,
                    uint64_t viewer)
{
    json_t *o = mapper__node(m, s, n, viewer, hs_now_us(), NULL);

    if (viewer == n->n.id)
        mapper__self_capmap(m, o, state_net_current(s), state_node_net_index(s, viewer));
    return o;
}
