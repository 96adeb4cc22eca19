/* RFC 6455 framing, server side: what clients send is masked, what we send is not. */
#include <openssl/sha.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "net/net.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

ssize_t ws_parse_header(const uint8_t *p, size_t n, struct ws_header *h)
{
    size_t need = 2;
    uint8_t len7;

    if (n < 2)
        return -EAGAIN;
    h->fin = p[0] & 0x80;
    h->opcode = p[0] & 0x0f;
    h->masked = p[1] & 0x80;
    len7 = p[1] & 0x7f;
    if (p[0] & 0x70)
        return -EPROTO; /* no extension was negotiated */
    if ((h->opcode > WS_OP_BINARY && h->opcode < WS_OP_CLOSE) || h->opcode > WS_OP_PONG)
        return -EPROTO;
    if (h->opcode >= WS_OP_CLOSE && (!h->fin || len7 > WS_MAX_CONTROL))
        return -EPROTO;
    need += len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    need += h->masked ? 4 : 0;
    if (n < need)
        return -EAGAIN;
    if (len7 == 126) {
        h->len = (uint64_t)p[2] << 8 | p[3];
    } else if (len7 == 127) {
        h->len = 0;
        for (int i = 0; i < 8; i++)
            h->len = h->len << 8 | p[2 + i];
        if (h->len >> 63)
            return -EPROTO;
    } else {
        h->len = len7;
    }
    if (h->masked)
        memcpy(h->mask, p + need - 4, 4);
    h->hdr_len = need;
    return (ssize_t)need;
}

size_t ws_encode_header(uint8_t out[WS_MAX_HEADER], uint8_t opcode, bool fin, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(off + i) & 3];
}

int ws_accept_key(const char *key, char out[29])
{
    uint8_t raw[16], digest[SHA_DIGEST_LENGTH];
    char buf[64];
    size_t rawlen;
    int n;

    if (!key || sodium_base642bin(raw, sizeof(raw), key, strlen(key), NULL, &rawlen, NULL,
                                  sodium_base64_VARIANT_ORIGINAL) != 0 || rawlen != 16)
        return -EINVAL;
    n = snprintf(buf, sizeof(buf), "%s%s", key, ws_guid);
    SHA1((const unsigned char *)buf, (size_t)n, digest);
    sodium_bin2base64(out, 29, digest, sizeof(digest), sodium_base64_VARIANT_ORIGINAL);
    return 0;
}
