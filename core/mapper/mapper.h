/* mapper: builds MapResponses (tailcfg JSON) for a node from the in-memory state: the full map
 * on connect, and deltas (PeersChanged / PeersRemoved / PeersChangedPatch / OnlineChange)
 * afterwards; and frames them for the wire (u32 little-endian length + JSON, zstd-compressed
 * when the client asked for it).
 *
 * Every function that takes a struct state expects the caller to hold state_rdlock(). */
#ifndef HS_MAPPER_H
#define HS_MAPPER_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "state/state.h"
#include "util/util.h"

#define MAPPER_MAX_FRAME (64u << 20)

struct mapper;
struct derpmap; /* from derp/derp.h */

/* Borrows cfg; dm (may be NULL: then the map carries no DERP regions) is read at each full map. */
struct mapper *mapper_new(const struct hs_config *cfg, struct derpmap *dm);
void mapper_free(struct mapper *m);

/* What a node was last told about the policy: the compiled policy its peer list was worked
 * out with, and hashes of the PacketFilter, SSH rules and own CapMap it holds. All zero:
 * nothing yet (its first full map fills it in). */
struct mapper_policy_state {
    /* The net itself, which a holder keeps a reference to (state_net_ref); or NULL when only
     * its generation is kept (a compiled policy is large: a session opened while the tailnet
     * changes by the second does not pin the one its first map used). */
    struct state_net *net;
    uint64_t gen; /* state_net_gen() of that net; 0: nothing yet */
    uint64_t filter, ssh, capmap;
};

/* The full MapResponse for node `self`: Node (its CapMap with the policy's nodeAttrs), Peers
 * (the nodes the compiled policy lets it see), UserProfiles (its own and its peers' users),
 * DNSConfig, DERPMap, Domain, PacketFilter and, when not empty, SSHPolicy (from the compiled
 * policy), CollectServices, ControlTime. NULL if self is unknown. Caller decrefs. */
json_t *mapper_full(struct mapper *m, struct state *s, uint64_t self, int64_t now);

/* The same, as compact JSON text appended to out, and as a wire message (see
 * mapper_encode). -ENOENT if self is unknown. These are what the map streams use: peers come
 * from a per-node cache of their serialised JSON. net: the compiled policy to build it under
 * (NULL: the current one; a batch passes its own, see mapper_plan: nodes that joined since
 * come with the next batch). told (may be NULL) gets what the map tells about the policy;
 * its net is borrowed under the read lock (reference it to keep it). */
int mapper_full_text(struct mapper *m, struct state *s, uint64_t self, int64_t now,
                     struct state_net *net, struct hs_buf *out, struct mapper_policy_state *told);
int mapper_full_encoded(struct mapper *m, struct state *s, uint64_t self, int64_t now,
                        struct state_net *net, bool zstd, struct hs_buf *out,
                        struct mapper_policy_state *told);

/* One node as tailcfg.Node, as seen by `viewer` (its own Node when n->n.id == viewer). */
json_t *mapper_node(struct mapper *m, struct state *s, const struct state_node *n,
                    uint64_t viewer);

/* Whether self sees every other node net knows, without asking per node (no policy). */
bool mapper_sees_everyone(const struct state_net *net, uint64_t self);

/* What a delta reports; any list may be empty. */
struct mapper_changes {
    const uint64_t *changed; /* full Nodes (PeersChanged) */
    size_t nchanged;
    const uint64_t *patched; /* only endpoints / keys / home DERP moved (PeersChangedPatch) */
    const unsigned *patched_fields; /* per patched id: enum state_field bits (NULL: all) */
    size_t npatched;
    const uint64_t *removed; /* PeersRemoved */
    size_t nremoved;
    const uint64_t *online;  /* online flag flipped (OnlineChange, PeerSeenChange) */
    size_t nonline;
};

/* A delta for `self`. The node itself, if listed as changed, comes back as "Node". Includes
 * UserProfiles for the users the changed peers reference. NULL when there is nothing to send.
 * Peers self does not see under the current compiled policy are left out (self 0: nobody's
 * view, every listed peer goes in). */
json_t *mapper_delta(struct mapper *m, struct state *s, uint64_t self,
                     const struct mapper_changes *ch, int64_t now);

/* A batch of changes as one node is to be told them: ch's peers kept to those it sees under
 * `now` (removed ones: that it saw), plus, when the compiled policy changed since `was`, the
 * peers that appeared (whole, in `changed`) or vanished (`removed`) for it and the policy
 * texts that changed for it. Lists are ascending and never hold the node itself. */
struct mapper_ids {
    uint64_t *v;
    unsigned *f; /* enum state_field bits (patched) */
    size_t n, cap;
};
struct mapper_plan {
    struct mapper_ids changed, patched, removed, online;
    bool node;          /* its own Node: listed as changed, or its CapMap changed */
    char *filter, *ssh; /* PacketFilter / SSH rules JSON that changed; NULL when not */
    size_t filter_len;  /* the filter's own text, with its shared parts held apart: */
    struct policy_parts filter_parts;
    struct mapper_policy_state told; /* what it will have been told (net borrowed) */
    struct state_net *now;           /* the net it was planned under (borrowed) */
    uint64_t views; /* the routes it gets from the routers in `changed` where they are not
                     * their default (0: none): nodes alike share a delta only with these */
};
/* was may be NULL or empty: the node's first map is on its way; then nothing is compared
 * and told stays empty. A `was` whose net is not pinned counts only if its generation is
 * now's. now: the compiled policy to tell it about (NULL: the current
 * one); a batch passes the one it started with to every node, so that nodes alike get alike
 * plans (and one shared delta) however the tailnet moves meanwhile; nodes that joined since
 * come with the next batch. -ENOMEM or a policy error; p is empty then. */
int mapper_plan(struct mapper *m, struct state *s, uint64_t self, const struct mapper_changes *ch,
                const struct mapper_policy_state *was, struct state_net *now,
                struct mapper_plan *p);
/* Nothing in it depends on who gets it (no own Node, no policy texts): nodes with the same
 * lists may share one encoded delta. */
bool mapper_plan_shareable(const struct mapper_plan *p);
bool mapper_plan_empty(const struct mapper_plan *p);
uint64_t mapper_plan_hash(const struct mapper_plan *p);
bool mapper_plan_same(const struct mapper_plan *a, const struct mapper_plan *b);
/* The delta the plan describes for self; NULL when empty. */
json_t *mapper_plan_delta(struct mapper *m, struct state *s, uint64_t self,
                          const struct mapper_plan *p, int64_t now);
/* The same as a wire message appended to out (see mapper_encode), built as text: policy
 * texts are spliced in, never parsed, and in zstd their shared parts are frames compressed
 * once for every node. -ENODATA when the plan holds nothing to send. */
int mapper_plan_encoded(struct mapper *m, struct state *s, uint64_t self,
                        const struct mapper_plan *p, int64_t now, bool zstd,
                        struct hs_buf *out);
void mapper_plan_free(struct mapper_plan *p);

/* Replaces the records read from dns.extra_records_path (takes v, from
 * config_dns_records_parse); every map built afterwards carries them. Any thread. */
void mapper_set_extra_records(struct mapper *m, struct dns_record *v, size_t n);
/* Whether DNSConfig depends on the users among a node's peers (the 0.22 naming with MagicDNS:
 * each user is a domain of its own). */
bool mapper_dns_per_user(const struct mapper *m);
/* Whether a resolver in force is NextDNS's: then DNSConfig depends on the node's nodeAttrs
 * (nextdns:<profile>, nextdns:no-device-info) too. Takes no state lock. */
bool mapper_dns_has_nextdns(const struct mapper *m, struct state *s);
/* {"DNSConfig":{...}}: what a node is sent when only the DNS configuration changed (the
 * extra records file, the settings saved through the API, or in the 0.22 layout the users
 * among its peers). NULL if self is unknown. */
json_t *mapper_dns_update(struct mapper *m, struct state *s, uint64_t self);

/* {"KeepAlive":true} */
json_t *mapper_keepalive(void);

/* Serialises resp as one wire message into out: u32 LE length, then the JSON (zstd frame when
 * zstd is true). Returns 0, -E2BIG beyond MAPPER_MAX_FRAME, -EIO on a compression failure. */
int mapper_encode(const json_t *resp, bool zstd, struct hs_buf *out);
int mapper_encode_text(const char *json, size_t len, bool zstd, struct hs_buf *out);

/* The MagicDNS FQDN of a node with a trailing dot ("laptop.example.com.", or with the 0.22
 * layout "laptop.alice.example.com."); the bare given name plus "." without a base domain. */
void mapper_fqdn(struct mapper *m, struct state *s, const struct state_node *n, char *out,
                 size_t size);

#endif
