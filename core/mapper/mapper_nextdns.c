/* mapper: NextDNS resolvers made per node, as headscale 0.29 does (mapper.go
 * generateDNSConfig): a policy nodeAttr "nextdns:<profile>" points the node's NextDNS
 * resolvers at that profile, and unless it has "nextdns:no-device-info" they carry its name,
 * OS and first address as query parameters, so the NextDNS dashboard tells devices apart. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper/mapper_internal.h"

#define NEXTDNS_HOST "https://dns.nextdns.io"
#define NEXTDNS_PROFILE_MAX 64
#define NEXTDNS_URL_MAX 2048

static bool is_nextdns(const char *addr)
{
    size_t n = strlen(NEXTDNS_HOST);

    /* the host itself, not a look-alike such as dns.nextdns.io.example.net */
    return strncmp(addr, NEXTDNS_HOST, n) == 0 &&
           (addr[n] == '\0' || addr[n] == '/' || addr[n] == '?');
}

static bool any_nextdns(const struct dns_settings *d)
{
    for (size_t i = 0; i < d->nameservers.n; i++)
        if (is_nextdns(d->nameservers.v[i]))
            return true;
    for (size_t i = 0; i < d->nsplit; i++)
        for (size_t j = 0; j < d->split[i].nameservers.n; j++)
            if (is_nextdns(d->split[i].nameservers.v[j]))
                return true;
    return false;
}

bool mapper_dns_has_nextdns(const struct mapper *m, struct state *s)
{
    struct mapper__dns_ref ref;
    bool yes = any_nextdns(mapper__dns_take(m, s, &ref));

    mapper__dns_drop(&ref);
    return yes;
}

static bool profile_ok(const char *p)
{
    size_t n = strlen(p);

    return n > 0 && n <= NEXTDNS_PROFILE_MAX &&
           strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* The profile the policy picks: of several, the first in byte order, so the choice does not
 * change from one map to the next. NULL: none. */
static const char *pick_profile(json_t *capmap)
{
    const char *key, *best = NULL;
    json_t *v;

    json_object_foreach(capmap, key, v) {
        const char *p = key + strlen("nextdns:");
        if (strncmp(key, "nextdns:", strlen("nextdns:")) != 0 ||
            strcmp(key, "nextdns:no-device-info") == 0)
            continue;
        if (!profile_ok(p)) {
            log_warnx("mapper: nodeAttr %.80s ignored: a NextDNS profile is 1 to 64 of "
                      "A-Z a-z 0-9 . _ -", key);
            continue;
        }
        if (!best || strcmp(p, best) < 0)
            best = p;
    }
    return best;
}

/* Go's url.QueryEscape: unreserved characters stay, a space is '+', the rest %XX. */
static void query_escape(struct hs_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
            hs_buf_append(b, (const char *)&c, 1);
        else if (c == ' ')
            hs_buf_append(b, "+", 1);
        else
            hs_buf_appendf(b, "%%%02X", c);
    }
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* Go's url.QueryUnescape, leniently: a broken escape is kept as it is. */
static char *query_unescape(const char *s, size_t n)
{
    char *out = hs_xcalloc(n + 1, 1);
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
                   hexval((unsigned char)s[i + 2]) >= 0) {
            out[o++] = (char)(hexval((unsigned char)s[i + 1]) * 16 +
                              hexval((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return out;
}

struct param {
    char *key, *value;
};

static int cmp_param(const void *a, const void *b)
{
    return strcmp(((const struct param *)a)->key, ((const struct param *)b)->key);
}

/* The parameters of addr's query, decoded, into *v (n of them). */
static size_t parse_query(const char *q, struct param **v)
{
    size_t n = 0;

    *v = NULL;
    for (const char *p = q; p && *p;) {
        size_t len = strcspn(p, "&"), klen = strcspn(p, "=&");
        if (len > 0) {
            *v = hs_xrealloc(*v, (n + 1) * sizeof(**v));
            (*v)[n].key = query_unescape(p, klen);
            (*v)[n].value = klen < len ? query_unescape(p + klen + 1, len - klen - 1)
                                       : hs_strdup("");
            n++;
        }
        p += len + (p[len] == '&');
    }
    return n;
}

/* Sets key to value in v, dropping its earlier values (url.Values.Set); v has room. */
static size_t set_param(struct param *v, size_t n, const char *key, const char *value)
{
    size_t w = 0;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].key, key) == 0) {
            free(v[i].key);
            free(v[i].value);
        } else {
            v[w++] = v[i];
        }
    }
    v[w].key = hs_strdup(key);
    v[w].value = hs_strdup(value);
    return w + 1;
}

/* addr with the device parameters set in its query, the others kept; keys sorted as Go's
 * url.Values.Encode writes them (a stable sort keeps repeated keys in order). */
static char *with_device_info(const char *addr, const char *const dev[3][2])
{
    const char *q = strchr(addr, '?');
    struct param *v;
    size_t n = parse_query(q ? q + 1 : NULL, &v);
    struct hs_buf b;
    char *out;

    v = hs_xrealloc(v, (n + 3) * sizeof(*v));
    for (int d = 0; d < 3; d++)
        if (dev[d][1])
            n = set_param(v, n, dev[d][0], dev[d][1]);
    for (size_t i = 1; i < n; i++) /* insertion sort: stable */
        for (size_t j = i; j > 0 && cmp_param(&v[j - 1], &v[j]) > 0; j--) {
            struct param t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    hs_buf_init(&b, NEXTDNS_URL_MAX * 4);
    hs_buf_append(&b, addr, q ? (size_t)(q - addr) : strlen(addr));
    for (size_t i = 0; i < n; i++) {
        hs_buf_append(&b, i ? "&" : "?", 1);
        query_escape(&b, v[i].key, strlen(v[i].key));
        hs_buf_append(&b, "=", 1);
        query_escape(&b, v[i].value, strlen(v[i].value));
        free(v[i].key);
        free(v[i].value);
    }
    free(v);
    out = hs_strndup(b.data ? b.data : "", b.len);
    hs_buf_free(&b);
    return out;
}

static void fix_list(json_t *list, const char *profile, const char *const dev[3][2],
                     bool info)
{
    size_t i;
    json_t *r;

    json_array_foreach(list, i, r) {
        const char *addr = json_string_value(json_object_get(r, "Addr"));
        char prof[sizeof(NEXTDNS_HOST) + NEXTDNS_PROFILE_MAX + 2], *full;
        if (!addr || !is_nextdns(addr) || strlen(addr) > NEXTDNS_URL_MAX)
            continue;
        if (profile) {
            snprintf(prof, sizeof(prof), "%s/%s", NEXTDNS_HOST, profile);
            addr = prof;
        }
        full = info ? with_device_info(addr, dev) : hs_strdup(addr);
        json_object_set_new(r, "Addr", json_string(full));
        free(full);
    }
}

void mapper__nextdns(json_t *dns, const struct state_node *self, json_t *capmap)
{
    const char *profile = pick_profile(capmap);
    bool info = !json_object_get(capmap, "nextdns:no-device-info");
    const char *os = NULL, *ip = NULL;
    json_t *hi = NULL, *routes, *list;
    const char *key;

    if (!self)
        return;
    if (self->n.hostinfo_json)
        hi = json_loads(self->n.hostinfo_json, 0, NULL);
    os = json_string_value(json_object_get(hi, "OS"));
    ip = self->n.ipv4 && *self->n.ipv4 ? self->n.ipv4 : self->n.ipv6;
    {
        const char *const dev[3][2] = { { "device_name", self->n.hostname ? self->n.hostname : "" },
                                        { "device_model", hi ? (os ? os : "") : NULL },
                                        { "device_ip", ip && *ip ? ip : NULL } };
        fix_list(json_object_get(dns, "Resolvers"), profile, dev, info);
        fix_list(json_object_get(dns, "FallbackResolvers"), profile, dev, info);
        routes = json_object_get(dns, "Routes");
        json_object_foreach(routes, key, list)
            fix_list(list, profile, dev, info);
    }
    json_decref(hi);
}
