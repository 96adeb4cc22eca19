/* debug policy: compiles a policy for a tailnet described in a file and prints what every node
 * would be sent. Offline: no server, no configuration, no database. The topology file is the
 * conformance corpus's shape (shared/testdata/policy-conformance/README.md):
 *
 *   {"users": [{"name": "odin", "email": "odin@example.com"}, ...],
 *    "nodes": {"squirtle": {"user": "odin", "tags": [...], "ipv4": "...", "ipv6": "...",
 *                           "routable_ips": [...], "approved_routes": [...]}, ...}}
 *
 * Users are numbered in file order, nodes by their optional "id" (the order they registered
 * in), then by name (id = index + 1); a node's `user` is a user *name*, absent for a tagged
 * node. Output lists nodes and peers by name. With -o json the answer is one object keyed by
 * node name, in the corpus's `expect` shape, so that tests/system/policy_conformance.py can
 * compare it. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"
#include "policy/policy.h"

#define CLI_MAX_TOPOLOGY (16u << 20) /* topology file */

struct topo {
    json_t *doc; /* owns every string the arrays below point to */
    struct policy_user *users;
    size_t nusers;
    struct policy_node *nodes; /* by id, then name */
    size_t nnodes;
    size_t *by_name; /* node indexes in name order, for output */
};

static void topo_fini(struct topo *t)
{
    for (size_t i = 0; t->nodes && i < t->nnodes; i++) {
        free((void *)t->nodes[i].tags);
        free((void *)t->nodes[i].routes);
        free((void *)t->nodes[i].approved);
    }
    free(t->nodes);
    free(t->by_name);
    free(t->users);
    json_decref(t->doc);
    *t = (struct topo){ 0 };
}

/* An optional array of strings: absent or null gives an empty list. The pointers borrow
 * from the JSON document. */
static int str_array(const json_t *obj, const char *key, const char *const **out, size_t *n)
{
    const json_t *arr = json_object_get(obj, key);
    const char **v;
    size_t i;

    *out = NULL;
    *n = 0;
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return -EINVAL;
    v = hs_xcalloc(json_array_size(arr) + 1, sizeof(*v));
    for (i = 0; i < json_array_size(arr); i++) {
        if (!(v[i] = json_string_value(json_array_get(arr, i)))) {
            free(v);
            return -EINVAL;
        }
    }
    *out = v;
    *n = i;
    return 0;
}

/* An optional address: absent, null or "" means the node has none of that family. */
static int addr_field(const json_t *obj, const char *key, const char **out)
{
    const json_t *v = json_object_get(obj, key);

    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -EINVAL;
    if (*json_string_value(v))
        *out = json_string_value(v);
    return 0;
}

static const char *nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

/* Users are numbered in file order: nodes name their user, so a file's own "id" values (the
 * corpus has captures with id 0 and an empty email) link nothing and are not used. */
static int topo_users(struct topo *t, char *err, size_t errsize)
{
    const json_t *arr = json_object_get(t->doc, "users");

    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr)) {
        snprintf(err, errsize, "\"users\" must be an array");
        return -EINVAL;
    }
    t->users = hs_xcalloc(json_array_size(arr) + 1, sizeof(*t->users));
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *u = json_array_get(arr, i);

        if (!json_is_object(u) || !nonempty(hs_json_str(u, "name"))) {
            snprintf(err, errsize, "users[%zu]: needs a \"name\"", i);
            return -EINVAL;
        }
        t->users[i] = (struct policy_user){ .id = i + 1, .name = hs_json_str(u, "name"),
                                            .email = nonempty(hs_json_str(u, "email")) };
        t->nusers = i + 1;
    }
    return 0;
}

static int user_id_by_name(const struct topo *t, const char *name, uint64_t *id)
{
    for (size_t i = 0; i < t->nusers; i++) {
        if (hs_streq(t->users[i].name, name)) {
            *id = t->users[i].id;
            return 0;
        }
    }
    return -ENOENT;
}

static int topo_node(struct topo *t, struct policy_node *n, const json_t *obj, char *err,
                     size_t errsize)
{
    const json_t *user = json_object_get(obj, "user");

    if (!json_is_object(obj)) {
        snprintf(err, errsize, "node %s: must be an object", n->name);
        return -EINVAL;
    }
    if (user && !json_is_null(user)) {
        if (!json_is_string(user) ||
            user_id_by_name(t, json_string_value(user), &n->user_id) < 0) {
            snprintf(err, errsize, "node %s: \"user\" names no user in \"users\"", n->name);
            return -EINVAL;
        }
    }
    if (addr_field(obj, "ipv4", &n->ipv4) < 0 || addr_field(obj, "ipv6", &n->ipv6) < 0) {
        snprintf(err, errsize, "node %s: \"ipv4\"/\"ipv6\" must be strings", n->name);
        return -EINVAL;
    }
    if (str_array(obj, "tags", &n->tags, &n->ntags) < 0 ||
        str_array(obj, "routable_ips", &n->routes, &n->nroutes) < 0 ||
        str_array(obj, "approved_routes", &n->approved, &n->napproved) < 0) {
        snprintf(err, errsize,
                 "node %s: \"tags\", \"routable_ips\" and \"approved_routes\" must be arrays "
                 "of strings",
                 n->name);
        return -EINVAL;
    }
    return 0;
}

/* A node's optional "id": the order nodes registered in, which decides, as in the server,
 * which of two routers of one prefix is its primary (the lower id). */
struct named {
    const char *name;
    uint64_t id; /* UINT64_MAX when the file gives none */
};

static int cmp_named(const void *a, const void *b)
{
    const struct named *x = a, *y = b;

    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name);
}

/* by_name from nodes: sorts (name, index) pairs, the index riding in `id`. */
static void topo_sort_names(struct topo *t)
{
    struct named *v = hs_xcalloc(t->nnodes + 1, sizeof(*v));

    for (size_t i = 0; i < t->nnodes; i++)
        v[i] = (struct named){ .name = t->nodes[i].name, .id = i };
    qsort(v, t->nnodes, sizeof(*v), cmp_name);
    t->by_name = hs_xcalloc(t->nnodes + 1, sizeof(*t->by_name));
    for (size_t i = 0; i < t->nnodes; i++)
        t->by_name[i] = (size_t)v[i].id;
    free(v);
}

static int topo_nodes(struct topo *t, char *err, size_t errsize)
{
    json_t *obj = json_object_get(t->doc, "nodes");
    struct named *names;
    const char *key;
    json_t *v;
    size_t i = 0;
    int rc = 0;

    if (!json_is_object(obj)) {
        snprintf(err, errsize, "\"nodes\" must be an object keyed by node name");
        return -EINVAL;
    }
    names = hs_xcalloc(json_object_size(obj) + 1, sizeof(*names));
    json_object_foreach(obj, key, v) {
        json_t *id = json_object_get(v, "id");
        names[i].name = key;
        names[i++].id = json_is_integer(id) && json_integer_value(id) > 0
                            ? (uint64_t)json_integer_value(id) : UINT64_MAX;
    }
    qsort(names, i, sizeof(*names), cmp_named);
    t->nodes = hs_xcalloc(i + 1, sizeof(*t->nodes));
    for (t->nnodes = 0; t->nnodes < i; t->nnodes++) {
        struct policy_node *n = &t->nodes[t->nnodes];

        n->id = t->nnodes + 1;
        n->name = names[t->nnodes].name;
        if ((rc = topo_node(t, n, json_object_get(obj, n->name), err, errsize)) < 0)
            break;
    }
    free(names);
    if (rc == 0)
        topo_sort_names(t);
    return rc;
}

static const char *file_error(int rc, size_t max)
{
    static char msg[64];

    if (rc != -E2BIG)
        return hs_strerror(rc);
    snprintf(msg, sizeof(msg), "larger than the limit of %zu bytes", max);
    return msg;
}

/* On failure err holds the reason and t is left empty. */
static int topo_load(const char *path, struct topo *t, char *err, size_t errsize)
{
    char *text;
    size_t len;
    int rc;

    *t = (struct topo){ 0 };
    if ((rc = hs_read_file(path, CLI_MAX_TOPOLOGY, &text, &len)) < 0) {
        snprintf(err, errsize, "%s: %s", path, file_error(rc, CLI_MAX_TOPOLOGY));
        return rc;
    }
    t->doc = hs_json_load(text, len, CLI_MAX_TOPOLOGY, err, errsize);
    free(text);
    if (!t->doc)
        return -EINVAL;
    if (!json_is_object(t->doc)) {
        snprintf(err, errsize, "must be a JSON object with \"users\" and \"nodes\"");
        rc = -EINVAL;
    } else if ((rc = topo_users(t, err, errsize)) == 0) {
        rc = topo_nodes(t, err, errsize);
    }
    if (rc < 0)
        topo_fini(t);
    return rc;
}

/* ---- one node's answers as JSON ---- */

/* Runs one of the policy_net_* JSON writers and parses what it wrote (any value: a filter
 * may be null). */
static json_t *net_json(int (*fn)(const struct policy_net *, size_t, struct hs_buf *),
                        const struct policy_net *net, size_t i)
{
    struct hs_buf b;
    json_t *j = NULL;

    hs_buf_init(&b, CLI_MAX_OUTPUT);
    if (fn(net, i, &b) == 0 && b.data)
        j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    hs_buf_free(&b);
    return j;
}

static json_t *allowed_ips(const struct policy_net *net, const struct policy_node *peer,
                           size_t a, size_t b)
{
    const char *few[16], **routes = few;
    size_t n = policy_net_peer_routes(net, a, b, few, HS_ARRAY_LEN(few));
    /* disable-ipv4 on either side: the two see each other over IPv6 only. */
    bool no_v4 = policy_net_has_attr(net, a, "disable-ipv4") ||
                 policy_net_has_attr(net, b, "disable-ipv4");
    json_t *arr;

    if (n == 0 && !(no_v4 && peer->ipv4))
        return NULL;
    if (n > HS_ARRAY_LEN(few)) { /* rare: ask again with room for all of them */
        routes = hs_xcalloc(n, sizeof(*routes));
        n = policy_net_peer_routes(net, a, b, routes, n);
    }
    arr = json_array();
    if (peer->ipv4 && !no_v4)
        json_array_append_new(arr, json_sprintf("%s/32", peer->ipv4));
    if (peer->ipv6)
        json_array_append_new(arr, json_sprintf("%s/128", peer->ipv6));
    for (size_t k = 0; k < n; k++)
        json_array_append_new(arr, json_string(routes[k]));
    if (routes != few)
        free(routes);
    return arr;
}

static json_t *node_json(const struct policy_net *net, const struct topo *t, size_t a)
{
    json_t *filter = net_json(policy_net_filter, net, a);
    json_t *ssh = net_json(policy_net_ssh, net, a);
    json_t *caps = net_json(policy_net_capmap, net, a);
    json_t *peers = json_array(), *aips = json_object(), *ips;

    if (!filter || !ssh || !caps) {
        json_decref(filter);
        json_decref(ssh);
        json_decref(caps);
        json_decref(peers);
        json_decref(aips);
        return NULL;
    }
    if (json_is_null(filter)) { /* a null filter accepts nothing: written [] as in the corpus */
        json_decref(filter);
        filter = json_array();
    }
    for (size_t k = 0; k < t->nnodes; k++) {
        size_t b = t->by_name[k];

        if (b == a || !policy_net_sees(net, a, b))
            continue;
        json_array_append_new(peers, json_string(t->nodes[b].name));
        if ((ips = allowed_ips(net, &t->nodes[b], a, b)))
            json_object_set_new(aips, t->nodes[b].name, ips);
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "packet_filter_rules", filter, "peers", peers,
                     "ssh_policy", ssh, "cap_map", caps, "peer_allowed_ips", aips);
}

/* ---- the same answers for a person ---- */

static void join_strings(const json_t *arr, const char *sep, struct hs_buf *out)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v) {
        if (i)
            hs_buf_puts(out, sep);
        hs_buf_puts(out, json_is_string(v) ? json_string_value(v) : "?");
    }
}

static const char *proto_name(json_int_t p)
{
    switch (p) {
    case 1: return "icmp";
    case 2: return "igmp";
    case 6: return "tcp";
    case 17: return "udp";
    case 47: return "gre";
    case 50: return "esp";
    case 51: return "ah";
    case 58: return "icmpv6";
    case 132: return "sctp";
    default: return NULL;
    }
}

static void put_protos(const json_t *protos, struct hs_buf *out)
{
    size_t i;
    json_t *v;

    if (!json_is_array(protos) || json_array_size(protos) == 0) {
        hs_buf_puts(out, "tcp,udp,icmp,icmpv6"); /* Tailscale's default set */
        return;
    }
    json_array_foreach(protos, i, v) {
        const char *name = proto_name(json_integer_value(v));

        if (i)
            hs_buf_puts(out, ",");
        if (name)
            hs_buf_puts(out, name);
        else
            hs_buf_appendf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    }
}

/* "ip:ports"; an IPv6 address or range is bracketed so the port stays readable. */
static void put_dst_port(const json_t *dp, struct hs_buf *out)
{
    const char *ip = hs_json_str(dp, "IP");
    const json_t *ports = json_object_get(dp, "Ports");
    json_int_t first = json_integer_value(json_object_get(ports, "First"));
    json_int_t last = json_integer_value(json_object_get(ports, "Last"));

    ip = ip ? ip : "?";
    hs_buf_appendf(out, strchr(ip, ':') ? "[%s]:" : "%s:", ip);
    if (first == 0 && last == 65535)
        hs_buf_puts(out, "*");
    else if (first == last)
        hs_buf_appendf(out, "%" JSON_INTEGER_FORMAT, first);
    else
        hs_buf_appendf(out, "%" JSON_INTEGER_FORMAT "-%" JSON_INTEGER_FORMAT, first, last);
}

/* One line per rule: "src, src -> dst:ports, dst:ports protos"; an app-capability rule
 * gives one line per grant: "src -> dst, dst cap name, name". */
static void put_filter(const json_t *rules, struct hs_buf *out)
{
    size_t i, k;
    json_t *r, *v;

    hs_buf_appendf(out, "  filter: %zu rule%s%s\n", json_array_size(rules),
                   json_array_size(rules) == 1 ? "" : "s",
                   json_array_size(rules) ? "" : " (accepts no inbound traffic)");
    json_array_foreach(rules, i, r) {
        const json_t *dsts = json_object_get(r, "DstPorts");

        if (json_array_size(dsts) || !json_object_get(r, "CapGrant")) {
            hs_buf_puts(out, "    ");
            join_strings(json_object_get(r, "SrcIPs"), ", ", out);
            hs_buf_puts(out, " -> ");
            json_array_foreach(dsts, k, v) {
                if (k)
                    hs_buf_puts(out, ", ");
                put_dst_port(v, out);
            }
            hs_buf_puts(out, " ");
            put_protos(json_object_get(r, "IPProto"), out);
            hs_buf_puts(out, "\n");
        }
        json_array_foreach(json_object_get(r, "CapGrant"), k, v) {
            const char *cap;
            json_t *val;
            bool first = true;

            hs_buf_puts(out, "    ");
            join_strings(json_object_get(r, "SrcIPs"), ", ", out);
            hs_buf_puts(out, " -> ");
            join_strings(json_object_get(v, "Dsts"), ", ", out);
            hs_buf_puts(out, " cap ");
            json_object_foreach(json_object_get(v, "CapMap"), cap, val) {
                hs_buf_appendf(out, "%s%s", first ? "" : ", ", cap);
                first = false;
            }
            hs_buf_puts(out, "\n");
        }
    }
}

static void put_principals(const json_t *principals, struct hs_buf *out)
{
    size_t i;
    json_t *p;
    const char *s;

    json_array_foreach(principals, i, p) {
        if (i)
            hs_buf_puts(out, ", ");
        if ((s = hs_json_str(p, "nodeIP")) || (s = hs_json_str(p, "userLogin")) ||
            (s = hs_json_str(p, "node")))
            hs_buf_puts(out, s);
        else if (json_is_true(json_object_get(p, "any")))
            hs_buf_puts(out, "*");
        else
            hs_buf_puts(out, "?");
    }
}

/* "principals -> local users: action", where a local user reads "remote=local" ("" = denied,
 * "=" = the same name) as tailcfg.SSHRule.SSHUsers does. */
static void put_ssh(const json_t *rules, struct hs_buf *out)
{
    size_t i;
    json_t *r, *v;
    const char *user;

    if (json_array_size(rules) == 0) {
        hs_buf_puts(out, "  ssh: no one\n");
        return;
    }
    hs_buf_puts(out, "  ssh (first match wins):\n");
    json_array_foreach(rules, i, r) {
        const json_t *action = json_object_get(r, "action");
        bool first = true;

        hs_buf_puts(out, "    ");
        put_principals(json_object_get(r, "principals"), out);
        hs_buf_puts(out, " -> ");
        json_object_foreach(json_object_get(r, "sshUsers"), user, v) {
            hs_buf_appendf(out, "%s%s=%s", first ? "" : ", ", user,
                           json_is_string(v) ? json_string_value(v) : "?");
            first = false;
        }
        if (json_is_true(json_object_get(action, "accept")))
            hs_buf_puts(out, ": accept\n");
        else if (json_object_get(action, "holdAndDelegate"))
            hs_buf_puts(out, ": check\n");
        else if (json_is_true(json_object_get(action, "reject")))
            hs_buf_puts(out, ": reject\n");
        else
            hs_buf_puts(out, ": (other action)\n");
    }
}

static void put_caps(const json_t *caps, struct hs_buf *out)
{
    const char *cap;
    json_t *v;

    if (json_object_size(caps) == 0)
        return;
    hs_buf_puts(out, "  capabilities:\n");
    json_object_foreach((json_t *)caps, cap, v) {
        char *val = json_is_null(v) ? NULL : hs_json_dump(v, JSON_COMPACT);

        hs_buf_appendf(out, "    %s%s%s\n", cap, val ? " " : "", val ? val : "");
        free(val);
    }
}

static void put_node(const struct topo *t, const struct policy_node *n, const json_t *j,
                     struct hs_buf *out)
{
    const json_t *peers = json_object_get(j, "peers");
    const char *peer;
    json_t *ips;

    hs_buf_appendf(out, "%s (%s%s%s)", n->name, n->ipv4 ? n->ipv4 : "",
                   n->ipv4 && n->ipv6 ? ", " : "", n->ipv6 ? n->ipv6 : "");
    for (size_t k = 0; k < t->nusers && n->user_id; k++) {
        if (t->users[k].id == n->user_id && t->users[k].name)
            hs_buf_appendf(out, " user %s", t->users[k].name);
    }
    if (n->ntags) {
        hs_buf_puts(out, " tags ");
        for (size_t k = 0; k < n->ntags; k++)
            hs_buf_appendf(out, "%s%s", k ? "," : "", n->tags[k]);
    }
    hs_buf_puts(out, "\n");
    hs_buf_appendf(out, "  peers (%zu)%s", json_array_size(peers),
                   json_array_size(peers) ? ": " : "");
    join_strings(peers, ", ", out);
    hs_buf_puts(out, "\n");
    json_object_foreach(json_object_get(j, "peer_allowed_ips"), peer, ips) {
        hs_buf_appendf(out, "  allowed IPs of %s: ", peer);
        join_strings(ips, ", ", out);
        hs_buf_puts(out, "\n");
    }
    put_filter(json_object_get(j, "packet_filter_rules"), out);
    put_ssh(json_object_get(j, "ssh_policy"), out);
    put_caps(json_object_get(j, "cap_map"), out);
}

/* ---- the command ---- */

static int compile_file(struct cli_ctx *ctx, const char *path, const struct topo *t,
                        struct policy_net **net)
{
    struct policy *p = NULL;
    char err[1024] = "", *text;
    size_t len;
    int rc;

    if ((rc = hs_read_file(path, POLICY_MAX_BYTES, &text, &len)) < 0)
        return cli_fail(ctx, "policy: %s: %s", path, file_error(rc, POLICY_MAX_BYTES));
    rc = policy_load(text, len, policy_format_for_path(path), &p, err, sizeof(err));
    free(text);
    if (rc == 0)
        rc = policy_compile(p, &(struct policy_topology){ .users = t->users,
                                                          .nusers = t->nusers,
                                                          .nodes = t->nodes,
                                                          .nnodes = t->nnodes },
                            net, err, sizeof(err));
    policy_free(p);
    if (rc < 0)
        return cli_fail(ctx, "policy: %s", *err ? err : hs_strerror(rc));
    return 0;
}

/* Human output goes out node by node; machine output is one object, printed at the end. */
static int print_nodes(struct cli_ctx *ctx, const struct policy_net *net, const struct topo *t)
{
    json_t *all = json_object(), *j;
    struct hs_buf human;
    int rc = 0;

    hs_buf_init(&human, CLI_MAX_OUTPUT);
    for (size_t k = 0; k < t->nnodes && rc == 0; k++) {
        size_t i = t->by_name[k];

        if (!(j = node_json(net, t, i))) {
            rc = cli_fail(ctx, "policy: node %s: the compiled answer is not valid JSON",
                          t->nodes[i].name);
        } else if (ctx->fmt == CLI_FMT_HUMAN) {
            hs_buf_reset(&human);
            put_node(t, &t->nodes[i], j, &human);
            fprintf(ctx->out, "%s%s", k ? "\n" : "", human.data ? human.data : "");
            json_decref(j);
        } else {
            json_object_set_new(all, t->nodes[i].name, j);
        }
    }
    if (rc == 0 && ctx->fmt != CLI_FMT_HUMAN)
        rc = cli_print(ctx, all, NULL, NULL);
    else if (rc == 0 && t->nnodes == 0)
        fprintf(ctx->out, "no nodes in the topology\n");
    hs_buf_free(&human);
    json_decref(all);
    return rc;
}

int cli_cmd_debug_policy(struct cli_ctx *ctx)
{
    const char *ppath = cli_flag_str(&ctx->args, "policy");
    const char *tpath = cli_flag_str(&ctx->args, "topology");
    struct policy_net *net = NULL;
    struct topo t;
    char err[1024];
    int rc;

    if (!ppath || !*ppath || !tpath || !*tpath)
        return cli_fail(ctx, "required flag(s) \"policy\" and \"topology\" not set");
    if (topo_load(tpath, &t, err, sizeof(err)) < 0)
        return cli_fail(ctx, "topology: %s", err);
    if ((rc = compile_file(ctx, ppath, &t, &net)) == 0)
        rc = print_nodes(ctx, net, &t);
    policy_net_free(net);
    topo_fini(&t);
    return rc;
}
