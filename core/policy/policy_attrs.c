/* The `nodeAttrs` section and `randomizeClientPort`: capabilities of the nodes they target
 * (tailcfg.NodeCapMap), as Tailscale sends them (shared/testdata/policy-conformance,
 * nodeattrs.jsonl). Every attribute becomes a key with a null value; "funnel" brings the
 * two capabilities Tailscale adds with it. The capabilities Tailscale derives from the
 * tailnet's settings or the user's role (file-sharing, ssh, is-admin...) are not policy
 * and are not written here.
 *
 * Refused: ipPool (addresses come from the server's configured prefixes, never from a
 * pool), targets that name no fixed set of nodes (autogroup:self, autogroup:internet) and
 * role autogroups (autogroup:admin, autogroup:owner: this server has no user roles). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

struct pol_attr_entry {
    struct pol_alias *targets;
    size_t ntargets;
    char **attrs;
    size_t nattrs;
};

struct pol_attrs {
    struct pol_attr_entry *v;
    size_t n;
    bool randomize_client_port; /* top-level randomizeClientPort: every node */
};

static const char *const funnel_caps[] = {
    "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
    "https://tailscale.com/cap/warn-funnel-no-https",
};

/* ---- loading ---- */

static pol_u128 v4addr(unsigned a, unsigned b, unsigned c, unsigned d)
{
    return (pol_u128)0xffff << 32 | (pol_u128)(a << 24 | b << 16 | c << 8 | d);
}

/* Tailscale's checks on a pool (nodeattrs-error-e4 is its wording); a pool that passes is
 * still refused: this server does not allocate from pools. */
static int check_pool(const char *s, size_t i, char *err, size_t errsize)
{
    static const char *const reserved[] = { "100.100.100.0/24", "100.115.92.0/23" };
    struct pol_ent e, r;
    pol_u128 cgnat_lo = v4addr(100, 64, 0, 0), cgnat_hi = v4addr(100, 127, 255, 255);

    if (pol__parse_prefix(s, true, &e) < 0)
        return pol__err(err, errsize, "nodeAttrs[%zu]: ipPool \"%s\" is not a prefix", i, s);
    if (!e.v4 || e.lo < cgnat_lo || e.hi > cgnat_hi)
        return pol__err(err, errsize, "nodeAttrs[%zu]: IPPool(%s): network not within "
                                      "100.64.0.0/10", i, s);
    for (size_t k = 0; k < HS_ARRAY_LEN(reserved); k++) {
        pol__parse_prefix(reserved[k], false, &r);
        if (pol__ent_overlaps(&e, &r))
            return pol__err(err, errsize, "nodeAttrs[%zu]: IPPool(%s): network within "
                                          "reserved range", i, s);
    }
    return pol__err(err, errsize, "nodeAttrs[%zu]: IPPool(%s): ipPool is not supported; "
                                  "node addresses come from the server's prefixes", i, s);
}

static int load_target(const struct policy *p, const char *s, struct pol_alias *a, size_t i,
                       char *err, size_t errsize)
{
    char inner[256];

    if (strcmp(s, "autogroup:admin") == 0 || strcmp(s, "autogroup:owner") == 0)
        return pol__err(err, errsize, "nodeAttrs[%zu]: target \"%s\": user roles are not "
                                      "supported", i, s);
    if (pol__parse_alias(p, s, a, inner, sizeof(inner)) < 0)
        return pol__err(err, errsize, "nodeAttrs[%zu]: target %s", i, inner);
    if (a->kind == PA_SELF || a->kind == PA_INTERNET || a->kind == PA_DANGER_ALL)
        return pol__err(err, errsize, "nodeAttrs[%zu]: target \"%s\" is not a set of nodes", i,
                        s);
    return 0;
}

static int load_entry(const struct policy *p, json_t *o, struct pol_attr_entry *e, size_t i,
                      char *err, size_t errsize)
{
    json_t *target = json_object_get(o, "target"), *attr = json_object_get(o, "attr");
    json_t *pool = json_object_get(o, "ipPool"), *v;
    const char *key;
    size_t k;
    int rc;

    if (!json_is_object(o))
        return pol__err(err, errsize, "nodeAttrs[%zu]: must be an object", i);
    json_object_foreach(o, key, v) {
        if (strcmp(key, "target") != 0 && strcmp(key, "attr") != 0 &&
            strcmp(key, "ipPool") != 0)
            return pol__err(err, errsize, "nodeAttrs[%zu]: unknown field \"%s\"", i, key);
    }
    if (!pol__string_list(target) || !pol__string_list(attr) || !pol__string_list(pool))
        return pol__err(err, errsize, "nodeAttrs[%zu]: target, attr and ipPool must be lists "
                                      "of strings", i);
    json_array_foreach(pool, k, v) {
        if ((rc = check_pool(json_string_value(v), i, err, errsize)) < 0)
            return rc;
    }
    e->targets = hs_xcalloc(json_array_size(target) + 1, sizeof(*e->targets));
    json_array_foreach(target, k, v) {
        rc = load_target(p, json_string_value(v), &e->targets[e->ntargets], i, err, errsize);
        e->ntargets++; /* freed by pol__attrs_free, parsed or not */
        if (rc < 0)
            return rc;
    }
    e->attrs = hs_xcalloc(json_array_size(attr) + 1, sizeof(*e->attrs));
    json_array_foreach(attr, k, v) {
        const char *s = json_string_value(v);
        if (!*s)
            return pol__err(err, errsize, "nodeAttrs[%zu]: empty attr", i);
        e->attrs[e->nattrs++] = hs_strdup(s);
    }
    return 0;
}

int pol__load_attrs(struct policy *p, char *err, size_t errsize)
{
    json_t *list = json_object_get(p->doc, "nodeAttrs"), *v;
    json_t *rcp = json_object_get(p->doc, "randomizeClientPort");
    size_t i;
    int rc;

    if (rcp && !json_is_null(rcp) && !json_is_boolean(rcp))
        return pol__err(err, errsize, "randomizeClientPort must be true or false");
    if (!json_is_true(rcp) && json_array_size(list) == 0)
        return 0;
    p->attrs = hs_xcalloc(1, sizeof(*p->attrs));
    p->attrs->randomize_client_port = json_is_true(rcp);
    p->attrs->v = hs_xcalloc(json_array_size(list) + 1, sizeof(*p->attrs->v));
    json_array_foreach(list, i, v) {
        if ((rc = load_entry(p, v, &p->attrs->v[p->attrs->n++], i, err, errsize)) < 0)
            return rc;
    }
    return 0;
}

void pol__attrs_free(struct pol_attrs *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        struct pol_attr_entry *e = &a->v[i];
        for (size_t k = 0; k < e->ntargets; k++)
            pol__alias_fini(&e->targets[k]);
        for (size_t k = 0; k < e->nattrs; k++)
            free(e->attrs[k]);
        free(e->targets);
        free(e->attrs);
    }
    free(a->v);
    free(a);
}

/* ---- per node ---- */

/* Host and prefix targets by the node's own addresses (not by routes it serves). */
static bool targets_node(const struct policy_net *c, const struct pol_attr_entry *e, size_t i)
{
    const struct pol_node *n = c->nodes[i];

    for (size_t k = 0; k < e->ntargets; k++) {
        const struct pol_alias *a = &e->targets[k];
        if (a->kind == PA_HOST || a->kind == PA_PREFIX) {
            if ((n->has[0] && pol__ent_contains(&a->ent, n->ip[0])) ||
                (n->has[1] && pol__ent_contains(&a->ent, n->ip[1])))
                return true;
        } else if (pol__node_in_alias(c, a, i)) {
            return true;
        }
    }
    return false;
}

static void add_cap(json_t *caps, const char *name)
{
    json_object_set_new(caps, name, json_null());
    if (strcmp(name, "funnel") == 0) {
        for (size_t k = 0; k < HS_ARRAY_LEN(funnel_caps); k++)
            json_object_set_new(caps, funnel_caps[k], json_null());
    }
}

int policy_net_capmap(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    const struct pol_attrs *a = c->p ? c->p->attrs : NULL;
    json_t *caps;
    char *text;
    int rc;

    if (i >= c->nnodes)
        return -EINVAL;
    if (!a)
        return hs_buf_puts(out, "{}");
    if (!(caps = json_object()))
        return -ENOMEM;
    if (a->randomize_client_port)
        add_cap(caps, "randomize-client-port");
    for (size_t k = 0; k < a->n; k++) {
        if (!targets_node(c, &a->v[k], i))
            continue;
        for (size_t j = 0; j < a->v[k].nattrs; j++)
            add_cap(caps, a->v[k].attrs[j]);
    }
    text = hs_json_dump(caps, JSON_COMPACT | JSON_SORT_KEYS);
    rc = hs_buf_puts(out, text);
    free(text);
    json_decref(caps);
    return rc;
}

bool policy_net_has_attr(const struct policy_net *c, size_t i, const char *attr)
{
    const struct pol_attrs *a = c->p ? c->p->attrs : NULL;

    for (size_t k = 0; a && i < c->nnodes && k < a->n; k++) {
        for (size_t j = 0; j < a->v[k].nattrs; j++) {
            if (strcmp(a->v[k].attrs[j], attr) == 0 && targets_node(c, &a->v[k], i))
                return true;
        }
    }
    return false;
}
