/* HTTP/2 (nghttp2, server side) over the decrypted Noise byte stream. The client speaks h2c
 * with prior knowledge; requests are collected per stream and dispatched on END_STREAM;
 * responses are fed from a per-stream buffer that workers fill through the loop's inbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "control/control_internal.h"

static struct stream *stream_find(struct conn *cn, int32_t id)
{
    for (struct stream *st = cn->streams; st; st = st->next)
        if (st->id == id)
            return st;
    return NULL;
}

/* The stream's body is dropped and no longer counted against the budgets. */
static void body_drop(struct conn *cn, struct stream *st)
{
    cn->body_bytes -= st->body.len;
    control__body_put(cn->ctl, st->body.len);
    hs_buf_free(&st->body);
    hs_buf_init(&st->body, 0);
}

static void stream_free(struct conn *cn, struct stream *st)
{
    control__backlog_add(cn->ctl, -(int64_t)st->out.len);
    body_drop(cn, st);
    hs_buf_free(&st->out);
    free(st);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct conn *cn = user;
    struct stream *st;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (cn->nstreams >= CONTROL_MAX_STREAMS) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    st = hs_xcalloc(1, sizeof(*st));
    st->id = f->hd.stream_id;
    hs_buf_init(&st->body, CONTROL_MAX_REQUEST_BODY);
    hs_buf_init(&st->out, CONTROL_MAX_STREAM_BACKLOG);
    st->next = cn->streams;
    cn->streams = st;
    cn->nstreams++;
    STAT_ADD(cn->ctl->stats.streams_open, 1);
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

    (void)flags;
    (void)user;
    if (!st)
        return 0;
    st->header_bytes += namelen + valuelen;
    if (st->header_bytes > CONTROL_MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets just this stream */
    if (namelen == 7 && memcmp(name, ":method", 7) == 0)
        snprintf(st->method, sizeof(st->method), "%.*s", (int)valuelen, value);
    else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
        snprintf(st->path, sizeof(st->path), "%.*s", (int)valuelen, value);
    return 0;
}

/* A body that would pass the connection's or everyone's budget: the stream is reset as
 * refused (not processed: the client may send it again later) and its body dropped. */
static void refuse_body(nghttp2_session *s, struct conn *cn, struct stream *st, bool conn)
{
    if (control__log_due(&cn->ctl->body_log_at))
        log_info("control: conn %llu: stream %d refused: request bodies held would pass %s",
                 (unsigned long long)cn->id, (int)st->id,
                 conn ? "the connection's share (CONTROL_MAX_CONN_BODY)"
                      : "tuning.control_max_body_buffer_mib");
    st->refused = true;
    body_drop(cn, st);
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *user)
{
    struct conn *cn = user;
    struct stream *st = nghttp2_session_get_stream_user_data(s, sid);

    (void)flags;
    if (!st || st->too_big || st->refused)
        return 0;
    if (len > st->body.max - st->body.len) {
        st->too_big = true; /* answered 413 at its end; what comes until then is dropped */
        body_drop(cn, st);
        return 0;
    }
    if (len > CONTROL_MAX_CONN_BODY - cn->body_bytes) {
        refuse_body(s, cn, st, true);
        return 0;
    }
    if (!control__body_take(cn->ctl, len)) {
        refuse_body(s, cn, st, false);
        return 0;
    }
    if (hs_buf_append(&st->body, data, len) < 0) {
        control__body_put(cn->ctl, len); /* out of memory: refused like over a budget */
        refuse_body(s, cn, st, false);
        return 0;
    }
    cn->body_bytes += len;
    return 0;
}

static void submit_simple(struct conn *cn, struct stream *st, int status, const char *text);

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct conn *cn = user;
    struct stream *st;

    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    if (!(st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id)) || st->dispatched ||
        st->refused)
        return 0;
    st->dispatched = true;
    if (st->too_big)
        submit_simple(cn, st, 413, "request body too large\n");
    else
        loop_dispatch(cn->ctl, cn, st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user)
{
    struct conn *cn = user;
    struct stream **pp, *st;

    (void)s;
    (void)error_code;
    for (pp = &cn->streams; (st = *pp); pp = &st->next) {
        if (st->id != sid)
            continue;
        *pp = st->next;
        cn->nstreams--;
        STAT_ADD(cn->ctl->stats.streams_open, -1);
        if (st->dispatched && cn->ctl->h.stream_closed)
            cn->ctl->h.stream_closed(cn->ctl->h.ctx, cn->id, sid);
        stream_free(cn, st);
        break;
    }
    return 0;
}

/* nghttp2 keeps a 16 KiB frame buffer per session from the start, and an idle map stream
 * writes small frames into its first page only. Blocks that large get their own mapping,
 * listed on the connection (pages never written are never resident); the rest comes from
 * malloc with a header giving its size. The frame buffer's content is dead whenever nghttp2
 * has nothing to send, so h2_trim() returns its pages to the kernel: an idle stream then
 * keeps none of it (thousands of streams, 4 KiB each). */
#define H2_MMAP_MIN 16384

struct h2_map {
    uint8_t *p;
    size_t len;    /* of the mapping: page multiple */
    bool framebuf; /* allocated while the session was made: nghttp2's frame buffer */
    struct h2_map *next;
};

struct h2_block {
    size_t size;
    size_t pad; /* keeps malloc's 16-byte alignment */
};

static size_t page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

static struct h2_map *map_find(struct conn *cn, const void *ptr, struct h2_map ***link)
{
    struct h2_map **pp, *m;

    if ((uintptr_t)ptr & (page_size() - 1))
        return NULL; /* malloc's blocks sit after a header: mappings are page-aligned */
    for (pp = &cn->h2maps; (m = *pp); pp = &m->next)
        if (m->p == ptr) {
            if (link)
                *link = pp;
            return m;
        }
    return NULL;
}

static void *map_new(struct conn *cn, size_t size)
{
    size_t len = (size + page_size() - 1) & ~(page_size() - 1);
    struct h2_map *m;
    void *p;

    if (len < size || !(m = malloc(sizeof(*m))))
        return NULL;
    if ((p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) ==
        MAP_FAILED) {
        free(m);
        return NULL;
    }
    *m = (struct h2_map){ .p = p, .len = len, .framebuf = cn->h2 == NULL, .next = cn->h2maps };
    cn->h2maps = m;
    return p;
}

static void *h2_malloc(size_t size, void *ud)
{
    struct h2_block *b;
    void *p;

    if (size >= H2_MMAP_MIN && (p = map_new(ud, size)))
        return p;
    if (size > SIZE_MAX - sizeof(*b) || !(b = malloc(sizeof(*b) + size)))
        return NULL;
    b->size = size;
    return b + 1;
}

static void h2_free(void *ptr, void *ud)
{
    struct h2_map **pp, *m;

    if (!ptr)
        return;
    if ((m = map_find(ud, ptr, &pp))) {
        *pp = m->next;
        munmap(m->p, m->len);
        free(m);
        return;
    }
    free((struct h2_block *)ptr - 1);
}

static void *h2_calloc(size_t n, size_t size, void *ud)
{
    void *p;

    if (size && n > SIZE_MAX / size)
        return NULL;
    if ((p = h2_malloc(n * size, ud)) && !map_find(ud, p, NULL))
        memset(p, 0, n * size); /* fresh mappings are zero already */
    return p;
}

static void *h2_realloc(void *ptr, size_t size, void *ud)
{
    struct h2_block *b, *nb;
    struct h2_map *m;
    size_t old;
    void *p;

    if (!ptr)
        return h2_malloc(size, ud);
    if ((m = map_find(ud, ptr, NULL))) {
        old = m->len;
    } else {
        b = (struct h2_block *)ptr - 1;
        if (size < H2_MMAP_MIN) {
            if (size > SIZE_MAX - sizeof(*b) || !(nb = realloc(b, sizeof(*b) + size)))
                return NULL;
            nb->size = size;
            return nb + 1;
        }
        old = b->size;
    }
    if (!(p = h2_malloc(size, ud)))
        return NULL;
    memcpy(p, ptr, old < size ? old : size);
    h2_free(ptr, ud);
    return p;
}

void h2_trim(struct conn *cn)
{
    if (!cn->h2 || nghttp2_session_want_write(cn->h2))
        return; /* a frame may be half taken out of the buffer */
    for (struct h2_map *m = cn->h2maps; m; m = m->next)
        if (m->framebuf)
            madvise(m->p, m->len, MADV_DONTNEED); /* next use finds zero pages */
    cn->h2_dirty = false;
}

static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *user);

int h2_session_new(struct conn *cn)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_mem mem = { cn, h2_malloc, h2_free, h2_calloc, h2_realloc }; /* nghttp2 copies it */
    nghttp2_settings_entry settings[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, CONTROL_MAX_STREAMS },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CONTROL_MAX_HEADER_BYTES },
        /* No HPACK dynamic table for what clients send: a client makes a few requests per
         * connection, and thousands of idle connections would each keep its table. */
        { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0 },
    };
    int rc;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -ENOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_option_new(&opt);
    nghttp2_option_set_max_outbound_ack(opt, 1000); /* bounds SETTINGS/PING floods */
    /* Per idle connection: no closed streams kept for priorities, no table for our few
     * response headers. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    rc = nghttp2_session_server_new3(&cn->h2, cb, cn, opt, &mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -ENOMEM;
    if (nghttp2_submit_settings(cn->h2, NGHTTP2_FLAG_NONE, settings, HS_ARRAY_LEN(settings)))
        return -EPROTO;
    /* A map stream can carry megabytes: open the connection window wide, like Go does. */
    nghttp2_session_set_local_window_size(cn->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    return 0;
}

int h2_recv(struct conn *cn, const uint8_t *data, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(cn->h2, data, len);
    return n < 0 ? -EPROTO : 0;
}

int h2_flush(struct conn *cn)
{
    for (;;) {
        const uint8_t *out;
        ssize_t n = nghttp2_session_mem_send(cn->h2, &out);
        int rc;

        if (n < 0)
            return -EPROTO;
        if (n == 0)
            break;
        if ((rc = conn_seal(cn, out, (size_t)n)) < 0)
            return rc;
        cn->h2_dirty = true;
        if (cn->tx.len >= CONTROL_MAX_CONN_TX / 2)
            break; /* the rest waits until the socket drains */
    }
    if (!nghttp2_session_want_read(cn->h2) && !nghttp2_session_want_write(cn->h2))
        cn->closing = true;
    return 0;
}

static ssize_t read_out(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                        uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct stream *st = src->ptr;
    size_t n = st->out.len < len ? st->out.len : len;

    (void)s;
    (void)sid;
    (void)user;
    (void)buf;
    if (n == 0 && !st->end) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* send_data() takes it from st->out */
    if (st->end && st->out.len == n)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* A DATA frame's payload goes from the stream's buffer straight into Noise records: nghttp2's
 * 16 KiB frame buffer then only ever holds headers and control frames, so an idle stream keeps
 * one page of it resident (after a full map of megabytes, too), and the payload is copied once
 * less. */
static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *user)
{
    struct conn *cn = user;
    struct stream *st = src->ptr;

    (void)s;
    if (frame->data.padlen > 0 || length > st->out.len)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* we never pad; read_out() measured st->out */
    if (conn_seal_frame(cn, framehd, 9, (const uint8_t *)st->out.data, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    hs_buf_consume(&st->out, length);
    control__backlog_add(cn->ctl, -(int64_t)length);
    hs_buf_trim(&st->out, 0); /* an idle map stream keeps no buffer between messages */
    return 0;
}

/* retry_after: seconds for a Retry-After header (429 answers), 0 for none. */
static void submit_response(struct conn *cn, struct stream *st, int status, const char *ctype,
                            unsigned retry_after)
{
    char code[8], retry[12];
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = read_out };
    nghttp2_nv nva[] = {
        { (uint8_t *)":status", (uint8_t *)code, 7, 0, NGHTTP2_NV_FLAG_NONE },
        { (uint8_t *)"content-type", (uint8_t *)ctype, 12, strlen(ctype), NGHTTP2_NV_FLAG_NONE },
        { (uint8_t *)"retry-after", (uint8_t *)retry, 11, 0, NGHTTP2_NV_FLAG_NONE },
    };

    snprintf(code, sizeof(code), "%d", status);
    nva[0].valuelen = strlen(code);
    snprintf(retry, sizeof(retry), "%u", retry_after);
    nva[2].valuelen = strlen(retry);
    st->responded = true;
    /* Retry-After, the last header, goes only with a value. */
    if (nghttp2_submit_response(cn->h2, st->id, nva, HS_ARRAY_LEN(nva) - !retry_after, &prd) != 0)
        nghttp2_submit_rst_stream(cn->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

/* Every byte into st->out goes through here or stream_append(): the backlog counts them
 * (send_data() and stream_free() count them out). */
static int out_append(struct conn *cn, struct stream *st, const void *data, size_t len)
{
    int rc = hs_buf_append(&st->out, data, len);

    if (rc == 0)
        control__backlog_add(cn->ctl, (int64_t)len);
    return rc;
}

static void submit_simple(struct conn *cn, struct stream *st, int status, const char *text)
{
    out_append(cn, st, text, strlen(text));
    st->end = true;
    submit_response(cn, st, status, "text/plain; charset=utf-8", 0);
}

static void stream_more(struct conn *cn, struct stream *st)
{
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(cn->h2, st->id);
    }
}

/* Appends to the stream's backlog; a client that stops reading for this long is cut off.
 * Into an empty backlog data's contents are moved, not copied (data is left empty). */
static void stream_append(struct conn *cn, struct stream *st, struct hs_buf *data)
{
    if (st->out.len == 0 && data->len <= st->out.max) {
        size_t max = st->out.max;
        hs_buf_free(&st->out);
        st->out = *data;
        st->out.max = max;
        hs_buf_init(data, data->max);
        control__backlog_add(cn->ctl, (int64_t)st->out.len);
        return;
    }
    if (out_append(cn, st, data->data, data->len) < 0) {
        log_warnx("control: conn %llu stream %d: client not reading, %zu bytes backlog: reset",
                  (unsigned long long)cn->id, st->id, st->out.len);
        nghttp2_submit_rst_stream(cn->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    }
}

/* Takes out what was written to a stream before its reply (see h2_data). */
static struct hs_buf stream_take_early(struct conn *cn, struct stream *st)
{
    struct hs_buf early = st->out;

    hs_buf_init(&st->out, CONTROL_MAX_STREAM_BACKLOG);
    control__backlog_add(cn->ctl, -(int64_t)early.len);
    return early;
}

void h2_reply(struct conn *cn, struct msg *m)
{
    struct stream *st = stream_find(cn, m->stream_id);
    struct hs_buf early;

    if (!st || st->responded)
        return;
    early = stream_take_early(cn, st);
    stream_append(cn, st, &m->data);
    if (m->status == 200 && early.len)
        stream_append(cn, st, &early); /* after the reply's own body: the first map */
    hs_buf_free(&early);
    st->end = m->end;
    submit_response(cn, st, m->status, m->content_type ? m->content_type : "application/json",
                    m->retry_after);
}

void h2_data(struct conn *cn, struct msg *m)
{
    struct stream *st = stream_find(cn, m->stream_id);

    if (!st || st->end)
        return;
    /* Before the reply it waits in the backlog and follows the reply: the map thread may
     * send a delta to a map stream whose first map (the reply) another thread has built
     * but not yet queued. Dropped, the delta's change was lost to that node for good. */
    stream_append(cn, st, &m->data);
    if (st->responded)
        stream_more(cn, st);
}

void h2_end(struct conn *cn, struct msg *m)
{
    struct stream *st = stream_find(cn, m->stream_id);

    if (!st || st->end)
        return;
    st->end = true;
    if (st->responded) {
        stream_more(cn, st);
    } else {
        struct hs_buf early = stream_take_early(cn, st); /* no first map: no deltas */
        hs_buf_free(&early);
        submit_response(cn, st, 200, "application/json", 0);
    }
}

void h2_session_free(struct conn *cn)
{
    struct stream *st, *next;

    for (st = cn->streams; st; st = next) {
        next = st->next;
        STAT_ADD(cn->ctl->stats.streams_open, -1);
        if (st->dispatched && cn->ctl->h.stream_closed)
            cn->ctl->h.stream_closed(cn->ctl->h.ctx, cn->id, st->id);
        stream_free(cn, st);
    }
    cn->streams = NULL;
    nghttp2_session_del(cn->h2);
    cn->h2 = NULL;
}
