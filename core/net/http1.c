/* The front door's HTTP/1.1 request-head parser: just enough to route a new connection.
 * Everything that is not a well-formed upgrade goes to libmicrohttpd unchanged, so this
 * parser only has to be strict, not complete. */
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

/* A repeated routing header is refused: two Upgrade values are ambiguous. */
static int keep(const char **slot, const char *value)
{
    if (*slot)
        return -EINVAL;
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
            return keep((const char **)((char *)h + wanted[i].off), trim_value(colon + 1));
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
