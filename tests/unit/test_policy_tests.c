/* The policy's `tests` section (run by policy_compile) and `nodeAttrs` (policy_net_capmap). */
#include <criterion/criterion.h>
#include <string.h>

#include "policy/policy.h"

static const struct policy_user users[] = {
    { .id = 1, .name = "alice", .email = "alice@example.com" },
    { .id = 2, .name = "bob", .email = "bob@example.com" },
};

static const char *const server_tags[] = { "tag:server" };
static const char *const router_tags[] = { "tag:router" };
static const char *const router_routes[] = { "10.33.0.0/16" };

enum { A1, A2, B1, SRV, RTR, NNODES };

static const struct policy_node nodes[NNODES] = {
    [A1] = { .id = 1, .name = "a1", .user_id = 1, .ipv4 = "100.64.0.1",
             .ipv6 = "fd7a:115c:a1e0::1" },
    [A2] = { .id = 2, .name = "a2", .user_id = 1, .ipv4 = "100.64.0.2",
             .ipv6 = "fd7a:115c:a1e0::2" },
    [B1] = { .id = 3, .name = "b1", .user_id = 2, .ipv4 = "100.64.0.3",
             .ipv6 = "fd7a:115c:a1e0::3" },
    [SRV] = { .id = 4, .name = "srv", .user_id = 1, .tags = server_tags, .ntags = 1,
              .ipv4 = "100.64.0.10", .ipv6 = "fd7a:115c:a1e0::a" },
    [RTR] = { .id = 5, .name = "rtr", .user_id = 1, .tags = router_tags, .ntags = 1,
              .ipv4 = "100.64.0.11", .ipv6 = "fd7a:115c:a1e0::b", .routes = router_routes,
              .nroutes = 1, .approved = router_routes, .napproved = 1 },
};

static const struct policy_topology topo = {
    .users = users, .nusers = 2, .nodes = nodes, .nnodes = NNODES,
};

#define HEAD                                                                                 \
    "{\"tagOwners\": {\"tag:server\": [\"alice@example.com\"], "                              \
    "\"tag:router\": [\"alice@example.com\"], \"tag:idle\": []}, "                             \
    "\"hosts\": {\"web\": \"100.64.0.10\", \"outside\": \"192.0.2.7\", "                      \
    "\"lan\": \"10.33.0.0/16\"}, "                                                            \
    "\"groups\": {\"group:both\": [\"alice@example.com\", \"bob@example.com\"]}, "

/* Loads and compiles text (HEAD + the rest); the load or compile result. */
static int build(const char *rest, struct policy_net **out, char *err, size_t errsize)
{
    char text[4096];
    struct policy *p;
    int rc;

    snprintf(text, sizeof(text), HEAD "%s", rest);
    *out = NULL;
    if ((rc = policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, &p, err, errsize)) < 0)
        return rc;
    rc = policy_compile(p, &topo, out, err, errsize);
    policy_free(p);
    return rc;
}

static void expect_pass(const char *rest)
{
    struct policy_net *c;
    char err[512] = "";

    cr_assert_eq(build(rest, &c, err, sizeof(err)), 0, "%s: %s", rest, err);
    policy_net_free(c);
}

/* Fails with "test(s) failed" and, when want is set, a message that names it. */
static void expect_fail(const char *rest, const char *want)
{
    struct policy_net *c;
    char err[512] = "";

    cr_assert_eq(build(rest, &c, err, sizeof(err)), -EINVAL, "%s", rest);
    cr_assert_null(c);
    cr_assert(strncmp(err, "test(s) failed", 14) == 0, "%s", err);
    if (want)
        cr_assert(strstr(err, want), "want \"%s\" in: %s", want, err);
}

#define ACL_ALICE_WEB80                                                                      \
    "\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@example.com\"], "                  \
    "\"dst\": [\"web:80\"]}], "

Test(policy_tests, accept_and_deny_pass)
{
    /* "web" is the server's IPv4 address only: its IPv6 address stays closed. */
    expect_pass(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"alice@example.com\", "
                                "\"accept\": [\"web:80\", \"tag:server:80\", \"100.64.0.10:80\"], "
                                "\"deny\": [\"web:443\", \"bob@example.com:80\", "
                                "\"[fd7a:115c:a1e0::a]:80\"]}]}");
    /* The same test twice is fine. */
    expect_pass(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"alice@example.com\", "
                                "\"accept\": [\"web:80\"]}, {\"src\": \"alice@example.com\", "
                                "\"accept\": [\"web:80\"]}]}");
}

Test(policy_tests, failing_verdicts_name_the_test)
{
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"alice@example.com\", "
                                "\"accept\": [\"web:80\"]}, {\"src\": \"alice@example.com\", "
                                "\"accept\": [\"web:443\"]}]}",
                "tests[1]: alice@example.com -> web:443: expected accept, got deny");
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"alice@example.com\", "
                                "\"deny\": [\"web:80\"]}]}",
                "expected deny, got accept");
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"bob@example.com\", "
                                "\"accept\": [\"web:80\"]}]}",
                "bob@example.com -> web:80");
}

Test(policy_tests, every_source_address_must_get_through)
{
    /* group:both has bob, whom the rule leaves out: not accepted, so a deny holds. */
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"group:both\", "
                                "\"accept\": [\"web:80\"]}]}",
                "expected accept");
    expect_pass(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"group:both\", \"deny\": [\"web:80\"]}]}");
}

Test(policy_tests, shapes_refused_at_load)
{
    static const char *const bad[] = {
        "{\"src\": \"alice@example.com\", \"accept\": [\"*:*\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web:80-90\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web:80,443\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web:*\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web:99999\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web:-1\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"lan:22\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"10.33.0.0/16:22\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"100.64.0.10/32:22\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"autogroup:internet:443\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"autogroup:self:22\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"tag:nope:22\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"group::22\"]}",
        "{\"src\": \"alice@example.com\", \"proto\": \"icmp\", \"accept\": [\"web:80\"]}",
        "{\"src\": \"alice@example.com\", \"proto\": \"bogus\", \"accept\": [\"web:80\"]}",
        "{\"src\": \"alice@example.com\"}",
        "{\"src\": \"alice@example.com\", \"accept\": []}",
        "{\"src\": \"alice@example.com\", \"accept\": \"web:80\"}",
        "{\"src\": \"\", \"accept\": [\"web:80\"]}",
        "{\"accept\": [\"web:80\"]}",
        "{\"src\": \"group:\", \"accept\": [\"web:80\"]}",
        "{\"src\": \"autogroup:self\", \"accept\": [\"web:80\"]}",
        "{\"src\": \"alice@example.com\", \"accept\": [\"web:80\"], \"extra\": 1}",
        "\"alice@example.com\"",
    };
    char rest[512], text[4096], err[512];
    struct policy *p;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(rest, sizeof(rest), ACL_ALICE_WEB80 "\"tests\": [%s]}", bad[i]);
        snprintf(text, sizeof(text), HEAD "%s", rest);
        cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, &p, err,
                                 sizeof(err)), -EINVAL, "%s", bad[i]);
        cr_assert(strncmp(err, "test(s) failed: tests[0]", 24) == 0, "%s: %s", bad[i], err);
    }
}

Test(policy_tests, unknown_names_fail_at_compile)
{
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"ghost@nowhere.invalid\", "
                                "\"accept\": [\"web:80\"]}]}",
                "names no user");
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"phantomhost\", "
                                "\"accept\": [\"web:80\"]}]}",
                "names no user");
    expect_fail(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"alice@example.com\", "
                                "\"deny\": [\"phantomhost:80\"]}]}",
                "names no user");
}

Test(policy_tests, protocols)
{
    const char *tcp = "\"acls\": [{\"action\": \"accept\", \"proto\": \"tcp\", "
                      "\"src\": [\"alice@example.com\"], \"dst\": [\"web:80\"]}], ";
    char rest[1024];

    snprintf(rest, sizeof(rest), "%s\"tests\": [{\"src\": \"alice@example.com\", "
                                 "\"proto\": \"tcp\", \"accept\": [\"web:80\"]}, "
                                 "{\"src\": \"alice@example.com\", \"proto\": \"6\", "
                                 "\"accept\": [\"web:80\"]}, "
                                 "{\"src\": \"alice@example.com\", \"accept\": [\"web:80\"]}, "
                                 "{\"src\": \"alice@example.com\", \"proto\": \"udp\", "
                                 "\"deny\": [\"web:80\"]}]}", tcp);
    expect_pass(rest);
    snprintf(rest, sizeof(rest), "%s\"tests\": [{\"src\": \"alice@example.com\", "
                                 "\"proto\": \"17\", \"accept\": [\"web:80\"]}]}", tcp);
    expect_fail(rest, "(udp): expected accept");
    /* A rule without proto is TCP, UDP and ICMP: SCTP does not get through. */
    expect_pass(ACL_ALICE_WEB80 "\"tests\": [{\"src\": \"alice@example.com\", "
                                "\"proto\": \"sctp\", \"deny\": [\"web:80\"]}]}");
}

Test(policy_tests, grants)
{
    expect_pass("\"grants\": [{\"src\": [\"tag:server\"], \"dst\": [\"bob@example.com\"], "
                "\"ip\": [\"udp:53\", \"tcp:22\"]}], "
                "\"tests\": [{\"src\": \"tag:server\", \"proto\": \"udp\", "
                "\"accept\": [\"bob@example.com:53\"], \"deny\": [\"bob@example.com:22\"]}, "
                "{\"src\": \"tag:server\", \"accept\": [\"100.64.0.3:22\"], "
                "\"deny\": [\"alice@example.com:22\"]}]}");
    /* An address no node has is reachable when a rule names it. */
    expect_pass("\"grants\": [{\"src\": [\"alice@example.com\"], \"dst\": [\"outside\"], "
                "\"ip\": [\"tcp:22\"]}], \"tests\": [{\"src\": \"alice@example.com\", "
                "\"accept\": [\"outside:22\", \"192.0.2.7:22\"]}]}");
    /* App-only grants open no ports. */
    expect_fail("\"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"], "
                "\"app\": {\"example.com/cap/x\": [{}]}}], "
                "\"tests\": [{\"src\": \"alice@example.com\", \"accept\": [\"web:80\"]}]}",
                "expected accept");
}

Test(policy_tests, subnet_routes)
{
    expect_pass("\"acls\": [{\"action\": \"accept\", \"src\": [\"bob@example.com\"], "
                "\"dst\": [\"lan:22\"]}], \"tests\": [{\"src\": \"bob@example.com\", "
                "\"accept\": [\"10.33.1.2:22\"], \"deny\": [\"10.34.0.1:22\", \"100.64.0.11:22\"]}]}");
}

Test(policy_tests, autogroup_self)
{
    const char *self = "\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                       "\"dst\": [\"autogroup:self:22\"]}], ";
    char rest[1024];

    snprintf(rest, sizeof(rest), "%s\"tests\": [{\"src\": \"alice@example.com\", "
                                 "\"accept\": [\"alice@example.com:22\", \"100.64.0.2:22\"], "
                                 "\"deny\": [\"bob@example.com:22\", \"tag:server:22\", "
                                 "\"alice@example.com:23\"]}, {\"src\": \"100.64.0.3\", "
                                 "\"accept\": [\"bob@example.com:22\"], "
                                 "\"deny\": [\"a1:22\"]}]}", self);
    /* "a1" is no host or user: the second test fails on it, not on a verdict. */
    expect_fail(rest, "tests[1]: 100.64.0.3 -> a1:22: the destination names no user or host");
    snprintf(rest, sizeof(rest), "%s\"tests\": [{\"src\": \"alice@example.com\", "
                                 "\"accept\": [\"alice@example.com:22\", \"100.64.0.2:22\"], "
                                 "\"deny\": [\"bob@example.com:22\", \"tag:server:22\", "
                                 "\"alice@example.com:23\"]}, {\"src\": \"100.64.0.3\", "
                                 "\"accept\": [\"bob@example.com:22\"], "
                                 "\"deny\": [\"100.64.0.1:22\"]}, {\"src\": \"tag:server\", "
                                 "\"deny\": [\"alice@example.com:22\"]}]}", self);
    expect_pass(rest);
}

Test(policy_tests, no_rules_allow_all)
{
    expect_pass("\"tests\": [{\"src\": \"tag:server\", \"accept\": [\"bob@example.com:9\"]}]}");
    expect_fail("\"tests\": [{\"src\": \"tag:server\", \"deny\": [\"bob@example.com:9\"]}]}",
                "expected deny, got accept");
    /* An empty acls list denies everything. */
    expect_pass("\"acls\": [], \"tests\": [{\"src\": \"tag:server\", "
                "\"deny\": [\"bob@example.com:9\"]}]}");
}

Test(policy_tests, source_without_nodes_fails)
{
    expect_fail("\"acls\": [], \"tests\": [{\"src\": \"tag:idle\", \"deny\": [\"web:80\"]}]}",
                "has no addresses");
}

/* ---- nodeAttrs ---- */

/* Node i's capabilities as JSON text (static buffer). */
static const char *capmap(const struct policy_net *c, size_t i)
{
    static char text[1024];
    struct hs_buf b;

    hs_buf_init(&b, sizeof(text) - 1);
    cr_assert_eq(policy_net_capmap(c, i, &b), 0);
    hs_strlcpy(text, b.data ? b.data : "", sizeof(text));
    hs_buf_free(&b);
    return text;
}

Test(node_attrs, targets_and_values)
{
    struct policy_net *c;
    char err[512] = "";

    cr_assert_eq(build("\"nodeAttrs\": ["
                       "{\"target\": [\"tag:server\"], \"attr\": [\"funnel\", \"nextdns:abc\"]},"
                       "{\"target\": [\"alice@example.com\", \"100.64.0.11/32\"], "
                       "\"attr\": [\"drive:access\"]},"
                       "{\"target\": [\"autogroup:member\"], \"attr\": [\"drive:share\"]},"
                       "{\"target\": [\"*\"], \"attr\": [\"magicdns-aaaa\"]},"
                       "{\"target\": [\"group:both\"]},"
                       "{\"target\": [], \"attr\": [\"never\"]},"
                       "{\"target\": [\"tag:server\"], \"attr\": [\"nextdns:abc\"]}]}",
                       &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(capmap(c, SRV),
                     "{\"funnel\":null,"
                     "\"https://tailscale.com/cap/funnel-ports?ports=443,8443,10000\":null,"
                     "\"https://tailscale.com/cap/warn-funnel-no-https\":null,"
                     "\"magicdns-aaaa\":null,\"nextdns:abc\":null}");
    cr_assert_str_eq(capmap(c, A1),
                     "{\"drive:access\":null,\"drive:share\":null,\"magicdns-aaaa\":null}");
    cr_assert_str_eq(capmap(c, B1), "{\"drive:share\":null,\"magicdns-aaaa\":null}");
    cr_assert_str_eq(capmap(c, RTR), "{\"drive:access\":null,\"magicdns-aaaa\":null}");
    policy_net_free(c);
}

Test(node_attrs, randomize_client_port)
{
    struct policy_net *c;
    char err[512] = "";

    cr_assert_eq(build("\"randomizeClientPort\": true, \"nodeAttrs\": [{\"target\": "
                       "[\"tag:server\"], \"attr\": [\"disable-captive-portal-detection\"]}]}",
                       &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(capmap(c, SRV), "{\"disable-captive-portal-detection\":null,"
                                     "\"randomize-client-port\":null}");
    cr_assert_str_eq(capmap(c, B1), "{\"randomize-client-port\":null}");
    policy_net_free(c);
    cr_assert_eq(build("\"randomizeClientPort\": false}", &c, err, sizeof(err)), 0);
    cr_assert_str_eq(capmap(c, B1), "{}");
    cr_assert_eq(policy_net_capmap(c, NNODES, &(struct hs_buf){ 0 }), -EINVAL);
    policy_net_free(c);
}

Test(node_attrs, no_policy_no_caps)
{
    struct policy_net *c;
    char err[128];

    cr_assert_eq(policy_compile(NULL, &topo, &c, err, sizeof(err)), 0);
    cr_assert_str_eq(capmap(c, A1), "{}");
    policy_net_free(c);
}

Test(node_attrs, refused)
{
    static const struct {
        const char *rest, *want;
    } bad[] = {
        { "\"nodeAttrs\": [{\"target\": [\"autogroup:admin\"], "
          "\"ipPool\": [\"100.100.100.0/24\"]}]}",
          "IPPool(100.100.100.0/24): network within reserved range" },
        { "\"nodeAttrs\": [{\"target\": [\"*\"], \"ipPool\": [\"100.115.92.0/24\"]}]}",
          "reserved range" },
        { "\"nodeAttrs\": [{\"target\": [\"*\"], \"ipPool\": [\"10.0.0.0/8\"]}]}",
          "100.64.0.0/10" },
        { "\"nodeAttrs\": [{\"target\": [\"*\"], \"ipPool\": [\"100.85.0.0/16\"]}]}",
          "not supported" },
        { "\"nodeAttrs\": [{\"target\": [\"tag:undefined\"], \"attr\": [\"funnel\"]}]}",
          "tag not found: \"tag:undefined\"" },
        { "\"nodeAttrs\": [{\"target\": [\"autogroup:self\"], \"attr\": [\"x\"]}]}",
          "autogroup:self" },
        { "\"nodeAttrs\": [{\"target\": [\"autogroup:internet\"], \"attr\": [\"x\"]}]}",
          "autogroup:internet" },
        { "\"nodeAttrs\": [{\"target\": [\"autogroup:owner\"], \"attr\": [\"x\"]}]}",
          "roles" },
        { "\"nodeAttrs\": [{\"target\": [\"*\"], \"attr\": [\"x\"], \"app\": {}}]}",
          "unknown field \"app\"" },
        { "\"nodeAttrs\": [{\"target\": \"*\", \"attr\": [\"x\"]}]}", "lists of strings" },
        { "\"nodeAttrs\": [{\"target\": [\"*\"], \"attr\": [\"\"]}]}", "empty attr" },
        { "\"nodeAttrs\": [7]}", "object" },
        { "\"randomizeClientPort\": \"yes\"}", "randomizeClientPort" },
    };
    char text[4096], err[512];
    struct policy *p;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), HEAD "%s", bad[i].rest);
        cr_assert_eq(policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, &p, err,
                                 sizeof(err)), -EINVAL, "%s", bad[i].rest);
        cr_assert(strstr(err, bad[i].want), "want \"%s\" in: %s", bad[i].want, err);
    }
}
