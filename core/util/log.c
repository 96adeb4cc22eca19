#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

static enum log_level cur_level = LOG_INFO;
static bool as_json;

static const char *const level_names[] = { "trace", "debug", "info", "warn", "error", "off" };

void log_set_level(enum log_level lvl) { cur_level = lvl; }
void log_set_json(bool json) { as_json = json; }
enum log_level log_get_level(void) { return cur_level; }

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

static void log_write(enum log_level lvl, const char *msg, const char *errstr)
{
    char ts[40];
    hs_format_rfc3339(hs_now_us(), ts, sizeof(ts));
    if (as_json) {
        json_t *j = json_pack("{s:s, s:s, s:s}", "time", ts, "level", level_names[lvl],
                              "message", msg);
        if (j && errstr)
            json_object_set_new(j, "error", json_string(errstr));
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        fprintf(stderr, "%s\n", s ? s : msg);
        free(s);
        json_decref(j);
    } else if (errstr) {
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
    if (lvl < cur_level)
        return;
    va_start(ap, fmt);
    log_v(lvl, NULL, fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    const char *e = strerror(errno);
    if (LOG_WARN < cur_level)
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
