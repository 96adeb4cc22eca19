/* mapper: tailcfg.DNSConfig from the DNS settings in force (the dns section, or those saved
 * through the API: state_dns_get) (headscale reference §3.3; headscale types/config.go dns()
 * and util.GenerateMagicDNSRootDomains). */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "mapper/mapper_internal.h"
#include "state/state.h"

static json_t *resolvers(const struct hs_strv *ns)
{
    json_t *a = json_array();

    for (size_t i = 0; i < ns->n; i++)
        json_array_append_new(a, json_pack("{s:s}", "Addr", ns->v[i]));
    return a;
}

/* headscale's GenerateIPv4DNSRootDomain: the zones of the last octet the mask touches, e.g.
 * 100.64.0.0/10 → 64.100.in-addr.arpa … 127.100.in-addr.arpa (no final dot) */
static void v4_zones(const struct ip_prefix *p, json_t *routes)
{
    unsigned last = p->bits / 8, wild = 8 - p->bits % 8;
    char base[32] = "";
    size_t off = 0;

    if (last >= 4) { /* a /32 is one zone of all four octets */
        last = 3;
        wild = 0;
    }
    for (unsigned i = last; i-- > 0;)
        off += (size_t)snprintf(base + off, sizeof(base) - off, "%u.", p->addr[i]);
    for (unsigned v = p->addr[last]; v <= p->addr[last] + (1u << wild) - 1; v++) {
        char zone[64];
        snprintf(zone, sizeof(zone), "%u.%sin-addr.arpa", v, base);
        json_object_set_new(routes, zone, json_array());
    }
}

static unsigned nibble(const uint8_t addr[16], unsigned k)
{
    return (addr[k / 2] >> (k % 2 ? 0 : 4)) & 0xf;
}

/* The ip6.arpa zone of the whole nibbles of the prefix; when the mask splits a nibble, one
 * zone per value of that nibble's free bits (headscale GenerateIPv6DNSRootDomain). */
static void v6_zones(const struct ip_prefix *p, json_t *routes)
{
    unsigned whole = p->bits / 4, fixed = p->bits % 4;
    unsigned count = fixed ? 1u << (4 - fixed) : 1;
    char base[80] = "";
    size_t off = 0;

    for (unsigned k = whole; k-- > 0;)
        off += (size_t)snprintf(base + off, sizeof(base) - off, "%x.", nibble(p->addr, k));
    for (unsigned i = 0; i < count; i++) {
        char zone[96];
        if (fixed)
            snprintf(zone, sizeof(zone), "%x.%sip6.arpa", nibble(p->addr, whole) | i, base);
        else
            snprintf(zone, sizeof(zone), "%sip6.arpa", base);
        json_object_set_new(routes, zone, json_array());
    }
}

void mapper__reverse_zones(const struct ip_prefix *p, json_t *routes)
{
    if (p->family == AF_INET)
        v4_zones(p, routes);
    else if (p->family == AF_INET6 && p->bits < 128)
        v6_zones(p, routes);
}

bool mapper_dns_per_user(const struct mapper *m)
{
    const struct hs_config *cfg = m->cfg;

    return cfg->dns_magic_dns && cfg->dns_use_username_in_magic_dns && cfg->dns_base_domain &&
           *cfg->dns_base_domain;
}

/* "<user label>.<base_domain>" of the 0.22 naming. */
static void user_domain(struct mapper *m, struct state *s, uint64_t uid, char *out, size_t size)
{
    char label[MAPPER_FQDN_MAX];

    mapper__user_label(m, s, uid, label, sizeof(label));
    snprintf(out, size, "%s.%s", label, m->cfg->dns_base_domain);
}

const struct dns_settings *mapper__dns_take(const struct mapper *m, struct state *s,
                                            struct mapper__dns_ref *r)
{
    if ((r->snap = state_dns_get(s)))
        return &r->snap->d;
    r->view = config_dns_settings_view(m->cfg);
    return &r->view;
}

void mapper__dns_drop(struct mapper__dns_ref *r)
{
    state_dns_put(r->snap);
}

static json_t *routes(struct mapper *m, struct state *s, const struct dns_settings *d,
                      const uint64_t *uids, size_t nuids)
{
    const struct hs_config *cfg = m->cfg;
    json_t *r = json_object();
    char dom[2 * MAPPER_FQDN_MAX];

    for (size_t i = 0; i < d->nsplit; i++)
        json_object_set_new(r, d->split[i].domain, resolvers(&d->split[i].nameservers));
    if (d->magic_dns) {
        /* An empty resolver list: answered by MagicDNS itself (100.100.100.100). The base
         * domain needs no route: clients answer their peers' names anyway (headscale sends
         * none either). Zones are written without the final dot, as headscale does. */
        mapper__reverse_zones(&cfg->prefix_v4, r);
        mapper__reverse_zones(&cfg->prefix_v6, r);
    }
    /* 0.22: each user among the viewer and its peers is a MagicDNS zone of its own. */
    for (size_t i = 0; mapper_dns_per_user(m) && i < nuids; i++) {
        user_domain(m, s, uids[i], dom, sizeof(dom));
        json_object_set_new(r, dom, json_array());
    }
    return r;
}

/* Search domains. The current layout: base_domain, then search_domains. The 0.22.3 layout as
 * headscale 0.22.3 sent them (checked side by side in test_dns.py): no base_domain, and
 * without `domains` the split-DNS domains are searched. (0.22.3 also dropped `domains` unless
 * override_local_dns was on, with a warning; we keep what the operator wrote.) */
static void config_domains(const struct hs_config *cfg, const struct dns_settings *d, json_t *a)
{
    if (!cfg->legacy && cfg->dns_base_domain && *cfg->dns_base_domain)
        json_array_append_new(a, json_string(cfg->dns_base_domain));
    for (size_t i = 0; i < d->search_domains.n; i++)
        json_array_append_new(a, json_string(d->search_domains.v[i]));
    for (size_t i = 0; cfg->legacy && !d->search_domains.n && i < d->nsplit; i++)
        json_array_append_new(a, json_string(d->split[i].domain));
}

static json_t *domains(struct mapper *m, struct state *s, const struct dns_settings *d,
                       const struct state_node *self)
{
    json_t *a = json_array();
    char dom[2 * MAPPER_FQDN_MAX];

    config_domains(m->cfg, d, a);
    /* 0.22: the viewer's own user's domain, so its user's nodes answer to their bare name;
     * other users' nodes need their full name. */
    if (mapper_dns_per_user(m) && self) {
        user_domain(m, s, self->n.user_id ? self->n.user_id : MAPPER_TAGGED_USER_ID, dom,
                    sizeof(dom));
        json_array_append_new(a, json_string(dom));
    }
    return a;
}

static json_t *records_json(const struct dns_record *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "Name", v[i].name ? v[i].name : "",
                                           "Type", v[i].type ? v[i].type : "", "Value",
                                           v[i].value ? v[i].value : ""));
    return a;
}

/* The file's records once it has been read, else the settings'. */
static json_t *extra_records(struct mapper *m, const struct dns_settings *d)
{
    json_t *a;

    pthread_mutex_lock(&m->dns_mu);
    if (m->file_records_set)
        a = records_json(m->file_records, m->nfile_records);
    else
        a = records_json(d->records, d->nrecords);
    pthread_mutex_unlock(&m->dns_mu);
    return a;
}

/* Sets o[field] = v when v is a non-empty array/object, else drops v. */
static void set_nonempty(json_t *o, const char *field, json_t *v)
{
    if (json_array_size(v) > 0 || json_object_size(v) > 0)
        json_object_set_new(o, field, v);
    else
        json_decref(v);
}

json_t *mapper__dns_config(struct mapper *m, struct state *s, const struct state_node *self,
                           json_t *capmap, const uint64_t *uids, size_t nuids)
{
    struct mapper__dns_ref ref;
    const struct dns_settings *d = mapper__dns_take(m, s, &ref);
    json_t *dns = json_object();

    /* Without override_local_dns the global servers only back up the OS resolver. */
    set_nonempty(dns, d->override_local_dns ? "Resolvers" : "FallbackResolvers",
                 resolvers(&d->nameservers));
    set_nonempty(dns, "Routes", routes(m, s, d, uids, nuids));
    set_nonempty(dns, "Domains", domains(m, s, d, self));
    if (d->magic_dns) /* omitted when false, as Go's omitempty does */
        json_object_set_new(dns, "Proxied", json_true());
    set_nonempty(dns, "ExtraRecords", extra_records(m, d));
    mapper__dns_drop(&ref);
    mapper__nextdns(dns, self, capmap);
    return dns;
}
