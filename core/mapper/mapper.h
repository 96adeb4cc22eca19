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

/* The full MapResponse for node `self`: Node, Peers (every other node; policy filtering comes
 * with the policy issue), UserProfiles, DNSConfig, DERPMap, Domain, PacketFilter (allow-all),
 * CollectServices, ControlTime. NULL if self is unknown. Caller decrefs. */
json_t *mapper_full(struct mapper *m, struct state *s, uint64_t self, int64_t now);

/* The same, as compact JSON text appended to out, and as a wire message (see
 * mapper_encode). -ENOENT if self is unknown. These are what the map streams use: peers come
 * from a per-node cache of their serialised JSON. */
int mapper_full_text(struct mapper *m, struct state *s, uint64_t self, int64_t now,
                     struct hs_buf *out);
int mapper_full_encoded(struct mapper *m, struct state *s, uint64_t self, int64_t now,
                        bool zstd, struct hs_buf *out);

/* One node as tailcfg.Node, as seen by `viewer` (its own Node when n->n.id == viewer). */
json_t *mapper_node(struct mapper *m, struct state *s, const struct state_node *n,
                    uint64_t viewer);

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
 * UserProfiles for the users the changed peers reference. NULL when there is nothing to send. */
json_t *mapper_delta(struct mapper *m, struct state *s, uint64_t self,
                     const struct mapper_changes *ch, int64_t now);

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
