/* mapper: tailcfg.DNSConfig from the dns section (headscale reference §3.3; headscale
 * types/config.go dns() and util.GenerateMagicDNSRootDomains). */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "mapper/mapper_internal.h"

static json_t *resolvers(const struct hs_strv *ns)
{
    json_t *a = json_array();

    for (size_t i = 0; i < ns->n; i++)
        json_array_append_new(a, json_pack("{s:s}", "Addr", ns->v[i]));
    return a;
}

/* headscale's GenerateIPv4DNSRootDomain: the zones of the last octet the mask touches, e.g.
 * 100.64.0.0/10 → 64.100.in-addr.arpa. … 127.100.in-addr.arpa. */
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
        snprintf(zone, sizeof(zone), "%u.%sin-addr.arpa.", v, base);
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
            snprintf(zone, sizeof(zone), "%x.%sip6.arpa.", nibble(p->addr, whole) | i, base);
        else
            snprintf(zone, sizeof(zone), "%sip6.arpa.", base);
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

static json_t *routes(const struct hs_config *cfg)
{
    json_t *r = json_object();

    for (size_t i = 0; i < cfg->dns_nsplit; i++)
        json_object_set_new(r, cfg->dns_split[i].domain,
                            resolvers(&cfg->dns_split[i].nameservers));
    if (cfg->dns_magic_dns) {
        /* An empty resolver list: answered by MagicDNS itself (100.100.100.100). */
        if (cfg->dns_base_domain && *cfg->dns_base_domain)
            json_object_set_new(r, cfg->dns_base_domain, json_array());
        mapper__reverse_zones(&cfg->prefix_v4, r);
        mapper__reverse_zones(&cfg->prefix_v6, r);
    }
    return r;
}

static json_t *domains(const struct hs_config *cfg)
{
    json_t *a = json_array();

    if (cfg->dns_base_domain && *cfg->dns_base_domain)
        json_array_append_new(a, json_string(cfg->dns_base_domain));
    for (size_t i = 0; i < cfg->dns_search_domains.n; i++)
        json_array_append_new(a, json_string(cfg->dns_search_domains.v[i]));
    return a;
}

static json_t *extra_records(const struct hs_config *cfg)
{
    json_t *a = json_array();

    for (size_t i = 0; i < cfg->dns_nextra_records; i++) {
        const struct dns_record *r = &cfg->dns_extra_records[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "Name", r->name ? r->name : "",
                                           "Type", r->type ? r->type : "", "Value",
                                           r->value ? r->value : ""));
    }
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

json_t *mapper__dns_config(const struct mapper *m)
{
    const struct hs_config *cfg = m->cfg;
    json_t *dns = json_object();

    /* Without override_local_dns the global servers only back up the OS resolver. */
    set_nonempty(dns, cfg->dns_override_local_dns ? "Resolvers" : "FallbackResolvers",
                 resolvers(&cfg->dns_nameservers_global));
    set_nonempty(dns, "Routes", routes(cfg));
    set_nonempty(dns, "Domains", domains(cfg));
    json_object_set_new(dns, "Proxied", json_boolean(cfg->dns_magic_dns));
    set_nonempty(dns, "ExtraRecords", extra_records(cfg));
    return dns;
}
