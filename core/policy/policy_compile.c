/* Compiling a policy for a tailnet: nodes and users indexed, every rule's sources resolved
 * once (their SrcIPs text shared by every node the rule reaches), and node sets as bitsets,
 * so that a node's filter, and whom it sees, cost only the rules that touch it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* ---- users and nodes ---- */

static bool token_matches(const struct pol_user *u, const char *tok)
{
    size_t n;

    if (hs_has_prefix(tok, "user:*@")) {
        const char *at = u->email ? strrchr(u->email, '@') : NULL;
        return at && strcmp(at + 1, tok + strlen("user:*@")) == 0;
    }
    if (hs_has_prefix(tok, "user:"))
        tok += strlen("user:");
    n = strlen(tok);

    if (u->email && strcmp(u->email, tok) == 0)
        return true;
    if (u->name && strcmp(u->name, tok) == 0)
        return true;
    /* "alice@" names the user alice (headscale's form for users without a domain). */
    return n > 1 && tok[n - 1] == '@' && u->name && strlen(u->name) == n - 1 &&
           strncmp(u->name, tok, n - 1) == 0;
}

size_t pol__user_index(const struct policy_net *c, const char *token)
{
    for (size_t i = 0; i < c->nusers; i++) {
        if (token_matches(&c->users[i], token))
            return i;
    }
    return (size_t)-1;
}

bool pol__node_is_users(const struct policy_net *c, size_t n, size_t user)
{
    return !c->nodes[n].tagged && c->nodes[n].user == user && user != (size_t)-1;
}

static bool node_has_tag(const struct pol_node *n, const char *tag)
{
    for (size_t i = 0; i < n->ntags; i++) {
        if (strcmp(n->tags[i], tag) == 0)
            return true;
    }
    return false;
}

static bool node_addr_in(const struct pol_node *n, const struct pol_ent *e)
{
    return (n->has[0] && pol__ent_contains(e, n->ip[0])) ||
           (n->has[1] && pol__ent_contains(e, n->ip[1]));
}

static bool node_routes_overlap(const struct pol_node *n, const struct pol_ent *e)
{
    for (size_t i = 0; i < n->routes.n; i++) {
        if (pol__ent_overlaps(&n->routes.v[i], e))
            return true;
    }
    return false;
}

/* Identity aliases by who the node is; address aliases by its addresses or approved routes. */
bool pol__node_in_alias(const struct policy_net *c, const struct pol_alias *a, size_t i)
{
    const struct pol_node *n = &c->nodes[i];

    switch (a->kind) {
    case PA_STAR:
    case PA_DANGER_ALL:
        return true;
    case PA_USER:
        return !n->tagged && n->user != (size_t)-1 && token_matches(&c->users[n->user], a->name);
    case PA_GROUP: {
        const struct pol_group *g = pol__group(c->p, a->name);
        for (size_t j = 0; g && j < g->n; j++) {
            if (!n->tagged && n->user != (size_t)-1 &&
                token_matches(&c->users[n->user], g->members[j].name))
                return true;
        }
        return false;
    }
    case PA_TAG:
        return node_has_tag(n, a->name);
    case PA_HOST:
    case PA_PREFIX:
        return node_addr_in(n, &a->ent) || node_routes_overlap(n, &a->ent);
    case PA_MEMBER:
        return !n->tagged;
    case PA_TAGGED:
        return n->tagged;
    case PA_INTERNET:
        return n->exit;
    default:
        return false;
    }
}

/* An alias owns a node for tagOwners and autoApprovers: users and groups by the node's
 * owner (tagged or not), tags by the node's tags. */
static bool owner_matches(const struct policy_net *c, const struct pol_alias *a, size_t i)
{
    struct pol_node *n = &c->nodes[i];
    bool was = n->tagged;
    bool r;

    if (a->kind == PA_TAG || a->kind == PA_TAGGED || a->kind == PA_MEMBER)
        return pol__node_in_alias(c, a, i);
    n->tagged = false;
    r = pol__node_in_alias(c, a, i);
    n->tagged = was;
    return r && !was;
}

static bool auto_approved(const struct policy_net *c, size_t i, const struct pol_ent *route)
{
    const struct policy *p = c->p;

    for (size_t k = 0; p && k < p->napprovers; k++) {
        const struct pol_approver *ap = &p->approvers[k];
        /* Exit routes only through exitNode: a routes entry of 0.0.0.0/0 approves none. */
        bool covers = ap->exit ? pol__is_exit_route(route)
                               : (!pol__is_exit_route(route) && ap->route.v4 == route->v4 &&
                                  ap->route.lo <= route->lo && route->hi <= ap->route.hi);
        for (size_t j = 0; covers && j < ap->n; j++) {
            if (owner_matches(c, &ap->who[j], i))
                return true;
        }
    }
    return false;
}

static void add_route(struct pol_node *n, const char *text, const struct pol_ent *e)
{
    for (size_t i = 0; i < n->napproved; i++) {
        if (strcmp(n->approved[i], text) == 0)
            return;
    }
    n->approved = hs_xrealloc(n->approved, (n->napproved + 1) * sizeof(*n->approved));
    n->approved[n->napproved++] = hs_strdup(text);
    if (pol__is_exit_route(e)) {
        n->exit = true;
        return;
    }
    pol__ents_push(&n->routes, e);
    n->route_text = hs_xrealloc(n->route_text, n->routes.n * sizeof(*n->route_text));
    n->route_text[n->routes.n - 1] = n->approved[n->napproved - 1];
}

static void node_routes(struct policy_net *c, size_t i, const struct policy_node *in)
{
    struct pol_ent e;

    for (size_t k = 0; k < in->napproved; k++) {
        if (pol__parse_prefix(in->approved[k], true, &e) == 0)
            add_route(&c->nodes[i], in->approved[k], &e);
    }
    for (size_t k = 0; k < in->nroutes; k++) {
        if (pol__parse_prefix(in->routes[k], true, &e) == 0 && auto_approved(c, i, &e))
            add_route(&c->nodes[i], in->routes[k], &e);
    }
}

static void load_node(struct policy_net *c, size_t i, const struct policy_node *in)
{
    struct pol_node *n = &c->nodes[i];
    bool v4;

    n->name = hs_strdup(in->name ? in->name : "");
    n->id = in->id;
    n->user_id = in->user_id;
    n->user = (size_t)-1;
    for (size_t u = 0; u < c->nusers && in->user_id; u++) {
        if (c->users[u].id == in->user_id)
            n->user = u;
    }
    n->tagged = in->ntags > 0;
    n->tags = hs_xcalloc(in->ntags + 1, sizeof(*n->tags));
    for (size_t k = 0; k < in->ntags; k++)
        n->tags[n->ntags++] = hs_strdup(in->tags[k]);
    n->has[0] = in->ipv4 && pol__parse_ip(in->ipv4, &n->ip[0], &v4) == 0 && v4;
    n->has[1] = in->ipv6 && pol__parse_ip(in->ipv6, &n->ip[1], &v4) == 0 && !v4;
}

static void load_topology(struct policy_net *c, const struct policy_topology *t)
{
    c->users = hs_xcalloc(t->nusers + 1, sizeof(*c->users));
    for (size_t i = 0; i < t->nusers; i++) {
        c->users[i].id = t->users[i].id;
        c->users[i].name = hs_strdup(t->users[i].name);
        c->users[i].email = hs_strdup(t->users[i].email);
    }
    c->nusers = t->nusers;
    c->nodes = hs_xcalloc(t->nnodes + 1, sizeof(*c->nodes));
    c->nnodes = t->nnodes;
    c->words = (t->nnodes + 63) / 64;
    for (size_t i = 0; i < t->nnodes; i++)
        load_node(c, i, &t->nodes[i]);
    /* Routes after every node is known: auto-approval looks at owners and tags. */
    for (size_t i = 0; i < t->nnodes; i++)
        node_routes(c, i, &t->nodes[i]);
}

/* ---- rules ---- */

static bool is_route_alias(const struct pol_alias *a)
{
    return a->kind == PA_PREFIX || a->kind == PA_HOST || a->kind == PA_INTERNET;
}

static bool has_via_tag(const struct pol_rule *r, const struct pol_node *n)
{
    for (size_t k = 0; k < r->nvia; k++) {
        if (node_has_tag(n, r->via[k]))
            return true;
    }
    return false;
}

bool pol__dst_covers(const struct policy_net *c, const struct pol_rule *r,
                     const struct pol_alias *a, size_t i)
{
    if (a->kind == PA_SELF)
        return false;
    /* A grant with `via` reaches its prefixes only through routers with one of its tags. */
    if (r->nvia && is_route_alias(a) && !has_via_tag(r, &c->nodes[i]))
        return false;
    return pol__node_in_alias(c, a, i);
}

static uint64_t *bits_new(const struct policy_net *c)
{
    return hs_xcalloc(c->words + 1, sizeof(uint64_t));
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
    for (size_t i = 0; i < c->nnodes; i++) {
        for (size_t k = 0; k < c->nodes[i].routes.n; k++)
            pol__ents_push(out, &c->nodes[i].routes.v[k]);
    }
}

static void resolve_src(const struct policy_net *c, const struct pol_alias *a,
                        struct pol_ents *out)
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
        for (size_t i = 0; i < c->nnodes; i++) {
            if (pol__node_in_alias(c, a, i))
                push_node_addrs(&c->nodes[i], out);
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

char *pol__ents_json(struct pol_ents *s)
{
    struct text_ent *t = hs_xcalloc(s->n + 1, sizeof(*t));
    struct hs_buf b;
    size_t n = 0;

    for (size_t i = 0; i < s->n; i++) {
        t[i].e = s->v[i];
        pol__ent_text(&s->v[i], t[i].text, sizeof(t[i].text));
    }
    qsort(t, s->n, sizeof(*t), cmp_text);
    hs_buf_init(&b, SIZE_MAX);
    hs_buf_puts(&b, "[");
    for (size_t i = 0; i < s->n; i++) {
        if (i && strcmp(t[i].text, t[i - 1].text) == 0)
            continue;
        s->v[n++] = t[i].e;
        hs_buf_appendf(&b, "%s\"%s\"", n > 1 ? "," : "", t[i].text);
    }
    hs_buf_puts(&b, "]");
    s->n = n;
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

static void resolve_rule(struct policy_net *c, const struct pol_rule *r, struct pol_crule *cr)
{
    cr->r = r;
    cr->src_nodes = bits_new(c);
    cr->dst_nodes = bits_new(c);
    for (size_t k = 0; k < r->nsrc; k++)
        resolve_src(c, &r->src[k], &cr->src);
    cr->src_json = pol__ents_json(&cr->src);
    if (has_companion(r)) {
        struct pol_ents rev = { 0 };
        for (size_t k = 0; k < r->ndst; k++) {
            if (r->dst[k].a.kind != PA_SELF)
                resolve_src(c, &r->dst[k].a, &rev);
        }
        cr->rev_json = pol__ents_json(&rev);
        pol__ents_free(&rev);
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        for (size_t k = 0; k < r->nsrc; k++) {
            if (pol__node_in_alias(c, &r->src[k], i)) {
                pol__set(cr->src_nodes, i);
                break;
            }
        }
        for (size_t k = 0; k < r->ndst; k++) {
            if (pol__dst_covers(c, r, &r->dst[k].a, i)) {
                pol__set(cr->dst_nodes, i);
                break;
            }
        }
    }
    for (size_t k = 0; k < r->ndst; k++) {
        cr->self |= r->dst[k].a.kind == PA_SELF;
        cr->dst_star |= r->dst[k].a.kind == PA_STAR;
        cr->dst_internet |= r->dst[k].a.kind == PA_INTERNET;
    }
}

/* ---- peers ---- */

/* Whom node a may reach or be reached by, through rule cr. */
static void rule_peers(const struct policy_net *c, const struct pol_crule *cr, size_t a,
                       uint64_t *out)
{
    const struct pol_node *n = &c->nodes[a];
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
    for (size_t i = 0; i < c->nnodes; i++) {
        if (pol__node_is_users(c, i, n->user) && (in_src || pol__bit(cr->src_nodes, i)))
            pol__set(out, i);
    }
}

/* Nodes in the same rules on the same sides (and, with autogroup:self, of the same user)
 * see the same peers: they share one set. */
static uint64_t signature_hash(const struct policy_net *c, size_t a, bool self_rules)
{
    uint64_t h = 1469598103934665603u;

    for (size_t r = 0; r < c->nrules; r++) {
        unsigned v = pol__bit(c->rules[r].src_nodes, a) | pol__bit(c->rules[r].dst_nodes, a) << 1;
        h = (h ^ v) * 1099511628211u;
    }
    if (self_rules)
        h = (h ^ (c->nodes[a].tagged ? (uint64_t)-1 : c->nodes[a].user)) * 1099511628211u;
    return h;
}

static bool same_signature(const struct policy_net *c, size_t a, size_t b, bool self_rules)
{
    for (size_t r = 0; r < c->nrules; r++) {
        const struct pol_crule *cr = &c->rules[r];
        if (pol__bit(cr->src_nodes, a) != pol__bit(cr->src_nodes, b) ||
            pol__bit(cr->dst_nodes, a) != pol__bit(cr->dst_nodes, b))
            return false;
    }
    return !self_rules || (c->nodes[a].tagged == c->nodes[b].tagged &&
                           (c->nodes[a].tagged || c->nodes[a].user == c->nodes[b].user));
}

static void compute_peers(struct policy_net *c)
{
    bool self_rules = false;
    uint64_t *hash = hs_xcalloc(c->nnodes + 1, sizeof(*hash));
    size_t *owner = hs_xcalloc(c->nnodes + 1, sizeof(*owner)); /* node whose set it uses */

    for (size_t r = 0; r < c->nrules; r++)
        self_rules |= c->rules[r].self;
    c->peers = hs_xcalloc(c->nnodes + 1, sizeof(*c->peers));
    c->peer_sets = hs_xcalloc(c->nnodes + 1, sizeof(*c->peer_sets));
    for (size_t a = 0; a < c->nnodes; a++) {
        hash[a] = signature_hash(c, a, self_rules);
        for (size_t k = 0; k < c->npeer_sets && !c->peers[a]; k++) {
            size_t b = owner[k];
            if (hash[b] == hash[a] && same_signature(c, a, b, self_rules))
                c->peers[a] = c->peer_sets[k];
        }
        if (c->peers[a])
            continue;
        owner[c->npeer_sets] = a;
        c->peers[a] = c->peer_sets[c->npeer_sets++] = bits_new(c);
        for (size_t r = 0; r < c->nrules; r++)
            rule_peers(c, &c->rules[r], a, c->peers[a]);
    }
    free(hash);
    free(owner);
}

/* ---- routes in AllowedIPs ---- */

static bool src_touches(const struct pol_crule *cr, const struct pol_ent *route)
{
    for (size_t k = 0; k < cr->src.n; k++) {
        if (pol__ent_overlaps(&cr->src.v[k], route))
            return true;
    }
    return false;
}

static bool dst_touches(const struct pol_crule *cr, const struct pol_node *n,
                        const struct pol_ent *route)
{
    const struct pol_rule *r = cr->r;

    if (r->nvia && !has_via_tag(r, n))
        return false;
    for (size_t k = 0; k < r->ndst; k++) {
        const struct pol_alias *a = &r->dst[k].a;
        if (a->kind == PA_STAR ||
            ((a->kind == PA_PREFIX || a->kind == PA_HOST) && pol__ent_overlaps(&a->ent, route)))
            return true;
    }
    return false;
}

/* Whether an earlier node already serves the same route: the first router is its primary. */
static bool primary(const struct policy_net *c, size_t b, const char *route)
{
    for (size_t i = 0; i < b; i++) {
        for (size_t k = 0; k < c->nodes[i].napproved; k++) {
            if (strcmp(c->nodes[i].approved[k], route) == 0)
                return false;
        }
    }
    return true;
}

/* Whether b is the first router of the route among those a via grant names. */
static bool via_primary(const struct policy_net *c, const struct pol_rule *r, size_t b,
                        const char *route)
{
    for (size_t i = 0; i <= b; i++) {
        for (size_t k = 0; k < c->nodes[i].napproved; k++) {
            if (strcmp(c->nodes[i].approved[k], route) == 0 && has_via_tag(r, &c->nodes[i]))
                return i == b;
        }
    }
    return false;
}

/* The other routers of a route that are peers of its primary get it too (HA standbys). */
static void secondaries(const struct policy_net *c, size_t b, const char *route, uint64_t *v)
{
    for (size_t i = 0; i < c->nnodes; i++) {
        for (size_t k = 0; i != b && k < c->nodes[i].napproved; k++) {
            if (strcmp(c->nodes[i].approved[k], route) == 0 && policy_net_sees(c, i, b))
                pol__set(v, i);
        }
    }
}

/* The primary's viewers of a route, if b is not its primary: NULL otherwise. */
static const uint64_t *primary_viewers(const struct policy_net *c, size_t b, const char *route)
{
    for (size_t i = 0; i < b; i++) {
        const struct pol_node *n = &c->nodes[i];
        for (size_t k = 0; k < n->routes.n; k++) {
            if (strcmp(n->route_text[k], route) == 0)
                return n->route_viewers[k];
        }
    }
    return NULL;
}

/* A viewer that reaches a route through its primary gets it from there only, even when a
 * via grant would also steer it to another router. */
static void drop_doubles(struct policy_net *c)
{
    for (size_t b = 0; b < c->nnodes; b++) {
        struct pol_node *n = &c->nodes[b];
        for (size_t k = 0; k < n->routes.n; k++) {
            const uint64_t *pv = primary_viewers(c, b, n->route_text[k]);
            for (size_t w = 0; pv && w < c->words; w++)
                n->route_viewers[k][w] &= ~pv[w];
        }
    }
}

/* A viewer gets a subnet route in the router's AllowedIPs when some rule lets it reach the
 * route or lets the route reach it. */
static void compute_route_viewers(struct policy_net *c)
{
    for (size_t b = 0; b < c->nnodes; b++) {
        struct pol_node *n = &c->nodes[b];
        n->route_viewers = hs_xcalloc(n->routes.n + 1, sizeof(*n->route_viewers));
        for (size_t k = 0; k < n->routes.n; k++) {
            uint64_t *v = n->route_viewers[k] = bits_new(c);
            bool prim = primary(c, b, n->route_text[k]);
            for (size_t r = 0; r < c->nrules; r++) {
                const struct pol_crule *cr = &c->rules[r];
                /* A via grant steers its sources to its routers, primary or not. */
                bool in_src = prim && src_touches(cr, &n->routes.v[k]);
                bool in_dst = (cr->r->nvia ? via_primary(c, cr->r, b, n->route_text[k]) : prim) &&
                              dst_touches(cr, n, &n->routes.v[k]);
                for (size_t w = 0; w < c->words; w++)
                    v[w] |= (in_src ? cr->dst_nodes[w] : 0) | (in_dst ? cr->src_nodes[w] : 0);
            }
            if (!prim)
                continue;
            if (!c->p)
                memset(v, 0xff, c->words * sizeof(*v));
            secondaries(c, b, n->route_text[k], v);
        }
    }
    drop_doubles(c);
}

/* ---- the net ---- */

int policy_compile(const struct policy *p, const struct policy_topology *t,
                   struct policy_net **out, char *err, size_t errsize)
{
    struct policy_net *c = hs_xcalloc(1, sizeof(*c));
    int rc;

    c->p = p;
    if (p)
        __atomic_add_fetch(&((struct policy *)p)->refs, 1, __ATOMIC_ACQ_REL);
    load_topology(c, t);
    if (p) {
        c->rules = hs_xcalloc(p->nrules + 1, sizeof(*c->rules));
        for (size_t r = 0; r < p->nrules; r++)
            resolve_rule(c, &p->rules[r], &c->rules[c->nrules++]);
    }
    compute_peers(c);
    compute_route_viewers(c);
    if ((rc = pol__check_tests(c, err, errsize)) < 0) {
        policy_net_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void policy_net_free(struct policy_net *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nnodes; i++) {
        struct pol_node *n = &c->nodes[i];
        free((char *)n->name);
        for (size_t k = 0; k < n->ntags; k++)
            free(n->tags[k]);
        for (size_t k = 0; k < n->napproved; k++)
            free(n->approved[k]);
        free(n->tags);
        free(n->approved);
        for (size_t k = 0; n->route_viewers && k < n->routes.n; k++)
            free(n->route_viewers[k]);
        free(n->route_viewers);
        free(n->route_text);
        pol__ents_free(&n->routes);
    }
    for (size_t i = 0; i < c->nusers; i++) {
        free(c->users[i].name);
        free(c->users[i].email);
    }
    for (size_t r = 0; r < c->nrules; r++) {
        pol__ents_free(&c->rules[r].src);
        free(c->rules[r].src_json);
        free(c->rules[r].rev_json);
        free(c->rules[r].src_nodes);
        free(c->rules[r].dst_nodes);
    }
    for (size_t k = 0; k < c->npeer_sets; k++)
        free(c->peer_sets[k]);
    free(c->peer_sets);
    free(c->peers);
    free(c->rules);
    free(c->nodes);
    free(c->users);
    policy_free((struct policy *)c->p);
    free(c);
}

bool policy_net_sees(const struct policy_net *c, size_t a, size_t b)
{
    if (a == b || a >= c->nnodes || b >= c->nnodes)
        return false;
    if (!c->p)
        return true;
    return pol__bit(c->peers[a], b) || pol__bit(c->peers[b], a);
}

size_t policy_net_peer_routes(const struct policy_net *c, size_t a, size_t b, const char **out,
                              size_t cap)
{
    const struct pol_node *n = &c->nodes[b];
    size_t count = 0;

    for (size_t k = 0; k < n->napproved; k++) {
        struct pol_ent e;
        if (pol__parse_prefix(n->approved[k], true, &e) == 0 && pol__is_exit_route(&e)) {
            if (count < cap)
                out[count] = n->approved[k];
            count++;
        }
    }
    for (size_t k = 0; k < n->routes.n; k++) {
        if (!pol__bit(n->route_viewers[k], a))
            continue;
        if (count < cap)
            out[count] = n->route_text[k];
        count++;
    }
    return count;
}

const char *const *policy_net_approved(const struct policy_net *c, size_t i, size_t *n)
{
    *n = c->nodes[i].napproved;
    return (const char *const *)c->nodes[i].approved;
}
