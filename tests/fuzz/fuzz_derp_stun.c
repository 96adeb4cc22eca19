/* STUN: a hostile UDP datagram to the STUN listener. The first input byte picks the sender's
 * address family (bit 0: IPv6) and the size of the reply buffer (the rest: 0..127 bytes, so
 * the too-small refusal runs too); the rest is the datagram. A reply must fit its buffer and
 * carry the request's transaction id. */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "derp/derp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_storage from = { 0 };
    uint8_t out[128];
    size_t outsize;
    ssize_t n;

    if (size < 1)
        return 0;
    outsize = (size_t)(data[0] >> 1);
    if (data[0] & 1) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&from;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(41641);
        memset(a->sin6_addr.s6_addr, 0xfd, 16);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&from;
        a->sin_family = AF_INET;
        a->sin_port = htons(41641);
        a->sin_addr.s_addr = htonl(0xc0000201);
    }
    n = stun_answer(data + 1, size - 1, &from, out, outsize);
    if (n > (ssize_t)outsize || (n > 0 && memcmp(out + 8, data + 1 + 8, 12) != 0))
        abort();
    return 0;
}
