#include <pthread.h>
#include <stdlib.h>

#include "notify/notify.h"
#include "util/util.h"

#define NOTIFY_MAX_SUBSCRIBERS 64

struct subscriber {
    int id;
    notify_fn fn;
    void *arg;
};

struct notify_bus {
    pthread_mutex_t mu;
    struct subscriber subs[NOTIFY_MAX_SUBSCRIBERS];
    size_t nsubs;
    int next_id;
    uint64_t seq;
};

struct notify_bus *notify_new(void)
{
    struct notify_bus *bus = hs_xcalloc(1, sizeof(*bus));
    pthread_mutex_init(&bus->mu, NULL);
    bus->next_id = 1;
    return bus;
}

void notify_free(struct notify_bus *bus)
{
    if (!bus)
        return;
    pthread_mutex_destroy(&bus->mu);
    free(bus);
}

int notify_subscribe(struct notify_bus *bus, notify_fn fn, void *arg)
{
    int id;

    pthread_mutex_lock(&bus->mu);
    if (bus->nsubs == NOTIFY_MAX_SUBSCRIBERS) {
        pthread_mutex_unlock(&bus->mu);
        return -E2BIG;
    }
    id = bus->next_id++;
    bus->subs[bus->nsubs++] = (struct subscriber){ .id = id, .fn = fn, .arg = arg };
    pthread_mutex_unlock(&bus->mu);
    return id;
}

void notify_unsubscribe(struct notify_bus *bus, int sub_id)
{
    pthread_mutex_lock(&bus->mu);
    for (size_t i = 0; i < bus->nsubs; i++) {
        if (bus->subs[i].id == sub_id) {
            bus->subs[i] = bus->subs[--bus->nsubs];
            break;
        }
    }
    pthread_mutex_unlock(&bus->mu);
}

void notify_publish(struct notify_bus *bus, struct notify_event *ev)
{
    struct subscriber snap[NOTIFY_MAX_SUBSCRIBERS];
    size_t n;

    if (!bus)
        return;
    /* Copy the list so a callback may (un)subscribe without deadlocking. */
    pthread_mutex_lock(&bus->mu);
    ev->seq = ++bus->seq;
    n = bus->nsubs;
    for (size_t i = 0; i < n; i++)
        snap[i] = bus->subs[i];
    pthread_mutex_unlock(&bus->mu);
    for (size_t i = 0; i < n; i++)
        snap[i].fn(ev, snap[i].arg);
}

const char *notify_entity_name(enum notify_entity e)
{
    static const char *const names[] = { "?", "user", "node", "preauthkey", "apikey", "policy",
                                         "route", "registration", "presence", "dns",
                                         "primary", "health", "resync" };
    return (size_t)e < HS_ARRAY_LEN(names) ? names[e] : "?";
}

const char *notify_op_name(enum notify_op op)
{
    static const char *const names[] = { "?", "create", "update", "delete" };
    return (size_t)op < HS_ARRAY_LEN(names) ? names[op] : "?";
}
