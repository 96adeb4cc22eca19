/* store: schema migrations. sql/<backend>/NNNN_name.sql are embedded at build time
 * (store_migrations[]); each pending one runs in its own transaction together with its row in
 * schema_migrations, so a crash leaves the schema at a recorded version. A database newer than
 * the binary is refused rather than used with a schema this code does not know, and so is a
 * database of tables that are neither ours nor a headscale's we can import (store_import.c). */
#include <stdlib.h>
#include <string.h>

#include "store/migrations.h"
#include "store/store_internal.h"

/* Same text on both backends; created outside the migrations because they are counted in it. */
static const char create_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied_at BIGINT NOT NULL)";

/* The backend's migration with the lowest version above `after`, or NULL. */
static const struct migration *next_migration(const char *backend, int after)
{
    const struct migration *best = NULL;

    for (const struct migration *m = store_migrations; m->backend; m++) {
        if (strcmp(m->backend, backend) != 0 || m->version <= after)
            continue;
        if (!best || m->version < best->version)
            best = m;
    }
    return best;
}

int store__known_version(const char *backend)
{
    int known = 0;

    for (const struct migration *m = store_migrations; m->backend; m++) {
        if (strcmp(m->backend, backend) == 0 && m->version > known)
            known = m->version;
    }
    return known;
}

static int applied_version(struct store *st, struct store_conn *c, int *out)
{
    struct store_result res;
    int rc;

    rc = st->ops->exec(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", 0, NULL,
                       &res);
    if (rc < 0)
        return rc;
    *out = (int)store__cell_i64(&res, 0, 0);
    store__result_free(&res);
    return 0;
}

/* Another process may have applied m between our read and our BEGIN (SQLite has no advisory
 * lock, but BEGIN IMMEDIATE serialises), so the check is repeated inside the transaction. */
static int already_applied(struct store *st, struct store_conn *c, const struct migration *m,
                           bool *yes)
{
    struct store_params p;
    struct store_result res;
    int rc;

    store__params_init(&p);
    store__p_i64(&p, m->version);
    rc = st->ops->exec(c, "SELECT 1 FROM schema_migrations WHERE version = $1", p.n, p.v, &res);
    if (rc == 0) {
        *yes = res.nrows > 0;
        store__result_free(&res);
    }
    return rc;
}

static int record(struct store *st, struct store_conn *c, const struct migration *m)
{
    struct store_params p;

    store__params_init(&p);
    store__p_i64(&p, m->version);
    store__p_str(&p, m->name);
    store__p_i64(&p, hs_now_us());
    return st->ops->exec(c,
                         "INSERT INTO schema_migrations (version, name, applied_at)"
                         " VALUES ($1, $2, $3)",
                         p.n, p.v, NULL);
}

static int apply_one(struct store *st, struct store_conn *c, const struct migration *m)
{
    bool done = false;
    int rc;

    if ((rc = st->ops->begin(c)) < 0)
        return rc;
    if ((rc = already_applied(st, c, m, &done)) < 0 || done)
        goto out_rollback;
    if ((rc = st->ops->exec_script(c, m->sql)) < 0 || (rc = record(st, c, m)) < 0)
        goto out_rollback;
    if ((rc = st->ops->commit(c)) < 0)
        goto out_rollback;
    log_info("store: %s: applied migration %04d_%s", st->ops->name, m->version, m->name);
    return 0;
out_rollback:
    if (rc < 0)
        log_errorx("store: %s: migration %04d_%s failed: %s", st->ops->name, m->version,
                   m->name, hs_strerror(rc));
    st->ops->rollback(c);
    return rc;
}

int store__migrate_all(struct store *st, struct store_conn *c)
{
    const char *backend = st->ops->name;
    int rc;

    if ((rc = st->ops->exec_script(c, create_table_sql)) < 0)
        return rc;
    for (const struct migration *m = next_migration(backend, 0); m;
         m = next_migration(backend, m->version)) {
        if ((rc = st->ops->exec_script(c, m->sql)) < 0 || (rc = record(st, c, m)) < 0) {
            log_errorx("store: %s: migration %04d_%s failed: %s", backend, m->version,
                       m->name, hs_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static int migrate_locked(struct store *st, struct store_conn *c, const char *where)
{
    const char *backend = st->ops->name;
    const struct migration *m;
    enum store_schema kind;
    int applied, known = store__known_version(backend), rc;

    if ((rc = store__schema_detect(st->ops, c, where, &kind)) < 0)
        return rc;
    if (kind == STORE_SCHEMA_UNKNOWN)
        return -EPROTO;
    if (kind == STORE_SCHEMA_HEADSCALE_022 || kind == STORE_SCHEMA_HEADSCALE_029)
        return store__import_headscale(st, c, kind);
    if ((rc = st->ops->exec_script(c, create_table_sql)) < 0 ||
        (rc = applied_version(st, c, &applied)) < 0)
        return rc;
    if (applied > known) {
        log_errorx("store: database schema version %d is newer than this binary (%d)", applied,
                   known);
        return -EPROTO;
    }
    /* Every one, not only those above the highest applied: migrations may land out of order
     * (a database may hold 0007 and lack 0006). apply_one skips those already recorded. */
    for (m = next_migration(backend, 0); m; m = next_migration(backend, m->version)) {
        if ((rc = apply_one(st, c, m)) < 0)
            return rc;
    }
    return 0;
}

int store__migrate(struct store *st, const char *where)
{
    struct store_conn *c;
    int rc;

    if ((rc = st->ops->acquire(st->drv, &c)) < 0)
        return rc;
    if (!st->ops->migrate_lock || (rc = st->ops->migrate_lock(c, true)) == 0) {
        rc = migrate_locked(st, c, where);
        if (st->ops->migrate_lock)
            st->ops->migrate_lock(c, false);
    }
    st->ops->release(st->drv, c);
    return rc;
}
