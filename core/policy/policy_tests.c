/* The policy's own `tests` (tailscale.com/kb/1337, "tests"): from one source, each listed
 * "host:port" must be reachable (accept) or not (deny). Loading checks the shape Tailscale
 * accepts; policy_compile() then runs every test against the compiled rules, and
 * `sshTests` through policy_ssh.c. Tailscale answers every failure, of shape or of verdict,
 * with "test(s) failed" (shared/testdata/policy-conformance/policytest.jsonl); our messages
 * start the same way and then name the test and the reason.
 *
 * A verdict is taken over the tailnet's rules as a whole, as Tailscale does: a destination
 * outside the topology (a `hosts` address no node has) is reachable when a rule names it.
 * For a destination that is a node, this is what that node's filter (policy_net_filter)
 * lets in, autogroup:self and IPProto included. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

#define POLICY_MAX_TEST_ASSERTIONS 10000 /* accept + deny entries over every test */

/* The protocols of a filter rule without IPProto, and of a test without proto. */
static const uint8_t default_protos[] = { 6, 17, 1, 58 };

struct pol_test_dst {
    char *text; /* as written, for messages */
    struct pol_alias a;
    uint16_t port;
    bool accept; /* the verdict the test expects */
};

struct pol_test {
    char *src_text;
    struct pol_alias src;
    uint8_t proto; /* 0: the default set */
    struct pol_test_dst *dst;
    size_t ndst;
};

struct pol_tests {
    struct pol_test *v;
    size_t n;
};

/* ---- loading ---- */

static int test_err(char *err, size_t errsize, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int test_err(char *err, size_t errsize, size_t i, const char *fmt, ...)
{
    char inner[384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(inner, sizeof(inner), fmt, ap);
    va_end(ap);
    return pol__err(err, errsize, "test(s) failed: tests[%zu]: %s", i, inner);
}

/* One connection attempt: one host (never a CIDR or autogroup:internet, whose traffic exit
 * nodes route) on one port. */
static int load_dst(const struct policy *p, const char *s, struct pol_test_dst *d, size_t i,
                    char *err, size_t errsize)
{
    char alias[256], inner[256];
    const char *port;
    struct pol_ports *ports;
    size_t nports;
    bool one;

    d->text = hs_strdup(s);
    if (pol__split_alias_port(s, alias, sizeof(alias), &port) < 0)
        return test_err(err, errsize, i, "\"%s\": expected host:port", s);
    if (strchr(alias, '/'))
        return test_err(err, errsize, i, "\"%s\": a test destination is one host, not a CIDR",
                        s);
    if (pol__parse_ports(port, &ports, &nports, inner, sizeof(inner)) < 0)
        return test_err(err, errsize, i, "\"%s\": %s", s, inner);
    one = nports == 1 && ports[0].first == ports[0].last;
    d->port = ports[0].first;
    free(ports);
    if (!one)
        return test_err(err, errsize, i, "\"%s\": a test destination has one port", s);
    if (pol__parse_alias(p, alias, &d->a, inner, sizeof(inner)) < 0)
        return test_err(err, errsize, i, "\"%s\": %s", s, inner);
    switch (d->a.kind) {
    case PA_INTERNET:
        return test_err(err, errsize, i, "\"%s\": autogroup:internet cannot be tested", s);
    case PA_SELF:
        return test_err(err, errsize, i, "\"%s\": autogroup:self cannot be a test destination",
                        s);
    case PA_STAR:
    case PA_DANGER_ALL:
        return test_err(err, errsize, i, "\"%s\": a test destination names hosts", s);
    case PA_HOST:
        if (d->a.ent.kind != PE_ADDR)
            return test_err(err, errsize, i,
                            "\"%s\": host %s is a CIDR; a test destination is one host", s,
                            alias);
        break;
    default:
        break;
    }
    return 0;
}

static int load_dsts(const struct policy *p, json_t *list, bool accept, struct pol_test *t,
                     size_t i, char *err, size_t errsize)
{
    size_t k;
    json_t *v;
    int rc;

    json_array_foreach(list, k, v) {
        struct pol_test_dst *d = &t->dst[t->ndst++];
        d->accept = accept;
        if ((rc = load_dst(p, json_string_value(v), d, i, err, errsize)) < 0)
            return rc;
    }
    return 0;
}

/* NULL and absent are an empty list. */
static int load_proto(json_t *proto, struct pol_test *t, size_t i, char *err, size_t errsize)
{
    const char *s = json_string_value(proto);

    if (!proto || json_is_null(proto))
        return 0;
    if (!s)
        return test_err(err, errsize, i, "proto must be a string");
    if (!*s)
        return 0;
    /* A test is one connection attempt: only protocols with ports make one. */
    if (pol__parse_proto(s, &t->proto) < 0 ||
        (t->proto != 6 && t->proto != 17 && t->proto != 132))
        return test_err(err, errsize, i, "proto \"%s\": tests use tcp, udp or sctp", s);
    return 0;
}

static int load_test(const struct policy *p, json_t *o, struct pol_test *t, size_t i, char *err,
                     size_t errsize)
{
    json_t *accept = json_object_get(o, "accept"), *deny = json_object_get(o, "deny");
    const char *src = hs_json_str(o, "src"), *key;
    char inner[256];
    json_t *v;
    int rc;

    if (!json_is_object(o))
        return test_err(err, errsize, i, "must be an object");
    json_object_foreach(o, key, v) {
        if (strcmp(key, "src") != 0 && strcmp(key, "proto") != 0 &&
            strcmp(key, "accept") != 0 && strcmp(key, "deny") != 0)
            return test_err(err, errsize, i, "unknown field \"%s\"", key);
    }
    if (!src || !*src)
        return test_err(err, errsize, i, "src is required");
    t->src_text = hs_strdup(src);
    if (pol__parse_alias(p, src, &t->src, inner, sizeof(inner)) < 0)
        return test_err(err, errsize, i, "src=%s", inner);
    if (t->src.kind == PA_SELF || t->src.kind == PA_INTERNET)
        return test_err(err, errsize, i, "src \"%s\" cannot be a test source", src);
    if ((rc = load_proto(json_object_get(o, "proto"), t, i, err, errsize)) < 0)
        return rc;
    if (!pol__string_list(accept) || !pol__string_list(deny))
        return test_err(err, errsize, i, "accept and deny must be lists of strings");
    if (json_array_size(accept) + json_array_size(deny) == 0)
        return test_err(err, errsize, i, "has neither accept nor deny entries");
    t->dst = hs_xcalloc(json_array_size(accept) + json_array_size(deny), sizeof(*t->dst));
    if ((rc = load_dsts(p, accept, true, t, i, err, errsize)) < 0)
        return rc;
    return load_dsts(p, deny, false, t, i, err, errsize);
}

int pol__load_tests(struct policy *p, char *err, size_t errsize)
{
    json_t *tests = json_object_get(p->doc, "tests"), *v;
    size_t total = 0, i;
    int rc;

    if (!json_is_array(tests) || json_array_size(tests) == 0)
        return 0;
    json_array_foreach(tests, i, v) {
        total += json_array_size(json_object_get(v, "accept")) +
                 json_array_size(json_object_get(v, "deny"));
    }
    if (total > POLICY_MAX_TEST_ASSERTIONS)
        return pol__err(err, errsize, "tests: %zu destinations is over the limit of %d", total,
                        POLICY_MAX_TEST_ASSERTIONS);
    p->tests = hs_xcalloc(1, sizeof(*p->tests));
    p->tests->v = hs_xcalloc(json_array_size(tests), sizeof(*p->tests->v));
    json_array_foreach(tests, i, v) {
        if ((rc = load_test(p, v, &p->tests->v[p->tests->n++], i, err, errsize)) < 0)
            return rc;
    }
    return 0;
}

void pol__tests_free(struct pol_tests *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        struct pol_test *x = &t->v[i];
        for (size_t k = 0; k < x->ndst; k++) {
            free(x->dst[k].text);
            pol__alias_fini(&x->dst[k].a);
        }
        free(x->dst);
        free(x->src_text);
        pol__alias_fini(&x->src);
    }
    free(t->v);
    free(t);
}

/* ---- running ---- */

/* What an alias of a test stands for: addresses (or prefixes), and the nodes holding one. */
struct side {
    struct pol_ents ents;
    size_t *nodes;
    size_t nnodes;
};

static void side_fini(struct side *s)
{
    pol__ents_free(&s->ents);
    free(s->nodes);
    *s = (struct side){ 0 };
}

static bool node_addr_in(const struct pol_node *n, const struct pol_ent *e)
{
    return (n->has[0] && pol__ent_contains(e, n->ip[0])) ||
           (n->has[1] && pol__ent_contains(e, n->ip[1]));
}

static bool node_in_ents(const struct pol_node *n, const struct pol_ents *s)
{
    for (size_t k = 0; k < s->n; k++) {
        if (node_addr_in(n, &s->v[k]))
            return true;
    }
    return false;
}

/* -ENOENT when a user token names no user (a typo or an unknown host name: Tailscale fails
 * such tests even though rules tolerate them). */
static int resolve(const struct policy_net *c, const struct pol_alias *a, struct side *out)
{
    bool by_addr = a->kind == PA_STAR || a->kind == PA_DANGER_ALL || a->kind == PA_HOST ||
                   a->kind == PA_PREFIX;

    switch (a->kind) {
    case PA_USER:
        if (pol__user_index(c, a->name) == (size_t)-1)
            return -ENOENT;
        break;
    case PA_STAR:
        pol__star_ranges(&out->ents);
        break;
    case PA_DANGER_ALL:
        pol__ents_push(&out->ents, &(struct pol_ent){ .lo = 0, .hi = ~(pol_u128)0,
                                                      .kind = PE_STAR });
        break;
    case PA_HOST:
    case PA_PREFIX:
        pol__ents_push(&out->ents, &a->ent);
        break;
    default:
        break;
    }
    out->nodes = hs_xcalloc(c->nnodes + 1, sizeof(*out->nodes));
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct pol_node *n = c->nodes[i];
        if (by_addr ? !node_in_ents(n, &out->ents) : !pol__node_in_alias(c, a, i))
            continue;
        out->nodes[out->nnodes++] = i;
        for (int f = 0; f < 2 && !by_addr; f++) {
            struct pol_ent e = pol__ent_addr(n->ip[f], f == 0);
            if (n->has[f])
                pol__ents_push(&out->ents, &e);
        }
    }
    return 0;
}

struct run {
    const struct policy_net *c;
    struct pol_ents inet; /* autogroup:internet as a rule destination */
    uint16_t port;
    uint8_t proto;
};

/* IPProto of the rule (empty: the default set) against the test's (0: the default set). */
static bool proto_ok(const uint8_t *protos, size_t n, uint8_t want)
{
    const uint8_t *set = n ? protos : default_protos;
    size_t count = n ? n : HS_ARRAY_LEN(default_protos);

    for (size_t k = 0; k < count; k++) {
        if (want ? set[k] == want
                 : memchr(default_protos, set[k], sizeof(default_protos)) != NULL)
            return true;
    }
    return false;
}

static bool ports_have(const struct pol_ports *v, size_t n, uint16_t port)
{
    for (size_t k = 0; k < n; k++) {
        if (v[k].first <= port && port <= v[k].last)
            return true;
    }
    return false;
}

static bool ents_overlap(const struct pol_ents *s, const struct pol_ent *e)
{
    for (size_t k = 0; k < s->n; k++) {
        if (pol__ent_overlaps(&s->v[k], e))
            return true;
    }
    return false;
}

/* Whether rule destination a (not autogroup:self) covers the test's destination d. */
static bool dst_covers(const struct run *run, const struct pol_alias *a, const struct side *d)
{
    switch (a->kind) {
    case PA_STAR:
        return true;
    case PA_SELF:
        return false;
    case PA_HOST:
    case PA_PREFIX:
        return ents_overlap(&d->ents, &a->ent);
    case PA_INTERNET:
        for (size_t k = 0; k < d->ents.n; k++) {
            if (ents_overlap(&run->inet, &d->ents.v[k]))
                return true;
        }
        return false;
    default:
        for (size_t k = 0; k < d->nnodes; k++) {
            if (pol__node_in_alias(run->c, a, d->nodes[k]))
                return true;
        }
        return false;
    }
}

/* autogroup:self: from the rule's sources that are untagged nodes of the destination's
 * owner (the SrcIPs policy_net_filter writes for it). */
static bool self_allows(const struct policy_net *c, const struct pol_crule *cr,
                        const struct pol_ent *s, const struct side *d)
{
    for (size_t k = 0; k < d->nnodes; k++) {
        const struct pol_node *t = c->nodes[d->nodes[k]];
        if (t->tagged || t->user == (size_t)-1)
            continue;
        for (size_t n = 0; n < c->nnodes; n++) {
            if (pol__node_is_users(c, n, t->user) && pol__bit(cr->src_nodes, n) &&
                node_addr_in(c->nodes[n], s))
                return true;
        }
    }
    return false;
}

static bool dst_allows(const struct run *run, const struct pol_crule *cr, bool from,
                       const struct pol_dst *pd, const struct pol_ent *s, const struct side *d)
{
    if (pd->a.kind == PA_SELF)
        return self_allows(run->c, cr, s, d);
    return from && dst_covers(run, &pd->a, d);
}

/* Whether rule cr lets source entry s reach d on the run's port and protocol. */
static bool rule_allows(const struct run *run, const struct pol_crule *cr,
                        const struct pol_ent *s, const struct side *d)
{
    const struct pol_rule *r = cr->r;
    bool from = ents_overlap(&cr->src, s);

    if (!r->grant) {
        if (!proto_ok(r->protos, r->nprotos, run->proto))
            return false;
        for (size_t k = 0; k < r->ndst; k++) {
            if (ports_have(r->dst[k].ports, r->dst[k].nports, run->port) &&
                dst_allows(run, cr, from, &r->dst[k], s, d))
                return true;
        }
        return false;
    }
    for (size_t x = 0; x < r->nips; x++) {
        const struct pol_ipspec *ip = &r->ips[x];
        if (!proto_ok(ip->protos, ip->nprotos, run->proto) ||
            !ports_have(ip->ports, ip->nports, run->port))
            continue;
        for (size_t k = 0; k < r->ndst; k++) {
            if (dst_allows(run, cr, from, &r->dst[k], s, d))
                return true;
        }
    }
    return false;
}

/* Every address of the source must get through (Tailscale: a partial allow is a deny). */
static bool allowed(const struct run *run, const struct side *src, const struct side *d)
{
    const struct policy_net *c = run->c;

    for (size_t k = 0; k < src->ents.n; k++) {
        bool any = false;
        for (size_t r = 0; r < c->nrules && !any; r++)
            any = rule_allows(run, &c->rules[r], &src->ents.v[k], d);
        if (!any)
            return false;
    }
    return true;
}

static const char *proto_suffix(uint8_t proto)
{
    switch (proto) {
    case 6:
        return " (tcp)";
    case 17:
        return " (udp)";
    case 132:
        return " (sctp)";
    default:
        return "";
    }
}

/* One test: 0 when it passes, else -EINVAL with the first reason in err. */
static int run_test(struct run *run, const struct pol_test *t, size_t i, char *err,
                    size_t errsize)
{
    struct side src = { 0 };
    int rc = 0;

    if (resolve(run->c, &t->src, &src) < 0) {
        rc = test_err(err, errsize, i, "src \"%s\" names no user or host", t->src_text);
        goto out;
    }
    if (src.ents.n == 0) {
        rc = test_err(err, errsize, i, "src \"%s\" has no addresses", t->src_text);
        goto out;
    }
    run->proto = t->proto;
    for (size_t k = 0; k < t->ndst && rc == 0; k++) {
        const struct pol_test_dst *td = &t->dst[k];
        struct side d = { 0 };
        bool ok;
        if (resolve(run->c, &td->a, &d) < 0) {
            rc = test_err(err, errsize, i, "%s -> %s: the destination names no user or host",
                          t->src_text, td->text);
        } else if (d.ents.n == 0) {
            rc = test_err(err, errsize, i, "%s -> %s: the destination has no addresses",
                          t->src_text, td->text);
        } else {
            run->port = td->port;
            ok = allowed(run, &src, &d);
            if (ok != td->accept)
                rc = test_err(err, errsize, i, "%s -> %s%s: expected %s, got %s", t->src_text,
                              td->text, proto_suffix(t->proto), td->accept ? "accept" : "deny",
                              ok ? "accept" : "deny");
        }
        side_fini(&d);
    }
out:
    side_fini(&src);
    return rc;
}

int pol__check_tests(const struct policy_net *c, char *err, size_t errsize)
{
    const struct pol_tests *tests = c->p ? c->p->tests : NULL;
    struct run run = { .c = c };
    size_t failed = 0;
    char first[512] = "";

    if (tests)
        pol__internet_ranges(&run.inet);
    for (size_t i = 0; tests && i < tests->n; i++) {
        char msg[512];
        if (run_test(&run, &tests->v[i], i, msg, sizeof(msg)) < 0 && failed++ == 0)
            hs_strlcpy(first, msg, sizeof(first));
    }
    pol__ents_free(&run.inet);
    if (failed > 1)
        return pol__err(err, errsize, "%s (and %zu more failing)", first, failed - 1);
    if (failed)
        return pol__err(err, errsize, "%s", first);
    return pol__check_ssh_tests(c, err, errsize);
}

size_t policy_net_run_tests(const struct policy_net *c, policy_test_fn fn, void *arg)
{
    const struct pol_tests *tests = c->p ? c->p->tests : NULL;
    struct run run = { .c = c };
    size_t failed = 0;
    char msg[512];

    if (tests)
        pol__internet_ranges(&run.inet);
    for (size_t i = 0; tests && i < tests->n; i++) {
        bool bad = run_test(&run, &tests->v[i], i, msg, sizeof(msg)) < 0;
        failed += bad;
        fn(arg, i, tests->v[i].src_text, bad ? msg : NULL);
    }
    pol__ents_free(&run.inet);
    if (c->p && json_array_size(json_object_get(c->p->doc, "sshTests"))) {
        bool bad = pol__check_ssh_tests(c, msg, sizeof(msg)) < 0;
        failed += bad;
        fn(arg, (size_t)-1, "sshTests", bad ? msg : NULL);
    }
    return failed;
}
