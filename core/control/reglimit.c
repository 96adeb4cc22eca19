/* New pending registrations or Noise handshakes per client address, or all together: a
 * generic cell rate
 * (GCRA) limiter, one 64-bit "theoretical arrival time" per address. An address may start
 * `burst` at once, then one every window / burst. IPv6 clients are counted per /64, the block
 * one host usually holds, so rotating through its addresses gains nothing. The table is
 * bounded: an idle entry (its time in the past) is as good as none and is reused; when every
 * entry is busy the least busy one is dropped. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "control/service_internal.h"

struct reglimit_entry {
    uint8_t key[16];
    int64_t tat; /* monotonic us; <= now: the address may start per_minute at once */
};

struct reglimit {
    pthread_mutex_t mu;
    int64_t interval;  /* us between registrations in the long run */
    int64_t tolerance; /* how far ahead of now tat may run: the burst */
    struct reglimit_entry *v;
    size_t n, max;
};

struct reglimit *control__reglimit_new(unsigned burst, int64_t window_us, size_t max_sources)
{
    struct reglimit *l;

    if (burst == 0 || window_us <= 0 || max_sources == 0)
        return NULL;
    l = hs_xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    l->interval = window_us / burst > 0 ? window_us / burst : 1;
    l->tolerance = l->interval * (int64_t)(burst - 1);
    l->v = hs_xcalloc(max_sources, sizeof(*l->v));
    l->max = max_sources;
    return l;
}

void control__reglimit_free(struct reglimit *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l->v);
    free(l);
}

/* IPv4 (mapped) whole; IPv6 by its /64. */
static void source_key(const uint8_t ip[16], uint8_t key[16])
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    memcpy(key, ip, 16);
    if (memcmp(ip, mapped, sizeof(mapped)) != 0)
        memset(key + 8, 0, 8);
}

/* Under mu: the entry of key, made (or taken over from the least busy) when absent. */
static struct reglimit_entry *entry_for(struct reglimit *l, const uint8_t key[16],
                                        int64_t now)
{
    struct reglimit_entry *idle = NULL, *least = NULL;

    for (size_t i = 0; i < l->n; i++) {
        struct reglimit_entry *e = &l->v[i];
        if (memcmp(e->key, key, 16) == 0)
            return e;
        if (e->tat <= now && !idle)
            idle = e;
        if (!least || e->tat < least->tat)
            least = e;
    }
    if (!idle && l->n < l->max)
        idle = &l->v[l->n++];
    if (!idle)
        idle = least;
    memcpy(idle->key, key, 16);
    idle->tat = now;
    return idle;
}

unsigned control__reglimit_take(struct reglimit *l, const uint8_t ip[16], int64_t now)
{
    struct reglimit_entry *e;
    uint8_t key[16];
    int64_t tat, wait;

    if (!l)
        return 0;
    source_key(ip, key);
    pthread_mutex_lock(&l->mu);
    e = entry_for(l, key, now);
    tat = e->tat > now ? e->tat : now;
    wait = tat - now - l->tolerance;
    if (wait <= 0)
        e->tat = tat + l->interval;
    pthread_mutex_unlock(&l->mu);
    if (wait <= 0)
        return 0;
    return (unsigned)((wait + HS_USEC_PER_SEC - 1) / HS_USEC_PER_SEC);
}
