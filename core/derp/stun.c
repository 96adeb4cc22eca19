/* STUN (RFC 5389) binding responses, as Tailscale's netcheck expects: one XOR-MAPPED-ADDRESS
 * attribute, no SOFTWARE or FINGERPRINT. Any well-formed binding request is answered;
 * answering non-Tailscale STUN is harmless. */
#include <netinet/in.h>
#include <string.h>

#include "derp/derp.h"

#define STUN_HDR 20
#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_XOR_MAPPED_ADDRESS 0x0020
static const uint8_t magic_cookie[4] = { 0x21, 0x12, 0xa4, 0x42 };

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

ssize_t stun_answer(const uint8_t *req, size_t len, const struct sockaddr_storage *from,
                    uint8_t *out, size_t outsize)
{
    const uint8_t *addr;
    unsigned alen, port;
    uint8_t *a;
    int family;

    if (len < STUN_HDR || ((req[0] << 8) | req[1]) != STUN_BINDING_REQUEST ||
        memcmp(req + 4, magic_cookie, 4) != 0 || (((unsigned)req[2] << 8) | req[3]) + STUN_HDR > len ||
        (req[3] & 3) != 0)
        return -EINVAL;
    if (from->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)from;
        addr = (const uint8_t *)&sin->sin_addr;
        port = ntohs(sin->sin_port);
        alen = 4;
        family = 1;
    } else if (from->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)from;
        addr = sin6->sin6_addr.s6_addr;
        port = ntohs(sin6->sin6_port);
        alen = 16;
        family = 2;
    } else {
        return -EINVAL;
    }
    if (outsize < STUN_HDR + 4 + 4 + alen)
        return -E2BIG;
    put16(out, STUN_BINDING_SUCCESS);
    put16(out + 2, 4 + 4 + alen);
    memcpy(out + 4, req + 4, 16); /* cookie + transaction id */
    a = out + STUN_HDR;
    put16(a, STUN_XOR_MAPPED_ADDRESS);
    put16(a + 2, 4 + alen);
    a[4] = 0;
    a[5] = (uint8_t)family;
    put16(a + 6, port ^ 0x2112);
    /* The address is XORed with the cookie, then (IPv6) the transaction id. */
    for (unsigned i = 0; i < alen; i++)
        a[8 + i] = addr[i] ^ req[4 + i];
    return STUN_HDR + 8 + alen;
}
