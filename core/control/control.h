/* control: the ts2021 control channel. Upgraded /ts2021 connections (Noise transport carrying
 * HTTP/2, h2c with prior knowledge) live in one epoll event loop thread, not a thread each;
 * requests are handed to a small worker pool, whose replies (and map-stream messages) go back
 * to the loop through a queue. The loop does I/O only: it never touches the database.
 *
 * Thread model: control_upgrade_async() queues the Noise handshake for a worker, which hands
 * the socket to the loop; handlers run on workers; control_reply()/control_stream_*() may be
 * called from any thread. */
#ifndef HS_CONTROL_H
#define HS_CONTROL_H

#include <stdbool.h>
#include <stdint.h>

#include "keys/keys.h"
#include "metrics/metrics.h"
#include "net/net.h"
#include "noise/noise.h"
#include "util/util.h"

#define CONTROL_MAX_REQUEST_BODY (1u << 20)
#define CONTROL_MAX_PATH 512
#define CONTROL_MAX_HEADER_BYTES 16384
#define CONTROL_MAX_STREAMS 64           /* concurrent HTTP/2 streams per connection */
/* Request bodies one connection may have half received at once, all its streams together:
 * past it the stream that would grow them is refused (RST_STREAM REFUSED_STREAM). */
#define CONTROL_MAX_CONN_BODY (2u << 20)
#define CONTROL_MAX_STREAM_BACKLOG (32u << 20) /* unsent bytes per stream before we give up */
#define CONTROL_MAX_CONN_TX (8u << 20)  /* encrypted bytes waiting for the socket */
/* Reply bytes waiting for all clients together above which new full maps wait a little
 * (control_wait_backlog): after a restart thousands of clients ask at once, and maps built
 * faster than the clients read would only pile up in memory (a gigabyte at 5000 nodes). */
#define CONTROL_BACKLOG_SOFT (64u << 20)
/* A connection with no open stream and no traffic for this long is closed (Go's client
 * drops idle connections sooner; this only reaps ones that will never be used). */
#define CONTROL_IDLE_TIMEOUT_US (10 * 60 * INT64_C(1000000))

struct control;

/* One HTTP/2 request received over a Noise connection. Owned by the handler once delivered;
 * free with control_request_free(). */
struct control_request {
    uint64_t conn_id;
    int32_t stream_id;
    char method[16];
    char path[CONTROL_MAX_PATH];
    struct hs_buf body;
    uint8_t machine_key[KEY_LEN]; /* authenticated by the Noise handshake */
    uint16_t capver;              /* from the handshake */
    /* The client's address as the front door saw it (IPv4 as ::ffff:a.b.c.d), all zero when
     * unknown (not IP): what per-source limits count against. */
    uint8_t client_ip[16];
};
void control_request_free(struct control_request *rq);

struct control_handlers {
    void *ctx;
    /* Worker thread. Must answer eventually with control_reply() (or stream with
     * control_stream_start/write/end), now or later from any thread. Owns rq. */
    void (*request)(void *ctx, struct control_request *rq);
    /* Loop thread: the client closed a stream (or the connection). Keep it short. */
    void (*stream_closed)(void *ctx, uint64_t conn_id, int32_t stream_id);
    /* Loop thread, about once a second (keep-alives, timers). */
    void (*tick)(void *ctx);
};

struct control *control_new(const struct key_pair *noise_key, const struct control_handlers *h,
                            int workers);
int control_start(struct control *c);
void control_free(struct control *c); /* stops the threads, closes every connection */

/* GET /key body: {"legacyPublicKey":"mkey:000…","publicKey":"mkey:<hex>"}; caller frees. */
char *control_key_json(const struct control *c);

/* An upgrade request for /ts2021, as the front door hands it over. */
struct control_upgrade_req {
    struct net_conn *nc;     /* owned by the control from the call on */
    char handshake_b64[512]; /* X-Tailscale-Handshake: base64 of the 101-byte initiation */
    char ok_head[256];       /* the 101 response, sent before the handshake response */
    size_t ok_len;
    bool websocket;          /* frame everything after ok_head as WebSocket messages */
    struct sockaddr_storage addr; /* the client's: the log, the per-address limits */
    socklen_t addrlen;
    bool unlimited;          /* from a trusted proxy: its clients all share its address */
};

/* What clients may make the control loop do or hold; set before control_start(). */
struct control_limits {
    /* Noise handshakes one client address may start per minute, all at once if it likes
     * (IPv6: per /64); past that an upgrade is answered 429 before any work is spent on
     * it. 0: no limit. */
    unsigned handshakes_per_minute;
    /* Request bodies held for all connections together, from their first byte until a
     * worker takes the request: past it the stream that would grow them is refused
     * (RST_STREAM REFUSED_STREAM, which clients retry). 0: no limit. */
    size_t body_bytes;
};
void control_set_limits(struct control *c, const struct control_limits *l);

/* Runs the Noise responder on a worker (four X25519 and a dozen hashes: the thread that
 * accepts connections must not queue everything else behind a connect storm's). Success:
 * ok_head and the handshake response go out and the loop owns the connection. Failure: a
 * 400 with the reason, logged, and the connection is closed. rq is copied. */
void control_upgrade_async(struct control *c, const struct control_upgrade_req *rq);

/* Waits until the reply bytes not yet taken by the sockets fall under CONTROL_BACKLOG_SOFT,
 * or timeout_us passed (clients that stopped reading must not stall everyone). */
void control_wait_backlog(struct control *c, int64_t timeout_us);

/* Replies: body is copied. end=false keeps the stream open for control_stream_write(). */
void control_reply(struct control *c, uint64_t conn_id, int32_t stream_id, int status,
                   const char *content_type, const void *body, size_t len, bool end);
/* 429 Too Many Requests with a text body and Retry-After: seconds (Tailscale's client waits
 * that long before it asks again), ending the stream. */
void control_reply_busy(struct control *c, uint64_t conn_id, int32_t stream_id,
                        unsigned retry_after_s, const char *text);
void control_stream_write(struct control *c, uint64_t conn_id, int32_t stream_id,
                          const void *data, size_t len);
/* The same, taking body's contents instead of copying them (body is left empty): a full map
 * of thousands of peers is a megabyte, and a reconnect storm sends thousands. */
void control_reply_buf(struct control *c, uint64_t conn_id, int32_t stream_id, int status,
                       const char *content_type, struct hs_buf *body, bool end);
void control_stream_write_buf(struct control *c, uint64_t conn_id, int32_t stream_id,
                              struct hs_buf *data);
void control_stream_end(struct control *c, uint64_t conn_id, int32_t stream_id);
void control_close_conn(struct control *c, uint64_t conn_id);

/* Counters for /metrics and logs. */
struct control_stats {
    uint64_t conns_open, conns_total, streams_open, requests_total, bad_frames;
};
void control_get_stats(struct control *c, struct control_stats *out);

/* ---- the protocol service: /machine/register and /machine/map on top of the loop ---- */

struct control_service;
struct hs_config;
struct auth;
struct state;
struct mapper;

struct control_service_deps {
    const struct hs_config *cfg;
    struct auth *auth;
    struct state *state;
    struct mapper *mapper;
    const struct key_pair *noise_key;
};

int control_service_new(const struct control_service_deps *d, struct control_service **out);
int control_service_start(struct control_service *s);
void control_service_free(struct control_service *s);
struct control *control_service_control(struct control_service *s);
/* Every connected node gets a full map soon (the DERP map changed, for instance). */
void control_service_resync(struct control_service *s);
/* Every connected node gets the new DNSConfig soon, alone in a message of its own (the extra
 * records file changed). */
void control_service_dns_changed(struct control_service *s);

/* Counts of the map sessions, for /metrics. Any thread. */
enum control_map_kind { CONTROL_MAP_FULL, CONTROL_MAP_DELTA, CONTROL_MAP_KEEPALIVE,
                        CONTROL_MAP_KINDS };
struct control_service_stats {
    uint64_t sessions;       /* map streams open */
    uint64_t sessions_ended; /* map streams closed by the client or its connection */
    uint64_t sessions_cancelled; /* map streams we ended (their node was deleted) */
    uint64_t lite_updates;   /* map requests that only report (OmitPeers, no stream) */
    uint64_t sent[CONTROL_MAP_KINDS];       /* map messages queued, by kind */
    uint64_t sent_bytes[CONTROL_MAP_KINDS]; /* their bytes as written (compressed or not) */
};
void control_service_get_stats(struct control_service *s, struct control_service_stats *out);
/* One open map stream, for /debug. */
struct control_session_info {
    uint64_t node_id, conn_id;
    int32_t stream_id;
    int64_t opened_at;        /* us since the epoch */
    uint64_t messages, bytes; /* map messages sent on it, and their bytes as written */
    int last_kind;            /* enum control_map_kind of the last one; -1: none yet */
    uint16_t capver;
    bool zstd;
};
/* The open map streams of node_id (0: of every node), newest first; *out is the caller's
 * (free()), NULL when there are none. Any thread. */
size_t control_service_sessions(struct control_service *s, uint64_t node_id,
                                struct control_session_info **out);
/* The batches of changes sent out, as histograms that live as long as s: how long the
 * first node change waited for its batch (us), how long a batch took to build and queue
 * (us), and how many node changes it carried (a node once per kind of change). */
enum control_batch_hist { CONTROL_BATCH_WINDOW, CONTROL_BATCH_DURATION, CONTROL_BATCH_SIZE,
                          CONTROL_BATCH_HISTS };
const struct metrics_hist *control_service_batch_hist(struct control_service *s,
                                                      enum control_batch_hist which);

/* HEAD /machine/ping-response?id=ID (over Noise, where probes ask for the answer, or on the
 * front door, as headscale): completes the HA health probe with that id; false when no probe
 * out has it (unknown, answered, or judged). Any thread. */
bool control_service_ping_answered(struct control_service *s, const char *id);

/* Oldest client accepted: Tailscale v1.80 (capability version 113), as headscale. */
#define CONTROL_MIN_CAPVER 113

#endif
