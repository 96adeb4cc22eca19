/* mapper: wire framing of MapResponses (protocol §6.2): u32 little-endian body length, then
 * the compact JSON, or one standard zstd frame of it (current clients always ask for zstd). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "mapper/mapper_internal.h"

#define MAPPER_ZSTD_LEVEL 1 /* headscale uses zstd's "fastest" */

/* One compression context per thread: map sessions encode concurrently, and a context is
 * costly to set up for every message. Freed when its thread exits. */
static pthread_key_t cctx_key;
static pthread_once_t cctx_once = PTHREAD_ONCE_INIT;

static void cctx_destroy(void *p)
{
    ZSTD_freeCCtx(p);
}

static void cctx_key_init(void)
{
    if (pthread_key_create(&cctx_key, cctx_destroy) != 0)
        log_fatalx("mapper: cannot create the zstd context key");
}

static ZSTD_CCtx *thread_cctx(void)
{
    ZSTD_CCtx *c;

    pthread_once(&cctx_once, cctx_key_init);
    if ((c = pthread_getspecific(cctx_key)) == NULL && (c = ZSTD_createCCtx()) != NULL)
        pthread_setspecific(cctx_key, c);
    return c;
}

static int put_frame(struct hs_buf *out, const void *body, size_t len)
{
    uint8_t hdr[4] = { (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
                       (uint8_t)(len >> 24) };
    int rc;

    if (len > MAPPER_MAX_FRAME)
        return -E2BIG;
    if ((rc = hs_buf_reserve(out, sizeof(hdr) + len)) < 0)
        return rc;
    hs_buf_append(out, hdr, sizeof(hdr)); /* cannot fail after the reserve */
    return hs_buf_append(out, body, len);
}

static int put_zstd(struct hs_buf *out, const char *json, size_t len)
{
    ZSTD_CCtx *c = thread_cctx();
    size_t bound = ZSTD_compressBound(len), n;
    void *z;
    int rc;

    if (!c || ZSTD_isError(bound))
        return -EIO;
    if (!(z = malloc(bound)))
        return -ENOMEM;
    n = ZSTD_compressCCtx(c, z, bound, json, len, MAPPER_ZSTD_LEVEL);
    rc = ZSTD_isError(n) ? -EIO : put_frame(out, z, n);
    if (ZSTD_isError(n))
        log_warnx("mapper: zstd: %s", ZSTD_getErrorName(n));
    free(z);
    return rc;
}

int mapper_encode_text(const char *json, size_t len, bool zstd, struct hs_buf *out)
{
    return zstd ? put_zstd(out, json, len) : put_frame(out, json, len);
}

int mapper_encode(const json_t *resp, bool zstd, struct hs_buf *out)
{
    char *json = json_dumps(resp, JSON_COMPACT);
    size_t len;
    int rc;

    if (!json)
        return -ENOMEM;
    len = strlen(json);
    rc = zstd ? put_zstd(out, json, len) : put_frame(out, json, len);
    free(json);
    return rc;
}
