/* A throwaway server world for the fuzz targets that drive handlers: the default
 * configuration (SQLite, policy in the database), a store, state and auth, as the server
 * builds them. The database starts each run as a copy of a template that prepare() filled
 * once, so one input always meets the same data and a finding replays on its own. */
#ifndef HS_FUZZ_WORLD_H
#define HS_FUZZ_WORLD_H

#include "auth/auth.h"
#include "config/config.h"
#include "notify/notify.h"
#include "state/state.h"
#include "store/store.h"

struct fuzz_world {
    const struct hs_config *cfg;
    struct notify_bus *bus;
    struct store *st;
    struct state *state;
    struct auth *au;
};

/* What the template holds: user 1 "alice"; a reusable pre-auth key of hers; an API key;
 * node 1 "laptop" of hers, machine key 32 bytes of 0x01, node key 32
 * bytes of 0x02, announcing 10.0.0.0/8; a policy where alice owns tag:web, her routes in
 * 10.0.0.0/8 are approved, and everyone reaches everything. */
#define FUZZ_WORLD_MACHINE_KEY 0x01
#define FUZZ_WORLD_NODE_KEY 0x02

/* The keys are drawn at random when the template is made, so inputs name them by
 * placeholders of the same length, which this replaces in buf: "hskey-auth-000000000000-"
 * and "hskey-api-000000000000-", each followed by 64 zeros. */
void fuzz_world_put_keys(uint8_t *buf, size_t len);

/* Makes the template and exits on failure: a target without its world has nothing to fuzz.
 * Call once. */
void fuzz_world_init(void);
/* Opens the world on a fresh copy of the template. */
void fuzz_world_open(struct fuzz_world *w);
void fuzz_world_close(struct fuzz_world *w);

#endif
