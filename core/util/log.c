/* util: the logger. Text lines ("<RFC 3339 time> <level> <message>[: <error>]") or, with
 * log.format json, one JSON object per line shaped as headscale's zerolog writes them:
 * level first, then the fields (here only "error"), then "time" in Unix seconds and
 * "message" last. Level and format may change while other threads log (SIGHUP). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

static _Atomic int cur_level = LOG_INFO;
static atomic_bool as_json;

static const char *const level_names[] = { "trace", "debug", "info", "warn", "error", "disabled" };

void log_set_level(enum log_level lvl) { atomic_store(&cur_level, (int)lvl); }
void log_set_json(bool json) { atomic_store(&as_json, json); }
enum log_level log_get_level(void) { return (enum log_level)atomic_load(&cur_level); }
bool log_get_json(void) { return atomic_load(&as_json); }
const char *log_level_name(enum log_level lvl) { return level_names[lvl]; }

int log_parse_level(const char *s, enum log_level *out)
{
    static const struct { const char *name; enum log_level lvl; } map[] = {
        { "trace", LOG_TRACE }, { "debug", LOG_DEBUG }, { "info", LOG_INFO },
        { "warn", LOG_WARN },   { "warning", LOG_WARN }, { "error", LOG_ERROR },
        { "fatal", LOG_ERROR }, { "panic", LOG_ERROR },  { "disabled", LOG_OFF },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(map); i++) {
        if (strcasecmp(s, map[i].name) == 0) {
            *out = map[i].lvl;
            return 0;
        }
    }
    return -EINVAL;
}

static void log_write(enum log_level lvl, char *msg, const char *errstr)
{
    int64_t now = hs_now_us();
    char ts[40];

    if (atomic_load(&as_json)) {
        json_t *j = json_pack("{s:s}", "level", level_names[lvl]);

        hs_utf8_sanitize(msg); /* a client's bytes in a message must not void the line */
        if (j && errstr)
            json_object_set_new(j, "error", json_string(errstr));
        if (j) {
            json_object_set_new(j, "time", json_integer(now / HS_USEC_PER_SEC));
            json_object_set_new(j, "message", json_string(msg));
        }
        /* jansson keeps insertion order: the order above is the order written */
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        fprintf(stderr, "%s\n", s ? s : msg);
        free(s);
        json_decref(j);
        return;
    }
    hs_format_rfc3339(now, ts, sizeof(ts));
    if (errstr) {
        fprintf(stderr, "%s %-5s %s: %s\n", ts, level_names[lvl], msg, errstr);
    } else {
        fprintf(stderr, "%s %-5s %s\n", ts, level_names[lvl], msg);
    }
}

static void log_v(enum log_level lvl, const char *errstr, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    log_write(lvl, msg, errstr);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    if ((int)lvl < atomic_load(&cur_level))
        return;
    va_start(ap, fmt);
    log_v(lvl, NULL, fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    const char *e = strerror(errno);
    if (LOG_WARN < atomic_load(&cur_level))
        return;
    va_start(ap, fmt);
    log_v(LOG_WARN, e, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;
    const char *e = strerror(errno);
    va_start(ap, fmt);
    log_v(LOG_ERROR, e, fmt, ap);
    va_end(ap);
    exit(1);
}

void log_fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(LOG_ERROR, NULL, fmt, ap);
    va_end(ap);
    exit(1);
}
