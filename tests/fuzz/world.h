/* A server world for the fuzz targets that drive handlers: the default configuration
 * (SQLite, policy in the database), a store, state and auth, as the server builds them.
 *
 * Inputs must not see each other: a finding has to replay on its own. The store stays open
 * for the whole process (opening it, with its migrations and statement cache, was most of an
 * input's time), while each input gets a fresh state and auth over it, and closing puts the
 * database back as the template left it when the input changed it (every table's rows
 * from a copy of the template; only when the data version moved, as many inputs write
 * nothing). fuzz_world_run checks the claim: some inputs run twice, and the two runs must
 * come out the same. */
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

/* Every this many inputs, the first of a process among them (so that an input replayed on
 * its own is checked), fuzz_world_run runs the input twice. */
#define FUZZ_WORLD_TWICE_EVERY 16

/* The keys are drawn at random when the template is made, so inputs name them by
 * placeholders of the same length, which this replaces in buf: "hskey-auth-000000000000-"
 * and "hskey-api-000000000000-", each followed by 64 zeros. */
void fuzz_world_put_keys(uint8_t *buf, size_t len);

/* Makes the template and exits on failure: a target without its world has nothing to fuzz.
 * Call once. state_from_store: the target changes the state only through the store (the
 * REST API reads the state and writes the store), so the state of an input that wrote
 * nothing is as fresh as a new one and is kept for the next (building it was most of an
 * input's time); otherwise every input gets a new one. */
void fuzz_world_init(bool state_from_store);
/* A fresh state and auth over the database as the template holds it. */
void fuzz_world_open(struct fuzz_world *w);
/* Frees what open made and puts the database back. Returns a digest of what the input left
 * in the database (the row count of every table: times and random keys differ between two
 * runs of one input, the rows made or removed do not), or 0 when the input is not one that
 * fuzz_world_run runs twice (only those compare digests). */
uint64_t fuzz_world_close(struct fuzz_world *w);

/* Runs one input: run(arg) opens the world, feeds it the input, closes it and returns a
 * digest of the outcome (fuzz_world_close's, mixed with what the target saw, see
 * fuzz_world_mix). Aborts when an input run twice (see FUZZ_WORLD_TWICE_EVERY) comes out
 * differently the second time: something of the first run was left behind. */
void fuzz_world_run(uint64_t (*run)(void *arg), void *arg);
/* Folds len bytes at p into the digest h (FNV-1a). */
uint64_t fuzz_world_mix(uint64_t h, const void *p, size_t len);

#endif
