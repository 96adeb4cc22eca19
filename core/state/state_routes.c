/* state: announced, approved and primary routes, and the autoApprovers write-back (state.h,
 * "routes"; the election of primaries is in state_primary.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "state/state_internal.h"

bool state_route_is_exit(const char *prefix)
{
    return hs_streq(prefix, "0.0.0.0/0") || hs_streq(prefix, "::/0");
}

/* Go's netip.Prefix.Compare, which headscale sorts routes with: family, length, address. */
static int prefix_cmp(const struct ip_prefix *a, const struct ip_prefix *b)
{
    size_t len = a->family == AF_INET ? 4 : 16;

    if (a->family != b->family)
        return a->family == AF_INET ? -1 : 1;
    if (a->bits != b->bits)
        return a->bits < b->bits ? -1 : 1;
    return memcmp(a->addr, b->addr, len);
}

static int text_cmp(const void *pa, const void *pb)
{
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    struct ip_prefix x, y;
    bool okx = config_parse_prefix(a, &x) == 0, oky = config_parse_prefix(b, &y) == 0;

    if (okx && oky)
        return prefix_cmp(&x, &y);
    return okx ? -1 : oky ? 1 : 0;
}

void state_routes_sort(struct hs_strv *v)
{
    if (v->n > 1)
        qsort(v->v, v->n, sizeof(*v->v), text_cmp);
}

int state_routes_normalize(const char *const *in, size_t n, struct hs_strv *out, char *err,
                           size_t errsize)
{
    struct hs_strv v = { 0 };
    struct ip_prefix p;

    for (size_t i = 0; i < n; i++) {
        if (config_parse_prefix(in[i], &p) < 0) {
            snprintf(err, errsize, "invalid route \"%s\": not an IP prefix in CIDR form with "
                                   "the host bits clear (e.g. 10.0.0.0/24)", in[i]);
            hs_strv_free(&v);
            return -EINVAL;
        }
        /* A client needs both exit routes approved to act as an exit node. */
        const char *add[2] = { p.text, NULL };
        if (state_route_is_exit(p.text)) {
            add[0] = "0.0.0.0/0";
            add[1] = "::/0";
        }
        for (size_t k = 0; k < 2 && add[k]; k++)
            if (!hs_strv_contains(&v, add[k]))
                hs_strv_push(&v, add[k]);
    }
    state_routes_sort(&v);
    *out = v;
    return 0;
}

bool state_node_serves(const struct state_node *sn, const char *prefix)
{
    return hs_strv_contains(&sn->serving, prefix);
}

/* Node sn's primaries (the election keeps them with the node), sorted. */
void state_node_primary_routes(struct state *s, const struct state_node *sn,
                               struct hs_strv *out)
{
    struct hs_strv v = { 0 };

    (void)s;
    hs_strv_copy(&v, &sn->primary);
    state_routes_sort(&v);
    for (size_t k = 0; k < v.n; k++)
        hs_strv_push(out, v.v[k]);
    hs_strv_free(&v);
}

/* Write lock held: what the node serves, from what it announces and what is approved. */
void state__node_serving(struct state_node *sn)
{
    hs_strv_free(&sn->serving);
    for (size_t k = 0; k < sn->routes.n; k++) {
        const char *r = sn->routes.v[k];
        if (hs_strv_contains(&sn->n.approved_routes, r) && !hs_strv_contains(&sn->serving, r))
            hs_strv_push(&sn->serving, r);
    }
    if (!sn->serving.n)
        sn->unhealthy = false; /* no longer a router: a stale mark must not outlive that */
}

/* ---- autoApprovers: written back to the store ---- */

/* Read lock held: the stored approved list plus what the policy approves beyond it, or
 * nothing (false) when it approves nothing more. */
static bool wanted_approval(struct state *s, uint64_t id, struct hs_strv *out)
{
    const struct state_node *sn = state_node_by_id(s, id);
    size_t i = sn ? state_net_index(s->net, id) : STATE_NET_NONE, n = 0;
    const char *const *approved;
    bool more = false;

    if (i == STATE_NET_NONE || !sn->routes.n || state_net_all(s->net))
        return false;
    approved = policy_net_approved(s->net->pn, i, &n);
    for (size_t k = 0; k < n; k++) {
        if (hs_strv_contains(&sn->n.approved_routes, approved[k]))
            continue;
        if (!more)
            hs_strv_copy(out, &sn->n.approved_routes);
        more = true;
        hs_strv_push(out, approved[k]);
    }
    return more;
}

/* No lock held (the write's event comes back through on_event, which takes them). */
void state__auto_approve(struct state *s, uint64_t id)
{
    struct store_node v = { 0 };
    bool more;
    int rc;

    pthread_rwlock_rdlock(&s->lock);
    more = wanted_approval(s, id, &v.approved_routes);
    pthread_rwlock_unlock(&s->lock);
    if (!more)
        return;
    state_routes_sort(&v.approved_routes);
    rc = store_node_update(s->st, id, STORE_NODE_BIT(STORE_NODE_APPROVED_ROUTES), &v, NULL);
    if (rc < 0 && rc != -ENOENT)
        log_warnx("routes: node %llu: cannot store the routes autoApprovers approve: %s",
                  (unsigned long long)id, hs_strerror(rc));
    else if (rc == 0)
        log_info("routes: node %llu: routes approved by the policy's autoApprovers",
                 (unsigned long long)id);
    hs_strv_free(&v.approved_routes);
}

/* After a policy change: every node that announces routes. */
void state__auto_approve_all(struct state *s)
{
    uint64_t *ids;
    size_t n = 0;

    pthread_rwlock_rdlock(&s->lock);
    ids = hs_xcalloc(s->nnodes + 1, sizeof(*ids));
    for (size_t i = 0; i < s->nnodes; i++)
        if (s->nodes[i]->routes.n)
            ids[n++] = s->nodes[i]->n.id;
    pthread_rwlock_unlock(&s->lock);
    for (size_t i = 0; i < n; i++)
        state__auto_approve(s, ids[i]);
    free(ids);
}
