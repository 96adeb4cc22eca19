/* Policy compile cost at scale: a generated tailnet of N nodes (users of five nodes each, a
 * quarter of the nodes tagged, a few subnet routers) and a 200-rule policy (groups, tags,
 * autogroup:self, ports), timed through load, full compile, every node's filter, and a
 * compile after one node changed. Usage: bench_policy [nodes...] (default 1000 5000 10000). */
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
    for (size_t i = 0; i < nnodes; i++)
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

static void run(size_t nnodes)
{
    struct world w;
    struct policy *p;
    struct policy_net *net, *net2;
    struct hs_buf f;
    char err[512];
    char *text;
    size_t total = 0, max = 0, peers = 0;
    double t0, t_load, t_compile, t_filters, t_change, t_full;
    bool same;

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
    /* One node changes its tag: compiled again from the previous net, then in full. */
    w.tagv[3] = "tag:t7";
    t0 = now_ms();
    policy_recompile(net, &t, &w.nodes[3].id, 1, &net2);
    t_change = now_ms() - t0;
    t0 = now_ms();
    policy_net_free(net);
    policy_compile(p, &t, &net, err, sizeof(err));
    t_full = now_ms() - t0;
    same = same_answers(net, net2, nnodes);
    printf("| %zu | %zu | %.1f | %.1f | %.1f | %.0f | %zu | %zu |\n", nnodes, (size_t)RULES,
           t_load, t_compile, t_filters, (double)total / nnodes, max,
           peers / (nnodes / (nnodes / 100 + 1)));
    printf("  one node changed: recompile %.2f ms, full compile %.1f ms, same answers: %s\n",
           t_change, t_full, same ? "yes" : "NO");
    hs_buf_free(&f);
    policy_net_free(net);
    policy_net_free(net2);
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
