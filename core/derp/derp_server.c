/* The embedded DERP relay: clients arrive as upgraded /derp sockets and live in one epoll
 * thread with the STUN socket. Packets are copied from the sender's receive buffer straight
 * into the recipient's send buffer; every client's send buffer is flushed once per loop
 * iteration, so a burst costs one write per recipient, not one per packet. A recipient that
 * cannot keep up loses packets (its buffer is capped) and is cut off when it stalls. */
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "derp/derp_server_internal.h"

#define LOOP_EVENTS 256
#define PEERGONE_PER_SEC 20

static const uint8_t derp_magic[8] = { 0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91 };

/* ---- sending ---- */

static void mark_dirty(struct derp_server *d, struct dclient *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = d->dirty;
        d->dirty = c;
    }
}

/* Queues one frame; packets past DERP_TX_PACKET_LIMIT are dropped (false). */
static bool queue_frame(struct dclient *c, uint8_t type, const void *a, size_t alen,
                        const void *b, size_t blen, size_t limit)
{
    uint8_t hdr[DERP_HDR_LEN];
    size_t len = alen + blen;

    if (c->closing || c->tx.len + DERP_HDR_LEN + len > limit)
        return false;
    hdr[0] = type;
    hdr[1] = (uint8_t)(len >> 24);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
    if (hs_buf_reserve(&c->tx, DERP_HDR_LEN + len) < 0)
        return false;
    hs_buf_append(&c->tx, hdr, sizeof(hdr));
    if (alen)
        hs_buf_append(&c->tx, a, alen);
    if (blen)
        hs_buf_append(&c->tx, b, blen);
    mark_dirty(c->srv, c);
    return true;
}

static bool queue_control(struct dclient *c, uint8_t type, const void *p, size_t len)
{
    return queue_frame(c, type, p, len, NULL, 0, DERP_TX_HARD_LIMIT);
}

static void want_write(struct dclient *c, bool on)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0),
                              .data.ptr = c };
    if (c->epollout != on) {
        c->epollout = on;
        epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, net_conn_fd(c->nc), &ev);
    }
}

static void flush_client(struct dclient *c)
{
    ssize_t n = net_conn_send(c->nc, &c->tx);
    bool pending;

    if (n < 0)
        c->closing = true;
    hs_buf_trim(&c->tx, 65536);
    pending = c->tx.len > 0 || net_conn_backlog(c->nc);
    if (!pending)
        c->stalled_since = 0;
    else if (n > 0 || !c->stalled_since)
        c->stalled_since = hs_monotonic_us();
    want_write(c, (pending || net_conn_wants_write(c->nc)) && !c->closing);
}

/* ---- mesh watchers: other servers of the region following our connections ---- */

/* A watcher that cannot take an update has a wrong picture of who is here: it is closed,
 * and its server reconnects and gets the whole list again. */
static void watcher_send(struct dclient *w, uint8_t type, const void *p, size_t len)
{
    if (!queue_frame(w, type, p, len, NULL, 0, DERP_MESH_TX_LIMIT) && !w->closing) {
        log_info("derp: mesh peer %llu: too far behind on connection updates: closing",
                 (unsigned long long)w->id);
        w->closing = true;
    }
}

static void send_present(struct dclient *w, const struct dclient *c)
{
    uint8_t msg[DERP_PEER_PRESENT_LEN];

    memcpy(msg, c->key, DERP_KEY_LEN);
    memcpy(msg + DERP_KEY_LEN, c->addr16, 16);
    msg[DERP_KEY_LEN + 16] = (uint8_t)(c->port >> 8);
    msg[DERP_KEY_LEN + 17] = (uint8_t)c->port;
    msg[DERP_KEY_LEN + 18] = c->mesh ? DERP_PRESENT_MESH_PEER : DERP_PRESENT_REGULAR;
    watcher_send(w, DERP_FRAME_PEER_PRESENT, msg, sizeof(msg));
}

static void broadcast_present(struct derp_server *d, const struct dclient *c)
{
    for (size_t i = 0; i < d->nwatchers; i++)
        send_present(d->watchers[i], c);
}

static void broadcast_gone(struct derp_server *d, const uint8_t key[DERP_KEY_LEN])
{
    uint8_t msg[DERP_KEY_LEN + 1];

    memcpy(msg, key, DERP_KEY_LEN);
    msg[DERP_KEY_LEN] = 0; /* PeerGoneReasonDisconnected */
    for (size_t i = 0; i < d->nwatchers; i++)
        watcher_send(d->watchers[i], DERP_FRAME_PEER_GONE, msg, sizeof(msg));
}

static void remove_watcher(struct derp_server *d, struct dclient *c)
{
    for (size_t i = 0; c->watcher && i < d->nwatchers; i++) {
        if (d->watchers[i] == c) {
            d->watchers[i] = d->watchers[--d->nwatchers];
            __atomic_store_n(&d->stats.mesh_watchers, d->nwatchers, __ATOMIC_RELAXED);
            break;
        }
    }
    c->watcher = false;
}

/* WatchConns: every client here now, then each arrival and departure. */
static void add_watcher(struct derp_server *d, struct dclient *w)
{
    if (w->watcher)
        return;
    if (memcmp(w->key, d->key.pub, DERP_KEY_LEN) == 0)
        return; /* our own mesh client dialled us: nothing to tell ourselves */
    if (d->nwatchers == DERP_MESH_MAX_WATCHERS) {
        log_warnx("derp: mesh peer %llu: already %d mesh peers watch: closing",
                  (unsigned long long)w->id, DERP_MESH_MAX_WATCHERS);
        w->closing = true;
        return;
    }
    for (size_t i = 0; i < DERP_REG_BUCKETS; i++)
        for (struct dclient *c = d->reg[i]; c; c = c->hnext)
            send_present(w, c);
    d->watchers[d->nwatchers++] = w;
    __atomic_store_n(&d->stats.mesh_watchers, d->nwatchers, __ATOMIC_RELAXED);
    w->watcher = true;
}

/* ---- client lifecycle ---- */

/* What an adopted client counts against, given back. */
static void client_release(struct derp_server *d, struct dclient *c)
{
    net_addrs_put(d->addrs, c->place);
    __atomic_sub_fetch(&d->nclients, 1, __ATOMIC_RELAXED);
    hs_buf_free(&c->tx);
    free(c->rx);
    free(c);
}

static void client_free(struct derp_server *d, struct dclient *c)
{
    remove_watcher(d, c);
    for (struct dclient **pp = &d->unread; c->unread && *pp; pp = &(*pp)->unread_next) {
        if (*pp == c) {
            *pp = c->unread_next;
            break;
        }
    }
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, net_conn_fd(c->nc), NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->abort)
        net_conn_abort(c->nc);
    else
        net_conn_close(c->nc);
    client_release(d, c);
}

/* Tells those who sent to c that it left, and lets an older connection of the same key
 * take over. */
static void client_gone(struct derp_server *d, struct dclient *c)
{
    uint8_t msg[DERP_KEY_LEN + 1];

    if (!c->registered)
        return;
    reg_remove(d, c);
    STAT_ADD(d->stats.clients, -1);
    for (struct dclient *o = d->all; o; o = o->next) {
        if (o != c && o->ready && !o->registered && memcmp(o->key, c->key, DERP_KEY_LEN) == 0) {
            reg_add(d, o);
            STAT_ADD(d->stats.clients, 1);
            return; /* the key is still here */
        }
    }
    broadcast_gone(d, c->key);
    memcpy(msg, c->key, DERP_KEY_LEN);
    msg[DERP_KEY_LEN] = 0; /* PeerGoneReasonDisconnected */
    for (size_t i = 0; i < c->nsenders; i++) {
        struct dclient *s = reg_find(d, c->senders[i]);
        if (s)
            queue_control(s, DERP_FRAME_PEER_GONE, msg, sizeof(msg));
    }
}

static void remember_sender(struct dclient *dst, const uint8_t key[DERP_KEY_LEN])
{
    for (size_t i = 0; i < dst->nsenders; i++)
        if (memcmp(dst->senders[i], key, DERP_KEY_LEN) == 0)
            return;
    memcpy(dst->senders[dst->next_sender], key, DERP_KEY_LEN);
    dst->next_sender = (dst->next_sender + 1) % DERP_MAX_SENDERS;
    if (dst->nsenders < DERP_MAX_SENDERS)
        dst->nsenders++;
}

/* ---- frames from clients ---- */

/* ClientInfo's meshKey (64 hex digits, as derper reads it): a client that knows ours is
 * another server of the region. Any other well-formed key, or none, makes a plain client;
 * a malformed one refuses the ClientInfo, as derper's JSON decoding does. */
static int check_mesh_key(struct dclient *c, const json_t *v)
{
    uint8_t key[DERP_KEY_LEN];
    const char *hex = json_string_value(v);
    size_t len;

    if (!v)
        return 0;
    if (!hex || (len = json_string_length(v)) != 2 * DERP_KEY_LEN ||
        sodium_hex2bin(key, sizeof(key), hex, len, NULL, &len, NULL) != 0 ||
        len != DERP_KEY_LEN)
        return -EINVAL;
    c->mesh = c->srv->has_mesh_key && crypto_verify_32(key, c->srv->mesh_key) == 0;
    sodium_memzero(key, sizeof(key));
    return 0;
}

/* ClientInfo: client key, nonce, box(JSON) from the client's key to ours. */
static int open_client_info(struct dclient *c, const struct derp_frame *f)
{
    const size_t head = DERP_KEY_LEN + DERP_NONCE_LEN;
    size_t mlen;
    uint8_t *msg;
    json_t *info;
    int rc = -EACCES;

    if (f->type != DERP_FRAME_CLIENT_INFO || f->len < head + crypto_box_MACBYTES)
        return -EINVAL;
    memcpy(c->key, f->payload, DERP_KEY_LEN);
    mlen = f->len - head - crypto_box_MACBYTES;
    msg = hs_xmalloc(mlen + 1);
    if (crypto_box_open_easy(msg, f->payload + head, f->len - head, f->payload + DERP_KEY_LEN,
                             c->key, c->srv->key.priv) != 0)
        goto out;
    info = json_loadb((const char *)msg, mlen, JSON_REJECT_DUPLICATES, NULL);
    rc = json_is_object(info) ? check_mesh_key(c, json_object_get(info, "meshKey")) : -EINVAL;
    json_decref(info);
out:
    sodium_memzero(msg, mlen); /* it may hold the mesh key */
    free(msg);
    return rc;
}

/* ServerInfo: nonce + box({"version":2}) from our key to the client's. */
static int send_server_info(struct dclient *c)
{
    static const char info[] = "{\"version\":2}";
    uint8_t sealed[DERP_NONCE_LEN + sizeof(info) - 1 + crypto_box_MACBYTES];

    randombytes_buf(sealed, DERP_NONCE_LEN);
    if (crypto_box_easy(sealed + DERP_NONCE_LEN, (const uint8_t *)info, sizeof(info) - 1,
                        sealed, c->key, c->srv->key.priv) != 0)
        return -EACCES; /* a low-order client key */
    queue_control(c, DERP_FRAME_SERVER_INFO, sealed, sizeof(sealed));
    return 0;
}

static int handle_client_info(struct dclient *c, const struct derp_frame *f)
{
    struct derp_server *d = c->srv;
    struct dclient *old;
    int rc;

    if ((rc = open_client_info(c, f)) < 0)
        return rc;
    /* A mesh peer is no node of the tailnet: the key it proved is its admission. */
    if (!c->mesh && d->cfg->derp_server_verify_clients && d->verify &&
        !(c->node_id = d->verify(d->verify_arg, c->key)))
        return -EACCES;
    if (c->mesh) {
        c->tx.max = DERP_MESH_TX_LIMIT;
        log_info("derp: client %llu: mesh peer (it has the mesh key)", (unsigned long long)c->id);
    }
    if ((rc = send_server_info(c)) < 0)
        return rc;
    c->ready = true;
    c->deadline = 0;
    if ((old = reg_find(d, c->key)))
        reg_remove(d, old);
    else
        STAT_ADD(d->stats.clients, 1);
    reg_add(d, c);
    broadcast_present(d, c);
    return 0;
}

static void peer_gone_not_here(struct dclient *c, const uint8_t dst[DERP_KEY_LEN])
{
    uint8_t msg[DERP_KEY_LEN + 1];
    int64_t now = hs_monotonic_us();

    if (now - c->peergone_window > 1000000) {
        c->peergone_window = now;
        c->peergone_sent = 0;
    }
    if (c->peergone_sent++ >= PEERGONE_PER_SEC)
        return;
    memcpy(msg, dst, DERP_KEY_LEN);
    msg[DERP_KEY_LEN] = 1; /* PeerGoneReasonNotHere */
    queue_control(c, DERP_FRAME_PEER_GONE, msg, sizeof(msg));
}

/* RecvPacket: the source key, then the packet, straight from the sender's receive buffer. */
static void deliver(struct dclient *dst, const uint8_t src[DERP_KEY_LEN], const uint8_t *pkt,
                    size_t len)
{
    struct derp_server *d = dst->srv;

    if (!queue_frame(dst, DERP_FRAME_RECV_PACKET, src, DERP_KEY_LEN, pkt, len,
                     DERP_TX_PACKET_LIMIT)) {
        STAT_ADD(d->stats.packets_dropped, 1);
        return;
    }
    remember_sender(dst, src);
    STAT_ADD(d->stats.packets_relayed, 1);
    STAT_ADD(d->stats.bytes_relayed, len);
}

/* A remote key is no longer announced by any server of the region: local clients that got
 * packets from it are told it left (derper's PeerGone once a peer is gone everywhere). */
void derp__remote_gone(struct derp_server *d, const uint8_t key[DERP_KEY_LEN])
{
    uint8_t msg[DERP_KEY_LEN + 1];

    if (reg_find(d, key))
        return; /* it is here now */
    memcpy(msg, key, DERP_KEY_LEN);
    msg[DERP_KEY_LEN] = 0; /* PeerGoneReasonDisconnected */
    for (struct dclient *c = d->all; c; c = c->next) {
        for (size_t i = 0; c->registered && i < c->nsenders; i++) {
            if (memcmp(c->senders[i], key, DERP_KEY_LEN) == 0) {
                queue_control(c, DERP_FRAME_PEER_GONE, msg, sizeof(msg));
                break;
            }
        }
    }
}

static void handle_send_packet(struct dclient *c, const struct derp_frame *f)
{
    struct derp_server *d = c->srv;
    struct dclient *dst;
    size_t plen;
    int rc;

    if (f->len < DERP_KEY_LEN || f->len - DERP_KEY_LEN > DERP_MAX_PACKET) {
        c->closing = true;
        return;
    }
    plen = f->len - DERP_KEY_LEN;
    if ((dst = reg_find(d, f->payload))) {
        deliver(dst, c->key, f->payload + DERP_KEY_LEN, plen);
        return;
    }
    /* Not here: another server of the region may have it (a local client always wins). */
    rc = derp__mesh_forward(d, c->key, f->payload, f->payload + DERP_KEY_LEN, plen);
    if (rc == 0) {
        STAT_ADD(d->stats.mesh_packets_out, 1);
        STAT_ADD(d->stats.packets_relayed, 1);
        STAT_ADD(d->stats.bytes_relayed, plen);
        return;
    }
    STAT_ADD(d->stats.packets_dropped, 1);
    if (rc == -ENOENT)
        peer_gone_not_here(c, f->payload);
}

/* ForwardPacket from a mesh peer: source key, destination key, packet. It goes to a local
 * client only: a forwarded packet is never forwarded again. */
static void handle_forward_packet(struct dclient *c, const struct derp_frame *f)
{
    struct dclient *dst;

    if (f->len < 2 * DERP_KEY_LEN || f->len - 2 * DERP_KEY_LEN > DERP_MAX_PACKET) {
        c->closing = true;
        return;
    }
    if (!(dst = reg_find(c->srv, f->payload + DERP_KEY_LEN))) {
        STAT_ADD(c->srv->stats.packets_dropped, 1);
        peer_gone_not_here(c, f->payload + DERP_KEY_LEN);
        return;
    }
    STAT_ADD(c->srv->stats.mesh_packets_in, 1);
    deliver(dst, f->payload, f->payload + 2 * DERP_KEY_LEN, f->len - 2 * DERP_KEY_LEN);
}

/* ClosePeer from a mesh peer: drop every connection of that key here. */
static void handle_close_peer(struct dclient *c, const struct derp_frame *f)
{
    unsigned n = 0;

    if (f->len != DERP_KEY_LEN) {
        c->closing = true;
        return;
    }
    for (struct dclient *o = c->srv->all; o; o = o->next) {
        if (o->ready && !o->closing && memcmp(o->key, f->payload, DERP_KEY_LEN) == 0) {
            o->closing = true;
            n++;
        }
    }
    log_info("derp: mesh peer %llu: ClosePeer closed %u connection(s)", (unsigned long long)c->id,
             n);
}

/* Mesh frames need the mesh key in ClientInfo; derper closes other clients that send them. */
static bool may_mesh(struct dclient *c, uint8_t type)
{
    if (c->mesh)
        return true;
    log_info("derp: client %llu: mesh frame 0x%02x from a client without the mesh key: closing",
             (unsigned long long)c->id, type);
    STAT_ADD(c->srv->stats.bad_frames, 1);
    c->closing = true;
    return false;
}

static void handle_frame(struct dclient *c, const struct derp_frame *f)
{
    switch (f->type) {
    case DERP_FRAME_SEND_PACKET:
        handle_send_packet(c, f);
        break;
    case DERP_FRAME_PING:
        if (f->len < 8 || f->len > 1000) {
            c->closing = true;
            break;
        }
        queue_control(c, DERP_FRAME_PONG, f->payload, 8);
        break;
    case DERP_FRAME_CLIENT_INFO:
        c->closing = true; /* only once, at the start */
        break;
    case DERP_FRAME_WATCH_CONNS:
        if (may_mesh(c, f->type)) {
            if (f->len != 0)
                c->closing = true;
            else
                add_watcher(c->srv, c);
        }
        break;
    case DERP_FRAME_CLOSE_PEER:
        if (may_mesh(c, f->type))
            handle_close_peer(c, f);
        break;
    case DERP_FRAME_FORWARD_PACKET:
        if (may_mesh(c, f->type))
            handle_forward_packet(c, f);
        break;
    default:
        /* NotePreferred, Pong, and frame types from newer clients: skipped by length. */
        break;
    }
}

static void process_rx(struct dclient *c)
{
    size_t off = 0;

    while (!c->closing) {
        struct derp_frame f;
        uint32_t max = c->ready ? DERP_MAX_FRAME : DERP_MAX_CLIENT_INFO;
        ssize_t n = derp_frame_parse((const uint8_t *)c->rx + off, c->rxlen - off, max, &f);

        if (n == -EAGAIN)
            break;
        if (n < 0) {
            log_info("derp: client %llu: frame over the size limit: closing",
                     (unsigned long long)c->id);
            STAT_ADD(c->srv->stats.bad_frames, 1);
            c->closing = true;
            break;
        }
        off += (size_t)n;
        if (!c->ready) {
            int rc = handle_client_info(c, &f);
            if (rc < 0) {
                log_info("derp: client %llu: %s: closing", (unsigned long long)c->id,
                         rc == -EACCES ? "not admitted (unknown key or bad box)"
                                       : "malformed ClientInfo");
                STAT_ADD(c->srv->stats.bad_frames, 1);
                c->closing = true;
            }
            continue;
        }
        handle_frame(c, &f);
    }
    memmove(c->rx, c->rx + off, c->rxlen - off);
    c->rxlen -= off;
}

/* Room for the frame that starts the buffer (its header says how long it is). Buffers
 * start small: most clients only ever see packets of a few hundred bytes. */
static void rx_make_room(struct dclient *c)
{
    size_t need = DERP_RX_INITIAL;

    if (c->rxlen >= DERP_HDR_LEN) {
        uint32_t plen = (uint32_t)c->rx[1] << 24 | (uint32_t)c->rx[2] << 16 |
                        (uint32_t)c->rx[3] << 8 | c->rx[4];
        if (plen <= DERP_MAX_FRAME && DERP_HDR_LEN + plen > need)
            need = DERP_HDR_LEN + plen;
    }
    if (c->rxlen == 0 && c->rxcap > DERP_RX_INITIAL) {
        free(c->rx);
        c->rx = NULL;
        c->rxcap = 0;
    }
    if (c->rxcap < need) {
        c->rx = hs_xrealloc(c->rx, need);
        c->rxcap = need;
    }
}

static void client_read(struct dclient *c)
{
    size_t budget = DERP_READ_BUDGET;

    while (!c->closing) {
        ssize_t n;
        if (budget == 0) {
            if (!c->unread) {
                c->unread = true;
                c->unread_next = c->srv->unread;
                c->srv->unread = c;
            }
            break;
        }
        rx_make_room(c);
        if (c->rxlen == c->rxcap) {
            c->closing = true; /* cannot happen: a full buffer always holds a frame */
            break;
        }
        n = net_conn_read(c->nc, c->rx + c->rxlen, c->rxcap - c->rxlen);
        if (n > 0) {
            c->rxlen += (size_t)n;
            budget -= (size_t)n < budget ? (size_t)n : budget;
            process_rx(c);
        } else if (n == -EAGAIN) {
            if (net_conn_wants_write(c->nc) || net_conn_backlog(c->nc))
                mark_dirty(c->srv, c); /* the flush sends a WebSocket pong, asks for EPOLLOUT */
            break;
        } else {
            c->closing = true;
        }
    }
}

/* ---- the loop ---- */

static void loop_client_event(struct derp_server *d, struct dclient *c, uint32_t events)
{
    if ((events & EPOLLIN) || ((events & EPOLLOUT) && net_conn_wants_write(c->nc)))
        client_read(c);
    if (events & (EPOLLERR | EPOLLHUP))
        c->closing = true;
    if ((events & EPOLLOUT) && !c->closing)
        mark_dirty(d, c);
}

/* Writes every client that got bytes this round; frees the ones that are done. */
static void flush_dirty(struct derp_server *d)
{
    while (d->dirty) {
        struct dclient *c = d->dirty;
        d->dirty = c->dirty_next;
        c->dirty = false;
        if (!c->closing)
            flush_client(c);
    }
}

/* Clients that finished this round: their peers are told first, so the PeerGone frames go
 * out in this round's flush rather than a second later. */
static void announce_gone(struct derp_server *d)
{
    for (struct dclient *c = d->all; c; c = c->next)
        if (c->closing)
            client_gone(d, c);
}

/* After the flush (which skips closing clients), so none is still on the dirty list. */
static void reap(struct derp_server *d)
{
    struct dclient *c = d->all, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->closing) {
            client_gone(d, c); /* no-op unless it started closing during the flush */
            client_free(d, c);
        }
    }
}

static void tick(struct derp_server *d)
{
    int64_t now = hs_monotonic_us();

    for (struct dclient *c = d->all; c; c = c->next) {
        if (c->deadline && now > c->deadline) {
            log_info("derp: client %llu: no ClientInfo in time: closing",
                     (unsigned long long)c->id);
            c->closing = true;
        } else if (c->stalled_since && now - c->stalled_since > DERP_WRITE_STALL_US) {
            log_info("derp: client %llu: not reading: closing", (unsigned long long)c->id);
            c->closing = true;
            c->abort = true;
        } else if (c->ready && now >= c->next_keepalive) {
            queue_control(c, DERP_FRAME_KEEP_ALIVE, NULL, 0);
            c->next_keepalive = now + DERP_KEEPALIVE_US + (int64_t)randombytes_uniform(5000000);
        }
    }
}

static void stun_read(struct derp_server *d)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof(from);
        uint8_t req[1500], resp[64];
        ssize_t n = recvfrom(d->stun_fd, req, sizeof(req), 0, (struct sockaddr *)&from,
                             &fromlen);
        if (n < 0)
            break;
        if ((n = stun_answer(req, (size_t)n, &from, resp, sizeof(resp))) > 0)
            sendto(d->stun_fd, resp, (size_t)n, 0, (struct sockaddr *)&from, fromlen);
    }
}

static void adopt_pending(struct derp_server *d)
{
    struct pending *p, *next;
    uint64_t v;

    if (read(d->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("derp: eventfd");
    pthread_mutex_lock(&d->mu);
    p = d->inbox;
    d->inbox = NULL;
    pthread_mutex_unlock(&d->mu);
    for (; p; p = next) {
        struct dclient *c = p->c;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
        next = p->next;
        free(p);
        c->id = ++d->next_id;
        c->next = d->all;
        if (d->all)
            d->all->prev = c;
        d->all = c;
        if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, net_conn_fd(c->nc), &ev) < 0) {
            c->closing = true;
            continue;
        }
        mark_dirty(d, c); /* the ServerKey frame is queued already */
        client_read(c);   /* bytes that came with the upgrade, and what TLS holds already */
    }
}

/* verify_clients is checked at ClientInfo; a node deleted, expired or re-keyed afterwards
 * must not keep relaying over the connection it has: ask the verifier again. */
static void recheck_client(struct derp_server *d, struct dclient *c)
{
    uint64_t id = d->verify(d->verify_arg, c->key);

    if (id) {
        c->node_id = id;
        return;
    }
    log_info("derp: client %llu (node %llu): no longer admitted (node deleted, expired or "
             "re-keyed): closing", (unsigned long long)c->id, (unsigned long long)c->node_id);
    c->closing = true;
}

/* The nodes derp_server_recheck() named since the last round. */
static void run_rechecks(struct derp_server *d)
{
    uint64_t ids[DERP_MAX_RECHECKS];
    size_t n;
    bool all;

    pthread_mutex_lock(&d->mu);
    n = d->nrechecks;
    all = d->recheck_all;
    memcpy(ids, d->rechecks, n * sizeof(*ids));
    d->nrechecks = 0;
    d->recheck_all = false;
    pthread_mutex_unlock(&d->mu);
    if (n == 0 && !all)
        return;
    qsort(ids, n, sizeof(*ids), hs_u64_cmp);
    for (struct dclient *c = d->all; c; c = c->next) {
        if (!c->node_id || c->closing)
            continue; /* not admitted yet: the verifier sees the change at ClientInfo */
        if (all || bsearch(&c->node_id, ids, n, sizeof(*ids), hs_u64_cmp))
            recheck_client(d, c);
    }
}

/* Clients that had more to read than one round's budget. */
static void read_unread(struct derp_server *d)
{
    struct dclient *c = d->unread, *next;

    d->unread = NULL;
    for (; c; c = next) {
        next = c->unread_next;
        c->unread = false;
        client_read(c);
    }
}

static void *loop_main(void *arg)
{
    struct derp_server *d = arg;
    struct epoll_event evs[LOOP_EVENTS];
    int64_t next_tick = hs_monotonic_us() + 1000000;

    derp__mesh_sync(d); /* what the replicas found before we ran */
    derp__mesh_tick(d); /* dial the peers now, not a second from now */

    while (__atomic_load_n(&d->running, __ATOMIC_ACQUIRE)) {
        int n = epoll_wait(d->epfd, evs, LOOP_EVENTS, d->unread ? 0 : 1000);
        read_unread(d);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == d) {
                adopt_pending(d);
                run_rechecks(d);
                derp__mesh_sync(d);
            } else if (evs[i].data.ptr == &d->stun_fd)
                stun_read(d);
            else if (derp__mesh_owns(d, evs[i].data.ptr))
                derp__mesh_event(evs[i].data.ptr, evs[i].events);
            else
                loop_client_event(d, evs[i].data.ptr, evs[i].events);
        }
        if (hs_monotonic_us() >= next_tick) {
            next_tick = hs_monotonic_us() + 1000000;
            tick(d);
            derp__mesh_tick(d);
        }
        announce_gone(d);
        flush_dirty(d);
        derp__mesh_flush(d);
        reap(d);
    }
    for (struct dclient *c = d->all; c; c = c->next)
        c->closing = true;
    reap(d);
    return NULL;
}

/* The client's address as PeerPresent carries it: IPv6 (v4-mapped) and port. */
static void remote_addr(struct dclient *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getpeername(net_conn_fd(c->nc), (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        c->addr16[10] = c->addr16[11] = 0xff;
        memcpy(c->addr16 + 12, &in->sin_addr, 4);
        c->port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        memcpy(c->addr16, &in6->sin6_addr, 16);
        c->port = ntohs(in6->sin6_port);
    }
}

/* The count of clients only goes down while the front door asks (it is the one adopter):
 * checking then counting in derp_server_adopt cannot pass the cap. */
int derp_server_admit(struct derp_server *d, const struct sockaddr_storage *sa,
                      struct net_addr **place, const char **why)
{
    if (__atomic_load_n(&d->nclients, __ATOMIC_RELAXED) >=
        (size_t)d->cfg->tuning_derp_max_clients) {
        *why = "the DERP server is busy: too many clients (tuning.derp_max_clients)\n";
        return -EMFILE;
    }
    if (net_addrs_take(d->addrs, sa, place) < 0) {
        *why = "too many DERP clients from your address (tuning.derp_max_clients_per_ip)\n";
        return -EMFILE;
    }
    return 0;
}

void derp_server_adopt(struct derp_server *d, struct net_conn *nc, struct net_addr *place)
{
    struct dclient *c = hs_xcalloc(1, sizeof(*c));
    struct pending *p = hs_xcalloc(1, sizeof(*p));
    uint8_t sk[sizeof(derp_magic) + DERP_KEY_LEN];
    uint64_t one = 1;

    __atomic_add_fetch(&d->nclients, 1, __ATOMIC_RELAXED);
    c->nc = nc;
    c->place = place;
    c->srv = d;
    remote_addr(c);
    c->rxcap = DERP_RX_INITIAL;
    c->rx = hs_xmalloc(c->rxcap);
    c->deadline = hs_monotonic_us() + DERP_HANDSHAKE_US;
    c->next_keepalive = hs_monotonic_us() + DERP_KEEPALIVE_US;
    hs_buf_init(&c->tx, DERP_TX_HARD_LIMIT);
    memcpy(sk, derp_magic, sizeof(derp_magic));
    memcpy(sk + sizeof(derp_magic), d->key.pub, DERP_KEY_LEN);
    c->dirty = true; /* not yet on the dirty list: adopt_pending puts it there */
    queue_control(c, DERP_FRAME_SERVER_KEY, sk, sizeof(sk));
    c->dirty = false;
    p->c = c;
    pthread_mutex_lock(&d->mu);
    p->next = d->inbox;
    d->inbox = p;
    pthread_mutex_unlock(&d->mu);
    if (write(d->evfd, &one, sizeof(one)) < 0)
        log_warn("derp: eventfd");
}

bool derp_server_meshes(const struct derp_server *d)
{
    return d->has_mesh_key;
}

void derp_server_mesh_peers(struct derp_server *d, const struct hs_strv *urls)
{
    uint64_t one = 1;

    if (!d->has_mesh_key)
        return;
    pthread_mutex_lock(&d->mu);
    hs_strv_free(&d->found_next);
    hs_strv_copy(&d->found_next, urls);
    d->found_new = true;
    pthread_mutex_unlock(&d->mu);
    if (write(d->evfd, &one, sizeof(one)) < 0)
        log_warn("derp: eventfd");
}

void derp_server_recheck(struct derp_server *d, uint64_t node_id)
{
    uint64_t one = 1;

    if (!d->cfg->derp_server_verify_clients || !d->verify)
        return; /* every key is admitted: nothing to withdraw */
    pthread_mutex_lock(&d->mu);
    if (d->nrechecks == DERP_MAX_RECHECKS)
        d->recheck_all = true;
    else if (!d->recheck_all)
        d->rechecks[d->nrechecks++] = node_id;
    pthread_mutex_unlock(&d->mu);
    if (write(d->evfd, &one, sizeof(one)) < 0)
        log_warn("derp: eventfd");
}

/* ---- lifecycle ---- */

static int load_key(const struct hs_config *cfg, struct key_pair *kp)
{
    const char *path = cfg->derp_server_private_key_path;
    int rc;

    if (!path || !*path)
        return -EINVAL;
    if (cfg->noise_private_key_path && strcmp(path, cfg->noise_private_key_path) == 0) {
        log_errorx("derp: derp.server.private_key_path must differ from noise.private_key_path");
        return -EINVAL;
    }
    if ((rc = keys_load_or_create(path, kp)) < 0)
        log_errorx("derp: derp.server.private_key_path %s: %s", path, hs_strerror(rc));
    return rc;
}

int derp_server_new(const struct hs_config *cfg, struct derp_server **out)
{
    struct derp_server *d = hs_xcalloc(1, sizeof(*d));
    int rc;

    d->cfg = cfg;
    d->epfd = d->stun_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    d->addrs = net_addrs_new(&cfg->trusted_proxies, (unsigned)cfg->tuning_derp_max_clients_per_ip);
    /* Made here, not at start: derp_server_recheck() may be called before the relay runs. */
    if ((d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        rc = -errno;
    else if ((rc = load_key(cfg, &d->key)) == 0)
        rc = derp__mesh_init(d);
    if (rc < 0) {
        derp_server_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void derp_server_set_verifier(struct derp_server *d, derp_verify_fn verify, void *arg)
{
    d->verify = verify;
    d->verify_arg = arg;
}

static int open_stun(const char *addr)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    char host[256], port[16];
    int fd = -1, rc;

    if (hs_split_host_port(addr, host, sizeof(host), port, sizeof(port)) < 0) {
        log_errorx("derp: stun_listen_addr \"%s\" is not host:port", addr);
        return -EINVAL;
    }
    if ((rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) != 0) {
        log_errorx("derp: stun_listen_addr %s: %s", addr, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        log_warn("derp: cannot bind STUN to %s", addr);
        close(fd);
        fd = -EADDRINUSE;
    }
    freeaddrinfo(res);
    return fd;
}

int derp_server_start(struct derp_server *d)
{
    struct epoll_event ev = { .events = EPOLLIN };
    int rc;

    if ((d->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return -errno;
    ev.data.ptr = d;
    epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->evfd, &ev);
    if (d->cfg->derp_server_stun_listen_addr && *d->cfg->derp_server_stun_listen_addr) {
        if ((d->stun_fd = open_stun(d->cfg->derp_server_stun_listen_addr)) < 0)
            return d->stun_fd;
        ev.data.ptr = &d->stun_fd;
        epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->stun_fd, &ev);
        log_info("derp: STUN on %s", d->cfg->derp_server_stun_listen_addr);
    }
    __atomic_store_n(&d->running, true, __ATOMIC_RELEASE);
    if ((rc = pthread_create(&d->thread, NULL, loop_main, d)) != 0) {
        d->running = false;
        return -rc;
    }
    pthread_setname_np(d->thread, "hs-derp"); /* shows in top -H, perf, gdb */
    log_info("derp: embedded relay (region %d \"%s\") running",
             d->cfg->derp_server_region_id, d->cfg->derp_server_region_code);
    return 0;
}

void derp_server_free(struct derp_server *d)
{
    uint64_t one = 1;

    if (!d)
        return;
    if (__atomic_load_n(&d->running, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&d->running, false, __ATOMIC_RELEASE);
        if (write(d->evfd, &one, sizeof(one)) < 0)
            log_warn("derp: eventfd");
        pthread_join(d->thread, NULL);
    }
    while (d->inbox) {
        struct pending *p = d->inbox;
        d->inbox = p->next;
        net_conn_close(p->c->nc);
        client_release(d, p->c);
        free(p);
    }
    derp__mesh_fini(d);
    if (d->stun_fd >= 0)
        close(d->stun_fd);
    if (d->evfd >= 0)
        close(d->evfd);
    if (d->epfd >= 0)
        close(d->epfd);
    sodium_memzero(&d->key, sizeof(d->key));
    net_addrs_free(d->addrs);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

void derp_server_key_hex(const struct derp_server *d, char out[65])
{
    hs_hex_encode(d->key.pub, DERP_KEY_LEN, out);
}

void derp_server_stats(struct derp_server *d, struct derp_stats *out)
{
    out->clients = __atomic_load_n(&d->stats.clients, __ATOMIC_RELAXED);
    out->packets_relayed = __atomic_load_n(&d->stats.packets_relayed, __ATOMIC_RELAXED);
    out->bytes_relayed = __atomic_load_n(&d->stats.bytes_relayed, __ATOMIC_RELAXED);
    out->packets_dropped = __atomic_load_n(&d->stats.packets_dropped, __ATOMIC_RELAXED);
    out->bad_frames = __atomic_load_n(&d->stats.bad_frames, __ATOMIC_RELAXED);
    out->mesh_peers = __atomic_load_n(&d->stats.mesh_peers, __ATOMIC_RELAXED);
    out->mesh_watchers = __atomic_load_n(&d->stats.mesh_watchers, __ATOMIC_RELAXED);
    out->mesh_packets_out = __atomic_load_n(&d->stats.mesh_packets_out, __ATOMIC_RELAXED);
    out->mesh_packets_in = __atomic_load_n(&d->stats.mesh_packets_in, __ATOMIC_RELAXED);
}

/* Host and port of server_url: clients reach the embedded relay where they reach us. */
static void url_host_port(const char *url, char *host, size_t hostsize, int *port)
{
    const char *p = strstr(url, "://"), *end, *colon;
    bool https = hs_has_prefix(url, "https://");

    p = p ? p + 3 : url;
    end = p + strcspn(p, "/?#");
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        snprintf(host, hostsize, "%.*s", rb ? (int)(rb - p - 1) : 0, p + 1);
        colon = rb && rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        snprintf(host, hostsize, "%.*s", (int)((colon ? colon : end) - p), p);
    }
    *port = colon ? atoi(colon + 1) : https ? 443 : 80;
}

static int stun_port(const char *addr)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    return colon ? atoi(colon + 1) : 3478;
}

json_t *derp_server_region(const struct derp_server *d, const struct hs_config *cfg)
{
    char host[256], name[32];
    int port;
    json_t *node;

    (void)d;
    url_host_port(cfg->server_url, host, sizeof(host), &port);
    snprintf(name, sizeof(name), "%d", cfg->derp_server_region_id);
    node = json_pack("{s:s, s:i, s:s, s:i, s:b, s:i}", "Name", name, "RegionID",
                     cfg->derp_server_region_id, "HostName", host, "STUNPort",
                     stun_port(cfg->derp_server_stun_listen_addr), "STUNOnly", 0, "DERPPort",
                     port);
    if (cfg->derp_server_ipv4 && *cfg->derp_server_ipv4)
        json_object_set_new(node, "IPv4", json_string(cfg->derp_server_ipv4));
    if (cfg->derp_server_ipv6 && *cfg->derp_server_ipv6)
        json_object_set_new(node, "IPv6", json_string(cfg->derp_server_ipv6));
    return json_pack("{s:i, s:s, s:s, s:[o]}", "RegionID", cfg->derp_server_region_id,
                     "RegionCode", cfg->derp_server_region_code, "RegionName",
                     cfg->derp_server_region_name, "Nodes", node);
}
