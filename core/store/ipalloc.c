/* Tailnet address allocation (headscale's db/ip.go rules): one address per family from the
 * configured prefix, never the network or broadcast address, never the ChromeOS VM range
 * 100.115.92.0/23 nor Tailscale's service addresses 100.100.100.100 and fd7a:115c:a1e0::53.
 * Pure functions over the list of addresses in use; the store calls them inside the
 * transaction that inserts the node, and the UNIQUE columns catch a race between replicas. */
#include <arpa/inet.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "store/store_internal.h"

typedef unsigned __int128 u128;

static u128 addr_to_u128(const uint8_t *a, int family)
{
    u128 v = 0;
    int n = family == AF_INET ? 4 : 16;
    for (int i = 0; i < n; i++)
        v = v << 8 | a[i];
    return v;
}

static void u128_to_text(u128 v, int family, char *out, size_t size)
{
    uint8_t a[16];
    int n = family == AF_INET ? 4 : 16;
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        a[i] = (uint8_t)v;
    inet_ntop(family, a, out, (socklen_t)size);
}

static int cmp_u128(const void *a, const void *b)
{
    u128 x = *(const u128 *)a, y = *(const u128 *)b;
    return x < y ? -1 : x > y;
}

static bool is_reserved(u128 v, int family)
{
    static const uint8_t svc6[16] = { 0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, [15] = 0x53 };
    if (family == AF_INET)
        return (v >> 9) == (((u128)100 << 15) | (115 << 7) | (92 >> 1)) || /* 100.115.92.0/23 */
               v == (((u128)100 << 24) | (100 << 16) | (100 << 8) | 100);
    return v == addr_to_u128(svc6, AF_INET6);
}

static bool is_used(u128 v, const u128 *used, size_t n)
{
    return bsearch(&v, used, n, sizeof(*used), cmp_u128) != NULL;
}

static u128 random_offset(u128 span)
{
    u128 r;
    randombytes_buf(&r, sizeof(r));
    return span ? r % span : 0;
}

int store__ip_next(const struct ip_prefix *pfx, bool random, const char *const *used_text,
                   size_t nused, char *out, size_t size)
{
    int width = pfx->family == AF_INET ? 32 : 128;
    u128 base = addr_to_u128(pfx->addr, pfx->family), span, cand, *used;
    size_t n = 0;
    int rc = -ENOSPC;

    if (!pfx->family || pfx->bits >= width - 1)
        return -EINVAL;
    span = width - pfx->bits >= 128 ? ~(u128)0 : ((u128)1 << (width - pfx->bits));
    used = hs_xcalloc(nused ? nused : 1, sizeof(*used));
    for (size_t i = 0; i < nused; i++) {
        uint8_t a[16];
        if (used_text[i] && inet_pton(pfx->family, used_text[i], a) == 1)
            used[n++] = addr_to_u128(a, pfx->family);
    }
    qsort(used, n, sizeof(*used), cmp_u128);
    /* Hosts are base+1 .. base+span-2 (no network, no broadcast). */
    cand = random ? 1 + random_offset(span - 2) : 1;
    for (u128 tries = 0; tries < span - 2 && tries <= n + 2048; tries++) {
        u128 v = base + cand;
        if (!is_used(v, used, n) && !is_reserved(v, pfx->family)) {
            u128_to_text(v, pfx->family, out, size);
            rc = 0;
            break;
        }
        cand = cand + 1 > span - 2 ? 1 : cand + 1;
    }
    free(used);
    return rc;
}
