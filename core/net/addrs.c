/* Connections per client address, for the front door and the DERP relay: one address may
 * hold only so many, so that one host cannot take every slot of a total. IPv6 clients are
 * counted per /64, the block one host is usually given (it could otherwise open each
 * connection from a fresh address). Proxies listed in trusted_proxies are not counted:
 * every client behind them shares their address. A mutex guards the table: the relay takes
 * on the front door's thread and gives back on its own. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config/config.h"
#include "net/net.h"

#define ADDR_BUCKETS 4096 /* a power of two */

struct net_addr {
    struct net_addr *next;
    uint8_t key[16];
    uint32_t n;
};

struct net_addrs {
    unsigned cap;               /* connections per address; 0: no cap */
    pthread_mutex_t mu;         /* guards the buckets and their counts */
    struct ip_prefix *trusted;
    size_t ntrusted;
    /* Keyed (SipHash): a client cannot choose addresses that pile into one bucket. */
    uint8_t seed[crypto_shorthash_KEYBYTES];
    struct net_addr *buckets[ADDR_BUCKETS];
};

/* trusted_proxies holds addresses and networks (checked when the config loaded). */
static int trusted_parse(const char *s, struct ip_prefix *out)
{
    char text[INET6_ADDRSTRLEN + 8];

    if (strchr(s, '/'))
        return config_parse_prefix(s, out);
    snprintf(text, sizeof(text), "%s/%d", s, strchr(s, ':') ? 128 : 32);
    return config_parse_prefix(text, out);
}

struct net_addrs *net_addrs_new(const struct hs_strv *trusted, unsigned per_address)
{
    struct net_addrs *a = hs_xcalloc(1, sizeof(*a));

    a->cap = per_address;
    pthread_mutex_init(&a->mu, NULL);
    a->trusted = hs_xcalloc(trusted->n + 1, sizeof(*a->trusted));
    for (size_t i = 0; i < trusted->n; i++)
        if (trusted_parse(trusted->v[i], &a->trusted[a->ntrusted]) == 0)
            a->ntrusted++;
    crypto_shorthash_keygen(a->seed);
    return a;
}

void net_addrs_free(struct net_addrs *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < ADDR_BUCKETS; i++)
        while (a->buckets[i]) {
            struct net_addr *e = a->buckets[i];
            a->buckets[i] = e->next;
            free(e);
        }
    pthread_mutex_destroy(&a->mu);
    free(a->trusted);
    free(a);
}

/* The address as 4 or 16 bytes of family; IPv4 in an IPv6 socket is IPv4. */
static int addr_bytes(const struct sockaddr_storage *sa, uint8_t out[16])
{
    if (sa->ss_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return AF_INET;
    }
    if (sa->ss_family != AF_INET6)
        return -1;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
        memcpy(out, a6->s6_addr + 12, 4);
        return AF_INET;
    }
    memcpy(out, a6->s6_addr, 16);
    return AF_INET6;
}

static bool prefix_has(const struct ip_prefix *p, int family, const uint8_t *addr)
{
    unsigned whole = p->bits / 8, rest = p->bits % 8;

    if (p->family != family || memcmp(p->addr, addr, whole) != 0)
        return false;
    return rest == 0 || ((p->addr[whole] ^ addr[whole]) & (0xff00u >> rest)) == 0;
}

/* What is counted: an IPv4 address (mapped into IPv6 space), or an IPv6 /64. */
static void count_key(int family, const uint8_t *addr, uint8_t key[16])
{
    memset(key, 0, 16);
    if (family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, addr, 4);
    } else {
        memcpy(key, addr, 8);
    }
}

static struct net_addr **bucket(struct net_addrs *a, const uint8_t key[16])
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, key, 16, a->seed);
    memcpy(&v, h, sizeof(v));
    return &a->buckets[v & (ADDR_BUCKETS - 1)];
}

static bool is_trusted(const struct net_addrs *a, int family, const uint8_t *addr)
{
    for (size_t i = 0; i < a->ntrusted; i++)
        if (prefix_has(&a->trusted[i], family, addr))
            return true;
    return false;
}

bool net_addrs_trusted(const struct net_addrs *a, const struct sockaddr_storage *sa)
{
    uint8_t addr[16];
    int family = addr_bytes(sa, addr);

    return family >= 0 && is_trusted(a, family, addr);
}

/* Under mu: the count of key, made when absent; NULL when it is full. */
static struct net_addr *count_of(struct net_addrs *a, const uint8_t key[16])
{
    struct net_addr **b = bucket(a, key), *e;

    for (e = *b; e && memcmp(e->key, key, 16) != 0; e = e->next)
        ;
    if (e && e->n >= a->cap)
        return NULL;
    if (!e) {
        e = hs_xcalloc(1, sizeof(*e));
        memcpy(e->key, key, 16);
        e->next = *b;
        *b = e;
    }
    return e;
}

int net_addrs_take(struct net_addrs *a, const struct sockaddr_storage *sa,
                   struct net_addr **slot)
{
    uint8_t addr[16], key[16];
    struct net_addr *e;
    int family = addr_bytes(sa, addr);

    *slot = NULL;
    if (a->cap == 0 || family < 0 || is_trusted(a, family, addr))
        return 0;
    count_key(family, addr, key);
    pthread_mutex_lock(&a->mu);
    if ((e = count_of(a, key)))
        e->n++;
    pthread_mutex_unlock(&a->mu);
    if (!e)
        return -EMFILE;
    *slot = e;
    return 0;
}

void net_addrs_put(struct net_addrs *a, struct net_addr *slot)
{
    struct net_addr **p;

    if (!slot)
        return;
    pthread_mutex_lock(&a->mu);
    if (--slot->n == 0) {
        for (p = bucket(a, slot->key); *p != slot; p = &(*p)->next)
            ;
        *p = slot->next;
        free(slot);
    }
    pthread_mutex_unlock(&a->mu);
}
