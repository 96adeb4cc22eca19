/* policy: ACL policy documents (HuJSON or YAML), checked and compiled for a set of nodes into
 * what each node is sent: its packet filter, the peers it may see, its SSH policy and its
 * capabilities (Tailscale's semantics: tailscale.com/kb/1337, checked against the captures in
 * shared/testdata/policy-conformance).
 *
 * Two steps. policy_load() parses a document and checks everything that does not depend on
 * the tailnet (syntax, sections, ports, protocols, tag owners, groups); the result is
 * immutable and may be shared between threads. policy_compile() resolves it against a
 * topology (users and nodes), runs the document's own `tests` and `sshTests`, and gives a
 * struct policy_net that answers per-node questions. A policy_net is immutable too: a new
 * policy compiles a new one; a change of nodes, policy_recompile() from the previous one
 * (bench/policy times both). */
#ifndef HS_POLICY_H
#define HS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define POLICY_MAX_BYTES (4u << 20)
#define POLICY_MAX_DEPTH 64 /* nesting of objects/arrays in a document */

enum policy_format {
    POLICY_FORMAT_AUTO, /* YAML if the text does not start with '{' (after blanks/comments) */
    POLICY_FORMAT_HUJSON,
    POLICY_FORMAT_YAML,
};

struct policy;

/* Parses and checks a policy document. On success *out is the caller's (policy_free).
 * -EINVAL (or -E2BIG past POLICY_MAX_BYTES) with a message naming the element in err. */
int policy_load(const char *text, size_t len, enum policy_format fmt, struct policy **out,
                char *err, size_t errsize);
/* Drops the caller's reference: a policy_net compiled from p keeps its own. */
void policy_free(struct policy *p);
/* The format to assume for a file name: YAML for .yaml/.yml, HuJSON otherwise. */
enum policy_format policy_format_for_path(const char *path);

/* The tailnet a policy is compiled for. Strings are borrowed for the duration of
 * policy_compile(); the result copies what it keeps. */
struct policy_user {
    uint64_t id;
    const char *name;  /* login name ("alice"); may be NULL */
    const char *email; /* may be NULL */
    /* The identity provider's groups of an OIDC user, as the provider names them ("eng"):
     * a group:<name> the policy uses without defining it in `groups` has as members the
     * users whose provider groups hold <name>. A group the policy defines is its own. */
    const char *const *groups;
    size_t ngroups;
};

struct policy_node {
    uint64_t id;
    const char *name;             /* for messages and `debug policy` output */
    uint64_t user_id;             /* owner; 0 = none */
    const char *const *tags;      /* a node with tags is tagged: it is not in its user's alias */
    size_t ntags;
    const char *ipv4, *ipv6;      /* addresses as text; NULL when absent */
    const char *const *routes;    /* routes the node advertises (CIDR text) */
    size_t nroutes;
    const char *const *approved;  /* routes approved for it (CIDR text; autoApprovers add more) */
    size_t napproved;
    const char *const *primary;   /* with policy_topology.elected: the approved subnet routes
                                   * it is the elected primary router for */
    size_t nprimary;
};

struct policy_topology {
    const struct policy_user *users;
    size_t nusers;
    const struct policy_node *nodes; /* addressed by index below */
    size_t nnodes;
    const char *server_url; /* SSH `check` rules send clients here; NULL: a placeholder */
    /* The server elected each route's primary router (policy_node.primary): without it the
     * first router of a route in node order is its primary (tools, tests). */
    bool elected;
};

struct policy_net;

/* Compiles p (NULL: no policy, every node reaches every other) for t. -EINVAL with a message
 * when the policy names something it cannot (a user matching two users) or when its `tests`
 * or `sshTests` fail. On success *out is the caller's (policy_net_free). */
int policy_compile(const struct policy *p, const struct policy_topology *t,
                   struct policy_net **out, char *err, size_t errsize);
void policy_net_free(struct policy_net *c);
/* policy_compile() without running the tests: for a preview, which reports them itself
 * (policy_net_run_tests) instead of being refused by them. */
int policy_compile_untested(const struct policy *p, const struct policy_topology *t,
                            struct policy_net **out, char *err, size_t errsize);
/* Runs the policy's `tests` one by one against c, calling fn for each with its index, its
 * src as written and NULL when it passed or the reason it failed; then `sshTests` as one
 * more call with index (size_t)-1 and src "sshTests" when there are any. Returns how many
 * calls reported a failure. */
typedef void (*policy_test_fn)(void *arg, size_t i, const char *src, const char *failure);
size_t policy_net_run_tests(const struct policy_net *c, policy_test_fn fn, void *arg);

/* Whether every user the rules name directly exists, and every group the policy does not
 * define is some user's provider group (a typo would match no one): -EINVAL naming the
 * first that does not. Group members are not checked (Tailscale lets a group list users
 * who have not joined yet). For `policy set`/`check` and reloads; at start a
 * policy may name users the operator is about to create. */
int policy_net_check_users(const struct policy_net *c, char *err, size_t errsize);

/* The same policy compiled again for t after the nodes with the given ids were added,
 * removed or changed (nothing else did: users and every other node are as in old). Reuses
 * what the change did not touch, so a one-node change costs far less than a compile.
 * changed NULL: anything may have changed (a full compile). Unlike policy_compile() it does
 * not run the policy's tests (a tailnet change is not refused because a test no longer
 * holds) and cannot fail; *out is the caller's. old stays valid. */
int policy_recompile(const struct policy_net *old, const struct policy_topology *t,
                     const uint64_t *changed, size_t nchanged, struct policy_net **out);

/* Node i's packet filter as JSON (an array of tailcfg.FilterRule) appended to out. */
int policy_net_filter(const struct policy_net *c, size_t i, struct hs_buf *out);

/* A long text that many nodes' filters share (a rule's SrcIPs: at 5,000 nodes one group's
 * addresses fill 150 KB), handed out by reference so that a map writer can hash and compress
 * it once for every node: it belongs at byte `at` of the filter's own text. It lives as long
 * as the compiled policy. hash: keyed SipHash of the text (a secret drawn at start), so equal
 * hashes mean equal texts. */
struct policy_part {
    size_t at;
    const char *text;
    size_t len;
    uint64_t hash;
};
struct policy_parts {
    struct policy_part *v;
    size_t n, cap;
};
#define POLICY_PART_MIN 512 /* shorter texts are written inline */
/* The filter of policy_net_filter() with the shared texts of POLICY_PART_MIN bytes or more
 * left out of out and listed in parts (appended, in order). */
int policy_net_filter_parts(const struct policy_net *c, size_t i, struct hs_buf *out,
                            struct policy_parts *parts);
void policy_parts_free(struct policy_parts *parts);
/* Node i's SSH policy rules (tailcfg.SSHPolicy.Rules) as a JSON array appended to out;
 * "[]" when no one may SSH to it. */
int policy_net_ssh(const struct policy_net *c, size_t i, struct hs_buf *out);
/* Node i's own capabilities (tailcfg.NodeCapMap) from nodeAttrs, a JSON object. */
int policy_net_capmap(const struct policy_net *c, size_t i, struct hs_buf *out);
/* Whether nodeAttrs gives node i the attribute (e.g. "disable-ipv4": the node is sent no
 * IPv4 address, and it and its peers see each other over IPv6 only). */
bool policy_net_has_attr(const struct policy_net *c, size_t i, const char *attr);
/* Whether node i sees every other node (then a map needs no per-peer question). A cheap
 * answer that may say false for a node that does: then ask policy_net_sees. */
bool policy_net_sees_all(const struct policy_net *c, size_t i);
/* Whether node a has b in its peer list: either may reach the other. Symmetric. */
bool policy_net_sees(const struct policy_net *c, size_t a, size_t b);
/* Node a's whole peer list at once: bit b of row (nodes / 64 words, rounded up) set when
 * policy_net_sees(c, a, b); a bound check and a call per node less than asking each. */
void policy_net_sees_row(const struct policy_net *c, size_t a, uint64_t *row);
/* Whom node a may open connections to (on some port and protocol), as a row like
 * policy_net_sees_row's: directed, unlike sees (a may reach b without b reaching a). */
void policy_net_reach_row(const struct policy_net *c, size_t a, uint64_t *row);
/* The routes of node b that viewer a gets in b's AllowedIPs (besides b's addresses): b's
 * approved exit routes, and those of its subnet routes that a may reach or be reached from
 * and for which b is the primary router. Up to cap of them (CIDR text, borrowed from c) go
 * into out; returns how many there are. */
size_t policy_net_peer_routes(const struct policy_net *c, size_t a, size_t b, const char **out,
                              size_t cap);
/* Routes of node i approved by the policy's autoApprovers or by the topology (for the
 * routes issue: the server does not approve routes yet). */
const char *const *policy_net_approved(const struct policy_net *c, size_t i, size_t *n);

/* Whether a node of user u (NULL: no user), carrying the tags in have, may take tag: the
 * tag is in tagOwners and lists u, a group with u in it, or one of the node's tags. With no
 * policy (p NULL) every tag is allowed, as headscale does. */
bool policy_tag_allowed(const struct policy *p, const struct policy_user *u,
                        const char *const *have, size_t nhave, const char *tag);

/* Parses and checks a document (format auto-detected) without keeping it: the fuzz target's
 * way in. */
int policy_check(const char *text, size_t len, char *err, size_t errsize);

/* Rewrites HuJSON into standard JSON of the same length (comments and trailing commas become
 * spaces, so line/column numbers in later errors still point at the original text).
 * out must hold len + 1 bytes. Returns 0 or -EINVAL with a message in err. */
int policy_hujson_standardize(const char *in, size_t len, char *out, char *err, size_t errsize);

/* A YAML document as the equivalent JSON value (mappings → objects, sequences → arrays,
 * plain scalars that read as numbers/booleans/null → those, everything else → strings).
 * Nesting past POLICY_MAX_DEPTH, anchors/aliases, several documents, and non-string keys are
 * refused. NULL with "line N: ..." in err. The caller owns the result. */
json_t *policy_yaml_to_json(const char *text, size_t len, char *err, size_t errsize);

#endif
