/* The compiler on hostile policies: whatever loads is compiled for a small tailnet (users,
 * tagged and untagged nodes, a subnet router, an exit node) and asked every question the
 * server asks (filter, SSH, capabilities, peers, routes), then recompiled after one node
 * changed, and the answers must agree with a full compile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Provider groups too: a group:eng or group:ops the input does not define is theirs. */
static const char *const g_alice[] = { "eng" }, *const g_bob[] = { "ops", "eng" };
static const struct policy_user users[] = {
    { .id = 1, .name = "alice", .email = "alice@example.com", .groups = g_alice, .ngroups = 1 },
    { .id = 2, .name = "bob", .email = "bob@example.org", .groups = g_bob, .ngroups = 2 },
};
static const char *const t_server[] = { "tag:server" }, *const t_router[] = { "tag:router" },
                         *const t_exit[] = { "tag:exit" };
static const char *const r_lan[] = { "10.33.0.0/16" }, *const r_exit[] = { "0.0.0.0/0", "::/0" };

static struct policy_node nodes[] = {
    { .id = 1, .name = "a1", .user_id = 1, .ipv4 = "100.64.0.1", .ipv6 = "fd7a:115c:a1e0::1" },
    { .id = 2, .name = "a2", .user_id = 1, .ipv4 = "100.64.0.2", .ipv6 = "fd7a:115c:a1e0::2" },
    { .id = 3, .name = "b1", .user_id = 2, .ipv4 = "100.64.0.3", .ipv6 = "fd7a:115c:a1e0::3" },
    { .id = 4, .name = "srv", .tags = t_server, .ntags = 1, .ipv4 = "100.64.0.4",
      .ipv6 = "fd7a:115c:a1e0::4" },
    { .id = 5, .name = "rtr", .tags = t_router, .ntags = 1, .ipv4 = "100.64.0.5",
      .ipv6 = "fd7a:115c:a1e0::5", .routes = r_lan, .nroutes = 1, .approved = r_lan,
      .napproved = 1 },
    { .id = 6, .name = "exit", .tags = t_exit, .ntags = 1, .ipv4 = "100.64.0.6",
      .ipv6 = "fd7a:115c:a1e0::6", .routes = r_exit, .nroutes = 2 },
};
#define NNODES (sizeof(nodes) / sizeof(nodes[0]))

static void answers(const struct policy_net *c, size_t n, struct hs_buf *out)
{
    const char *routes[8];

    hs_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        policy_net_filter(c, i, out);
        policy_net_ssh(c, i, out);
        policy_net_capmap(c, i, out);
        for (size_t j = 0; j < n; j++) {
            size_t k = policy_net_peer_routes(c, i, j, routes, 8);
            hs_buf_appendf(out, "%d%zu", policy_net_sees(c, i, j), k);
            for (size_t r = 0; r < k && r < 8; r++)
                hs_buf_puts(out, routes[r]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct policy_topology t = { .users = users, .nusers = 2, .nodes = nodes, .nnodes = NNODES };
    struct policy *p;
    struct policy_net *net, *again, *full;
    struct hs_buf a, b;
    uint64_t changed = 3;
    char err[512];

    if (policy_load((const char *)data, size, POLICY_FORMAT_AUTO, &p, err, sizeof(err)) < 0)
        return 0;
    if (policy_compile(p, &t, &net, err, sizeof(err)) == 0) {
        policy_net_check_users(net, err, sizeof(err));
        nodes[2].tags = t_server; /* b1 becomes a tagged server */
        nodes[2].ntags = 1;
        policy_recompile(net, &t, &changed, 1, &again);
        policy_recompile(net, &t, NULL, 0, &full);
        hs_buf_init(&a, 64u << 20);
        hs_buf_init(&b, 64u << 20);
        answers(again, NNODES, &a);
        answers(full, NNODES, &b);
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
            abort(); /* a recompile must answer as a full compile does */
        hs_buf_free(&a);
        hs_buf_free(&b);
        nodes[2].tags = NULL;
        nodes[2].ntags = 0;
        policy_net_free(again);
        policy_net_free(full);
        policy_net_free(net);
    }
    policy_free(p);
    return 0;
}
