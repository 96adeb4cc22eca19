/* net: the byte streams clients hold with us, however they are wrapped. A net_conn is a
 * non-blocking socket, optionally with TLS on it (OpenSSL, terminated here so that upgraded
 * /ts2021 and /derp streams live directly in their event loops), optionally with WebSocket
 * framing on top (browser clients, and DERP clients told to use it). The event loops read
 * and write through it without knowing which.
 *
 * Also here: the HTTP/1.1 request-head parser and the WebSocket codec, both bounded and
 * fuzzed, which the front door (server/front.c) uses to route a new connection.
 *
 * Thread model: a net_conn belongs to one thread at a time (the front door, then the loop
 * that adopts it). A net_tls context is shared; net_tls_reload may replace its certificate
 * while connections are made from it. */
#ifndef HS_NET_H
#define HS_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "util/util.h"

/* ---- TLS ---- */

/* The listener's context. Each handshake takes the certificate it holds when the
 * ClientHello arrives, so the certificate can be replaced (or a challenge answered) from any
 * thread while it serves; connections already set up keep theirs. */
struct net_tls;

#define NET_TLS_MAX_PEM (256u * 1024) /* per file: a chain and a key */

/* Loads a PEM certificate chain and key (one file may hold both). NULL with a reason in
 * err on failure. */
struct net_tls *net_tls_new(const char *cert_path, const char *key_path, char *err,
                            size_t errsize);
/* A context without a certificate yet: handshakes fail (but for a TLS-ALPN-01 challenge)
 * until net_tls_reload() gives it one. NULL if OpenSSL cannot make one. */
struct net_tls *net_tls_new_empty(void);
void net_tls_free(struct net_tls *t);
/* Loads the pair again (new files, or new content at the same paths): handshakes from now on
 * use it; connections already made keep the one they started with. On failure nothing
 * changes: a negative errno with the reason in err. Any thread. */
int net_tls_reload(struct net_tls *t, const char *cert_path, const char *key_path, char *err,
                   size_t errsize);
/* The certificate in use, for people: "serial 1A2B..., valid until Jan  1 00:00:00 2027 GMT". */
void net_tls_describe(struct net_tls *t, char *out, size_t outsize);
/* RFC 8737: while set, a ClientHello offering the ALPN "acme-tls/1" gets this certificate
 * (PEM: certificate and key) and that protocol; NULL clears it. 0, or -EINVAL (logged). */
int net_tls_set_challenge(struct net_tls *t, const char *pem, size_t len);
/* Whether a ClientHello's ALPN extension body (RFC 7301 §3.1) offers proto: 1 yes, 0 no,
 * -EINVAL when malformed. */
int net_alpn_offers(const uint8_t *ext, size_t len, const char *proto);

/* ---- connections ---- */

struct net_conn;

/* Takes ownership of fd (already non-blocking). tls may be NULL for plain TCP. */
struct net_conn *net_conn_new(int fd, struct net_tls *tls);
/* Sends our end of the stream (TLS close_notify, then FIN) but keeps reading possible. */
void net_conn_shutdown(struct net_conn *c);
/* Closes the socket (after a best-effort TLS close_notify) and frees everything. */
void net_conn_close(struct net_conn *c);
/* Closes with a reset instead: for a peer that stopped reading, whose unsent bytes (up to
 * megabytes in the kernel) would otherwise keep the socket alive while it trickles. */
void net_conn_abort(struct net_conn *c);
int net_conn_fd(const struct net_conn *c);

/* Drives the TLS handshake: 0 done (or plain TCP), -EAGAIN to call again when the socket is
 * ready (net_conn_wants_write() says for which), other negative errno on failure. */
int net_conn_handshake(struct net_conn *c);

/* Reads payload bytes: >0 bytes, 0 end of stream, -EAGAIN nothing now, other -errno.
 * Read until -EAGAIN: TLS and WebSocket keep bytes the socket no longer shows to epoll. */
ssize_t net_conn_read(struct net_conn *c, void *buf, size_t cap);

/* Sends as much of tx as the socket takes, consuming it (framed if WebSocket). Returns the
 * payload bytes taken from tx, or a negative errno when the connection is broken. */
ssize_t net_conn_send(struct net_conn *c, struct hs_buf *tx);

/* Bytes queued inside the connection (framing, control replies, a 101 head): keep asking
 * for EPOLLOUT and calling net_conn_send() while true. Counts as unsent data (a stalled
 * reader), unlike net_conn_wants_write(). */
bool net_conn_backlog(const struct net_conn *c);

/* TLS can need the socket writable to make progress on a read (or the reverse): when true,
 * wait for EPOLLOUT too and retry the read. */
bool net_conn_wants_write(const struct net_conn *c);

/* Bytes to hand out again before anything read from the socket: what the front door read
 * past the request head. Call before net_conn_websocket() for it to see them as frames. */
void net_conn_unread(struct net_conn *c, const void *data, size_t len);

/* Raw bytes (an HTTP response head) sent before any payload, never framed. */
int net_conn_queue_raw(struct net_conn *c, const void *data, size_t len);

/* From now on payload travels in WebSocket binary messages (server side of RFC 6455). */
void net_conn_websocket(struct net_conn *c);

/* "host:port" of a socket address, numeric, for logs (buf: NET_ADDR_TEXT bytes); "?" if it
 * cannot be written. */
#define NET_ADDR_TEXT 112
const char *net_addr_text(const struct sockaddr_storage *sa, socklen_t len, char *buf,
                          size_t size);

/* A short HTTP/1.1 answer with "Connection: close" for a request refused before any protocol
 * took over, sent best effort (a fresh socket takes a small reply); the caller closes next. */
void net_conn_reply(struct net_conn *c, int status, const char *reason, const char *msg);

/* ---- connections per client address (addrs.c); any thread ---- */

struct net_addr;
struct net_addrs;
/* At most per_address connections per address (0: no cap); the addresses and networks in
 * trusted (trusted_proxies, checked when the config loaded) are not counted. */
struct net_addrs *net_addrs_new(const struct hs_strv *trusted, unsigned per_address);
void net_addrs_free(struct net_addrs *a); /* NULL is fine */
/* Counts a connection from sa: 0 with *slot to give back with net_addrs_put (NULL when the
 * address is not counted), or -EMFILE when the address holds its share already. */
int net_addrs_take(struct net_addrs *a, const struct sockaddr_storage *sa,
                   struct net_addr **slot);
void net_addrs_put(struct net_addrs *a, struct net_addr *slot); /* NULL slot is fine */
/* Whether sa is one of trusted: its clients share its address, so per-address limits do
 * not apply to it. */
bool net_addrs_trusted(const struct net_addrs *a, const struct sockaddr_storage *sa);

/* ---- HTTP/1.1 requests ---- */

#define HTTP1_MAX_HEAD 8192
#define HTTP1_MAX_CONTENT_LENGTH (UINT64_C(1) << 50)
#define HTTP1_MAX_CHUNK_DIGITS 12   /* chunk-size in hex: up to 2^48 - 1 bytes */
#define HTTP1_MAX_CHUNK_LINE 1024   /* chunk-size line with its extensions */

/* A parsed head. Strings point into the caller's buffer (NUL-terminated in place). Only the
 * headers routing and framing need are kept; a missing one is NULL. */
struct http1_head {
    const char *method;
    const char *target; /* path and query as sent */
    const char *upgrade, *connection;
    const char *ts_handshake;                  /* X-Tailscale-Handshake */
    const char *ws_key, *ws_version, *ws_protocol;
    const char *derp_fast_start;
    const char *content_length, *transfer_encoding;
    const char *repeated; /* on -EINVAL: the header sent twice (lower case, static), or NULL */
    int minor_version;    /* HTTP/1.<minor> */
};

/* Parses buf[0..len). Returns the head's length (through the blank line), -EAGAIN when more
 * bytes are needed, -EINVAL when malformed (a header it keeps sent twice included), -E2BIG
 * when no head ends within HTTP1_MAX_HEAD. buf must be writable and hold len+1 bytes; on
 * success the head part is modified. */
int http1_parse_head(char *buf, size_t len, struct http1_head *h);

/* Where a request head arriving in pieces ends, found so that each byte is looked at a
 * bounded number of times: a head trickled in a byte per read costs work linear in its size,
 * not a rescan of all of it per read. Zero it for each new head. */
struct http1_scan {
    size_t done;     /* bytes searched already without finding the end */
    size_t examined; /* bytes looked at over all calls: what the bound above is about */
};

/* buf[0..len) is the head so far: the bytes of the previous call on s, and maybe more.
 * Returns the head's length through its blank line once it is there, -EAGAIN while it is
 * not, -E2BIG when the first HTTP1_MAX_HEAD bytes hold no end. */
int http1_head_scan(struct http1_scan *s, const char *buf, size_t len);

/* Where a request body ends, tracked byte by byte as it passes (no copy, no decoding). */
struct http1_body {
    uint8_t st;
    uint8_t digits;  /* of the chunk-size being read */
    uint32_t line;   /* bytes of the current chunk line, or of the whole trailer section */
    uint64_t left;   /* bytes of the body (Content-Length) or of the chunk still to come */
};

/* What must hold of a parsed request before it is passed on (RFC 9112 §6.1, §6.3): not both
 * Content-Length and Transfer-Encoding, one decimal Content-Length, chunked as the last
 * coding and none in HTTP/1.0, no %00 in the target (a decoded NUL would cut a value). On
 * success b is set to frame the body. -EINVAL (answer 400) or -EOPNOTSUPP (a coding other
 * than chunked: 501) with *why, a static sentence. */
int http1_request_body(const struct http1_head *h, struct http1_body *b, const char **why);

/* Walks buf[0..len) as the next bytes of the body: returns how many belong to it (what
 * follows is the next request), -EINVAL on broken chunked framing, -E2BIG when chunk lines
 * or trailers pass their limits. */
ssize_t http1_body_scan(struct http1_body *b, const char *buf, size_t len);
/* Whether the whole body has passed (at once for a request without one). */
bool http1_body_done(const struct http1_body *b);

/* Whether a comma-separated header value lists token (case-insensitive). */
bool http1_has_token(const char *value, const char *token);

/* The value of a query parameter of target, percent-decoded into out. 0, -ENOENT, or -EINVAL
 * (bad escape, too long). */
int http1_query_param(const char *target, const char *name, char *out, size_t outsize);

/* Whether target's path (before any '?') is exactly path. */
bool http1_path_is(const char *target, const char *path);

/* ---- WebSocket codec ---- */

#define WS_OP_CONT 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA
#define WS_MAX_HEADER 14
#define WS_MAX_CONTROL 125

struct ws_header {
    bool fin, masked;
    uint8_t opcode;
    uint8_t mask[4];
    uint64_t len;    /* payload length */
    size_t hdr_len;  /* bytes of header */
};

/* Parses a frame header. Returns its length, -EAGAIN for more bytes, -EPROTO when invalid
 * (reserved bits, unknown opcode, oversized or fragmented control frame, 64-bit length with
 * the top bit set, non-minimal length encoding is accepted as RFC 6455 does not forbid it). */
ssize_t ws_parse_header(const uint8_t *p, size_t n, struct ws_header *h);
/* Writes an unmasked (server) frame header; returns its length (≤ WS_MAX_HEADER). */
size_t ws_encode_header(uint8_t out[WS_MAX_HEADER], uint8_t opcode, bool fin, uint64_t len);
/* XORs p with the mask, starting at payload offset off. */
void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (base64 of 16 bytes). -EINVAL if the key is
 * not that. out holds 29 bytes. */
int ws_accept_key(const char *key, char out[29]);

#endif
