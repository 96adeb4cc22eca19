/* The follower: one thread, one LISTEN connection, a poll on it and on a pipe that stops it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "replica/replica_internal.h"
#include "util/util.h"

#define FOLLOW_BATCH 64
#define QUIET_CHECK_MS 2000  /* a round trip on the feed after this long without one */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000


static void resync(struct replica *r, uint64_t seq, const char *why)
{
    struct notify_event ev = { .entity = NOTIFY_RESYNC, .op = NOTIFY_UPDATE };

    log_info("replica: %s: reading every user, node and policy again (changes %llu to %llu)",
             why, (unsigned long long)r->last + 1, (unsigned long long)seq);
    __atomic_store_n(&r->last, seq, __ATOMIC_RELAXED);
    r->behind = 0;
    notify_publish(r->bus, &ev);
}

/* Waits up to ms for the feed (or anything, without one) or the stop pipe: false to stop. */
static bool wait_for(struct replica *r, int ms)
{
    struct pollfd p[2] = { { .fd = r->stop_pipe[0], .events = POLLIN },
                           { .fd = r->feed ? store_feed_fd(r->feed) : -1, .events = POLLIN } };

    while (poll(p, 2, ms) < 0) {
        if (errno != EINTR)
            return false;
    }
    return !(p[0].revents & (POLLIN | POLLHUP));
}

static void lost(struct replica *r, const char *what)
{
    log_warnx("replica: %s: the connection that hears other replicas was lost; reconnecting",
              what);
    store_feed_close(r->feed);
    r->feed = NULL;
    atomic_store(&r->listening, false);
    atomic_store(&r->leader, false); /* the lock went with the connection */
    state_set_elected(r->state, false);
}

/* Takes the work done once when no live replica holds it (the lock goes with the feed). */
static void try_lead(struct replica *r)
{
    bool lead;

    if (!atomic_load(&r->leader) && store_feed_try_lead(r->feed, &lead) == 0 && lead) {
        log_info("replica: this replica now does the work done once for all of them");
        atomic_store(&r->leader, true);
        state_set_elected(r->state, true);
    }
}

/* A new feed; whatever was committed while there was none is read again. The lead is tried
 * at once: a replica alone on its database decides HA primaries from its first request. */
static bool connect_feed(struct replica *r)
{
    uint64_t seq;

    if (store_feed_open(r->st, &r->feed) < 0)
        return false;
    if (store_feed_seq(r->feed, &seq) < 0) {
        lost(r, "first query");
        return false;
    }
    if (seq != r->last)
        resync(r, seq, seq < r->last ? "the database's change counter went back"
                                     : "changes were committed while not listening");
    atomic_store(&r->listening, true);
    try_lead(r);
    return true;
}

static void apply(struct replica *r, struct store_change *c)
{
    int64_t now;

    if (c->seq <= r->last)
        return; /* read again already */
    if (c->seq != r->last + 1 || c->ev.entity == 0) {
        resync(r, c->seq, c->ev.entity ? "changes were missed" : "an unreadable change");
        return;
    }
    __atomic_store_n(&r->last, c->seq, __ATOMIC_RELAXED);
    if (c->origin == r->origin)
        return;
    notify_publish(r->bus, &c->ev);
    now = hs_now_us();
    if (c->at) /* clocks of two hosts may disagree by a little: never below zero */
        metrics_hist_observe(&r->lag, now > c->at ? now - c->at : 0);
}

/* Applies what arrived until there is no more; false when the feed was lost meanwhile. */
static bool drain(struct replica *r, struct store_change *batch)
{
    int n;

    while ((n = store_feed_read(r->feed, batch, FOLLOW_BATCH)) > 0) {
        for (int i = 0; i < n; i++)
            apply(r, &batch[i]);
    }
    if (n < 0) {
        lost(r, "read");
        return false;
    }
    return true;
}

/* Between announcements, a round trip: a dead connection shows here, and so does a number the
 * database has passed twice in a row without its announcement arriving. */
static void quiet_check(struct replica *r)
{
    uint64_t seq;

    if (store_feed_seq(r->feed, &seq) < 0) {
        lost(r, "check");
        return;
    }
    try_lead(r);
    if (seq <= r->last) {
        r->behind = 0;
    } else if (r->behind && r->last < r->behind) {
        resync(r, seq, "announcements did not arrive");
    } else {
        r->behind = seq; /* may still be on its way */
    }
}

static void *follow(void *arg)
{
    struct replica *r = arg;
    struct store_change batch[FOLLOW_BATCH];
    int retry = RETRY_MIN_MS;
    int64_t checked = hs_monotonic_us();

    for (;;) {
        if (!r->feed && !connect_feed(r)) {
            if (!wait_for(r, retry))
                break;
            retry = retry * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : retry * 2;
            continue;
        }
        retry = RETRY_MIN_MS;
        if (!wait_for(r, QUIET_CHECK_MS))
            break;
        if (!drain(r, batch))
            continue;
        if (hs_monotonic_us() - checked >= QUIET_CHECK_MS * 1000LL) {
            quiet_check(r);
            checked = hs_monotonic_us();
        }
    }
    store_feed_close(r->feed);
    r->feed = NULL;
    atomic_store(&r->listening, false);
    return NULL;
}

int replica__follow_start(struct replica *r)
{
    int rc;

    if (pipe2(r->stop_pipe, O_CLOEXEC) < 0)
        return -errno;
    connect_feed(r); /* before serving, so the lead is settled; the thread retries a failure */
    if ((rc = pthread_create(&r->thread, NULL, follow, r)) != 0) {
        close(r->stop_pipe[0]);
        close(r->stop_pipe[1]);
        r->stop_pipe[0] = r->stop_pipe[1] = -1;
        return -rc;
    }
    return 0;
}

void replica__follow_stop(struct replica *r)
{
    if (r->stop_pipe[1] < 0)
        return;
    close(r->stop_pipe[1]); /* the follower sees POLLHUP */
    pthread_join(r->thread, NULL);
    close(r->stop_pipe[0]);
    r->stop_pipe[0] = r->stop_pipe[1] = -1;
}
