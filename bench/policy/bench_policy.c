/* Policy compile cost at scale: a generated tailnet of N nodes (users of five nodes each, a
 * quarter of the nodes tagged, a few subnet routers) and a 200-rule policy (groups, tags,
 * autogroup:self, ports), timed through load, full compile, every node's filter, and
 * recompiles after one node changed (in place, added, removed), each checked against a full
 * compile. Usage: bench_policy [nodes...] (default 1000 5000 10000). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/policy.h"

#define RULES 200
#define USERS_PER_GROUP 10
#define TAGS 20

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct world {
    struct policy_user *users;
    struct policy_node *nodes;
    char **strings; /* everything the topology points at, freed at the end */
    size_t nstrings;
    const char **tagv; /* one tag per tagged node */
    const char **routev;
    size_t nusers, nnodes;
};

static char *keep(struct world *w, char *s)
{
    w->strings = realloc(w->strings, (w->nstrings + 1) * sizeof(*w->strings));
    w->strings[w->nstrings++] = s;
    return s;
}

static void node_at(struct world *w, size_t i)
{
    struct policy_node *n = &w->nodes[i];
    unsigned a = (unsigned)i + 1;

    n->id = i + 1;
    n->name = keep(w, hs_aprintf("node%zu", i));
    n->ipv4 = keep(w, hs_aprintf("100.%u.%u.%u", 64 + (a >> 16), (a >> 8) & 255, a & 255));
    n->ipv6 = keep(w, hs_aprintf("fd7a:115c:a1e0::%x", a));
    if (i % 4 == 3) { /* tagged */
        w->tagv[i] = keep(w, hs_aprintf("tag:t%zu", i % TAGS));
        n->tags = &w->tagv[i];
        n->ntags = 1;
    } else {
        n->user_id = i / 5 + 1;
    }
    if (i % 500 == 7) { /* a subnet router */
        w->routev[i] = keep(w, hs_aprintf("10.%zu.0.0/16", i / 500));
        n->routes = n->approved = &w->routev[i];
        n->nroutes = n->napproved = 1;
    }
}

static void world_init(struct world *w, size_t nnodes)
{
    memset(w, 0, sizeof(*w));
    w->nnodes = nnodes;
    w->nusers = nnodes / 5 + 1;
    w->users = hs_xcalloc(w->nusers, sizeof(*w->users));
    w->nodes = hs_xcalloc(nnodes + 1, sizeof(*w->nodes));
    w->tagv = hs_xcalloc(nnodes + 1, sizeof(*w->tagv));
    w->routev = hs_xcalloc(nnodes + 1, sizeof(*w->routev));
    for (size_t u = 0; u < w->nusers; u++) {
        w->users[u].id = u + 1;
        w->users[u].name = keep(w, hs_aprintf("user%zu", u));
        w->users[u].email = keep(w, hs_aprintf("user%zu@example.com", u));
    }
    for (size_t i = 0; i <= nnodes; i++) /* node nnodes: the one a bench adds */
        node_at(w, i);
}

static void world_free(struct world *w)
{
    for (size_t i = 0; i < w->nstrings; i++)
        free(w->strings[i]);
    free(w->strings);
    free(w->users);
    free(w->nodes);
    free(w->tagv);
    free(w->routev);
}

/* 200 rules over groups of ten users, tags, autogroup:self and a few prefixes. */
static char *make_policy(size_t nusers)
{
    struct hs_buf b;
    size_t ngroups = nusers / USERS_PER_GROUP + 1;

    hs_buf_init(&b, 64u << 20);
    hs_buf_puts(&b, "{\"groups\":{");
    for (size_t g = 0; g < ngroups; g++) {
        hs_buf_appendf(&b, "%s\"group:g%zu\":[", g ? "," : "", g);
        for (size_t k = 0; k < USERS_PER_GROUP && g * USERS_PER_GROUP + k < nusers; k++)
            hs_buf_appendf(&b, "%s\"user%zu@example.com\"", k ? "," : "",
                           g * USERS_PER_GROUP + k);
        hs_buf_puts(&b, "]");
    }
    hs_buf_puts(&b, "},\"tagOwners\":{");
    for (size_t t = 0; t < TAGS; t++)
        hs_buf_appendf(&b, "%s\"tag:t%zu\":[\"group:g0\"]", t ? "," : "", t);
    hs_buf_puts(&b, "},\"acls\":[");
    for (size_t r = 0; r < RULES; r++) {
        size_t g = r % ngroups, t = r % TAGS;
        if (r)
            hs_buf_puts(&b, ",");
        switch (r % 5) {
        case 0:
            hs_buf_appendf(&b, "{\"action\":\"accept\",\"src\":[\"group:g%zu\"],"
                               "\"dst\":[\"tag:t%zu:22,443\"]}", g, t);
            break;
        case 1:
            hs_buf_appendf(&b, "{\"action\":\"accept\",\"src\":[\"tag:t%zu\"],"
                               "\"dst\":[\"tag:t%zu:%zu\"]}", t, (t + 1) % TAGS, 8000 + r);
            break;
        case 2:
            hs_buf_appendf(&b, "{\"action\":\"accept\",\"src\":[\"group:g%zu\"],"
                               "\"dst\":[\"autogroup:self:*\"]}", g);
            break;
        case 3:
            hs_buf_appendf(&b, "{\"action\":\"accept\",\"src\":[\"group:g%zu\"],"
                               "\"dst\":[\"10.%zu.0.0/16:*\"]}", g, r % 20);
            break;
        default:
            hs_buf_appendf(&b, "{\"action\":\"accept\",\"proto\":\"tcp\","
                               "\"src\":[\"user%zu@example.com\"],\"dst\":[\"group:g%zu:80\"]}",
                           r % nusers, (g + 1) % ngroups);
        }
    }
    hs_buf_puts(&b, "]}");
    return hs_buf_steal(&b);
}

/* Every node's filter and a sample of the peer relation agree between two nets. */
static bool same_answers(const struct policy_net *a, const struct policy_net *b, size_t n)
{
    struct hs_buf x, y;
    bool same = true;

    hs_buf_init(&x, 256u << 20);
    hs_buf_init(&y, 256u << 20);
    for (size_t i = 0; i < n && same; i++) {
        hs_buf_reset(&x);
        hs_buf_reset(&y);
        policy_net_filter(a, i, &x);
        policy_net_filter(b, i, &y);
        same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
        for (size_t j = 0; j < n && same; j += 7)
            same = policy_net_sees(a, i, j) == policy_net_sees(b, i, j);
    }
    hs_buf_free(&x);
    hs_buf_free(&y);
    return same;
}

/* The tailnet with one node different: retagged, given another route (both in place), added
 * (the next id, last) or removed (from the middle: the nodes after it move up). w's strings are
 * shared, the node array is the variant's. */
enum change { RETAG, ROUTE, ADD, REMOVE, NCHANGES };
static const char *const change_names[NCHANGES] = { "retagged", "new route", "added (last)",
                                                    "removed (middle)" };

struct variant {
    struct policy_node *nodes;
    struct policy_topology t;
    uint64_t id; /* the node that differs */
};

static const char *const tag7[] = { "tag:t7" };
static const char *const two_routes[] = { "10.0.0.0/16", "10.200.0.0/24" };

static void variant_init(struct variant *v, const struct world *w, enum change ch)
{
    size_t n = w->nnodes, mid = n / 2;

    v->nodes = hs_xcalloc(n + 2, sizeof(*v->nodes));
    memcpy(v->nodes, w->nodes, (n + 1) * sizeof(*v->nodes)); /* w has node n ready to add */
    v->t = (struct policy_topology){ .users = w->users, .nusers = w->nusers, .nodes = v->nodes,
                                     .nnodes = n };
    switch (ch) {
    case RETAG: /* node 3 is tagged tag:t3 */
        v->nodes[3].tags = tag7;
        v->id = v->nodes[3].id;
        break;
    case ROUTE: /* node 7 is the first subnet router */
        v->nodes[7].routes = v->nodes[7].approved = two_routes;
        v->nodes[7].nroutes = v->nodes[7].napproved = 2;
        v->id = v->nodes[7].id;
        break;
    case ADD:
        v->t.nnodes = n + 1;
        v->id = v->nodes[n].id;
        break;
    default:
        v->id = v->nodes[mid].id;
        memmove(&v->nodes[mid], &v->nodes[mid + 1], (n - mid - 1) * sizeof(*v->nodes));
        v->t.nnodes = n - 1;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

#define ROUNDS 5  /* each: a full compile, every filter, then STEPS recompiles */
#define STEPS 21  /* odd: a chain ends on the changed tailnet */

/* Writes every node's filter (what a server does after a compile): the first recompile
 * then finds the caches as a server would, not warm from the compile. */
static void all_filters(const struct policy_net *net, size_t n)
{
    struct hs_buf f;

    hs_buf_init(&f, 256u << 20);
    for (size_t i = 0; i < n; i++) {
        hs_buf_reset(&f);
        policy_net_filter(net, i, &f);
    }
    hs_buf_free(&f);
}

/* ROUNDS times: STEPS recompiles in a row, each from the previous net (which is then freed,
 * as the server does), going back and forth between the tailnet and the variant. Then every
 * answer of the last net against a full compile of the variant. */
static void time_change(const struct policy *p, const struct policy_topology *base,
                        const struct variant *v, enum change ch)
{
    struct policy_net *net = NULL, *next, *full;
    double first[ROUNDS], chain[ROUNDS * (STEPS - 1)], t0;
    size_t nchain = 0;
    char err[512];
    bool same;

    for (int r = 0; r < ROUNDS; r++) {
        policy_net_free(net);
        policy_compile(p, base, &net, err, sizeof(err));
        all_filters(net, base->nnodes);
        for (int s = 0; s < STEPS; s++) {
            t0 = now_ms();
            policy_recompile(net, s % 2 ? base : &v->t, &v->id, 1, &next);
            t0 = now_ms() - t0;
            if (s == 0)
                first[r] = t0;
            else
                chain[nchain++] = t0;
            policy_net_free(net);
            net = next;
        }
    }
    policy_compile(p, &v->t, &full, err, sizeof(err));
    same = same_answers(full, net, v->t.nnodes);
    qsort(first, ROUNDS, sizeof(first[0]), cmp_double);
    qsort(chain, nchain, sizeof(chain[0]), cmp_double);
    printf("  one node %s: first recompile after a compile and every filter %.2f ms (max "
           "%.2f, %d rounds); then in a row %.2f ms (p90 %.2f); same answers: %s\n",
           change_names[ch], first[ROUNDS / 2], first[ROUNDS - 1], ROUNDS, chain[nchain / 2],
           chain[nchain * 9 / 10], same ? "yes" : "NO");
    policy_net_free(full);
    policy_net_free(net);
}

static void run(size_t nnodes)
{
    struct world w;
    struct policy *p;
    struct policy_net *net;
    struct hs_buf f;
    char err[512];
    char *text;
    size_t total = 0, max = 0, peers = 0;
    double t0, t_load, t_compile, t_filters;

    world_init(&w, nnodes);
    text = make_policy(w.nusers);
    t0 = now_ms();
    if (policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, &p, err, sizeof(err)) < 0) {
        fprintf(stderr, "load: %s\n", err);
        exit(1);
    }
    t_load = now_ms() - t0;
    struct policy_topology t = { .users = w.users, .nusers = w.nusers, .nodes = w.nodes,
                               .nnodes = w.nnodes };
    t0 = now_ms();
    if (policy_compile(p, &t, &net, err, sizeof(err)) < 0) {
        fprintf(stderr, "compile: %s\n", err);
        exit(1);
    }
    t_compile = now_ms() - t0;
    hs_buf_init(&f, 256u << 20);
    t0 = now_ms();
    for (size_t i = 0; i < nnodes; i++) {
        hs_buf_reset(&f);
        policy_net_filter(net, i, &f);
        total += f.len;
        max = f.len > max ? f.len : max;
    }
    t_filters = now_ms() - t0;
    for (size_t i = 0; i < nnodes; i += nnodes / 100 + 1) {
        for (size_t j = 0; j < nnodes; j++)
            peers += policy_net_sees(net, i, j);
    }
    printf("| %zu | %zu | %.1f | %.1f | %.1f | %.0f | %zu | %zu |\n", nnodes, (size_t)RULES,
           t_load, t_compile, t_filters, (double)total / nnodes, max,
           peers / (nnodes / (nnodes / 100 + 1)));
    policy_net_free(net);
    for (enum change ch = 0; ch < NCHANGES; ch++) {
        struct variant v;
        variant_init(&v, &w, ch);
        time_change(p, &t, &v, ch);
        free(v.nodes);
    }
    hs_buf_free(&f);
    policy_free(p);
    free(text);
    world_free(&w);
}

int main(int argc, char **argv)
{
    printf("| nodes | rules | load ms | compile ms | all filters ms | filter bytes avg | max | "
           "peers avg |\n|---|---|---|---|---|---|---|---|\n");
    if (argc < 2) {
        run(1000);
        run(5000);
        run(10000);
    }
    for (int i = 1; i < argc; i++)
        run((size_t)strtoul(argv[i], NULL, 10));
    return 0;
}
