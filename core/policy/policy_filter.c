/* One node's packet filter: the rules whose destinations cover it, each reduced to the
 * destinations that do (its own addresses, `*`, prefixes overlapping its approved routes,
 * the internet when it is an exit node), as tailcfg.FilterRule JSON. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

#define ALL_PORTS ((struct pol_ports){ 0, 65535 })

static const char allow_all[] =
    "[{\"SrcIPs\":[\"*\"],\"DstPorts\":[{\"IP\":\"*\",\"Ports\":{\"First\":0,\"Last\":65535}}]}]";

/* DstPorts entries of one destination, collected before the rule is written. */
struct dsts {
    struct hs_buf *out;
    const char *const *self; /* the filter's node's addresses as text; NULL when it has none */
    bool any;
};

static void put_u16(struct hs_buf *out, unsigned v)
{
    char b[6];
    size_t n = sizeof(b);

    do
        b[--n] = (char)('0' + v % 10);
    while ((v /= 10) && n);
    hs_buf_append(out, b + n, sizeof(b) - n);
}

/* Written by hand, not with printf: a node's filter is thousands of these at scale. */
static void dst_port(struct dsts *d, const char *ip, const struct pol_ports *pr)
{
    hs_buf_puts(d->out, d->any ? ",{\"IP\":\"" : "{\"IP\":\"");
    hs_buf_puts(d->out, ip);
    hs_buf_puts(d->out, "\",\"Ports\":{\"First\":");
    put_u16(d->out, pr->first);
    hs_buf_puts(d->out, ",\"Last\":");
    put_u16(d->out, pr->last);
    hs_buf_puts(d->out, "}}");
    d->any = true;
}

static void dst_ent(struct dsts *d, const struct pol_ent *e, const struct pol_ports *ports,
                    size_t nports)
{
    char text[96];

    pol__ent_text(e, text, sizeof(text));
    for (size_t k = 0; k < nports; k++)
        dst_port(d, text, &ports[k]);
}

/* The filter's own node's addresses (written once per filter: most rules name them). */
static void dst_self_addrs(struct dsts *d, const struct pol_ports *ports, size_t nports)
{
    for (int f = 0; f < 2; f++) {
        for (size_t k = 0; d->self[f] && k < nports; k++)
            dst_port(d, d->self[f], &ports[k]);
    }
}

/* The entries of destination alias a that concern node i. */
static void dst_alias(const struct policy_net *c, const struct pol_crule *cr, size_t di,
                      size_t i, struct dsts *d, const struct pol_ports *ports, size_t nports)
{
    const struct pol_alias *a = &cr->r->dst[di].a;
    const struct pol_node *n = c->nodes[i];
    struct pol_ents inet = { 0 };

    if (!pol__bit(cr->dst_bits[di], i))
        return;
    switch (a->kind) {
    case PA_STAR:
        for (size_t k = 0; k < nports; k++)
            dst_port(d, "*", &ports[k]);
        return;
    case PA_SELF:
        return; /* written by the rule's autogroup:self part */
    case PA_HOST:
    case PA_PREFIX: {
        bool mine = false;
        for (int f = 0; f < 2 && !mine; f++)
            mine = n->has[f] && pol__ent_contains(&a->ent, n->ip[f]);
        for (size_t k = 0; k < n->routes.n && !mine; k++)
            mine = pol__ent_overlaps(&a->ent, &n->routes.v[k]);
        if (mine)
            dst_ent(d, &a->ent, ports, nports);
        return;
    }
    case PA_INTERNET:
        if (!n->exit)
            return;
        pol__internet_ranges(&inet);
        for (size_t k = 0; k < inet.n; k++)
            dst_ent(d, &inet.v[k], ports, nports);
        pol__ents_free(&inet);
        return;
    default:
        dst_self_addrs(d, ports, nports);
    }
}

static void write_protos(struct hs_buf *out, const uint8_t *protos, size_t n)
{
    if (!n)
        return;
    hs_buf_puts(out, ",\"IPProto\":[");
    for (size_t k = 0; k < n; k++)
        hs_buf_appendf(out, "%s%u", k ? "," : "", protos[k]);
    hs_buf_puts(out, "]");
}

/* ---- shared source texts ---- */

static unsigned char part_key[crypto_shorthash_KEYBYTES];
static pthread_once_t part_key_once = PTHREAD_ONCE_INIT;

static void part_key_init(void)
{
    randombytes_buf(part_key, sizeof(part_key));
}

/* The rule's SrcIPs hash, worked out by the first filter that hands the text out by
 * reference. Like a cache, the one field of a compiled policy written after the compile:
 * racing writers store the same value. Never 0, which means "not yet". */
static uint64_t src_hash(const struct pol_crule *cr)
{
    uint64_t h = __atomic_load_n(&cr->src_hash, __ATOMIC_RELAXED);
    unsigned char d[crypto_shorthash_BYTES];

    if (h)
        return h;
    pthread_once(&part_key_once, part_key_init);
    crypto_shorthash(d, (const unsigned char *)cr->src_json, cr->src_len, part_key);
    memcpy(&h, d, sizeof(h));
    h |= 1;
    __atomic_store_n((uint64_t *)&cr->src_hash, h, __ATOMIC_RELAXED);
    return h;
}

void policy_parts_free(struct policy_parts *parts)
{
    free(parts->v);
    *parts = (struct policy_parts){ 0 };
}

/* A rule's head, its DstPorts from fill(), and its tail; taken back if no entry came. */
struct rule_out {
    struct hs_buf *out;
    const char *self[2];        /* the node's addresses as text, NULL when absent */
    struct policy_parts *parts; /* NULL: every text inline */
    bool *first;
    size_t mark, mark_parts;
    struct dsts d;
};

/* The rule's sources: inline, or by reference when long and shared. */
static void put_src(struct rule_out *ro, const struct pol_crule *cr)
{
    struct policy_parts *p = ro->parts;

    if (!p || cr->src_len < POLICY_PART_MIN) {
        hs_buf_append(ro->out, cr->src_json, cr->src_len);
        return;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->v = hs_xrealloc(p->v, p->cap * sizeof(*p->v));
    }
    p->v[p->n++] = (struct policy_part){ .at = ro->out->len, .text = cr->src_json,
                                         .len = cr->src_len, .hash = src_hash(cr) };
}

/* cr: the rule whose sources head it; NULL: src_json (its own text) does. */
static void rule_begin(struct rule_out *ro, const struct pol_crule *cr, const char *src_json)
{
    ro->mark = ro->out->len;
    ro->mark_parts = ro->parts ? ro->parts->n : 0;
    hs_buf_puts(ro->out, *ro->first ? "{\"SrcIPs\":" : ",{\"SrcIPs\":");
    if (cr)
        put_src(ro, cr);
    else
        hs_buf_puts(ro->out, src_json);
    hs_buf_puts(ro->out, ",\"DstPorts\":[");
    ro->d = (struct dsts){ .out = ro->out, .self = ro->self };
}

static void rule_end(struct rule_out *ro, const uint8_t *protos, size_t nprotos)
{
    if (!ro->d.any) {
        hs_buf_truncate(ro->out, ro->mark);
        if (ro->parts)
            ro->parts->n = ro->mark_parts;
        return;
    }
    hs_buf_puts(ro->out, "]");
    write_protos(ro->out, protos, nprotos);
    hs_buf_puts(ro->out, "}");
    *ro->first = false;
}

static void acl_rule(const struct policy_net *c, const struct pol_crule *cr, size_t i,
                     struct rule_out *ro)
{
    const struct pol_rule *r = cr->r;

    rule_begin(ro, cr, NULL);
    for (size_t k = 0; k < r->ndst; k++)
        dst_alias(c, cr, k, i, &ro->d, r->dst[k].ports, r->dst[k].nports);
    rule_end(ro, r->protos, r->nprotos);
}

static void grant_ip_rules(const struct policy_net *c, const struct pol_crule *cr, size_t i,
                           struct rule_out *ro)
{
    const struct pol_rule *r = cr->r;

    for (size_t s = 0; s < r->nips; s++) {
        rule_begin(ro, cr, NULL);
        for (size_t k = 0; k < r->ndst; k++)
            dst_alias(c, cr, k, i, &ro->d, r->ips[s].ports, r->ips[s].nports);
        rule_end(ro, r->ips[s].protos, r->ips[s].nprotos);
    }
}

static void cap_dsts(struct hs_buf *out, const struct pol_node *n)
{
    char a[48];

    hs_buf_puts(out, "\"Dsts\":[");
    for (int f = 0, any = 0; f < 2; f++) {
        if (!n->has[f])
            continue;
        pol__addr_text(n->ip[f], f == 0, a, sizeof(a));
        hs_buf_appendf(out, "%s\"%s/%d\"", any++ ? "," : "", a, f == 0 ? 32 : 128);
    }
    hs_buf_puts(out, "]");
}

static void cap_rule(struct hs_buf *out, bool *first, const char *src_json,
                     const struct pol_node *n, const char *name, const char *value_json)
{
    hs_buf_appendf(out, "%s{\"SrcIPs\":%s,\"CapGrant\":[{", *first ? "" : ",", src_json);
    cap_dsts(out, n);
    hs_buf_appendf(out, ",\"CapMap\":{\"%s\":%s}}]}", name, value_json);
    *first = false;
}

static void grant_app_rules(const struct policy_net *c, const struct pol_crule *cr, size_t i,
                            struct hs_buf *out, bool *first)
{
    const char *name;
    json_t *v;

    json_object_foreach(cr->r->app, name, v) {
        char *value = hs_json_dump(v, JSON_COMPACT);
        cap_rule(out, first, cr->src_json, c->nodes[i], name, value);
        free(value);
    }
}

/* The capabilities granted back to the rule's sources (node i among them), from its
 * destinations (src_json: the destinations as sources). */
static void companion_rules(const struct pol_crule *cr, const struct pol_node *n,
                            const char *src_json, struct hs_buf *out, bool *first)
{
    const char *name;
    json_t *v;

    json_object_foreach(cr->r->app, name, v) {
        const char *back = pol__companion_cap(name);
        if (back && strcmp(src_json, "[]") != 0)
            cap_rule(out, first, src_json, n, back, "null");
    }
}

/* The addresses of user u's untagged nodes that rule cr lets in, as a JSON array. */
static char *self_sources(const struct policy_net *c, const struct pol_crule *cr, size_t u)
{
    struct pol_ents s = { 0 };
    char *json;

    for (size_t k = 0; k < c->user_nodes[u].n; k++) {
        const struct pol_node *n = c->nodes[c->user_nodes[u].v[k]];
        if (!pol__bit(cr->src_nodes, c->user_nodes[u].v[k]))
            continue;
        for (int f = 0; f < 2; f++) {
            struct pol_ent e = pol__ent_addr(n->ip[f], f == 0);
            if (n->has[f])
                pol__ents_push(&s, &e);
        }
    }
    json = pol__ents_json(&s);
    pol__ents_free(&s);
    return json;
}

static void self_rules(const struct policy_net *c, const struct pol_crule *cr, size_t i,
                       struct rule_out *ro)
{
    const struct pol_node *n = c->nodes[i];
    const struct pol_rule *r = cr->r;
    char *src;

    if (n->tagged || n->user == (size_t)-1)
        return;
    src = self_sources(c, cr, n->user);
    if (strcmp(src, "[]") != 0) {
        if (!r->grant) {
            rule_begin(ro, NULL, src);
            for (size_t k = 0; k < r->ndst; k++) {
                if (r->dst[k].a.kind == PA_SELF)
                    dst_self_addrs(&ro->d, r->dst[k].ports, r->dst[k].nports);
            }
            rule_end(ro, r->protos, r->nprotos);
        }
        for (size_t s = 0; r->grant && s < r->nips; s++) {
            rule_begin(ro, NULL, src);
            dst_self_addrs(&ro->d, r->ips[s].ports, r->ips[s].nports);
            rule_end(ro, r->ips[s].protos, r->ips[s].nprotos);
        }
        if (r->app) {
            const char *name;
            json_t *v;
            json_object_foreach(r->app, name, v) {
                char *value = hs_json_dump(v, JSON_COMPACT);
                cap_rule(ro->out, ro->first, src, n, name, value);
                free(value);
            }
            if (pol__bit(cr->src_nodes, i))
                companion_rules(cr, n, src, ro->out, ro->first);
        }
    }
    free(src);
}

int policy_net_filter(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    return policy_net_filter_parts(c, i, out, NULL);
}

int policy_net_filter_parts(const struct policy_net *c, size_t i, struct hs_buf *out,
                            struct policy_parts *parts)
{
    bool first = true;
    struct rule_out ro = { .out = out, .parts = parts, .first = &first };
    size_t start = out->len, start_parts = parts ? parts->n : 0;
    char addr[2][48];

    if (!c->p)
        return hs_buf_puts(out, allow_all);
    for (int f = 0; f < 2; f++) {
        if (c->nodes[i]->has[f])
            pol__addr_text(c->nodes[i]->ip[f], f == 0, addr[f], sizeof(addr[f]));
        ro.self[f] = c->nodes[i]->has[f] ? addr[f] : NULL;
    }
    hs_buf_puts(out, "[");
    for (size_t r = 0; r < c->nrules; r++) {
        const struct pol_crule *cr = &c->rules[r];
        if (pol__bit(cr->dst_nodes, i)) {
            if (!cr->r->grant)
                acl_rule(c, cr, i, &ro);
            else
                grant_ip_rules(c, cr, i, &ro);
            if (cr->r->app && !cr->r->nvia) /* capabilities are not routed */
                grant_app_rules(c, cr, i, out, &first);
        }
        if (cr->self)
            self_rules(c, cr, i, &ro);
        if (cr->rev_json && !cr->r->nvia && pol__bit(cr->src_nodes, i))
            companion_rules(cr, c->nodes[i], cr->rev_json, out, &first);
    }
    if (hs_buf_puts(out, "]") < 0) {
        hs_buf_truncate(out, start);
        if (parts)
            parts->n = start_parts;
        return -E2BIG;
    }
    return 0;
}
