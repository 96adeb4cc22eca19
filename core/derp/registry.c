/* Who is connected here, by node key. Keys connected to other servers of the region are in
 * the mesh's route table (mesh_routes.c); a local client always wins over those. */
#include <string.h>

#include "derp/derp_server_internal.h"

static size_t bucket_of(const uint8_t key[DERP_KEY_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h)); /* keys are uniformly random */
    return (size_t)(h % DERP_REG_BUCKETS);
}

struct dclient *reg_find(struct derp_server *d, const uint8_t key[DERP_KEY_LEN])
{
    for (struct dclient *c = d->reg[bucket_of(key)]; c; c = c->hnext)
        if (memcmp(c->key, key, DERP_KEY_LEN) == 0)
            return c;
    return NULL;
}

/* The newest connection for a key wins, as in Go's server; an older one stays connected
 * but receives nothing until the newer one goes. */
void reg_add(struct derp_server *d, struct dclient *c)
{
    struct dclient **pp = &d->reg[bucket_of(c->key)];
    c->hnext = *pp;
    *pp = c;
    c->registered = true;
}

void reg_remove(struct derp_server *d, struct dclient *c)
{
    if (!c->registered)
        return;
    for (struct dclient **pp = &d->reg[bucket_of(c->key)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    }
    c->registered = false;
}
