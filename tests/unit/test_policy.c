#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

static int check(const char *text, char *err, size_t n)
{
    return policy_check(text, strlen(text), err, n);
}

Test(hujson, comments_and_trailing_commas)
{
    const char *in = "{\n // comment\n \"acls\": [ /* inline */\n  {\"action\": \"accept\", "
                     "\"src\": [\"*\",], \"dst\": [\"*:*\"],},\n ],\n}\n";
    char out[256], err[128];

    cr_assert_eq(policy_hujson_standardize(in, strlen(in), out, err, sizeof(err)), 0);
    cr_assert_eq(strlen(out), strlen(in));
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "%s", out);
    cr_assert_eq(json_array_size(json_object_get(j, "acls")), 1);
    json_decref(j);
}

Test(hujson, strings_keep_comment_markers)
{
    const char *in = "{\"hosts\": {\"a//b,]\": \"100.64.0.1\"}}";
    char out[128], err[128];
    cr_assert_eq(policy_hujson_standardize(in, strlen(in), out, err, sizeof(err)), 0);
    cr_assert_str_eq(out, in);
}

Test(hujson, unterminated)
{
    char out[64], err[128];
    cr_assert_eq(policy_hujson_standardize("{\"a", 3, out, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "string"));
    cr_assert_eq(policy_hujson_standardize("{/* x", 5, out, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "comment"));
}

Test(policy, check_rejects)
{
    char err[256];
    cr_assert_eq(check("{", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("[]", err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "object"));
    cr_assert_eq(check("{\"acl\": []}", err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "acl"));
    cr_assert_eq(check("{\"acls\": {}}", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"acls\": [], \"acls\": []}", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"groups\": {\"group:a\": [\"alice@\"]}, \"acls\": []}", err,
                       sizeof(err)), 0);
}

Test(policy, byte_by_byte_prefixes_never_crash)
{
    const char *in = "{\"acls\": [{\"action\": \"accept\", // c\n \"src\": [\"*\"]}], }";
    char err[256];
    for (size_t n = 0; n <= strlen(in); n++)
        policy_check(in, n, err, sizeof(err));
}

Test(policy, acl_entries_checked)
{
    char err[256];
    cr_assert_eq(check("{\"acls\": [{\"action\": \"dance\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
                       err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "accept"), "%s", err);
    cr_assert_eq(check("{\"acls\": [{\"action\": \"accept\", \"src\": \"*\", \"dst\": [\"*:*\"]}]}",
                       err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"acls\": [1]}", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
                       err, sizeof(err)), 0);
}

/* Broken policies: each refused with a message that names what is wrong (and where). */
Test(policy, broken_policies_named)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        { "{\"acls\": [", "line" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"group:\"], \"dst\": [\"*:*\"]}]}",
          "invalid group \"group:\"" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:nope:22\"]}]}",
          "tag not found: \"tag:nope\"" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:99999\"]}]}",
          "port range \"99999\"" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:0\"]}]}",
          "first port must be >0" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:90-80\"]}]}",
          "last port is before the first" },
        { "{\"acls\": [{\"action\": \"accept\", \"proto\": \"bogus\", \"src\": [\"*\"], "
          "\"dst\": [\"*:*\"]}]}", "unknown protocol" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"host\"]}]}",
          "alias:ports" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:self\"], "
          "\"dst\": [\"*:*\"]}]}", "not valid on the src side" },
        { "{\"tagOwners\": {\"tag:1x\": []}}", "tag names must start with a letter" },
        { "{\"groups\": {\"group:a\": [\"group:b\"]}}", "cannot be recursive" },
        { "{\"hosts\": {\"web\": \"not-an-ip\"}}", "hosts[\"web\"]" },
        { "{\"acl\": []}", "unknown field \"acl\"" },
        { "{\"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"]}]}", "ip and app can not both be empty" },
    };
    char err[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(check(cases[i].text, err, sizeof(err)), -EINVAL, "%s", cases[i].text);
        cr_assert(strstr(err, cases[i].want), "%s: want \"%s\" in \"%s\"", cases[i].text,
                  cases[i].want, err);
    }
}

Test(policy, deep_nesting_refused)
{
    char text[1024], err[256];
    size_t n = 0;

    n += (size_t)snprintf(text + n, sizeof(text) - n, "{\"acls\": ");
    for (int i = 0; i < POLICY_MAX_DEPTH + 1; i++)
        text[n++] = '[';
    for (int i = 0; i < POLICY_MAX_DEPTH + 1; i++)
        text[n++] = ']';
    snprintf(text + n, sizeof(text) - n, "}");
    cr_assert_eq(check(text, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "nested deeper"), "%s", err);
}

Test(policy, oversized_document_refused)
{
    size_t len = 10u << 20;
    char *text = malloc(len), err[256];
    struct policy *p = NULL;

    memset(text, ' ', len);
    text[0] = '{';
    text[len - 1] = '}';
    cr_assert_eq(policy_load(text, len, POLICY_FORMAT_AUTO, &p, err, sizeof(err)), -E2BIG);
    cr_assert_null(p);
    cr_assert(strstr(err, "exceeds the limit"), "%s", err);
    free(text);
}

/* Compile-time refusals: a user who does not exist (policy_net_check_users), a failing test
 * (policy_compile). */
Test(policy, compile_refusals_named)
{
    static const struct policy_user users[] = { { .id = 1, .name = "alice",
                                                  .email = "alice@example.com" } };
    static const struct policy_node nodes[] = { { .id = 1, .name = "a", .user_id = 1,
                                                  .ipv4 = "100.64.0.1" } };
    static const struct policy_topology topo = { .users = users, .nusers = 1, .nodes = nodes,
                                                 .nnodes = 1 };
    static const struct {
        const char *text, *want;
    } cases[] = {
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"bob@example.com\"], "
          "\"dst\": [\"*:*\"]}]}", "acls[0]: src: user \"bob@example.com\" not found" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"group:eng:22\"]}]}",
          "acls[0]: dst: group \"group:eng\" is not in groups and no user has it from the "
          "identity provider" },
        { "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@example.com\"], "
          "\"dst\": [\"alice@example.com:22\"]}], \"tests\": [{\"src\": \"alice@example.com\", "
          "\"accept\": [\"alice@example.com:22\"], \"deny\": [\"alice@example.com:22\"]}]}",
          "test(s) failed" },
    };
    char err[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct policy *p;
        struct policy_net *net = NULL;
        cr_assert_eq(policy_load(cases[i].text, strlen(cases[i].text), POLICY_FORMAT_AUTO, &p,
                                 err, sizeof(err)), 0, "%s", err);
        if (policy_compile(p, &topo, &net, err, sizeof(err)) == 0) {
            cr_assert_eq(policy_net_check_users(net, err, sizeof(err)), -EINVAL, "%s",
                         cases[i].text);
            policy_net_free(net);
        } else {
            cr_assert_null(net);
        }
        cr_assert(strstr(err, cases[i].want), "want \"%s\" in \"%s\"", cases[i].want, err);
        policy_free(p);
    }
}

/* A group the policy uses without defining it has as members the users whose identity
 * provider put them in it; a group the policy defines keeps its own members only. */
Test(policy, provider_groups_fill_undefined_groups)
{
    static const char *const eng[] = { "eng", "ops" }, *const ops[] = { "ops" };
    static const struct policy_user users[] = {
        { .id = 1, .name = "alice", .groups = eng, .ngroups = 2 },
        { .id = 2, .name = "bob", .groups = ops, .ngroups = 1 },
        { .id = 3, .name = "carol" },
    };
    static const struct policy_node nodes[] = {
        { .id = 1, .name = "a", .user_id = 1, .ipv4 = "100.64.0.1" },
        { .id = 2, .name = "b", .user_id = 2, .ipv4 = "100.64.0.2" },
        { .id = 3, .name = "c", .user_id = 3, .ipv4 = "100.64.0.3" },
    };
    static const struct policy_topology topo = { .users = users, .nusers = 3, .nodes = nodes,
                                                 .nnodes = 3 };
    static const char text[] =
        "{\"groups\": {\"group:ops\": [\"carol@\"]}, \"tagOwners\": {\"tag:web\": [\"group:eng\"]},"
        " \"acls\": [{\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"carol@:22\"]},"
        " {\"action\": \"accept\", \"src\": [\"group:ops\"], \"dst\": [\"carol@:80\"]}]}";
    struct policy_user alice = users[0], bob = users[1];
    struct policy_net *net;
    struct policy *p;
    struct hs_buf f;
    char err[256];

    cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_AUTO, &p, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(policy_compile(p, &topo, &net, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(policy_net_check_users(net, err, sizeof(err)), 0, "%s", err);
    hs_buf_init(&f, 1 << 20);
    cr_assert_eq(policy_net_filter(net, 2, &f), 0);
    /* Port 22 from alice alone (eng from the provider); port 80 from carol, whom the policy's
     * own group:ops lists, and not from bob, whose provider says ops. */
    cr_assert(strstr(f.data, "\"SrcIPs\":[\"100.64.0.1\"]"), "%s", f.data);
    cr_assert(strstr(f.data, "\"SrcIPs\":[\"100.64.0.3\"]"), "%s", f.data);
    cr_assert_null(strstr(f.data, "100.64.0.2"), "%s", f.data);
    cr_assert(policy_net_sees(net, 0, 2));
    cr_assert_not(policy_net_sees(net, 1, 0));
    cr_assert(policy_tag_allowed(p, &alice, NULL, 0, "tag:web"));
    cr_assert_not(policy_tag_allowed(p, &bob, NULL, 0, "tag:web"));
    hs_buf_free(&f);
    policy_net_free(net);
    policy_free(p);
}

/* No policy: every node gets a subnet route from its primary router only (the first to serve
 * it), and sees everyone. */
Test(policy, no_policy_routes_from_the_primary)
{
    static const char *const route[] = { "10.9.0.0/24" };
    static const struct policy_user users[] = { { .id = 1, .name = "alice" } };
    static const struct policy_node nodes[] = {
        { .id = 1, .name = "a", .user_id = 1, .ipv4 = "100.64.0.1" },
        { .id = 2, .name = "r1", .user_id = 1, .ipv4 = "100.64.0.2", .routes = route,
          .nroutes = 1, .approved = route, .napproved = 1 },
        { .id = 3, .name = "r2", .user_id = 1, .ipv4 = "100.64.0.3", .routes = route,
          .nroutes = 1, .approved = route, .napproved = 1 },
    };
    static const struct policy_topology topo = { .users = users, .nusers = 1, .nodes = nodes,
                                                 .nnodes = 3 };
    struct policy_net *net;
    const char *got[2];
    char err[256];

    cr_assert_eq(policy_compile(NULL, &topo, &net, err, sizeof(err)), 0, "%s", err);
    for (size_t a = 0; a < 3; a++) {
        cr_assert(policy_net_sees_all(net, a));
        cr_assert_eq(policy_net_peer_routes(net, a, 2, got, 2), 0, "node %zu from r2", a);
        if (a == 1)
            continue;
        cr_assert_eq(policy_net_peer_routes(net, a, 1, got, 2), 1, "node %zu from r1", a);
        cr_assert_str_eq(got[0], "10.9.0.0/24");
    }
    policy_net_free(net);
}

/* alice's nodes 1-5 (100.64.0.1-5, fd7a:115c:a1e0::1-5) and 8 reach bob's node 20. */
static struct policy_net *runs_net(void)
{
    static const struct policy_user users[] = {
        { .id = 1, .name = "alice", .email = "alice@example.com" },
        { .id = 2, .name = "bob", .email = "bob@example.com" },
    };
    static const char *v4[] = { "100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4",
                                "100.64.0.5", "100.64.0.8", "100.64.0.20" };
    static const char *v6[] = { "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3",
                                "fd7a:115c:a1e0::4", "fd7a:115c:a1e0::5", "fd7a:115c:a1e0::8",
                                "fd7a:115c:a1e0::20" };
    static const char *text =
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@example.com\", \"10.0.0.1\"],"
        " \"dst\": [\"bob@example.com:22\"]}]}";
    struct policy_node nodes[7] = { 0 };
    struct policy_topology topo = { .users = users, .nusers = 2, .nodes = nodes, .nnodes = 7 };
    struct policy_net *net = NULL;
    struct policy *p;
    char err[512];

    for (size_t i = 0; i < 7; i++)
        nodes[i] = (struct policy_node){ .id = i + 1, .name = v4[i], .user_id = i < 6 ? 1 : 2,
                                         .ipv4 = v4[i], .ipv6 = v6[i] };
    cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_AUTO, &p, err, sizeof(err)), 0);
    cr_assert_eq(policy_compile(p, &topo, &net, err, sizeof(err)), 0, "%s", err);
    policy_free(p);
    return net;
}

/* Neighbouring addresses are written as one range (or the CIDR they fill); lone ones stay
 * as they are. */
Test(policy, neighbouring_addresses_as_ranges)
{
    struct policy_net *net = runs_net();
    struct hs_buf f;
    json_t *rules, *src;

    hs_buf_init(&f, 1 << 20);
    cr_assert_eq(policy_net_filter(net, 6, &f), 0);
    rules = json_loadb(f.data, f.len, 0, NULL);
    src = json_object_get(json_array_get(rules, 0), "SrcIPs");
    cr_assert_eq(json_array_size(src), 5, "%s", f.data);
    cr_expect_str_eq(json_string_value(json_array_get(src, 0)), "10.0.0.1");
    cr_expect_str_eq(json_string_value(json_array_get(src, 1)), "100.64.0.1-100.64.0.5");
    cr_expect_str_eq(json_string_value(json_array_get(src, 2)), "100.64.0.8");
    cr_expect_str_eq(json_string_value(json_array_get(src, 3)),
                     "fd7a:115c:a1e0::1-fd7a:115c:a1e0::5");
    cr_expect_str_eq(json_string_value(json_array_get(src, 4)), "fd7a:115c:a1e0::8");
    json_decref(rules);
    hs_buf_free(&f);
    policy_net_free(net);
}

/* A filter with its long texts held apart is the same filter once they are put back:
 * alice's 60 nodes on every other address (no runs to fold) reach bob's. */
Test(policy, filter_parts_splice_back)
{
    static const struct policy_user users[] = {
        { .id = 1, .name = "alice", .email = "alice@example.com" },
        { .id = 2, .name = "bob", .email = "bob@example.com" },
    };
    static const char *text =
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@example.com\"],"
        " \"dst\": [\"bob@example.com:22\", \"bob@example.com:80\"]},"
        " {\"action\": \"accept\", \"src\": [\"alice@example.com\"],"
        " \"dst\": [\"bob@example.com:443\"]}]}";
    char v4[61][20], v6[61][40], err[512];
    struct policy_node nodes[61] = { 0 };
    struct policy_topology topo = { .users = users, .nusers = 2, .nodes = nodes, .nnodes = 61 };
    struct policy_parts parts = { 0 };
    struct policy_net *net = NULL;
    struct hs_buf whole, own, back;
    struct policy *p;
    size_t pos = 0;

    for (size_t i = 0; i < 61; i++) {
        snprintf(v4[i], sizeof(v4[i]), "100.64.%zu.%zu", i / 100, 2 * (i % 100) + 1);
        snprintf(v6[i], sizeof(v6[i]), "fd7a:115c:a1e0::%zx", 2 * i + 1);
        nodes[i] = (struct policy_node){ .id = i + 1, .name = v4[i], .user_id = i < 60 ? 1 : 2,
                                         .ipv4 = v4[i], .ipv6 = v6[i] };
    }
    cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_AUTO, &p, err, sizeof(err)), 0);
    cr_assert_eq(policy_compile(p, &topo, &net, err, sizeof(err)), 0, "%s", err);
    hs_buf_init(&whole, 1 << 20);
    hs_buf_init(&own, 1 << 20);
    hs_buf_init(&back, 1 << 20);
    cr_assert_eq(policy_net_filter(net, 60, &whole), 0);
    cr_assert_eq(policy_net_filter_parts(net, 60, &own, &parts), 0);
    cr_expect_eq(parts.n, 2, "each rule's 120 sources held apart");
    cr_expect_eq(parts.v[0].hash, parts.v[1].hash, "the same text, the same hash");
    cr_expect_lt(own.len + 2 * POLICY_PART_MIN, whole.len);
    for (size_t i = 0; i < parts.n; i++) {
        hs_buf_append(&back, own.data + pos, parts.v[i].at - pos);
        hs_buf_append(&back, parts.v[i].text, parts.v[i].len);
        pos = parts.v[i].at;
    }
    hs_buf_append(&back, own.data + pos, own.len - pos);
    cr_expect_str_eq(back.data, whole.data);
    policy_parts_free(&parts);
    hs_buf_free(&whole);
    hs_buf_free(&own);
    hs_buf_free(&back);
    policy_net_free(net);
    policy_free(p);
}

/* A peer list taken whole is policy_net_sees asked about every node, both ways round: alice
 * may reach the server, so the server sees alice's nodes too; bob sees no one. */
Test(policy, sees_row_is_sees_per_node)
{
    static const struct policy_user users[] = {
        { .id = 1, .name = "alice", .email = "alice@example.com" },
        { .id = 2, .name = "bob", .email = "bob@example.com" },
    };
    static const char *srv_tags[] = { "tag:srv" };
    static const struct policy_node nodes[] = {
        { .id = 1, .name = "a1", .user_id = 1, .ipv4 = "100.64.0.1" },
        { .id = 2, .name = "b1", .user_id = 2, .ipv4 = "100.64.0.2" },
        { .id = 3, .name = "srv", .user_id = 1, .tags = srv_tags, .ntags = 1,
          .ipv4 = "100.64.0.3" },
        { .id = 4, .name = "a2", .user_id = 1, .ipv4 = "100.64.0.4" },
    };
    static const struct policy_topology topo = { .users = users, .nusers = 2, .nodes = nodes,
                                                 .nnodes = 4 };
    static const char *text =
        "{\"tagOwners\": {\"tag:srv\": [\"alice@example.com\"]}, \"acls\": [{\"action\":"
        " \"accept\", \"src\": [\"alice@example.com\"], \"dst\": [\"tag:srv:22\"]}]}";
    const char *want[] = { "0010", "0000", "1001", "0010" };
    struct policy_net *net = NULL;
    struct policy *p;
    char err[512];

    cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_AUTO, &p, err, sizeof(err)), 0);
    cr_assert_eq(policy_compile(p, &topo, &net, err, sizeof(err)), 0, "%s", err);
    for (size_t a = 0; a < 4; a++) {
        uint64_t row = ~UINT64_C(0);
        char got[5] = "";
        policy_net_sees_row(net, a, &row);
        for (size_t b = 0; b < 4; b++) {
            got[b] = (row >> b) & 1 ? '1' : '0';
            cr_expect_eq((row >> b) & 1, policy_net_sees(net, a, b), "%zu sees %zu", a, b);
        }
        cr_expect_str_eq(got, want[a], "node %zu", a);
        cr_expect_eq(row >> 4, 0, "no bits past the last node");
    }
    policy_net_free(net);
    policy_free(p);
}
