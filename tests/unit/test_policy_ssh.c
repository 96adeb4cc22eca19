/* The policy's `ssh` section (policy_net_ssh) and `sshTests` (run by policy_compile). */
#include <criterion/criterion.h>
#include <string.h>

#include "policy/policy.h"

static const struct policy_user users[] = {
    { .id = 1, .name = "alice", .email = "alice@example.com" }, /* the tailnet's first user */
    { .id = 2, .name = "bob", .email = "bob@example.com" },
    { .id = 3, .name = "carol", .email = "carol@other.org" },
};

static const char *const server_tags[] = { "tag:server" };
static const char *const two_tags[] = { "tag:prod", "tag:db" };

enum { A1, A2, B1, C1, SRV, PROD, NNODES };

static const struct policy_node nodes[NNODES] = {
    [A1] = { .id = 1, .name = "a1", .user_id = 1, .ipv4 = "100.64.0.1",
             .ipv6 = "fd7a:115c:a1e0::1" },
    [A2] = { .id = 2, .name = "a2", .user_id = 1, .ipv4 = "100.64.0.2",
             .ipv6 = "fd7a:115c:a1e0::2" },
    [B1] = { .id = 3, .name = "b1", .user_id = 2, .ipv4 = "100.64.0.3",
             .ipv6 = "fd7a:115c:a1e0::3" },
    [C1] = { .id = 4, .name = "c1", .user_id = 3, .ipv4 = "100.64.0.4",
             .ipv6 = "fd7a:115c:a1e0::4" },
    [SRV] = { .id = 5, .name = "srv", .user_id = 1, .tags = server_tags, .ntags = 1,
              .ipv4 = "100.64.0.10", .ipv6 = "fd7a:115c:a1e0::a" },
    [PROD] = { .id = 6, .name = "prod", .user_id = 1, .tags = two_tags, .ntags = 2,
               .ipv4 = "100.64.0.11", .ipv6 = "fd7a:115c:a1e0::b" },
};

static const struct policy_topology topo = {
    .users = users, .nusers = 3, .nodes = nodes, .nnodes = NNODES,
};

#define HEAD                                                                                 \
    "{\"tagOwners\": {\"tag:server\": [\"alice@example.com\"], "                              \
    "\"tag:prod\": [\"alice@example.com\"]}, "                                                \
    "\"hosts\": {\"web\": \"100.64.0.10\", \"lan\": \"10.0.0.0/8\"}, "                        \
    "\"groups\": {\"group:ab\": [\"alice@example.com\", \"bob@example.com\"]}, "

#define ACCEPT                                                                               \
    "\"action\":{\"accept\":true,\"allowAgentForwarding\":true,"                              \
    "\"allowLocalPortForwarding\":true,\"allowRemotePortForwarding\":true}"
#define CHECK                                                                                \
    "\"action\":{\"holdAndDelegate\":\"https://unused/machine/ssh/action/$SRC_NODE_ID/to/"    \
    "$DST_NODE_ID?local_user=$LOCAL_USER\"}"
#define P(ip) "{\"nodeIP\":\"" ip "\"}"
#define ALICE P("100.64.0.1") "," P("100.64.0.2") "," P("fd7a:115c:a1e0::1") "," \
              P("fd7a:115c:a1e0::2")
#define BOB P("100.64.0.3") "," P("fd7a:115c:a1e0::3")

static int load(const char *rest, struct policy **p, char *err, size_t errsize)
{
    char text[4096];

    snprintf(text, sizeof(text), HEAD "%s", rest);
    return policy_load(text, strlen(text), POLICY_FORMAT_HUJSON, p, err, errsize);
}

/* Loads and compiles HEAD + rest; the load or compile result. */
static int build(const char *rest, struct policy_net **out, char *err, size_t errsize)
{
    struct policy *p;
    int rc;

    *out = NULL;
    if ((rc = load(rest, &p, err, errsize)) < 0)
        return rc;
    rc = policy_compile(p, &topo, out, err, errsize);
    policy_free(p);
    return rc;
}

static void expect_load_error(const char *rest, const char *want)
{
    struct policy *p = NULL;
    char err[512] = "";

    cr_assert_eq(load(rest, &p, err, sizeof(err)), -EINVAL, "accepted: %s", rest);
    cr_assert(strstr(err, want), "want \"%s\" in: %s", want, err);
}

static void expect_loads(const char *rest)
{
    struct policy *p = NULL;
    char err[512] = "";

    cr_assert_eq(load(rest, &p, err, sizeof(err)), 0, "%s: %s", rest, err);
    policy_free(p);
}

/* Node i's SSH rules for HEAD + rest must be exactly want. */
static void expect_ssh(const char *rest, size_t i, const char *want)
{
    struct policy_net *c;
    struct hs_buf b;
    char err[512] = "";

    cr_assert_eq(build(rest, &c, err, sizeof(err)), 0, "%s: %s", rest, err);
    hs_buf_init(&b, 1 << 20);
    cr_assert_eq(policy_net_ssh(c, i, &b), 0);
    cr_assert_str_eq(b.data, want, "node %s", nodes[i].name);
    hs_buf_free(&b);
    policy_net_free(c);
}

static void expect_compile_error(const char *rest, const char *want)
{
    struct policy_net *c;
    char err[512] = "";

    cr_assert_eq(build(rest, &c, err, sizeof(err)), -EINVAL, "compiled: %s", rest);
    cr_assert_null(c);
    cr_assert(strstr(err, want), "want \"%s\" in: %s", want, err);
}

#define RULE(fields) "\"ssh\": [{" fields "}]}"
#define BASIC "\"src\": [\"autogroup:member\"], \"dst\": [\"tag:server\"]"

Test(ssh_load, rejects_what_tailscale_rejects)
{
    static const struct {
        const char *rest, *want;
    } cases[] = {
        { RULE(BASIC ", \"users\": [\"root\"]"), "action must be specified" },
        { RULE("\"action\": \"\", " BASIC ", \"users\": [\"root\"]"), "action must be specified" },
        { RULE("\"action\": \"deny\", " BASIC ", \"users\": [\"root\"]"),
          "\"deny\" is not a valid action" },
        { RULE("\"action\": \"ACCEPT\", " BASIC ", \"users\": [\"root\"]"),
          "\"ACCEPT\" is not a valid action" },
        { RULE("\"action\": \"accept\", " BASIC), "users must be specified" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": null"), "users must be specified" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": []"), "users must be specified" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": [\"root\", \"\"]"),
          "user \"\" is not valid" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": [\" * \"]"),
          "user \"*\" is not valid" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": [\"root\"], \"acceptEnv\": [\"\"]"),
          "acceptEnv values cannot be empty" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], \"checkPeriod\": \"abc\""),
          "time: invalid duration \"abc\"" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], \"checkPeriod\": \"5\""),
          "time: missing unit in duration \"5\"" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], \"checkPeriod\": \"5y\""),
          "time: unknown unit \"y\" in duration \"5y\"" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], \"checkPeriod\": \"-1m\""),
          "checkPeriod -1m0s must be a positive duration" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"168h0m1s\""),
          "checkPeriod 168h0m1s is above the max (168h)" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"8.5d\""),
          "unknown unit \"d\"" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"200h\""),
          "checkPeriod 200h0m0s is above the max (168h)" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"168h0.0000001s\""),
          "checkPeriod 168h0m0.0000001s is above the max (168h)" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"-.5s\""),
          "checkPeriod -500ms must be a positive duration" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"-1.5us\""),
          "checkPeriod -1.5\xc2\xb5s must be a positive duration" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"9223372036854775808ns\""),
          "time: invalid duration \"9223372036854775808ns\"" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"1.\""),
          "time: missing unit in duration \"1.\"" },
        { RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \".s\""),
          "time: invalid duration \".s\"" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": [\"root\"], "
               "\"checkPeriod\": \"1h\""),
          "only valid with action \"check\"" },
        { "\"ssh\": [1]}", "must be an object" },
        { RULE("\"action\": \"accept\", \"src\": \"autogroup:member\", "
               "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
          "\"src\" must be a list of strings" },
        { RULE("\"action\": 1, " BASIC ", \"users\": [\"root\"]"), "action must be a string" },
        { RULE("\"action\": \"accept\", \"src\": [\"alice@example.com\"], \"dst\": [\"web\"], "
               "\"users\": [\"root\"]"),
          "invalid dst \"web\"" },
        { RULE("\"action\": \"accept\", \"src\": [\"alice@example.com\"], \"dst\": [\"lan\"], "
               "\"users\": [\"root\"]"),
          "invalid dst \"lan\"" },
        { RULE("\"action\": \"accept\", \"src\": [\"alice@example.com\"], "
               "\"dst\": [\"100.64.0.1\"], \"users\": [\"root\"]"),
          "invalid dst \"100.64.0.1\"" },
        { RULE("\"action\": \"accept\", \"src\": [\"alice@example.com\"], \"dst\": [\"*\"], "
               "\"users\": [\"root\"]"),
          "wildcard" },
        { RULE("\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:server\"], "
               "\"users\": [\"root\"]"),
          "SSH sources" },
        { RULE("\"action\": \"accept\", \"src\": [\"tag:prod\"], "
               "\"dst\": [\"alice@example.com\"], \"users\": [\"root\"]"),
          "tags in SSH source cannot access user-owned devices" },
        { RULE("\"action\": \"accept\", \"src\": [\"group:ab\"], "
               "\"dst\": [\"alice@example.com\"], \"users\": [\"root\"]"),
          "requires source to contain only that same user" },
        { RULE("\"action\": \"accept\", \"src\": [\"tag:prod\"], \"dst\": [\"autogroup:self\"], "
               "\"users\": [\"root\"]"),
          "autogroup:self destination requires source" },
        { RULE("\"action\": \"accept\", \"src\": [\"autogroup:tagged\"], "
               "\"dst\": [\"autogroup:member\"], \"users\": [\"root\"]"),
          "cannot access autogroup:member" },
        { RULE("\"action\": \"accept\", \"src\": [\"tag:nope\"], \"dst\": [\"tag:server\"], "
               "\"users\": [\"root\"]"),
          "tag not found" },
        { RULE("\"action\": \"accept\", " BASIC ", \"users\": [\"root\"], \"recorder\": []"),
          "unknown field \"recorder\"" },
        { "\"ssh\": [], \"sshTests\": [{\"src\": \"alice@example.com\", "
          "\"dst\": [\"100.64.0.0/24\"], \"accept\": [\"root\"]}]}",
          "SSH tests dst contains disallowed element \"100.64.0.0/24\"" },
        { "\"ssh\": [], \"sshTests\": [{\"src\": \"alice@example.com\", "
          "\"dst\": [\"tag:server:22\"], \"accept\": [\"root\"]}]}",
          "SSH tests dst contains unknown tag \"tag:server:22\"" },
        { "\"ssh\": [], \"sshTests\": [{\"src\": \"alice@example.com\", \"dst\": [], "
          "\"accept\": [\"root\"]}]}",
          "at least one dst" },
        { "\"ssh\": [], \"sshTests\": [{\"src\": \" \", \"dst\": [\"tag:server\"], "
          "\"accept\": [\"root\"]}]}",
          "non-empty src" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_load_error(cases[i].rest, cases[i].want);
}

Test(ssh_load, accepts_what_tailscale_accepts)
{
    expect_loads(RULE("\"action\": \" accept\", \"src\": [\" alice@example.com\"], "
                      "\"dst\": [\"tag:server \"], \"users\": [\"root\"]"));
    expect_loads(RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
                      "\"checkPeriod\": \"0s\""));
    expect_loads(RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
                      "\"checkPeriod\": \"168h\""));
    expect_loads(RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
                      "\"checkPeriod\": \"always\""));
    expect_loads(RULE("\"action\": \"check\", " BASIC ", \"users\": [\"root\"], "
                      "\"checkPeriod\": \"1.5h30m\", \"acceptEnv\": null"));
    expect_loads(RULE("\"action\": \"accept\", \"src\": [], \"dst\": [], \"users\": [\"x\"]"));
    expect_loads(RULE("\"action\": \"accept\", \"src\": [\"alice@example.com\"], "
                      "\"dst\": [\"alice@example.com\"], \"users\": [\"root\"]"));
    expect_loads("\"ssh\": null}");
}

Test(ssh_compile, accept_users_and_nonroot)
{
    const char *rest = RULE("\"action\": \"accept\", \"src\": [\"group:ab\"], "
                            "\"dst\": [\"tag:server\"], "
                            "\"users\": [\"ubuntu\", \"autogroup:nonroot\", \"ubuntu\"]");

    expect_ssh(rest, SRV,
               "[{\"principals\":[" P("100.64.0.1") "," P("100.64.0.2") "," P("100.64.0.3") ","
               P("fd7a:115c:a1e0::1") "," P("fd7a:115c:a1e0::2") "," P("fd7a:115c:a1e0::3")
               "],\"sshUsers\":{\"*\":\"=\",\"root\":\"\",\"ubuntu\":\"ubuntu\"}," ACCEPT "}]");
    expect_ssh(rest, A1, "[]");
    expect_ssh(rest, PROD, "[]");
}

Test(ssh_compile, check_rules_first_with_env)
{
    expect_ssh("\"ssh\": [{\"action\": \"accept\", \"src\": [\"bob@example.com\"], "
               "\"dst\": [\"tag:prod\"], \"users\": [\"root\"], \"acceptEnv\": [\"GIT_*\"]}, "
               "{\"action\": \"check\", \"src\": [\"tag:server\"], \"dst\": [\"tag:prod\"], "
               "\"users\": [\"root\"], \"checkPeriod\": \"12h\"}]}",
               PROD,
               "[{\"principals\":[" P("100.64.0.10") "," P("fd7a:115c:a1e0::a")
               "],\"sshUsers\":{\"root\":\"root\"}," CHECK "},"
               "{\"principals\":[" BOB "],\"sshUsers\":{\"root\":\"root\"}," ACCEPT
               ",\"acceptEnv\":[\"GIT_*\"]}]");
}

Test(ssh_compile, tagged_sources_once_per_tag)
{
    expect_ssh(RULE("\"action\": \"accept\", \"src\": [\"tag:prod\"], "
                    "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
               SRV,
               "[{\"principals\":[" P("100.64.0.11") "," P("100.64.0.11") ","
               P("fd7a:115c:a1e0::b") "," P("fd7a:115c:a1e0::b")
               "],\"sshUsers\":{\"root\":\"root\"}," ACCEPT "}]");
}

Test(ssh_compile, autogroup_self)
{
    const char *rest = RULE("\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
                            "\"dst\": [\"autogroup:self\"], \"users\": [\"root\"]");

    expect_ssh(rest, A2, "[{\"principals\":[" ALICE "],\"sshUsers\":{\"root\":\"root\"},"
                         ACCEPT "}]");
    expect_ssh(rest, B1, "[{\"principals\":[" BOB "],\"sshUsers\":{\"root\":\"root\"},"
                         ACCEPT "}]");
    expect_ssh(rest, SRV, "[]");
}

/* Per source user: the common rule, then the user's local part; a source that is not a
 * destination still gets the rule for itself. */
Test(ssh_compile, localpart_split_per_user)
{
    const char *rest = RULE("\"action\": \"accept\", \"src\": [\"group:ab\"], "
                            "\"dst\": [\"tag:server\"], "
                            "\"users\": [\"localpart:*@example.com\", \"root\"]");

    expect_ssh(rest, SRV,
               "[{\"principals\":[" ALICE "],\"sshUsers\":{\"root\":\"root\"}," ACCEPT "},"
               "{\"principals\":[" ALICE "],\"sshUsers\":{\"alice\":\"alice\"}," ACCEPT "},"
               "{\"principals\":[" BOB "],\"sshUsers\":{\"root\":\"root\"}," ACCEPT "},"
               "{\"principals\":[" BOB "],\"sshUsers\":{\"bob\":\"bob\"}," ACCEPT "}]");
    expect_ssh(rest, B1,
               "[{\"principals\":[" BOB "],\"sshUsers\":{\"root\":\"root\"}," ACCEPT "},"
               "{\"principals\":[" BOB "],\"sshUsers\":{\"bob\":\"bob\"}," ACCEPT "}]");
    expect_ssh(rest, C1, "[]");
}

Test(ssh_compile, user_domain_sources)
{
    expect_ssh(RULE("\"action\": \"accept\", \"src\": [\"user:*@example.com\"], "
                    "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
               SRV,
               "[{\"principals\":[" P("100.64.0.1") "," P("100.64.0.2") "," P("100.64.0.3") ","
               P("fd7a:115c:a1e0::1") "," P("fd7a:115c:a1e0::2") "," P("fd7a:115c:a1e0::3")
               "],\"sshUsers\":{\"root\":\"root\"}," ACCEPT "}]");
}

/* Only the tailnet's own domain (its first user's) may follow *@, compared exactly. */
Test(ssh_compile, foreign_domains_refused)
{
    expect_compile_error(RULE("\"action\": \"accept\", " BASIC ", "
                              "\"users\": [\"localpart:*@other.org\"]"),
                         "other.org is not associated with this Tailnet");
    expect_compile_error(RULE("\"action\": \"accept\", " BASIC ", "
                              "\"users\": [\"localpart:*@EXAMPLE.COM\"]"),
                         "EXAMPLE.COM is not associated");
    expect_compile_error(RULE("\"action\": \"accept\", \"src\": [\"user:*@other.org\"], "
                              "\"dst\": [\"tag:server\"], \"users\": [\"root\"]"),
                         "other.org is not associated");
    /* Not the canonical form: a plain login name. */
    expect_ssh(RULE("\"action\": \"accept\", \"src\": [\"bob@example.com\"], "
                    "\"dst\": [\"tag:server\"], \"users\": [\"localpart:*@\"]"),
               SRV,
               "[{\"principals\":[" BOB "],\"sshUsers\":{\"localpart:*@\":\"localpart:*@\","
               "\"root\":\"\"}," ACCEPT "}]");
}

#define TESTED(tests)                                                                        \
    "\"ssh\": [{\"action\": \"accept\", \"src\": [\"bob@example.com\"], "                     \
    "\"dst\": [\"tag:server\"], \"users\": [\"root\"]}, "                                     \
    "{\"action\": \"check\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"], " \
    "\"users\": [\"autogroup:nonroot\"]}], \"sshTests\": [" tests "]}"

Test(ssh_tests, pass)
{
    struct policy_net *c;
    char err[512] = "";

    cr_assert_eq(build(TESTED("{\"src\": \"bob@example.com\", \"dst\": [\"tag:server\", "
                              "\"100.64.0.10\"], \"accept\": [\"root\"], \"deny\": [\"ubuntu\"]},"
                              "{\"src\": \"alice@example.com\", \"dst\": [\"autogroup:self\"], "
                              "\"check\": [\"ubuntu\"], \"deny\": [\"root\"]},"
                              "{\"src\": \"alice@example.com\", \"dst\": [\"bob@example.com\"], "
                              "\"deny\": [\"ubuntu\"]}"),
                       &c, err, sizeof(err)),
                 0, "%s", err);
    policy_net_free(c);
}

Test(ssh_tests, failures_name_the_test)
{
    static const struct {
        const char *rest, *want;
    } cases[] = {
        { TESTED("{\"src\": \"bob@example.com\", \"dst\": [\"tag:server\"], "
                 "\"deny\": [\"root\"]}"),
          "deny root -> srv: expected DENIED, got ALLOWED" },
        { TESTED("{\"src\": \"alice@example.com\", \"dst\": [\"tag:server\"], "
                 "\"accept\": [\"root\"]}"),
          "accept root -> srv: expected ALLOWED, got DENIED" },
        { TESTED("{\"src\": \"bob@example.com\", \"dst\": [\"tag:server\"], "
                 "\"check\": [\"root\"]}"),
          "expected ALLOWED via check, got ALLOWED via accept" },
        { TESTED("{\"src\": \"bob@example.com\", \"dst\": [\"autogroup:self\"], "
                 "\"accept\": [\"root\"]}"),
          "accept root -> b1" },
        /* Tailscale fails a test aimed at a node's IPv6 address. */
        { TESTED("{\"src\": \"bob@example.com\", \"dst\": [\"fd7a:115c:a1e0::a\"], "
                 "\"accept\": [\"root\"]}"),
          "resolved to no nodes" },
        { TESTED("{\"src\": \"bob@example.com\", \"dst\": [\"tag:server\"]}"),
          "no accept, deny, or check assertions" },
        { TESTED("{\"src\": \"100.64.0.99\", \"dst\": [\"tag:server\"], "
                 "\"accept\": [\"root\"]}"),
          "100.64.0.99: accept root -> srv" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_compile_error(cases[i].rest, "test(s) failed");
        expect_compile_error(cases[i].rest, cases[i].want);
    }
}

Test(ssh_compile, no_policy_no_ssh)
{
    struct policy_net *c;
    struct hs_buf b;
    char err[128];

    cr_assert_eq(policy_compile(NULL, &topo, &c, err, sizeof(err)), 0);
    hs_buf_init(&b, 64);
    cr_assert_eq(policy_net_ssh(c, SRV, &b), 0);
    cr_assert_str_eq(b.data, "[]");
    hs_buf_reset(&b);
    cr_assert_eq(policy_net_ssh(c, NNODES, &b), 0);
    cr_assert_str_eq(b.data, "[]");
    hs_buf_free(&b);
    policy_net_free(c);
}

Test(ssh_compile, output_limit)
{
    struct policy_net *c;
    struct hs_buf b;
    char err[512] = "";

    cr_assert_eq(build(RULE("\"action\": \"accept\", " BASIC ", \"users\": [\"root\"]"), &c, err,
                       sizeof(err)),
                 0, "%s", err);
    hs_buf_init(&b, 64);
    cr_assert_eq(policy_net_ssh(c, SRV, &b), -E2BIG);
    cr_assert_eq(b.len, 0);
    hs_buf_free(&b);
    policy_net_free(c);
}
