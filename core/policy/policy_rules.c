/* The `acls` and `grants` sections, both loaded into struct pol_rule and checked as
 * Tailscale checks them (the rejections in shared/testdata/policy-conformance). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

#define POLICY_MAX_RULES 20000

static int field_list(json_t *o, const char *key, const char *where, char *err, size_t errsize)
{
    if (pol__string_list(json_object_get(o, key)))
        return 0;
    return pol__err(err, errsize, "%s: \"%s\" must be a list of strings", where, key);
}

static int only_fields(json_t *o, const char *const *known, const char *where, char *err,
                       size_t errsize)
{
    const char *key;
    json_t *v;

    json_object_foreach(o, key, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok)
            return pol__err(err, errsize, "%s: unknown field \"%s\"", where, key);
    }
    return 0;
}

static int load_sources(const struct policy *p, json_t *list, struct pol_rule *r, char *err,
                        size_t errsize)
{
    size_t i;
    json_t *v;
    int rc;

    r->src = hs_xcalloc(json_array_size(list) + 1, sizeof(*r->src));
    json_array_foreach(list, i, v) {
        const char *s = json_string_value(v);
        struct pol_alias *a = &r->src[r->nsrc];
        if ((rc = pol__parse_alias(p, s, a, err, errsize)) < 0) {
            char inner[256];
            hs_strlcpy(inner, err, sizeof(inner));
            return pol__err(err, errsize, "src=%s", inner);
        }
        r->nsrc++;
        if (a->kind == PA_SELF)
            return pol__err(err, errsize, "\"autogroup:self\" not valid on the src side of a rule");
        if (a->kind == PA_INTERNET)
            return pol__err(err, errsize, "\"autogroup:internet\" not valid on the src side of a rule");
    }
    return 0;
}

static int load_acl_dst(const struct policy *p, const char *s, struct pol_dst *d, char *err,
                        size_t errsize)
{
    char alias[256], inner[256];
    const char *ports;
    int rc;

    if (pol__split_alias_port(s, alias, sizeof(alias), &ports) < 0)
        return pol__err(err, errsize, "dst=\"%s\": expected alias:ports", s);
    if ((rc = pol__parse_ports(ports, &d->ports, &d->nports, inner, sizeof(inner))) < 0 ||
        (rc = pol__parse_alias(p, alias, &d->a, inner, sizeof(inner))) < 0)
        return pol__err(err, errsize, "dst=\"%s\": %s", s, inner);
    return 0;
}

static bool self_source_ok(const struct pol_alias *a, bool grant)
{
    return a->kind == PA_USER || a->kind == PA_GROUP || a->kind == PA_MEMBER ||
           (!grant && a->kind == PA_STAR);
}

/* Checks that hold for ACLs and grants alike once both sides are loaded. */
static int check_sides(const struct pol_rule *r, char *err, size_t errsize)
{
    bool self = false;

    for (size_t i = 0; i < r->ndst; i++) {
        self |= r->dst[i].a.kind == PA_SELF;
        if (r->dst[i].a.kind == PA_DANGER_ALL)
            return pol__err(err, errsize, "cannot use autogroup:danger-all as a dst");
    }
    for (size_t i = 0; self && i < r->nsrc; i++) {
        if (!self_source_ok(&r->src[i], r->grant))
            return pol__err(err, errsize, "autogroup:self can only be used with users, groups, "
                                          "or supported autogroups");
    }
    return 0;
}

static int load_acl(const struct policy *p, json_t *acl, struct pol_rule *r, char *err,
                    size_t errsize)
{
    static const char *const fields[] = { "action", "src", "dst", "proto", NULL };
    const char *action = hs_json_str(acl, "action");
    json_t *dst = json_object_get(acl, "dst"), *proto = json_object_get(acl, "proto"), *v;
    size_t i;
    int rc;

    if (!json_is_object(acl))
        return pol__err(err, errsize, "must be an object");
    if ((rc = only_fields(acl, fields, "acl", err, errsize)) < 0 ||
        (rc = field_list(acl, "src", "acl", err, errsize)) < 0 ||
        (rc = field_list(acl, "dst", "acl", err, errsize)) < 0)
        return rc;
    if (!action || strcmp(action, "accept") != 0)
        return pol__err(err, errsize, "action=\"%s\" is not supported (only \"accept\")",
                        action ? action : "");
    if (proto && !json_is_null(proto)) {
        const char *ps = json_is_string(proto) ? json_string_value(proto) : "";
        if (!*ps || pol__parse_proto(ps, &r->protos[0]) < 0)
            return pol__err(err, errsize, "proto=\"%s\": unknown protocol", ps);
        r->nprotos = 1;
    }
    if ((rc = load_sources(p, json_object_get(acl, "src"), r, err, errsize)) < 0)
        return rc;
    r->dst = hs_xcalloc(json_array_size(dst) + 1, sizeof(*r->dst));
    json_array_foreach(dst, i, v) {
        struct pol_dst *d = &r->dst[r->ndst];
        rc = load_acl_dst(p, json_string_value(v), d, err, errsize);
        r->ndst++;
        if (rc < 0)
            return rc;
        if (d->a.kind == PA_DANGER_ALL)
            return pol__err(err, errsize, "cannot use autogroup:danger-all as a dst");
    }
    return check_sides(r, err, errsize);
}

/* A grant's `ip` entry: "*", ports ("22", "80-443", "22,80"), or "proto:ports". */
static int load_ipspec(const char *s, struct pol_ipspec *ip, char *err, size_t errsize)
{
    const char *colon = strchr(s, ':');
    const char *ports = s;

    if (colon) {
        char name[32];
        size_t n = (size_t)(colon - s);
        if (n == 0 || n >= sizeof(name))
            return pol__err(err, errsize, "ip \"%s\": unknown protocol", s);
        memcpy(name, s, n);
        name[n] = '\0';
        if (pol__parse_proto(name, &ip->protos[0]) < 0)
            return pol__err(err, errsize, "ip \"%s\": unknown protocol \"%s\"", s, name);
        ip->nprotos = 1;
        ports = colon + 1;
    }
    return pol__parse_ports(ports, &ip->ports, &ip->nports, err, errsize);
}

static int load_app(json_t *app, char *err, size_t errsize)
{
    static const char *const allowed[] = { "tailscale.com/cap/drive", "tailscale.com/cap/relay",
                                           "tailscale.com/cap/webui",
                                           "tailscale.com/cap/kubernetes",
                                           "tailscale.com/cap/tailsql",
                                           "tailscale.com/cap/golink" };
    const char *name;
    json_t *v;

    json_object_foreach(app, name, v) {
        const char *slash = strchr(name, '/');
        bool ok = false;
        if (!slash || slash == name || !slash[1] || strchr(name, ':'))
            return pol__err(err, errsize, "capability name must have the form {domain}/{path}");
        if (hs_has_prefix(name, "tailscale.com/")) {
            for (size_t i = 0; i < HS_ARRAY_LEN(allowed) && !ok; i++)
                ok = strcmp(name, allowed[i]) == 0;
            if (!ok)
                return pol__err(err, errsize,
                                "capability name must not be in the tailscale.com domain");
        }
        if (!json_is_array(v))
            return pol__err(err, errsize, "app[\"%s\"]: must be a list of objects", name);
    }
    return 0;
}

static int load_grant_dsts(const struct policy *p, json_t *dst, struct pol_rule *r, char *err,
                           size_t errsize)
{
    size_t i;
    json_t *v;
    int rc;

    r->dst = hs_xcalloc(json_array_size(dst) + 1, sizeof(*r->dst));
    json_array_foreach(dst, i, v) {
        const char *s = json_string_value(v);
        struct pol_dst *d = &r->dst[r->ndst];
        char inner[256];
        if ((rc = pol__parse_alias(p, s, &d->a, inner, sizeof(inner))) < 0)
            return pol__err(err, errsize, "dst=\"%s\": %s", s, inner);
        r->ndst++;
        if ((d->a.kind == PA_PREFIX || d->a.kind == PA_HOST) && pol__is_exit_route(&d->a.ent))
            return pol__err(err, errsize, "dst \"%s\": to allow all IP addresses, use \"*\" or "
                                          "\"autogroup:internet\"", s);
        if (d->a.kind == PA_INTERNET && r->app)
            return pol__err(err, errsize, "cannot use app grants with autogroup:internet");
    }
    return 0;
}

static int load_via(const struct policy *p, json_t *via, struct pol_rule *r, char *err,
                    size_t errsize)
{
    size_t i;
    json_t *v;

    r->via = hs_xcalloc(json_array_size(via) + 1, sizeof(*r->via));
    json_array_foreach(via, i, v) {
        const char *s = json_string_value(v);
        if (!hs_has_prefix(s, "tag:"))
            return pol__err(err, errsize, "via can only be a tag");
        if (!pol__tagowner(p, s))
            return pol__err(err, errsize, "tag \"%s\" not found", s);
        r->via[r->nvia++] = hs_strdup(s);
    }
    return 0;
}

static int load_grant(const struct policy *p, json_t *g, struct pol_rule *r, char *err,
                      size_t errsize)
{
    static const char *const fields[] = { "src", "dst", "ip", "app", "via", "srcPosture", NULL };
    json_t *ip = json_object_get(g, "ip"), *app = json_object_get(g, "app"), *v;
    size_t i;
    int rc;

    if (!json_is_object(g))
        return pol__err(err, errsize, "must be an object");
    r->grant = true;
    if ((rc = only_fields(g, fields, "grant", err, errsize)) < 0 ||
        (rc = field_list(g, "src", "grant", err, errsize)) < 0 ||
        (rc = field_list(g, "dst", "grant", err, errsize)) < 0 ||
        (rc = field_list(g, "ip", "grant", err, errsize)) < 0 ||
        (rc = field_list(g, "via", "grant", err, errsize)) < 0)
        return rc;
    if (app && !json_is_null(app) && !json_is_object(app))
        return pol__err(err, errsize, "grant: \"app\" must be an object");
    if (json_array_size(ip) == 0 && json_object_size(app) == 0)
        return pol__err(err, errsize, "ip and app can not both be empty");
    if (json_object_size(app)) {
        if ((rc = load_app(app, err, errsize)) < 0)
            return rc;
        r->app = app;
    }
    r->ips = hs_xcalloc(json_array_size(ip) + 1, sizeof(*r->ips));
    json_array_foreach(ip, i, v) {
        rc = load_ipspec(json_string_value(v), &r->ips[r->nips], err, errsize);
        r->nips++;
        if (rc < 0)
            return rc;
    }
    if ((rc = load_sources(p, json_object_get(g, "src"), r, err, errsize)) < 0 ||
        (rc = load_grant_dsts(p, json_object_get(g, "dst"), r, err, errsize)) < 0 ||
        (rc = load_via(p, json_object_get(g, "via"), r, err, errsize)) < 0)
        return rc;
    return check_sides(r, err, errsize);
}

/* A policy with neither `acls` nor `grants` lets every node reach every other, as Tailscale's
 * default policy does: one rule from "*" to "*:*". (An empty list of either denies all.) */
static void default_rule(struct pol_rule *r)
{
    r->src = hs_xcalloc(1, sizeof(*r->src));
    r->src[r->nsrc++].kind = PA_STAR;
    r->dst = hs_xcalloc(1, sizeof(*r->dst));
    r->dst[0].a.kind = PA_STAR;
    r->dst[0].ports = hs_xcalloc(1, sizeof(*r->dst[0].ports));
    r->dst[0].ports[0] = (struct pol_ports){ 0, 65535 };
    r->dst[0].nports = 1;
    r->ndst = 1;
}

int pol__load_rules(struct policy *p, char *err, size_t errsize)
{
    json_t *acls = json_object_get(p->doc, "acls"), *grants = json_object_get(p->doc, "grants");
    size_t n = json_array_size(acls) + json_array_size(grants), i;
    json_t *v;
    char inner[512];
    int rc;

    if (n > POLICY_MAX_RULES)
        return pol__err(err, errsize, "%zu rules is over the limit of %d", n, POLICY_MAX_RULES);
    p->has_acls = json_is_array(acls);
    p->has_grants = json_is_array(grants);
    p->rules = hs_xcalloc(n + 1, sizeof(*p->rules));
    json_array_foreach(acls, i, v) {
        rc = load_acl(p, v, &p->rules[p->nrules++], inner, sizeof(inner));
        if (rc < 0)
            return pol__err(err, errsize, "acls[%zu]: %s", i, inner);
    }
    json_array_foreach(grants, i, v) {
        rc = load_grant(p, v, &p->rules[p->nrules++], inner, sizeof(inner));
        if (rc < 0)
            return pol__err(err, errsize, "grants[%zu]: %s", i, inner);
    }
    if (!p->has_acls && !p->has_grants)
        default_rule(&p->rules[p->nrules++]);
    return 0;
}
