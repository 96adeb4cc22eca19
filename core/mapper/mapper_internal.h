/* mapper internals shared by mapper.c, mapper_node.c, mapper_dns.c and mapper_encode.c. */
#ifndef HS_MAPPER_INTERNAL_H
#define HS_MAPPER_INTERNAL_H

#include "mapper/mapper.h"

/* headscale's pseudo user for tagged nodes (types.TaggedDevices). */
#define MAPPER_TAGGED_USER_ID UINT64_C(2147455555)
#define MAPPER_TAGGED_USER_NAME "tagged-devices"
#define MAPPER_TAGGED_DISPLAY_NAME "Tagged Devices"

#define MAPPER_FQDN_MAX 256 /* 255 + NUL */

/* Immutable after mapper_new(): safe to share between threads. */
struct mapper {
    const struct hs_config *cfg;
    struct derpmap *dm;
};

/* o[field] = RFC 3339 time (Go's time.Time JSON form). */
void mapper__set_time(json_t *o, const char *field, int64_t us);
void mapper__set_key(json_t *o, const char *field, const char *prefix, const uint8_t key[32]);
/* The node's Endpoints as a JSON array (empty when none or unparsable). */
json_t *mapper__endpoints(const struct store_node *n);
/* tailcfg.Node with `now` deciding Expired. */
json_t *mapper__node(struct mapper *m, struct state *s, const struct state_node *n,
                     uint64_t viewer, int64_t now);
/* The User id a client sees for n: its owner, or the tagged-devices pseudo user. */
uint64_t mapper__user_id(const struct state_node *n);
/* tailcfg.UserProfile for a User id from mapper__user_id(). */
json_t *mapper__user_profile(struct state *s, uint64_t uid);
/* tailcfg.DNSConfig per headscale (config.go dns + magic DNS routes), never NULL. */
json_t *mapper__dns_config(const struct mapper *m);
/* Adds routes["<zone>."] = [] for each reverse-DNS zone MagicDNS answers for the prefix. */
void mapper__reverse_zones(const struct ip_prefix *p, json_t *routes);

#endif
