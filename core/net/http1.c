/* The front door's HTTP/1.1 request parser: enough to route a new connection and to frame
 * every request on a connection it passes to libmicrohttpd. Requests go on unchanged, so
 * this parser only has to be strict, not complete: whatever it lets through must be framed
 * the same way by libmicrohttpd, or a request could hide inside another one's body. */
#include <string.h>
#include <strings.h>

#include "net/net.h"

static const char *find_head_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return buf + i + 1;
    return NULL;
}

int http1_head_scan(struct http1_scan *s, const char *buf, size_t len)
{
    size_t m = len < HTTP1_MAX_HEAD ? len : HTTP1_MAX_HEAD;
    size_t from = s->done > 3 ? s->done - 3 : 0; /* a CRLFCRLF may straddle the old end */
    const char *end;

    if (from >= m)
        return len >= HTTP1_MAX_HEAD ? -E2BIG : -EAGAIN;
    s->examined += m - from;
    if ((end = find_head_end(buf + from, m - from)))
        return (int)(end - buf);
    s->done = m;
    return len >= HTTP1_MAX_HEAD ? -E2BIG : -EAGAIN;
}

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* "METHOD SP target SP HTTP/1.x" in line (NUL-terminated, no CRLF). */
static int parse_request_line(char *line, struct http1_head *h)
{
    char *sp1 = strchr(line, ' '), *sp2;

    if (!sp1 || sp1 == line)
        return -EINVAL;
    for (char *p = line; p < sp1; p++)
        if (!is_tchar(*p))
            return -EINVAL;
    *sp1 = '\0';
    if (!(sp2 = strchr(sp1 + 1, ' ')) || sp2 == sp1 + 1 || sp1[1] != '/')
        return -EINVAL;
    *sp2 = '\0';
    for (char *p = sp1 + 1; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -EINVAL;
    if (strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp2[8] < '0' || sp2[8] > '9' || sp2[9])
        return -EINVAL;
    h->method = line;
    h->target = sp1 + 1;
    h->minor_version = sp2[8] - '0';
    return 0;
}

static const char *trim_value(char *v)
{
    char *end;

    while (*v == ' ' || *v == '\t')
        v++;
    end = v + strlen(v);
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return v;
}

/* A repeated routing or framing header is refused: two Upgrade values are ambiguous, and
 * two Content-Length values let a proxy and us disagree on where a request ends. */
static int keep(struct http1_head *h, const char **slot, const char *name, const char *value)
{
    if (*slot) {
        h->repeated = name;
        return -EINVAL;
    }
    *slot = value;
    return 0;
}

static int parse_header(char *line, struct http1_head *h)
{
    static const struct {
        const char *name;
        size_t off;
    } wanted[] = {
        { "upgrade", offsetof(struct http1_head, upgrade) },
        { "connection", offsetof(struct http1_head, connection) },
        { "x-tailscale-handshake", offsetof(struct http1_head, ts_handshake) },
        { "sec-websocket-key", offsetof(struct http1_head, ws_key) },
        { "sec-websocket-version", offsetof(struct http1_head, ws_version) },
        { "sec-websocket-protocol", offsetof(struct http1_head, ws_protocol) },
        { "derp-fast-start", offsetof(struct http1_head, derp_fast_start) },
        { "content-length", offsetof(struct http1_head, content_length) },
        { "transfer-encoding", offsetof(struct http1_head, transfer_encoding) },
    };
    char *colon = strchr(line, ':');

    if (!colon || colon == line)
        return -EINVAL; /* also refuses obsolete line folding */
    for (char *p = line; p < colon; p++)
        if (!is_tchar(*p))
            return -EINVAL;
    for (char *p = colon + 1; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return -EINVAL;
    *colon = '\0';
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
        if (strcasecmp(line, wanted[i].name) == 0)
            return keep(h, (const char **)((char *)h + wanted[i].off), wanted[i].name,
                        trim_value(colon + 1));
    return 0;
}

int http1_parse_head(char *buf, size_t len, struct http1_head *h)
{
    const char *end;
    char *line, *next;
    int rc;

    memset(h, 0, sizeof(*h));
    if (!(end = find_head_end(buf, len > HTTP1_MAX_HEAD ? HTTP1_MAX_HEAD : len)))
        return len >= HTTP1_MAX_HEAD ? -E2BIG : -EAGAIN;
    for (line = buf; line < end - 2; line = next) {
        char *cr = memchr(line, '\r', (size_t)(end - line));
        if (!cr || cr[1] != '\n')
            return -EINVAL; /* a bare CR, or LF without CR */
        if (memchr(line, '\n', (size_t)(cr - line)) || memchr(line, '\0', (size_t)(cr - line)))
            return -EINVAL;
        *cr = '\0';
        next = cr + 2;
        rc = line == buf ? parse_request_line(line, h) : parse_header(line, h);
        if (rc < 0)
            return rc;
    }
    return h->method ? (int)(end - buf) : -EINVAL;
}

bool http1_has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);

    while (value && *value) {
        const char *comma = strchr(value, ','), *e = comma ? comma : value + strlen(value);
        while (value < e && (*value == ' ' || *value == '\t'))
            value++;
        while (e > value && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - value) == tlen && strncasecmp(value, token, tlen) == 0)
            return true;
        value = comma ? comma + 1 : NULL;
    }
    return false;
}

bool http1_path_is(const char *target, const char *path)
{
    size_t n = strlen(path);
    return strncmp(target, path, n) == 0 && (target[n] == '\0' || target[n] == '?');
}

static int percent_decode(const char *s, size_t n, char *out, size_t outsize)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            uint8_t byte;
            if (i + 2 >= n || hs_hex_decode(s + i + 1, 2, &byte, 1) < 0)
                return -EINVAL;
            c = (char)byte;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0' || o + 1 >= outsize)
            return -EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

int http1_query_param(const char *target, const char *name, char *out, size_t outsize)
{
    const char *q = strchr(target, '?');
    size_t nlen = strlen(name);

    while (q && *q) {
        const char *p = q + 1, *amp = strchr(p, '&'), *e = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (eq && (size_t)(eq - p) == nlen && strncmp(p, name, nlen) == 0)
            return percent_decode(eq + 1, (size_t)(e - eq - 1), out, outsize);
        q = amp;
    }
    return -ENOENT;
}

/* ---- request framing (RFC 9112 §6, §7.1) ---- */

enum {
    BODY_DONE,
    BODY_LENGTH,    /* left bytes to come */
    CK_SIZE,        /* chunk-size hex digits */
    CK_EXT,         /* chunk extensions, up to CR */
    CK_SIZE_LF,
    CK_DATA,        /* left bytes of chunk data */
    CK_DATA_CR,
    CK_DATA_LF,
    CK_LINE_START,  /* after the last chunk: a trailer field, or the final CRLF */
    CK_TRAILER,
    CK_TRAILER_LF,
    CK_END_LF,
};

/* Whether the last member of a comma-separated list is token. */
static bool last_token_is(const char *value, const char *token)
{
    const char *comma = strrchr(value, ',');

    return http1_has_token(comma ? comma + 1 : value, token);
}

static int body_by_coding(const struct http1_head *h, struct http1_body *b, const char **why)
{
    if (h->content_length) {
        *why = "a request may not carry both Content-Length and Transfer-Encoding";
        return -EINVAL;
    }
    if (h->minor_version == 0) {
        *why = "Transfer-Encoding is not allowed in an HTTP/1.0 request";
        return -EINVAL;
    }
    if (!last_token_is(h->transfer_encoding, "chunked")) {
        *why = "the last transfer coding must be chunked";
        return -EINVAL;
    }
    if (strcasecmp(h->transfer_encoding, "chunked") != 0) {
        *why = "only the chunked transfer coding is supported";
        return -EOPNOTSUPP;
    }
    b->st = CK_SIZE;
    return 0;
}

int http1_request_body(const struct http1_head *h, struct http1_body *b, const char **why)
{
    uint64_t n;

    *b = (struct http1_body){ .st = BODY_DONE };
    /* A C string ends at the decoded NUL: "/user/alice%00xyz" would be read as alice. */
    if (strstr(h->target, "%00")) {
        *why = "%00 is not allowed in the request target";
        return -EINVAL;
    }
    if (h->transfer_encoding)
        return body_by_coding(h, b, why);
    if (!h->content_length)
        return 0; /* a request without either has no body (RFC 9112 §6.3, rule 7) */
    if (hs_parse_u64(h->content_length, HTTP1_MAX_CONTENT_LENGTH, &n) < 0) {
        *why = "Content-Length must be one decimal number";
        return -EINVAL;
    }
    b->left = n;
    b->st = n ? BODY_LENGTH : BODY_DONE;
    return 0;
}

bool http1_body_done(const struct http1_body *b)
{
    return b->st == BODY_DONE;
}

/* Field text: HTAB, visible ASCII, SP and obs-text; a bare CR or LF never. */
static bool field_byte(char c)
{
    unsigned char u = (unsigned char)c;
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int chunk_size_byte(struct http1_body *b, char c)
{
    int d = hex_digit(c);

    if (d >= 0 && b->digits < HTTP1_MAX_CHUNK_DIGITS) {
        b->digits++;
        b->left = b->left * 16 + (uint64_t)d;
        return 0;
    }
    if (!b->digits || d >= 0)
        return -EINVAL;
    if (c == '\r')
        b->st = CK_SIZE_LF;
    else if (c == ';' || c == ' ' || c == '\t')
        b->st = CK_EXT;
    else
        return -EINVAL;
    return 0;
}

/* One byte of chunked framing outside chunk data. */
static int chunk_byte(struct http1_body *b, char c)
{
    switch (b->st) {
    case CK_SIZE:
        return chunk_size_byte(b, c);
    case CK_EXT:
        if (c == '\r')
            b->st = CK_SIZE_LF;
        return field_byte(c) || c == '\r' ? 0 : -EINVAL;
    case CK_SIZE_LF:
        b->st = b->left ? CK_DATA : CK_LINE_START;
        b->line = 0;
        return c == '\n' ? 0 : -EINVAL;
    case CK_DATA_CR:
        b->st = CK_DATA_LF;
        return c == '\r' ? 0 : -EINVAL;
    case CK_DATA_LF:
        *b = (struct http1_body){ .st = CK_SIZE };
        return c == '\n' ? 0 : -EINVAL;
    case CK_LINE_START:
    case CK_TRAILER:
        if (c == '\r')
            b->st = b->st == CK_LINE_START ? CK_END_LF : CK_TRAILER_LF;
        else
            b->st = CK_TRAILER;
        return field_byte(c) || c == '\r' ? 0 : -EINVAL;
    case CK_TRAILER_LF:
    case CK_END_LF:
        b->st = b->st == CK_END_LF ? BODY_DONE : CK_LINE_START;
        return c == '\n' ? 0 : -EINVAL;
    default:
        return -EINVAL;
    }
}

/* Chunk lines and trailers are framing, not payload: a peer that sends kilobytes of them is
 * not sending a body (picohttpparser's rule against framing-only streams). */
static int chunk_line_byte(struct http1_body *b, char c)
{
    size_t cap = b->st >= CK_LINE_START ? HTTP1_MAX_HEAD : HTTP1_MAX_CHUNK_LINE;

    if (++b->line > cap)
        return -E2BIG;
    return chunk_byte(b, c);
}

ssize_t http1_body_scan(struct http1_body *b, const char *buf, size_t len)
{
    size_t i = 0;
    int rc;

    while (i < len && b->st != BODY_DONE) {
        if (b->st == BODY_LENGTH || b->st == CK_DATA) {
            size_t n = b->left < len - i ? (size_t)b->left : len - i;
            b->left -= n;
            i += n;
            if (!b->left)
                b->st = b->st == BODY_LENGTH ? BODY_DONE : CK_DATA_CR;
            continue;
        }
        if ((rc = chunk_line_byte(b, buf[i++])) < 0)
            return rc;
    }
    return (ssize_t)i;
}
