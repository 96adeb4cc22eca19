/* net: hostile bytes at the front door. The first byte picks the parser: the HTTP/1 request
 * head (and the query decoder on its target), or a WebSocket stream decoded by a real
 * connection (ping/close replies queued, payload handed out in pieces). */
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_head(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1), out[256];
    struct http1_head h;

    memcpy(buf, data, size);
    buf[size] = '\0';
    if (http1_parse_head(buf, size, &h) > 0) {
        http1_query_param(h.target, "X-Tailscale-Handshake", out, sizeof(out));
        http1_has_token(h.connection, "upgrade");
        http1_path_is(h.target, "/derp");
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > HTTP1_MAX_HEAD + 1024)
        return 0;
    if (data[0] & 1)
        fuzz_ws(data + 1, size - 1);
    else
        fuzz_head(data + 1, size - 1);
    return 0;
}
