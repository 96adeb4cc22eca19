/* derp: the DERP map sent to clients (from derp.paths files and derp.urls, refreshed every
 * derp.update_frequency when derp.auto_update_enabled, plus the embedded region), and the
 * embedded DERP relay and STUN server.
 *
 * Thread-safety: derpmap_get() may be called from any thread while the refresher runs. The
 * relay runs one epoll thread; derp_server_adopt() may be called from any thread. */
#ifndef HS_DERP_H
#define HS_DERP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config/config.h"
#include "net/net.h"
#include "util/util.h"

#define DERPMAP_MAX_BYTES (4u << 20)

struct derpmap;

/* Loads every URL and path once; a source that fails is logged and left out until it loads
 * (derpmap_start retries it), so this only fails for lack of memory. Regions from
 * later sources win over earlier ones on a region-id clash, in headscale's order (urls first,
 * then paths, so a local file can override a fetched region); a region set to null in a later
 * source removes it (headscale 0.29). Relative paths resolve against cfg->dir. */
int derpmap_new(const struct hs_config *cfg, struct derpmap **out);
/* Starts the refresh thread when derp.auto_update_enabled and sources are configured, or
 * when a source has not loaded yet. With auto-update, every update_frequency it reloads
 * every source; a source that fails keeps its previous regions. After a failure it retries
 * sooner: 5 s, doubling, capped at the period and at 5 min. Without auto-update it retries
 * only the sources that never loaded, and ends once all have. derpmap_free() stops it
 * promptly, aborting a download in progress. */
int derpmap_start(struct derpmap *dm);

/* Called on the refresh thread after the published map changed (push a DERPMap to every
 * session). Set before derpmap_start(). */
typedef void (*derpmap_change_fn)(void *arg);
void derpmap_set_listener(struct derpmap *dm, derpmap_change_fn fn, void *arg);
/* SIGHUP: cfg's sources (derp.urls, derp.paths) and auto-update settings replace the
 * current ones, every source loaded anew, when all of them load, and embedded replaces the
 * embedded region (steals it; NULL: none). Otherwise nothing changes and err names the source
 * and why (-EINVAL). The listener is not called: the caller pushes the map. Same thread as
 * derpmap_start and derpmap_stop. */
int derpmap_reload(struct derpmap *dm, const struct hs_config *cfg, json_t *embedded, char *err,
                   size_t errsize);
/* Stops the refresh thread (no listener call after it returns); the map stays readable. */
void derpmap_stop(struct derpmap *dm);
void derpmap_free(struct derpmap *dm);

/* The current tailcfg.DERPMap ({"Regions":{"<id>":{...}}}), a deep copy the caller owns
 * (decref). Never NULL; dm NULL gives {"Regions":{}}. */
json_t *derpmap_get(struct derpmap *dm);
/* How many sources (derp.urls and derp.paths) are configured, and how many of them have
 * loaded at least once (their regions are in the map). Any thread; dm NULL gives 0 and 0. */
void derpmap_source_counts(struct derpmap *dm, size_t *loaded, size_t *configured);

/* Parses a DERP map document (JSON, or YAML with the same structure as headscale's
 * derp.yaml: regions: {900: {regionid, regioncode, regionname, nodes: [{name, regionid,
 * hostname, ipv4, ipv6, stunport, stunonly, derpport, insecurefortests, ...}]}}) into
 * tailcfg JSON with Go field names. NULL and a message in err on failure. */
json_t *derpmap_parse(const char *text, size_t len, char *err, size_t errsize);

/* Adds (or replaces, on a region-id clash) the embedded server's region; NULL removes it.
 * Steals region. */
void derpmap_set_embedded(struct derpmap *dm, json_t *region);

/* ---- the DERP relay (derp_server.c) and STUN (stun.c) ---- */

#define DERP_HDR_LEN 5
#define DERP_KEY_LEN 32
#define DERP_NONCE_LEN 24
#define DERP_MAX_PACKET (64u << 10)
#define DERP_MAX_CLIENT_INFO (256u << 10) /* Go's server refuses larger before decrypting */
/* Largest frame a client may send: ForwardPacket (two keys + packet) bounds it. */
#define DERP_MAX_FRAME (2 * DERP_KEY_LEN + DERP_MAX_PACKET)
#define DERP_PROTOCOL_VERSION 2

enum derp_frame_type {
    DERP_FRAME_SERVER_KEY = 0x01,
    DERP_FRAME_CLIENT_INFO = 0x02,
    DERP_FRAME_SERVER_INFO = 0x03,
    DERP_FRAME_SEND_PACKET = 0x04,
    DERP_FRAME_RECV_PACKET = 0x05,
    DERP_FRAME_KEEP_ALIVE = 0x06,
    DERP_FRAME_NOTE_PREFERRED = 0x07,
    DERP_FRAME_PEER_GONE = 0x08,
    DERP_FRAME_PEER_PRESENT = 0x09,
    DERP_FRAME_FORWARD_PACKET = 0x0a,
    DERP_FRAME_WATCH_CONNS = 0x10,
    DERP_FRAME_CLOSE_PEER = 0x11,
    DERP_FRAME_PING = 0x12,
    DERP_FRAME_PONG = 0x13,
    DERP_FRAME_HEALTH = 0x14,
    DERP_FRAME_RESTARTING = 0x15,
};

struct derp_frame {
    uint8_t type;
    uint32_t len;
    const uint8_t *payload; /* points into the caller's buffer */
};

/* DERP framing: 1-byte type, 4-byte big-endian length, payload. Returns bytes consumed,
 * -EAGAIN when incomplete, -E2BIG when the length exceeds max (refused before the bytes
 * arrive). No allocation; f->payload points into buf. */
ssize_t derp_frame_parse(const uint8_t *buf, size_t len, uint32_t max, struct derp_frame *f);

/* STUN: answers a Binding Request in req (from addr) with a Binding Success carrying
 * XOR-MAPPED-ADDRESS. Returns the response length in out, or -EINVAL for anything that is
 * not a well-formed binding request (which gets no answer). */
ssize_t stun_answer(const uint8_t *req, size_t len, const struct sockaddr_storage *from,
                    uint8_t *out, size_t outsize);

struct derp_server;

/* Loads or creates derp.server.private_key_path (must differ from the Noise key). */
int derp_server_new(const struct hs_config *cfg, struct derp_server **out);
/* With derp.server.verify_clients: the node a key belongs to, or 0 when the key may not relay
 * (unknown, expired). Called on the relay thread, at ClientInfo and again by rechecks. */
typedef uint64_t (*derp_verify_fn)(void *arg, const uint8_t key[DERP_KEY_LEN]);
void derp_server_set_verifier(struct derp_server *d, derp_verify_fn verify, void *arg);
/* Node node_id changed in a way that may end its right to relay (deleted, expired, new node
 * key): the relay thread asks the verifier again about every connection admitted for that
 * node and closes those it now refuses. Any thread, any time after derp_server_new(); it only
 * queues the id (and never blocks on the relay). */
void derp_server_recheck(struct derp_server *d, uint64_t node_id);
/* Starts the relay thread and the STUN listener (derp.server.stun_listen_addr). */
int derp_server_start(struct derp_server *d);
void derp_server_free(struct derp_server *d); /* stops, closes every client */

/* The hex public key for the Derp-Public-Key header (65 bytes). */
void derp_server_key_hex(const struct derp_server *d, char out[65]);
/* The embedded region (tailcfg.DERPRegion JSON) for the DERP map; caller owns it. */
json_t *derp_server_region(const struct derp_server *d, const struct hs_config *cfg);
/* Whether the relay takes one more client from sa (tuning.derp_max_clients in total and
 * tuning.derp_max_clients_per_ip per address): asked before the upgrade is answered. 0 with
 * *place (NULL when the address is not counted) for derp_server_adopt, which must follow
 * at once; or -EMFILE with *why, a static sentence for the refusal. Front door thread. */
int derp_server_admit(struct derp_server *d, const struct sockaddr_storage *sa,
                      struct net_addr **place, const char **why);
/* Hands an upgraded /derp connection to the relay, which owns it from now on; it sends the
 * ServerKey frame after whatever nc has queued (the 101 head). place: from
 * derp_server_admit, given back when the client goes. */
void derp_server_adopt(struct derp_server *d, struct net_conn *nc, struct net_addr *place);

/* Whether the relay can mesh (derp.server.mesh_key_path is set). */
bool derp_server_meshes(const struct derp_server *d);
/* The other replicas' relays, found in the database (replica.h): links are made to the URLs
 * new in the list and dropped for those no longer in it; mesh_with's peers stay as they are.
 * Any thread; copies urls. Without a mesh key it does nothing. */
void derp_server_mesh_peers(struct derp_server *d, const struct hs_strv *urls);

struct derp_stats {
    uint64_t clients, packets_relayed, bytes_relayed, packets_dropped, bad_frames;
    /* the mesh: our links to the other servers that are up (watching their clients), the
     * servers watching ours, packets we forwarded to one of them and packets they forwarded
     * to a client here */
    uint64_t mesh_peers, mesh_watchers, mesh_packets_out, mesh_packets_in;
};
void derp_server_stats(struct derp_server *d, struct derp_stats *out);

#endif
