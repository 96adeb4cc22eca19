#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

int64_t hs_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * HS_USEC_PER_SEC + ts.tv_nsec / 1000;
}

int64_t hs_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * HS_USEC_PER_SEC + ts.tv_nsec / 1000;
}

void hs_cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

bool hs_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, int64_t at_us)
{
    struct timespec ts = { .tv_sec = (time_t)(at_us / HS_USEC_PER_SEC),
                           .tv_nsec = (long)(at_us % HS_USEC_PER_SEC) * 1000 };

    if (at_us < 0)
        ts = (struct timespec){ 0 };
    return pthread_cond_timedwait(c, mu, &ts) == ETIMEDOUT;
}

static int64_t unit_us(const char *u, size_t n)
{
    static const struct { const char *name; int64_t us; } units[] = {
        { "ns", 0 }, { "us", 1 }, { "µs", 1 }, { "ms", 1000 },
        { "s", HS_USEC_PER_SEC }, { "m", 60 * HS_USEC_PER_SEC },
        { "h", 3600 * HS_USEC_PER_SEC }, { "d", 86400 * HS_USEC_PER_SEC },
        { "w", 7 * 86400 * HS_USEC_PER_SEC }, { "y", 365 * 86400 * HS_USEC_PER_SEC },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(units); i++)
        if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
            return units[i].us;
    return -1;
}

int hs_parse_duration(const char *s, int64_t *out_us)
{
    /* 1000 years in microseconds still fits comfortably in int64. */
    const double limit = 1000.0 * 365 * 86400 * 1e6;
    double total = 0;

    if (!s || !*s)
        return -EINVAL;
    if (strcmp(s, "0") == 0) {
        *out_us = 0;
        return 0;
    }
    while (*s) {
        const char *start = s, *u;
        double v = 0, frac = 0.1;
        int64_t mult;
        bool digits = false;

        while (*s >= '0' && *s <= '9') {
            v = v * 10 + (*s++ - '0');
            digits = true;
            if (v > limit)
                return -ERANGE;
        }
        if (*s == '.') {
            for (s++; *s >= '0' && *s <= '9'; s++, frac /= 10) {
                v += (*s - '0') * frac;
                digits = true;
            }
        }
        if (!digits || s == start)
            return -EINVAL;
        u = s;
        while (*s && !(*s >= '0' && *s <= '9') && *s != '.')
            s++;
        if (s == u)
            return -EINVAL; /* a number without a unit */
        if ((mult = unit_us(u, (size_t)(s - u))) < 0)
            return -EINVAL;
        total += mult ? v * (double)mult : v / 1000.0;
        if (total > limit)
            return -ERANGE;
    }
    *out_us = (int64_t)total;
    return 0;
}

void hs_format_rfc3339(int64_t us, char *buf, size_t size)
{
    time_t secs = (time_t)(us / HS_USEC_PER_SEC);
    long frac = (long)(us % HS_USEC_PER_SEC);
    struct tm tm;
    char base[32];

    if (frac < 0) {
        frac += HS_USEC_PER_SEC;
        secs--;
    }
    gmtime_r(&secs, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac == 0)
        snprintf(buf, size, "%sZ", base);
    else if (frac % 1000 == 0)
        snprintf(buf, size, "%s.%03ldZ", base, frac / 1000);
    else
        snprintf(buf, size, "%s.%06ldZ", base, frac);
}

void hs_format_human(int64_t us, char *buf, size_t size)
{
    time_t secs = (time_t)(us / HS_USEC_PER_SEC);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

static int parse_fixed(const char **s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*s)[i] < '0' || (*s)[i] > '9')
            return -EINVAL;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

static int expect(const char **s, char c)
{
    if (**s != c && !(c == 'T' && (**s == 't' || **s == ' ')))
        return -EINVAL;
    (*s)++;
    return 0;
}

int hs_parse_rfc3339(const char *s, int64_t *out_us)
{
    struct tm tm = { 0 };
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    int64_t frac = 0, scale = 100000, offset = 0;
    time_t t;

    if (!s || parse_fixed(&s, 4, &y) || expect(&s, '-') || parse_fixed(&s, 2, &mo) ||
        expect(&s, '-') || parse_fixed(&s, 2, &d) || expect(&s, 'T') || parse_fixed(&s, 2, &h) ||
        expect(&s, ':') || parse_fixed(&s, 2, &mi) || expect(&s, ':') || parse_fixed(&s, 2, &sec))
        return -EINVAL;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -EINVAL;
        for (; *s >= '0' && *s <= '9'; s++, scale /= 10)
            frac += scale ? (*s - '0') * scale : 0;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1;
        if (parse_fixed(&s, 2, &oh) || expect(&s, ':') || parse_fixed(&s, 2, &om))
            return -EINVAL;
        offset = sign * ((int64_t)oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*s || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
        oh > 23 || om > 59)
        return -EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (tm.tm_mday != d) /* timegm normalised an impossible date such as 02-31 */
        return -EINVAL;
    *out_us = ((int64_t)t - offset) * HS_USEC_PER_SEC + frac;
    return 0;
}
