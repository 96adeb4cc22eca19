#include "derp/derp.h"

ssize_t derp_frame_parse(const uint8_t *buf, size_t len, uint32_t max, struct derp_frame *f)
{
    uint32_t plen;

    if (len < DERP_HDR_LEN)
        return -EAGAIN;
    plen = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
    if (plen > max) /* refuse before waiting for the bytes */
        return -E2BIG;
    if (len - DERP_HDR_LEN < plen)
        return -EAGAIN;
    *f = (struct derp_frame){ .type = buf[0], .len = plen, .payload = buf + DERP_HDR_LEN };
    return (ssize_t)(DERP_HDR_LEN + plen);
}
