/* Noise: hostile handshake initiations and record frames. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "noise/noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct key_pair server;
    static int ready;
    struct noise_handshake_result res;
    struct noise_transport t = { 0 };
    uint8_t buf[NOISE_MAX_FRAME * 2];
    size_t off = 0;

    if (!ready) {
        keys_generate(&server);
        ready = 1;
    }
    noise_accept(&server, data, size, &res);
    if (size > sizeof(buf))
        size = sizeof(buf);
    memcpy(buf, data, size);
    while (off < size) {
        ssize_t n = noise_frame_len(buf + off, size - off);
        uint8_t *pt;
        size_t ptlen;
        if (n < 0)
            break;
        noise_open(&t, buf + off, (size_t)n, &pt, &ptlen);
        off += (size_t)n;
    }
    return 0;
}
