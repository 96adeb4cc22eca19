/* derp: the DERP map sent to clients (from derp.paths files and derp.urls, refreshed every
 * derp.update_frequency when derp.auto_update_enabled), and — in a later issue — the embedded
 * DERP relay and STUN server.
 *
 * Thread-safety: derpmap_get() may be called from any thread while the refresher runs. */
#ifndef HS_DERP_H
#define HS_DERP_H

#include "config/config.h"
#include "util/util.h"

#define DERPMAP_MAX_BYTES (4u << 20)

struct derpmap;

/* Loads every URL and path once; a source that fails is logged and skipped, but if none
 * loads while some were configured, returns -EINVAL (with the reason logged). Regions from
 * later sources win over earlier ones on a region-id clash, in headscale's order (urls first,
 * then paths, so a local file can override a fetched region); a region set to null in a later
 * source removes it (headscale 0.29). Relative paths resolve against cfg->dir. */
int derpmap_new(const struct hs_config *cfg, struct derpmap **out);
/* Starts the refresh thread when derp.auto_update_enabled and urls are configured. Every
 * update_frequency it reloads every source (after a failure it retries sooner: 5 s, doubling,
 * capped at the period); a source that fails keeps its previous regions. derpmap_free() stops
 * it promptly, aborting a download in progress. */
int derpmap_start(struct derpmap *dm);

/* Called on the refresh thread after the published map changed (push a DERPMap to every
 * session). Set before derpmap_start(). */
typedef void (*derpmap_change_fn)(void *arg);
void derpmap_set_listener(struct derpmap *dm, derpmap_change_fn fn, void *arg);
/* Stops the refresh thread (no listener call after it returns); the map stays readable. */
void derpmap_stop(struct derpmap *dm);
void derpmap_free(struct derpmap *dm);

/* The current tailcfg.DERPMap ({"Regions":{"<id>":{...}}}), a deep copy the caller owns
 * (decref). Never NULL; dm NULL gives {"Regions":{}}. */
json_t *derpmap_get(struct derpmap *dm);

/* Parses a DERP map document (JSON, or YAML with the same structure as headscale's
 * derp.yaml: regions: {900: {regionid, regioncode, regionname, nodes: [{name, regionid,
 * hostname, ipv4, ipv6, stunport, stunonly, derpport, insecurefortests, ...}]}}) into
 * tailcfg JSON with Go field names. NULL and a message in err on failure. */
json_t *derpmap_parse(const char *text, size_t len, char *err, size_t errsize);

#endif
