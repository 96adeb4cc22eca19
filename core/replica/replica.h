/* replica: what makes several `serve` processes on one PostgreSQL database act as one server.
 * Every replica writes through its own store; the store announces each committed change
 * (store_feed). The follower here listens on a connection of its own and publishes the other
 * replicas' changes on the local bus, where the state applies them as it applies its own and
 * the map streams hear of them. Numbers that skip (a lost connection, a restarted database)
 * make it publish NOTIFY_RESYNC: the state then reads everything again. SQLite has no
 * replicas: replica_start does nothing there.
 *
 * Thread-safety: start and stop from one thread; the follower runs on its own thread and
 * calls notify_publish from it. */
#ifndef HS_REPLICA_H
#define HS_REPLICA_H

#include <stdint.h>

#include "notify/notify.h"
#include "store/store.h"

struct replica;

/* Follows the changes committed after number seq (store_change_seq, read before the state
 * loaded). *out is NULL on SQLite. The first connection is made on the follower's thread:
 * a database that is down now only delays it. */
int replica_start(struct store *st, struct notify_bus *bus, uint64_t seq, struct replica **out);
void replica_stop(struct replica *r); /* NULL is fine */

#endif
