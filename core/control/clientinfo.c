/* What a client reports about itself (Hostinfo, Endpoints), cut down to what we store and
 * send to its peers. Every byte of it is copied into each peer's maps and, for a pending
 * registration, kept in the database before anyone vouched for the client: the limits
 * below bound both. Tailscale's client itself sends a few KiB at most. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "control/service_internal.h"

/* Hostinfo.Services kinds a peer needs: the PeerAPI ports (Taildrop, peer DNS). The rest is
 * the port list a client sends only when asked to (CollectServices, which we never set). */
static bool service_needed(const json_t *svc)
{
    const char *proto = json_string_value(json_object_get(svc, "Proto"));
    return proto && hs_has_prefix(proto, "peerapi");
}

/* A shallow copy of hi with only the needed Services (hi itself is left alone). */
static json_t *without_port_list(const json_t *hi)
{
    json_t *copy = json_copy((json_t *)hi), *keep = json_array(), *svc;
    size_t i;

    json_array_foreach(json_object_get(hi, "Services"), i, svc) {
        if (service_needed(svc))
            json_array_append(keep, svc);
    }
    json_object_set_new(copy, "Services", keep);
    return copy;
}

int control__hostinfo_text(const json_t *hi, char **out, size_t *len)
{
    json_t *trimmed;
    char *text;
    size_t n;

    if (!json_is_object(hi))
        return -EINVAL;
    text = hs_json_dump(hi, JSON_COMPACT);
    n = strlen(text);
    if (n > CONTROL_HOSTINFO_MAX && json_is_array(json_object_get(hi, "Services"))) {
        free(text);
        trimmed = without_port_list(hi);
        text = hs_json_dump(trimmed, JSON_COMPACT);
        json_decref(trimmed);
        n = strlen(text);
    }
    if (n > CONTROL_HOSTINFO_MAX) {
        free(text);
        if (len)
            *len = n;
        return -E2BIG;
    }
    *out = text;
    if (len)
        *len = n;
    return 0;
}

/* Hostinfo fields the client sends again with every map request: a pending registration need
 * not keep them (tailcfg.Hostinfo: the port list, network conditions, announced routes, SSH
 * host keys). */
static const char *const resent_fields[] = { "Services", "NetInfo", "RoutableIPs",
                                             "SSH_HostKeys" };

int control__hostinfo_pending(const json_t *hi, char **out, size_t *len)
{
    json_t *copy;
    char *text;
    size_t n;

    if (!json_is_object(hi))
        return -EINVAL;
    copy = json_copy((json_t *)hi);
    for (size_t i = 0; i < HS_ARRAY_LEN(resent_fields); i++)
        json_object_del(copy, resent_fields[i]);
    text = hs_json_dump(copy, JSON_COMPACT);
    json_decref(copy);
    n = strlen(text);
    if (len)
        *len = n;
    if (n > CONTROL_PENDING_HOSTINFO_MAX) {
        free(text);
        return -E2BIG;
    }
    *out = text;
    return 0;
}

/* "a.b.c.d:port" or "[v6]:port" (a zone is not allowed: it means nothing to a peer). */
static bool endpoint_valid(const char *t)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(t, ':'), *p;
    unsigned long port = 0;
    unsigned char addr[16];
    size_t hl;

    if (strlen(t) > CONTROL_ENDPOINT_TEXT_MAX || !colon || !colon[1] || strlen(colon + 1) > 5)
        return false;
    for (p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port == 0 || port > 65535)
        return false;
    hl = (size_t)(colon - t);
    if (hl >= 2 && t[0] == '[' && t[hl - 1] == ']') {
        if (hl - 2 >= sizeof(host))
            return false;
        memcpy(host, t + 1, hl - 2);
        host[hl - 2] = '\0';
        return inet_pton(AF_INET6, host, addr) == 1;
    }
    if (hl >= sizeof(host))
        return false;
    memcpy(host, t, hl);
    host[hl] = '\0';
    return inet_pton(AF_INET, host, addr) == 1;
}

char *control__endpoints_text(const json_t *ep, size_t *dropped)
{
    json_t *keep = json_array(), *v;
    size_t i, bad = 0;
    char *text;

    json_array_foreach(ep, i, v) {
        const char *t = json_string_value(v);
        if (!t || !endpoint_valid(t) || json_array_size(keep) >= CONTROL_ENDPOINTS_MAX) {
            bad++;
            continue;
        }
        json_array_append(keep, v);
    }
    text = hs_json_dump(keep, JSON_COMPACT);
    json_decref(keep);
    if (dropped)
        *dropped = bad;
    return text;
}

bool control__log_due(int64_t *last)
{
    int64_t now = hs_monotonic_us(), was = __atomic_load_n(last, __ATOMIC_RELAXED);

    return (was == 0 || now - was >= CONTROL_REFUSAL_LOG_EVERY_US) &&
           __atomic_compare_exchange_n(last, &was, now, false, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED);
}
