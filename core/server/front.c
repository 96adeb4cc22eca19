/* The front door of the TCP listener. One epoll thread accepts, terminates TLS, reads the
 * first request head and routes the connection:
 *   - /ts2021 and /derp upgrades (native or WebSocket) go straight to the control loop and
 *     the DERP relay, which own them from then on: no HTTP library keeps state for the
 *     thousands of long-lived streams, and TLS records are read and written by the loop
 *     that uses them;
 *   - every other request goes to libmicrohttpd over a socketpair this thread pumps (the
 *     REST API, the registration page, probes: small and few).
 * Slow or silent clients are bounded by a head deadline; a proxied connection that makes
 * no progress is cut. */
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
#define FRONT_HEAD_US (10 * INT64_C(1000000))   /* TLS handshake + request head */
#define FRONT_IDLE_US (120 * INT64_C(1000000))  /* proxied connection without progress */
#define FRONT_MAX_CONNS 65536                   /* handshaking, reading heads, or proxied */
#define FRONT_LINGER_US (2 * INT64_C(1000000))  /* reading after our FIN, before close */
#define PROXY_BUF 65536                         /* per direction */

enum fstate { F_HANDSHAKE, F_HEAD, F_PROXY };

struct fconn;

/* What an epoll event points at: one side of a connection. */
struct fside {
    struct fconn *fc;
    bool pair;
    uint32_t events; /* registered interest */
};

struct fconn {
    struct front *f;
    struct fconn *prev, *next;
    bool dead; /* freed after the current batch of events, which may still name it */
    enum fstate st;
    struct net_conn *nc;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t deadline;
    char *head; /* HTTP1_MAX_HEAD + 1 while reading the head */
    size_t headlen;
    /* proxying to libmicrohttpd */
    int pair;
    struct hs_buf up, down;
    bool client_eof, pair_eof, pair_shut, lingering;
    struct fside cside, pside;
};

struct front {
    struct front_deps deps;
    int epfd, evfd;
    pthread_t thread;
    bool running;
    struct fconn *all, *dead;
    size_t count;
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

/* Takes fc out of epoll and the list; its memory goes at the end of the event batch. */
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
    free(fc->head);
    fc->head = NULL;
    fc->dead = true;
    fc->next = f->dead;
    f->dead = fc;
}

/* Closes a connection the front door still owns. */
static void fconn_free(struct fconn *fc)
{
    fconn_unlink(fc);
    if (fc->pair >= 0)
        close(fc->pair);
    net_conn_close(fc->nc);
    hs_buf_free(&fc->up);
    hs_buf_free(&fc->down);
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
    rq.nc = fconn_release(fc);
    control_upgrade_async(fc->f->deps.control, &rq);
}

static void route_derp(struct fconn *fc, const struct http1_head *h, bool ws)
{
    char key[65], resp[256];
    int n;

    if (ws) {
        if (!websocket_ok(h, "derp")) {
            refuse_websocket(fc, "derp");
            return;
        }
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
    derp_server_adopt(fc->f->deps.derp, fconn_release(fc));
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
    if (fc->up.len)
        pe |= EPOLLOUT;
    side_watch(fc, &fc->cside, net_conn_fd(fc->nc), ce);
    if (fc->pair >= 0)
        side_watch(fc, &fc->pside, fc->pair, pe);
}

/* Moves what it can in both directions. false when the connection is finished. */
/* client → libmicrohttpd. Once libmicrohttpd stopped reading (it answered early, say a
 * 413 to an oversized body), what the client still sends is dropped. */
static void move_up(struct fconn *fc, bool *progress)
{
    ssize_t n;

    if (!fc->client_eof && fc->up.len < PROXY_BUF && hs_buf_reserve(&fc->up, PROXY_BUF) == 0) {
        n = net_conn_read(fc->nc, fc->up.data + fc->up.len, PROXY_BUF - fc->up.len);
        if (n > 0) {
            fc->up.len += (size_t)n;
            *progress = true;
        } else if (n != -EAGAIN) {
            fc->client_eof = true;
        }
    }
    if (fc->up.len) {
        n = fc->pair_shut ? (ssize_t)fc->up.len
                          : hs_write_nonblock(fc->pair, fc->up.data, fc->up.len);
        if (n < 0) {
            shutdown(fc->pair, SHUT_WR);
            fc->pair_shut = true;
            n = (ssize_t)fc->up.len;
        }
        hs_buf_consume(&fc->up, (size_t)n);
        *progress |= n > 0;
    }
    if (fc->client_eof && !fc->up.len && !fc->pair_shut) {
        shutdown(fc->pair, SHUT_WR);
        fc->pair_shut = true;
    }
}

/* libmicrohttpd is done with the connection: our end goes too. Kept open, the socketpair
 * would report EPOLLHUP on every wait (whatever the mask) while the client still reads the
 * response or lingers. What the client still sends is dropped. */
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
    ssize_t n;

    if (!fc->pair_eof && fc->down.len < PROXY_BUF && hs_buf_reserve(&fc->down, PROXY_BUF) == 0) {
        n = read(fc->pair, fc->down.data + fc->down.len, PROXY_BUF - fc->down.len);
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

/* Moves what it can both ways. false when the connection is finished. When libmicrohttpd
 * is done and its last bytes are out, the client gets our FIN and a moment to read them
 * before we close: closing with its unread request bytes pending would reset the
 * connection and could destroy the response in flight (a lingering close). */
static bool proxy_move(struct fconn *fc, bool *progress)
{
    move_up(fc, progress);
    if (!move_down(fc, progress))
        return false;
    if (!fc->pair_eof || fc->down.len || net_conn_backlog(fc->nc))
        return true;
    if (fc->client_eof)
        return false;
    if (!fc->lingering) {
        fc->lingering = true;
        net_conn_shutdown(fc->nc);
        fc->deadline = hs_monotonic_us() + FRONT_LINGER_US;
    }
    fc->up.len = 0;
    return true;
}

static void proxy_pump(struct fconn *fc)
{
    for (int round = 0; round < 16; round++) {
        bool progress = false;
        if (!proxy_move(fc, &progress)) {
            fconn_free(fc);
            return;
        }
        if (!progress)
            break;
        if (!fc->lingering)
            fc->deadline = hs_monotonic_us() + FRONT_IDLE_US;
    }
    proxy_watch(fc);
}

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
    hs_buf_init(&fc->up, PROXY_BUF + 1);
    hs_buf_init(&fc->down, PROXY_BUF + 1);
    hs_buf_append(&fc->up, fc->head, fc->headlen); /* the request as read so far */
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

static void read_head(struct fconn *fc)
{
    struct http1_head h;
    ssize_t n;
    int hlen;

    while (fc->headlen < HTTP1_MAX_HEAD) {
        n = net_conn_read(fc->nc, fc->head + fc->headlen, HTTP1_MAX_HEAD - fc->headlen);
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            fconn_free(fc);
            return;
        }
        fc->headlen += (size_t)n;
    }
    /* The parser writes NULs into the head: parse a copy, keep the bytes as sent. */
    char copy[HTTP1_MAX_HEAD + 1];
    memcpy(copy, fc->head, fc->headlen);
    hlen = http1_parse_head(copy, fc->headlen, &h);
    if (hlen == -EAGAIN) {
        side_watch(fc, &fc->cside, net_conn_fd(fc->nc),
                   EPOLLIN | (net_conn_wants_write(fc->nc) ? EPOLLOUT : 0));
        return;
    }
    if (hlen < 0) {
        reply_and_close(fc, hlen == -E2BIG ? 431 : 400,
                        hlen == -E2BIG ? "Request Header Fields Too Large" : "Bad Request",
                        "malformed HTTP request\n");
        return;
    }
    route(fc, &h, (size_t)hlen);
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
    }
}

/* ---- accepting ---- */

static void accept_one(struct front *f, int fd, const struct sockaddr_storage *sa, socklen_t len)
{
    struct fconn *fc;
    struct net_conn *nc;
    struct epoll_event ev = { .events = EPOLLIN };

    if (f->count >= FRONT_MAX_CONNS) {
        log_warnx("server: %d connections are being set up: refusing one", FRONT_MAX_CONNS);
        close(fd);
        return;
    }
    if (!(nc = net_conn_new(fd, f->deps.tls)))
        return; /* it closed fd */
    fc = hs_xcalloc(1, sizeof(*fc));
    fc->f = f;
    fc->nc = nc;
    fc->pair = -1;
    fc->addr = *sa;
    fc->addrlen = len;
    fc->deadline = hs_monotonic_us() + FRONT_HEAD_US;
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

/* Drops connections past their deadline: a head that never came, a proxied connection
 * that stopped moving. */
static void sweep(struct front *f)
{
    int64_t now = hs_monotonic_us();
    struct fconn *fc = f->all, *next;

    for (; fc; fc = next) {
        next = fc->next;
        if (now >= fc->deadline)
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
    if (f->deps.listen_fd >= 0)
        close(f->deps.listen_fd);
    if (f->evfd >= 0)
        close(f->evfd);
    if (f->epfd >= 0)
        close(f->epfd);
    free(f);
}
