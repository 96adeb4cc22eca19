/* store: the PostgreSQL driver. A pool of database.postgres.max_open_conns libpq connections
 * (mutex + condvar), opened lazily after the first; at most max_idle_conns stay open while
 * unused, none longer than conn_max_idle_time_secs (0: no limit), as Go's database/sql
 * pool that headscale configures with them. A connection found broken outside a
 * transaction is reset once and the statement retried, so a restarted server costs one slow
 * query instead of an error. (Outside a transaction the store runs only reads, BEGIN and
 * idempotent writes — apikey touch, the server-secret insert — so a retry is harmless.) Inside a transaction nothing is retried: the transaction is lost
 * with its connection, and the caller sees -EIO. When the reset fails as well, the idle
 * connections are closed with it: they lead to the same unreachable database.
 *
 * A database that goes silent (a partition: packets dropped, nothing closed) is given up
 * after database.postgres.unreachable_timeout, on every connection, the replicas' feed too:
 * connect_timeout, TCP keep-alives and tcp_user_timeout (libpq's parameters).
 *
 * While the database cannot be reached, every request would wait for a connect of its own and
 * log the same failure (hundreds of lines a second under load): after a failed connect the
 * pool answers -EIO at once for PG_RETRY_US, and the failure is logged once, then once per
 * PG_LOG_EVERY_US with a count, and once more when a connect succeeds again. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

#define PG_DEFAULT_POOL 10
#define PG_MAX_PARAMS 16
#define PG_RETRY_US (250 * 1000)
#define PG_LOG_EVERY_US (10 * HS_USEC_PER_SEC)
/* pg_advisory_lock key for migrations: "hsmigrat" as a big-endian int64. */
#define PG_MIGRATE_LOCK "7526479701740773748"
/* pg_advisory_xact_lock key for picking node addresses: "hsnodeip". */
#define PG_ALLOC_LOCK "7526480826971023728"

struct pg_pool;

struct store_conn {
    struct pg_pool *pool;
    PGconn *pg; /* NULL until first used, or after it was dropped */
    bool busy, in_tx;
    int64_t idle_since; /* monotonic; when it was last released */
};

struct pg_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int size;
    int max_idle;         /* open connections kept while unused */
    int64_t idle_max_us;  /* an unused connection is closed after this long; 0: never */
    struct store_conn *conns;
    const char *kw[PG_MAX_PARAMS + 1];
    char *val[PG_MAX_PARAMS + 1];
    /* An outage (under mu): since when connects fail (monotonic; 0: they do not), when the
     * pool tries again, when it last said so, how many failed. */
    int64_t down_since, retry_at, logged_at;
    unsigned long failures;
};

/* ---- connecting ---- */

/* headscale's database.postgres.ssl is a boolean; libpq wants an sslmode. */
static const char *pg_sslmode(const char *s)
{
    if (!s || !*s)
        return NULL;
    if (strcmp(s, "true") == 0)
        return "require";
    if (strcmp(s, "false") == 0)
        return "disable";
    return s;
}

static void add_param(struct pg_pool *p, int *n, const char *kw, const char *val)
{
    if (!val || !*val || *n >= PG_MAX_PARAMS)
        return;
    p->kw[*n] = kw;
    p->val[*n] = hs_strdup(val);
    (*n)++;
}

static void add_int_param(struct pg_pool *p, int *n, const char *kw, long long val)
{
    char text[24];

    snprintf(text, sizeof(text), "%lld", val);
    add_param(p, n, kw, text);
}

/* database.postgres.unreachable_timeout: a partition must not hang a request for the
 * kernel's 15 minutes of retransmissions, nor leave the replicas' feed deaf without knowing
 * it. libpq counts connect_timeout in whole seconds, at least 2. */
static void add_timeout_params(struct pg_pool *p, int *n, int64_t timeout_us)
{
    struct hs_keepalive ka;
    int64_t connect_s = (timeout_us + HS_USEC_PER_SEC - 1) / HS_USEC_PER_SEC;

    hs_keepalive_for(timeout_us, &ka);
    add_int_param(p, n, "connect_timeout", connect_s < 2 ? 2 : connect_s);
    add_param(p, n, "keepalives", "1");
    add_int_param(p, n, "keepalives_idle", ka.idle_s);
    add_int_param(p, n, "keepalives_interval", ka.interval_s);
    add_int_param(p, n, "keepalives_count", ka.count);
    add_int_param(p, n, "tcp_user_timeout", ka.user_timeout_ms);
}

static void build_params(struct pg_pool *p, const struct hs_config *cfg)
{
    char port[16];
    int n = 0;

    snprintf(port, sizeof(port), "%d", cfg->pg_port);
    add_param(p, &n, "host", cfg->pg_host); /* a leading '/' makes it a socket folder */
    add_param(p, &n, "port", cfg->pg_port > 0 ? port : NULL);
    add_param(p, &n, "dbname", cfg->pg_name);
    add_param(p, &n, "user", cfg->pg_user);
    add_param(p, &n, "password", cfg->pg_pass);
    add_param(p, &n, "sslmode", pg_sslmode(cfg->pg_sslmode));
    add_param(p, &n, "application_name", "headscale");
    add_timeout_params(p, &n, cfg->pg_unreachable_timeout_us);
    p->kw[n] = NULL;
    p->val[n] = NULL;
}

/* NOTICEs (e.g. "relation already exists, skipping") are not warnings for the operator. */
static void pg_notice(void *arg, const char *msg)
{
    size_t len = strlen(msg);

    (void)arg;
    if (len && msg[len - 1] == '\n')
        len--;
    log_debug("store: postgres: %.*s", (int)len, msg);
}

/* libpq messages end in a newline; the log line should not. */
static void log_pg_error(const char *what, const char *msg)
{
    size_t len = msg ? strlen(msg) : 0;

    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    log_warnx("store: postgres: %s: %.*s", what, (int)len, msg ? msg : "");
}

static void connect_failed(struct pg_pool *p, const char *msg)
{
    int64_t now = hs_monotonic_us(), down;
    unsigned long n = 0;

    pthread_mutex_lock(&p->mu);
    if (!p->down_since)
        p->down_since = now;
    p->retry_at = now + PG_RETRY_US;
    if (++p->failures == 1 || now - p->logged_at >= PG_LOG_EVERY_US) {
        p->logged_at = now;
        n = p->failures;
    }
    down = now - p->down_since;
    pthread_mutex_unlock(&p->mu);
    if (n == 1)
        log_pg_error("connect", msg);
    else if (n)
        log_warnx("store: postgres: still cannot connect after %.0f s (%lu attempts)",
                  (double)down / HS_USEC_PER_SEC, n);
}

static void connect_worked(struct pg_pool *p)
{
    int64_t down = 0;
    unsigned long n = 0;

    pthread_mutex_lock(&p->mu);
    if (p->down_since) {
        down = hs_monotonic_us() - p->down_since;
        n = p->failures;
        p->down_since = p->retry_at = p->logged_at = 0;
        p->failures = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (n)
        log_info("store: postgres: connected again after %.1f s (%lu attempts failed)",
                 (double)down / HS_USEC_PER_SEC, n);
}

static int pg_connect(struct pg_pool *p, struct store_conn *c)
{
    c->pg = PQconnectdbParams(p->kw, (const char *const *)p->val, 0);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        connect_failed(p, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        PQfinish(c->pg);
        c->pg = NULL;
        return -EIO;
    }
    connect_worked(p);
    PQsetNoticeProcessor(c->pg, pg_notice, NULL);
    return 0;
}

static void pool_free(struct pg_pool *p)
{
    for (int i = 0; i < p->size; i++)
        PQfinish(p->conns[i].pg);
    for (int i = 0; p->kw[i]; i++)
        free(p->val[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->conns);
    free(p);
}

static int pg_open(const struct hs_config *cfg, void **drv)
{
    struct pg_pool *p = hs_xcalloc(1, sizeof(*p));

    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->size = cfg->pg_max_open_conns > 0 ? cfg->pg_max_open_conns : PG_DEFAULT_POOL;
    p->max_idle = cfg->pg_max_idle_conns;
    p->idle_max_us = (int64_t)cfg->pg_conn_max_idle_time_secs * HS_USEC_PER_SEC;
    p->conns = hs_xcalloc((size_t)p->size, sizeof(*p->conns));
    for (int i = 0; i < p->size; i++)
        p->conns[i].pool = p;
    build_params(p, cfg);
    /* The first connection now, so a wrong host or password fails at start. */
    p->conns[0].idle_since = hs_monotonic_us();
    if (pg_connect(p, &p->conns[0]) < 0) {
        pool_free(p);
        return -EIO;
    }
    *drv = p;
    return 0;
}

static void pg_close(void *drv)
{
    if (drv)
        pool_free(drv);
}

/* ---- the pool ---- */

/* An idle open connection if there is one, else a slot that still needs connecting. */
static struct store_conn *pool_pick(struct pg_pool *p)
{
    struct store_conn *empty = NULL;

    for (int i = 0; i < p->size; i++) {
        if (p->conns[i].busy)
            continue;
        if (p->conns[i].pg)
            return &p->conns[i];
        if (!empty)
            empty = &p->conns[i];
    }
    return empty;
}

/* Closes unused connections idle past conn_max_idle_time_secs; mu held. */
static void pool_expire(struct pg_pool *p)
{
    int64_t now = hs_monotonic_us();

    if (p->idle_max_us <= 0)
        return;
    for (int i = 0; i < p->size; i++) {
        struct store_conn *c = &p->conns[i];
        if (!c->busy && c->pg && now - c->idle_since > p->idle_max_us) {
            PQfinish(c->pg);
            c->pg = NULL;
        }
    }
}

static int idle_open(const struct pg_pool *p)
{
    int n = 0;

    for (int i = 0; i < p->size; i++)
        n += !p->conns[i].busy && p->conns[i].pg;
    return n;
}

static int pg_acquire(void *drv, struct store_conn **out)
{
    struct pg_pool *p = drv;
    struct store_conn *c;

    pthread_mutex_lock(&p->mu);
    pool_expire(p);
    while (!(c = pool_pick(p)))
        pthread_cond_wait(&p->cv, &p->mu);
    if (!c->pg && p->down_since && hs_monotonic_us() < p->retry_at) {
        pthread_mutex_unlock(&p->mu); /* a connect failed a moment ago: fail fast */
        return -EIO;
    }
    c->busy = true;
    pthread_mutex_unlock(&p->mu);
    /* Connect outside the lock: it can take up to connect_timeout. */
    if (!c->pg && pg_connect(p, c) < 0) {
        pthread_mutex_lock(&p->mu);
        c->busy = false;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return -EIO;
    }
    *out = c;
    return 0;
}

static void pg_release(void *drv, struct store_conn *c)
{
    struct pg_pool *p = drv;

    /* A connection that is broken or still inside a transaction is no use to the next caller. */
    if (PQstatus(c->pg) != CONNECTION_OK || PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->in_tx = false;
    pthread_mutex_lock(&p->mu);
    if (c->pg && idle_open(p) >= p->max_idle) {
        PQfinish(c->pg); /* max_idle_conns already wait unused */
        c->pg = NULL;
    }
    c->idle_since = hs_monotonic_us();
    c->busy = false;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- statements ---- */

static int pg_check(struct store_conn *c, PGresult *r, const char *sql)
{
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    const char *state;

    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return 0;
    state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, "23505") == 0) /* unique_violation */
        return -EEXIST;
    if (state && strcmp(state, "23503") == 0) /* foreign_key_violation */
        return store__fk_errno(sql);
    if (state && (strcmp(state, "23502") == 0 || strcmp(state, "23514") == 0))
        return -EINVAL; /* not_null / check violation: the caller's bad argument */
    log_pg_error("query", r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg));
    if (state && strcmp(state, "53100") == 0) /* disk_full; -ENOSPC: an address pool ran out */
        return -EDQUOT;
    return -EIO;
}

static void copy_result(PGresult *r, struct store_result *res)
{
    int nrows = PQntuples(r), ncols = PQnfields(r);
    char **row;

    store__result_init(res, (size_t)ncols);
    for (int i = 0; i < nrows; i++) {
        row = store__result_add_row(res);
        for (int j = 0; j < ncols; j++)
            row[j] = PQgetisnull(r, i, j) ? NULL : hs_strdup(PQgetvalue(r, i, j));
    }
}

/* A connection was lost and a new one failed too: the database is down or out of reach.
 * The idle connections go the same way, and would each make a request wait a timeout to
 * learn it; closed now, the next requests connect anew, failing fast while it lasts. */
static void pool_drop_idle(struct pg_pool *p)
{
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++) {
        struct store_conn *c = &p->conns[i];
        if (!c->busy && c->pg) {
            PQfinish(c->pg);
            c->pg = NULL;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* Reconnects a broken connection once; only safe outside a transaction. */
static bool pg_recover(struct store_conn *c)
{
    if (c->in_tx || PQstatus(c->pg) != CONNECTION_BAD)
        return false;
    log_warnx("store: postgres: connection lost, reconnecting");
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK) {
        connect_failed(c->pool, PQerrorMessage(c->pg));
        pool_drop_idle(c->pool);
        return false;
    }
    connect_worked(c->pool);
    return true;
}

static int pg_exec(struct store_conn *c, const char *sql, int nparams, const char *const *params,
                   struct store_result *res)
{
    PGresult *r;
    int rc;

    r = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_FATAL_ERROR && pg_recover(c)) {
        PQclear(r);
        r = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    }
    if ((rc = pg_check(c, r, sql)) == 0 && res)
        copy_result(r, res);
    PQclear(r);
    return rc;
}

static int pg_exec_script(struct store_conn *c, const char *sql)
{
    PGresult *r = PQexec(c->pg, sql);
    int rc = pg_check(c, r, sql);

    PQclear(r);
    return rc;
}

static int pg_begin(struct store_conn *c)
{
    int rc = pg_exec(c, "BEGIN", 0, NULL, NULL);

    c->in_tx = rc == 0;
    return rc;
}

static int pg_commit(struct store_conn *c)
{
    int rc = pg_exec_script(c, "COMMIT");

    c->in_tx = false;
    return rc;
}

static int pg_rollback(struct store_conn *c)
{
    int rc = 0;

    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        rc = pg_exec_script(c, "ROLLBACK");
    c->in_tx = false;
    return rc;
}

/* Session-level, so it spans the one-transaction-per-migration loop; two replicas starting
 * together migrate one after the other. */
static int pg_migrate_lock(struct store_conn *c, bool lock)
{
    return pg_exec_script(c, lock ? "SELECT pg_advisory_lock(" PG_MIGRATE_LOCK ")"
                                  : "SELECT pg_advisory_unlock(" PG_MIGRATE_LOCK ")");
}

/* The import moves headscale's tables into the schema headscale_backup inside its
 * transaction (set_aside_sql): that schema is the copy, and nothing needs doing before. */
static int pg_backup(void *drv, struct store_conn *c, char *where, size_t size)
{
    (void)drv;
    (void)c;
    hs_strlcpy(where, "the schema headscale_backup", size);
    return 0;
}

/* ---- replicas: the feed ---- */

#define PG_CHANNEL "headscale_changes"

static int pg_feed_open(void *drv, void **feed)
{
    struct pg_pool *p = drv;
    struct store_conn c = { .pool = p };

    if (pg_connect(p, &c) < 0)
        return -EIO;
    /* Named apart from the pool's connections, for operators looking at pg_stat_activity. */
    if (pg_exec_script(&c, "SET application_name = 'headscale feed'; LISTEN " PG_CHANNEL) < 0) {
        PQfinish(c.pg);
        return -EIO;
    }
    *feed = c.pg;
    return 0;
}

static void pg_feed_close(void *feed)
{
    PQfinish(feed);
}

static int pg_feed_fd(const void *feed)
{
    return PQsocket(feed);
}

/* libpq's sockets never block: PQconsumeInput reads what is there and returns. */
static int pg_feed_next(void *feed, char *payload, size_t size)
{
    PGnotify *n = PQnotifies(feed);

    if (!n) {
        if (!PQconsumeInput(feed) || PQstatus(feed) != CONNECTION_OK) {
            log_pg_error("the replicas' feed", PQerrorMessage(feed));
            return -EIO;
        }
        if (!(n = PQnotifies(feed)))
            return 0;
    }
    hs_strlcpy(payload, n->extra, size);
    PQfreemem(n);
    return 1;
}

static int pg_feed_query(void *feed, const char *sql, struct store_result *res)
{
    /* As if in a transaction: a reset would reconnect without the LISTEN. The follower
     * opens a new feed instead. */
    struct store_conn c = { .pg = feed, .in_tx = true };

    return pg_exec(&c, sql, 0, NULL, res);
}

#define PG_SET_ASIDE(table) "ALTER TABLE IF EXISTS " table " SET SCHEMA headscale_backup;"
#define PG_SEQ_PAST_IDS(table)                                                             \
    "SELECT setval(pg_get_serial_sequence('" table "', 'id'), COALESCE(MAX(id), 0) + 1, false)" \
    " FROM " table ";"

const struct store_ops store__pg_ops = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .acquire = pg_acquire,
    .acquire_read = pg_acquire,
    .release = pg_release,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .exec_script = pg_exec_script,
    .migrate_lock = pg_migrate_lock,
    .alloc_lock_sql = "SELECT pg_advisory_xact_lock(" PG_ALLOC_LOCK ")",
    .ready = NULL,
    .columns_sql = "SELECT table_name, column_name FROM information_schema.columns"
                   " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
    .backup = pg_backup,
    .backup_done = NULL,
    /* A schema of that name left from before stops the import (CREATE fails): nothing is
     * overwritten. */
    .set_aside_sql = "CREATE SCHEMA headscale_backup;" PG_SET_ASIDE("routes")
        PG_SET_ASIDE("pre_auth_key_acl_tags") PG_SET_ASIDE("machines") PG_SET_ASIDE("nodes")
        PG_SET_ASIDE("pre_auth_keys") PG_SET_ASIDE("api_keys") PG_SET_ASIDE("policies")
        PG_SET_ASIDE("users") PG_SET_ASIDE("kvs") PG_SET_ASIDE("migrations")
        PG_SET_ASIDE("database_versions"),
    .import_finish_sql = PG_SEQ_PAST_IDS("users") PG_SEQ_PAST_IDS("pre_auth_keys")
        PG_SEQ_PAST_IDS("api_keys") PG_SEQ_PAST_IDS("nodes") PG_SEQ_PAST_IDS("routes")
        PG_SEQ_PAST_IDS("policies"),
    /* One statement: the counter's row lock, held from here to COMMIT, orders the writers. */
    .announce_sql = "WITH c AS (UPDATE changes SET seq = seq + $1 WHERE id = 1 RETURNING seq)"
                    " SELECT pg_notify('" PG_CHANNEL "', (c.seq - $1 + e.n) || ' ' || e.body)"
                    " FROM c, unnest(CAST($2 AS text[])) WITH ORDINALITY AS e(body, n)",
    .feed_open = pg_feed_open,
    .feed_close = pg_feed_close,
    .feed_fd = pg_feed_fd,
    .feed_next = pg_feed_next,
    .feed_query = pg_feed_query,
    .claim = NULL,
};
