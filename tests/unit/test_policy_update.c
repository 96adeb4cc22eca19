/* policy_recompile against a full compile: every accepted policy of the conformance corpus,
 * on its own tailnet, through a seeded series of node changes (removed, added, retagged,
 * moved to another user, given a route); after each, every answer of the recompiled net
 * (filters, SSH rules, capabilities, peers, routes) must equal a full compile's. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "policy/policy.h"

#define CORPUS HS_SOURCE_DIR "/../shared/testdata/policy-conformance"
#define MAX_NODES 64
#define STEPS 12

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
        if (t->nnodes == MAX_NODES - STEPS)
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
    for (int step = 0; step < STEPS && t.nnodes > 1; step++) {
        uint64_t changed = change(&t);
        topo = topology(&t);
        cr_assert_eq(policy_recompile(net, &topo, &changed, 1, &next), 0);
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
