/* policy internals: the checked document (struct policy) and the compiled tailnet
 * (struct policy_net), shared by the files of core/policy. */
#ifndef HS_POLICY_INTERNAL_H
#define HS_POLICY_INTERNAL_H

#include <stdarg.h>

#include "policy/policy.h"

/* Addresses live in one 128-bit space: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
typedef unsigned __int128 pol_u128;

enum pol_ent_kind {
    PE_ADDR,   /* one address: written bare */
    PE_PREFIX, /* a CIDR: written a.b.c.d/n */
    PE_RANGE,  /* written lo-hi */
    PE_STAR,   /* "*": written literally */
};

/* One entry of a filter's SrcIPs or DstPorts IP, and what it covers. */
struct pol_ent {
    pol_u128 lo, hi; /* inclusive; [0, max] for PE_STAR */
    uint8_t kind;    /* enum pol_ent_kind */
    uint8_t bits;    /* PE_PREFIX: prefix length in its own family */
    bool v4;
};

struct pol_ents {
    struct pol_ent *v;
    size_t n, cap;
};

/* Addresses (policy_addr.c). */
int pol__parse_ip(const char *s, pol_u128 *out, bool *v4);
/* "ip", "ip/n" (host bits must be zero unless loose) into e. */
int pol__parse_prefix(const char *s, bool loose, struct pol_ent *e);
void pol__ent_text(const struct pol_ent *e, char *out, size_t size); /* >= 96 bytes */
void pol__addr_text(pol_u128 a, bool v4, char *out, size_t size);
bool pol__ent_contains(const struct pol_ent *e, pol_u128 a);
bool pol__ent_overlaps(const struct pol_ent *a, const struct pol_ent *b);
void pol__ents_push(struct pol_ents *s, const struct pol_ent *e);
void pol__ents_free(struct pol_ents *s);
struct pol_ent pol__ent_addr(pol_u128 a, bool v4);
struct pol_ent pol__ent_range(pol_u128 lo, pol_u128 hi, bool v4);
/* Sorts s by text and drops exact repeats (Tailscale keeps overlapping entries), and
 * returns it as a JSON array of strings (malloc'd). */
char *pol__ents_json(struct pol_ents *s);
/* "*" as a source: the tailnet's CGNAT and ULA ranges (routes are added by the caller). */
void pol__star_ranges(struct pol_ents *out);
/* autogroup:internet: the public address space, both families. */
void pol__internet_ranges(struct pol_ents *out);
bool pol__is_exit_route(const struct pol_ent *e); /* 0.0.0.0/0 or ::/0 */

/* ---- the checked document ---- */

enum pol_alias_kind {
    PA_STAR,
    PA_USER,     /* name: the token as written ("alice@example.com", "alice@", "alice") */
    PA_GROUP,    /* name: "group:x" */
    PA_TAG,      /* name: "tag:x" */
    PA_HOST,     /* name: the host's name; ent: its prefix */
    PA_PREFIX,   /* ent */
    PA_MEMBER,   /* autogroup:member */
    PA_TAGGED,   /* autogroup:tagged */
    PA_SELF,     /* autogroup:self */
    PA_INTERNET, /* autogroup:internet */
    PA_DANGER_ALL, /* autogroup:danger-all */
};

struct pol_alias {
    uint8_t kind; /* enum pol_alias_kind */
    char *name;
    struct pol_ent ent;
};

struct pol_ports {
    uint16_t first, last;
};

/* A destination of an ACL ("alias:ports") or of a grant (alias, ports from `ip`). */
struct pol_dst {
    struct pol_alias a;
    struct pol_ports *ports;
    size_t nports;
};

/* One protocol/ports pair of a grant's `ip`; protos empty = the default set. */
struct pol_ipspec {
    uint8_t protos[8];
    size_t nprotos;
    struct pol_ports *ports;
    size_t nports;
};

/* An ACL or a grant, in one form. ACLs become one ipspec from their proto and per-dst ports. */
struct pol_rule {
    struct pol_alias *src;
    size_t nsrc;
    struct pol_dst *dst;
    size_t ndst;
    uint8_t protos[8]; /* ACL proto; nprotos 0 = default (IPProto omitted) */
    size_t nprotos;
    bool grant;            /* ports come from ips, not from dst */
    struct pol_ipspec *ips;
    size_t nips;
    json_t *app;           /* grant app capabilities (borrowed from doc), NULL if none */
    char **via;            /* grant via tags */
    size_t nvia;
};

struct pol_group {
    char *name;            /* "group:x" */
    struct pol_alias *members; /* users only */
    size_t n;
};

struct pol_tagowner {
    char *tag;
    struct pol_alias *owners; /* users, groups, tags, autogroups */
    size_t n;
};

struct pol_host {
    char *name;
    struct pol_ent ent;
};

struct pol_approver {
    struct pol_ent route;  /* exitNode: both exit routes */
    bool exit;
    struct pol_alias *who;
    size_t n;
};

struct policy {
    int refs;    /* the caller's, plus one per policy_net compiled from it */
    json_t *doc; /* the document as JSON; sections below borrow from it */
    struct pol_group *groups;
    size_t ngroups;
    struct pol_host *hosts;
    size_t nhosts;
    struct pol_tagowner *tags;
    size_t ntags;
    struct pol_rule *rules;
    size_t nrules;
    bool has_acls, has_grants; /* an empty list in either = deny all */
    struct pol_approver *approvers;
    size_t napprovers;
    struct pol_ssh *ssh;     /* policy_ssh.c: `ssh` and `sshTests` */
    struct pol_attrs *attrs; /* policy_attrs.c: `nodeAttrs` */
    struct pol_tests *tests; /* policy_tests.c: `tests` */
};

/* Each section's loader fills its field of p (NULL when the section is absent) or returns
 * -EINVAL with a message; its free function takes NULL. */
int pol__load_ssh(struct policy *p, char *err, size_t errsize);
void pol__ssh_free(struct pol_ssh *s);
int pol__load_attrs(struct policy *p, char *err, size_t errsize);
void pol__attrs_free(struct pol_attrs *a);
int pol__load_tests(struct policy *p, char *err, size_t errsize);
void pol__tests_free(struct pol_tests *t);

/* A formatted message into err; returns -EINVAL. */
int pol__err(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses an alias as written in a policy into a; -EINVAL with a message. */
int pol__parse_alias(const struct policy *p, const char *s, struct pol_alias *a, char *err,
                     size_t errsize);
void pol__alias_fini(struct pol_alias *a);
const struct pol_group *pol__group(const struct policy *p, const char *name);
const struct pol_tagowner *pol__tagowner(const struct policy *p, const char *tag);
/* Ports "*", "22", "80-443", "22,80" into a new array. */
int pol__parse_ports(const char *s, struct pol_ports **out, size_t *n, char *err, size_t errsize);
/* Absent, null, or an array of strings only. */
bool pol__string_list(const json_t *v);
/* "alias:port(s)", the alias possibly a bracketed IPv6 address: the alias copied into alias
 * (asize bytes), *port pointing after the colon. -EINVAL when there is no colon. */
int pol__split_alias_port(const char *s, char *alias, size_t asize, const char **port);
/* A protocol name or number into its IANA number; -EINVAL. */
int pol__parse_proto(const char *s, uint8_t *out);

int pol__load_rules(struct policy *p, char *err, size_t errsize);

/* ---- the compiled tailnet ---- */

struct pol_node {
    const char *name;
    uint64_t id, user_id;
    size_t user;            /* index into net->users, (size_t)-1 when none */
    bool tagged;
    char **tags;
    size_t ntags;
    pol_u128 ip[2];         /* [0] IPv4 (mapped), [1] IPv6 */
    bool has[2];
    struct pol_ents routes;   /* approved, non-exit, as the policy sees them */
    char **route_text;        /* their text, in the same order */
    uint64_t **route_viewers; /* per route: nodes that get it in this node's AllowedIPs */
    bool exit;                /* approved 0.0.0.0/0 or ::/0 */
    char **approved;          /* text of every approved route (topology + autoApprovers) */
    size_t napproved;
    /* name, tags, approved, routes and route_text are shared by the nets a recompile made
     * from this one (policy_update.c): *shared counts them. route_viewers is the net's. */
    int *shared;
};

struct pol_user {
    uint64_t id;
    char *name, *email;
};

/* A node set as bits over net->nodes. */
struct pol_bits {
    uint64_t *w;
};

/* One rule of the policy resolved for this tailnet. src, src_lit, src_json and rev_json are shared
 * with the nets a recompile made from this one when the change did not touch the rule
 * (*shared counts them); the bitsets are each net's. */
struct pol_crule {
    const struct pol_rule *r;
    int *shared;
    struct pol_ents src;       /* SrcIPs, sorted as text, distinct */
    struct pol_ents src_lit;   /* the entries of its address sources (*, hosts, prefixes):
                                * all a subnet route can overlap but a node's address */
    char *src_json;            /* SrcIPs as a JSON array */
    uint64_t *src_nodes;       /* nodes whose address (or approved route) is in src */
    uint64_t *dst_nodes;       /* nodes some non-self dst covers (via: only via routers) */
    uint64_t **dst_bits;       /* per dst of r: the nodes it covers (likewise) */
    char *rev_json;            /* the dsts as sources (NULL unless a capability has a
                                * companion granted back: drive, relay) */
    bool self;                 /* some dst is autogroup:self */
    bool dst_star, dst_internet;
};

struct pol_list {
    size_t *v;
    size_t n;
};

struct tag_node;

struct policy_net {
    const struct policy *p;    /* NULL: allow all */
    char *server_url;          /* from the topology; may be NULL */
    struct pol_node *nodes;
    size_t nnodes;
    struct pol_user *users;
    size_t nusers;
    size_t *users_by_id, *users_by_email, *users_by_name; /* user indexes, sorted */
    struct pol_list *user_nodes; /* per user: its untagged nodes */
    struct tag_node *tag_nodes;  /* (tag, node) sorted by tag */
    size_t ntag_nodes;
    size_t words;              /* uint64_t per node bitset */
    struct pol_crule *rules;
    size_t nrules;
    /* Nodes in the same rules on the same sides (and, with autogroup:self, of the same user)
     * see the same peers: one class each. */
    struct pol_class *classes;
    size_t nclasses, cap_classes;
    size_t sig_words;          /* uint64_t per class signature: 2 bits per rule */
    uint64_t *class_sigs;      /* cap_classes rows of sig_words: bit 2r, in rule r's
                                * sources; 2r+1, in its destinations */
    uint64_t *class_peers;     /* cap_classes rows of words: the nodes a member sees (a
                                * member itself may be in it) */
    bool self_rules;           /* some rule has autogroup:self: classes also by user */
    size_t *cls;               /* per node: its class */
};

struct pol_class {
    uint64_t hash;
    size_t user;               /* with self_rules: the nodes' user ((size_t)-1 if tagged) */
    size_t members;
    bool all;                  /* its peer set has every node (pol__mark_all) */
};

static inline uint64_t *pol__class_sig(const struct policy_net *c, size_t k)
{
    return c->class_sigs + k * c->sig_words;
}
static inline uint64_t *pol__class_peers(const struct policy_net *c, size_t k)
{
    return c->class_peers + k * c->words;
}

static inline bool pol__bit(const uint64_t *w, size_t i)
{
    return (w[i / 64] >> (i % 64)) & 1;
}
static inline void pol__set(uint64_t *w, size_t i)
{
    w[i / 64] |= UINT64_C(1) << (i % 64);
}

/* Whether destination a of rule r covers node i (never for autogroup:self, which is per
 * node; prefixes of a `via` grant only on routers with a via tag). */
bool pol__dst_covers(const struct policy_net *c, const struct pol_rule *r,
                     const struct pol_alias *a, size_t i);
/* policy_nodes.c: the topology copied and indexed (nodes' routes approved, autoApprovers
 * included), freed; an alias's nodes added to a bitset of c->words words. */
void pol__load_topology(struct policy_net *c, const struct policy_topology *t);
void pol__topology_free(struct policy_net *c);
void pol__alias_bits(const struct policy_net *c, const struct pol_alias *a, uint64_t *bits);
bool pol__has_via_tag(const struct pol_rule *r, const struct pol_node *n);
uint64_t *pol__bits_new(const struct policy_net *c);
/* policy_compile.c: the whole compile, with or without the policy's tests. */
int pol__compile(const struct policy *p, const struct policy_topology *t, bool tests,
                 struct policy_net **out, char *err, size_t errsize);
/* policy_compile.c, for policy_update.c: one rule resolved from scratch; its compiled parts
 * freed; a node's class signature (into sig, sig_words long), its hash, and a class's full
 * peer set; the class of node a found or made. */
void pol__resolve_rule(struct policy_net *c, const struct pol_rule *r, struct pol_crule *cr,
                       uint64_t *tmp);
void pol__crule_fini(struct pol_crule *cr);
uint64_t pol__signature(const struct policy_net *c, size_t a, uint64_t *sig, size_t *user);
size_t pol__class_of(struct policy_net *c, size_t a);
/* Sets each class's `all` once its peer set is final (end of a compile or recompile). */
void pol__mark_all(struct policy_net *c);
/* policy_nodes.c, for policy_update.c: one node loaded from the topology (routes approved
 * too), and the indexes rebuilt. */
void pol__load_node(struct policy_net *c, size_t i, const struct policy_node *in);
void pol__index_nodes(struct policy_net *c);
void pol__index_users(struct policy_net *c);
void pol__copy_users(struct policy_net *c, const struct policy_topology *t);
/* policy_routes.c: every route's viewers, once the rules are resolved. */
void pol__route_viewers(struct policy_net *c);

/* Whether node n is one the alias names as a source (identity or address). */
bool pol__node_in_alias(const struct policy_net *c, const struct pol_alias *a, size_t n);
/* Nodes of user u that are not tagged. */
bool pol__node_is_users(const struct policy_net *c, size_t n, size_t user);
/* Resolves a user token to a user index; (size_t)-1 when it names no one. */
size_t pol__user_index(const struct policy_net *c, const char *token);

/* The capability Tailscale grants back, from the destinations to the sources, alongside
 * name ("tailscale.com/cap/drive" → "tailscale.com/cap/drive-sharer"); NULL for most. */
const char *pol__companion_cap(const char *name);

/* The document's `tests` (policy_tests.c) and `sshTests` (policy_ssh.c) against the
 * compiled net: 0 or -EINVAL with a message. */
int pol__check_tests(const struct policy_net *c, char *err, size_t errsize);
int pol__check_ssh_tests(const struct policy_net *c, char *err, size_t errsize);

#endif
