/* The tailnet as the compiler sees it: users and nodes copied from the topology, indexed so
 * that an alias resolves to its nodes in time proportional to its members (users by id, email
 * and name; each user's untagged nodes; nodes by tag). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* ---- indexes ---- */

static const struct policy_net *sort_ctx; /* qsort has no context argument */

static int cmp_user_id(const void *a, const void *b)
{
    uint64_t x = sort_ctx->users[*(const size_t *)a].id, y = sort_ctx->users[*(const size_t *)b].id;

    return x < y ? -1 : x > y;
}

static int cmp_str0(const char *x, const char *y)
{
    return strcmp(x ? x : "", y ? y : "");
}

static int cmp_user_email(const void *a, const void *b)
{
    return cmp_str0(sort_ctx->users[*(const size_t *)a].email,
                    sort_ctx->users[*(const size_t *)b].email);
}

static int cmp_user_name(const void *a, const void *b)
{
    return cmp_str0(sort_ctx->users[*(const size_t *)a].name,
                    sort_ctx->users[*(const size_t *)b].name);
}

static size_t *sorted_users(struct policy_net *c, int (*cmp)(const void *, const void *))
{
    size_t *v = hs_xcalloc(c->nusers + 1, sizeof(*v));

    for (size_t i = 0; i < c->nusers; i++)
        v[i] = i;
    sort_ctx = c;
    qsort(v, c->nusers, sizeof(*v), cmp);
    sort_ctx = NULL;
    return v;
}

static void index_users(struct policy_net *c)
{
    c->users_by_id = sorted_users(c, cmp_user_id);
    c->users_by_email = sorted_users(c, cmp_user_email);
    c->users_by_name = sorted_users(c, cmp_user_name);
}

static size_t user_by_id(const struct policy_net *c, uint64_t id)
{
    size_t lo = 0, hi = c->nusers;

    while (id && lo < hi) {
        size_t mid = lo + (hi - lo) / 2, u = c->users_by_id[mid];
        if (c->users[u].id == id)
            return u;
        if (c->users[u].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

/* The user whose email (by_email) or name is key, by binary search over idx. */
static size_t user_by(const struct policy_net *c, const size_t *idx, bool by_email,
                      const char *key, size_t keylen)
{
    size_t lo = 0, hi = c->nusers;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, u = idx[mid];
        const char *v = by_email ? c->users[u].email : c->users[u].name;
        int r;
        v = v ? v : "";
        r = strncmp(v, key, keylen);
        if (r == 0 && v[keylen])
            r = 1;
        if (r == 0)
            return u;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

struct tag_node {
    const char *tag;
    size_t node;
};

static int cmp_tag_node(const void *a, const void *b)
{
    const struct tag_node *x = a, *y = b;
    int r = strcmp(x->tag, y->tag);

    return r ? r : (x->node > y->node) - (x->node < y->node);
}

static bool is_users(const struct pol_node *n)
{
    return !n->tagged && n->user != (size_t)-1;
}

/* The per-user lists as slices of one array, from their lengths (already in user_nodes). */
static void user_lists(struct policy_net *c)
{
    size_t total = 0;

    for (size_t u = 0; u < c->nusers; u++)
        total += c->user_nodes[u].n;
    c->user_node_v = hs_xcalloc(total + 1, sizeof(*c->user_node_v));
    total = 0;
    for (size_t u = 0; u < c->nusers; u++) {
        c->user_nodes[u].v = c->user_node_v + total;
        total += c->user_nodes[u].n;
        c->user_nodes[u].n = 0; /* filled again by the caller */
    }
}

/* The address envelope takes in n's addresses. */
static void widen(struct policy_net *c, const struct pol_node *n)
{
    for (int f = 0; f < 2; f++) {
        if (n->has[f] && n->ip[f] < c->addr_lo[f])
            c->addr_lo[f] = n->ip[f];
        if (n->has[f] && n->ip[f] > c->addr_hi[f])
            c->addr_hi[f] = n->ip[f];
    }
}

/* Each user's untagged nodes, (tag, node) pairs sorted by tag, the routers and the address
 * envelope. */
static void index_nodes(struct policy_net *c)
{
    size_t ntags = 0, k = 0;

    c->user_nodes = hs_xcalloc(c->nusers + 1, sizeof(*c->user_nodes));
    c->routers = hs_xcalloc(c->nnodes + 1, sizeof(*c->routers));
    c->addr_lo[0] = c->addr_lo[1] = ~(pol_u128)0; /* empty: lo > hi */
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct pol_node *n = c->nodes[i];
        widen(c, n);
        ntags += n->ntags;
        if (is_users(n))
            c->user_nodes[n->user].n++;
        if (n->routes.n)
            c->routers[c->nrouters++].node = i;
    }
    user_lists(c);
    c->tag_nodes = hs_xcalloc(ntags + 1, sizeof(*c->tag_nodes));
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct pol_node *n = c->nodes[i];
        if (is_users(n)) {
            struct pol_list *l = &c->user_nodes[n->user];
            l->v[l->n++] = i;
        }
        for (size_t t = 0; t < n->ntags; t++)
            c->tag_nodes[k++] = (struct tag_node){ n->tags[t], i };
    }
    c->ntag_nodes = k;
    qsort(c->tag_nodes, k, sizeof(*c->tag_nodes), cmp_tag_node);
}

/* old's lists carried through pl, the fresh nodes put in at their place. */
static void patch_user_nodes(struct policy_net *c, const struct policy_net *old,
                             const struct pol_plan *pl)
{
    c->user_nodes = hs_xcalloc(c->nusers + 1, sizeof(*c->user_nodes));
    for (size_t u = 0; u < c->nusers; u++)
        c->user_nodes[u].n = old->user_nodes[u].n;
    for (size_t g = 0; g < pl->ngone; g++) {
        const struct pol_node *n = old->nodes[pl->gone[g]];
        if (is_users(n))
            c->user_nodes[n->user].n--;
    }
    for (size_t f = 0; f < pl->nfresh; f++) {
        const struct pol_node *n = c->nodes[pl->fresh[f]];
        if (is_users(n))
            c->user_nodes[n->user].n++;
    }
    user_lists(c);
    for (size_t u = 0; u < c->nusers; u++) {
        const struct pol_list *o = &old->user_nodes[u];
        struct pol_list *l = &c->user_nodes[u];
        for (size_t k = 0; k < o->n; k++) {
            if (pl->map[o->v[k]] != SIZE_MAX)
                l->v[l->n++] = pl->map[o->v[k]];
        }
    }
    for (size_t f = 0; f < pl->nfresh; f++) { /* few: each put in by moving the larger ones */
        size_t j = pl->fresh[f], k;
        struct pol_list *l;
        if (!is_users(c->nodes[j]))
            continue;
        l = &c->user_nodes[c->nodes[j]->user];
        for (k = l->n; k > 0 && l->v[k - 1] > j; k--)
            l->v[k] = l->v[k - 1];
        l->v[k] = j;
        l->n++;
    }
}

static void patch_tag_nodes(struct policy_net *c, const struct policy_net *old,
                            const struct pol_plan *pl)
{
    size_t n = old->ntag_nodes, k = 0;

    for (size_t g = 0; g < pl->ngone; g++)
        n -= old->nodes[pl->gone[g]]->ntags;
    for (size_t f = 0; f < pl->nfresh; f++)
        n += c->nodes[pl->fresh[f]]->ntags;
    c->tag_nodes = hs_xcalloc(n + 1, sizeof(*c->tag_nodes));
    for (size_t x = 0; x < old->ntag_nodes; x++) { /* the map keeps the order */
        size_t i = pl->map[old->tag_nodes[x].node];
        if (i != SIZE_MAX)
            c->tag_nodes[k++] = (struct tag_node){ old->tag_nodes[x].tag, i };
    }
    for (size_t f = 0; f < pl->nfresh; f++) {
        const struct pol_node *nd = c->nodes[pl->fresh[f]];
        for (size_t t = 0; t < nd->ntags; t++) {
            struct tag_node e = { nd->tags[t], pl->fresh[f] };
            size_t lo = 0, hi = k;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (cmp_tag_node(&c->tag_nodes[mid], &e) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            memmove(&c->tag_nodes[lo + 1], &c->tag_nodes[lo], (k - lo) * sizeof(e));
            c->tag_nodes[lo] = e;
            k++;
        }
    }
    c->ntag_nodes = k;
}

/* The fresh nodes from pl->fresh[f] on that come before index end and have routes; returns
 * where it stopped. */
static size_t fresh_routers(struct policy_net *c, const struct pol_plan *pl, size_t f,
                            size_t end)
{
    for (; f < pl->nfresh && pl->fresh[f] < end; f++) {
        if (c->nodes[pl->fresh[f]]->routes.n)
            c->routers[c->nrouters++].node = pl->fresh[f];
    }
    return f;
}

static void patch_routers(struct policy_net *c, const struct policy_net *old,
                          const struct pol_plan *pl)
{
    size_t f = 0;

    c->routers = hs_xcalloc(old->nrouters + pl->nfresh + 1, sizeof(*c->routers));
    for (size_t x = 0; x < old->nrouters; x++) {
        size_t i = pl->map[old->routers[x].node];
        if (i == SIZE_MAX)
            continue;
        f = fresh_routers(c, pl, f, i);
        c->routers[c->nrouters++].node = i;
    }
    fresh_routers(c, pl, f, SIZE_MAX);
}

void pol__patch_indexes(struct policy_net *c, const struct policy_net *old,
                        const struct pol_plan *pl)
{
    memcpy(c->addr_lo, old->addr_lo, sizeof(c->addr_lo));
    memcpy(c->addr_hi, old->addr_hi, sizeof(c->addr_hi));
    for (size_t f = 0; f < pl->nfresh; f++)
        widen(c, c->nodes[pl->fresh[f]]);
    patch_user_nodes(c, old, pl);
    patch_tag_nodes(c, old, pl);
    patch_routers(c, old, pl);
}

/* ---- node records and their blocks ---- */

struct pol_nblock *pol__block_new(size_t n)
{
    struct pol_nblock *b = hs_xcalloc(1, sizeof(*b) + (n + 1) * sizeof(b->v[0]));

    b->refs = 1;
    b->n = n;
    return b;
}

static void node_release(struct pol_node *n)
{
    if (__atomic_sub_fetch(n->shared, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    free(n->shared);
    free((char *)n->name);
    for (size_t k = 0; k < n->ntags; k++)
        free(n->tags[k]);
    for (size_t k = 0; k < n->napproved; k++)
        free(n->approved[k]);
    free(n->route_text);
    free(n->route_prim);
    free(n->tags);
    free(n->approved);
    pol__ents_free(&n->routes);
}

void pol__block_unref(struct pol_nblock *b)
{
    if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < b->n; i++)
        node_release(&b->v[i]);
    free(b);
}

void pol__node_copy(struct pol_node *dst, const struct pol_node *src)
{
    *dst = *src;
    __atomic_add_fetch(dst->shared, 1, __ATOMIC_ACQ_REL);
}

void pol__node_table(struct policy_net *c)
{
    size_t i = 0;

    c->nodes = hs_xcalloc(c->nnodes + 1, sizeof(*c->nodes));
    for (size_t b = 0; b < c->nblocks; b++) {
        for (size_t k = 0; k < c->blocks[b]->n && i < c->nnodes; k++)
            c->nodes[i++] = &c->blocks[b]->v[k];
    }
}

static void users_free(struct policy_net *c)
{
    if (!c->users_shared || __atomic_sub_fetch(c->users_shared, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < c->nusers; i++) {
        free(c->users[i].name);
        free(c->users[i].email);
        hs_strv_free(&c->users[i].groups);
    }
    free(c->users_shared);
    free(c->users_by_id);
    free(c->users_by_email);
    free(c->users_by_name);
    free(c->users);
}

void pol__topology_free(struct policy_net *c)
{
    pol__routers_free(c); /* before the nodes: it reads their routes */
    for (size_t b = 0; b < c->nblocks; b++)
        pol__block_unref(c->blocks[b]);
    free(c->blocks);
    free(c->nodes);
    free(c->ids);
    users_free(c);
    free(c->user_nodes);
    free(c->user_node_v);
    free(c->tag_nodes);
    free(c->server_url);
}

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

/* Whether the provider put u in group (written "group:<name>"). */
static bool provider_group_has(const struct pol_user *u, const char *group)
{
    return hs_strv_contains(&u->groups, group + strlen("group:"));
}

/* Whether u is a member of the group alias a: listed by the policy's group, or, for one the
 * policy does not define, holding it from the identity provider. */
static bool group_has(const struct pol_user *u, const struct pol_alias *a)
{
    const struct pol_group *g = a->group;

    if (!g)
        return provider_group_has(u, a->name);
    for (size_t j = 0; j < g->n; j++) {
        if (token_matches(u, g->members[j].name))
            return true;
    }
    return false;
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
    return is_users(c->nodes[n]) && c->nodes[n]->user == user;
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

bool pol__node_in_alias(const struct policy_net *c, const struct pol_alias *a, size_t i)
{
    return pol__rec_in_alias(c, a, c->nodes[i]);
}

/* Identity aliases by who the node is; address aliases by its addresses or approved routes. */
bool pol__rec_in_alias(const struct policy_net *c, const struct pol_alias *a,
                       const struct pol_node *n)
{
    switch (a->kind) {
    case PA_STAR:
    case PA_DANGER_ALL:
        return true;
    case PA_USER:
        return !n->tagged && n->user != (size_t)-1 && token_matches(&c->users[n->user], a->name);
    case PA_GROUP:
        return !n->tagged && n->user != (size_t)-1 && group_has(&c->users[n->user], a);
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

/* Approvers name nodes as sources do: users and groups their untagged nodes, tags theirs. */
static bool auto_approved(const struct policy_net *c, const struct pol_node *n,
                          const struct pol_ent *route)
{
    const struct policy *p = c->p;

    for (size_t k = 0; p && k < p->napprovers; k++) {
        const struct pol_approver *ap = &p->approvers[k];
        /* Exit routes only through exitNode: a routes entry of 0.0.0.0/0 approves none. */
        bool covers = ap->exit ? pol__is_exit_route(route)
                               : (!pol__is_exit_route(route) && ap->route.v4 == route->v4 &&
                                  ap->route.lo <= route->lo && route->hi <= ap->route.hi);
        for (size_t j = 0; covers && j < ap->n; j++) {
            if (pol__rec_in_alias(c, &ap->who[j], n))
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
    n->route_prim = hs_xrealloc(n->route_prim, n->routes.n * sizeof(*n->route_prim));
    n->route_prim[n->routes.n - 1] = false;
}

static void mark_primaries(struct pol_node *n, const struct policy_node *in)
{
    for (size_t k = 0; k < n->routes.n; k++) {
        for (size_t j = 0; j < in->nprimary; j++) {
            if (strcmp(n->route_text[k], in->primary[j]) == 0)
                n->route_prim[k] = true;
        }
    }
}

static void node_routes(const struct policy_net *c, struct pol_node *n,
                        const struct policy_node *in)
{
    struct pol_ent e;

    for (size_t k = 0; k < in->napproved; k++) {
        if (pol__parse_prefix(in->approved[k], true, &e) == 0)
            add_route(n, in->approved[k], &e);
    }
    for (size_t k = 0; k < in->nroutes; k++) {
        if (pol__parse_prefix(in->routes[k], true, &e) == 0 && auto_approved(c, n, &e))
            add_route(n, in->routes[k], &e);
    }
}

void pol__load_node(const struct policy_net *c, struct pol_node *n, const struct policy_node *in)
{
    bool v4;

    *n = (struct pol_node){ 0 };
    n->shared = hs_xcalloc(1, sizeof(*n->shared));
    *n->shared = 1;
    n->name = hs_strdup(in->name ? in->name : "");
    n->id = in->id;
    n->user_id = in->user_id;
    n->user = user_by_id(c, in->user_id);
    n->tagged = in->ntags > 0;
    n->tags = hs_xcalloc(in->ntags + 1, sizeof(*n->tags));
    for (size_t k = 0; k < in->ntags; k++)
        n->tags[n->ntags++] = hs_strdup(in->tags[k]);
    n->has[0] = in->ipv4 && pol__parse_ip(in->ipv4, &n->ip[0], &v4) == 0 && v4;
    n->has[1] = in->ipv6 && pol__parse_ip(in->ipv6, &n->ip[1], &v4) == 0 && !v4;
    node_routes(c, n, in); /* auto-approval looks only at the node itself and its user */
    mark_primaries(n, in);
}

static void copy_users(struct policy_net *c, const struct policy_topology *t)
{
    c->server_url = hs_strdup(t->server_url);
    c->elected = t->elected;
    c->users_shared = hs_xcalloc(1, sizeof(*c->users_shared));
    *c->users_shared = 1;
    c->users = hs_xcalloc(t->nusers + 1, sizeof(*c->users));
    for (size_t i = 0; i < t->nusers; i++) {
        c->users[i].id = t->users[i].id;
        c->users[i].name = hs_strdup(t->users[i].name);
        c->users[i].email = hs_strdup(t->users[i].email);
        for (size_t g = 0; g < t->users[i].ngroups; g++)
            hs_strv_push(&c->users[i].groups, t->users[i].groups[g]);
    }
    c->nusers = t->nusers;
    index_users(c);
}

void pol__share_users(struct policy_net *c, const struct policy_net *old)
{
    c->users = old->users;
    c->nusers = old->nusers;
    c->users_by_id = old->users_by_id;
    c->users_by_email = old->users_by_email;
    c->users_by_name = old->users_by_name;
    c->users_shared = old->users_shared;
    __atomic_add_fetch(c->users_shared, 1, __ATOMIC_ACQ_REL);
}

size_t pol__words_for(size_t n)
{
    return ((n + 63) / 64 + 7) / 8 * 8; /* up to 511 nodes more fit */
}

void pol__load_topology(struct policy_net *c, const struct policy_topology *t)
{
    copy_users(c, t);
    c->nnodes = t->nnodes;
    c->words = pol__words_for(t->nnodes);
    c->nblocks = (t->nnodes + POL_BLOCK - 1) / POL_BLOCK;
    c->blocks = hs_xcalloc(c->nblocks + 1, sizeof(*c->blocks));
    for (size_t b = 0; b < c->nblocks; b++) {
        size_t first = b * POL_BLOCK, n = t->nnodes - first < POL_BLOCK ? t->nnodes - first
                                                                       : POL_BLOCK;
        c->blocks[b] = pol__block_new(n);
        for (size_t k = 0; k < n; k++)
            pol__load_node(c, &c->blocks[b]->v[k], &t->nodes[first + k]);
    }
    pol__node_table(c);
    c->ids = hs_xcalloc(c->nnodes + 1, sizeof(*c->ids));
    for (size_t i = 0; i < c->nnodes; i++)
        c->ids[i] = c->nodes[i]->id;
    index_nodes(c);
}

/* ---- aliases as node sets ---- */

uint64_t *pol__bits_new(const struct policy_net *c)
{
    return hs_xcalloc(c->words + 1, sizeof(uint64_t));
}

bool pol__has_via_tag(const struct pol_rule *r, const struct pol_node *n)
{
    for (size_t k = 0; k < r->nvia; k++) {
        if (node_has_tag(n, r->via[k]))
            return true;
    }
    return false;
}

static void set_user(const struct policy_net *c, size_t u, uint64_t *bits)
{
    if (u == (size_t)-1)
        return;
    for (size_t k = 0; k < c->user_nodes[u].n; k++)
        pol__set(bits, c->user_nodes[u].v[k]);
}

/* A user token: "alice@example.com" (email, else name), "alice@" (name), "alice" (0.22
 * name), "user:*@example.com" (everyone at the domain). */
static void set_token(const struct policy_net *c, const char *tok, uint64_t *bits)
{
    size_t n, u;

    if (hs_has_prefix(tok, "user:*@")) {
        for (u = 0; u < c->nusers; u++) {
            if (token_matches(&c->users[u], tok))
                set_user(c, u, bits);
        }
        return;
    }
    if (hs_has_prefix(tok, "user:"))
        tok += strlen("user:");
    n = strlen(tok);
    if ((u = user_by(c, c->users_by_email, true, tok, n)) == (size_t)-1 &&
        (u = user_by(c, c->users_by_name, false, tok, n)) == (size_t)-1 && n > 1 &&
        tok[n - 1] == '@')
        u = user_by(c, c->users_by_name, false, tok, n - 1);
    set_user(c, u, bits);
}

static void set_tag(const struct policy_net *c, const char *tag, uint64_t *bits)
{
    size_t lo = 0, hi = c->ntag_nodes;

    while (lo < hi) { /* the first pair with this tag */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(c->tag_nodes[mid].tag, tag) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < c->ntag_nodes && strcmp(c->tag_nodes[lo].tag, tag) == 0; lo++)
        pol__set(bits, c->tag_nodes[lo].node);
}

void pol__alias_bits(const struct policy_net *c, const struct pol_alias *a, uint64_t *bits)
{
    const struct pol_group *g;

    switch (a->kind) {
    case PA_USER:
        set_token(c, a->name, bits);
        return;
    case PA_GROUP:
        g = a->group;
        for (size_t j = 0; g && j < g->n; j++)
            set_token(c, g->members[j].name, bits);
        for (size_t u = 0; !g && u < c->nusers; u++) {
            if (provider_group_has(&c->users[u], a->name))
                set_user(c, u, bits);
        }
        return;
    case PA_TAG:
        set_tag(c, a->name, bits);
        return;
    case PA_SELF:
        return;
    default: /* addresses and the autogroups: a look at every node */
        for (size_t i = 0; i < c->nnodes; i++) {
            if (pol__node_in_alias(c, a, i))
                pol__set(bits, i);
        }
    }
}

bool policy_tag_allowed(const struct policy *p, const struct policy_user *u,
                        const char *const *have, size_t nhave, const char *tag)
{
    struct pol_user pu = { .name = u ? (char *)u->name : NULL,
                           .email = u ? (char *)u->email : NULL,
                           .groups = { .v = u ? (char **)u->groups : NULL,
                                       .n = u ? u->ngroups : 0 } };
    const struct pol_tagowner *t;

    if (!p)
        return true;
    if (!(t = pol__tagowner(p, tag)))
        return false;
    for (size_t i = 0; i < t->n; i++) {
        const struct pol_alias *o = &t->owners[i];
        if (o->kind == PA_USER && u && token_matches(&pu, o->name))
            return true;
        if (o->kind == PA_GROUP && u && group_has(&pu, o))
            return true;
        for (size_t j = 0; o->kind == PA_TAG && j < nhave; j++) {
            if (strcmp(have[j], o->name) == 0)
                return true;
        }
        if ((o->kind == PA_MEMBER && u && !nhave) || (o->kind == PA_TAGGED && nhave))
            return true;
    }
    return false;
}
