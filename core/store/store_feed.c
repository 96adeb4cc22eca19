/* store: what replicas sharing a PostgreSQL database tell each other. The writing side
 * (store__announce) numbers a transaction's events and NOTIFYs them before COMMIT, so they are
 * delivered exactly when, and only if, it commits. The reading side is a feed: a connection of
 * its own that LISTENs. A payload is "<seq> <entity> <op> <id> <origin> <at>", decimal but the
 * origin (hex); at is the writer's clock (us since the epoch) just before COMMIT, for the
 * followers' lag. It never carries a secret, only what changed and when. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define FEED_PAYLOAD_MAX 128
#define ANNOUNCE_ITEM_MAX 96 /* "\"entity op id origin at\"," */

struct store_feed {
    struct store *st;
    void *drv;  /* the driver's connection */
    int failed; /* an error met after a batch was read: the next read returns it */
};

bool store_shared(const struct store *st)
{
    return st->ops->feed_open != NULL;
}

uint64_t store_origin(const struct store *st)
{
    return st->origin;
}

int store_claim(struct store *st)
{
    return st->ops->claim ? st->ops->claim(st->drv) : 0;
}

/* The events as a PostgreSQL text array literal: {"2 1 7 9f3a... 1796...","..."}. */
static char *announce_array(const struct store_tx *tx)
{
    int64_t at = hs_now_us();
    struct hs_buf b;

    hs_buf_init(&b, (tx->nev + 1) * ANNOUNCE_ITEM_MAX);
    hs_buf_puts(&b, "{");
    for (size_t i = 0; i < tx->nev; i++) {
        const struct notify_event *ev = &tx->ev[i];
        hs_buf_appendf(&b, "%s\"%d %d %" PRIu64 " %" PRIx64 " %" PRId64 "\"", i ? "," : "",
                       (int)ev->entity, (int)ev->op, ev->id, tx->st->origin, at);
    }
    hs_buf_puts(&b, "}");
    return b.data;
}

int store__announce(struct store_tx *tx)
{
    struct store_params p;
    int rc;

    if (!tx->st->ops->announce_sql || tx->nev == 0)
        return 0;
    store__params_init(&p);
    store__p_u64(&p, tx->nev);
    store__p_own(&p, announce_array(tx));
    rc = store__tx_exec(tx, tx->st->ops->announce_sql, &p, NULL);
    store__params_free(&p);
    return rc;
}

int store_change_seq(struct store *st, uint64_t *seq)
{
    struct store_result res;
    int rc;

    if (!store_shared(st)) {
        *seq = 0;
        return 0;
    }
    if ((rc = store__query(st, "SELECT seq FROM changes WHERE id = 1", NULL, &res)) < 0)
        return rc;
    *seq = store__cell_u64(&res, 0, 0);
    store__result_free(&res);
    return 0;
}

int store_feed_open(struct store *st, struct store_feed **out)
{
    struct store_feed *f;
    int rc;

    if (!store_shared(st))
        return -ENOTSUP;
    f = hs_xcalloc(1, sizeof(*f));
    f->st = st;
    if ((rc = st->ops->feed_open(st->drv, &f->drv)) < 0) {
        free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void store_feed_close(struct store_feed *f)
{
    if (!f)
        return;
    f->st->ops->feed_close(f->drv);
    free(f);
}

int store_feed_fd(const struct store_feed *f)
{
    return f->st->ops->feed_fd(f->drv);
}

/* "<seq> <entity> <op> <id> <origin> <at>", or without at (written by an older version: no
 * lag then); anything else keeps its number if it has one and reads as entity 0 (the
 * follower then reads everything again rather than guess). */
static void parse_payload(const char *s, struct store_change *c)
{
    unsigned long long seq, id, origin;
    long long at = 0;
    int entity, op, end = 0, end_at = 0;

    *c = (struct store_change){ 0 };
    if (sscanf(s, "%llu %d %d %llu %llx%n %lld%n", &seq, &entity, &op, &id, &origin, &end, &at,
               &end_at) >= 5 &&
        (s[end] == '\0' || (end_at && s[end_at] == '\0')) && entity >= NOTIFY_USER &&
        entity < NOTIFY_RESYNC && op >= NOTIFY_CREATE && op <= NOTIFY_DELETE) {
        c->seq = seq;
        c->ev = (struct notify_event){ .entity = entity, .op = op, .id = id };
        c->origin = origin;
        c->at = end_at && s[end_at] == '\0' && at > 0 ? at : 0;
        return;
    }
    if (sscanf(s, "%llu", &seq) == 1)
        c->seq = seq;
    log_warnx("store: postgres: an announcement this version cannot read (another version "
              "of headscale on the database?): %.*s", FEED_PAYLOAD_MAX, s);
}

int store_feed_read(struct store_feed *f, struct store_change *out, size_t max)
{
    char payload[FEED_PAYLOAD_MAX];
    size_t n = 0;
    int rc = 0;

    if (f->failed)
        return f->failed;
    while (n < max && (rc = f->st->ops->feed_next(f->drv, payload, sizeof(payload))) > 0)
        parse_payload(payload, &out[n++]);
    if (rc < 0 && n > 0) {
        f->failed = rc; /* what was read before the error is applied first */
        return (int)n;
    }
    return rc < 0 ? rc : (int)n;
}

int store_feed_seq(struct store_feed *f, uint64_t *seq)
{
    struct store_result res;
    int rc;

    if ((rc = f->st->ops->feed_query(f->drv, "SELECT seq FROM changes WHERE id = 1", &res)) < 0)
        return rc;
    *seq = store__cell_u64(&res, 0, 0);
    store__result_free(&res);
    return 0;
}

/* pg_advisory_lock key of the replica that does the work done once: "hsleader" as a
 * big-endian int64. Session level: it goes with the feed's connection. */
#define FEED_LEAD_LOCK "7526478584947697010"

int store_feed_try_lead(struct store_feed *f, bool *got)
{
    struct store_result res;
    int rc;

    if ((rc = f->st->ops->feed_query(f->drv, "SELECT pg_try_advisory_lock(" FEED_LEAD_LOCK ")",
                                     &res)) < 0)
        return rc;
    *got = store__cell_bool(&res, 0, 0);
    store__result_free(&res);
    return 0;
}
