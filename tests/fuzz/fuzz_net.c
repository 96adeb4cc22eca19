/* net: hostile bytes at the front door. The first byte picks the parser (mod 4): 0 the
 * HTTP/1 request head (and the query decoder on its target, the WebSocket key), 1 a WebSocket
 * stream decoded by a real connection (ping/close replies queued, payload handed out in
 * pieces), 2 a stream of requests framed as the front door frames a proxied connection: each
 * head checked, each body followed to its end (Content-Length or chunked) in pieces of a size
 * the next byte sets, 3 a head arriving in pieces of a size the next byte sets, its end
 * searched for as the front door does (only in the new bytes). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_head(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1), out[256], accept[29];
    struct http1_head h;

    memcpy(buf, data, size);
    buf[size] = '\0';
    if (http1_parse_head(buf, size, &h) > 0) {
        http1_query_param(h.target, "X-Tailscale-Handshake", out, sizeof(out));
        http1_has_token(h.connection, "upgrade");
        http1_path_is(h.target, "/derp");
        if (h.ws_key)
            ws_accept_key(h.ws_key, accept);
    }
    free(buf);
}

static void fuzz_ws(const uint8_t *data, size_t size)
{
    struct net_conn *c = net_conn_new(-1, NULL);
    uint8_t buf[777]; /* odd size: frames straddle reads */

    net_conn_unread(c, data, size);
    net_conn_websocket(c);
    for (int i = 0; i < 10000 && net_conn_read(c, buf, sizeof(buf)) > 0; i++)
        ;
    net_conn_close(c);
}

/* The next head at data[0..size): its length (then *b frames its body), or 0 to stop. */
static size_t stream_head(const uint8_t *data, size_t size, struct http1_body *b)
{
    char buf[HTTP1_MAX_HEAD + 1];
    size_t m = size < HTTP1_MAX_HEAD ? size : HTTP1_MAX_HEAD;
    struct http1_head h;
    const char *why = NULL;
    int hlen;

    memcpy(buf, data, m);
    buf[m] = '\0';
    hlen = http1_parse_head(buf, m, &h);
    if (hlen <= 0 || http1_request_body(&h, b, &why) < 0)
        return 0;
    return (size_t)hlen;
}

static void fuzz_stream(const uint8_t *data, size_t size)
{
    struct http1_body b = { 0 };
    size_t off = 0, step, n, hlen;
    ssize_t k;

    if (size < 1)
        return;
    step = (size_t)data[0] % 16 + 1;
    data++;
    size--;
    while (off < size) {
        if (http1_body_done(&b)) {
            if (!(hlen = stream_head(data + off, size - off, &b)))
                return;
            off += hlen;
            continue;
        }
        n = step < size - off ? step : size - off;
        if ((k = http1_body_scan(&b, (const char *)data + off, n)) < 0)
            return;
        if ((size_t)k > n || (k == 0 && !http1_body_done(&b)))
            abort(); /* the scan took what it was not given, or stalled */
        off += (size_t)k;
    }
}

/* The end found in pieces must be where a search of the whole finds it, and where the head
 * parser ends it (or the parser refuses the head); each call looks at its new bytes and at
 * most 3 old ones. */
static void fuzz_scan(const uint8_t *data, size_t size)
{
    struct http1_scan s = { 0 }, whole = { 0 };
    struct http1_head h;
    char *buf, *copy;
    size_t step, len = 0, calls = 0;
    int rc = -EAGAIN, hlen;

    if (size < 1)
        return;
    step = (size_t)data[0] % 16 + 1;
    buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    while (rc == -EAGAIN && len < size - 1) {
        len = len + step < size - 1 ? len + step : size - 1;
        rc = http1_head_scan(&s, buf, len);
        calls++;
    }
    if (rc != http1_head_scan(&whole, buf, len) || s.examined > len + 3 * calls)
        abort();
    if (rc > 0) {
        copy = malloc(len + 1);
        memcpy(copy, buf, len);
        copy[len] = '\0';
        hlen = http1_parse_head(copy, len, &h);
        if (hlen != rc && hlen != -EINVAL)
            abort();
        free(copy);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4 * HTTP1_MAX_HEAD)
        return 0;
    switch (data[0] % 4) {
    case 3:
        fuzz_scan(data + 1, size - 1);
        break;
    case 1:
        fuzz_ws(data + 1, size - 1);
        break;
    case 2:
        fuzz_stream(data + 1, size - 1);
        break;
    default:
        fuzz_head(data + 1, size - 1);
        break;
    }
    return 0;
}
