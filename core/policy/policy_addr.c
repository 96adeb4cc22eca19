/* Addresses, prefixes and ranges in one 128-bit space (IPv4 mapped into ::ffff:0:0/96), and
 * their text as Tailscale writes it in filters. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

#define V4_BASE ((pol_u128)0xffff << 32)

static pol_u128 load_be(const uint8_t *b, size_t n)
{
    pol_u128 v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | b[i];
    return v;
}

int pol__parse_ip(const char *s, pol_u128 *out, bool *v4)
{
    uint8_t b[16];

    if (inet_pton(AF_INET, s, b) == 1) {
        *out = V4_BASE | load_be(b, 4);
        *v4 = true;
        return 0;
    }
    if (strchr(s, '%') || inet_pton(AF_INET6, s, b) != 1)
        return -EINVAL;
    *out = load_be(b, 16);
    *v4 = false;
    return 0;
}

static pol_u128 host_mask(int hostbits)
{
    return hostbits >= 128 ? ~(pol_u128)0 : (((pol_u128)1 << hostbits) - 1);
}

int pol__parse_prefix(const char *s, bool loose, struct pol_ent *e)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    uint64_t bits;
    int width;
    pol_u128 a, m;
    bool v4;

    if (n >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, s, n);
    ip[n] = '\0';
    if (pol__parse_ip(ip, &a, &v4) < 0)
        return -EINVAL;
    width = v4 ? 32 : 128;
    bits = (uint64_t)width;
    if (slash && (!slash[1] || (slash[1] == '0' && slash[2]) ||
                  hs_parse_u64(slash + 1, (uint64_t)width, &bits) < 0))
        return -EINVAL;
    m = host_mask(width - (int)bits);
    if ((a & m) && !loose)
        return -EINVAL;
    a &= ~m;
    *e = (struct pol_ent){ .lo = a, .hi = a | m, .bits = (uint8_t)bits, .v4 = v4,
                           .kind = (int)bits == width ? PE_ADDR : PE_PREFIX };
    return 0;
}

void pol__addr_text(pol_u128 a, bool v4, char *out, size_t size)
{
    uint8_t b[16];

    for (int i = 15; i >= 0; i--, a >>= 8)
        b[i] = (uint8_t)a;
    if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? b + 12 : b, out, (socklen_t)size))
        hs_strlcpy(out, "?", size);
}

void pol__ent_text(const struct pol_ent *e, char *out, size_t size)
{
    char lo[48], hi[48];

    pol__addr_text(e->lo, e->v4, lo, sizeof(lo));
    switch (e->kind) {
    case PE_STAR:
        hs_strlcpy(out, "*", size);
        break;
    case PE_ADDR:
        hs_strlcpy(out, lo, size);
        break;
    case PE_PREFIX:
        snprintf(out, size, "%s/%u", lo, e->bits);
        break;
    default:
        pol__addr_text(e->hi, e->v4, hi, sizeof(hi));
        snprintf(out, size, "%s-%s", lo, hi);
    }
}

bool pol__ent_contains(const struct pol_ent *e, pol_u128 a)
{
    return e->lo <= a && a <= e->hi;
}

bool pol__ent_overlaps(const struct pol_ent *a, const struct pol_ent *b)
{
    return a->lo <= b->hi && b->lo <= a->hi;
}

void pol__ents_push(struct pol_ents *s, const struct pol_ent *e)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        s->v = hs_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = *e;
}

void pol__ents_free(struct pol_ents *s)
{
    free(s->v);
    *s = (struct pol_ents){ 0 };
}

struct pol_ent pol__ent_addr(pol_u128 a, bool v4)
{
    return (struct pol_ent){ .lo = a, .hi = a, .kind = PE_ADDR, .bits = v4 ? 32 : 128, .v4 = v4 };
}

struct pol_ent pol__ent_range(pol_u128 lo, pol_u128 hi, bool v4)
{
    return (struct pol_ent){ .lo = lo, .hi = hi, .kind = PE_RANGE, .v4 = v4 };
}

static pol_u128 v4(unsigned a, unsigned b, unsigned c, unsigned d)
{
    return V4_BASE | (pol_u128)(a << 24 | b << 16 | c << 8 | d);
}

/* The CGNAT /10 without 100.115.92.0/23 (which Tailscale keeps for its own services), and
 * the tailnet's ULA /48. */
void pol__star_ranges(struct pol_ents *out)
{
    struct pol_ent ula;

    pol__ents_push(out, &(struct pol_ent){ .lo = v4(100, 64, 0, 0), .hi = v4(100, 115, 91, 255),
                                           .kind = PE_RANGE, .v4 = true });
    pol__ents_push(out, &(struct pol_ent){ .lo = v4(100, 115, 94, 0),
                                           .hi = v4(100, 127, 255, 255), .kind = PE_RANGE,
                                           .v4 = true });
    pol__parse_prefix("fd7a:115c:a1e0::/48", false, &ula);
    pol__ents_push(out, &ula);
}

/* What Tailscale calls the internet: IPv4 without the private, CGNAT and link-local blocks
 * (loopback and multicast stay in, as in its filters), and IPv6 global unicast (2000::/3). */
void pol__internet_ranges(struct pol_ents *out)
{
    static const unsigned holes[][8] = {
        { 10, 0, 0, 0, 10, 255, 255, 255 },     { 100, 64, 0, 0, 100, 127, 255, 255 },
        { 169, 254, 0, 0, 169, 254, 255, 255 }, { 172, 16, 0, 0, 172, 31, 255, 255 },
        { 192, 168, 0, 0, 192, 168, 255, 255 },
    };
    pol_u128 lo = v4(0, 0, 0, 0);
    struct pol_ent g;

    for (size_t i = 0; i < HS_ARRAY_LEN(holes); i++) {
        const unsigned *h = holes[i];
        pol_u128 start = v4(h[0], h[1], h[2], h[3]);
        if (start > lo)
            pol__ents_push(out, &(struct pol_ent){ .lo = lo, .hi = start - 1, .kind = PE_RANGE,
                                                   .v4 = true });
        lo = v4(h[4], h[5], h[6], h[7]) + 1;
    }
    pol__ents_push(out, &(struct pol_ent){ .lo = lo, .hi = v4(255, 255, 255, 255),
                                           .kind = PE_RANGE, .v4 = true });
    pol__parse_prefix("2000::/3", false, &g);
    g.kind = PE_RANGE;
    pol__ents_push(out, &g);
}

bool pol__is_exit_route(const struct pol_ent *e)
{
    return e->kind == PE_PREFIX && e->bits == 0;
}
