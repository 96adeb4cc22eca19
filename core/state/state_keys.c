/* Nodes by node key: every map request and registration starts with one lookup, and a
 * reconnect storm makes thousands of them at once, so a scan of every node each time would
 * cost the storm quadratic work. A chained hash table; the hash is keyed with a secret drawn
 * at start, so a client choosing its keys cannot pile its nodes into one bucket. */
#include <sodium.h>
#include <string.h>

#include "state/state_internal.h"
#include "util/util.h"

static size_t bucket(const struct state_keys *k, const uint8_t node_key[32])
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, node_key, 32, k->secret);
    memcpy(&v, h, sizeof(v));
    return (size_t)(v & (k->nbuckets - 1));
}

void state__keys_init(struct state_keys *k)
{
    memset(k, 0, sizeof(*k));
    crypto_shorthash_keygen(k->secret);
}

void state__keys_free(struct state_keys *k)
{
    free(k->buckets);
    k->buckets = NULL;
    k->nbuckets = k->n = 0;
}

static void insert(struct state_keys *k, struct state_node *sn)
{
    size_t b = bucket(k, sn->n.node_key);
    sn->key_next = k->buckets[b];
    k->buckets[b] = sn;
}

/* At most one node per bucket on average: a lookup reads one or two nodes. */
static void grow(struct state_keys *k)
{
    struct state_node **old = k->buckets;
    size_t nold = k->nbuckets;

    k->nbuckets = nold ? 2 * nold : 64;
    k->buckets = hs_xcalloc(k->nbuckets, sizeof(*k->buckets));
    for (size_t i = 0; i < nold; i++) {
        struct state_node *sn = old[i], *next;
        for (; sn; sn = next) {
            next = sn->key_next;
            insert(k, sn);
        }
    }
    free(old);
}

void state__keys_add(struct state_keys *k, struct state_node *sn)
{
    if (k->n >= k->nbuckets)
        grow(k);
    insert(k, sn);
    k->n++;
}

void state__keys_del(struct state_keys *k, struct state_node *sn)
{
    struct state_node **p;

    if (!k->nbuckets)
        return;
    for (p = &k->buckets[bucket(k, sn->n.node_key)]; *p; p = &(*p)->key_next) {
        if (*p == sn) {
            *p = sn->key_next;
            sn->key_next = NULL;
            k->n--;
            return;
        }
    }
}

/* Keys may repeat in the store (a client that reuses its node key on a new machine): the
 * newest node, the highest id, answers, as the store's lookup does. */
struct state_node *state__keys_find(const struct state_keys *k, const uint8_t machine_key[32],
                                    const uint8_t node_key[32])
{
    struct state_node *best = NULL;

    if (!k->nbuckets)
        return NULL;
    for (struct state_node *sn = k->buckets[bucket(k, node_key)]; sn; sn = sn->key_next) {
        if (memcmp(sn->n.node_key, node_key, 32) != 0 ||
            (machine_key && memcmp(sn->n.machine_key, machine_key, 32) != 0))
            continue;
        if (!best || sn->n.id > best->n.id)
            best = sn;
    }
    return best;
}
