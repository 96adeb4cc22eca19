/* Shared by service.c, register.c and poll.c. */
#ifndef HS_CONTROL_SERVICE_INTERNAL_H
#define HS_CONTROL_SERVICE_INTERNAL_H

#include <pthread.h>

#include "auth/auth.h"
#include "config/config.h"
#include "control/control.h"
#include "control/control_internal.h"
#include "mapper/mapper.h"
#include "state/state.h"
#include "store/store.h"

/* A streaming map poll. Freed by the map thread (closed sessions wait on the dead list until
 * the next batch, so a batch in progress may still write `told`), or by session_open() when
 * its stream closed while the first map was being sent. */
struct session {
    uint64_t conn_id;
    int32_t stream_id;
    uint64_t node_id;
    bool zstd;
    uint16_t capver;
    bool opening;  /* its first map is being sent (session_open owns `told` until then) */
    bool closed;   /* its stream closed while opening: session_open frees it */
    int64_t next_keepalive; /* monotonic us */
    int64_t opened_at;      /* us since the epoch, for /debug */
    bool cancelled;         /* we ended its stream (its node was deleted); under mu */
    /* What went out on it (atomic, for /debug): messages, bytes, kind of the last + 1. */
    uint64_t sent_msgs, sent_bytes;
    int last_kind;
    /* What the node was told about the policy (a reference to told.net when that is set:
     * batches pin theirs; the first map only records the generation); written by
     * session_open, then only by the map thread. */
    struct mapper_policy_state told;
    struct session *next;
};

/* A register request waiting for an operator (Followup long-poll). */
struct followup {
    uint64_t conn_id;
    int32_t stream_id;
    char reg_id[AUTH_REG_ID_MAX];
    int64_t deadline; /* monotonic us */
    struct followup *next;
};

/* ---- limits on what clients send (clientinfo.c) ---- */

/* The most Hostinfo (compact JSON) a client may send at registration and have stored for its
 * node: every peer's maps carry it. */
#define CONTROL_HOSTINFO_MAX (16u << 10)
/* What a pending registration keeps of it, before anyone vouched for the client: its identity
 * (names, versions, requested tags) without what its first map request resends (ports,
 * network conditions, routes, SSH host keys). 1024 of them (tuning.register_cache_max_entries)
 * then take a few MiB of disk, whatever a flood sends; a real client's identity is under
 * 1 KiB. */
#define CONTROL_PENDING_HOSTINFO_MAX (4u << 10)
#define CONTROL_ENDPOINTS_MAX 64      /* endpoints stored per node (the first ones reported) */
#define CONTROL_ENDPOINT_TEXT_MAX 64  /* "[v6]:port" is 47 */

/* Hostinfo as compact JSON of at most CONTROL_HOSTINFO_MAX bytes into *out (caller frees).
 * When it is larger, the port list in Services goes first (the PeerAPI entries stay);
 * -E2BIG if it is still too large (*len, when not NULL, says how large), -EINVAL when hi is
 * not an object. */
int control__hostinfo_text(const json_t *hi, char **out, size_t *len);
/* The pending registration's copy of a Hostinfo (compact JSON, see above) into *out (caller
 * frees); -E2BIG when it is over CONTROL_PENDING_HOSTINFO_MAX (*len says how large), -EINVAL
 * when hi is not an object. */
int control__hostinfo_pending(const json_t *hi, char **out, size_t *len);
/* Endpoints as a compact JSON array (caller frees): the valid "ip:port" strings, at most
 * CONTROL_ENDPOINTS_MAX, in the client's order; *dropped (may be NULL) counts the rest. */
char *control__endpoints_text(const json_t *ep, size_t *dropped);

/* ---- HA health probes (haprobe.c) ---- */

#define HAPROBE_ID_LEN 32 /* hex of 128 random bits */
struct ha_ping {
    char id[HAPROBE_ID_LEN + 1];
    uint64_t node_id;
    uint64_t epoch;  /* the node's session_epoch when the ping went out */
    bool stable;     /* that session was asked in the previous cycle too */
    bool unsent;     /* no session of the node could take it */
    bool answered;   /* under mu */
};
struct ha_seen {
    uint64_t id, epoch;
};
struct haprobe {
    pthread_mutex_t mu;      /* pings' answered flags and the list's lifetime */
    struct ha_ping *pings;   /* the cycle out now */
    size_t npings;
    int64_t verdict_at;      /* monotonic us when it is judged; 0: no cycle out */
    int64_t next_cycle;      /* monotonic us */
    struct ha_seen *seen;    /* the sessions asked in the last cycle (map thread) */
    size_t nseen;
};
void haprobe_init(struct haprobe *p);
void haprobe_free(struct haprobe *p);
/* Map thread, every tick: starts a cycle every node.routes.ha.probe_interval and judges it
 * probe_timeout later. */
void haprobe_tick(struct control_service *s, int64_t now);

/* Node ids touched since the last batch, by kind. */
struct idset {
    uint64_t *v;
    unsigned *f; /* per id: what changed (enum state_field bits), for patches */
    size_t n, cap;
    bool sorted; /* after idset_sort(): lookups are binary searches */
};

struct control_service {
    const struct hs_config *cfg;
    struct auth *auth;
    struct state *state;
    struct mapper *mapper;
    struct control *ctl;

    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cond;
    struct session *sessions;
    struct session *dead;   /* closed, freed by the map thread at its next batch */
    struct followup *followups;
    size_t nfollowups;      /* held, including those register_check_followups has out */
    struct reglimit *reglimit; /* NULL: tuning.register_rate_limit is 0 (any thread) */
    struct reglimit *regturnover; /* all addresses: the table's size per its lifetime */
    int64_t log_refused_at; /* monotonic us of the last refusal logged (atomic) */
    int64_t next_sweep;     /* map thread: monotonic us of the next registration sweep */
    struct idset changed, patched, removed, online;
    uint64_t *ended;        /* the node of each session closed since the last batch */
    size_t nended, capended;
    bool full_for_all;      /* user or DERP map change: everyone gets a full map */
    bool dns_for_all;       /* DNS configuration changed: everyone gets a DNSConfig */
    bool registrations_changed;
    int64_t batch_due;      /* monotonic us; 0 = nothing pending */
    int64_t batch_first;    /* monotonic us of the first node change pending; 0 = none */
    int64_t last_batch_us;  /* how long the last batch took to build and queue (under mu) */
    int64_t last_batch_end; /* when it ended (monotonic) */
    /* Node changes per second (under mu): a herd (a connect storm, everyone back after a
     * restart) is batched longer. */
    int64_t rate_since;     /* monotonic us: start of the current one-second window */
    unsigned rate_now, rate_prev; /* changes in it, and in the window before */
    struct haprobe probe;
    /* SERVICE_COUNT to write, control_service_get_stats to read (sessions is counted there) */
    struct control_service_stats stats;
    struct metrics_hist batch_hist[CONTROL_BATCH_HISTS];
    size_t cores;           /* online CPUs at start: threads a large batch is split over */
    bool stopping;
    bool thread_started;
    pthread_t thread;       /* the map thread: batches, keep-alives, GC, follow-up timeouts */
};

#define SERVICE_COUNT(field, n) __atomic_add_fetch(&(field), (uint64_t)(n), __ATOMIC_RELAXED)
/* A map message of `bytes`, counted before it is queued: a client that has it must find it
 * counted. x: the session it goes out on, NULL when there is none (a single map request) or
 * it may be freed meanwhile (still opening, in a batch's snapshot). */
static inline void service_sent(struct control_service *s, struct session *x,
                                enum control_map_kind kind, size_t bytes)
{
    SERVICE_COUNT(s->stats.sent[kind], 1);
    SERVICE_COUNT(s->stats.sent_bytes[kind], bytes);
    if (!x)
        return;
    SERVICE_COUNT(x->sent_msgs, 1);
    SERVICE_COUNT(x->sent_bytes, bytes);
    __atomic_store_n(&x->last_kind, (int)kind + 1, __ATOMIC_RELAXED);
}

void idset_add(struct idset *s, uint64_t id);
/* Adds id, or ORs fields into its entry. */
void idset_add_fields(struct idset *s, uint64_t id, unsigned fields);
bool idset_has(const struct idset *s, uint64_t id);
unsigned idset_fields(const struct idset *s, uint64_t id);
void idset_free(struct idset *s);
void idset_sort(struct idset *s);

/* Replies with a JSON body (compact) and ends the stream. */
void service_reply_json(struct control_service *s, const struct control_request *rq, int status,
                        json_t *body);
void service_reply_text(struct control_service *s, const struct control_request *rq, int status,
                        const char *text);

/* register.c */
void register_handle(struct control_service *s, struct control_request *rq, json_t *req);
/* Map thread: answers follow-ups whose registration completed, vanished or timed out. */
void register_check_followups(struct control_service *s);
/* Map thread: deletes expired pending registrations (and any past the count bound). */
void register_sweep(struct control_service *s);
/* Loop thread: a follow-up's client went away. */
void register_stream_closed(struct control_service *s, uint64_t conn_id, int32_t stream_id);

/* poll.c */
void poll_handle(struct control_service *s, struct control_request *rq, json_t *req);
void poll_stream_closed(struct control_service *s, uint64_t conn_id, int32_t stream_id);
void poll_on_state_change(void *arg, const struct state_change *ch);
/* Map thread. */
void poll_flush_batch(struct control_service *s);
void poll_keepalives(struct control_service *s);
void poll_gc_ephemeral(struct control_service *s);
/* Frees a session and its reference to a compiled policy. */
void poll_session_free(struct session *x);

#endif
