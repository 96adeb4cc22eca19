/* store: the SQLite driver. One connection behind a mutex (SQLite serialises writers anyway);
 * WAL, synchronous=NORMAL, foreign keys on, 10 s busy timeout, immediate transactions — the
 * settings headscale uses (hscontrol/db/sqliteconfig). */
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "store/store_internal.h"

#define SQLITE_BUSY_TIMEOUT_MS 10000

/* Prepared statements kept per connection: parsing and planning a statement costs as much
 * as running a one-row lookup, and a map poll runs several. Keyed by the SQL text. */
#define STMT_CACHE_SLOTS 48

struct stmt_slot {
    char *sql; /* owned; NULL: free slot */
    uint64_t hash;
    sqlite3_stmt *stmt;
    uint64_t last_use;
};

struct store_conn {
    sqlite3 *db;
    pthread_mutex_t mu;
    struct stmt_slot cache[STMT_CACHE_SLOTS];
    uint64_t uses;
};

static int sqlite_err(sqlite3 *db, int rc, const char *sql)
{
    int ext = sqlite3_extended_errcode(db);

    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
        return -EEXIST;
    if (ext == SQLITE_CONSTRAINT_FOREIGNKEY)
        return store__fk_errno(sql);
    if (ext == SQLITE_CONSTRAINT_NOTNULL || ext == SQLITE_CONSTRAINT_CHECK)
        return -EINVAL; /* a value the schema refuses: the caller's bad argument */
    log_warnx("store: sqlite: %s (%s)", sqlite3_errmsg(db), sqlite3_errstr(rc));
    if ((ext & 0xff) == SQLITE_FULL)
        return -EDQUOT; /* the write is undone (-ENOSPC means an address pool ran out) */
    return -EIO;
}

/* The database holds every credential's hash and the whole tailnet: in a directory other users
 * can write they could plant their own (with their API key in it) or swap it. */
static int check_place(const char *path)
{
    char why[1024];
    int v = hs_path_trust(path, 0, why, sizeof(why));

    if (v == HS_PATH_UNSAFE) {
        log_errorx("store: sqlite: refusing %s: %s: another user could plant or replace the "
                   "database", path, why);
        return -EPERM;
    }
    if (v == HS_PATH_GROUP_WRITABLE)
        log_warnx("store: sqlite: %s: %s: its members could plant or replace the database",
                  path, why);
    return 0;
}

/* The file is created 0600 before SQLite opens it (SQLite would use the umask); its -wal and
 * -shm files copy that mode. */
static int prepare_file(const char *path)
{
    char *copy = hs_strdup(path);
    const char *dir = dirname(copy); /* points into copy */
    int fd, rc = 0;

    if (strcmp(dir, ".") != 0 && (rc = hs_mkdir_p(dir, 0700)) < 0)
        log_warnx("store: sqlite: cannot create the folder of %s: %s", path, hs_strerror(rc));
    free(copy);
    if (rc < 0 || (rc = check_place(path)) < 0)
        return rc;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        log_warn("store: sqlite: %s", path);
        return rc;
    }
    close(fd);
    return 0;
}

/* Settings of the connection only: nothing here writes to the file (see sqlite_ready). */
static int apply_pragmas(sqlite3 *db)
{
    int rc;

    sqlite3_busy_timeout(db, SQLITE_BUSY_TIMEOUT_MS);
    /* auto_vacuum only takes effect on a database without tables, i.e. before 0001. */
    rc = sqlite3_exec(db, "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA foreign_keys = ON;"
                          "PRAGMA synchronous = NORMAL;", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sqlite_err(db, rc, "PRAGMA");
}

/* The writer, and with WAL a second connection that only reads: lists (the API's node list
 * during a reconnect storm) do not wait behind writes, and writes do not wait behind them. */
struct sqlite_drv {
    struct store_conn w, r; /* r.db is NULL without WAL */
    char *path;
    int claim_fd; /* -1, or the file held with flock by serve */
    bool wal;
    int wal_autocheckpoint;
};

static int open_conn(const char *path, struct store_conn *c, bool reader)
{
    int rc = sqlite3_open_v2(path, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);

    if (rc != SQLITE_OK) {
        log_warnx("store: sqlite: %s: %s", path,
                  c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        c->db = NULL;
        return -EIO;
    }
    sqlite3_extended_result_codes(c->db, 1);
    if (reader) {
        sqlite3_busy_timeout(c->db, SQLITE_BUSY_TIMEOUT_MS);
        rc = sqlite3_exec(c->db, "PRAGMA query_only = ON;", NULL, NULL, NULL);
        rc = rc == SQLITE_OK ? 0 : sqlite_err(c->db, rc, "PRAGMA");
    } else {
        rc = apply_pragmas(c->db);
    }
    if (rc < 0) {
        sqlite3_close(c->db);
        c->db = NULL;
        return rc;
    }
    pthread_mutex_init(&c->mu, NULL);
    return 0;
}

static void cache_drop(struct stmt_slot *slot)
{
    sqlite3_finalize(slot->stmt);
    free(slot->sql);
    *slot = (struct stmt_slot){ 0 };
}

static uint64_t sql_hash(const char *sql)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *sql; sql++)
        h = (h ^ (uint8_t)*sql) * 1099511628211ULL;
    return h;
}

/* A ready statement for sql from the cache, or prepared now and cached (the least recently
 * used one makes room). Reset and unbound after each use by cache_done(). */
static int cache_get(struct store_conn *c, const char *sql, sqlite3_stmt **out)
{
    uint64_t h = sql_hash(sql);
    struct stmt_slot *victim = &c->cache[0];
    sqlite3_stmt *stmt;
    int rc;

    c->uses++;
    for (size_t i = 0; i < STMT_CACHE_SLOTS; i++) {
        struct stmt_slot *slot = &c->cache[i];
        if (slot->sql && slot->hash == h && strcmp(slot->sql, sql) == 0) {
            slot->last_use = c->uses;
            *out = slot->stmt;
            return SQLITE_OK;
        }
        if (slot->last_use < victim->last_use)
            victim = slot;
    }
    rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    if (victim->sql)
        cache_drop(victim);
    *victim = (struct stmt_slot){ hs_strdup(sql), h, stmt, c->uses };
    *out = stmt;
    return SQLITE_OK;
}

static void cache_done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

static void close_conn(struct store_conn *c)
{
    if (!c->db)
        return;
    for (size_t i = 0; i < STMT_CACHE_SLOTS; i++)
        if (c->cache[i].sql)
            cache_drop(&c->cache[i]);
    /* close_v2: a statement leaked by a bug must not keep the file open forever. */
    sqlite3_close_v2(c->db);
    pthread_mutex_destroy(&c->mu);
}

static int sqlite_open(const struct hs_config *cfg, void **drv)
{
    struct sqlite_drv *d;
    int rc;

    if (!cfg->sqlite_path || !*cfg->sqlite_path) {
        log_warnx("store: sqlite: database.sqlite.path is empty");
        return -EINVAL;
    }
    if ((rc = prepare_file(cfg->sqlite_path)) < 0)
        return rc;
    d = hs_xcalloc(1, sizeof(*d));
    if ((rc = open_conn(cfg->sqlite_path, &d->w, false)) < 0) {
        free(d);
        return rc;
    }
    d->path = hs_strdup(cfg->sqlite_path);
    d->claim_fd = -1;
    d->wal = cfg->sqlite_wal;
    d->wal_autocheckpoint = cfg->sqlite_wal_autocheckpoint;
    *drv = d;
    return 0;
}

/* WAL is a setting of the file, so it waits until the schema is known to be ours. Without
 * WAL a reader would block the writer (and ":memory:" is one database per connection): one
 * connection then. */
static int sqlite_ready(void *drv)
{
    struct sqlite_drv *d = drv;
    char sql[64];
    int rc;

    if (!d->wal)
        return 0;
    rc = sqlite3_exec(d->w.db, "PRAGMA journal_mode = WAL;", NULL, NULL, NULL);
    /* As headscale: 0 turns automatic checkpoints off, -1 leaves SQLite's default. */
    if (rc == SQLITE_OK && d->wal_autocheckpoint >= 0) {
        snprintf(sql, sizeof(sql), "PRAGMA wal_autocheckpoint = %d;", d->wal_autocheckpoint);
        rc = sqlite3_exec(d->w.db, sql, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK)
        return sqlite_err(d->w.db, rc, "PRAGMA");
    if (strcmp(d->path, ":memory:") == 0)
        return 0;
    return open_conn(d->path, &d->r, true);
}

static void sqlite_close(void *drv)
{
    struct sqlite_drv *d = drv;

    if (!d)
        return;
    close_conn(&d->r);
    close_conn(&d->w);
    if (d->claim_fd >= 0)
        close(d->claim_fd);
    free(d->path);
    free(d);
}

/* Two `serve` on one file would each keep nodes in memory and never hear of the other's
 * writes. flock is apart from SQLite's own (fcntl) locks and goes away with the process. */
static int sqlite_claim(void *drv)
{
    struct sqlite_drv *d = drv;
    int fd;

    if (d->claim_fd >= 0 || strcmp(d->path, ":memory:") == 0)
        return 0;
    if ((fd = open(d->path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int err = errno;
        close(fd);
        return err == EWOULDBLOCK ? -EBUSY : -err;
    }
    d->claim_fd = fd;
    return 0;
}

static int sqlite_acquire(void *drv, struct store_conn **out)
{
    struct sqlite_drv *d = drv;

    pthread_mutex_lock(&d->w.mu);
    *out = &d->w;
    return 0;
}

static int sqlite_acquire_read(void *drv, struct store_conn **out)
{
    struct sqlite_drv *d = drv;
    struct store_conn *c = d->r.db ? &d->r : &d->w;

    pthread_mutex_lock(&c->mu);
    *out = c;
    return 0;
}

static void sqlite_release(void *drv, struct store_conn *c)
{
    (void)drv;
    pthread_mutex_unlock(&c->mu);
}

static int sqlite_exec_script(struct store_conn *c, const char *sql)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sqlite_err(c->db, rc, sql);
}

/* IMMEDIATE takes the write lock up front, so a transaction never fails half-way with BUSY
 * when it upgrades from reading to writing. */
static int sqlite_begin(struct store_conn *c)
{
    return sqlite_exec_script(c, "BEGIN IMMEDIATE");
}

static int sqlite_commit(struct store_conn *c)
{
    return sqlite_exec_script(c, "COMMIT");
}

static int sqlite_rollback(struct store_conn *c)
{
    if (sqlite3_get_autocommit(c->db))
        return 0; /* SQLite already rolled back (e.g. after SQLITE_FULL) */
    return sqlite_exec_script(c, "ROLLBACK");
}

/* Entity SQL numbers its parameters $1..$N; SQLite knows them by name. */
static int bind_params(sqlite3_stmt *stmt, int nparams, const char *const *params)
{
    char name[16];
    int idx;

    for (int i = 0; i < nparams; i++) {
        snprintf(name, sizeof(name), "$%d", i + 1);
        idx = sqlite3_bind_parameter_index(stmt, name);
        if (idx == 0)
            continue; /* this statement does not use $i */
        if (params[i] ? sqlite3_bind_text(stmt, idx, params[i], -1, SQLITE_STATIC)
                      : sqlite3_bind_null(stmt, idx))
            return -EIO;
    }
    return 0;
}

static void read_row(sqlite3_stmt *stmt, struct store_result *res)
{
    char **row = store__result_add_row(res);
    const unsigned char *text;

    for (size_t i = 0; i < res->ncols; i++) {
        text = sqlite3_column_text(stmt, (int)i);
        row[i] = text ? hs_strdup((const char *)text) : NULL;
    }
}

static int step_all(struct store_conn *c, sqlite3_stmt *stmt, const char *sql,
                    struct store_result *res)
{
    int rc;

    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (res)
            read_row(stmt, res);
    }
    return rc == SQLITE_DONE ? 0 : sqlite_err(c->db, rc, sql);
}

static int sqlite_exec(struct store_conn *c, const char *sql, int nparams,
                       const char *const *params, struct store_result *res)
{
    struct store_result tmp;
    sqlite3_stmt *stmt;
    int rc;

    rc = cache_get(c, sql, &stmt);
    if (rc != SQLITE_OK)
        return sqlite_err(c->db, rc, sql);
    store__result_init(&tmp, (size_t)sqlite3_column_count(stmt));
    if ((rc = bind_params(stmt, nparams, params)) < 0)
        rc = sqlite_err(c->db, sqlite3_errcode(c->db), sql);
    else
        rc = step_all(c, stmt, sql, res ? &tmp : NULL);
    cache_done(stmt);
    if (rc < 0 || !res)
        store__result_free(&tmp);
    else
        *res = tmp;
    return rc;
}

/* One statement with text parameters, outside the statement cache (ATTACH, VACUUM INTO). */
static int exec_once(struct store_conn *c, const char *sql, const char *arg)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);

    if (rc == SQLITE_OK && arg)
        rc = sqlite3_bind_text(stmt, 1, arg, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : sqlite_err(c->db, rc, sql);
}

/* A headscale database is copied with VACUUM INTO (a consistent snapshot, WAL included) to
 * <path>.<UTC time>.bak beside it, created 0600 first as the database holds credentials; the
 * copy is then attached as headscale_backup for the import to read from. */
static int sqlite_backup(void *drv, struct store_conn *c, char *where, size_t size)
{
    struct sqlite_drv *d = drv;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    int fd, rc;

    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
    if ((size_t)snprintf(where, size, "%s.%s.bak", d->path, stamp) >= size)
        return -ENAMETOOLONG;
    fd = open(where, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        log_warn("store: sqlite: %s", where);
        return rc;
    }
    close(fd);
    if ((rc = exec_once(c, "VACUUM INTO ?1", where)) < 0) {
        unlink(where); /* a partial copy (disk full...) is no backup */
        return rc;
    }
    return exec_once(c, "ATTACH DATABASE ?1 AS headscale_backup", where);
}

static void sqlite_backup_done(void *drv, struct store_conn *c)
{
    (void)drv;
    exec_once(c, "DETACH DATABASE headscale_backup", NULL);
}

const struct store_ops store__sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .acquire = sqlite_acquire,
    .acquire_read = sqlite_acquire_read,
    .release = sqlite_release,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .exec = sqlite_exec,
    .exec_script = sqlite_exec_script,
    .migrate_lock = NULL,
    .alloc_lock_sql = NULL, /* BEGIN IMMEDIATE: one writer at a time */
    .ready = sqlite_ready,
    .claim = sqlite_claim,
    .columns_sql = "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p"
                   " WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                   " ORDER BY m.name, p.cid",
    .backup = sqlite_backup,
    .backup_done = sqlite_backup_done,
    /* Children first, for the foreign keys; "main." so that the attached copy's tables of
     * the same names are never the ones dropped. */
    .set_aside_sql = "DROP TABLE IF EXISTS main.routes;"
                     "DROP TABLE IF EXISTS main.pre_auth_key_acl_tags;"
                     "DROP TABLE IF EXISTS main.machines;"
                     "DROP TABLE IF EXISTS main.nodes;"
                     "DROP TABLE IF EXISTS main.pre_auth_keys;"
                     "DROP TABLE IF EXISTS main.api_keys;"
                     "DROP TABLE IF EXISTS main.policies;"
                     "DROP TABLE IF EXISTS main.users;"
                     "DROP TABLE IF EXISTS main.kvs;"
                     "DROP TABLE IF EXISTS main.migrations;"
                     "DROP TABLE IF EXISTS main.database_versions;",
    .import_finish_sql = NULL,
};
