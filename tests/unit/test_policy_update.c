/* policy_recompile against a full compile: every accepted policy of the conformance corpus,
 * on its own tailnet, through a seeded series of node changes (removed, added, retagged,
 * moved to another user, given a route; one to three at a time); after each, every answer of
 * the recompiled net (filters, SSH rules, capabilities, peers, routes) must equal a full
 * compile's. A large tailnet does the same across the ways a recompile shares with its
 * predecessor (node blocks, rule bitsets, peer classes, route viewers), and checks that a
 * net still answers as it did after the nets made from it, or before it, were freed. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "policy/policy.h"

#define CORPUS HS_SOURCE_DIR "/../shared/testdata/policy-conformance"
#define STEPS 12
#define MAX_AT_ONCE 3
#define MAX_NODES (52 + STEPS * MAX_AT_ONCE)

/* A tailnet the test can change: strings owned by the json document or static. */
struct net {
    struct policy_user users[16];
    size_t nusers;
    struct policy_node nodes[MAX_NODES];
    const char *tags[MAX_NODES][2];
    const char *routes[MAX_NODES][4];
    char ip4[MAX_NODES][20], ip6[MAX_NODES][48];
    size_t nnodes;
    uint64_t next_id;
};

static uint64_t rng_state;

static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return n ? rng_state % n : 0;
}

static size_t strs(json_t *arr, const char **out, size_t max)
{
    size_t i, n = 0;
    json_t *v;

    json_array_foreach(arr, i, v) {
        if (n < max && json_is_string(v))
            out[n++] = json_string_value(v);
    }
    return n;
}

static void load_net(json_t *c, struct net *t)
{
    json_t *users = json_object_get(c, "users"), *nodes = json_object_get(c, "nodes"), *v, *u;
    const char *name;
    size_t i;

    memset(t, 0, sizeof(*t));
    json_array_foreach(users, i, u) {
        if (t->nusers < 16)
            t->users[t->nusers++] = (struct policy_user){
                .id = t->nusers + 1, .name = hs_json_str(u, "name"), .email = hs_json_str(u, "email") };
    }
    json_object_foreach(nodes, name, v) { /* jansson keeps keys sorted as the file has them */
        struct policy_node *n = &t->nodes[t->nnodes];
        const char *owner = hs_json_str(v, "user");
        if (t->nnodes == MAX_NODES - STEPS * MAX_AT_ONCE)
            break;
        n->id = ++t->next_id;
        n->name = name;
        for (size_t k = 0; owner && k < t->nusers; k++) {
            if (hs_streq(t->users[k].name, owner))
                n->user_id = t->users[k].id;
        }
        n->ntags = strs(json_object_get(v, "tags"), t->tags[t->nnodes], 2);
        n->tags = t->tags[t->nnodes];
        n->napproved = strs(json_object_get(v, "approved_routes"), t->routes[t->nnodes], 4);
        n->approved = n->routes = t->routes[t->nnodes];
        n->nroutes = n->napproved;
        snprintf(t->ip4[t->nnodes], 20, "%s", hs_json_str(v, "ipv4"));
        snprintf(t->ip6[t->nnodes], 48, "%s", hs_json_str(v, "ipv6"));
        t->nnodes++;
    }
}

/* Pointers into the arrays move with the nodes: set them again before each compile. */
static struct policy_topology topology(struct net *t)
{
    for (size_t i = 0; i < t->nnodes; i++) {
        t->nodes[i].tags = t->tags[i];
        t->nodes[i].approved = t->nodes[i].routes = t->routes[i];
        t->nodes[i].ipv4 = t->ip4[i];
        t->nodes[i].ipv6 = t->ip6[i];
    }
    return (struct policy_topology){ .users = t->users, .nusers = t->nusers, .nodes = t->nodes,
                                     .nnodes = t->nnodes };
}

static void remove_node(struct net *t, size_t i)
{
    size_t rest = t->nnodes - i - 1;

    memmove(&t->nodes[i], &t->nodes[i + 1], rest * sizeof(t->nodes[0]));
    memmove(t->tags[i], t->tags[i + 1], rest * sizeof(t->tags[0]));
    memmove(t->routes[i], t->routes[i + 1], rest * sizeof(t->routes[0]));
    memmove(t->ip4[i], t->ip4[i + 1], rest * sizeof(t->ip4[0]));
    memmove(t->ip6[i], t->ip6[i + 1], rest * sizeof(t->ip6[0]));
    t->nnodes--;
}

/* One random change; returns the id it concerns. */
static uint64_t change(struct net *t)
{
    static const char *const tags[] = { "tag:server", "tag:router", "tag:exit", "tag:client",
                                        "tag:prod" };
    static const char *const routes[] = { "10.33.0.0/16", "192.168.1.0/24", "0.0.0.0/0" };
    size_t i = rnd(t->nnodes);
    struct policy_node *n = &t->nodes[i];
    uint64_t id = n->id;

    switch (rnd(5)) {
    case 0: /* removed */
        remove_node(t, i);
        return id;
    case 1: /* a new node, a copy of this one with new addresses, last in id order */
        t->nodes[t->nnodes] = *n;
        memcpy(t->tags[t->nnodes], t->tags[i], sizeof(t->tags[0]));
        memcpy(t->routes[t->nnodes], t->routes[i], sizeof(t->routes[0]));
        t->nodes[t->nnodes].id = ++t->next_id + 100;
        snprintf(t->ip4[t->nnodes], 20, "100.99.0.%u", (unsigned)(t->next_id % 250));
        snprintf(t->ip6[t->nnodes], 48, "fd7a:115c:a1e0::99:%x", (unsigned)t->next_id);
        return t->nodes[t->nnodes++].id;
    case 2: /* retagged, or tags dropped */
        n->ntags = rnd(2);
        t->tags[i][0] = tags[rnd(HS_ARRAY_LEN(tags))];
        return id;
    case 3: /* another owner */
        n->user_id = t->nusers ? t->users[rnd(t->nusers)].id : 0;
        return id;
    default: /* a route */
        n->napproved = n->nroutes = 1;
        t->routes[i][0] = routes[rnd(HS_ARRAY_LEN(routes))];
        return id;
    }
}

static void text_of(int (*fn)(const struct policy_net *, size_t, struct hs_buf *),
                    const struct policy_net *c, size_t i, struct hs_buf *b)
{
    hs_buf_reset(b);
    cr_assert_eq(fn(c, i, b), 0);
}

static void same_nets(const char *id, int step, const struct policy_net *a,
                      const struct policy_net *b, size_t n)
{
    int (*const fns[])(const struct policy_net *, size_t, struct hs_buf *) = {
        policy_net_filter, policy_net_ssh, policy_net_capmap };
    struct hs_buf x, y;

    hs_buf_init(&x, 16u << 20);
    hs_buf_init(&y, 16u << 20);
    for (size_t i = 0; i < n; i++) {
        for (size_t f = 0; f < HS_ARRAY_LEN(fns); f++) {
            text_of(fns[f], a, i, &x);
            text_of(fns[f], b, i, &y);
            cr_assert_str_eq(x.data, y.data, "%s step %d node %zu answer %zu", id, step, i, f);
        }
        cr_assert_eq(policy_net_sees_all(a, i), policy_net_sees_all(b, i), "%s step %d", id,
                     step);
        for (size_t j = 0; j < n; j++) {
            const char *ra[8], *rb[8];
            if (policy_net_sees_all(b, i)) /* it may not claim more than it has */
                cr_assert(i == j || policy_net_sees(b, i, j), "%s step %d", id, step);
            size_t na = policy_net_peer_routes(a, i, j, ra, 8);
            size_t nb = policy_net_peer_routes(b, i, j, rb, 8);
            cr_assert_eq(policy_net_sees(a, i, j), policy_net_sees(b, i, j),
                         "%s step %d: %zu sees %zu", id, step, i, j);
            cr_assert_eq(na, nb, "%s step %d: routes of %zu for %zu", id, step, j, i);
            for (size_t k = 0; k < na && k < 8; k++)
                cr_assert_str_eq(ra[k], rb[k], "%s step %d", id, step);
        }
    }
    hs_buf_free(&x);
    hs_buf_free(&y);
}

static void run_case(json_t *c)
{
    const char *id = hs_json_str(c, "id");
    char *text = hs_json_dump(json_object_get(c, "policy"), JSON_COMPACT);
    struct policy *p;
    struct policy_net *net, *full, *next;
    struct policy_topology topo;
    struct net t;
    char err[512];

    load_net(c, &t);
    if (policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, &p, err, sizeof(err)) < 0) {
        free(text); /* one we refuse on purpose (ipPool, roles): the conformance test's */
        return;
    }
    topo = topology(&t);
    cr_assert_eq(policy_compile(p, &topo, &net, err, sizeof(err)), 0, "%s: %s", id, err);
    for (int step = 0; step < STEPS && t.nnodes > MAX_AT_ONCE; step++) {
        uint64_t changed[MAX_AT_ONCE];
        size_t n = 1 + rnd(MAX_AT_ONCE);
        for (size_t k = 0; k < n; k++) /* an id may come twice, or be added then removed */
            changed[k] = change(&t);
        topo = topology(&t);
        cr_assert_eq(policy_recompile(net, &topo, changed, n, &next), 0);
        cr_assert_eq(policy_recompile(net, &topo, NULL, 0, &full), 0);
        same_nets(id, step, full, next, t.nnodes);
        policy_net_free(full);
        policy_net_free(net);
        net = next;
    }
    policy_net_free(net);
    policy_free(p);
    free(text);
}

static void run_file(const char *name)
{
    char path[512], line[1 << 16];
    FILE *f;
    int cases = 0;

    snprintf(path, sizeof(path), CORPUS "/%s", name);
    cr_assert_not_null(f = fopen(path, "r"), "%s", path);
    while (fgets(line, sizeof(line), f)) {
        json_t *c = json_loads(line, 0, NULL);
        cr_assert_not_null(c, "%s: a line is not JSON (or longer than the buffer)", name);
        if (json_integer_value(json_object_get(c, "api_response_code")) == 200) {
            rng_state = 0x9e3779b97f4a7c15u ^ (uint64_t)cases;
            run_case(c);
            cases++;
        }
        json_decref(c);
    }
    fclose(f);
    cr_assert_gt(cases, 0);
}

Test(policy_update, acl_captures) { run_file("acl.jsonl"); }
Test(policy_update, grant_captures) { run_file("grant.jsonl"); }
Test(policy_update, routes_captures) { run_file("routes.jsonl"); }
Test(policy_update, ssh_captures) { run_file("ssh.jsonl"); }
Test(policy_update, nodeattrs_captures) { run_file("nodeattrs.jsonl"); }

/* The first node of a tailnet arrives, and the last one leaves. */
Test(policy_update, from_and_to_an_empty_tailnet)
{
    static const char text[] = "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], "
                               "\"dst\": [\"*:*\"]}]}";
    static const struct policy_user users[] = { { .id = 1, .name = "a", .email = "a@x" } };
    static const struct policy_node nodes[] = { { .id = 1, .name = "n1", .user_id = 1,
                                                  .ipv4 = "100.64.0.1" } };
    struct policy_topology none = { .users = users, .nusers = 1 };
    struct policy_topology one = { .users = users, .nusers = 1, .nodes = nodes, .nnodes = 1 };
    struct policy *p;
    struct policy_net *empty, *first, *gone;
    struct hs_buf f;
    uint64_t id = 1;
    char err[256];

    cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, &p, err, sizeof(err)), 0);
    cr_assert_eq(policy_compile(p, &none, &empty, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(policy_recompile(empty, &one, &id, 1, &first), 0);
    hs_buf_init(&f, 1 << 20);
    cr_assert_eq(policy_net_filter(first, 0, &f), 0);
    cr_assert(strstr(f.data, "100.64.0.1") || strstr(f.data, "100.64.0.0-"), "%s", f.data);
    cr_assert_eq(policy_recompile(first, &none, &id, 1, &gone), 0);
    hs_buf_free(&f);
    policy_net_free(gone);
    policy_net_free(first);
    policy_net_free(empty);
    policy_free(p);
}

/* ---- a tailnet of several node blocks ---- */

#define BIG_MAX 1400
#define BIG_USERS 12

static const char big_policy[] =
    "{\"groups\": {\"group:a\": [\"u0@x\", \"u1@x\", \"u2@x\"], \"group:b\": [\"u3@x\", \"u4@x\"]},"
    " \"tagOwners\": {\"tag:web\": [\"group:a\"], \"tag:db\": [\"group:a\"],"
    "                 \"tag:router\": [\"group:a\"], \"tag:exit\": [\"group:a\"]},"
    " \"autoApprovers\": {\"routes\": {\"10.0.0.0/8\": [\"tag:router\"]},"
    "                     \"exitNode\": [\"tag:exit\"]},"
    " \"acls\": ["
    "  {\"action\": \"accept\", \"src\": [\"group:a\"], \"dst\": [\"tag:web:80,443\"]},"
    "  {\"action\": \"accept\", \"src\": [\"tag:web\"], \"dst\": [\"tag:db:5432\"]},"
    "  {\"action\": \"accept\", \"src\": [\"group:b\"], \"dst\": [\"autogroup:self:*\"]},"
    "  {\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"10.1.0.0/16:*\"]},"
    "  {\"action\": \"accept\", \"src\": [\"u5@x\"], \"dst\": [\"group:b:22\"]},"
    "  {\"action\": \"accept\", \"src\": [\"group:a\"], \"dst\": [\"autogroup:internet:*\"]},"
    "  {\"action\": \"accept\", \"src\": [\"tag:db\"], \"dst\": [\"*:9100\"]},"
    "  {\"action\": \"accept\", \"src\": [\"10.2.0.0/24\"], \"dst\": [\"tag:web:8080\"]}],"
    " \"ssh\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"],"
    "           \"dst\": [\"autogroup:self\"], \"users\": [\"autogroup:nonroot\"]}],"
    " \"nodeAttrs\": [{\"target\": [\"tag:db\"], \"attr\": [\"funnel\"]}]}";

static const char *const big_tags[] = { "tag:web", "tag:db", "tag:router", "tag:exit" };
static const char *const big_routes[] = { "10.1.0.0/16", "10.2.0.0/24", "0.0.0.0/0",
                                          "10.3.0.0/16", "100.64.1.0/24", "100.99.0.0/16" };
/* The last two hold node addresses: some from the start, others moved there (BIG_ADDRESS). */

/* Nodes in id order; ids step by 10 so that one can be added between two. */
struct big {
    struct policy_user users[BIG_USERS];
    char unames[BIG_USERS][8], emails[BIG_USERS][8];
    struct policy_node nodes[BIG_MAX];
    struct {
        const char *tags[1], *routes[1];
        char name[16], ip4[20], ip6[48];
    } s[BIG_MAX];
    size_t n;
    unsigned serial; /* addresses are never reused */
};

static void big_fill(struct big *b, size_t i, uint64_t id)
{
    struct policy_node *n = &b->nodes[i];
    unsigned a = ++b->serial;

    memset(&b->s[i], 0, sizeof(b->s[i]));
    *n = (struct policy_node){ .id = id, .user_id = 1 + rnd(BIG_USERS) };
    snprintf(b->s[i].name, sizeof(b->s[i].name), "n%u", a);
    snprintf(b->s[i].ip4, sizeof(b->s[i].ip4), "100.%u.%u.%u", 64 + (a >> 16), (a >> 8) & 255,
             a & 255);
    snprintf(b->s[i].ip6, sizeof(b->s[i].ip6), "fd7a:115c:a1e0::%x", a);
    if (rnd(3) == 0) {
        b->s[i].tags[0] = big_tags[rnd(HS_ARRAY_LEN(big_tags))];
        n->ntags = 1;
    }
    if (rnd(40) == 0) { /* a router: approved, or left to autoApprovers */
        b->s[i].routes[0] = big_routes[rnd(HS_ARRAY_LEN(big_routes))];
        n->nroutes = 1;
        n->napproved = rnd(2);
    }
}

static struct policy_topology big_topology(struct big *b)
{
    for (size_t i = 0; i < b->n; i++) {
        b->nodes[i].name = b->s[i].name;
        b->nodes[i].tags = b->s[i].tags;
        b->nodes[i].routes = b->nodes[i].approved = b->s[i].routes;
        b->nodes[i].ipv4 = b->s[i].ip4;
        b->nodes[i].ipv6 = b->s[i].ip6;
    }
    return (struct policy_topology){ .users = b->users, .nusers = BIG_USERS,
                                     .nodes = b->nodes, .nnodes = b->n };
}

static void big_init(struct big *b, size_t n)
{
    memset(b, 0, sizeof(*b));
    for (size_t u = 0; u < BIG_USERS; u++) {
        snprintf(b->unames[u], sizeof(b->unames[u]), "u%zu", u);
        snprintf(b->emails[u], sizeof(b->emails[u]), "u%zu@x", u);
        b->users[u] = (struct policy_user){ .id = u + 1, .name = b->unames[u],
                                            .email = b->emails[u] };
    }
    for (b->n = 0; b->n < n; b->n++)
        big_fill(b, b->n, 10 * (b->n + 1));
}

static void big_insert(struct big *b, size_t i, uint64_t id)
{
    memmove(&b->nodes[i + 1], &b->nodes[i], (b->n - i) * sizeof(b->nodes[0]));
    memmove(&b->s[i + 1], &b->s[i], (b->n - i) * sizeof(b->s[0]));
    b->n++;
    big_fill(b, i, id);
}

static void big_remove(struct big *b, size_t i, size_t count)
{
    memmove(&b->nodes[i], &b->nodes[i + count], (b->n - i - count) * sizeof(b->nodes[0]));
    memmove(&b->s[i], &b->s[i + count], (b->n - i - count) * sizeof(b->s[0]));
    b->n -= count;
}

enum big_change {
    BIG_RETAG, BIG_USER, BIG_ROUTE, BIG_ADDRESS, BIG_RENAME, /* in place */
    BIG_ADD_LAST, BIG_ADD_BETWEEN, BIG_REMOVE, BIG_REMOVE_LAST, BIG_KINDS
};

/* One change; its node's id (or ids) into ids. */
static size_t big_change(struct big *b, enum big_change kind, uint64_t *ids)
{
    size_t i = rnd(b->n);
    struct policy_node *n = &b->nodes[i];

    switch (kind) {
    case BIG_RETAG:
        n->ntags = rnd(2);
        b->s[i].tags[0] = big_tags[rnd(HS_ARRAY_LEN(big_tags))];
        break;
    case BIG_USER:
        n->user_id = 1 + rnd(BIG_USERS);
        break;
    case BIG_ROUTE:
        n->nroutes = rnd(2);
        n->napproved = rnd(2) ? n->nroutes : 0;
        b->s[i].routes[0] = big_routes[rnd(HS_ARRAY_LEN(big_routes))];
        break;
    case BIG_ADDRESS: {
        unsigned a = ++b->serial;
        snprintf(b->s[i].ip4, sizeof(b->s[i].ip4), "100.99.%u.%u", (a >> 8) & 255, a & 255);
        break;
    }
    case BIG_RENAME:
        snprintf(b->s[i].name, sizeof(b->s[i].name), "r%u", ++b->serial);
        break;
    case BIG_ADD_LAST:
        ids[0] = b->nodes[b->n - 1].id + 10;
        big_fill(b, b->n++, ids[0]);
        return 1;
    case BIG_ADD_BETWEEN:
        if (i + 1 < b->n && b->nodes[i + 1].id - n->id > 1) {
            ids[0] = n->id + (b->nodes[i + 1].id - n->id) / 2;
            big_insert(b, i + 1, ids[0]);
            return 1;
        }
        return big_change(b, BIG_RETAG, ids);
    case BIG_REMOVE_LAST:
        i = b->n - 1;
        /* fall through */
    default:
        ids[0] = b->nodes[i].id;
        big_remove(b, i, 1);
        return 1;
    }
    ids[0] = n->id;
    return 1;
}

/* Everything node i is told, as text: filter, SSH rules, capabilities, whom it sees, and the
 * routes of routers it gets. */
static void answers(const struct policy_net *c, size_t i, size_t n, struct hs_buf *b)
{
    char *row = calloc(n + 1, 1);

    hs_buf_reset(b);
    cr_assert_eq(policy_net_filter(c, i, b), 0);
    cr_assert_eq(policy_net_ssh(c, i, b), 0);
    cr_assert_eq(policy_net_capmap(c, i, b), 0);
    hs_buf_appendf(b, " all=%d sees:", policy_net_sees_all(c, i));
    for (size_t j = 0; j < n; j++)
        row[j] = policy_net_sees(c, i, j) ? '1' : '0';
    hs_buf_puts(b, row);
    free(row);
    for (size_t j = 0; j < n; j++) {
        const char *r[8];
        size_t napproved, nr;
        if (!policy_net_approved(c, j, &napproved) || !napproved)
            continue;
        nr = policy_net_peer_routes(c, i, j, r, 8);
        for (size_t k = 0; k < nr && k < 8; k++)
            hs_buf_appendf(b, "[%zu:%s]", j, r[k]);
    }
}

static uint64_t digest(const struct policy_net *c, size_t n)
{
    struct hs_buf b;
    uint64_t h = 1469598103934665603u;

    hs_buf_init(&b, 16u << 20);
    for (size_t i = 0; i < n; i++) {
        answers(c, i, n, &b);
        for (size_t k = 0; k < b.len; k++)
            h = (h ^ (unsigned char)b.data[k]) * 1099511628211u;
    }
    hs_buf_free(&b);
    return h;
}

static void same_as_full(const struct policy_net *full, const struct policy_net *c, size_t n,
                         int step)
{
    struct hs_buf x, y;

    hs_buf_init(&x, 16u << 20);
    hs_buf_init(&y, 16u << 20);
    for (size_t i = 0; i < n; i++) {
        answers(full, i, n, &x);
        answers(c, i, n, &y);
        cr_assert_str_eq(y.data, x.data, "step %d, node %zu", step, i);
    }
    hs_buf_free(&x);
    hs_buf_free(&y);
}

/* The nets alive: each with the digest of its answers when it was made. */
struct kept {
    struct policy_net *net;
    uint64_t digest;
    size_t n;
};

static void drop(struct kept *k, int step)
{
    cr_assert_eq(digest(k->net, k->n), k->digest,
                 "step %d: a net answers differently after nets were made from it", step);
    policy_net_free(k->net);
    k->net = NULL;
}

/* What step s does: mostly one change of each kind in turn, with batches that fill a block
 * past its split, empty a whole block, and grow the tailnet past its bitsets' room. */
static size_t step_changes(struct big *b, int s, uint64_t *ids)
{
    size_t n = 0;

    switch (s) {
    case 9: /* 300 nodes at the end: the last block splits, bitsets outgrow their room */
        for (int k = 0; k < 300; k++)
            n += big_change(b, BIG_ADD_LAST, &ids[n]);
        return n;
    case 14: /* the first 256 nodes: a whole block goes */
        for (size_t k = 0; k < 256; k++)
            ids[n++] = b->nodes[k].id;
        big_remove(b, 0, 256);
        return n;
    case 19: /* several kinds at once, one node twice */
        for (int k = 0; k < BIG_KINDS; k++)
            n += big_change(b, (enum big_change)k, &ids[n]);
        ids[n] = ids[0];
        return n + 1;
    default:
        return big_change(b, (enum big_change)(s % BIG_KINDS), ids);
    }
}

Test(policy_update, large_tailnet_shares_and_frees_in_any_order, .timeout = 120)
{
    static struct big b;
    struct policy *p;
    struct policy_topology topo;
    struct kept ring[3] = { 0 }; /* the last three nets */
    uint64_t ids[400];
    char err[256];

    rng_state = 0x2545f4914f6cdd1du;
    big_init(&b, 500); /* two blocks; bitsets with room for 512 nodes */
    cr_assert_eq(policy_load(big_policy, strlen(big_policy), POLICY_FORMAT_HUJSON, &p, err,
                             sizeof(err)), 0, "%s", err);
    topo = big_topology(&b);
    cr_assert_eq(policy_compile(p, &topo, &ring[0].net, err, sizeof(err)), 0, "%s", err);
    ring[0].n = b.n;
    ring[0].digest = digest(ring[0].net, b.n);
    for (int s = 1; s <= 22; s++) {
        struct kept *prev = &ring[(s - 1) % 3], *next = &ring[s % 3], made = { 0 };
        struct policy_net *full;
        size_t n = step_changes(&b, s, ids);
        topo = big_topology(&b);
        made.n = b.n;
        /* next's slot holds the oldest net: freed now on even steps, after on odd ones (then
         * the newest's predecessor goes first, between an older and a newer net) */
        if (s % 2 == 0 && next->net)
            drop(next, s);
        cr_assert_eq(policy_recompile(prev->net, &topo, ids, n, &made.net), 0);
        cr_assert_eq(policy_recompile(prev->net, &topo, NULL, 0, &full), 0);
        if (s % 2 == 1) {
            drop(prev, s);
            if (next->net)
                drop(next, s);
        }
        same_as_full(full, made.net, b.n, s);
        made.digest = digest(made.net, b.n);
        policy_net_free(full);
        *next = made;
    }
    for (int k = 0; k < 3; k++) {
        if (ring[k].net)
            drop(&ring[k], 99);
    }
    policy_free(p);
}

/* A list of changes that leaves a node out, or users that changed too: the recompile sees
 * that the tailnet is not the previous one with those changes and compiles it in full. */
Test(policy_update, a_change_not_named_is_still_compiled)
{
    static struct big b;
    struct policy *p;
    struct policy_topology topo;
    struct policy_net *net, *next, *full;
    uint64_t ids[4], unnamed;
    char err[256];

    rng_state = 0x9e3779b97f4a7c15u;
    big_init(&b, 300);
    cr_assert_eq(policy_load(big_policy, strlen(big_policy), POLICY_FORMAT_HUJSON, &p, err,
                             sizeof(err)), 0, "%s", err);
    topo = big_topology(&b);
    cr_assert_eq(policy_compile(p, &topo, &net, err, sizeof(err)), 0, "%s", err);
    for (int s = 0; s < 4; s++) {
        switch (s) {
        case 0: /* one node added, another not named */
            big_change(&b, BIG_ADD_LAST, ids);
            big_change(&b, BIG_ADD_BETWEEN, &unnamed);
            break;
        case 1: /* one removed, another not named */
            big_change(&b, BIG_REMOVE, ids);
            big_change(&b, BIG_REMOVE, &unnamed);
            break;
        case 2: /* one added and one removed, neither named: the count is right, the ids not */
            big_change(&b, BIG_ADD_BETWEEN, &unnamed);
            big_change(&b, BIG_REMOVE, &unnamed);
            ids[0] = b.nodes[0].id; /* and one named that did not change */
            break;
        default: /* a user renamed */
            big_change(&b, BIG_RETAG, ids);
            snprintf(b.unames[3], sizeof(b.unames[3]), "v3");
        }
        topo = big_topology(&b);
        cr_assert_eq(policy_recompile(net, &topo, ids, 1, &next), 0);
        cr_assert_eq(policy_compile(p, &topo, &full, err, sizeof(err)), 0, "%s", err);
        same_as_full(full, next, b.n, s);
        policy_net_free(full);
        policy_net_free(net);
        net = next;
    }
    policy_net_free(net);
    policy_free(p);
}
