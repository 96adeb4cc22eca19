/* net: request-head parsing, WebSocket framing, and connections over real socket pairs. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net.h"

/* ---- HTTP/1 heads ---- */

static int parse(const char *text, struct http1_head *h, char *buf)
{
    size_t n = strlen(text);
    memcpy(buf, text, n + 1);
    return http1_parse_head(buf, n, h);
}

Test(http1, upgrade_request)
{
    static char buf[HTTP1_MAX_HEAD + 1];
    struct http1_head h;
    const char *req = "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade:  tailscale-control-protocol \r\n"
                      "Connection: upgrade\r\nX-Tailscale-Handshake: AAAA\r\n\r\nextra";
    int n = parse(req, &h, buf);

    cr_assert_eq(n, (int)(strstr(req, "extra") - req));
    cr_assert_str_eq(h.method, "POST");
    cr_assert_str_eq(h.target, "/ts2021");
    cr_assert_str_eq(h.upgrade, "tailscale-control-protocol");
    cr_assert_str_eq(h.ts_handshake, "AAAA");
    cr_assert_eq(h.minor_version, 1);
    cr_assert_null(h.ws_key);
}

Test(http1, incomplete_needs_more)
{
    static char buf[HTTP1_MAX_HEAD + 1];
    struct http1_head h;

    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: x\r\n", &h, buf), -EAGAIN);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: x\r\n\r", &h, buf), -EAGAIN);
}

Test(http1, malformed_is_refused)
{
    static char buf[HTTP1_MAX_HEAD + 1];
    static const char *bad[] = {
        "GET / HTTP/2.0\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET noslash HTTP/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
        "GET / HTTP/1.1\nA: b\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "\r\n\r\n",
    };
    struct http1_head h;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(parse(bad[i], &h, buf), -EINVAL, "accepted: %s", bad[i]);
}

Test(http1, too_large)
{
    static char buf[2 * HTTP1_MAX_HEAD + 1];
    struct http1_head h;
    size_t n;

    strcpy(buf, "GET / HTTP/1.1\r\nX: ");
    n = strlen(buf);
    memset(buf + n, 'a', sizeof(buf) - n - 1);
    buf[sizeof(buf) - 1] = '\0';
    cr_assert_eq(http1_parse_head(buf, sizeof(buf) - 1, &h), -E2BIG);
}

/* A head of nearly HTTP1_MAX_HEAD bytes trickled in one byte per read: the end is found
 * where it is, with each byte looked at a few times at most (not once per read, which would
 * be some 33 million looks here). */
Test(http1, head_scan_is_linear_in_a_trickled_head)
{
    static char buf[HTTP1_MAX_HEAD];
    const char *start = "GET / HTTP/1.1\r\nX: ", *end = "\r\n\r\n";
    struct http1_scan s = { 0 };
    size_t total, n = strlen(start);
    int rc = -EAGAIN;

    memcpy(buf, start, n);
    memset(buf + n, 'a', sizeof(buf) - n - strlen(end));
    memcpy(buf + sizeof(buf) - strlen(end), end, strlen(end));
    for (total = 1; total <= sizeof(buf); total++) {
        rc = http1_head_scan(&s, buf, total);
        if (rc != -EAGAIN)
            break;
    }
    cr_assert_eq(rc, (int)sizeof(buf));
    cr_assert_eq(total, sizeof(buf), "the end was found early, at %zu", total);
    cr_assert_leq(s.examined, 4 * sizeof(buf), "%zu bytes looked at", s.examined);
}

Test(http1, head_scan_finds_an_end_split_across_reads_and_refuses_a_long_head)
{
    static char big[HTTP1_MAX_HEAD + 10];
    const char *head = "GET / HTTP/1.1\r\nHost: a\r\n\r\nnext";
    size_t len = strlen(head) - 4;
    struct http1_scan s = { 0 };

    /* Each cut through the blank line: the end is found once the last byte arrives. */
    for (size_t cut = len - 4; cut < len; cut++) {
        s = (struct http1_scan){ 0 };
        cr_assert_eq(http1_head_scan(&s, head, cut), -EAGAIN);
        cr_assert_eq(http1_head_scan(&s, head, strlen(head)), (int)len, "cut at %zu", cut);
    }
    s = (struct http1_scan){ 0 };
    memset(big, 'a', sizeof(big));
    cr_assert_eq(http1_head_scan(&s, big, HTTP1_MAX_HEAD - 1), -EAGAIN);
    cr_assert_eq(http1_head_scan(&s, big, sizeof(big)), -E2BIG);
}

Test(http1, tokens_paths_and_query)
{
    char out[64];

    cr_assert(http1_has_token("keep-alive, Upgrade", "upgrade"));
    cr_assert(http1_has_token(" derp ,x", "derp"));
    cr_assert_not(http1_has_token("derpy", "derp"));
    cr_assert_not(http1_has_token(NULL, "derp"));
    cr_assert(http1_path_is("/derp", "/derp"));
    cr_assert(http1_path_is("/derp?x=1", "/derp"));
    cr_assert_not(http1_path_is("/derp/probe", "/derp"));
    cr_assert_eq(http1_query_param("/ts2021?a=1&X-Tailscale-Handshake=AB%2Bc%2F%3D%3D", "X-Tailscale-Handshake",
                                   out, sizeof(out)), 0);
    cr_assert_str_eq(out, "AB+c/==");
    cr_assert_eq(http1_query_param("/ts2021?a=1", "b", out, sizeof(out)), -ENOENT);
    cr_assert_eq(http1_query_param("/x?a=%4", "a", out, sizeof(out)), -EINVAL);
    cr_assert_eq(http1_query_param("/x?a=%00", "a", out, sizeof(out)), -EINVAL);
    cr_assert_eq(http1_query_param("/x?a=0123456789", "a", out, 5), -EINVAL);
}

/* ---- request framing ---- */

/* Parses the head of req and checks it: the http1_request_body result, why on failure. */
static int frame(const char *req, struct http1_body *b, const char **why)
{
    static char buf[HTTP1_MAX_HEAD + 1];
    struct http1_head h;
    int n = parse(req, &h, buf);

    cr_assert_gt(n, 0, "head does not parse: %s", req);
    *why = NULL;
    return http1_request_body(&h, b, why);
}

Test(http1, framing_that_is_refused)
{
    static const struct {
        const char *req;
        int rc;
    } bad[] = {
        { "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", -EINVAL },
        { "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", -EINVAL },
        { "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -EOPNOTSUPP },
        { "GET /api/v1/user/alice%00xyz HTTP/1.1\r\n\r\n", -EINVAL },
        { "GET /api/v1/user?name=a%00 HTTP/1.1\r\n\r\n", -EINVAL },
    };
    struct http1_body b;
    const char *why;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(frame(bad[i].req, &b, &why), bad[i].rc, "accepted: %s", bad[i].req);
        cr_expect_not_null(why, "no reason for: %s", bad[i].req);
    }
}

Test(http1, repeated_length_is_named)
{
    static char buf[HTTP1_MAX_HEAD + 1];
    struct http1_head h;

    cr_assert_eq(parse("POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\n",
                       &h, buf), -EINVAL);
    cr_assert_str_eq(h.repeated, "content-length");
    cr_assert_eq(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n", &h, buf), -EINVAL);
    cr_assert_str_eq(h.repeated, "transfer-encoding");
}

/* Feeds body in pieces of step bytes (0: all at once); the bytes taken before the end. */
static ssize_t scan_in_steps(struct http1_body *b, const char *body, size_t len, size_t step)
{
    size_t off = 0;

    while (off < len && !http1_body_done(b)) {
        size_t n = step && step < len - off ? step : len - off;
        ssize_t k = http1_body_scan(b, body + off, n);
        if (k < 0)
            return k;
        cr_assert_leq((size_t)k, n);
        off += (size_t)k;
        if ((size_t)k < n)
            break; /* the rest is the next request */
    }
    return (ssize_t)off;
}

Test(http1, bodies_end_where_their_framing_says)
{
    static const char chunked[] = "5;ext=\"a b\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                                  "0\r\nX-Trailer: 1\r\n\r\nGET /next";
    static const char length[] = "0123456789GET /next";
    size_t steps[] = { 0, 1, 2, 3, 7 };
    struct http1_body b;
    const char *why;

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        cr_assert_eq(frame("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &b, &why), 0);
        cr_assert_eq(scan_in_steps(&b, chunked, strlen(chunked), steps[i]),
                     (ssize_t)(strstr(chunked, "GET") - chunked), "step %zu", steps[i]);
        cr_assert(http1_body_done(&b));
        cr_assert_eq(frame("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n", &b, &why), 0);
        cr_assert_eq(scan_in_steps(&b, length, strlen(length), steps[i]), 10);
        cr_assert(http1_body_done(&b));
    }
    cr_assert_eq(frame("GET / HTTP/1.1\r\n\r\n", &b, &why), 0);
    cr_assert(http1_body_done(&b)); /* neither header: no body */
    cr_assert_eq(http1_body_scan(&b, "GET", 3), 0);
}

Test(http1, broken_chunks_are_refused)
{
    static const char *bad[] = {
        "zz\r\n",                  /* not hex */
        "\r\n",                    /* no size */
        "5\nhello\r\n",            /* bare LF */
        "5\r\nhelloX\r\n",          /* data longer than its size */
        "5;a\nb\r\n",              /* LF inside an extension */
        "1000000000000\r\n",       /* 13 hex digits */
        "0\r\nX: a\nb\r\n\r\n",     /* bare LF in a trailer */
        "0\r\n\rX",                /* CR without LF at the end */
    };
    struct http1_body b;
    const char *why;
    char line[HTTP1_MAX_CHUNK_LINE + 8];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(frame("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &b, &why), 0);
        cr_expect_lt(scan_in_steps(&b, bad[i], strlen(bad[i]), 1), 0, "accepted: %s", bad[i]);
    }
    /* Framing that is all extension, no data, stops at its limit. */
    memset(line, 'a', sizeof(line));
    memcpy(line, "1;", 2);
    cr_assert_eq(frame("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &b, &why), 0);
    cr_assert_eq(http1_body_scan(&b, line, sizeof(line)), -E2BIG);
}

/* ---- WebSocket codec ---- */

Test(ws, accept_key_rfc6455_example)
{
    char out[29];

    cr_assert_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    cr_assert_eq(ws_accept_key("short", out), -EINVAL);
    cr_assert_eq(ws_accept_key(NULL, out), -EINVAL);
}

Test(ws, header_round_trip)
{
    uint64_t lens[] = { 0, 125, 126, 65535, 65536, (uint64_t)1 << 40 };
    uint8_t buf[WS_MAX_HEADER];
    struct ws_header h;

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t n = ws_encode_header(buf, WS_OP_BINARY, true, lens[i]);
        cr_assert_eq(ws_parse_header(buf, n, &h), (ssize_t)n);
        cr_assert_eq(h.len, lens[i]);
        cr_assert(h.fin);
        cr_assert_not(h.masked);
        cr_assert_eq(ws_parse_header(buf, n - 1, &h), -EAGAIN);
    }
}

Test(ws, invalid_headers)
{
    struct ws_header h;
    uint8_t rsv[] = { 0xc2, 0x80, 0, 0, 0, 0 };            /* RSV1 without an extension */
    uint8_t op[] = { 0x83, 0x80, 0, 0, 0, 0 };             /* reserved opcode */
    uint8_t bigctl[] = { 0x89, 0xfe, 0, 200, 0, 0, 0, 0 }; /* ping over 125 bytes */
    uint8_t fragctl[] = { 0x09, 0x80, 0, 0, 0, 0 };        /* fragmented ping */
    uint8_t top[] = { 0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }; /* 2^63 */

    cr_assert_eq(ws_parse_header(rsv, sizeof(rsv), &h), -EPROTO);
    cr_assert_eq(ws_parse_header(op, sizeof(op), &h), -EPROTO);
    cr_assert_eq(ws_parse_header(bigctl, sizeof(bigctl), &h), -EPROTO);
    cr_assert_eq(ws_parse_header(fragctl, sizeof(fragctl), &h), -EPROTO);
    cr_assert_eq(ws_parse_header(top, sizeof(top), &h), -EPROTO);
}

/* ---- connections over a socket pair ---- */

static struct net_conn *pair_conn(int *peer)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    *peer = sv[1];
    return net_conn_new(sv[0], NULL);
}

/* A masked client frame as a browser would send it. */
static size_t client_frame(uint8_t *out, uint8_t op, bool fin, const void *p, size_t n)
{
    static const uint8_t mask[4] = { 0x11, 0x22, 0x33, 0x44 };
    size_t hl = ws_encode_header(out, op, fin, n);

    out[1] |= 0x80;
    memcpy(out + hl, mask, 4);
    memcpy(out + hl + 4, p, n);
    ws_unmask(out + hl + 4, n, mask, 0);
    return hl + 4 + n;
}

Test(conn, plain_unread_then_socket)
{
    int peer;
    struct net_conn *c = pair_conn(&peer);
    char buf[16];

    net_conn_unread(c, "ab", 2);
    cr_assert_eq(write(peer, "cd", 2), 2);
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), 2);
    cr_assert_eq(memcmp(buf, "ab", 2), 0);
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), 2);
    cr_assert_eq(memcmp(buf, "cd", 2), 0);
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), -EAGAIN);
    close(peer);
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), 0);
    net_conn_close(c);
}

Test(conn, websocket_stream_across_frames_and_reads)
{
    int peer;
    struct net_conn *c = pair_conn(&peer);
    uint8_t wire[256], got[64];
    size_t n = 0, have = 0;
    ssize_t r;

    n += client_frame(wire + n, WS_OP_BINARY, false, "hello ", 6);
    n += client_frame(wire + n, WS_OP_PING, true, "p", 1); /* between fragments */
    n += client_frame(wire + n, WS_OP_CONT, true, "world", 5);
    net_conn_websocket(c);
    /* One byte at a time: headers split anywhere must still decode. */
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(write(peer, wire + i, 1), 1);
        while ((r = net_conn_read(c, got + have, sizeof(got) - have)) > 0)
            have += (size_t)r;
        cr_assert_eq(r, -EAGAIN);
    }
    cr_assert_eq(have, 11);
    cr_assert_eq(memcmp(got, "hello world", 11), 0);
    /* The ping is answered with a pong carrying its payload. */
    cr_assert(net_conn_backlog(c));
    struct hs_buf none;
    hs_buf_init(&none, 0);
    cr_assert_eq(net_conn_send(c, &none), 0);
    cr_assert_not(net_conn_backlog(c));
    cr_assert_eq(read(peer, wire, sizeof(wire)), 3);
    cr_assert_eq(wire[0], 0x80 | WS_OP_PONG);
    cr_assert_eq(wire[1], 1);
    cr_assert_eq(wire[2], 'p');
    close(peer);
    net_conn_close(c);
}

Test(conn, websocket_send_is_framed_in_32k_messages)
{
    int peer;
    struct net_conn *c = pair_conn(&peer);
    struct hs_buf tx;
    static uint8_t payload[40000], wire[50000];
    size_t got = 0;
    struct ws_header h;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    net_conn_queue_raw(c, "HTTP/1.1 101\r\n\r\n", 16);
    net_conn_websocket(c);
    hs_buf_init(&tx, 1 << 20);
    hs_buf_append(&tx, payload, sizeof(payload));
    cr_assert_eq(net_conn_send(c, &tx), (ssize_t)sizeof(payload));
    cr_assert_eq(tx.len, 0);
    while (got < 16 + 2 * 4 + sizeof(payload)) {
        ssize_t r = read(peer, wire + got, sizeof(wire) - got);
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
    cr_assert_eq(memcmp(wire, "HTTP/1.1 101\r\n\r\n", 16), 0);
    cr_assert_eq(ws_parse_header(wire + 16, got - 16, &h), 4);
    cr_assert_eq(h.len, 32768);
    cr_assert_eq(h.opcode, WS_OP_BINARY);
    cr_assert_eq(memcmp(wire + 20, payload, 32768), 0);
    cr_assert_eq(ws_parse_header(wire + 20 + 32768, got - 20 - 32768, &h), 4);
    cr_assert_eq(h.len, sizeof(payload) - 32768);
    cr_assert_eq(memcmp(wire + 24 + 32768, payload + 32768, h.len), 0);
    hs_buf_free(&tx);
    close(peer);
    net_conn_close(c);
}

Test(conn, websocket_refuses_unmasked_and_text)
{
    uint8_t unmasked[] = { 0x82, 0x01, 'x' };
    uint8_t text[16];
    char buf[16];
    int peer;
    struct net_conn *c = pair_conn(&peer);

    net_conn_websocket(c);
    cr_assert_eq(write(peer, unmasked, sizeof(unmasked)), (ssize_t)sizeof(unmasked));
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), -EPROTO);
    close(peer);
    net_conn_close(c);

    c = pair_conn(&peer);
    net_conn_websocket(c);
    size_t n = client_frame(text, WS_OP_TEXT, true, "hi", 2);
    cr_assert_eq(write(peer, text, n), (ssize_t)n);
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), -EPROTO);
    close(peer);
    net_conn_close(c);
}

Test(conn, websocket_close_is_echoed_then_eof)
{
    uint8_t wire[32];
    char buf[16];
    int peer;
    struct net_conn *c = pair_conn(&peer);
    size_t n = client_frame(wire, WS_OP_CLOSE, true, "\x03\xe8", 2);

    net_conn_websocket(c);
    cr_assert_eq(write(peer, wire, n), (ssize_t)n);
    cr_assert_eq(net_conn_read(c, buf, sizeof(buf)), 0);
    net_conn_close(c); /* flushes the echo */
    cr_assert_eq(read(peer, wire, sizeof(wire)), 4);
    cr_assert_eq(wire[0], 0x80 | WS_OP_CLOSE);
    cr_assert_eq(wire[2], 0x03);
    cr_assert_eq(wire[3], 0xe8);
    close(peer);
}

Test(tls, bad_paths_are_reported)
{
    char err[256] = "";

    cr_assert_null(net_tls_new("/nonexistent/cert.pem", "/nonexistent/key.pem", err, sizeof(err)));
    cr_assert(strstr(err, "certificate /nonexistent/cert.pem: No such file") != NULL, "%s", err);
}

/* ---- connections per client address ---- */

static struct sockaddr_storage addr_of(const char *ip)
{
    struct sockaddr_storage ss = { 0 };

    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, ip, &a6->sin6_addr), 1, "%s", ip);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, ip, &a4->sin_addr), 1, "%s", ip);
    }
    return ss;
}

static int take(struct net_addrs *a, const char *ip, struct net_addr **slot)
{
    struct sockaddr_storage ss = addr_of(ip);

    return net_addrs_take(a, &ss, slot);
}

/* IPv6 is counted per /64 (a host rotating through its block gains nothing), IPv4 in an
 * IPv6 socket as the IPv4 address, trusted proxies not at all; a place given back is free
 * again. */
Test(net_addrs, ipv6_per_64_mapped_ipv4_and_trusted)
{
    struct hs_strv trusted = { 0 };
    struct net_addr *s1, *s2, *s3;
    struct net_addrs *a;
    struct sockaddr_storage proxy;

    hs_strv_push(&trusted, "2001:db8:ff::/48");
    hs_strv_push(&trusted, "198.18.0.9");
    a = net_addrs_new(&trusted, 2);
    cr_assert_eq(take(a, "2001:db8:1:2::1", &s1), 0);
    cr_assert_eq(take(a, "2001:db8:1:2:ffff::7", &s2), 0);
    cr_assert_eq(take(a, "2001:db8:1:2:abcd::", &s3), -EMFILE, "same /64");
    cr_assert_eq(take(a, "2001:db8:1:3::1", &s3), 0, "the next /64 is another host");
    net_addrs_put(a, s3);
    cr_assert_eq(take(a, "198.18.0.1", &s3), 0);
    cr_assert_eq(take(a, "::ffff:198.18.0.1", &s3), 0, "mapped: the same IPv4 address");
    cr_assert_eq(take(a, "198.18.0.1", &s3), -EMFILE);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(take(a, "2001:db8:ff:1::1", &s3), 0);
        cr_assert_null(s3, "a trusted proxy is not counted");
        cr_assert_eq(take(a, "198.18.0.9", &s3), 0);
        cr_assert_null(s3);
    }
    proxy = addr_of("198.18.0.9");
    cr_assert(net_addrs_trusted(a, &proxy));
    net_addrs_put(a, s1);
    cr_assert_eq(take(a, "2001:db8:1:2::99", &s1), 0, "a place given back is free again");
    net_addrs_put(a, s1);
    net_addrs_put(a, s2);
    net_addrs_free(a);
    hs_strv_free(&trusted);
}
