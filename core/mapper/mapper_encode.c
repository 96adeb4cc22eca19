/* mapper: wire framing of MapResponses (protocol §6.2): u32 little-endian body length, then
 * the compact JSON, or standard zstd of it (current clients always ask for zstd): one frame,
 * or several concatenated ones, which a zstd decoder reads one after another (full maps
 * reuse cached frames of peers, and any message those of policy texts many nodes share). */
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

int mapper__zstd_frame(struct hs_buf *out, const char *text, size_t len)
{
    ZSTD_CCtx *c = thread_cctx();
    size_t bound = ZSTD_compressBound(len), n;
    char *tmp = NULL, *dst;
    int rc;

    if (!c || ZSTD_isError(bound))
        return -EIO;
    /* Straight into out; or, when the worst case would pass its cap, through a copy: the
     * frame itself may still fit. */
    if ((rc = hs_buf_reserve(out, bound)) == -E2BIG && (tmp = malloc(bound)))
        rc = 0;
    if (rc < 0)
        return rc;
    dst = tmp ? tmp : out->data + out->len;
    n = ZSTD_compressCCtx(c, dst, bound, text, len, MAPPER_ZSTD_LEVEL);
    if (ZSTD_isError(n)) {
        log_warnx("mapper: zstd: %s", ZSTD_getErrorName(n));
        rc = -EIO;
    } else if (tmp) {
        rc = hs_buf_append(out, tmp, n);
    } else {
        out->len += n;
    }
    if (!tmp)
        out->data[out->len] = '\0';
    free(tmp);
    return rc;
}

int mapper__begin_message(struct hs_buf *out, size_t *start)
{
    *start = out->len;
    return hs_buf_append(out, "\0\0\0\0", 4);
}

int mapper__end_message(struct hs_buf *out, size_t start, int rc)
{
    size_t len = out->len - start - 4;
    uint8_t *hdr = (uint8_t *)out->data + start;

    if (rc == 0 && len > MAPPER_MAX_FRAME)
        rc = -E2BIG;
    if (rc < 0) {
        out->len = start; /* nothing half-written stays */
        out->data[start] = '\0';
        return rc;
    }
    hdr[0] = (uint8_t)len;
    hdr[1] = (uint8_t)(len >> 8);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 24);
    return 0;
}

static int put_frame(struct hs_buf *out, const void *body, size_t len)
{
    size_t start;
    int rc;

    if ((rc = mapper__begin_message(out, &start)) < 0)
        return rc;
    return mapper__end_message(out, start, hs_buf_append(out, body, len));
}

static int put_zstd(struct hs_buf *out, const char *json, size_t len)
{
    size_t start;
    int rc;

    if ((rc = mapper__begin_message(out, &start)) < 0)
        return rc;
    return mapper__end_message(out, start, mapper__zstd_frame(out, json, len));
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

/* ---- shared parts and sinks ---- */

#define ZPARTS_SLOTS 4096               /* open addressing; emptied when half full */
#define ZPARTS_MAX_BYTES (32u << 20)    /* or when the frames held pass this */

struct mapper__zpart {
    uint64_t hash; /* 0: free slot (part hashes never are 0) */
    size_t len;    /* of the text */
    char *z;
    size_t zlen;
};

void mapper__zparts_free(struct mapper *m)
{
    for (size_t i = 0; m->zparts && i < ZPARTS_SLOTS; i++)
        free(m->zparts[i].z);
    free(m->zparts);
    m->zparts = NULL;
    m->nzparts = m->zparts_bytes = 0;
}

/* Lock held. The slot of (hash, len): its entry, or the free slot where it would go. */
static struct mapper__zpart *zpart_slot(struct mapper *m, const struct policy_part *p)
{
    size_t i = (size_t)p->hash & (ZPARTS_SLOTS - 1);

    if (!m->zparts)
        m->zparts = hs_xcalloc(ZPARTS_SLOTS, sizeof(*m->zparts));
    while (m->zparts[i].hash && (m->zparts[i].hash != p->hash || m->zparts[i].len != p->len))
        i = (i + 1) & (ZPARTS_SLOTS - 1);
    return &m->zparts[i];
}

/* Lock held. Keeps a frame of p (taking z) unless the cache is full: then it starts over
 * (the parts in use come back at the next message; policies do not change by the second). */
static void zpart_keep(struct mapper *m, const struct policy_part *p, char *z, size_t zlen)
{
    struct mapper__zpart *e;

    if (m->nzparts >= ZPARTS_SLOTS / 2 || m->zparts_bytes + zlen > ZPARTS_MAX_BYTES)
        mapper__zparts_free(m);
    e = zpart_slot(m, p);
    if (e->hash) { /* another thread was first */
        free(z);
        return;
    }
    *e = (struct mapper__zpart){ .hash = p->hash, .len = p->len, .z = z, .zlen = zlen };
    m->nzparts++;
    m->zparts_bytes += zlen;
}

/* Appends p's zstd frame to out, from the cache or compressed (outside the lock) and kept. */
static int zpart_append(struct mapper *m, const struct policy_part *p, struct hs_buf *out)
{
    struct mapper__zpart *e;
    struct hs_buf f;
    int rc;

    pthread_mutex_lock(&m->parts_mu);
    e = zpart_slot(m, p);
    if (e->hash) {
        rc = hs_buf_append(out, e->z, e->zlen);
        pthread_mutex_unlock(&m->parts_mu);
        return rc;
    }
    pthread_mutex_unlock(&m->parts_mu);
    hs_buf_init(&f, MAPPER_MAX_FRAME);
    if ((rc = mapper__zstd_frame(&f, p->text, p->len)) == 0)
        rc = hs_buf_append(out, f.data, f.len);
    if (rc == 0) {
        size_t zlen = f.len;
        pthread_mutex_lock(&m->parts_mu);
        zpart_keep(m, p, hs_buf_steal(&f), zlen);
        pthread_mutex_unlock(&m->parts_mu);
    }
    hs_buf_free(&f);
    return rc;
}

int mapper__sink_flush(struct mapper__sink *k)
{
    int rc;

    if (!k->z || k->text->len == 0)
        return 0;
    rc = mapper__zstd_frame(k->z, k->text->data, k->text->len);
    hs_buf_reset(k->text);
    return rc;
}

int mapper__sink_put(struct mapper__sink *k, const char *own, size_t len,
                     const struct policy_parts *parts)
{
    size_t pos = 0;
    int rc = 0;

    for (size_t i = 0; parts && i < parts->n && rc == 0; i++) {
        const struct policy_part *p = &parts->v[i];
        rc = hs_buf_append(k->text, own + pos, p->at - pos);
        pos = p->at;
        if (rc == 0 && !k->z)
            rc = hs_buf_append(k->text, p->text, p->len);
        else if (rc == 0 && (rc = mapper__sink_flush(k)) == 0)
            rc = zpart_append(k->m, p, k->z);
    }
    return rc ? rc : hs_buf_append(k->text, own + pos, len - pos);
}
