/* A JSON writer straight into a buffer, for list responses: building a jansson tree of 5,000
 * nodes and dumping it took ~300 ms, nearly all of it malloc/free of the tree. It writes what
 * json_dumps(JSON_COMPACT) writes for the same values, escapes included, so that the shapes
 * have one implementation and single objects (parsed back into jansson) stay identical. */
#include <stdio.h>
#include <string.h>

#include "api/api_internal.h"

void api_jw_begin(struct api_jw *w, struct hs_buf *b)
{
    *w = (struct api_jw){ .b = b };
}

int api_jw_end(struct api_jw *w)
{
    return w->err ? w->err : (w->depth ? -EINVAL : 0);
}

/* Inline fast path: most pieces are a few bytes, and the buffer soon has room for them. */
static inline void put(struct api_jw *w, const char *p, size_t n)
{
    struct hs_buf *b = w->b;
    int rc;

    if (w->err)
        return;
    if (b->len + n < b->cap && b->len + n <= b->max) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
    } else if ((rc = hs_buf_append(b, p, n)) < 0) {
        w->err = rc;
    }
}

/* The comma before a member or element, unless a key was just written. */
static void sep(struct api_jw *w)
{
    uint64_t bit = 1ull << w->depth;

    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->items & bit)
        put(w, ",", 1);
    w->items |= bit;
}

static void open_container(struct api_jw *w, char c)
{
    sep(w);
    put(w, &c, 1);
    if (w->depth + 1 >= API_JW_MAX_DEPTH) {
        w->err = w->err ? w->err : -EINVAL; /* sticks: the output is not used */
        return;
    }
    w->depth++;
    w->items &= ~(1ull << w->depth);
}

static void close_container(struct api_jw *w, char c)
{
    put(w, &c, 1);
    if (w->depth)
        w->depth--;
}

void api_jw_obj(struct api_jw *w) { open_container(w, '{'); }
void api_jw_obj_end(struct api_jw *w) { close_container(w, '}'); }
void api_jw_arr(struct api_jw *w) { open_container(w, '['); }
void api_jw_arr_end(struct api_jw *w) { close_container(w, ']'); }

/* jansson's dump_string: \\ \" and the short escapes, other controls as \u00XX (upper case),
 * everything else (UTF-8 included, '/' and DEL too) as is. */
static void put_escaped(struct api_jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;

    put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[6] = { '\\', 0 };
        size_t elen = 2;

        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        put(w, s + run, i - run);
        run = i + 1;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            elen = 6;
        }
        put(w, esc, elen);
    }
    put(w, s + run, n - run);
    put(w, "\"", 1);
}

/* One pass over a string: its length, whether it needs escapes, and whether jansson would
 * take it (json_string() refuses NULL and invalid UTF-8; only non-ASCII text is checked). */
struct str_info {
    size_t len;
    bool escape, ok;
};

static struct str_info scan(const char *s)
{
    struct str_info si = { 0 };
    bool high = false;
    const unsigned char *p = (const unsigned char *)s;

    if (!s)
        return si;
    for (; p[si.len]; si.len++) {
        unsigned char ch = p[si.len];
        high |= ch >= 0x80;
        si.escape |= ch < 0x20 || ch == '"' || ch == '\\';
    }
    si.ok = !high || hs_utf8_valid(s, si.len);
    return si;
}

static void put_string(struct api_jw *w, const char *s, const struct str_info *si)
{
    if (si->escape) {
        put_escaped(w, s, si->len);
        return;
    }
    put(w, "\"", 1);
    put(w, s, si->len);
    put(w, "\"", 1);
}

void api_jw_key(struct api_jw *w, const char *key)
{
    sep(w);
    put(w, "\"", 1);
    put(w, key, strlen(key));
    put(w, "\":", 2);
    w->after_key = true;
}

bool api_jw_str(struct api_jw *w, const char *s)
{
    struct str_info si = scan(s);

    /* jansson leaves out a member or element whose string it refused: so does the writer,
     * leaving a member's key to api_jw_kstr. */
    if (!si.ok)
        return false;
    sep(w);
    put_string(w, s, &si);
    return true;
}

void api_jw_kstr(struct api_jw *w, const char *key, const char *s)
{
    struct str_info si = scan(s);

    if (!si.ok)
        return;
    api_jw_key(w, key);
    sep(w);
    put_string(w, s, &si);
}

void api_jw_kascii(struct api_jw *w, const char *key, const char *s, size_t len)
{
    api_jw_key(w, key);
    sep(w);
    put(w, "\"", 1);
    put(w, s, len);
    put(w, "\"", 1);
}

void api_jw_null(struct api_jw *w)
{
    sep(w);
    put(w, "null", 4);
}

void api_jw_bool(struct api_jw *w, bool v)
{
    sep(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void api_jw_raw(struct api_jw *w, const char *json)
{
    sep(w);
    put(w, json, strlen(json));
}

void api_jw_id(struct api_jw *w, uint64_t id)
{
    char buf[24];
    sep(w);
    put(w, buf, (size_t)snprintf(buf, sizeof(buf), "\"%llu\"", (unsigned long long)id));
}

static char *digits(char *p, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + n;
}

/* Year, month, day of a day count since 1970-01-01 (>= 0): H. Hinnant's civil_from_days. */
static void civil(int64_t days, int64_t *year, unsigned *mon, unsigned *day)
{
    int64_t z = days + 719468;
    unsigned doe = (unsigned)(z % 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;

    *day = doy - (153 * mp + 2) / 5 + 1;
    *mon = mp < 10 ? mp + 3 : mp - 9;
    *year = (int64_t)yoe + z / 146097 * 400 + (*mon <= 2);
}

/* hs_format_rfc3339's output without gmtime_r + strftime + snprintf, which cost more than the
 * rest of a node (a list formats three times per node). Years 1000-9999 (four digits, as %Y
 * writes them); anything else goes the slow way. */
size_t api_jw_format_time(int64_t us, char out[API_JW_TIME_MAX])
{
    int64_t secs = us / 1000000, year = 0;
    unsigned frac = (unsigned)(us % 1000000), rem = (unsigned)(secs % 86400), mon = 0, day = 0;
    char *p = out;

    if (us >= 0)
        civil(secs / 86400, &year, &mon, &day);
    if (us < 0 || year < 1000 || year > 9999) {
        hs_format_rfc3339(us, out, API_JW_TIME_MAX);
        return strlen(out);
    }
    p = digits(p, (unsigned)year, 4);
    *p++ = '-';
    p = digits(p, mon, 2);
    *p++ = '-';
    p = digits(p, day, 2);
    *p++ = 'T';
    p = digits(p, rem / 3600, 2);
    *p++ = ':';
    p = digits(p, rem / 60 % 60, 2);
    *p++ = ':';
    p = digits(p, rem % 60, 2);
    if (frac) {
        *p++ = '.';
        p = frac % 1000 ? digits(p, frac, 6) : digits(p, frac / 1000, 3);
    }
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

void api_jw_time(struct api_jw *w, int64_t us)
{
    char buf[API_JW_TIME_MAX];
    size_t n;

    if (!us) {
        api_jw_null(w);
        return;
    }
    n = api_jw_format_time(us, buf);
    sep(w);
    put(w, "\"", 1);
    put(w, buf, n);
    put(w, "\"", 1);
}

void api_jw_strv(struct api_jw *w, const struct hs_strv *sv)
{
    api_jw_arr(w);
    for (size_t i = 0; i < sv->n; i++)
        api_jw_str(w, sv->v[i]);
    api_jw_arr_end(w);
}

json_t *api_jw_to_json(struct hs_buf *b)
{
    json_t *j = json_loadb(b->data ? b->data : "", b->len, JSON_DECODE_ANY, NULL);
    hs_buf_free(b);
    return j ? j : json_null();
}
