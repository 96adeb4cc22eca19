#include <errno.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "control/control_internal.h"

#define LOOP_MAX_EVENTS 256
#define LOOP_TICK_MS 1000
#define EARLY_MAGIC "\xff\xff\xffTS"

/* ---- connection table (loop thread only) ---- */

static struct conn **bucket(struct control *c, uint64_t id)
{
    return &c->conns[id % CONN_HASH_BUCKETS];
}

static struct conn *conn_find(struct control *c, uint64_t id)
{
    for (struct conn *cn = *bucket(c, id); cn; cn = cn->hnext)
        if (cn->id == id)
            return cn;
    return NULL;
}

static void conn_unlink(struct control *c, struct conn *cn)
{
    for (struct conn **pp = bucket(c, cn->id); *pp; pp = &(*pp)->hnext) {
        if (*pp == cn) {
            *pp = cn->hnext;
            return;
        }
    }
}

static void conn_free(struct control *c, struct conn *cn)
{
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, net_conn_fd(cn->nc), NULL);
    conn_unlink(c, cn);
    h2_session_free(cn);
    noise_transport_wipe(&cn->nt);
    hs_buf_free(&cn->tx);
    free(cn->rx);
    net_conn_close(cn->nc);
    STAT_ADD(c->stats.conns_open, -1);
    free(cn);
}

/* ---- output ---- */

int conn_seal(struct conn *cn, const uint8_t *pt, size_t len)
{
    while (len) {
        size_t n = len < NOISE_MAX_PLAINTEXT ? len : NOISE_MAX_PLAINTEXT;
        ssize_t w;
        int rc;

        if ((rc = hs_buf_reserve(&cn->tx, n + NOISE_HDR_LEN + NOISE_TAG_LEN)) < 0)
            return rc;
        if ((w = noise_seal(&cn->nt, pt, n, (uint8_t *)cn->tx.data + cn->tx.len)) < 0)
            return (int)w;
        cn->tx.len += (size_t)w;
        pt += n;
        len -= n;
    }
    return 0;
}

int conn_seal_frame(struct conn *cn, const uint8_t *hd, size_t hdlen, const uint8_t *data,
                    size_t len)
{
    uint8_t first[NOISE_MAX_PLAINTEXT];
    size_t take = len < sizeof(first) - hdlen ? len : sizeof(first) - hdlen;
    int rc;

    memcpy(first, hd, hdlen);
    if (take) /* an empty frame (end of stream) has no payload buffer */
        memcpy(first + hdlen, data, take);
    rc = conn_seal(cn, first, hdlen + take);
    if (rc == 0 && len > take)
        rc = conn_seal(cn, data + take, len - take);
    return rc;
}

static void conn_want_write(struct conn *cn, bool on)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0),
                              .data.ptr = cn };
    if (cn->epollout == on)
        return;
    cn->epollout = on;
    epoll_ctl(cn->ctl->epfd, EPOLL_CTL_MOD, net_conn_fd(cn->nc), &ev);
}

/* Writes what the socket takes now; the rest waits for EPOLLOUT. */
static void conn_write(struct conn *cn)
{
    ssize_t n = net_conn_send(cn->nc, &cn->tx);

    if (n < 0)
        cn->closing = true;
    if (n > 0)
        cn->last_active = hs_monotonic_us();
    hs_buf_trim(&cn->tx, 0);
    conn_want_write(cn, (cn->tx.len > 0 || net_conn_backlog(cn->nc) ||
                         net_conn_wants_write(cn->nc)) && !cn->closing);
}

/* Pulls HTTP/2 output through Noise to the socket, unless the socket is already backed up. */
static void conn_pump(struct conn *cn)
{
    if (!cn->closing && cn->tx.len < CONTROL_MAX_CONN_TX / 2 && h2_flush(cn) < 0)
        cn->closing = true;
    if (!cn->closing)
        conn_write(cn);
}

/* ---- input ---- */

static void conn_fail(struct conn *cn, const char *why)
{
    char mk[KEY_TEXT_MAX];
    keys_format("mkey:", cn->machine_key, mk);
    log_info("control: conn %llu (%.16s…): closing: %s", (unsigned long long)cn->id, mk, why);
    STAT_ADD(cn->ctl->stats.bad_frames, 1);
    cn->closing = true;
}

/* Decrypts every complete record in buf[0..len) and feeds HTTP/2; returns the bytes used
 * (an incomplete record at the end stays). */
static size_t conn_process_rx(struct conn *cn, uint8_t *buf, size_t len)
{
    size_t off = 0;

    while (!cn->closing) {
        ssize_t flen = noise_frame_len(buf + off, len - off);
        uint8_t *pt;
        size_t ptlen;

        if (flen == -EAGAIN)
            break;
        if (flen < 0) {
            conn_fail(cn, "malformed Noise frame");
            break;
        }
        if (noise_open(&cn->nt, buf + off, (size_t)flen, &pt, &ptlen) < 0) {
            conn_fail(cn, "Noise record failed to decrypt");
            break;
        }
        off += (size_t)flen;
        if (h2_recv(cn, pt, ptlen) < 0)
            conn_fail(cn, "HTTP/2 protocol error");
    }
    return off;
}

/* Keeps an incomplete record for the next read; frees the buffer when none is left. */
static void conn_keep_rest(struct conn *cn, const uint8_t *rest, size_t n)
{
    if (n == 0) {
        free(cn->rx);
        cn->rx = NULL;
    } else {
        if (!cn->rx)
            cn->rx = hs_xmalloc(NOISE_MAX_FRAME);
        memmove(cn->rx, rest, n);
    }
    cn->rxlen = n;
}

/* Puts cn on the list handled at the end of the loop round. */
static void conn_attention(struct conn *cn)
{
    if (!cn->attn) {
        cn->attn = true;
        cn->anext = cn->ctl->attn;
        cn->ctl->attn = cn;
    }
}

/* Reads until the socket is drained or the round's budget is spent: into the loop's
 * scratch buffer, or behind the incomplete record this connection holds (a record is at
 * most NOISE_MAX_FRAME). */
static void conn_read(struct conn *cn)
{
    size_t budget = CONTROL_READ_BUDGET;

    cn->unread = false;
    while (!cn->closing) {
        if (budget == 0) {
            cn->unread = true;
            conn_attention(cn);
            break;
        }
        uint8_t *buf = cn->rxlen ? cn->rx : cn->ctl->scratch;
        size_t have = cn->rxlen, cap = cn->rxlen ? NOISE_MAX_FRAME : CONTROL_READ_CHUNK, used;
        ssize_t n = net_conn_read(cn->nc, buf + have, cap - have);

        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            cn->closing = true; /* EOF or error */
            break;
        }
        have += (size_t)n;
        budget -= (size_t)n < budget ? (size_t)n : budget;
        cn->last_active = hs_monotonic_us();
        used = conn_process_rx(cn, buf, have);
        /* What is left is one incomplete record (it fits), unless the input was refused. */
        conn_keep_rest(cn, buf + used, cn->closing ? 0 : have - used);
    }
}

/* ---- the inbox: work for the loop from other threads ---- */

void control__backlog_add(struct control *c, int64_t delta)
{
    size_t now = __atomic_add_fetch(&c->backlog, (size_t)delta, __ATOMIC_RELAXED);

    if (delta < 0 && now < CONTROL_BACKLOG_SOFT && __atomic_load_n(&c->backlog_waiters,
                                                                    __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&c->bmu);
        pthread_cond_broadcast(&c->bcond);
        pthread_mutex_unlock(&c->bmu);
    }
}

void control_wait_backlog(struct control *c, int64_t timeout_us)
{
    int64_t deadline;

    if (__atomic_load_n(&c->backlog, __ATOMIC_RELAXED) < CONTROL_BACKLOG_SOFT)
        return;
    deadline = hs_monotonic_us() + timeout_us;
    pthread_mutex_lock(&c->bmu);
    __atomic_add_fetch(&c->backlog_waiters, 1, __ATOMIC_RELAXED);
    while (__atomic_load_n(&c->backlog, __ATOMIC_RELAXED) >= CONTROL_BACKLOG_SOFT)
        if (hs_cond_wait_until(&c->bcond, &c->bmu, deadline))
            break;
    __atomic_sub_fetch(&c->backlog_waiters, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->bmu);
}

static void queue_push(struct control *c, struct msg *m)
{
    uint64_t one = 1;

    control__backlog_add(c, (int64_t)m->data.len);
    pthread_mutex_lock(&c->qmu);
    if (c->inbox_tail)
        c->inbox_tail->next = m;
    else
        c->inbox_head = m;
    c->inbox_tail = m;
    pthread_mutex_unlock(&c->qmu);
    if (write(c->evfd, &one, sizeof(one)) < 0)
        log_warn("control: eventfd");
}

static struct msg *msg_new(enum msg_kind kind, uint64_t conn_id, int32_t stream_id)
{
    struct msg *m = hs_xcalloc(1, sizeof(*m));
    m->kind = kind;
    m->conn_id = conn_id;
    m->stream_id = stream_id;
    hs_buf_init(&m->data, CONTROL_MAX_STREAM_BACKLOG);
    return m;
}

static void msg_free(struct msg *m)
{
    hs_buf_free(&m->data);
    free(m);
}

/* ---- adopting a connection ---- */

static int conn_send_greeting(struct conn *cn, const struct noise_handshake_result *hs)
{
    uint8_t early[9 + 128], chal_priv[32], chal_pub[32];
    char chal[KEY_TEXT_MAX], json[128];
    int n, rc;

    if ((rc = hs_buf_append(&cn->tx, hs->response, NOISE_RESP_LEN)) < 0)
        return rc;
    /* Early payload: a per-connection node-key challenge, as headscale and Tailscale send. */
    randombytes_buf(chal_priv, sizeof(chal_priv));
    crypto_scalarmult_base(chal_pub, chal_priv);
    sodium_memzero(chal_priv, sizeof(chal_priv));
    keys_format("chalpub:", chal_pub, chal);
    n = snprintf(json, sizeof(json), "{\"nodeKeyChallenge\":\"%s\"}", chal);
    memcpy(early, EARLY_MAGIC, 5);
    early[5] = 0;
    early[6] = 0;
    early[7] = (uint8_t)(n >> 8);
    early[8] = (uint8_t)n;
    memcpy(early + 9, json, (size_t)n);
    return conn_seal(cn, early, 9 + (size_t)n);
}

static void loop_adopt(struct control *c, struct conn *cn)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = cn };

    cn->id = ++c->next_conn_id;
    cn->last_active = hs_monotonic_us();
    cn->hnext = *bucket(c, cn->id);
    *bucket(c, cn->id) = cn;
    STAT_ADD(c->stats.conns_open, 1);
    STAT_ADD(c->stats.conns_total, 1);
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, net_conn_fd(cn->nc), &ev) < 0 ||
        h2_session_new(cn) < 0) {
        conn_free(c, cn);
        return;
    }
    conn_read(cn); /* bytes that came with the upgrade, and what TLS holds already */
    conn_pump(cn);
}

/* The client's IP as 16 bytes (IPv4 mapped into ::ffff:0:0/96); zero when not IP. */
static void client_ip_of(const struct sockaddr_storage *sa, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->ss_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

/* Hands an upgraded connection to the loop, which owns it from now on: it writes
 * hs->response and the early payload after whatever nc has queued (the 101 head). */
static void control_adopt(struct control *c, const struct control_upgrade_req *up,
                          const struct noise_handshake_result *hs)
{
    struct conn *cn = hs_xcalloc(1, sizeof(*cn));
    struct msg *m = msg_new(MSG_ADOPT, 0, 0);

    cn->nc = up->nc;
    cn->ctl = c;
    cn->nt = hs->transport;
    cn->capver = hs->version;
    memcpy(cn->machine_key, hs->peer_static, KEY_LEN);
    client_ip_of(&up->addr, cn->client_ip);
    hs_buf_init(&cn->tx, CONTROL_MAX_CONN_TX + 2 * NOISE_MAX_FRAME);
    if (conn_send_greeting(cn, hs) < 0)
        cn->closing = true;
    m->adopt = cn;
    queue_push(c, m);
}

void control_reply(struct control *c, uint64_t conn_id, int32_t stream_id, int status,
                   const char *content_type, const void *body, size_t len, bool end)
{
    struct msg *m = msg_new(MSG_REPLY, conn_id, stream_id);
    m->status = status;
    m->content_type = content_type;
    m->end = end;
    if (hs_buf_append(&m->data, body, len) < 0)
        m->status = 500;
    queue_push(c, m);
}

void control_reply_busy(struct control *c, uint64_t conn_id, int32_t stream_id,
                        unsigned retry_after_s, const char *text)
{
    struct msg *m = msg_new(MSG_REPLY, conn_id, stream_id);
    m->status = 429;
    m->content_type = "text/plain; charset=utf-8";
    m->retry_after = retry_after_s ? retry_after_s : 1;
    m->end = true;
    if (hs_buf_append(&m->data, text, strlen(text)) < 0)
        m->status = 500;
    queue_push(c, m);
}

void control_stream_write(struct control *c, uint64_t conn_id, int32_t stream_id,
                          const void *data, size_t len)
{
    struct msg *m = msg_new(MSG_DATA, conn_id, stream_id);
    if (hs_buf_append(&m->data, data, len) < 0) {
        m->kind = MSG_CLOSE; /* a message this large means something is badly wrong */
    }
    queue_push(c, m);
}

/* Moves body into m; false when it is too large for a stream's backlog. */
static bool msg_take(struct msg *m, struct hs_buf *body)
{
    if (body->len > m->data.max)
        return false;
    hs_buf_free(&m->data);
    m->data = *body;
    m->data.max = CONTROL_MAX_STREAM_BACKLOG;
    hs_buf_init(body, body->max);
    return true;
}

void control_reply_buf(struct control *c, uint64_t conn_id, int32_t stream_id, int status,
                       const char *content_type, struct hs_buf *body, bool end)
{
    struct msg *m = msg_new(MSG_REPLY, conn_id, stream_id);
    m->status = msg_take(m, body) ? status : 500;
    m->content_type = content_type;
    m->end = end;
    queue_push(c, m);
}

void control_stream_write_buf(struct control *c, uint64_t conn_id, int32_t stream_id,
                              struct hs_buf *data)
{
    struct msg *m = msg_new(MSG_DATA, conn_id, stream_id);
    if (!msg_take(m, data))
        m->kind = MSG_CLOSE; /* as control_stream_write() */
    queue_push(c, m);
}

void control_stream_end(struct control *c, uint64_t conn_id, int32_t stream_id)
{
    queue_push(c, msg_new(MSG_END, conn_id, stream_id));
}

void control_close_conn(struct control *c, uint64_t conn_id)
{
    queue_push(c, msg_new(MSG_CLOSE, conn_id, 0));
}

/* ---- the loop thread ---- */

static void loop_handle_msg(struct control *c, struct msg *m)
{
    struct conn *cn;

    if (m->kind == MSG_ADOPT) {
        loop_adopt(c, m->adopt);
        return;
    }
    if (!(cn = conn_find(c, m->conn_id)) || cn->closing)
        return; /* the client went away first */
    switch (m->kind) {
    case MSG_REPLY: h2_reply(cn, m); break;
    case MSG_DATA: h2_data(cn, m); break;
    case MSG_END: h2_end(cn, m); break;
    default: cn->closing = true; break;
    }
    if (!cn->closing)
        conn_pump(cn);
    if (cn->closing)
        conn_attention(cn);
}

static void loop_drain_inbox(struct control *c)
{
    struct msg *m, *next;
    uint64_t v;

    if (read(c->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("control: eventfd read");
    pthread_mutex_lock(&c->qmu);
    m = c->inbox_head;
    c->inbox_head = c->inbox_tail = NULL;
    pthread_mutex_unlock(&c->qmu);
    for (; m; m = next) {
        next = m->next;
        control__backlog_add(c, -(int64_t)m->data.len); /* moves to a stream, or is dropped */
        loop_handle_msg(c, m);
        msg_free(m);
    }
}

static void loop_conn_event(struct conn *cn, uint32_t events)
{
    if ((events & EPOLLIN) || ((events & EPOLLOUT) && net_conn_wants_write(cn->nc)))
        conn_read(cn);
    if (events & (EPOLLERR | EPOLLHUP))
        cn->closing = true;
    if (!cn->closing)
        conn_pump(cn);
    if (cn->closing)
        conn_attention(cn);
}

/* The end of a round: connections that finished are freed (no event of this round can
 * name them any more), those with input left past their budget read again. */
static void loop_attention(struct control *c)
{
    struct conn *cn = c->attn, *next;

    c->attn = NULL;
    for (; cn; cn = next) {
        next = cn->anext;
        cn->attn = false;
        if (!cn->closing && cn->unread) {
            conn_read(cn);
            if (!cn->closing)
                conn_pump(cn);
        }
        if (cn->closing) {
            /* Last words (GOAWAY, RST) go out if the socket takes them; nothing waits. */
            conn_write(cn);
            conn_free(c, cn);
        }
    }
}

/* Once a tick: closes connections that carry no stream and have been silent past the idle
 * timeout; gives back the frame buffer pages of those that wrote since the last tick. */
static void loop_sweep(struct control *c)
{
    int64_t now = hs_monotonic_us();

    for (size_t i = 0; i < CONN_HASH_BUCKETS; i++) {
        struct conn *cn = c->conns[i], *next;
        for (; cn; cn = next) {
            next = cn->hnext;
            if (cn->nstreams == 0 && now - cn->last_active > CONTROL_IDLE_TIMEOUT_US) {
                cn->closing = true;
                conn_attention(cn);
            } else if (cn->h2_dirty) {
                h2_trim(cn);
            }
        }
    }
}

static void loop_close_all(struct control *c)
{
    c->attn = NULL; /* everything goes */
    for (size_t i = 0; i < CONN_HASH_BUCKETS; i++)
        while (c->conns[i])
            conn_free(c, c->conns[i]);
}

static void *loop_main(void *arg)
{
    struct control *c = arg;
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int64_t next_tick = hs_monotonic_us() + LOOP_TICK_MS * 1000;

    while (c->running) {
        int n = epoll_wait(c->epfd, evs, LOOP_MAX_EVENTS, c->attn ? 0 : LOOP_TICK_MS);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == c)
                loop_drain_inbox(c);
            else
                loop_conn_event(evs[i].data.ptr, evs[i].events);
        }
        if (hs_monotonic_us() >= next_tick) {
            next_tick = hs_monotonic_us() + LOOP_TICK_MS * 1000;
            loop_sweep(c);
            if (c->h.tick)
                c->h.tick(c->h.ctx);
        }
        loop_attention(c);
    }
    loop_drain_inbox(c);
    loop_close_all(c);
    return NULL;
}

/* ---- workers ---- */

static void job_push(struct control *c, int queue, struct job *j)
{
    struct jobq *q = &c->jobs[queue];

    pthread_mutex_lock(&c->jmu);
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    pthread_cond_signal(&c->jcond);
    pthread_mutex_unlock(&c->jmu);
}

/* The next job, handshakes first; NULL if there is none. Called with jmu held. */
static struct job *job_pop(struct control *c)
{
    for (int i = 0; i < JOBQ_COUNT; i++) {
        struct jobq *q = &c->jobs[i];
        struct job *j = q->head;
        if (!j)
            continue;
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        return j;
    }
    return NULL;
}

void loop_dispatch(struct control *c, struct conn *cn, struct stream *st)
{
    struct control_request *rq = hs_xcalloc(1, sizeof(*rq));
    struct job *j = hs_xcalloc(1, sizeof(*j));

    rq->conn_id = cn->id;
    rq->stream_id = st->id;
    hs_strlcpy(rq->method, st->method, sizeof(rq->method));
    hs_strlcpy(rq->path, st->path, sizeof(rq->path));
    rq->body = st->body; /* moved: counted against the budget until a worker takes it */
    cn->body_bytes -= st->body.len;
    hs_buf_init(&st->body, 0);
    memcpy(rq->machine_key, cn->machine_key, KEY_LEN);
    rq->capver = cn->capver;
    memcpy(rq->client_ip, cn->client_ip, sizeof(rq->client_ip));
    STAT_ADD(c->stats.requests_total, 1);
    j->rq = rq;
    job_push(c, JOBQ_REQUEST, j);
}

void control_set_limits(struct control *c, const struct control_limits *l)
{
    control__reglimit_free(c->handshakes);
    c->handshakes = control__reglimit_new(l->handshakes_per_minute, 60 * HS_USEC_PER_SEC,
                                          REGLIMIT_SOURCES);
    c->max_body_bytes = l->body_bytes;
}

bool control__body_take(struct control *c, size_t len)
{
    size_t now = __atomic_add_fetch(&c->body_bytes, len, __ATOMIC_RELAXED);

    if (c->max_body_bytes && now > c->max_body_bytes) {
        __atomic_sub_fetch(&c->body_bytes, len, __ATOMIC_RELAXED);
        return false;
    }
    return true;
}

void control__body_put(struct control *c, size_t len)
{
    __atomic_sub_fetch(&c->body_bytes, len, __ATOMIC_RELAXED);
}

/* Whether the address may start another handshake now; if not, the client is told when to
 * try again and its connection is closed. The check costs a table lookup: far less than
 * the four X25519 operations it saves. */
static bool handshake_admitted(struct control *c, const struct control_upgrade_req *rq)
{
    char msg[128], who[NET_ADDR_TEXT];
    uint8_t ip[16];
    unsigned wait;

    if (rq->unlimited)
        return true;
    client_ip_of(&rq->addr, ip);
    if (!(wait = control__reglimit_take(c->handshakes, ip, hs_monotonic_us())))
        return true;
    snprintf(msg, sizeof(msg), "too many Noise handshakes from your address: try again in "
                               "%u s (tuning.handshake_rate_limit)\n", wait);
    if (control__log_due(&c->handshake_log_at))
        log_info("control: /ts2021 from %s: %s",
                 net_addr_text(&rq->addr, rq->addrlen, who, sizeof(who)), msg);
    net_conn_reply(rq->nc, 429, "Too Many Requests", msg);
    net_conn_close(rq->nc);
    return false;
}

void control_upgrade_async(struct control *c, const struct control_upgrade_req *rq)
{
    struct job *j;

    if (!handshake_admitted(c, rq))
        return;
    j = hs_xcalloc(1, sizeof(*j));

    j->up = hs_xmalloc(sizeof(*j->up));
    *j->up = *rq;
    job_push(c, JOBQ_HANDSHAKE, j);
}

/* Runs the Noise responder over the X-Tailscale-Handshake header (base64 of the 101-byte
 * initiation). 0 and *out filled, or -EINVAL / -EACCES with a reason in err. */
static int handshake(struct control *c, const char *handshake_b64,
                     struct noise_handshake_result *out, char *err, size_t errsize)
{
    uint8_t msg[NOISE_INIT_LEN + 8];
    size_t len;
    int rc;

    if (sodium_base642bin(msg, sizeof(msg), handshake_b64, strlen(handshake_b64), NULL, &len,
                          NULL, sodium_base64_VARIANT_ORIGINAL) != 0) {
        snprintf(err, errsize, "X-Tailscale-Handshake is not base64");
        return -EINVAL;
    }
    rc = noise_accept(&c->key, msg, len, out);
    if (rc == -EINVAL)
        snprintf(err, errsize, "malformed Noise handshake initiation (%zu bytes)", len);
    else if (rc < 0)
        snprintf(err, errsize, "Noise handshake failed");
    return rc;
}

/* The worker's half of control_upgrade_async(). */
static void run_upgrade(struct control *c, struct control_upgrade_req *up)
{
    struct noise_handshake_result res;
    char err[160], who[NET_ADDR_TEXT];

    if (handshake(c, up->handshake_b64, &res, err, sizeof(err)) < 0) {
        log_info("server: /ts2021 from %s: %s", net_addr_text(&up->addr, up->addrlen, who,
                                                               sizeof(who)), err);
        net_conn_reply(up->nc, 400, "Bad Request", err);
        net_conn_close(up->nc);
        return;
    }
    net_conn_queue_raw(up->nc, up->ok_head, up->ok_len);
    if (up->websocket)
        net_conn_websocket(up->nc);
    control_adopt(c, up, &res);
    sodium_memzero(&res, sizeof(res));
}

static void job_free(struct job *j)
{
    if (j->up) {
        net_conn_close(j->up->nc);
        free(j->up);
    }
    control_request_free(j->rq);
    free(j);
}

static void *worker_main(void *arg)
{
    struct control *c = arg;

    for (;;) {
        struct job *j = NULL;
        pthread_mutex_lock(&c->jmu);
        while (!c->stopping && !(j = job_pop(c)))
            pthread_cond_wait(&c->jcond, &c->jmu);
        if (c->stopping) {
            pthread_mutex_unlock(&c->jmu);
            return NULL;
        }
        pthread_mutex_unlock(&c->jmu);
        if (j->up) {
            run_upgrade(c, j->up);
            free(j->up);
        } else {
            control__body_put(c, j->rq->body.len);
            c->h.request(c->h.ctx, j->rq);
        }
        free(j);
    }
}

void control_request_free(struct control_request *rq)
{
    if (!rq)
        return;
    hs_buf_free(&rq->body);
    free(rq);
}

/* ---- lifecycle ---- */

struct control *control_new(const struct key_pair *noise_key, const struct control_handlers *h,
                            int workers)
{
    struct control *c = hs_xcalloc(1, sizeof(*c));

    c->key = *noise_key;
    c->h = *h;
    c->nworkers = workers > 0 ? workers : 2;
    c->epfd = -1;
    c->evfd = -1;
    pthread_mutex_init(&c->qmu, NULL);
    pthread_mutex_init(&c->jmu, NULL);
    pthread_cond_init(&c->jcond, NULL);
    pthread_mutex_init(&c->bmu, NULL);
    hs_cond_init_monotonic(&c->bcond); /* control_wait_backlog's deadline */
    c->scratch = hs_xmalloc(CONTROL_READ_CHUNK);
    return c;
}

int control_start(struct control *c)
{
    struct epoll_event ev = { .events = EPOLLIN };

    if ((c->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return -errno;
    ev.data.ptr = c;
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &ev) < 0)
        return -errno;
    c->running = true;
    if (pthread_create(&c->loop_thread, NULL, loop_main, c) != 0) {
        c->running = false;
        return -EAGAIN;
    }
    pthread_setname_np(c->loop_thread, "hs-control"); /* shows in top -H, perf, gdb */
    c->workers = hs_xcalloc((size_t)c->nworkers, sizeof(pthread_t));
    for (int i = 0; i < c->nworkers; i++)
        if (pthread_create(&c->workers[i], NULL, worker_main, c) == 0)
            pthread_setname_np(c->workers[i], "hs-worker");
    return 0;
}

void control_free(struct control *c)
{
    uint64_t one = 1;

    if (!c)
        return;
    pthread_mutex_lock(&c->jmu);
    c->stopping = true;
    pthread_cond_broadcast(&c->jcond);
    pthread_mutex_unlock(&c->jmu);
    for (int i = 0; c->workers && i < c->nworkers; i++)
        pthread_join(c->workers[i], NULL);
    free(c->workers);
    if (c->running) {
        c->running = false;
        if (write(c->evfd, &one, sizeof(one)) < 0)
            log_warn("control: eventfd");
        pthread_join(c->loop_thread, NULL);
    }
    for (struct job *j; (j = job_pop(c));)
        job_free(j);
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->evfd >= 0)
        close(c->evfd);
    sodium_memzero(&c->key, sizeof(c->key));
    control__reglimit_free(c->handshakes);
    free(c->scratch);
    free(c);
}

void control_get_stats(struct control *c, struct control_stats *out)
{
    out->conns_open = __atomic_load_n(&c->stats.conns_open, __ATOMIC_RELAXED);
    out->conns_total = __atomic_load_n(&c->stats.conns_total, __ATOMIC_RELAXED);
    out->streams_open = __atomic_load_n(&c->stats.streams_open, __ATOMIC_RELAXED);
    out->requests_total = __atomic_load_n(&c->stats.requests_total, __ATOMIC_RELAXED);
    out->bad_frames = __atomic_load_n(&c->stats.bad_frames, __ATOMIC_RELAXED);
}

char *control_key_json(const struct control *c)
{
    char pub[KEY_TEXT_MAX];
    keys_format("mkey:", c->key.pub, pub);
    return hs_aprintf("{\"legacyPublicKey\":\"mkey:%064d\",\"publicKey\":\"%s\"}", 0, pub);
}
