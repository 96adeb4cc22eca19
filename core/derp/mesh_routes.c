/* Which other server of the region holds which client key, learnt from their PeerPresent
 * and PeerGone frames. A key announced by several servers (a client connected to two of
 * them for a moment) keeps them in the order they announced it and is forwarded to the
 * first that still has it, as derper's multiForwarder does: packets keep going one way
 * rather than flapping. */
#include <stdlib.h>
#include <string.h>

#include "derp/derp_server_internal.h"

static size_t bucket_of(const uint8_t key[DERP_KEY_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h)); /* keys are uniformly random */
    return (size_t)(h % DERP_REG_BUCKETS);
}

static struct mroute **find(struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN])
{
    struct mroute **pp = &t->b[bucket_of(key)];
    while (*pp && memcmp((*pp)->key, key, DERP_KEY_LEN) != 0)
        pp = &(*pp)->next;
    return pp;
}

int derp__route_add(struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN], uint8_t peer)
{
    struct mroute **pp = find(t, key), *r = *pp;

    if (!r) {
        if (t->n >= DERP_MESH_MAX_ROUTES)
            return -E2BIG;
        r = hs_xcalloc(1, sizeof(*r));
        memcpy(r->key, key, DERP_KEY_LEN);
        *pp = r;
        t->n++;
    }
    for (size_t i = 0; i < r->nvia; i++)
        if (r->via[i] == peer)
            return 1;
    if (r->nvia == DERP_MESH_MAX_VIA)
        return -E2BIG;
    r->via[r->nvia++] = peer;
    return 0;
}

static void unlink_route(struct mesh_routes *t, struct mroute **pp)
{
    struct mroute *r = *pp;
    *pp = r->next;
    free(r);
    t->n--;
}

/* Removes peer from r's list; true when the list is now empty. */
static bool drop_via(struct mroute *r, uint8_t peer)
{
    for (size_t i = 0; i < r->nvia; i++) {
        if (r->via[i] == peer) {
            memmove(r->via + i, r->via + i + 1, r->nvia - i - 1);
            r->nvia--;
            break;
        }
    }
    return r->nvia == 0;
}

bool derp__route_remove(struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN], uint8_t peer)
{
    struct mroute **pp = find(t, key);

    if (!*pp)
        return false; /* never known (or gone already): nothing changes */
    if (!drop_via(*pp, peer))
        return false;
    unlink_route(t, pp);
    return true;
}

int derp__route_lookup(const struct mesh_routes *t, const uint8_t key[DERP_KEY_LEN])
{
    for (const struct mroute *r = t->b[bucket_of(key)]; r; r = r->next)
        if (memcmp(r->key, key, DERP_KEY_LEN) == 0)
            return r->via[0];
    return -1;
}

void derp__route_drop_peer(struct mesh_routes *t, uint8_t peer,
                           void (*gone)(void *arg, const uint8_t key[DERP_KEY_LEN]), void *arg)
{
    for (size_t i = 0; i < DERP_REG_BUCKETS && t->n; i++) {
        struct mroute **pp = &t->b[i];
        while (*pp) {
            if (drop_via(*pp, peer)) {
                uint8_t key[DERP_KEY_LEN];
                memcpy(key, (*pp)->key, DERP_KEY_LEN);
                unlink_route(t, pp);
                if (gone)
                    gone(arg, key);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

void derp__routes_free(struct mesh_routes *t)
{
    for (size_t i = 0; i < DERP_REG_BUCKETS; i++) {
        while (t->b[i])
            unlink_route(t, &t->b[i]);
    }
}
