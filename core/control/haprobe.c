/* HA health probes (node.routes.ha): a subnet router whose map stream stays open but which no
 * longer works (hung, its network gone one way) would keep its routes' primary role forever,
 * since only a closed stream makes it offline. So every probe_interval each online router that
 * shares a route with another online router is sent a PingRequest on its stream: a URL it must
 * fetch (HEAD) within probe_timeout, over its Noise connection (URLIsNoise). The client sends
 * its Noise requests to "https://" and its control URL's host, one connection per host, so a
 * URL on that host reaches the connection that carries the map stream, and the answer the
 * replica that asked, whatever a load balancer in front would do with a new connection. Only
 * routers with a stream here are asked; among replicas the state shares the verdicts (HEAD
 * /machine/ping-response on the front door, as headscale's, is answered as well). The
 * cycle's verdicts go to the state
 * together, so one election sees them all; a router that stayed silent is unhealthy and loses
 * its primaries to a healthy one until it answers again or reconnects (reference §6).
 *
 * A silence is only held against a session that was already asked in the previous cycle: a
 * node that just reconnected may still be applying its map. If any probe of a cycle has to be
 * discounted that way, the whole cycle is dropped: half a picture could elect a router whose
 * reachability is unknown. The ping id (128 random bits) is the answer's only credential, as
 * with headscale; ids are compared in constant time and die with their cycle.
 *
 * Everything but control_service_ping_answered() runs on the map thread. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/service_internal.h"

#define PING_PATH "/machine/ping-response?id="

static void probe_clear(struct haprobe *p)
{
    free(p->pings);
    p->pings = NULL;
    p->npings = 0;
    p->verdict_at = 0;
}

/* Whether node id's session epoch was probed in the previous cycle. */
static bool was_probed(const struct haprobe *p, uint64_t id, uint64_t epoch)
{
    for (size_t i = 0; i < p->nseen; i++) {
        if (p->seen[i].id == id)
            return p->seen[i].epoch == epoch;
    }
    return false;
}

/* One PingRequest to every open session of the node; whether any took it. */
static bool send_ping(struct control_service *s, uint64_t node_id, const char *url)
{
    json_t *msg = json_pack("{s:b, s:{s:s, s:b}}", "KeepAlive", 1, "PingRequest", "URL", url,
                            "URLIsNoise", 1);
    struct hs_buf raw, z;
    bool sent = false;

    hs_buf_init(&raw, 256);
    hs_buf_init(&z, 256);
    mapper_encode(msg, false, &raw);
    mapper_encode(msg, true, &z);
    pthread_mutex_lock(&s->mu);
    for (struct session *x = s->sessions; x; x = x->next) {
        if (x->node_id != node_id || x->opening) /* its first map must go first */
            continue;
        control_stream_write(s->ctl, x->conn_id, x->stream_id, x->zstd ? z.data : raw.data,
                             x->zstd ? z.len : raw.len);
        sent = true;
    }
    pthread_mutex_unlock(&s->mu);
    hs_buf_free(&raw);
    hs_buf_free(&z);
    json_decref(msg);
    return sent;
}

/* The pings of a new cycle, one per HA router connected here, with what was known of its
 * session; the routers asked are remembered for the next cycle's stability check. */
static void cycle_prepare(struct control_service *s, struct haprobe *p, const uint64_t *ids,
                          size_t n)
{
    probe_clear(p); /* a cycle with no one to ask left its empty list */
    p->pings = hs_xcalloc(n ? n : 1, sizeof(*p->pings));
    state_rdlock(s->state);
    for (size_t i = 0; i < n; i++) {
        const struct state_node *sn = state_node_by_id(s->state, ids[i]);
        struct ha_ping *pg = &p->pings[p->npings];
        uint8_t rnd[16];

        if (!sn || !sn->online)
            continue;
        randombytes_buf(rnd, sizeof(rnd));
        hs_hex_encode(rnd, sizeof(rnd), pg->id);
        pg->node_id = ids[i];
        pg->epoch = sn->session_epoch;
        pg->stable = was_probed(p, ids[i], sn->session_epoch);
        p->npings++;
    }
    state_unlock(s->state);
    p->seen = hs_xrealloc(p->seen, (p->npings ? p->npings : 1) * sizeof(*p->seen));
    p->nseen = p->npings;
    for (size_t i = 0; i < p->npings; i++)
        p->seen[i] = (struct ha_seen){ .id = p->pings[i].node_id, .epoch = p->pings[i].epoch };
}

/* The host of server_url ("[v6]" kept in brackets), as *len bytes at the returned pointer. */
static const char *url_host(const char *url, int *len)
{
    const char *h = strstr(url, "://"), *end;

    h = h ? h + 3 : url;
    end = *h == '[' ? strchr(h, ']') : NULL;
    end = end ? end + 1 : h + strcspn(h, ":/?#");
    *len = (int)(end - h);
    return h;
}

static void cycle_start(struct control_service *s, int64_t now)
{
    struct haprobe *p = &s->probe;
    int hlen;
    const char *host = url_host(s->cfg->server_url, &hlen);
    size_t n, cap = sizeof("https://") + (size_t)hlen + sizeof(PING_PATH) + HAPROBE_ID_LEN;
    uint64_t *ids = state_ha_nodes(s->state, &n);
    char *url = hs_xcalloc(1, cap);

    pthread_mutex_lock(&p->mu);
    cycle_prepare(s, p, ids, n);
    p->verdict_at = p->npings ? now + s->cfg->node_routes_ha_probe_timeout_us : 0;
    pthread_mutex_unlock(&p->mu);
    /* The list is fixed from here on: only the map thread changes it. */
    for (size_t i = 0; i < p->npings; i++) {
        snprintf(url, cap, "https://%.*s%s%s", hlen, host, PING_PATH, p->pings[i].id);
        if (!send_ping(s, p->pings[i].node_id, url))
            p->pings[i].unsent = true; /* its stream is opening or closing: no verdict */
    }
    free(url);
    free(ids);
}

/* Read lock held: the verdict on one ping; false with *defer set when the cycle must be
 * dropped, false with *skip set when the node left candidacy. */
static bool ping_verdict(struct control_service *s, const struct ha_ping *pg, bool *defer,
                         bool *skip)
{
    const struct state_node *sn = state_node_by_id(s->state, pg->node_id);

    if (pg->answered)
        return true;
    if (!sn || !sn->online || pg->unsent) {
        *skip = true;
        return true;
    }
    if (sn->session_epoch != pg->epoch || !pg->stable)
        *defer = true;
    else if (!sn->unhealthy)
        log_warnx("control: HA router node %llu left a health probe unanswered for %lld ms: "
                  "its routes go to another router", (unsigned long long)pg->node_id,
                  (long long)(s->cfg->node_routes_ha_probe_timeout_us / 1000));
    return false;
}

static void cycle_judge(struct control_service *s)
{
    struct haprobe *p = &s->probe;
    uint64_t *ids = hs_xcalloc(p->npings + 1, sizeof(*ids));
    bool *healthy = hs_xcalloc(p->npings + 1, sizeof(*healthy)), defer = false;
    size_t n = 0;

    pthread_mutex_lock(&p->mu);
    state_rdlock(s->state);
    for (size_t i = 0; i < p->npings; i++) {
        bool skip = false, ok = ping_verdict(s, &p->pings[i], &defer, &skip);
        if (!skip) {
            ids[n] = p->pings[i].node_id;
            healthy[n++] = ok;
        }
    }
    state_unlock(s->state);
    probe_clear(p); /* late answers now find no ping: 404 */
    pthread_mutex_unlock(&p->mu);
    if (!defer && n)
        state_set_health(s->state, ids, healthy, n);
    free(ids);
    free(healthy);
}

void haprobe_tick(struct control_service *s, int64_t now)
{
    struct haprobe *p = &s->probe;
    int64_t interval = s->cfg->node_routes_ha_probe_interval_us;

    if (interval <= 0)
        return;
    if (p->verdict_at && now >= p->verdict_at)
        cycle_judge(s);
    if (now >= p->next_cycle && !p->verdict_at) {
        p->next_cycle = now + interval;
        cycle_start(s, now);
    }
}

void haprobe_init(struct haprobe *p)
{
    *p = (struct haprobe){ 0 };
    pthread_mutex_init(&p->mu, NULL);
}

void haprobe_free(struct haprobe *p)
{
    probe_clear(p);
    free(p->seen);
    pthread_mutex_destroy(&p->mu);
}

bool control_service_ping_answered(struct control_service *s, const char *id)
{
    struct haprobe *p = &s->probe;
    bool found = false;

    if (!id || strlen(id) != HAPROBE_ID_LEN)
        return false;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->npings && !found; i++) {
        if (sodium_memcmp(p->pings[i].id, id, HAPROBE_ID_LEN) == 0 && !p->pings[i].answered)
            found = p->pings[i].answered = true;
    }
    pthread_mutex_unlock(&p->mu);
    return found;
}
