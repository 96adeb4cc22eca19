/* GET /api/v1/node/page: one page of the node list, filtered and sorted here, with counts
 * over every node. Ours, not headscale's: the web admin's pages at thousands of nodes must not
 * move and parse the whole list (5,000 nodes are 4 MB of JSON) to show 50 rows or a count.
 *
 * Query: offset, limit (default 50, at most NODE_PAGE_MAX), q (part of the given name, host
 * name or an address, any case), user (an id; tagged nodes are the tags', as in the list),
 * status (online, offline or expired), sort (name, the default, or lastseen: most recent
 * first). Answer: {"nodes": [rows as GET /api/v1/node writes them], "total": the nodes that
 * match, "count": all nodes, "online": all online, "expired": all expired}. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_internal.h"
#include "state/state.h"

#define NODE_PAGE_DEFAULT 50
#define NODE_PAGE_MAX 500

struct page_query {
    const char *q, *status;
    uint64_t user, offset, limit;
    bool by_last_seen;
    int64_t now;
};

static bool has_part(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

static bool expired(const struct state_node *sn, int64_t now)
{
    return sn->n.expiry > 0 && sn->n.expiry < now;
}

static bool matches(const struct state_node *sn, const struct page_query *pq)
{
    const struct store_node *n = &sn->n;

    if (pq->q && *pq->q && !has_part(n->given_name, pq->q) && !has_part(n->hostname, pq->q) &&
        !has_part(n->ipv4, pq->q) && !has_part(n->ipv6, pq->q))
        return false;
    if (pq->user && (n->user_id != pq->user || n->tags.n))
        return false;
    if (hs_streq(pq->status, "online"))
        return sn->online;
    if (hs_streq(pq->status, "offline"))
        return !sn->online;
    if (hs_streq(pq->status, "expired"))
        return expired(sn, pq->now);
    return true;
}

/* qsort_r order of state indices: given name, or last seen (online nodes count as now,
 * most recent first); then id. */
struct order {
    struct state *s;
    bool by_last_seen;
};

static int64_t seen(const struct state_node *sn)
{
    return sn->online ? INT64_MAX : sn->n.last_seen;
}

static int by_order(const void *a, const void *b, void *arg)
{
    const struct order *o = arg;
    const struct state_node *na = state_node_at(o->s, *(const size_t *)a);
    const struct state_node *nb = state_node_at(o->s, *(const size_t *)b);
    int c;

    if (o->by_last_seen)
        c = seen(na) > seen(nb) ? -1 : seen(na) < seen(nb);
    else
        c = strcmp(na->n.given_name ? na->n.given_name : "",
                   nb->n.given_name ? nb->n.given_name : "");
    return c ? c : (na->n.id > nb->n.id) - (na->n.id < nb->n.id);
}

static int parse_query(struct api_call *c, struct page_query *pq)
{
    const char *offset = api_query(c, "offset"), *limit = api_query(c, "limit");
    const char *user = api_query(c, "user"), *sort = api_query(c, "sort");

    *pq = (struct page_query){ .q = api_query(c, "q"), .status = api_query(c, "status"),
                               .limit = NODE_PAGE_DEFAULT, .now = hs_now_us() };
    if (offset && hs_parse_u64(offset, UINT32_MAX, &pq->offset) < 0)
        return api_error(c, 400, "offset \"%s\" is not a number", offset), -EINVAL;
    if (limit && (hs_parse_u64(limit, NODE_PAGE_MAX, &pq->limit) < 0 || pq->limit == 0))
        return api_error(c, 400, "limit \"%s\" is not a number from 1 to %d", limit,
                         NODE_PAGE_MAX), -EINVAL;
    if (user && hs_parse_u64(user, INT64_MAX, &pq->user) < 0)
        return api_error(c, 400, "user \"%s\" is not a user id", user), -EINVAL;
    if (pq->status && *pq->status && !hs_streq(pq->status, "online") &&
        !hs_streq(pq->status, "offline") && !hs_streq(pq->status, "expired"))
        return api_error(c, 400, "status \"%s\" is none of online, offline, expired",
                         pq->status), -EINVAL;
    if (sort && *sort && !hs_streq(sort, "name") && !hs_streq(sort, "lastseen"))
        return api_error(c, 400, "sort \"%s\" is neither name nor lastseen", sort), -EINVAL;
    pq->by_last_seen = hs_streq(sort, "lastseen");
    return 0;
}

static void jw_count(struct api_jw *w, const char *key, size_t n)
{
    char text[24];

    snprintf(text, sizeof(text), "%zu", n);
    api_jw_key(w, key);
    api_jw_raw(w, text);
}

/* The page and the counts, under the state's read lock; false when refs missed a row. */
static bool write_page(struct api_call *c, struct api_jw *w, struct api_refs *refs, void *arg)
{
    const struct page_query *pq = arg;
    struct state *s = c->api->state;
    struct order o = { s, pq->by_last_seen };
    size_t n = 0, online = 0, expired_n = 0, count, *idx;

    refs->missed = false;
    state_rdlock(s);
    count = state_node_count(s);
    idx = hs_xcalloc(count + 1, sizeof(*idx));
    for (size_t i = 0; i < count; i++) {
        const struct state_node *sn = state_node_at(s, i);
        online += sn->online;
        expired_n += expired(sn, pq->now);
        if (matches(sn, pq))
            idx[n++] = i;
    }
    qsort_r(idx, n, sizeof(*idx), by_order, &o);
    api_jw_obj(w);
    api_jw_key(w, "nodes");
    api_jw_arr(w);
    for (size_t k = pq->offset; k < n && k - pq->offset < pq->limit; k++)
        api_jw_state_list_node(c, w, refs, state_node_at(s, idx[k]));
    api_jw_arr_end(w);
    state_unlock(s);
    free(idx);
    jw_count(w, "total", n);
    jw_count(w, "count", count);
    jw_count(w, "online", online);
    jw_count(w, "expired", expired_n);
    api_jw_obj_end(w);
    return !refs->missed;
}

void api_node_page(struct api_call *c)
{
    struct page_query pq;

    if (parse_query(c, &pq) == 0)
        api_reply_state_nodes(c, write_page, &pq);
}
