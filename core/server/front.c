/* The front door of the TCP listener. One epoll thread accepts, terminates TLS, reads the
 * first request head and routes the connection:
 *   - /ts2021 and /derp upgrades (native or WebSocket) go straight to the control loop and
 *     the DERP relay, which own them from then on: no HTTP library keeps state for the
 *     thousands of long-lived streams, and TLS records are read and written by the loop
 *     that uses them;
 *   - every other request goes to libmicrohttpd over a socketpair this thread pumps (the
 *     REST API, the registration page, probes: small and few).
 *
 * Every request on a pumped connection is checked here before libmicrohttpd sees a byte of
 * it: its head parsed, its framing unambiguous (RFC 9112 §6.3: a proxy in front and we must
 * agree where each request ends, or one could hide a request in another's body), its body
 * followed to its end so that the next head is found. A request's head and body must
 * arrive within tuning.http_request_timeout from its first byte, however they trickle; a
 * connection that makes no progress is cut; and there are caps on the connections held in
 * total and per client address. Handed-off streams are not bound by any of this. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>
#include <sodium.h>

#include "server/server_internal.h"

#define FRONT_EVENTS 256
#define FRONT_HEAD_US (10 * INT64_C(1000000))   /* TLS handshake + first request head */
#define FRONT_IDLE_US (120 * INT64_C(1000000))  /* proxied connection without progress */
#define FRONT_LINGER_US (2 * INT64_C(1000000))  /* reading after our FIN, before close */
#define FRONT_WARN_US (10 * INT64_C(1000000))   /* one warning per kind in this long */
#define PROXY_BUF 65536                         /* per direction */

enum fstate { F_HANDSHAKE, F_HEAD, F_PROXY, F_LINGER };

struct fconn;

/* What an epoll event points at: one side of a connection. */
struct fside {
    struct fconn *fc;
    bool pair;
    uint32_t events; /* registered interest */
};

/* A request we answer ourselves instead of passing it on. */
struct refusal {
    int status;        /* 0: none */
    const char *why;   /* static */
    const char *field; /* a header sent twice (static), or NULL */
};

struct fconn {
    struct front *f;
    struct fconn *prev, *next;
    bool dead; /* freed after the current batch of events, which may still name it */
    enum fstate st;
    struct net_conn *nc;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct net_addr *slot; /* this client address's count, NULL when not counted */
    int64_t deadline;     /* TLS + first head; then progress (proxied) or the linger */
    int64_t req_deadline; /* the request being received is whole by then; 0: none pending */
    char *head; /* HTTP1_MAX_HEAD + 1 while reading the head */
    size_t headlen;
    struct http1_scan scan; /* of the head being received (first, or next at checked) */
    /* proxying to libmicrohttpd */
    int pair;
    struct hs_buf up, down;
    size_t checked; /* bytes at the front of up that are whole heads or body: only these go on */
    struct http1_body body; /* the framing of the request passing up */
    struct refusal refusal; /* a request that is not passed on: answered after the others */
    bool client_eof, pair_eof, pair_shut;
    struct fside cside, pside;
};

/* Warnings about refused connections, at most one per FRONT_WARN_US and kind. */
struct warn_limit {
    int64_t next;
    unsigned skipped;
};

struct front {
    struct front_deps deps;
    int epfd, evfd;
    pthread_t thread;
    bool running;
    struct fconn *all, *dead;
    size_t count;
    struct net_addrs *addrs;
    struct warn_limit warn_total, warn_per_ip, warn_derp;
};

/* ---- bookkeeping ---- */

static void side_watch(struct fconn *fc, struct fside *s, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = s };

    if (s->events == events)
        return;
    s->events = events;
    epoll_ctl(fc->f->epfd, EPOLL_CTL_MOD, fd, &ev);
}

/* Takes fc out of epoll, the list and its address's count; its memory goes at the end of
 * the event batch. */
static void fconn_unlink(struct fconn *fc)
{
    struct front *f = fc->f;

    epoll_ctl(f->epfd, EPOLL_CTL_DEL, net_conn_fd(fc->nc), NULL);
    if (fc->pair >= 0)
        epoll_ctl(f->epfd, EPOLL_CTL_DEL, fc->pair, NULL);
    if (fc->prev)
        fc->prev->next = fc->next;
    else
        f->all = fc->next;
    if (fc->next)
        fc->next->prev = fc->prev;
    f->count--;
    net_addrs_put(f->addrs, fc->slot);
    fc->slot = NULL;
    free(fc->head);
    fc->head = NULL;
    fc->dead = true;
    fc->next = f->dead;
    f->dead = fc;
}

static void proxy_buffers_free(struct fconn *fc)
{
    if (fc->pair >= 0) {
        epoll_ctl(fc->f->epfd, EPOLL_CTL_DEL, fc->pair, NULL);
        close(fc->pair);
        fc->pair = -1;
    }
    hs_buf_free(&fc->up);
    hs_buf_free(&fc->down);
}

/* Closes a connection the front door still owns. */
static void fconn_free(struct fconn *fc)
{
    fconn_unlink(fc);
    proxy_buffers_free(fc);
    net_conn_close(fc->nc);
}

static void reap(struct front *f)
{
    while (f->dead) {
        struct fconn *fc = f->dead;
        f->dead = fc->next;
        free(fc);
    }
}

/* The client's address for logs (buf: NET_ADDR_TEXT bytes). */
static const char *peer(const struct fconn *fc, char *buf, size_t size)
{
    return net_addr_text(&fc->addr, fc->addrlen, buf, size);
}

/* A short answer for a request we refuse ourselves, then the connection is closed. */
static void reply_and_close(struct fconn *fc, int status, const char *reason, const char *msg)
{
    net_conn_reply(fc->nc, status, reason, msg);
    fconn_free(fc);
}

/* Whether a warning of this kind is due now; counts the ones held back. */
static bool warn_due(struct warn_limit *w, unsigned *skipped)
{
    int64_t now = hs_monotonic_us();

    if (now < w->next) {
        w->skipped++;
        return false;
    }
    *skipped = w->skipped;
    w->skipped = 0;
    w->next = now + FRONT_WARN_US;
    return true;
}

/* ---- lingering close ---- */

/* Reads and drops what the client still sends, until it closes or the linger ends. */
static void linger_drain(struct fconn *fc)
{
    char sink[4096];
    ssize_t n;

    for (int i = 0; i < 64; i++) {
        n = net_conn_read(fc->nc, sink, sizeof(sink));
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            fconn_free(fc);
            return;
        }
    }
}

/* Our answer is out: the client gets our FIN and a moment to read it before we close.
 * Closing with its unread request bytes pending would reset the connection and could
 * destroy the answer in flight (a lingering close). */
static void linger(struct fconn *fc)
{
    proxy_buffers_free(fc);
    free(fc->head);
    fc->head = NULL;
    net_conn_shutdown(fc->nc);
    fc->st = F_LINGER;
    fc->deadline = hs_monotonic_us() + FRONT_LINGER_US;
    fc->req_deadline = 0;
    side_watch(fc, &fc->cside, net_conn_fd(fc->nc), EPOLLIN);
    linger_drain(fc);
}

static const char *status_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    default: return "Error";
    }
}

/* Sends the refusal (with Connection: close) and lingers. */
static void refuse_now(struct fconn *fc, const struct refusal *r)
{
    char msg[160], who[NET_ADDR_TEXT];

    if (r->field)
        snprintf(msg, sizeof(msg), "header %s sent twice\n", r->field);
    else
        snprintf(msg, sizeof(msg), "%s\n", r->why);
    log_debug("server: %s: %d: %s", peer(fc, who, sizeof(who)), r->status, msg);
    net_conn_reply(fc->nc, r->status, status_reason(r->status), msg);
    linger(fc);
}

/* What to answer a head that failed to parse (hlen < 0) or to check (rc < 0, why). */
static struct refusal head_refusal(int hlen, const struct http1_head *h, int rc, const char *why)
{
    if (hlen == -E2BIG)
        return (struct refusal){ 431, "request head too large", NULL };
    if (hlen < 0)
        return (struct refusal){ 400, "malformed HTTP request", h->repeated };
    return (struct refusal){ rc == -EOPNOTSUPP ? 501 : 400, why, NULL };
}

/* ---- handing upgrades to the loops ---- */

/* The connection leaves the front door: the loop that adopts nc owns it. */
static struct net_conn *fconn_release(struct fconn *fc)
{
    struct net_conn *nc = fc->nc;

    if (fc->headlen)
        net_conn_unread(nc, fc->head, fc->headlen); /* bytes past the head */
    fconn_unlink(fc);
    return nc;
}

/* A WebSocket opening handshake (RFC 6455 4.2.1) naming subprotocol proto. */
static bool websocket_ok(const struct http1_head *h, const char *proto)
{
    char accept[29];

    return strcmp(h->method, "GET") == 0 && h->ws_version && strcmp(h->ws_version, "13") == 0 &&
           ws_accept_key(h->ws_key, accept) == 0 && http1_has_token(h->ws_protocol, proto);
}

/* The 101 that accepts a WebSocket (resp holds 256 bytes); its length. */
static size_t websocket_101(const struct http1_head *h, const char *proto, char *resp)
{
    char accept[29];
    int n;

    ws_accept_key(h->ws_key, accept);
    n = snprintf(resp, 256,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                 "Sec-WebSocket-Protocol: %s\r\n\r\n", accept, proto);
    return n > 0 && n < 256 ? (size_t)n : 0;
}

/* Queues the 101 that accepts a checked WebSocket handshake; framing starts after it. */
static void accept_websocket(struct fconn *fc, const struct http1_head *h, const char *proto)
{
    char resp[256];

    net_conn_queue_raw(fc->nc, resp, websocket_101(h, proto, resp));
    net_conn_websocket(fc->nc);
}

static void refuse_websocket(struct fconn *fc, const char *proto)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "a WebSocket upgrade needs GET, version 13, a key and "
                               "subprotocol %s\n", proto);
    reply_and_close(fc, 400, "Bad Request", msg);
}

/* The Noise handshake itself runs on a control worker: during a connect storm this thread
 * would otherwise spend a third of a millisecond per client on it while every API request
 * and new connection waits behind the queue. */
static void route_ts2021(struct fconn *fc, const struct http1_head *h, bool ws)
{
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n";
    static const char proto[] = "tailscale-control-protocol";
    struct control_upgrade_req rq = { .websocket = ws };
    const char *hs = h->ts_handshake;
    char who[NET_ADDR_TEXT];

    if (ws) {
        if (!websocket_ok(h, proto)) {
            refuse_websocket(fc, proto);
            return;
        }
        /* Browsers cannot set headers on a WebSocket: the initiation rides in the query. */
        hs = http1_query_param(h->target, "X-Tailscale-Handshake", rq.handshake_b64,
                               sizeof(rq.handshake_b64)) == 0 ? rq.handshake_b64 : NULL;
        rq.ok_len = websocket_101(h, proto, rq.ok_head);
    } else {
        memcpy(rq.ok_head, head, sizeof(head) - 1);
        rq.ok_len = sizeof(head) - 1;
    }
    if (!hs || strlen(hs) >= sizeof(rq.handshake_b64)) {
        static const char msg[] = "X-Tailscale-Handshake is missing or too long";
        log_info("server: /ts2021 from %s: %s", peer(fc, who, sizeof(who)), msg);
        reply_and_close(fc, 400, "Bad Request", msg);
        return;
    }
    if (hs != rq.handshake_b64)
        memcpy(rq.handshake_b64, hs, strlen(hs) + 1);
    rq.addr = fc->addr;
    rq.addrlen = fc->addrlen;
    rq.unlimited = net_addrs_trusted(fc->f->addrs, &fc->addr);
    rq.nc = fconn_release(fc);
    control_upgrade_async(fc->f->deps.control, &rq);
}

/* The relay's caps, checked before the upgrade is answered so that a refusal is a plain 503
 * (Tailscale's client then tries its next DERP region). */
static bool derp_admitted(struct fconn *fc, struct net_addr **place)
{
    struct front *f = fc->f;
    const char *why;
    char who[NET_ADDR_TEXT];
    unsigned skipped;

    if (derp_server_admit(f->deps.derp, &fc->addr, place, &why) == 0)
        return true;
    if (warn_due(&f->warn_derp, &skipped))
        log_warnx("server: /derp from %s: %.*s (%u more refused since the last warning)",
                  peer(fc, who, sizeof(who)), (int)strcspn(why, "\n"), why, skipped);
    reply_and_close(fc, 503, "Service Unavailable", why);
    return false;
}

static void route_derp(struct fconn *fc, const struct http1_head *h, bool ws)
{
    char key[65], resp[256];
    struct net_addr *place;
    int n;

    if (ws && !websocket_ok(h, "derp")) {
        refuse_websocket(fc, "derp");
        return;
    }
    if (!derp_admitted(fc, &place))
        return;
    if (ws) {
        accept_websocket(fc, h, "derp");
    } else if (!h->derp_fast_start || strcmp(h->derp_fast_start, "1") != 0) {
        /* The 101 carries the server key so that clients can pin it; a fast-start client
         * asked to skip it. */
        derp_server_key_hex(fc->f->deps.derp, key);
        n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
                     "Connection: Upgrade\r\nDerp-Version: 2\r\nDerp-Public-Key: %s\r\n\r\n", key);
        net_conn_queue_raw(fc->nc, resp, (size_t)n);
    }
    derp_server_adopt(fc->f->deps.derp, fconn_release(fc), place);
}

/* ---- proxying to libmicrohttpd ---- */

static void proxy_watch(struct fconn *fc)
{
    uint32_t ce = 0, pe = 0;

    if (!fc->client_eof && fc->up.len < PROXY_BUF)
        ce |= EPOLLIN;
    if (fc->down.len || net_conn_backlog(fc->nc))
        ce |= EPOLLOUT;
    if (!fc->pair_eof && fc->down.len < PROXY_BUF)
        pe |= EPOLLIN;
    if (fc->checked && !fc->pair_shut)
        pe |= EPOLLOUT;
    side_watch(fc, &fc->cside, net_conn_fd(fc->nc), ce);
    if (fc->pair >= 0)
        side_watch(fc, &fc->pside, fc->pair, pe);
}

/* Nothing more goes to libmicrohttpd: what is not checked is dropped, and once the checked
 * rest is out it sees the end of the stream, answers what it has and closes. */
static void refuse_later(struct fconn *fc, struct refusal r)
{
    fc->refusal = r;
    fc->req_deadline = 0;
    hs_buf_truncate(&fc->up, fc->checked);
}

/* A head at the front of p[0..n), once whole: parsed and checked on a copy (the parser
 * writes into its buffer; the bytes go on as sent). false to wait for more bytes. */
static bool check_head(struct fconn *fc, const char *p, size_t n)
{
    char copy[HTTP1_MAX_HEAD + 1];
    struct http1_head h;
    const char *why = NULL;
    int hlen = http1_head_scan(&fc->scan, p, n), rc = 0;

    /* Parsed once, when whole: a head trickling in a byte at a time must not cost a parse
     * per byte. */
    if (hlen == -EAGAIN)
        return false;
    if (hlen > 0) {
        memcpy(copy, p, (size_t)hlen);
        hlen = http1_parse_head(copy, (size_t)hlen, &h);
    }
    if (hlen < 0 || (rc = http1_request_body(&h, &fc->body, &why)) < 0) {
        refuse_later(fc, head_refusal(hlen, &h, rc, why));
        return false;
    }
    fc->checked += (size_t)hlen;
    fc->scan = (struct http1_scan){ 0 };
    return true;
}

/* Moves fc->checked over what has arrived: each head is checked whole before any of it
 * goes on, each body is followed to its end by its framing. The clock of a request runs
 * from its first byte (an empty line before it included) to its last; the first request's
 * from the accept. Between requests only the idle timeout applies. */
static void check_up(struct fconn *fc)
{
    while (fc->checked < fc->up.len && !fc->refusal.status) {
        const char *p = fc->up.data + fc->checked;
        size_t n = fc->up.len - fc->checked;
        ssize_t k;

        if (!http1_body_done(&fc->body)) {
            if ((k = http1_body_scan(&fc->body, p, n)) < 0) {
                refuse_later(fc, (struct refusal){ 400, "broken chunked framing", NULL });
                return;
            }
            fc->checked += (size_t)k;
            if (http1_body_done(&fc->body))
                fc->req_deadline = 0;
            continue;
        }
        if (!fc->req_deadline)
            fc->req_deadline = hs_monotonic_us() + fc->f->deps.request_us;
        if (n >= 2 && p[0] == '\r' && p[1] == '\n') {
            fc->checked += 2; /* an empty line before a request is ignored (RFC 9112 §2.2) */
            fc->scan = (struct http1_scan){ 0 };
        } else if (!check_head(fc, p, n)) {
            break;
        } else if (http1_body_done(&fc->body)) {
            fc->req_deadline = 0;
        }
    }
}

/* client → libmicrohttpd. */
static void read_client(struct fconn *fc, bool *progress)
{
    size_t room = PROXY_BUF - fc->up.len;
    ssize_t n;

    if (fc->client_eof || !room || hs_buf_reserve(&fc->up, room) < 0)
        return;
    n = net_conn_read(fc->nc, fc->up.data + fc->up.len, room);
    if (n > 0) {
        fc->up.len += (size_t)n;
        *progress = true;
    } else if (n != -EAGAIN) {
        fc->client_eof = true;
    }
}

/* Once libmicrohttpd stopped reading (it answered early, say a 401 before the body), what
 * the client still sends is dropped. */
static void move_up(struct fconn *fc, bool *progress)
{
    ssize_t n;

    read_client(fc, progress);
    if (fc->pair_shut || fc->refusal.status) {
        fc->checked = fc->pair_shut ? fc->up.len : fc->checked;
        hs_buf_truncate(&fc->up, fc->checked); /* refused: nothing past the last request */
    } else {
        check_up(fc);
    }
    if (fc->checked) {
        n = fc->pair_shut ? (ssize_t)fc->checked
                          : hs_write_nonblock(fc->pair, fc->up.data, fc->checked);
        if (n < 0) {
            shutdown(fc->pair, SHUT_WR);
            fc->pair_shut = true;
            n = (ssize_t)fc->checked;
        }
        hs_buf_consume(&fc->up, (size_t)n);
        fc->checked -= (size_t)n;
        *progress |= n > 0;
    }
    /* The end of the stream: the client's, or ours after a refusal. A partial head left
     * behind by the client is dropped: libmicrohttpd could not answer it either. */
    if ((fc->client_eof || fc->refusal.status) && !fc->checked && !fc->pair_shut) {
        hs_buf_reset(&fc->up);
        shutdown(fc->pair, SHUT_WR);
        fc->pair_shut = true;
    }
}

/* libmicrohttpd is done with the connection: our end goes too. Kept open, the socketpair
 * would report EPOLLHUP on every wait (whatever the mask) while the client still reads the
 * response or lingers. */
static void pair_close(struct fconn *fc)
{
    epoll_ctl(fc->f->epfd, EPOLL_CTL_DEL, fc->pair, NULL);
    close(fc->pair);
    fc->pair = -1;
    fc->pair_eof = true;
    fc->pair_shut = true;
}

/* libmicrohttpd → client. */
static bool move_down(struct fconn *fc, bool *progress)
{
    size_t room = PROXY_BUF - fc->down.len;
    ssize_t n;

    if (!fc->pair_eof && room && hs_buf_reserve(&fc->down, room) == 0) {
        n = read(fc->pair, fc->down.data + fc->down.len, room);
        if (n > 0) {
            fc->down.len += (size_t)n;
            *progress = true;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            pair_close(fc);
        }
    }
    if (fc->down.len || net_conn_backlog(fc->nc)) {
        if ((n = net_conn_send(fc->nc, &fc->down)) < 0)
            return false;
        *progress |= n > 0;
    }
    return true;
}

enum pump { PUMP_ON, PUMP_DONE, PUMP_LINGER, PUMP_REFUSE };

/* Moves what it can both ways and says what comes next. When libmicrohttpd is done and its
 * last bytes are out, the client gets our refusal if there is one, then a lingering close
 * (or the close at once when it has closed its side). */
static enum pump proxy_move(struct fconn *fc, bool *progress)
{
    move_up(fc, progress);
    if (!move_down(fc, progress))
        return PUMP_DONE;
    if (!fc->pair_eof || fc->down.len || net_conn_backlog(fc->nc))
        return PUMP_ON;
    if (fc->refusal.status)
        return PUMP_REFUSE;
    return fc->client_eof ? PUMP_DONE : PUMP_LINGER;
}

static void proxy_pump(struct fconn *fc)
{
    for (int round = 0; round < 16; round++) {
        bool progress = false;
        switch (proxy_move(fc, &progress)) {
        case PUMP_ON:
            break;
        case PUMP_DONE:
            fconn_free(fc);
            return;
        case PUMP_LINGER:
            linger(fc);
            return;
        case PUMP_REFUSE:
            refuse_now(fc, &fc->refusal);
            return;
        }
        if (!progress)
            break;
        fc->deadline = hs_monotonic_us() + FRONT_IDLE_US;
    }
    proxy_watch(fc);
}

/* The first request (its head already checked) and what came after it start the pump. */
static void route_proxy(struct fconn *fc)
{
    struct epoll_event ev = { .events = 0, .data.ptr = &fc->pside };
    /* libmicrohttpd is told the truth, a local socket: it then leaves TCP options alone. */
    struct sockaddr_un local = { .sun_family = AF_UNIX };
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        reply_and_close(fc, 503, "Service Unavailable", "out of descriptors\n");
        return;
    }
    /* libmicrohttpd closes its end on failure too. */
    if (MHD_add_connection(fc->f->deps.mhd, sv[1], (const struct sockaddr *)&local,
                           sizeof(sa_family_t)) != MHD_YES) {
        close(sv[0]);
        reply_and_close(fc, 503, "Service Unavailable", "too many connections\n");
        return;
    }
    fc->pair = sv[0];
    fc->st = F_PROXY;
    fc->deadline = hs_monotonic_us() + FRONT_IDLE_US;
    hs_buf_init(&fc->up, PROXY_BUF + 1);
    hs_buf_init(&fc->down, PROXY_BUF + 1);
    hs_buf_append(&fc->up, fc->head, fc->headlen); /* checked again as it goes up */
    fc->scan = (struct http1_scan){ 0 };
    free(fc->head);
    fc->head = NULL;
    fc->headlen = 0;
    epoll_ctl(fc->f->epfd, EPOLL_CTL_ADD, fc->pair, &ev);
    proxy_pump(fc);
}

/* ---- the first request ---- */

static void route(struct fconn *fc, const struct http1_head *h, size_t hlen)
{
    const char *up = h->upgrade;
    bool ws = up && strcasecmp(up, "websocket") == 0;
    bool ts = up && http1_path_is(h->target, "/ts2021") &&
              (ws || strcasecmp(up, "tailscale-control-protocol") == 0);
    bool derp = up && fc->f->deps.derp && http1_path_is(h->target, "/derp") &&
                (ws || strcasecmp(up, "derp") == 0);

    if (!ts && !derp) {
        route_proxy(fc); /* libmicrohttpd answers the rest, refused upgrades included */
        return;
    }
    /* What came after the head stays for the loop that takes the connection. */
    fc->headlen -= hlen;
    memmove(fc->head, fc->head + hlen, fc->headlen);
    if (ts)
        route_ts2021(fc, h, ws);
    else
        route_derp(fc, h, ws);
}

/* Reads what the client sent so far: false when the connection is gone. *eof when the
 * client closed its side (it may still wait for the answer to what it sent). */
static bool read_some_head(struct fconn *fc, bool *eof)
{
    ssize_t n;

    while (fc->headlen < HTTP1_MAX_HEAD) {
        n = net_conn_read(fc->nc, fc->head + fc->headlen, HTTP1_MAX_HEAD - fc->headlen);
        if (n == -EAGAIN)
            return true;
        if (n == 0) {
            *eof = true;
            return true;
        }
        if (n < 0) {
            fconn_free(fc);
            return false;
        }
        fc->headlen += (size_t)n;
    }
    return true;
}

static void read_head(struct fconn *fc)
{
    char copy[HTTP1_MAX_HEAD + 1];
    struct http1_head h;
    struct http1_body body;
    struct refusal r;
    const char *why = NULL;
    bool eof = false;
    int hlen, rc = 0;

    if (!read_some_head(fc, &eof))
        return;
    /* Only the new bytes are searched for the head's end; once it is there, the parser
     * writes NULs into the head: parse a copy, keep the bytes as sent. */
    if ((hlen = http1_head_scan(&fc->scan, fc->head, fc->headlen)) > 0) {
        memcpy(copy, fc->head, (size_t)hlen);
        hlen = http1_parse_head(copy, (size_t)hlen, &h);
    }
    if (hlen == -EAGAIN && eof) {
        fconn_free(fc);
    } else if (hlen == -EAGAIN) {
        side_watch(fc, &fc->cside, net_conn_fd(fc->nc),
                   EPOLLIN | (net_conn_wants_write(fc->nc) ? EPOLLOUT : 0));
    } else if (hlen < 0 || (rc = http1_request_body(&h, &body, &why)) < 0) {
        r = head_refusal(hlen, &h, rc, why);
        refuse_now(fc, &r);
    } else {
        fc->client_eof = eof;
        route(fc, &h, (size_t)hlen);
    }
}

static void handshake(struct fconn *fc)
{
    int rc = net_conn_handshake(fc->nc);

    if (rc == -EAGAIN) {
        side_watch(fc, &fc->cside, net_conn_fd(fc->nc),
                   net_conn_wants_write(fc->nc) ? EPOLLOUT : EPOLLIN);
        return;
    }
    if (rc < 0) {
        char who[NET_ADDR_TEXT];
        log_debug("server: TLS handshake with %s failed: %s", peer(fc, who, sizeof(who)),
                  hs_strerror(rc));
        fconn_free(fc);
        return;
    }
    fc->st = F_HEAD;
    fc->head = hs_xmalloc(HTTP1_MAX_HEAD + 1);
    read_head(fc);
}

static void fconn_event(struct fside *s, uint32_t events)
{
    struct fconn *fc = s->fc;

    if (fc->dead)
        return;
    /* A hung-up client socket (reset, or its FIN after ours) is reported on every wait:
     * nothing more can reach it. */
    if (!s->pair && (events & (EPOLLHUP | EPOLLERR))) {
        fconn_free(fc);
        return;
    }
    switch (fc->st) {
    case F_HANDSHAKE:
        handshake(fc);
        break;
    case F_HEAD:
        read_head(fc);
        break;
    case F_PROXY:
        proxy_pump(fc);
        break;
    case F_LINGER:
        linger_drain(fc);
        break;
    }
}

/* ---- accepting ---- */

/* A connection over a cap gets a plain answer and is closed at once, best effort: it holds
 * nothing here, not even a lingering close (the client may not have sent its request yet;
 * if it has, a reset may beat the answer). Over TLS there is no answer without the very
 * handshake we refuse to spend: the connection is just closed. */
static void refuse_at_accept(struct front *f, int fd, const char *msg)
{
    char resp[512], sink[4096];
    int n;

    if (!f->deps.tls) {
        n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; "
                     "charset=utf-8\r\nContent-Length: %zu\r\nRetry-After: 10\r\n"
                     "Connection: close\r\n\r\n%s", strlen(msg), msg);
        if (n > 0 && (size_t)n < sizeof(resp) &&
            send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n) {
            shutdown(fd, SHUT_WR);
            while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
                ;
        }
    }
    close(fd);
}

/* The caps: total first (the server's memory), then the client's address. 0 when fd may
 * be taken, with *slot to count it under its address. */
static int admit(struct front *f, int fd, const struct sockaddr_storage *sa, socklen_t len,
                 struct net_addr **slot)
{
    char who[NET_ADDR_TEXT];
    unsigned skipped;

    if (f->count >= f->deps.max_conns) {
        if (warn_due(&f->warn_total, &skipped))
            log_warnx("server: %zu HTTP connections are open (tuning.http_max_connections): "
                      "refusing new ones (%u more refused since the last warning)",
                      f->count, skipped);
        refuse_at_accept(f, fd, "the server is busy: too many connections\n");
        return -EMFILE;
    }
    if (net_addrs_take(f->addrs, sa, slot) < 0) {
        if (warn_due(&f->warn_per_ip, &skipped))
            log_warnx("server: %s holds %u HTTP connections "
                      "(tuning.http_max_connections_per_ip): refusing more; a reverse proxy "
                      "belongs in trusted_proxies (%u more refused since the last warning)",
                      net_addr_text(sa, len, who, sizeof(who)), f->deps.max_conns_per_ip,
                      skipped);
        refuse_at_accept(f, fd, "too many connections from your address\n");
        return -EMFILE;
    }
    return 0;
}

static void accept_one(struct front *f, int fd, const struct sockaddr_storage *sa, socklen_t len)
{
    struct fconn *fc;
    struct net_conn *nc;
    struct net_addr *slot;
    struct epoll_event ev = { .events = EPOLLIN };
    int64_t now = hs_monotonic_us(), head_us = f->deps.request_us;

    if (admit(f, fd, sa, len, &slot) < 0)
        return;
    if (!(nc = net_conn_new(fd, f->deps.tls))) {
        net_addrs_put(f->addrs, slot);
        return; /* it closed fd */
    }
    fc = hs_xcalloc(1, sizeof(*fc));
    fc->f = f;
    fc->nc = nc;
    fc->pair = -1;
    fc->addr = *sa;
    fc->addrlen = len;
    fc->slot = slot;
    fc->deadline = now + (head_us < FRONT_HEAD_US ? head_us : FRONT_HEAD_US);
    fc->req_deadline = now + f->deps.request_us;
    fc->body = (struct http1_body){ 0 };
    fc->cside = (struct fside){ .fc = fc, .events = EPOLLIN };
    fc->pside = (struct fside){ .fc = fc, .pair = true };
    ev.data.ptr = &fc->cside;
    fc->next = f->all;
    if (f->all)
        f->all->prev = fc;
    f->all = fc;
    f->count++;
    if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fconn_free(fc);
        return;
    }
    handshake(fc); /* plain TCP: straight to the head, which may be here already */
}

static void accept_all(struct front *f)
{
    for (int i = 0; i < 512; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(f->deps.listen_fd, (struct sockaddr *)&sa, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_warn("server: accept");
            return;
        }
        accept_one(f, fd, &sa, len);
    }
}

/* Whether fc is past a deadline: a head that never came, a request that did not arrive
 * whole in time (however steadily it trickled), a proxied connection that stopped moving,
 * a linger that ran out. */
static bool expired(const struct fconn *fc, int64_t now)
{
    char who[NET_ADDR_TEXT];

    if (now >= fc->deadline)
        return true;
    if (fc->st != F_PROXY || !fc->req_deadline || now < fc->req_deadline)
        return false;
    log_debug("server: %s: request not received within %llds: closing",
              peer(fc, who, sizeof(who)),
              (long long)(fc->f->deps.request_us / HS_USEC_PER_SEC));
    return true;
}

static void sweep(struct front *f)
{
    int64_t now = hs_monotonic_us();
    struct fconn *fc = f->all, *next;

    for (; fc; fc = next) {
        next = fc->next;
        if (expired(fc, now))
            fconn_free(fc);
    }
}

static void *front_main(void *arg)
{
    struct front *f = arg;
    struct epoll_event evs[FRONT_EVENTS];
    int64_t next_sweep = hs_monotonic_us() + 1000000;

    while (__atomic_load_n(&f->running, __ATOMIC_ACQUIRE)) {
        int n = epoll_wait(f->epfd, evs, FRONT_EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &f->deps.listen_fd)
                accept_all(f);
            else if (evs[i].data.ptr != f)
                fconn_event(evs[i].data.ptr, evs[i].events);
        }
        if (hs_monotonic_us() >= next_sweep) {
            sweep(f);
            next_sweep = hs_monotonic_us() + 1000000;
        }
        reap(f);
    }
    return NULL;
}

int front_start(const struct front_deps *deps, struct front **out)
{
    struct front *f = hs_xcalloc(1, sizeof(*f));
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &f->deps.listen_fd };
    struct epoll_event eev = { .events = EPOLLIN, .data.ptr = f };

    f->deps = *deps;
    f->deps.trusted_proxies = NULL; /* read here only */
    f->addrs = net_addrs_new(deps->trusted_proxies, deps->max_conns_per_ip);
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    f->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->epfd < 0 || f->evfd < 0 ||
        epoll_ctl(f->epfd, EPOLL_CTL_ADD, deps->listen_fd, &lev) < 0 ||
        epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->evfd, &eev) < 0)
        goto fail;
    f->running = true;
    if (pthread_create(&f->thread, NULL, front_main, f) != 0) {
        f->running = false;
        goto fail;
    }
    pthread_setname_np(f->thread, "hs-front"); /* shows in top -H, perf, gdb */
    *out = f;
    return 0;
fail:
    log_warn("server: cannot start the front door");
    front_stop(f);
    return -EIO;
}

void front_stop(struct front *f)
{
    uint64_t one = 1;

    if (!f)
        return;
    if (__atomic_load_n(&f->running, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&f->running, false, __ATOMIC_RELEASE);
        if (write(f->evfd, &one, sizeof(one)) < 0)
            log_warn("server: eventfd");
        pthread_join(f->thread, NULL);
    }
    while (f->all)
        fconn_free(f->all);
    reap(f);
    net_addrs_free(f->addrs);
    if (f->deps.listen_fd >= 0)
        close(f->deps.listen_fd);
    if (f->evfd >= 0)
        close(f->evfd);
    if (f->epfd >= 0)
        close(f->epfd);
    free(f);
}
