/* Shared by the relay's source files (derp_server.c, registry.c, and the mesh between
 * replicas: mesh.c, mesh_routes.c). */
#ifndef HS_DERP_SERVER_INTERNAL_H
#define HS_DERP_SERVER_INTERNAL_H

#include <openssl/ssl.h>
#include <pthread.h>

#include "config/config.h"
#include "derp/derp.h"
#include "keys/keys.h"
#include "net/net.h"

#define DERP_REG_BUCKETS 4096
#define DERP_MAX_SENDERS 16          /* remembered per client, for PeerGone on disconnect */
#define DERP_TX_PACKET_LIMIT (512u << 10) /* queued bytes past which packets are dropped */
#define DERP_TX_HARD_LIMIT (DERP_TX_PACKET_LIMIT + (64u << 10)) /* control frames too */
#define DERP_HANDSHAKE_US (10 * INT64_C(1000000))
#define DERP_WRITE_STALL_US (5 * INT64_C(1000000)) /* a reader this stuck is dropped */
#define DERP_KEEPALIVE_US (60 * INT64_C(1000000))
#define DERP_RX_SIZE (DERP_HDR_LEN + DERP_MAX_FRAME)
#define DERP_READ_BUDGET (256u << 10) /* per client and loop round: a flooding sender
                                       * cannot starve the others */
#define DERP_RX_INITIAL 8192 /* grown for a large frame, shrunk back when drained */
#define DERP_MAX_RECHECKS 1024 /* queued node ids; past it every client is checked again */

#define STAT_ADD(f, v) __atomic_add_fetch(&(f), (uint64_t)(v), __ATOMIC_RELAXED)

/* ---- the mesh (derper's --mesh-with) ---- */
#define DERP_MESH_MAX_PEERS 64     /* derp.server.mesh_with entries */
#define DERP_MESH_MAX_WATCHERS 64  /* mesh peers subscribed to our connections */
#define DERP_MESH_MAX_VIA 8        /* servers remembered per remote key (first one wins) */
#define DERP_MESH_MAX_ROUTES (1u << 21) /* remote keys: far above any real region */
/* A watcher is sent one PeerPresent per client at once: room for a large region. */
#define DERP_MESH_TX_LIMIT (64u << 20)
#define DERP_MESH_RETRY_MIN_US (1 * INT64_C(1000000))
#define DERP_MESH_RETRY_MAX_US (30 * INT64_C(1000000))
#define DERP_MESH_STABLE_US (10 * INT64_C(1000000)) /* up this long: retry fast again */
#define DERP_MESH_SILENCE_US (150 * INT64_C(1000000)) /* peers send KeepAlive every 60 s */
#define DERP_PEER_PRESENT_LEN (DERP_KEY_LEN + 16 + 2 + 1) /* key, IPv6, port, flags */
#define DERP_PRESENT_REGULAR 0x01
#define DERP_PRESENT_MESH_PEER 0x02

/* Which mesh peers hold which remote key. Owned by the relay thread. */
struct mroute {
    uint8_t key[DERP_KEY_LEN];
    uint8_t via[DERP_MESH_MAX_VIA]; /* peer indices in the order they announced the key */
    uint8_t nvia;
    struct mroute *next;
};

struct mesh_routes {
    struct mroute *b[DERP_REG_BUCKETS];
    size_t n;
};

/* 0 added, 1 already known through that peer, -E2BIG when the table (or the key's list of
 * peers) is full. */
int derp__route_add(struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN], uint8_t peer);
/* Forgets that peer holds key; true when no peer holds it any more. */
bool derp__route_remove(struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN], uint8_t peer);
/* The peer to forward to (the first that announced the key and still has it), or -1. */
int derp__route_lookup(const struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN]);
/* Forgets every key learnt from peer (its connection broke); gone() is called for each key
 * that no peer holds any more. */
void derp__route_drop_peer(struct mesh_routes *t, uint8_t peer,
                       void (*gone)(void *arg, const uint8_t key[DERP_KEY_LEN]), void *arg);
void derp__routes_free(struct mesh_routes *t);

enum mesh_state {
    MESH_IDLE,       /* waiting for next_try */
    MESH_CONNECTING, /* TCP connect in flight */
    MESH_TLS,        /* TLS handshake (https:// entries) */
    MESH_UPGRADING,  /* GET /derp sent, waiting for 101 */
    MESH_KEYING,     /* waiting for the ServerKey frame */
    MESH_HANDSHAKE,  /* ClientInfo + WatchConns sent, waiting for ServerInfo */
    MESH_WATCHING,   /* receiving PeerPresent / PeerGone; packets may be forwarded */
    MESH_SELF,       /* the entry is this server: never dialled again */
    MESH_OFF,        /* a free slot (a found peer whose replica is gone) */
};

/* Our connection to one other server of the region. */
struct mesh_peer {
    const char *entry; /* the config's text or the found URL (owned when found), for logs */
    bool found;        /* from the replicas table, not from mesh_with */
    struct config_mesh_peer addr;
    uint8_t index;
    enum mesh_state st;
    int fd;
    SSL *ssl; /* https:// entries, while connected */
    bool epollout;
    bool listed; /* got a PeerPresent on this connection */
    uint8_t *rx; /* DERP_RX_SIZE bytes while connected */
    size_t rxlen;
    struct hs_buf tx;
    int64_t next_try, backoff;
    int64_t deadline;      /* of the handshake (monotonic us) */
    int64_t connected_at;  /* when WATCHING began */
    int64_t last_rx;
    int64_t stalled_since; /* bytes queued and none written since */
    struct derp_server *srv;
};

struct dclient {
    uint64_t id;
    struct net_conn *nc; /* owned: the socket, TLS, WebSocket framing */
    uint8_t key[DERP_KEY_LEN];
    uint64_t node_id; /* the verifier's answer at admission; 0 without verify_clients */
    bool mesh;        /* ClientInfo carried our mesh key: another server of the region */
    bool watcher;     /* a mesh peer that sent WatchConns */
    uint8_t addr16[16]; /* remote IP (v4-mapped) and port, for PeerPresent */
    struct net_addr *place; /* its address's count (derp_server_admit), or NULL */
    uint16_t port;
    bool ready;       /* ClientInfo accepted */
    bool registered;  /* in the key registry */
    bool closing;
    bool abort;       /* closing because it does not read: reset, do not drain */
    bool epollout;
    bool dirty;       /* has bytes queued since the last flush */
    bool unread;      /* stopped reading at its budget: more input waits (maybe inside TLS) */
    uint8_t *rx;
    size_t rxlen, rxcap;
    struct hs_buf tx;
    int64_t deadline;      /* handshake deadline (monotonic us), 0 once ready */
    int64_t next_keepalive;
    int64_t stalled_since; /* first failed write with bytes pending, 0 when draining */
    int64_t peergone_window; /* rate limit for PeerGone(not here) */
    unsigned peergone_sent;
    uint8_t senders[DERP_MAX_SENDERS][DERP_KEY_LEN];
    size_t nsenders, next_sender;
    struct dclient *hnext;     /* registry chain */
    struct dclient *next, *prev; /* all clients */
    struct dclient *dirty_next;
    struct dclient *unread_next;
    struct derp_server *srv;
};

struct pending {
    struct dclient *c;
    struct pending *next;
};

struct derp_server {
    struct key_pair key;
    const struct hs_config *cfg;
    derp_verify_fn verify;
    void *verify_arg;
    int epfd, evfd, stun_fd;
    pthread_t thread;
    bool running;
    uint64_t next_id;
    pthread_mutex_t mu; /* inbox and rechecks */
    struct pending *inbox;
    size_t nclients;        /* adopted and not yet freed (__atomic: adopted elsewhere) */
    struct net_addrs *addrs; /* clients per address */
    uint64_t rechecks[DERP_MAX_RECHECKS]; /* node ids to verify again */
    size_t nrechecks;
    bool recheck_all;   /* too many queued: verify every client */
    struct dclient *reg[DERP_REG_BUCKETS];
    struct dclient *all;
    struct dclient *dirty;
    struct dclient *unread; /* read again next round, without waiting for epoll */
    struct derp_stats stats; /* __atomic */
    /* mesh */
    uint8_t mesh_key[DERP_KEY_LEN];
    bool has_mesh_key;
    struct dclient *watchers[DERP_MESH_MAX_WATCHERS];
    size_t nwatchers;
    struct mesh_peer *mesh; /* derp.server.mesh_with in order, then peers the replicas found;
                             * mesh_cap slots, nmesh of them used (MESH_OFF ones free) */
    size_t mesh_cap;
    struct hs_strv found_next; /* the replicas' latest list, under mu */
    bool found_new;            /* under mu */
    SSL_CTX *mesh_tls;      /* verifies https:// peers (system CAs, SSL_CERT_FILE) */
    size_t nmesh;
    struct mesh_routes routes;
};

struct dclient *reg_find(struct derp_server *d, const uint8_t key[DERP_KEY_LEN]);
void reg_add(struct derp_server *d, struct dclient *c);
void reg_remove(struct derp_server *d, struct dclient *c);

/* ---- mesh.c (relay thread unless noted) ---- */
/* Reads derp.server.mesh_key_path and sets up a peer per mesh_with entry (derp_server_new). */
int derp__mesh_init(struct derp_server *d);
void derp__mesh_fini(struct derp_server *d);
/* Dials the peers whose retry time came; fails the ones stuck or silent. Once a second. */
void derp__mesh_tick(struct derp_server *d);
/* Applies the replicas' latest list of relays (derp_server_mesh_peers): links to new ones,
 * drops those gone. On the relay thread, woken by the eventfd. */
void derp__mesh_sync(struct derp_server *d);
bool derp__mesh_owns(const struct derp_server *d, const void *ptr); /* an epoll tag of a peer */
void derp__mesh_event(struct mesh_peer *p, uint32_t events);
void derp__mesh_flush(struct derp_server *d);
/* Forwards a packet from src to a key held by another server: 0 when queued there,
 * -ENOENT when no server announced the key, -ENOBUFS when its link is backed up. */
int derp__mesh_forward(struct derp_server *d, const uint8_t src[DERP_KEY_LEN],
                   const uint8_t dst[DERP_KEY_LEN], const uint8_t *pkt, size_t len);
/* The 32 bytes of a mesh key in derper's file format: 64 hex digits, whitespace around. */
int derp__mesh_parse_key(const char *text, size_t len, uint8_t out[DERP_KEY_LEN]);

/* derp_server.c, for the mesh: key no longer reachable through any server of the region;
 * local clients that got packets from it are told (PeerGone). */
void derp__remote_gone(struct derp_server *d, const uint8_t key[DERP_KEY_LEN]);

#endif
