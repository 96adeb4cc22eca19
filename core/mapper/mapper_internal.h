/* mapper internals shared by mapper.c, mapper_node.c, mapper_dns.c and mapper_encode.c. */
#ifndef HS_MAPPER_INTERNAL_H
#define HS_MAPPER_INTERNAL_H

#include <pthread.h>

#include "mapper/mapper.h"

/* headscale's pseudo user for tagged nodes (types.TaggedDevices). */
#define MAPPER_TAGGED_USER_ID UINT64_C(2147455555)
#define MAPPER_TAGGED_USER_NAME "tagged-devices"
#define MAPPER_TAGGED_DISPLAY_NAME "Tagged Devices"

#define MAPPER_FQDN_MAX 256 /* 255 + NUL */

/* Nodes per cached run of peers (mapper_runs.c) unless tuning.map_peer_run says otherwise.
 * Frames this big compress almost as well as one frame for the whole map (bench_mapper, 5000
 * nodes: 118.7 KB against 113.2 KB; runs of 64: 166 KB). A run holds two nodes or more. */
#define MAPPER_RUN_DEFAULT 256
/* The viewer's own run is cut into spans this many times smaller, cached the same way: only
 * the viewer's own span is compressed per viewer. A reconnect storm of thousands of nodes
 * would otherwise compress a whole run, some 300 KB of text, for each of them. bench_mapper,
 * 5000 nodes: 124.5 KB and 0.28 ms a full map, against 118.7 KB and 0.38 ms without spans
 * (16 spans: 130.7 KB, 0.26 ms). */
#define MAPPER_SPANS_PER_RUN 8

struct mapper_run;

/* Cached zstd frames of consecutive peers, slot k holding nodes [k * size, (k + 1) * size). */
struct mapper_runs {
    size_t size;              /* nodes per run, 2 or more */
    pthread_mutex_t mu;
    struct mapper_run **v;    /* NULL or possibly stale */
    size_t n;
};

/* Shared between threads: cfg and dm are fixed after mapper_new(); the run cache has its
 * own lock. */
struct mapper {
    const struct hs_config *cfg;
    struct derpmap *dm;
    struct mapper_runs runs;  /* of tuning.map_peer_run nodes */
    struct mapper_runs spans; /* the same, MAPPER_SPANS_PER_RUN times smaller */
    unsigned char hash_key[16]; /* for mapper__hash (crypto_shorthash), drawn at start */
    /* The last pair of nets compared for viewers that see everyone in both (mapper_policy.c):
     * ids that appeared and vanished between net generations diff_a and diff_b. */
    pthread_mutex_t diff_mu;
    uint64_t diff_a, diff_b;
    uint64_t *appeared, *vanished;
    size_t nappeared, nvanished;
    /* zstd frames of the long texts policies share between nodes (policy_part), by hash */
    pthread_mutex_t parts_mu;
    struct mapper__zpart *zparts;
    size_t nzparts, zparts_bytes;
    /* The records of dns.extra_records_path, replaced whenever the file changes; once set
     * they stand in for dns.extra_records (the two are exclusive in the config). */
    pthread_mutex_t dns_mu;
    struct dns_record *file_records;
    size_t nfile_records;
    bool file_records_set;
};

/* The DNS settings in force: the state's (state_dns_get), or cfg's dns section for a state
 * never given them (tools, unit tests). Release with mapper__dns_drop. */
struct mapper__dns_ref {
    const struct state_dns *snap;
    struct dns_settings view;
};
const struct dns_settings *mapper__dns_take(const struct mapper *m, struct state *s,
                                            struct mapper__dns_ref *r);
void mapper__dns_drop(struct mapper__dns_ref *r);

/* Whom a viewer sees under a compiled policy (state read lock held). */
struct mapper__view {
    struct state_net *net;
    size_t self;   /* the viewer's index in net; STATE_NET_NONE: it sees no one */
    bool everyone; /* no policy and net compiled for these nodes: it sees every other node */
};
/* net NULL: the current one. */
void mapper__view_init(struct mapper__view *v, struct state *s, uint64_t self,
                       struct state_net *net);
/* Whether the viewer sees state_node_at(s, i). */
bool mapper__view_sees(const struct mapper__view *v, struct state *s, size_t i);

/* A node's policy texts: PacketFilter rules, SSH rules, CapMap (JSON). The filter's long
 * shared texts are held by reference (filter_parts), not copied into filter. */
struct mapper__texts {
    struct hs_buf filter, ssh, capmap;
    struct policy_parts filter_parts;
};
void mapper__texts_init(struct mapper__texts *t);
void mapper__texts_free(struct mapper__texts *t);
/* Node i of net (STATE_NET_NONE: a node the net does not know: deny all, no SSH, no caps). */
int mapper__texts_get(const struct state_net *net, size_t i, struct mapper__texts *t);
/* told = net and the texts' hashes. */
void mapper__texts_told(const struct mapper *m, const struct mapper__texts *t,
                        struct state_net *net, struct mapper_policy_state *told);
/* "[]" (or nothing): no rules. */
bool mapper__rules_empty(const struct hs_buf *b);
uint64_t mapper__hash(const struct mapper *m, const char *text, size_t len);
/* A node's own Node (node i of net): the capabilities every node gets for itself (SSH, admin,
 * as headscale grants them) and the policy's nodeAttrs for it, added to its CapMap. */
void mapper__self_capmap(const struct mapper *m, json_t *node, const struct state_net *net,
                         size_t i);

/* o[field] = RFC 3339 time (Go's time.Time JSON form). */
void mapper__set_time(json_t *o, const char *field, int64_t us);
void mapper__set_key(json_t *o, const char *field, const char *prefix, const uint8_t key[32]);
/* The node's Endpoints as a JSON array (empty when none or unparsable). */
json_t *mapper__endpoints(const struct store_node *n);
/* Whether n's node key expired by `now`: it then sees no peers, and its peers see it
 * Expired, without endpoints and under a broken key (mapper_node.c). */
bool mapper__expired(const struct store_node *n, int64_t now);
/* tailcfg.Node with `now` deciding Expired, as viewer sees it (0: the default view, what the
 * peer cache holds) under net (NULL: the current one). */
json_t *mapper__node(struct mapper *m, struct state *s, const struct state_node *n,
                     uint64_t viewer, int64_t now, const struct state_net *net);

/* Routes of a peer in AllowedIPs (mapper_routes.c); v borrows from the state node or net. */
struct mapper__routes {
    const char **v;
    size_t n;
};
/* The same with the routes given. */
json_t *mapper__node_routes(struct mapper *m, struct state *s, const struct state_node *n,
                            uint64_t viewer, int64_t now, const struct mapper__routes *r);
/* Whether two route lists hold the same routes. */
bool mapper__same_routes(const struct mapper__routes *x, const struct mapper__routes *y);
/* n as a peer without its routes, cached like mapper__peer_json. */
const char *mapper__peer_json_bare(struct mapper *m, struct state *s, const struct state_node *n,
                                   int64_t now);
void mapper__routes_free(struct mapper__routes *r);
/* n's default routes: the exit routes it serves and the subnet routes it is primary for. */
void mapper__default_routes(const struct state_node *n, struct mapper__routes *out);
/* The routes viewer gets in n's AllowedIPs under net (viewer 0 or n itself: the default). */
void mapper__view_routes(const struct state_net *net, uint64_t viewer, const struct state_node *n,
                         struct mapper__routes *out);
/* Whether viewer gets n's default routes (then n's cached JSON is its view). */
bool mapper__view_default(const struct state_net *net, uint64_t viewer,
                          const struct state_node *n);
/* A hash of n's id and the routes viewer gets from it: plans that send n to viewers alike may
 * share a delta. */
uint64_t mapper__view_hash(const struct state_net *net, uint64_t viewer,
                           const struct state_node *n);
/* Whether viewer gets other routes from n under b than under a. */
bool mapper__views_differ(const struct state_net *a, const struct state_net *b, uint64_t viewer,
                          const struct state_node *n);
/* n as a peer (viewer 0), serialised once and cached in the state node. */
const char *mapper__peer_json(struct mapper *m, struct state *s, const struct state_node *n,
                              int64_t now);
void mapper__runs_init(struct mapper_runs *c, size_t size);
void mapper__runs_free(struct mapper_runs *c);
/* Appends the zstd frame of the run of nodes at state indexes [lo, lo + n), lo a multiple of
 * c->size, from c (built or rebuilt when any of them changed). Its text is their peer JSON
 * joined by commas, with a comma before the first too unless lo is 0. */
int mapper__append_run(struct mapper *m, struct mapper_runs *c, struct state *s, size_t lo,
                       size_t n, int64_t now, struct hs_buf *out);
/* One zstd frame of text[0..len) appended to out. */
int mapper__zstd_frame(struct hs_buf *out, const char *text, size_t len);

/* Where a message body goes as it is written. Plain: everything into text. zstd: text is
 * gathered, and before a shared part (policy_part) it goes out as a frame of its own into z,
 * followed by the part's frame, compressed once and cached in the mapper: thousands of
 * nodes' filters carry the same 150 KB of sources, which then cost a copy each. */
struct mapper__sink {
    struct mapper *m;
    struct hs_buf *text;
    struct hs_buf *z; /* NULL: plain */
};
/* own[0..len) with parts spliced in at their offsets. */
int mapper__sink_put(struct mapper__sink *k, const char *own, size_t len,
                     const struct policy_parts *parts);
/* zstd: what text holds, as a frame into z (text emptied). Plain: nothing. */
int mapper__sink_flush(struct mapper__sink *k);
void mapper__zparts_free(struct mapper *m);
/* The filter hash a node is told: its own text and its parts' hashes and places. */
uint64_t mapper__filter_hash(const struct mapper *m, const struct mapper__texts *t);
/* A wire message is begun (its length left open), filled, then ended: the length is written,
 * or on rc < 0 (or a body past MAPPER_MAX_FRAME) everything from begin is taken back. */
int mapper__begin_message(struct hs_buf *out, size_t *start);
int mapper__end_message(struct hs_buf *out, size_t start, int rc);
/* The User id a client sees for n: its owner, or the tagged-devices pseudo user. */
uint64_t mapper__user_id(const struct state_node *n);
/* tailcfg.UserProfile for a User id from mapper__user_id(). */
json_t *mapper__user_profile(struct state *s, uint64_t uid);
/* tailcfg.DNSConfig per headscale (config.go dns + magic DNS routes), never NULL. For the
 * 0.22 naming (<name>.<user>.<base_domain>) it depends on the viewer: its own user's domain is
 * a search domain and each user among it and its peers (uids) gets a MagicDNS route. */
json_t *mapper__dns_config(struct mapper *m, struct state *s, const struct state_node *self,
                           json_t *capmap, const uint64_t *uids, size_t nuids);
/* NextDNS resolvers of dns made self's: the profile of a "nextdns:<profile>" attribute in
 * capmap (its own CapMap), and its name, OS and address as query parameters unless
 * "nextdns:no-device-info" is there. */
void mapper__nextdns(json_t *dns, const struct state_node *self, json_t *capmap);
/* A user's DNS label as the 0.22 layout writes it into names (lower case, '@' → '.'). */
void mapper__user_label(const struct mapper *m, struct state *s, uint64_t user_id, char *out,
                        size_t size);
/* Adds routes["<zone>."] = [] for each reverse-DNS zone MagicDNS answers for the prefix. */
void mapper__reverse_zones(const struct ip_prefix *p, json_t *routes);

#endif
