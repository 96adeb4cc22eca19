/* The DERP mesh: the embedded relays of all replicas form one region, as derper does with
 * --mesh-with and --mesh-psk-file. For every derp.server.mesh_with entry the relay thread
 * holds one connection to that server, presenting our DERP key and the shared mesh key in
 * ClientInfo, and subscribes to its connections (WatchConns). The PeerPresent / PeerGone
 * frames it gets fill the route table (mesh_routes.c); a packet for a key that is not
 * connected here but is on a peer goes there as ForwardPacket. The other half, serving
 * such connections from the peers, is in derp_server.c.
 *
 * Everything here runs on the relay thread, except init and fini. */
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "derp/derp_server_internal.h"

#define MESH_HANDSHAKE_US (10 * INT64_C(1000000))
#define MESH_WRITE_STALL_US (5 * INT64_C(1000000))

static const uint8_t derp_magic[8] = { 0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91 };

/* ---- setup ---- */

int derp__mesh_parse_key(const char *text, size_t len, uint8_t out[DERP_KEY_LEN])
{
    size_t bin_len;

    while (len && (text[len - 1] == ' ' || text[len - 1] == '\n' || text[len - 1] == '\r' ||
                   text[len - 1] == '\t'))
        len--;
    while (len && (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')) {
        text++;
        len--;
    }
    if (len != 2 * DERP_KEY_LEN ||
        sodium_hex2bin(out, DERP_KEY_LEN, text, len, NULL, &bin_len, NULL) != 0 ||
        bin_len != DERP_KEY_LEN)
        return -EINVAL;
    if (sodium_is_zero(out, DERP_KEY_LEN))
        return -EINVAL; /* derper reads an all-zero key as "no mesh key" */
    return 0;
}

static int load_mesh_key(struct derp_server *d, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    int rc = hs_read_file(path, 4096, &text, &len);

    if (rc == 0 && (rc = derp__mesh_parse_key(text, len, d->mesh_key)) < 0)
        log_errorx("derp: derp.server.mesh_key_path %s: not a mesh key (64 hex digits, as "
                   "derper's --mesh-psk-file)", path);
    else if (rc < 0)
        log_errorx("derp: derp.server.mesh_key_path %s: %s", path, hs_strerror(rc));
    if (text) {
        sodium_memzero(text, len);
        free(text);
    }
    d->has_mesh_key = rc == 0;
    return rc;
}

/* https:// peers are verified as any TLS client would: the system's CAs (or SSL_CERT_FILE /
 * SSL_CERT_DIR) and the entry's host name or address. */
static SSL_CTX *tls_client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_verify_paths(ctx);
    /* The send buffer may move and be retried in parts (hs_buf grows, the socket fills). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

/* Sets up slot i for entry (a mesh_with entry, or a URL the replicas found, then owned). */
static int peer_init(struct derp_server *d, struct mesh_peer *p, const char *entry, size_t i)
{
    const char *why;

    *p = (struct mesh_peer){ .entry = entry, .index = (uint8_t)i, .fd = -1, .srv = d,
                             .backoff = DERP_MESH_RETRY_MIN_US };
    hs_buf_init(&p->tx, DERP_TX_HARD_LIMIT);
    if (config_mesh_peer_split(p->entry, &p->addr, &why) < 0) {
        log_errorx("derp: mesh peer \"%s\" %s", p->entry, why);
        return -EINVAL;
    }
    if (p->addr.tls && !d->mesh_tls && !(d->mesh_tls = tls_client_ctx()))
        return -ENOMEM;
    return 0;
}

int derp__mesh_init(struct derp_server *d)
{
    const struct hs_config *cfg = d->cfg;
    const struct hs_strv *with = &cfg->derp_server_mesh_with;
    int rc;

    if (cfg->derp_server_mesh_key_path && *cfg->derp_server_mesh_key_path &&
        (rc = load_mesh_key(d, cfg->derp_server_mesh_key_path)) < 0)
        return rc;
    if (with->n > DERP_MESH_MAX_PEERS) {
        log_errorx("derp: derp.server.mesh_with: at most %d peers", DERP_MESH_MAX_PEERS);
        return -E2BIG;
    }
    if (with->n && !d->has_mesh_key) {
        log_errorx("derp: derp.server.mesh_with needs derp.server.mesh_key_path");
        return -EINVAL;
    }
    /* Every slot at once: epoll holds pointers to them, and replicas may add peers later. */
    d->mesh_cap = d->has_mesh_key ? DERP_MESH_MAX_PEERS : 0;
    d->mesh = d->mesh_cap ? hs_xcalloc(d->mesh_cap, sizeof(*d->mesh)) : NULL;
    for (size_t i = 0; i < with->n; i++) {
        d->nmesh++; /* counted as set up: fini frees it */
        if ((rc = peer_init(d, &d->mesh[i], with->v[i], i)) < 0)
            return rc;
    }
    if (d->nmesh)
        log_info("derp: mesh with %zu peer(s)", d->nmesh);
    return 0;
}

static void peer_disconnect(struct mesh_peer *p);

void derp__mesh_fini(struct derp_server *d)
{
    for (size_t i = 0; i < d->nmesh; i++) {
        peer_disconnect(&d->mesh[i]);
        hs_buf_free(&d->mesh[i].tx);
        if (d->mesh[i].found)
            free((char *)d->mesh[i].entry);
    }
    free(d->mesh);
    d->mesh_cap = 0;
    hs_strv_free(&d->found_next);
    d->mesh = NULL;
    d->nmesh = 0;
    derp__routes_free(&d->routes);
    SSL_CTX_free(d->mesh_tls);
    d->mesh_tls = NULL;
    sodium_memzero(d->mesh_key, sizeof(d->mesh_key));
}

bool derp__mesh_owns(const struct derp_server *d, const void *ptr)
{
    uintptr_t a = (uintptr_t)ptr, lo = (uintptr_t)d->mesh;
    return d->mesh_cap && a >= lo && a < lo + d->mesh_cap * sizeof(*d->mesh);
}

/* ---- connection lifecycle ---- */

static void set_events(struct mesh_peer *p, bool out)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0),
                              .data.ptr = p };
    if (p->epollout != out) {
        p->epollout = out;
        epoll_ctl(p->srv->epfd, EPOLL_CTL_MOD, p->fd, &ev);
    }
}

static void route_gone(void *arg, const uint8_t key[DERP_KEY_LEN])
{
    derp__remote_gone(arg, key);
}

/* Closes the socket and forgets what the peer announced (derper's mesh client clears its
 * forwarding entries on reconnect the same way; they come back with the next WatchConns). */
static void peer_disconnect(struct mesh_peer *p)
{
    if (p->st == MESH_WATCHING && p->fd >= 0)
        STAT_ADD(p->srv->stats.mesh_peers, -1);
    SSL_free(p->ssl); /* no close_notify: the link is dropped either way */
    p->ssl = NULL;
    if (p->fd >= 0) {
        epoll_ctl(p->srv->epfd, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
        p->fd = -1;
    }
    free(p->rx);
    p->rx = NULL;
    p->rxlen = 0;
    hs_buf_reset(&p->tx);
    p->epollout = false;
    p->stalled_since = 0;
    derp__route_drop_peer(&p->srv->routes, p->index, route_gone, p->srv);
}

/* Tries again later: quickly after a connection that lasted, backing off otherwise. */
static void peer_fail(struct mesh_peer *p, const char *why)
{
    int64_t now = hs_monotonic_us();

    if (p->st == MESH_WATCHING && now - p->connected_at >= DERP_MESH_STABLE_US)
        p->backoff = DERP_MESH_RETRY_MIN_US;
    log_info("derp: mesh peer %s: %s; retrying in %llds", p->entry, why,
             (long long)((p->backoff + 999999) / 1000000));
    peer_disconnect(p);
    p->st = MESH_IDLE;
    p->next_try = now + p->backoff + (int64_t)randombytes_uniform(250000);
    p->backoff = p->backoff * 2 > DERP_MESH_RETRY_MAX_US ? DERP_MESH_RETRY_MAX_US : p->backoff * 2;
}

/* Hostnames are resolved here, on the relay thread: mesh_with is meant to name replicas on a
 * private network (addresses, or names a local resolver answers at once). */
static int open_socket(struct mesh_peer *p)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res;
    int fd, rc;

    if ((rc = getaddrinfo(p->addr.host, p->addr.port, &hints, &res)) != 0) {
        log_info("derp: mesh peer %s: %s", p->entry, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) {
        rc = -errno;
        close(fd);
        fd = rc;
    } else if (fd < 0) {
        fd = -errno;
    }
    freeaddrinfo(res);
    return fd;
}

static void peer_connect(struct mesh_peer *p)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = p };
    int fd = open_socket(p);

    if (fd < 0 || (p->fd = fd, epoll_ctl(p->srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)) {
        if (fd >= 0)
            close(fd);
        p->fd = -1;
        p->st = MESH_CONNECTING; /* for peer_fail's message only */
        peer_fail(p, "cannot connect");
        return;
    }
    p->epollout = true;
    p->rx = hs_xmalloc(DERP_RX_SIZE);
    p->rxlen = 0;
    p->st = MESH_CONNECTING;
    p->listed = false;
    p->deadline = hs_monotonic_us() + MESH_HANDSHAKE_US;
    p->last_rx = hs_monotonic_us();
    hs_buf_appendf(&p->tx,
                   "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                   "User-Agent: headscale-derp-mesh\r\n\r\n",
                   p->addr.path, p->addr.host, p->addr.port);
}

void derp__mesh_tick(struct derp_server *d)
{
    int64_t now = hs_monotonic_us();

    for (size_t i = 0; i < d->nmesh; i++) {
        struct mesh_peer *p = &d->mesh[i];
        if (p->st == MESH_OFF || p->st == MESH_SELF)
            continue;
        if (p->st == MESH_IDLE && now >= p->next_try)
            peer_connect(p);
        else if (p->st != MESH_IDLE && p->st != MESH_WATCHING && now > p->deadline)
            peer_fail(p, "no DERP handshake in time");
        else if (p->st == MESH_WATCHING && now - p->last_rx > DERP_MESH_SILENCE_US)
            peer_fail(p, "silent (no keep-alive)");
        else if (p->stalled_since && now - p->stalled_since > MESH_WRITE_STALL_US)
            peer_fail(p, "not reading");
    }
}

/* ---- peers found by the replicas (derp_server_mesh_peers) ---- */

/* Whether a slot in use (from mesh_with or found) dials url already. */
static bool is_listed(const struct derp_server *d, const char *url)
{
    for (size_t i = 0; i < d->nmesh; i++)
        if (d->mesh[i].st != MESH_OFF && strcmp(d->mesh[i].entry, url) == 0)
            return true;
    return false;
}

/* A found peer whose replica is gone: its link closes, its slot is free again. */
static void drop_found(struct mesh_peer *p)
{
    log_info("derp: mesh peer %s: no longer a replica on the database; closing", p->entry);
    peer_disconnect(p);
    hs_buf_free(&p->tx);
    free((char *)p->entry);
    p->entry = NULL;
    p->found = false;
    p->st = MESH_OFF;
}

static void add_found(struct derp_server *d, const char *url)
{
    size_t i = 0;

    while (i < d->nmesh && d->mesh[i].st != MESH_OFF)
        i++;
    if (i == d->mesh_cap) {
        log_warnx("derp: mesh peer %s left out: at most %d peers", url, DERP_MESH_MAX_PEERS);
        return;
    }
    if (peer_init(d, &d->mesh[i], hs_strdup(url), i) < 0) {
        free((char *)d->mesh[i].entry);
        d->mesh[i] = (struct mesh_peer){ .st = MESH_OFF, .fd = -1, .srv = d };
        return;
    }
    d->mesh[i].found = true;
    d->mesh[i].st = MESH_IDLE;
    if (i == d->nmesh)
        d->nmesh++;
    log_info("derp: mesh peer %s: a replica on the database", url);
}

void derp__mesh_sync(struct derp_server *d)
{
    struct hs_strv urls;

    pthread_mutex_lock(&d->mu);
    if (!d->found_new) {
        pthread_mutex_unlock(&d->mu);
        return;
    }
    urls = d->found_next;
    d->found_next = (struct hs_strv){ 0 };
    d->found_new = false;
    pthread_mutex_unlock(&d->mu);
    for (size_t i = 0; i < d->nmesh; i++)
        if (d->mesh[i].found && d->mesh[i].st != MESH_OFF &&
            !hs_strv_contains(&urls, d->mesh[i].entry))
            drop_found(&d->mesh[i]);
    /* A URL mesh_with names already keeps its one link. */
    for (size_t i = 0; i < urls.n; i++)
        if (!is_listed(d, urls.v[i]))
            add_found(d, urls.v[i]);
    hs_strv_free(&urls);
}

/* ---- bytes, in TLS or not ---- */

/* An SSL call's outcome as the socket calls give it: -EAGAIN to wait (for EPOLLOUT too when
 * TLS needs to write), 0 at the end of the stream, -EIO when broken. */
static ssize_t tls_result(struct mesh_peer *p, int ret)
{
    switch (SSL_get_error(p->ssl, ret)) {
    case SSL_ERROR_WANT_WRITE:
        set_events(p, true);
        return -EAGAIN;
    case SSL_ERROR_WANT_READ:
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        return -EIO;
    }
}

/* A socket call's outcome in the same terms. */
static ssize_t sock_result(ssize_t n)
{
    if (n >= 0)
        return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

static ssize_t peer_recv(struct mesh_peer *p, void *buf, size_t cap)
{
    size_t got;
    int ret;

    if (!p->ssl)
        return sock_result(recv(p->fd, buf, cap, MSG_DONTWAIT));
    ret = SSL_read_ex(p->ssl, buf, cap, &got);
    return ret == 1 ? (ssize_t)got : tls_result(p, ret);
}

static ssize_t peer_send(struct mesh_peer *p, const void *buf, size_t len)
{
    size_t put;
    int ret;

    if (!p->ssl)
        return sock_result(send(p->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT));
    ret = SSL_write_ex(p->ssl, buf, len, &put);
    return ret == 1 ? (ssize_t)put : tls_result(p, ret);
}

/* After the TCP connect: the TLS handshake for https:// entries, then the upgrade request. */
static int start_tls(struct mesh_peer *p)
{
    struct in6_addr ip;
    bool literal = inet_pton(AF_INET, p->addr.host, &ip) == 1 ||
                   inet_pton(AF_INET6, p->addr.host, &ip) == 1;

    if (!(p->ssl = SSL_new(p->srv->mesh_tls)) || SSL_set_fd(p->ssl, p->fd) != 1)
        return -ENOMEM;
    if (literal) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(p->ssl), p->addr.host) != 1)
            return -EINVAL;
    } else if (SSL_set_tlsext_host_name(p->ssl, p->addr.host) != 1 ||
               SSL_set1_host(p->ssl, p->addr.host) != 1) {
        return -EINVAL;
    }
    SSL_set_connect_state(p->ssl);
    p->st = MESH_TLS;
    return 0;
}

/* 0 done, -EAGAIN to wait, or the handshake failed (log says why, e.g. the certificate). */
static int tls_handshake(struct mesh_peer *p)
{
    int ret = SSL_do_handshake(p->ssl);
    long verify;

    if (ret == 1) {
        p->st = MESH_UPGRADING;
        return 0;
    }
    if (tls_result(p, ret) == -EAGAIN)
        return -EAGAIN;
    verify = SSL_get_verify_result(p->ssl);
    log_info("derp: mesh peer %s: TLS handshake failed%s%s", p->entry,
             verify != X509_V_OK ? ": " : "",
             verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
    return -EPROTO;
}

/* ---- sending ---- */

static bool queue(struct mesh_peer *p, uint8_t type, const void *a, size_t alen, const void *b,
                  size_t blen, const void *c, size_t clen)
{
    size_t len = alen + blen + clen;
    uint8_t hdr[DERP_HDR_LEN] = { type, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                                  (uint8_t)(len >> 8), (uint8_t)len };

    if (p->tx.len + DERP_HDR_LEN + len > p->tx.max || hs_buf_reserve(&p->tx, DERP_HDR_LEN + len) < 0)
        return false;
    hs_buf_append(&p->tx, hdr, sizeof(hdr));
    if (alen) /* room was reserved: these cannot fail */
        hs_buf_append(&p->tx, a, alen);
    if (blen)
        hs_buf_append(&p->tx, b, blen);
    if (clen)
        hs_buf_append(&p->tx, c, clen);
    return true;
}

int derp__mesh_forward(struct derp_server *d, const uint8_t src[DERP_KEY_LEN],
                       const uint8_t dst[DERP_KEY_LEN], const uint8_t *pkt, size_t len)
{
    int i = derp__route_lookup(&d->routes, dst);
    struct mesh_peer *p;

    if (i < 0)
        return -ENOENT;
    p = &d->mesh[i];
    /* Routes exist only while WATCHING; packets are kept below the control frames' room. */
    if (p->tx.len + DERP_HDR_LEN + 2 * DERP_KEY_LEN + len > DERP_TX_PACKET_LIMIT ||
        !queue(p, DERP_FRAME_FORWARD_PACKET, src, DERP_KEY_LEN, dst, DERP_KEY_LEN, pkt, len))
        return -ENOBUFS;
    return 0;
}

static void peer_flush(struct mesh_peer *p)
{
    ssize_t n;

    if (p->st == MESH_CONNECTING || p->st == MESH_TLS || p->fd < 0)
        return;
    n = p->tx.len ? peer_send(p, p->tx.data, p->tx.len) : 0;
    if (n < 0 && n != -EAGAIN) {
        peer_fail(p, "write failed");
        return;
    }
    if (n > 0)
        hs_buf_consume(&p->tx, (size_t)n);
    hs_buf_trim(&p->tx, 65536);
    if (!p->tx.len)
        p->stalled_since = 0;
    else if (n > 0 || !p->stalled_since)
        p->stalled_since = hs_monotonic_us();
    set_events(p, p->tx.len > 0 || (p->ssl && SSL_want_write(p->ssl)));
}

void derp__mesh_flush(struct derp_server *d)
{
    for (size_t i = 0; i < d->nmesh; i++)
        if (d->mesh[i].tx.len)
            peer_flush(&d->mesh[i]);
}

/* ---- receiving ---- */

/* ClientInfo: our key, nonce, box({"version":2,"meshKey":"<hex>"}) to the server's key. */
static int send_client_info(struct mesh_peer *p, const uint8_t server_key[DERP_KEY_LEN])
{
    struct derp_server *d = p->srv;
    char hex[2 * DERP_KEY_LEN + 1], json[sizeof(hex) + 32];
    uint8_t sealed[DERP_NONCE_LEN + sizeof(json) + crypto_box_MACBYTES];
    int len, rc = 0;

    sodium_bin2hex(hex, sizeof(hex), d->mesh_key, DERP_KEY_LEN);
    len = snprintf(json, sizeof(json), "{\"version\":%d,\"meshKey\":\"%s\"}",
                   DERP_PROTOCOL_VERSION, hex);
    randombytes_buf(sealed, DERP_NONCE_LEN);
    if (crypto_box_easy(sealed + DERP_NONCE_LEN, (const uint8_t *)json, (size_t)len, sealed,
                        server_key, d->key.priv) != 0 ||
        !queue(p, DERP_FRAME_CLIENT_INFO, d->key.pub, DERP_KEY_LEN, sealed,
               DERP_NONCE_LEN + (size_t)len + crypto_box_MACBYTES, NULL, 0))
        rc = -EPROTO;
    sodium_memzero(hex, sizeof(hex));
    sodium_memzero(json, sizeof(json));
    return rc;
}

/* The server's key: it may be this very server (mesh_with lists every replica, ours too). */
static int on_server_key(struct mesh_peer *p, const struct derp_frame *f)
{
    if (f->type != DERP_FRAME_SERVER_KEY || f->len < sizeof(derp_magic) + DERP_KEY_LEN ||
        memcmp(f->payload, derp_magic, sizeof(derp_magic)) != 0)
        return -EPROTO;
    if (memcmp(f->payload + sizeof(derp_magic), p->srv->key.pub, DERP_KEY_LEN) == 0) {
        log_info("derp: mesh peer %s is this server (same DERP key): not meshing with it",
                 p->entry);
        peer_disconnect(p);
        p->st = MESH_SELF;
        return 1;
    }
    if (send_client_info(p, f->payload + sizeof(derp_magic)) < 0 ||
        !queue(p, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0, NULL, 0))
        return -EPROTO;
    p->st = MESH_HANDSHAKE;
    return 0;
}

static void on_watch_frame(struct mesh_peer *p, const struct derp_frame *f)
{
    struct derp_server *d = p->srv;

    switch (f->type) {
    case DERP_FRAME_PEER_PRESENT:
        p->listed = true;
        if (f->len >= DERP_KEY_LEN && derp__route_add(&d->routes, f->payload, p->index) < 0)
            log_warnx("derp: mesh peer %s: route table full", p->entry);
        break;
    case DERP_FRAME_PEER_GONE:
        if (f->len >= DERP_KEY_LEN && derp__route_remove(&d->routes, f->payload, p->index))
            derp__remote_gone(d, f->payload);
        break;
    case DERP_FRAME_PING:
        if (f->len >= 8)
            queue(p, DERP_FRAME_PONG, f->payload, 8, NULL, 0, NULL, 0);
        break;
    default:
        break; /* KeepAlive, RecvPacket (for our own key), Health, newer frame types */
    }
}

/* One frame in the handshake or afterwards. <0 fails the peer, 1 stops reading. */
static int on_frame(struct mesh_peer *p, const struct derp_frame *f)
{
    switch (p->st) {
    case MESH_KEYING:
        return on_server_key(p, f);
    case MESH_HANDSHAKE:
        if (f->type != DERP_FRAME_SERVER_INFO)
            return f->type == DERP_FRAME_KEEP_ALIVE ? 0 : -EPROTO;
        p->st = MESH_WATCHING;
        STAT_ADD(p->srv->stats.mesh_peers, 1);
        p->connected_at = hs_monotonic_us();
        log_info("derp: mesh peer %s: connected, watching its clients", p->entry);
        return 0;
    default:
        on_watch_frame(p, f);
        return 0;
    }
}

/* The HTTP answer to GET /derp: 101 or nothing. Returns the head's length, 0 while
 * incomplete, <0 when refused. */
static ssize_t parse_upgrade(struct mesh_peer *p)
{
    const uint8_t *end = memmem(p->rx, p->rxlen, "\r\n\r\n", 4);

    if (!end)
        return p->rxlen > HTTP1_MAX_HEAD ? -E2BIG : 0;
    if (p->rxlen < 12 || (memcmp(p->rx, "HTTP/1.1 101", 12) != 0 &&
                          memcmp(p->rx, "HTTP/1.0 101", 12) != 0))
        return -EPROTO;
    return end + 4 - p->rx;
}

static int process_rx(struct mesh_peer *p)
{
    size_t off = 0;
    int rc = 0;

    if (p->st == MESH_UPGRADING) {
        ssize_t n = parse_upgrade(p);
        if (n <= 0)
            return (int)n;
        off = (size_t)n;
        p->st = MESH_KEYING;
    }
    while (rc == 0) {
        struct derp_frame f;
        ssize_t n = derp_frame_parse(p->rx + off, p->rxlen - off, DERP_MAX_FRAME, &f);
        if (n == -EAGAIN)
            break;
        if (n < 0)
            return (int)n;
        off += (size_t)n;
        rc = on_frame(p, &f);
    }
    if (rc == 0 && off) {
        memmove(p->rx, p->rx + off, p->rxlen - off);
        p->rxlen -= off;
    }
    return rc < 0 ? rc : 0;
}

/* A peer that ends the connection in the handshake did not take our ClientInfo; one that
 * ends it right after WatchConns, before listing anyone (a watcher is always listed itself),
 * took us for a plain client: the mesh keys differ. */
static const char *closed_why(const struct mesh_peer *p)
{
    if (p->st == MESH_HANDSHAKE)
        return "refused our ClientInfo (unknown key: is its mesh key ours?)";
    if (p->st == MESH_WATCHING && !p->listed)
        return "closed on WatchConns: its mesh key is not ours";
    return "connection closed by the peer";
}

/* Reads a bounded share per round of the loop (the socket stays readable for the next),
 * but always what TLS holds already: epoll would not tell about it again. */
static void peer_read(struct mesh_peer *p)
{
    for (int round = 0; p->fd >= 0 && (round < 64 || (p->ssl && SSL_pending(p->ssl)));
         round++) {
        ssize_t n = peer_recv(p, p->rx + p->rxlen, DERP_RX_SIZE - p->rxlen);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            peer_fail(p, n < 0 ? "read failed" : closed_why(p));
            return;
        }
        p->rxlen += (size_t)n;
        p->last_rx = hs_monotonic_us();
        if (process_rx(p) < 0) {
            peer_fail(p, p->st == MESH_UPGRADING ? "refused the DERP upgrade"
                         : p->st == MESH_HANDSHAKE ? "refused our ClientInfo"
                                                   : "broke the DERP protocol");
            return;
        }
    }
}

void derp__mesh_event(struct mesh_peer *p, uint32_t events)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (p->fd < 0)
        return;
    if (p->st == MESH_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            peer_fail(p, err ? strerror(err) : "connect failed");
            return;
        }
        p->st = MESH_UPGRADING;
        if (p->addr.tls && start_tls(p) < 0) {
            peer_fail(p, "cannot set up TLS");
            return;
        }
    }
    if (p->st == MESH_TLS) {
        int rc = tls_handshake(p);
        if (rc == -EAGAIN) {
            set_events(p, SSL_want_write(p->ssl)); /* no longer waiting for the connect */
            return;
        }
        if (rc < 0) {
            peer_fail(p, "no TLS");
            return;
        }
    }
    if (p->st == MESH_UPGRADING && p->tx.len)
        peer_flush(p); /* the upgrade request */
    /* TLS may need the socket writable to read on (and the other way round): try both. */
    if (p->fd >= 0 && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR) || p->ssl))
        peer_read(p);
    if (p->fd >= 0 && (events & EPOLLOUT) && p->tx.len)
        peer_flush(p);
    if (p->fd >= 0) /* EPOLLOUT only while something waits for it */
        set_events(p, p->tx.len > 0 || (p->ssl && SSL_want_write(p->ssl)));
}
