/* A client's byte stream: socket → optional TLS → optional WebSocket framing. */
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net.h"
#include "net/net_internal.h"

/* Largest WebSocket message we send: Tailscale's clients read at most 32 KiB per message
 * (and close with 1009 past that). Also bounds `out`. */
#define WS_SEND_CHUNK 32768
#define OUT_MAX (WS_SEND_CHUNK + 4096)

struct net_conn {
    int fd;
    SSL *ssl;
    bool want_write; /* the last TLS read or handshake step waits for a writable socket */
    struct hs_buf in;  /* handed back by net_conn_unread(), read before the socket */
    struct hs_buf out; /* raw bytes before payload: response head, frames, control replies */
    /* WebSocket receive state: a header may arrive in pieces; control payloads are whole. */
    bool ws, ws_in_frame, ws_in_message, ws_closed;
    struct ws_header hdr;
    uint64_t hdr_done;
    uint8_t hbuf[WS_MAX_HEADER];
    size_t hbuf_len;
    uint8_t ctl[WS_MAX_CONTROL];
};

/* ---- connections ---- */

struct net_conn *net_conn_new(int fd, struct net_tls *tls)
{
    struct net_conn *c = hs_xcalloc(1, sizeof(*c));

    c->fd = fd;
    hs_buf_init(&c->in, HTTP1_MAX_HEAD + 65536);
    hs_buf_init(&c->out, OUT_MAX);
    if (tls) {
        if (!(c->ssl = net__tls_ssl(tls)) || SSL_set_fd(c->ssl, fd) != 1) {
            ERR_clear_error();
            net_conn_close(c);
            return NULL;
        }
        SSL_set_accept_state(c->ssl);
    }
    return c;
}

int net_conn_fd(const struct net_conn *c) { return c->fd; }
bool net_conn_wants_write(const struct net_conn *c) { return c->want_write; }
bool net_conn_backlog(const struct net_conn *c) { return c->out.len > 0; }

/* The outcome of an SSL call that did not succeed: -EAGAIN, 0 for a clean end, or an error.
 * A read or handshake notes whether it waits for the socket to be writable; a write that
 * waits is ordinary backpressure, visible as bytes still queued. */
static int ssl_outcome(struct net_conn *c, int ret, bool reading)
{
    int e = SSL_get_error(c->ssl, ret);

    if (reading)
        c->want_write = e == SSL_ERROR_WANT_WRITE;
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return errno ? -errno : -EPIPE;
    default:
        ERR_clear_error();
        return -EPROTO;
    }
}

int net_conn_handshake(struct net_conn *c)
{
    int ret, rc;

    if (!c->ssl)
        return 0;
    ERR_clear_error();
    if ((ret = SSL_do_handshake(c->ssl)) == 1) {
        c->want_write = false;
        return 0;
    }
    rc = ssl_outcome(c, ret, true);
    return rc == 0 ? -ECONNRESET : rc;
}

/* Bytes from the wire (after TLS), before any WebSocket decoding. */
static ssize_t raw_read(struct net_conn *c, void *buf, size_t cap)
{
    size_t got;
    ssize_t n;
    int ret;

    if (c->in.len) {
        n = (ssize_t)(c->in.len < cap ? c->in.len : cap);
        memcpy(buf, c->in.data, (size_t)n);
        hs_buf_consume(&c->in, (size_t)n);
        hs_buf_trim(&c->in, 0);
        return n;
    }
    if (c->ssl) {
        ERR_clear_error();
        if ((ret = SSL_read_ex(c->ssl, buf, cap, &got)) == 1) {
            c->want_write = false;
            return (ssize_t)got;
        }
        return ssl_outcome(c, ret, true);
    }
    for (;;) {
        n = read(c->fd, buf, cap);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

/* Writes what the socket takes now: bytes taken (maybe 0), or a negative errno. */
static ssize_t raw_write(struct net_conn *c, const void *data, size_t len)
{
    size_t off = 0, put;
    int ret, rc;

    if (!c->ssl)
        return hs_write_nonblock(c->fd, data, len);
    while (off < len) {
        ERR_clear_error();
        if ((ret = SSL_write_ex(c->ssl, (const char *)data + off, len - off, &put)) == 1) {
            off += put;
            continue;
        }
        rc = ssl_outcome(c, ret, false);
        if (rc == -EAGAIN)
            break;
        return rc == 0 ? -EPIPE : rc;
    }
    return (ssize_t)off;
}

static int send_out(struct net_conn *c)
{
    ssize_t n;

    if (!c->out.len)
        return 0;
    if ((n = raw_write(c, c->out.data, c->out.len)) < 0)
        return (int)n;
    hs_buf_consume(&c->out, (size_t)n);
    hs_buf_trim(&c->out, 0);
    return 0;
}

static int frame_into_out(struct net_conn *c, uint8_t opcode, const void *p, size_t len)
{
    uint8_t hdr[WS_MAX_HEADER];
    size_t hl = ws_encode_header(hdr, opcode, true, len);
    int rc;

    if ((rc = hs_buf_reserve(&c->out, hl + len)) < 0)
        return rc;
    hs_buf_append(&c->out, hdr, hl);
    return hs_buf_append(&c->out, p, len);
}

ssize_t net_conn_send(struct net_conn *c, struct hs_buf *tx)
{
    ssize_t taken = 0, n;
    int rc;

    for (;;) {
        if ((rc = send_out(c)) < 0)
            return rc;
        if (c->out.len || !tx->len)
            return taken;
        if (!c->ws) {
            if ((n = raw_write(c, tx->data, tx->len)) < 0)
                return n;
            hs_buf_consume(tx, (size_t)n);
            return taken + n;
        }
        n = (ssize_t)(tx->len < WS_SEND_CHUNK ? tx->len : WS_SEND_CHUNK);
        if ((rc = frame_into_out(c, WS_OP_BINARY, tx->data, (size_t)n)) < 0)
            return rc;
        hs_buf_consume(tx, (size_t)n);
        taken += n;
    }
}

void net_conn_unread(struct net_conn *c, const void *data, size_t len)
{
    hs_buf_append(&c->in, data, len); /* bounded by the front door's head buffer */
}

int net_conn_queue_raw(struct net_conn *c, const void *data, size_t len)
{
    return hs_buf_append(&c->out, data, len);
}

const char *net_addr_text(const struct sockaddr_storage *sa, socklen_t len, char *buf,
                          size_t size)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getnameinfo((const struct sockaddr *)sa, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return "?";
    snprintf(buf, size, "%.100s:%.8s", host, port); /* numeric: both fit */
    return buf;
}

void net_conn_reply(struct net_conn *c, int status, const char *reason, const char *msg)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason, strlen(msg), msg);
    struct hs_buf none;

    hs_buf_init(&none, 0);
    if (n > 0 && (size_t)n < sizeof(buf) && net_conn_queue_raw(c, buf, (size_t)n) == 0)
        net_conn_send(c, &none);
}

void net_conn_websocket(struct net_conn *c)
{
    c->ws = true;
}

/* ---- WebSocket receive ---- */

/* A whole control frame arrived: answer pings, echo a close. */
static int ws_control(struct net_conn *c)
{
    size_t len = (size_t)c->hdr.len;

    switch (c->hdr.opcode) {
    case WS_OP_PING:
        return frame_into_out(c, WS_OP_PONG, c->ctl, len);
    case WS_OP_CLOSE:
        c->ws_closed = true;
        return frame_into_out(c, WS_OP_CLOSE, c->ctl, len >= 2 ? 2 : 0);
    default:
        return 0; /* pong */
    }
}

/* Starts a frame whose header is in c->hdr. Data must be binary: DERP and Noise are byte
 * streams, and a text message would have to be valid UTF-8. */
static int ws_begin_frame(struct net_conn *c)
{
    uint8_t op = c->hdr.opcode;

    if (!c->hdr.masked)
        return -EPROTO; /* RFC 6455 5.1: a client's frames are masked */
    if (op == WS_OP_TEXT || (op == WS_OP_BINARY && c->ws_in_message) ||
        (op == WS_OP_CONT && !c->ws_in_message))
        return -EPROTO;
    c->ws_in_frame = true;
    c->hdr_done = 0;
    return 0;
}

static int ws_end_frame(struct net_conn *c)
{
    c->ws_in_frame = false;
    if (c->hdr.opcode >= WS_OP_CLOSE)
        return ws_control(c);
    c->ws_in_message = !c->hdr.fin;
    return 0;
}

/* Takes header bytes from p; returns how many, or a negative errno. */
static ssize_t ws_take_header(struct net_conn *c, const uint8_t *p, size_t n)
{
    size_t had = c->hbuf_len, copy = WS_MAX_HEADER - had < n ? WS_MAX_HEADER - had : n;
    ssize_t hl;
    int rc;

    memcpy(c->hbuf + had, p, copy);
    c->hbuf_len += copy;
    hl = ws_parse_header(c->hbuf, c->hbuf_len, &c->hdr);
    if (hl == -EAGAIN)
        return (ssize_t)copy;
    if (hl < 0)
        return hl;
    c->hbuf_len = 0;
    if ((rc = ws_begin_frame(c)) < 0)
        return rc;
    if (c->hdr.len == 0 && (rc = ws_end_frame(c)) < 0)
        return rc;
    return hl - (ssize_t)had;
}

/* Decodes n raw bytes in place: payload is compacted to the front of p. Returns the payload
 * length or a negative errno. */
static ssize_t ws_decode(struct net_conn *c, uint8_t *p, size_t n)
{
    size_t i = 0, o = 0;

    while (i < n && !c->ws_closed) {
        uint64_t left;
        size_t take;
        int rc;

        if (!c->ws_in_frame) {
            ssize_t used = ws_take_header(c, p + i, n - i);
            if (used < 0)
                return used;
            i += (size_t)used;
            continue;
        }
        left = c->hdr.len - c->hdr_done;
        take = left < n - i ? (size_t)left : n - i;
        ws_unmask(p + i, take, c->hdr.mask, c->hdr_done);
        if (c->hdr.opcode >= WS_OP_CLOSE) {
            memcpy(c->ctl + c->hdr_done, p + i, take);
        } else {
            memmove(p + o, p + i, take);
            o += take;
        }
        i += take;
        c->hdr_done += take;
        if (c->hdr_done == c->hdr.len && (rc = ws_end_frame(c)) < 0)
            return rc;
    }
    return (ssize_t)o;
}

ssize_t net_conn_read(struct net_conn *c, void *buf, size_t cap)
{
    for (;;) {
        ssize_t n, payload;

        if (c->ws_closed)
            return 0;
        if ((n = raw_read(c, buf, cap)) <= 0 || !c->ws)
            return n;
        if ((payload = ws_decode(c, buf, (size_t)n)) != 0)
            return payload;
    }
}

void net_conn_shutdown(struct net_conn *c)
{
    send_out(c);
    if (c->ssl && SSL_is_init_finished(c->ssl)) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
}

void net_conn_abort(struct net_conn *c)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };

    if (!c)
        return;
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: it could not be delivered anyway */
        c->ssl = NULL;
    }
    hs_buf_reset(&c->out);
    net_conn_close(c);
}

void net_conn_close(struct net_conn *c)
{
    if (!c)
        return;
    send_out(c); /* a WebSocket close reply, if one is queued */
    if (c->ssl) {
        if (SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl);
        ERR_clear_error();
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    hs_buf_free(&c->in);
    hs_buf_free(&c->out);
    free(c);
}
