/* Aliases, ports and protocols as written in a policy (tailscale.com/kb/1337). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

int pol__err(char *err, size_t errsize, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

const struct pol_group *pol__group(const struct policy *p, const char *name)
{
    for (size_t i = 0; i < p->ngroups; i++) {
        if (strcmp(p->groups[i].name, name) == 0)
            return &p->groups[i];
    }
    return NULL;
}

const struct pol_tagowner *pol__tagowner(const struct policy *p, const char *tag)
{
    for (size_t i = 0; i < p->ntags; i++) {
        if (strcmp(p->tags[i].tag, tag) == 0)
            return &p->tags[i];
    }
    return NULL;
}

static const struct pol_host *host(const struct policy *p, const char *name)
{
    for (size_t i = 0; i < p->nhosts; i++) {
        if (strcmp(p->hosts[i].name, name) == 0)
            return &p->hosts[i];
    }
    return NULL;
}

static const struct {
    const char *name;
    uint8_t kind;
} autogroups[] = {
    { "autogroup:member", PA_MEMBER },     { "autogroup:tagged", PA_TAGGED },
    { "autogroup:self", PA_SELF },         { "autogroup:internet", PA_INTERNET },
    { "autogroup:danger-all", PA_DANGER_ALL },
};

static int parse_autogroup(const char *s, struct pol_alias *a, char *err, size_t errsize)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(autogroups); i++) {
        if (strcmp(s, autogroups[i].name) == 0) {
            a->kind = autogroups[i].kind;
            return 0;
        }
    }
    return pol__err(err, errsize, "autogroup %s is not supported", s + strlen("autogroup:"));
}

int pol__parse_alias(const struct policy *p, const char *s, struct pol_alias *a, char *err,
                     size_t errsize)
{
    const struct pol_host *h;

    *a = (struct pol_alias){ 0 };
    if (strcmp(s, "*") == 0) {
        a->kind = PA_STAR;
        return 0;
    }
    if (hs_has_prefix(s, "autogroup:"))
        return parse_autogroup(s, a, err, errsize);
    if (hs_has_prefix(s, "group:")) {
        if (!s[strlen("group:")])
            return pol__err(err, errsize, "invalid group \"%s\"", s);
        a->group = pol__group(p, s); /* NULL: an identity provider's group */
        a->kind = PA_GROUP;
    } else if (hs_has_prefix(s, "tag:")) {
        if (!pol__tagowner(p, s))
            return pol__err(err, errsize, "tag not found: \"%s\"", s);
        a->kind = PA_TAG;
    } else if (hs_has_prefix(s, "user:")) {
        /* "user:*@example.com": every user with an address at that domain. */
        const char *u = s + strlen("user:");
        if (!*u || (u[0] == '*' && (u[1] != '@' || !u[2])) || (u[0] != '*' && strchr(u, '*')))
            return pol__err(err, errsize, "invalid user alias \"%s\"", s);
        a->kind = PA_USER;
    } else if ((h = host(p, s))) {
        a->kind = PA_HOST;
        a->ent = h->ent;
    } else if (pol__parse_prefix(s, false, &a->ent) == 0) {
        a->kind = PA_PREFIX;
    } else if (*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789@._+-") == strlen(s)) {
        a->kind = PA_USER; /* "alice@example.com", "alice@", or a 0.22-style bare "alice" */
    } else {
        return pol__err(err, errsize, "invalid alias \"%s\"", s);
    }
    a->name = hs_strdup(s);
    return 0;
}

void pol__alias_fini(struct pol_alias *a)
{
    free(a->name);
    a->name = NULL;
}

static int parse_port(const char *s, size_t n, const char *whole, bool first, uint16_t *out,
                      char *err, size_t errsize)
{
    char buf[8];
    uint64_t v;

    if (n == 0 || n >= sizeof(buf))
        return pol__err(err, errsize, "port range \"%s\": invalid %s integer", whole,
                        first ? "first" : "last");
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (hs_parse_u64(buf, 65535, &v) < 0)
        return pol__err(err, errsize, "port range \"%s\": invalid %s integer", whole,
                        first ? "first" : "last");
    *out = (uint16_t)v;
    return 0;
}

static int parse_range(const char *s, size_t n, struct pol_ports *r, char *err, size_t errsize)
{
    char whole[64];
    const char *dash = memchr(s, '-', n);
    int rc;

    snprintf(whole, sizeof(whole), "%.*s", (int)n, s);
    if (n == 1 && *s == '*') {
        *r = (struct pol_ports){ 0, 65535 };
        return 0;
    }
    if ((rc = parse_port(s, dash ? (size_t)(dash - s) : n, whole, true, &r->first, err,
                         errsize)) < 0)
        return rc;
    r->last = r->first;
    if (dash && (rc = parse_port(dash + 1, n - (size_t)(dash - s) - 1, whole, false, &r->last,
                                 err, errsize)) < 0)
        return rc;
    if (r->first == 0)
        return pol__err(err, errsize,
                        "port range \"%s\": first port must be >0, or use '*' for wildcard",
                        whole);
    if (r->last < r->first)
        return pol__err(err, errsize, "port range \"%s\": last port is before the first", whole);
    return 0;
}

int pol__parse_ports(const char *s, struct pol_ports **out, size_t *n, char *err, size_t errsize)
{
    struct pol_ports *v = NULL;
    size_t count = 0;
    int rc = 0;

    for (const char *p = s;; ) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (count == 64) {
            rc = pol__err(err, errsize, "ports \"%s\": too many ranges", s);
            break;
        }
        v = hs_xrealloc(v, (count + 1) * sizeof(*v));
        if ((rc = parse_range(p, len, &v[count], err, errsize)) < 0)
            break;
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

static const struct {
    const char *name;
    uint8_t num;
} protos[] = {
    { "icmp", 1 },  { "igmp", 2 }, { "ipv4", 4 },  { "ip-in-ip", 4 },  { "tcp", 6 },
    { "egp", 8 },   { "igp", 9 },  { "udp", 17 },  { "gre", 47 },      { "esp", 50 },
    { "ah", 51 },   { "ipv6-icmp", 58 }, { "sctp", 132 }, { "fc", 133 },
};

int pol__parse_proto(const char *s, uint8_t *out)
{
    uint64_t v;

    for (size_t i = 0; i < HS_ARRAY_LEN(protos); i++) {
        if (strcasecmp(s, protos[i].name) == 0) {
            *out = protos[i].num;
            return 0;
        }
    }
    if (!*s || (s[0] == '0') || hs_parse_u64(s, 255, &v) < 0)
        return -EINVAL;
    *out = (uint8_t)v;
    return 0;
}

bool pol__string_list(const json_t *v)
{
    size_t k;
    json_t *item;

    if (!v || json_is_null(v))
        return true;
    if (!json_is_array(v))
        return false;
    json_array_foreach(v, k, item) {
        if (!json_is_string(item))
            return false;
    }
    return true;
}

int pol__split_alias_port(const char *s, char *alias, size_t asize, const char **port)
{
    const char *colon;
    size_t n;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        n = (size_t)(close - s - 1);
        colon = close + 1;
        s++;
    } else {
        if (!(colon = strrchr(s, ':')))
            return -EINVAL;
        n = (size_t)(colon - s);
    }
    if (n == 0 || n >= asize)
        return -EINVAL;
    memcpy(alias, s, n);
    alias[n] = '\0';
    *port = colon + 1;
    return 0;
}
