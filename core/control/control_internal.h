/* Shared between the control/ source files only. */
#ifndef HS_CONTROL_INTERNAL_H
#define HS_CONTROL_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <pthread.h>

#include "control/control.h"
#include "net/net.h"

#define CONN_HASH_BUCKETS 4096

/* Counters are written by the loop and read by anyone: relaxed atomics are enough. */
#define STAT_ADD(field, v) __atomic_add_fetch(&(field), (uint64_t)(int64_t)(v), __ATOMIC_RELAXED)

struct stream {
    int32_t id;
    char method[16];
    char path[CONTROL_MAX_PATH];
    size_t header_bytes;
    struct hs_buf body;
    bool too_big;      /* its body passed CONTROL_MAX_REQUEST_BODY: answered 413 */
    bool refused;      /* over a body budget: reset with REFUSED_STREAM */
    bool dispatched;   /* handed to a worker */
    bool responded;    /* response headers submitted */
    bool deferred;     /* the data provider ran dry and waits for more */
    bool end;          /* no more data will come */
    struct hs_buf out; /* response bytes not yet taken by nghttp2 */
    struct stream *next;
};

#define CONTROL_READ_CHUNK 65536
#define CONTROL_READ_BUDGET (256u << 10) /* per connection and round: none starves the rest */

struct conn {
    uint64_t id;
    struct net_conn *nc; /* owned: the socket, TLS, WebSocket framing */
    struct noise_transport nt;
    uint8_t machine_key[KEY_LEN];
    uint16_t capver;
    uint8_t client_ip[16]; /* see control_request */
    uint8_t *rx; /* NOISE_MAX_FRAME bytes while a frame is incomplete, else NULL: idle
                  * connections (thousands of map streams) hold no receive buffer */
    size_t rxlen;
    struct hs_buf tx; /* sealed bytes waiting for the socket */
    size_t nstreams;
    size_t body_bytes; /* request bodies its streams are receiving (CONTROL_MAX_CONN_BODY) */
    nghttp2_session *h2;
    struct h2_map *h2maps; /* nghttp2's blocks of 16 KiB and more, each its own mapping */
    bool h2_dirty;         /* its frame buffer was written since the last h2_trim() */
    struct stream *streams;
    bool closing;
    bool epollout;
    bool unread;       /* stopped at the read budget: more input waits (maybe inside TLS) */
    bool attn;         /* on the loop's attention list */
    struct conn *anext;
    int64_t last_active; /* monotonic us of the last byte in either direction */
    struct conn *hnext; /* hash chain */
    struct control *ctl;
};

enum msg_kind { MSG_ADOPT, MSG_REPLY, MSG_DATA, MSG_END, MSG_CLOSE };

/* Work for the loop thread, queued from any thread. */
struct msg {
    enum msg_kind kind;
    uint64_t conn_id;
    int32_t stream_id;
    int status;
    const char *content_type;
    unsigned retry_after; /* MSG_REPLY: seconds for a Retry-After header; 0 = none */
    bool end;
    struct hs_buf data;
    struct conn *adopt; /* MSG_ADOPT: a new connection (not yet in the table) */
    struct msg *next;
};

/* Work for the pool: a request, or an upgrade's handshake. */
struct job {
    struct control_request *rq;
    struct control_upgrade_req *up;
    struct job *next;
};
struct jobq {
    struct job *head, *tail;
};
/* Handshakes go first: a third of a millisecond each, against milliseconds for a full map,
 * and a client waits on each before it can ask for anything. */
enum { JOBQ_HANDSHAKE, JOBQ_REQUEST, JOBQ_COUNT };

struct control {
    struct key_pair key;
    struct control_handlers h;
    struct reglimit *handshakes; /* per client address; NULL: no limit */
    int64_t handshake_log_at;    /* the last refusal logged */
    size_t body_bytes;           /* request bodies held (__atomic), see control_limits */
    size_t max_body_bytes;       /* 0: no limit */
    int64_t body_log_at;         /* the last refused stream logged */
    int epfd, evfd;
    pthread_t loop_thread;
    bool running;
    uint64_t next_conn_id;

    pthread_mutex_t qmu; /* protects inbox */
    struct msg *inbox_head, *inbox_tail;

    pthread_mutex_t jmu; /* protects jobs, stopping */
    pthread_cond_t jcond;
    struct jobq jobs[JOBQ_COUNT];
    bool stopping;
    pthread_t *workers;
    int nworkers;

    /* Reply bytes queued for the loop or in streams' buffers, not yet sealed: atomics. */
    size_t backlog;
    int backlog_waiters;
    pthread_mutex_t bmu; /* with bcond: control_wait_backlog() */
    pthread_cond_t bcond;

    struct conn *conns[CONN_HASH_BUCKETS];
    struct control_stats stats; /* STAT_ADD to write, __atomic_load to read */
    uint8_t *scratch;           /* CONTROL_READ_CHUNK: the loop thread reads into it */
    struct conn *attn;          /* to close, or to read again, at the end of the round */
};

/* Refusals of what clients send are logged at most this often: a flood must not flood the
 * log too. control__log_due(&last) says whether a line may go out now (any thread). */
#define CONTROL_REFUSAL_LOG_EVERY_US (10 * HS_USEC_PER_SEC)
bool control__log_due(int64_t *last);

/* ---- new registrations or handshakes per client address (reglimit.c); any thread ---- */

struct reglimit;
#define REGLIMIT_SOURCES 4096 /* client addresses tracked (about 100 KiB) */
/* `burst` at once, then `burst` per window_us in the long run, per address; NULL (no limit)
 * when burst is 0. Tracks at most max_sources addresses (1: one count for everyone). */
struct reglimit *control__reglimit_new(unsigned burst, int64_t window_us, size_t max_sources);
void control__reglimit_free(struct reglimit *l); /* NULL is fine */
/* 0: ip may start one now (counted); otherwise the seconds until it may. */
unsigned control__reglimit_take(struct reglimit *l, const uint8_t ip[16], int64_t now_us);

/* h2.c */
int h2_session_new(struct conn *cn);
/* Feeds decrypted bytes; -EPROTO on an HTTP/2 protocol error. */
int h2_recv(struct conn *cn, const uint8_t *data, size_t len);
/* Moves nghttp2's pending output into sealed records in cn->tx. */
int h2_flush(struct conn *cn);
void h2_reply(struct conn *cn, struct msg *m);
void h2_data(struct conn *cn, struct msg *m);
void h2_end(struct conn *cn, struct msg *m);
void h2_session_free(struct conn *cn); /* reports every open stream closed */
/* Between frames, gives the pages of nghttp2's frame buffer back to the kernel. */
void h2_trim(struct conn *cn);

/* loop.c */
/* Counts len more bytes of request bodies against control_limits.body_bytes: false (nothing
 * counted) when that would pass it. Any thread. */
bool control__body_take(struct control *c, size_t len);
void control__body_put(struct control *c, size_t len);
/* Counts reply bytes in (delta > 0) and out of (delta < 0) the backlog; any thread. */
void control__backlog_add(struct control *c, int64_t delta);
void loop_dispatch(struct control *c, struct conn *cn, struct stream *st);
int conn_seal(struct conn *cn, const uint8_t *pt, size_t len);
/* A frame header and its payload, the header in the same record as the payload's start. */
int conn_seal_frame(struct conn *cn, const uint8_t *hd, size_t hdlen, const uint8_t *data,
                    size_t len);

#endif
