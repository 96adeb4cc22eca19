/* notify: the change bus. Every committed write in the store publishes one event here;
 * subscribers (state, later the map streams) apply it. Events from other replicas sharing a
 * PostgreSQL database arrive the same way (core/replica publishes them).
 *
 * Thread-safety: publish and subscribe may be called from any thread. Callbacks run on the
 * publishing thread, after the store has committed, with no store lock held. */
#ifndef HS_NOTIFY_H
#define HS_NOTIFY_H

#include <stdint.h>

enum notify_entity {
    NOTIFY_USER = 1,
    NOTIFY_NODE,
    NOTIFY_PREAUTHKEY,
    NOTIFY_APIKEY,
    NOTIFY_POLICY,
    NOTIFY_ROUTE,
    NOTIFY_REGISTRATION, /* a pending interactive login changed; id is 0 (ids are text) */
    NOTIFY_PRESENCE,     /* a node's map streams opened or all closed on a replica (id) */
    NOTIFY_DNS,          /* the DNS settings saved through the API changed (id 1) */
    NOTIFY_PRIMARY,      /* the elected replica published other primary routers (id 0) */
    NOTIFY_HEALTH,       /* a router's HA probe mark changed (id: the node) */
    NOTIFY_RESYNC,       /* changes from other replicas were missed: read everything again
                          * (published by core/replica only; never announced) */
};

enum notify_op { NOTIFY_CREATE = 1, NOTIFY_UPDATE, NOTIFY_DELETE };

struct notify_event {
    enum notify_entity entity;
    enum notify_op op;
    uint64_t id;      /* row id (0 for policy) */
    uint64_t seq;     /* assigned by the bus: strictly increasing per process */
    uint64_t revision; /* a node update made here: the row's revision after it (store_node);
                        * 0 when unknown (other entities, other replicas' announcements) */
};

struct notify_bus;
typedef void (*notify_fn)(const struct notify_event *ev, void *arg);

struct notify_bus *notify_new(void);
void notify_free(struct notify_bus *bus); /* NULL is fine */
/* Returns a subscription id > 0, or a negative errno. */
int notify_subscribe(struct notify_bus *bus, notify_fn fn, void *arg);
void notify_unsubscribe(struct notify_bus *bus, int sub_id);
/* Delivers ev to every subscriber; ev->seq is filled in. bus may be NULL (no-op). */
void notify_publish(struct notify_bus *bus, struct notify_event *ev);

const char *notify_entity_name(enum notify_entity e);
const char *notify_op_name(enum notify_op op);

#endif
