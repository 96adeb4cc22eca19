/* Shared by the relay's source files (derp_server.c, registry.c). */
#ifndef HS_DERP_SERVER_INTERNAL_H
#define HS_DERP_SERVER_INTERNAL_H

#include <pthread.h>

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

struct dclient {
    uint64_t id;
    struct net_conn *nc; /* owned: the socket, TLS, WebSocket framing */
    uint8_t key[DERP_KEY_LEN];
    uint64_t node_id; /* the verifier's answer at admission; 0 without verify_clients */
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
    uint64_t rechecks[DERP_MAX_RECHECKS]; /* node ids to verify again */
    size_t nrechecks;
    bool recheck_all;   /* too many queued: verify every client */
    struct dclient *reg[DERP_REG_BUCKETS];
    struct dclient *all;
    struct dclient *dirty;
    struct dclient *unread; /* read again next round, without waiting for epoll */
    struct derp_stats stats; /* __atomic */
};

struct dclient *reg_find(struct derp_server *d, const uint8_t key[DERP_KEY_LEN]);
void reg_add(struct derp_server *d, struct dclient *c);
void reg_remove(struct derp_server *d, struct dclient *c);

#endif
