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
 * returns it as a JSON array of strings (malloc'd), neighbouring node addresses written as
 * one range. */
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
    /* PA_GROUP: the group (p->groups never moves); NULL for one the policy does not define,
     * whose members are the users holding it as a provider group (policy_user.groups). */
    const struct pol_group *group;
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

/* A node as the compiler sees it; immutable once loaded. */
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
    bool *route_prim;         /* per route: the node is its elected primary (net->elected) */
    bool exit;                /* approved 0.0.0.0/0 or ::/0 */
    char **approved;          /* text of every approved route (topology + autoApprovers) */
    size_t napproved;
    /* name, tags, routes, route_text, route_prim and approved belong to every copy of the record (a
     * block copied because another node of it changed): *shared counts the copies. */
    int *shared;
};

/* Nodes are stored in blocks, in node order, that a net shares with the nets recompiled
 * from it: a change copies the blocks it touches and takes a reference on the others, so a
 * one-node change costs one block, not every node. */
#define POL_BLOCK 256 /* nodes per block as a compile lays them out */

struct pol_nblock {
    int refs; /* nets holding it */
    size_t n;
    struct pol_node v[];
};

struct pol_user {
    uint64_t id;
    char *name, *email;
    struct hs_strv groups; /* provider groups */
};

/* A node set as bits over net->nodes. */
struct pol_bits {
    uint64_t *w;
};

/* One rule of the policy resolved for this tailnet. A recompile whose change did not touch
 * the rule shares src, src_lit, src_json and rev_json (*shared counts the nets), and the
 * bitsets too (*bits_shared) when no node moved to another index. */
struct pol_crule {
    const struct pol_rule *r;
    int *shared;
    int *bits_shared;
    struct pol_ents src;       /* SrcIPs, sorted as text, distinct */
    struct pol_ents src_lit;   /* the entries of its address sources (*, hosts, prefixes):
                                * all a subnet route can overlap but a node's address */
    char *src_json;            /* SrcIPs as a JSON array */
    size_t src_len;            /* its length */
    uint64_t src_hash;         /* its policy_part hash; 0 until a filter first asks for it */
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

/* A node with approved subnet routes, and per route the nodes that get it in the node's
 * AllowedIPs. */
struct pol_router {
    size_t node;
    uint64_t **viewers; /* per route of the node; NULL until pol__route_viewers */
};

struct tag_node;

struct policy_net {
    const struct policy *p;    /* NULL: allow all */
    char *server_url;          /* from the topology; may be NULL */
    bool elected;              /* primaries from the topology (pol_node.route_prim) */
    const struct pol_node **nodes; /* node i, in the topology's order (by id) */
    uint64_t *ids;                 /* node i's id (a recompile checks the order with it) */
    size_t nnodes;
    struct pol_nblock **blocks;    /* the nodes, in the same order */
    size_t nblocks;
    struct pol_user *users;
    size_t nusers;
    size_t *users_by_id, *users_by_email, *users_by_name; /* user indexes, sorted */
    int *users_shared;         /* nets sharing users and their indexes (same users) */
    struct pol_list *user_nodes; /* per user: its untagged nodes (into user_node_v) */
    size_t *user_node_v;
    struct tag_node *tag_nodes;  /* (tag, node) sorted by tag */
    size_t ntag_nodes;
    struct pol_router *routers;  /* nodes with subnet routes, in node order */
    size_t nrouters;
    pol_u128 addr_lo[2], addr_hi[2]; /* per family, every node's address is in [lo, hi]
                                       * (a recompile may leave it wider) */
    size_t words;              /* uint64_t per node bitset (room for more nodes: a
                                * recompile that adds one can share bitsets) */
    struct pol_crule *rules;
    size_t nrules;
    /* Nodes in the same rules on the same sides (and, with autogroup:self, of the same user)
     * see the same peers: one class each. */
    struct pol_class **classes;
    size_t nclasses, cap_classes;
    size_t *members;           /* per class: how many nodes are in it */
    size_t sig_words;          /* uint64_t per class signature: 2 bits per rule */
    bool self_rules;           /* some rule has autogroup:self: classes also by user */
    size_t *cls;               /* per node: its class */
};

/* A class, shared by the nets recompiled from its net while its peer set stays the same. */
struct pol_class {
    int refs;
    uint64_t hash;
    size_t user;               /* with self_rules: the nodes' user ((size_t)-1 if tagged) */
    size_t npeers;             /* bits set in its peers: every node's when it is nnodes */
    uint64_t bits[];           /* the signature (sig_words: bit 2r, in rule r's sources;
                                * 2r+1, in its destinations), then the peers (words: the
                                * nodes a member sees, maybe itself among them) */
};

static inline uint64_t *pol__class_sig(const struct policy_net *c, size_t k)
{
    return c->classes[k]->bits;
}
static inline uint64_t *pol__class_peers(const struct policy_net *c, size_t k)
{
    return c->classes[k]->bits + c->sig_words;
}

static inline bool pol__bit(const uint64_t *w, size_t i)
{
    return (w[i / 64] >> (i % 64)) & 1;
}
static inline void pol__set(uint64_t *w, size_t i)
{
    w[i / 64] |= UINT64_C(1) << (i % 64);
}

/* What a recompile (policy_update.c) does to the node order: runs of old indexes that stay
 * consecutive at their new place, and the nodes that came (fresh: loaded from the topology,
 * changed or new) and went (gone: changed or removed). */
struct pol_run {
    size_t from, to, len;
};

struct pol_plan {
    struct pol_run *runs;
    size_t nruns;
    size_t *map;      /* per old index: the new one, SIZE_MAX for a gone node */
    size_t *fresh;    /* new indexes, ascending */
    size_t nfresh;
    size_t *gone;     /* old indexes, ascending */
    size_t ngone;
    bool aligned;     /* no carried node moved and bitsets keep their size: a bitset the
                       * change did not touch is the same bits in both nets */
};

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
/* The words of a bitset over n nodes, with room to grow. */
size_t pol__words_for(size_t n);
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
/* A class's reference dropped. */
void pol__class_unref(struct pol_class *k);
/* policy_nodes.c, for policy_update.c: a node loaded from the topology into n (routes
 * approved too); a block of n records (one reference) and a reference dropped; a record
 * copied into another block; old's users shared; the node table made from c->blocks; the
 * indexes (users' nodes, tags, routers) of old carried through pl. */
void pol__load_node(const struct policy_net *c, struct pol_node *n, const struct policy_node *in);
struct pol_nblock *pol__block_new(size_t n);
void pol__block_unref(struct pol_nblock *b);
void pol__node_copy(struct pol_node *dst, const struct pol_node *src);
void pol__share_users(struct policy_net *c, const struct policy_net *old);
void pol__node_table(struct policy_net *c);
void pol__patch_indexes(struct policy_net *c, const struct policy_net *old,
                        const struct pol_plan *pl);
/* policy_update.c, for policy_routes.c: bitset old of the old net carried to c's node order
 * (fresh nodes' bits clear). */
uint64_t *pol__remap_bits(const struct policy_net *c, const struct pol_plan *pl,
                          const uint64_t *old);
/* policy_routes.c: every route's viewers, once the rules are resolved; in a recompile, only
 * those of routes the change may concern (redone[r]: rule r was resolved again), the others
 * carried from old. */
void pol__route_viewers(struct policy_net *c);
void pol__carry_route_viewers(struct policy_net *c, const struct policy_net *old,
                              const struct pol_plan *pl, const bool *redone);
void pol__routers_free(struct policy_net *c);

/* Whether node n (or record nd) is one the alias names as a source (identity or address). */
bool pol__node_in_alias(const struct policy_net *c, const struct pol_alias *a, size_t n);
bool pol__rec_in_alias(const struct policy_net *c, const struct pol_alias *a,
                       const struct pol_node *nd);
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
