/* Tests for core/state's routes (state.h, "routes"): canonical approval lists, what a node
 * serves, the stand-in primary, and autoApprovers written back to the store; and the store's
 * route ids (0.22's routes API). A real SQLite store feeds the state through the bus. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "state/state.h"

static struct fixture {
    char dir[64];
    char db[128], file[128];
    struct hs_config cfg;
    struct notify_bus *bus;
    struct store *st;
    struct state *s;
    uint64_t alice, bob;
} fx;

static uint64_t add_user(const char *name)
{
    struct store_user in = { .name = (char *)name }, out;
    uint64_t id;

    cr_assert_eq(store_user_create(fx.st, &in, &out), 0);
    id = out.id;
    store_user_free(&out);
    return id;
}

static uint64_t add_tagged_node(uint64_t user, int key, const char *tag)
{
    static const struct ip_prefix v4 = { .family = AF_INET, .addr = { 100, 64 }, .bits = 10 };
    struct store_ip_config ips = { .v4 = &v4 };
    struct store_node in = { .user_id = user, .given_name = "host" }, out;
    uint64_t id;

    memset(in.machine_key, key, sizeof(in.machine_key));
    memset(in.node_key, key, sizeof(in.node_key));
    if (tag)
        hs_strv_push(&in.tags, tag);
    cr_assert_eq(store_node_create(fx.st, &in, &ips, &out), 0);
    hs_strv_free(&in.tags);
    id = out.id;
    store_node_free(&out);
    return id;
}

static uint64_t add_node(uint64_t user, int key)
{
    return add_tagged_node(user, key, NULL);
}

/* The node announces routes (a JSON array text), as a map request's Hostinfo would. */
static void announce(uint64_t id, const char *routes)
{
    char hi[512];
    struct store_node v = { .hostinfo_json = hi };

    snprintf(hi, sizeof(hi), "{\"Hostname\":\"h\",\"RoutableIPs\":%s}", routes);
    cr_assert_eq(store_node_update(fx.st, id, STORE_NODE_BIT(STORE_NODE_HOSTINFO), &v, NULL), 0);
}

static void set_approved(uint64_t id, const char *a, const char *b)
{
    struct store_node v = { 0 };

    if (a)
        hs_strv_push(&v.approved_routes, a);
    if (b)
        hs_strv_push(&v.approved_routes, b);
    cr_assert_eq(store_node_update(fx.st, id, STORE_NODE_BIT(STORE_NODE_APPROVED_ROUTES), &v,
                                   NULL), 0);
    hs_strv_free(&v.approved_routes);
}

/* The stored approved routes joined with ",". */
static char *stored(uint64_t id)
{
    struct store_node n;
    struct hs_buf b;

    cr_assert_eq(store_node_get(fx.st, id, &n), 0);
    hs_buf_init(&b, 4096);
    for (size_t i = 0; i < n.approved_routes.n; i++)
        hs_buf_appendf(&b, "%s%s", i ? "," : "", n.approved_routes.v[i]);
    store_node_free(&n);
    return hs_buf_steal(&b);
}

static void expect_stored(uint64_t id, const char *want)
{
    char *got = stored(id);
    cr_expect_str_eq(got, want, "node %llu approved", (unsigned long long)id);
    free(got);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    strcpy(fx.dir, "/tmp/hs-sroutes-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.db, sizeof(fx.db), "%s/db.sqlite", fx.dir);
    snprintf(fx.file, sizeof(fx.file), "%s/policy.hujson", fx.dir);
    fx.cfg = (struct hs_config){ .db_type = DB_SQLITE, .sqlite_path = fx.db, .sqlite_wal = true };
    fx.bus = notify_new();
    cr_assert_eq(store_open(&fx.cfg, fx.bus, &fx.st), 0);
    fx.alice = add_user("alice");
    fx.bob = add_user("bob");
    cr_assert_eq(state_new(fx.st, fx.bus, &fx.s), 0);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void teardown(void)
{
    state_free(fx.s);
    store_close(fx.st);
    notify_free(fx.bus);
    nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(routes, .init = setup, .fini = teardown);

static void expect_normalized(const char *const *in, size_t n, const char *want)
{
    struct hs_strv v;
    struct hs_buf b;
    char err[256];

    cr_assert_eq(state_routes_normalize(in, n, &v, err, sizeof(err)), 0, "%s", err);
    hs_buf_init(&b, 4096);
    for (size_t i = 0; i < v.n; i++)
        hs_buf_appendf(&b, "%s%s", i ? "," : "", v.v[i]);
    cr_expect_str_eq(b.data ? b.data : "", want);
    hs_buf_free(&b);
    hs_strv_free(&v);
}

Test(routes, normalize_sorts_pairs_exits_and_drops_doubles)
{
    /* Go's netip.Prefix.Compare: IPv4 first, then shorter, then lower address */
    const char *in[] = { "fd00::/8", "10.1.0.0/24", "192.168.0.0/16", "10.0.0.0/8",
                         "10.1.0.0/24", "::/0" };
    const char *exit4[] = { "0.0.0.0/0" };

    expect_normalized(in, 6, "0.0.0.0/0,10.0.0.0/8,192.168.0.0/16,10.1.0.0/24,::/0,fd00::/8");
    expect_normalized(exit4, 1, "0.0.0.0/0,::/0");
    expect_normalized(NULL, 0, "");
}

Test(routes, normalize_refuses_what_is_not_a_network)
{
    static const char *const bad[] = { "10.0.0.1/24", "banana", "10.0.0.0/33", "10.0.0.0",
                                       "", "fe80::1%eth0/64", "::/129", "010.0.0.0/8" };
    struct hs_strv v = { 0 };
    char err[256];

    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        const char *in[] = { "10.0.0.0/8", bad[i] };
        err[0] = '\0';
        cr_expect_eq(state_routes_normalize(in, 2, &v, err, sizeof(err)), -EINVAL, "%s", bad[i]);
        cr_expect_not_null(strstr(err, bad[i]), "the message names \"%s\": %s", bad[i], err);
    }
}

/* What node id serves, joined with ",", and its primary routes. */
static void expect_serving(uint64_t id, const char *serving, const char *primary)
{
    struct hs_buf b;
    struct hs_strv p = { 0 };
    const struct state_node *sn;

    hs_buf_init(&b, 4096);
    state_rdlock(fx.s);
    sn = state_node_by_id(fx.s, id);
    cr_assert_not_null(sn);
    for (size_t i = 0; i < sn->serving.n; i++)
        hs_buf_appendf(&b, "%s%s", i ? "," : "", sn->serving.v[i]);
    state_node_primary_routes(fx.s, sn, &p);
    state_unlock(fx.s);
    cr_expect_str_eq(b.data ? b.data : "", serving, "node %llu serves", (unsigned long long)id);
    hs_buf_free(&b);
    hs_buf_init(&b, 4096);
    for (size_t i = 0; i < p.n; i++)
        hs_buf_appendf(&b, "%s%s", i ? "," : "", p.v[i]);
    cr_expect_str_eq(b.data ? b.data : "", primary, "node %llu primary", (unsigned long long)id);
    hs_buf_free(&b);
    hs_strv_free(&p);
}

static uint64_t primary_of(const char *prefix)
{
    uint64_t id;

    state_rdlock(fx.s);
    id = state_route_primary(fx.s, prefix);
    state_unlock(fx.s);
    return id;
}

Test(routes, serving_is_announced_and_approved_primary_is_online)
{
    uint64_t a = add_node(fx.alice, 1), b = add_node(fx.bob, 2);

    announce(a, "[\"10.1.0.0/24\",\"0.0.0.0/0\",\"::/0\",\"10.2.0.0/24\"]");
    announce(b, "[\"10.1.0.0/24\"]");
    set_approved(a, "10.1.0.0/24", "0.0.0.0/0");
    set_approved(b, "10.1.0.0/24", "192.168.9.0/24"); /* the second is not announced */
    expect_serving(a, "10.1.0.0/24,0.0.0.0/0", "");
    expect_serving(b, "10.1.0.0/24", "");
    cr_expect_eq(primary_of("10.1.0.0/24"), 0, "no one online");
    state_node_session(fx.s, b, true, 0);
    cr_expect_eq(primary_of("10.1.0.0/24"), b);
    state_node_session(fx.s, a, true, 0);
    cr_expect_eq(primary_of("10.1.0.0/24"), b, "the primary stays while online");
    expect_serving(a, "10.1.0.0/24,0.0.0.0/0", "");
    expect_serving(b, "10.1.0.0/24", "10.1.0.0/24");
    cr_expect_eq(primary_of("0.0.0.0/0"), 0, "exit routes have no primary");
    cr_expect_eq(primary_of("192.168.9.0/24"), 0, "approved but not announced");
    state_node_session(fx.s, b, false, 0);
    cr_expect_eq(primary_of("10.1.0.0/24"), a);
    expect_serving(a, "10.1.0.0/24,0.0.0.0/0", "10.1.0.0/24");
    /* approval outlives the announcement, but serving does not */
    announce(a, "[]");
    expect_serving(a, "", "");
    expect_stored(a, "10.1.0.0/24,0.0.0.0/0"); /* as written */
    cr_expect_eq(primary_of("10.1.0.0/24"), 0, "b is offline, a no longer announces it");
}

static void health(uint64_t id, bool healthy)
{
    state_set_health(fx.s, &id, &healthy, 1);
}

static bool marked(uint64_t id)
{
    bool m;

    state_rdlock(fx.s);
    m = state_node_by_id(fx.s, id)->unhealthy;
    state_unlock(fx.s);
    return m;
}

static char *ha_nodes(void)
{
    size_t n;
    uint64_t *v = state_ha_nodes(fx.s, &n);
    struct hs_buf b;

    hs_buf_init(&b, 4096);
    hs_buf_puts(&b, "");
    for (size_t i = 0; i < n; i++)
        hs_buf_appendf(&b, "%s%llu", i ? "," : "", (unsigned long long)v[i]);
    free(v);
    return b.data;
}

Test(routes, probes_move_a_primary_to_the_lowest_healthy_router)
{
    uint64_t a = add_node(fx.alice, 1), b = add_node(fx.alice, 2), c = add_node(fx.bob, 3);
    char *ids, want[64];

    for (uint64_t id = a; id <= c; id++) {
        announce(id, "[\"10.1.0.0/24\"]");
        set_approved(id, "10.1.0.0/24", NULL);
        state_node_session(fx.s, id, true, 0);
    }
    cr_expect_eq(primary_of("10.1.0.0/24"), a);
    snprintf(want, sizeof(want), "%llu,%llu,%llu", (unsigned long long)a,
             (unsigned long long)b, (unsigned long long)c);
    cr_expect_str_eq(ids = ha_nodes(), want, "every router of a shared route is probed");
    free(ids);
    health(a, false);
    cr_expect_eq(primary_of("10.1.0.0/24"), b, "the lowest healthy router takes over");
    health(a, true);
    cr_expect_eq(primary_of("10.1.0.0/24"), b, "a router answering again takes nothing back");
    health(b, false);
    health(a, false);
    cr_expect_eq(primary_of("10.1.0.0/24"), c);
    health(c, false);
    cr_expect_eq(primary_of("10.1.0.0/24"), c, "all unhealthy: the primary stays");
    state_node_session(fx.s, c, false, 0);
    cr_expect_eq(primary_of("10.1.0.0/24"), 0, "none healthy, the primary gone: no router");
    state_node_session(fx.s, c, true, 0);
    cr_expect_eq(primary_of("10.1.0.0/24"), c, "a new session clears the mark");
    state_node_session(fx.s, c, false, 0);
    state_node_session(fx.s, b, false, 0);
    snprintf(want, sizeof(want), "%llu", (unsigned long long)a);
    cr_expect_str_eq(ids = ha_nodes(), want, "a lone unhealthy router is still probed");
    free(ids);
    health(a, true);
    cr_expect_eq(primary_of("10.1.0.0/24"), a, "and gets the route once it answers");
    cr_expect_str_eq(ids = ha_nodes(), "", "a lone healthy router is not probed");
    free(ids);
    health(b, false);
    cr_expect_not(marked(b), "no mark on an offline node");
    health(a, false);
    cr_expect(marked(a));
    announce(a, "[]");
    cr_expect_not(marked(a), "a node that stops serving loses its mark");
    health(a, false);
    cr_expect_not(marked(a), "no mark on a node that serves nothing");
}

static void put_policy(const char *text)
{
    FILE *f = fopen(fx.file, "w");
    char err[512];

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
}

#define AUTO_POLICY(user)                                                                    \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],"            \
    " \"autoApprovers\": {\"routes\": {\"10.20.0.0/16\": [\"" user "@\"]},"                   \
    " \"exitNode\": [\"" user "@\"]}}"

Test(routes, auto_approvers_write_to_the_store)
{
    uint64_t a = add_node(fx.alice, 1), b = add_node(fx.bob, 2);

    put_policy(AUTO_POLICY("alice"));
    /* at announce time: the write-back happens before the announcement's write returns */
    announce(a, "[\"10.20.1.0/24\",\"10.30.0.0/24\",\"0.0.0.0/0\",\"::/0\"]");
    expect_stored(a, "0.0.0.0/0,10.20.1.0/24,::/0");
    expect_serving(a, "10.20.1.0/24,0.0.0.0/0,::/0", "");
    announce(b, "[\"10.20.2.0/24\"]");
    expect_stored(b, "");
    /* at policy change; only ever adding */
    put_policy(AUTO_POLICY("bob"));
    expect_stored(b, "10.20.2.0/24");
    expect_stored(a, "0.0.0.0/0,10.20.1.0/24,::/0");
    /* an operator's approval is kept beside it */
    set_approved(b, "10.20.2.0/24", "10.99.0.0/24");
    announce(b, "[\"10.20.2.0/24\",\"10.20.3.0/24\"]");
    expect_stored(b, "10.20.2.0/24,10.20.3.0/24,10.99.0.0/24");
}

Test(routes, auto_approvers_name_groups_and_tags)
{
    uint64_t tagged = add_tagged_node(fx.alice, 1, "tag:router");
    uint64_t b = add_node(fx.bob, 2), a = add_node(fx.alice, 3);

    put_policy("{\"groups\": {\"group:ops\": [\"bob@\"]},"
               " \"tagOwners\": {\"tag:router\": [\"alice@\"]},"
               " \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],"
               " \"autoApprovers\": {\"routes\": {\"10.60.0.0/16\": [\"group:ops\", \"tag:router\"]},"
               " \"exitNode\": [\"tag:router\"]}}");
    announce(tagged, "[\"10.60.1.0/24\",\"0.0.0.0/0\",\"::/0\"]");
    announce(b, "[\"10.60.2.0/24\",\"0.0.0.0/0\",\"::/0\"]");
    announce(a, "[\"10.60.3.0/24\"]");
    expect_stored(tagged, "0.0.0.0/0,10.60.1.0/24,::/0");
    expect_stored(b, "10.60.2.0/24"); /* the group approves routes, not bob's exit node */
    expect_stored(a, ""); /* alice only owns the tag: her untagged node is not the tag */
}

Test(routes, no_policy_approves_nothing)
{
    uint64_t a = add_node(fx.alice, 1);

    announce(a, "[\"10.20.1.0/24\",\"0.0.0.0/0\",\"::/0\"]");
    expect_stored(a, "");
    expect_serving(a, "", "");
}

Test(routes, route_ids_are_stable_and_go_with_their_node)
{
    uint64_t a = add_node(fx.alice, 1), b = add_node(fx.bob, 2);
    struct store_route *v;
    struct store_route r;
    size_t n;

    static const char *const p[] = { "10.1.0.0/24", "::/0" };

    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(store_route_add(fx.st, a, p[i]), 0);
        cr_assert_eq(store_route_add(fx.st, a, p[i]), 0, "twice: nothing new");
    }
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(store_route_add(fx.st, b, p[i]), 0);
    cr_assert_eq(store_route_list(fx.st, 0, &v, &n), 0);
    cr_assert_eq(n, 4);
    cr_expect_eq(v[0].node_id, a);
    cr_expect_str_eq(v[0].prefix, "10.1.0.0/24");
    cr_expect_eq(v[2].node_id, b);
    cr_assert_eq(store_route_get(fx.st, v[1].id, &r), 0);
    cr_expect_str_eq(r.prefix, "::/0");
    store_route_free(&r);
    cr_expect_eq(store_route_delete(fx.st, v[0].id), 0);
    cr_expect_eq(store_route_delete(fx.st, v[0].id), -ENOENT);
    cr_expect_eq(store_route_get(fx.st, v[0].id, &r), -ENOENT);
    store_route_list_free(v, n);
    cr_assert_eq(store_node_delete(fx.st, a), 0);
    cr_assert_eq(store_route_list(fx.st, a, &v, &n), 0);
    cr_expect_eq(n, 0, "a node's route ids go with it");
    store_route_list_free(v, n);
    cr_expect_eq(store_route_add(fx.st, a, "10.1.0.0/24"), -ENOENT, "no such node");
}
