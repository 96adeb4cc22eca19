/* Compiling a policy for a tailnet: every rule's sources resolved once (their SrcIPs text
 * shared by every node the rule reaches) and its node sets kept as bitsets, so that a node's
 * filter, and whom it sees, cost only the rules that touch it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* ---- rules ---- */

static bool is_route_alias(const struct pol_alias *a)
{
    return a->kind == PA_PREFIX || a->kind == PA_HOST || a->kind == PA_INTERNET;
}

bool pol__dst_covers(const struct policy_net *c, const struct pol_rule *r,
                     const struct pol_alias *a, size_t i)
{
    if (a->kind == PA_SELF)
        return false;
    /* A grant with `via` reaches its prefixes only through routers with one of its tags. */
    if (r->nvia && is_route_alias(a) && !pol__has_via_tag(r, c->nodes[i]))
        return false;
    return pol__node_in_alias(c, a, i);
}

static void push_node_addrs(const struct pol_node *n, struct pol_ents *out)
{
    for (int f = 0; f < 2; f++) {
        struct pol_ent e = pol__ent_addr(n->ip[f], f == 0);
        if (n->has[f])
            pol__ents_push(out, &e);
    }
}

/* "*" as a source: the tailnet ranges and every approved subnet route (never exit routes). */
static void push_star(const struct policy_net *c, struct pol_ents *out)
{
    pol__star_ranges(out);
    for (size_t x = 0; x < c->nrouters; x++) {
        const struct pol_node *n = c->nodes[c->routers[x].node];
        for (size_t k = 0; k < n->routes.n; k++)
            pol__ents_push(out, &n->routes.v[k]);
    }
}

/* SrcIPs entries of source alias a, whose nodes are in bits. */
static void resolve_src(const struct policy_net *c, const struct pol_alias *a,
                        const uint64_t *bits, struct pol_ents *out)
{
    switch (a->kind) {
    case PA_STAR:
        push_star(c, out);
        return;
    case PA_DANGER_ALL:
        pol__ents_push(out, &(struct pol_ent){ .lo = 0, .hi = ~(pol_u128)0, .kind = PE_STAR });
        return;
    case PA_HOST:
    case PA_PREFIX:
        pol__ents_push(out, &a->ent);
        return;
    default:
        for (size_t w = 0; w < c->words; w++) {
            for (uint64_t m = bits[w]; m; m &= m - 1)
                push_node_addrs(c->nodes[w * 64 + (size_t)__builtin_ctzll(m)], out);
        }
    }
}

struct text_ent {
    char text[96];
    struct pol_ent e;
};

static int cmp_text(const void *a, const void *b)
{
    return strcmp(((const struct text_ent *)a)->text, ((const struct text_ent *)b)->text);
}

static int cmp_lo(const void *a, const void *b)
{
    const struct pol_ent *x = a, *y = b;

    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Drops exact repeats from s, leaving it sorted by text. */
static void ents_distinct(struct pol_ents *s)
{
    struct text_ent *t = hs_xcalloc(s->n + 1, sizeof(*t));
    size_t n = 0;

    for (size_t i = 0; i < s->n; i++) {
        t[i].e = s->v[i];
        pol__ent_text(&s->v[i], t[i].text, sizeof(t[i].text));
    }
    qsort(t, s->n, sizeof(*t), cmp_text);
    for (size_t i = 0; i < s->n; i++) {
        if (i && strcmp(t[i].text, t[i - 1].text) == 0)
            continue;
        s->v[n++] = t[i].e;
    }
    s->n = n;
    free(t);
}

/* A run of neighbouring addresses as one entry: the address itself, the CIDR it fills
 * exactly, or the range. */
static struct pol_ent run_ent(const struct pol_ent *first, pol_u128 hi)
{
    pol_u128 size = hi - first->lo + 1;
    unsigned width = first->v4 ? 32 : 128, bits = width;

    if (size == 1)
        return *first;
    if ((size & (size - 1)) == 0 && (first->lo & (size - 1)) == 0) {
        while (size > 1) {
            size >>= 1;
            bits--;
        }
        return (struct pol_ent){ .lo = first->lo, .hi = hi, .kind = PE_PREFIX,
                                 .bits = (uint8_t)bits, .v4 = first->v4 };
    }
    return pol__ent_range(first->lo, hi, first->v4);
}

/* The entries as they are written: other entries as they are, node addresses that follow
 * one another folded into runs (a tailnet hands addresses out in order, so a group of a
 * thousand nodes is a handful of ranges, not 2,000 strings every member's filter repeats),
 * all sorted by text. */
static struct text_ent *ents_written(const struct pol_ents *s, size_t *count)
{
    struct text_ent *t = hs_xcalloc(s->n + 1, sizeof(*t));
    struct pol_ent *addrs = hs_xcalloc(s->n + 1, sizeof(*addrs));
    size_t n = 0, na = 0;

    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i].kind == PE_ADDR)
            addrs[na++] = s->v[i];
        else
            t[n++].e = s->v[i];
    }
    qsort(addrs, na, sizeof(*addrs), cmp_lo);
    for (size_t i = 0; i < na;) {
        size_t j = i + 1;
        while (j < na && addrs[j].v4 == addrs[i].v4 && addrs[j].lo == addrs[j - 1].lo + 1)
            j++;
        t[n++].e = run_ent(&addrs[i], addrs[j - 1].lo);
        i = j;
    }
    for (size_t i = 0; i < n; i++)
        pol__ent_text(&t[i].e, t[i].text, sizeof(t[i].text));
    qsort(t, n, sizeof(*t), cmp_text);
    free(addrs);
    *count = n;
    return t;
}

char *pol__ents_json(struct pol_ents *s)
{
    struct text_ent *t;
    struct hs_buf b;
    size_t n;

    ents_distinct(s);
    t = ents_written(s, &n);
    hs_buf_init(&b, SIZE_MAX);
    hs_buf_puts(&b, "[");
    for (size_t i = 0; i < n; i++) {
        hs_buf_puts(&b, i ? ",\"" : "\"");
        hs_buf_puts(&b, t[i].text);
        hs_buf_puts(&b, "\"");
    }
    hs_buf_puts(&b, "]");
    free(t);
    return hs_buf_steal(&b);
}

const char *pol__companion_cap(const char *name)
{
    if (strcmp(name, "tailscale.com/cap/drive") == 0)
        return "tailscale.com/cap/drive-sharer";
    if (strcmp(name, "tailscale.com/cap/relay") == 0)
        return "tailscale.com/cap/relay-target";
    return NULL;
}

static bool has_companion(const struct pol_rule *r)
{
    const char *name;
    json_t *v;

    json_object_foreach(r->app, name, v) {
        if (pol__companion_cap(name))
            return true;
    }
    return false;
}

static bool is_identity(const struct pol_alias *a)
{
    return a->kind == PA_USER || a->kind == PA_GROUP || a->kind == PA_TAG ||
           a->kind == PA_MEMBER || a->kind == PA_TAGGED;
}

/* Sources: each alias's nodes (tmp) into src_nodes and its entries into src. */
static void resolve_sources(struct policy_net *c, const struct pol_rule *r,
                            struct pol_crule *cr, uint64_t *tmp)
{
    for (size_t k = 0; k < r->nsrc; k++) {
        memset(tmp, 0, c->words * sizeof(*tmp));
        pol__alias_bits(c, &r->src[k], tmp);
        for (size_t w = 0; w < c->words; w++)
            cr->src_nodes[w] |= tmp[w];
        resolve_src(c, &r->src[k], tmp, &cr->src);
        if (!is_identity(&r->src[k]))
            resolve_src(c, &r->src[k], tmp, &cr->src_lit);
    }
    cr->src_json = pol__ents_json(&cr->src);
    cr->src_len = strlen(cr->src_json);
}

/* Destinations: each one's nodes (a via grant's prefixes only on its routers). */
static void resolve_dsts(struct policy_net *c, const struct pol_rule *r, struct pol_crule *cr)
{
    cr->dst_bits = hs_xcalloc(r->ndst + 1, sizeof(*cr->dst_bits));
    for (size_t k = 0; k < r->ndst; k++) {
        const struct pol_alias *a = &r->dst[k].a;
        uint64_t *b = cr->dst_bits[k] = pol__bits_new(c);
        pol__alias_bits(c, a, b);
        for (size_t i = 0; r->nvia && is_route_alias(a) && i < c->nnodes; i++) {
            if (pol__bit(b, i) && !pol__has_via_tag(r, c->nodes[i]))
                b[i / 64] &= ~(UINT64_C(1) << (i % 64));
        }
        for (size_t w = 0; w < c->words; w++)
            cr->dst_nodes[w] |= b[w];
        cr->self |= a->kind == PA_SELF;
        cr->dst_star |= a->kind == PA_STAR;
        cr->dst_internet |= a->kind == PA_INTERNET;
    }
}

void pol__resolve_rule(struct policy_net *c, const struct pol_rule *r, struct pol_crule *cr,
                       uint64_t *tmp)
{
    cr->r = r;
    cr->shared = hs_xcalloc(1, sizeof(*cr->shared));
    *cr->shared = 1;
    cr->bits_shared = hs_xcalloc(1, sizeof(*cr->bits_shared));
    *cr->bits_shared = 1;
    cr->src_nodes = pol__bits_new(c);
    cr->dst_nodes = pol__bits_new(c);
    resolve_sources(c, r, cr, tmp);
    resolve_dsts(c, r, cr);
    if (has_companion(r)) {
        struct pol_ents rev = { 0 };
        for (size_t k = 0; k < r->ndst; k++) {
            if (r->dst[k].a.kind != PA_SELF)
                resolve_src(c, &r->dst[k].a, cr->dst_bits[k], &rev);
        }
        cr->rev_json = pol__ents_json(&rev);
        pol__ents_free(&rev);
    }
}

/* ---- peers ---- */

/* Whom node a may reach or be reached by, through rule cr. */
static void rule_peers(const struct policy_net *c, const struct pol_crule *cr, size_t a,
                       uint64_t *out)
{
    const struct pol_node *n = c->nodes[a];
    bool in_src = pol__bit(cr->src_nodes, a);

    if (in_src) {
        for (size_t w = 0; w < c->words; w++)
            out[w] |= cr->dst_nodes[w];
    }
    if (pol__bit(cr->dst_nodes, a)) {
        for (size_t w = 0; w < c->words; w++)
            out[w] |= cr->src_nodes[w];
    }
    if (!cr->self || n->tagged || n->user == (size_t)-1)
        return;
    /* autogroup:self: the same user's untagged nodes, either way. */
    for (size_t k = 0; k < c->user_nodes[n->user].n; k++) {
        size_t i = c->user_nodes[n->user].v[k];
        if (in_src || pol__bit(cr->src_nodes, i))
            pol__set(out, i);
    }
}

uint64_t pol__signature(const struct policy_net *c, size_t a, uint64_t *sig, size_t *user)
{
    uint64_t h = 1469598103934665603u;

    memset(sig, 0, c->sig_words * sizeof(*sig));
    for (size_t r = 0; r < c->nrules; r++) {
        if (pol__bit(c->rules[r].src_nodes, a))
            pol__set(sig, 2 * r);
        if (pol__bit(c->rules[r].dst_nodes, a))
            pol__set(sig, 2 * r + 1);
    }
    *user = c->self_rules && !c->nodes[a]->tagged ? c->nodes[a]->user : (size_t)-1;
    for (size_t w = 0; w < c->sig_words; w++)
        h = (h ^ sig[w]) * 1099511628211u;
    return (h ^ *user) * 1099511628211u;
}

static void grow_classes(struct policy_net *c)
{
    size_t cap = c->cap_classes ? 2 * c->cap_classes : 16;

    c->classes = hs_xrealloc(c->classes, cap * sizeof(*c->classes));
    c->members = hs_xrealloc(c->members, cap * sizeof(*c->members));
    c->cap_classes = cap;
}

void pol__class_unref(struct pol_class *k)
{
    if (__atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(k);
}

size_t pol__class_of(struct policy_net *c, size_t a)
{
    uint64_t few[64], *sig = c->sig_words <= 64 ? few : hs_xcalloc(c->sig_words, sizeof(*sig));
    size_t user, k;
    uint64_t h = pol__signature(c, a, sig, &user);
    struct pol_class *cl;
    uint64_t *peers;

    for (k = 0; k < c->nclasses; k++) {
        if (c->classes[k]->hash == h && c->classes[k]->user == user &&
            memcmp(pol__class_sig(c, k), sig, c->sig_words * sizeof(*sig)) == 0)
            break;
    }
    if (k < c->nclasses) {
        if (sig != few)
            free(sig);
        return k;
    }
    if (c->nclasses == c->cap_classes)
        grow_classes(c);
    cl = hs_xcalloc(1, sizeof(*cl) + (c->sig_words + c->words + 1) * sizeof(uint64_t));
    *cl = (struct pol_class){ .refs = 1, .hash = h, .user = user };
    memcpy(cl->bits, sig, c->sig_words * sizeof(*sig));
    if (sig != few)
        free(sig);
    c->classes[k] = cl;
    c->members[k] = 0;
    peers = pol__class_peers(c, k);
    for (size_t r = 0; r < c->nrules; r++)
        rule_peers(c, &c->rules[r], a, peers);
    for (size_t w = 0; w < c->words; w++)
        cl->npeers += (size_t)__builtin_popcountll(peers[w]);
    return c->nclasses++;
}

static void compute_peers(struct policy_net *c)
{
    for (size_t r = 0; r < c->nrules; r++)
        c->self_rules |= c->rules[r].self;
    c->sig_words = (2 * c->nrules + 63) / 64;
    c->cls = hs_xcalloc(c->nnodes + 1, sizeof(*c->cls));
    for (size_t a = 0; a < c->nnodes; a++) {
        c->cls[a] = pol__class_of(c, a);
        c->members[c->cls[a]]++;
    }
}

/* ---- the net ---- */

int policy_compile(const struct policy *p, const struct policy_topology *t,
                   struct policy_net **out, char *err, size_t errsize)
{
    return pol__compile(p, t, true, out, err, errsize);
}

int policy_compile_untested(const struct policy *p, const struct policy_topology *t,
                            struct policy_net **out, char *err, size_t errsize)
{
    return pol__compile(p, t, false, out, err, errsize);
}

static bool provider_group_held(const struct policy_net *c, const char *group)
{
    for (size_t u = 0; u < c->nusers; u++) {
        if (hs_strv_contains(&c->users[u].groups, group + strlen("group:")))
            return true;
    }
    return false;
}

static int check_user(const struct policy_net *c, const struct pol_alias *a, size_t r,
                      const char *side, char *err, size_t errsize)
{
    bool grant = c->p->rules[r].grant;
    size_t idx = r;
    const char *what;

    if (a->kind == PA_GROUP && !a->group && !provider_group_held(c, a->name))
        what = "is not in groups and no user has it from the identity provider";
    else if (a->kind == PA_USER && !hs_has_prefix(a->name, "user:*@") &&
             pol__user_index(c, a->name) == (size_t)-1)
        what = "not found";
    else
        return 0;
    for (size_t k = 0; grant && k < r; k++) /* acls come first, then grants */
        idx -= !c->p->rules[k].grant;
    return pol__err(err, errsize, "%s[%zu]: %s: %s \"%s\" %s", grant ? "grants" : "acls", idx,
                    side, a->kind == PA_GROUP ? "group" : "user", a->name, what);
}

int policy_net_check_users(const struct policy_net *c, char *err, size_t errsize)
{
    int rc;

    for (size_t r = 0; c->p && r < c->p->nrules; r++) {
        const struct pol_rule *rule = &c->p->rules[r];
        for (size_t k = 0; k < rule->nsrc; k++) {
            if ((rc = check_user(c, &rule->src[k], r, "src", err, errsize)) < 0)
                return rc;
        }
        for (size_t k = 0; k < rule->ndst; k++) {
            if ((rc = check_user(c, &rule->dst[k].a, r, "dst", err, errsize)) < 0)
                return rc;
        }
    }
    return 0;
}

int pol__compile(const struct policy *p, const struct policy_topology *t, bool tests,
                 struct policy_net **out, char *err, size_t errsize)
{
    struct policy_net *c = hs_xcalloc(1, sizeof(*c));
    uint64_t *tmp;
    int rc;

    c->p = p;
    if (p)
        __atomic_add_fetch(&((struct policy *)p)->refs, 1, __ATOMIC_ACQ_REL);
    pol__load_topology(c, t);
    tmp = pol__bits_new(c);
    if (p) {
        c->rules = hs_xcalloc(p->nrules + 1, sizeof(*c->rules));
        for (size_t r = 0; r < p->nrules; r++)
            pol__resolve_rule(c, &p->rules[r], &c->rules[c->nrules++], tmp);
    }
    free(tmp);
    compute_peers(c);
    pol__route_viewers(c);
    if (tests && (rc = pol__check_tests(c, err, errsize)) < 0) {
        policy_net_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void pol__crule_fini(struct pol_crule *cr)
{
    if (cr->bits_shared && __atomic_sub_fetch(cr->bits_shared, 1, __ATOMIC_ACQ_REL) == 0) {
        free(cr->bits_shared);
        free(cr->src_nodes);
        free(cr->dst_nodes);
        for (size_t k = 0; cr->dst_bits && k < cr->r->ndst; k++)
            free(cr->dst_bits[k]);
        free(cr->dst_bits);
    }
    if (!cr->shared || __atomic_sub_fetch(cr->shared, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    free(cr->shared);
    pol__ents_free(&cr->src);
    pol__ents_free(&cr->src_lit);
    free(cr->src_json);
    free(cr->rev_json);
}

void policy_net_free(struct policy_net *c)
{
    if (!c)
        return;
    pol__topology_free(c);
    for (size_t r = 0; r < c->nrules; r++)
        pol__crule_fini(&c->rules[r]);
    for (size_t k = 0; k < c->nclasses; k++)
        pol__class_unref(c->classes[k]);
    free(c->classes);
    free(c->members);
    free(c->cls);
    free(c->rules);
    policy_free((struct policy *)c->p);
    free(c);
}

bool policy_net_sees_all(const struct policy_net *c, size_t i)
{
    return !c->p || (i < c->nnodes && c->classes[c->cls[i]]->npeers == c->nnodes);
}

void policy_net_sees_row(const struct policy_net *c, size_t a, uint64_t *row)
{
    size_t words = (c->nnodes + 63) / 64;

    if (a >= c->nnodes) {
        memset(row, 0, words * sizeof(*row));
        return;
    }
    if (!c->p) {
        memset(row, 0xff, words * sizeof(*row));
        if (c->nnodes % 64)
            row[words - 1] = (UINT64_C(1) << (c->nnodes % 64)) - 1;
    } else {
        /* Those a may reach, then those that may reach a. */
        memcpy(row, pol__class_peers(c, c->cls[a]), words * sizeof(*row));
        for (size_t b = 0; b < c->nnodes; b++)
            if (!pol__bit(row, b) && pol__bit(pol__class_peers(c, c->cls[b]), a))
                row[b / 64] |= UINT64_C(1) << (b % 64);
    }
    row[a / 64] &= ~(UINT64_C(1) << (a % 64));
}

bool policy_net_sees(const struct policy_net *c, size_t a, size_t b)
{
    if (a == b || a >= c->nnodes || b >= c->nnodes)
        return false;
    if (!c->p)
        return true;
    return pol__bit(pol__class_peers(c, c->cls[a]), b) ||
           pol__bit(pol__class_peers(c, c->cls[b]), a);
}

/* The half of rule_peers where a is the source: the rule's destinations, and for
 * autogroup:self an untagged a's fellow untagged nodes. */
void policy_net_reach_row(const struct policy_net *c, size_t a, uint64_t *row)
{
    size_t words = (c->nnodes + 63) / 64; /* the caller's row; c->words may be more */
    const struct pol_node *n;

    memset(row, 0, words * sizeof(*row));
    if (a >= c->nnodes)
        return;
    if (!c->p) {
        policy_net_sees_row(c, a, row);
        return;
    }
    n = c->nodes[a];
    for (size_t r = 0; r < c->nrules; r++) {
        const struct pol_crule *cr = &c->rules[r];
        if (!pol__bit(cr->src_nodes, a))
            continue;
        for (size_t w = 0; w < words; w++)
            row[w] |= cr->dst_nodes[w];
        if (!cr->self || n->tagged || n->user == (size_t)-1)
            continue;
        for (size_t k = 0; k < c->user_nodes[n->user].n; k++)
            pol__set(row, c->user_nodes[n->user].v[k]);
    }
    row[a / 64] &= ~(UINT64_C(1) << (a % 64));
}
