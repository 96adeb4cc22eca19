/* store internals: the driver ops table both backends fill in, text-cell results, statement
 * parameters, and the transaction/query helpers the entity files (store_user.c, store_keys.c,
 * store_node.c, store_policy.c) are written with. Not for use outside core/store and its tests.
 *
 * Entity SQL is written once, with $1..$N placeholders, and has to run on both backends:
 * - parameters travel as text (NULL = SQL NULL); SQLite's column affinity turns "42" into an
 *   integer and PostgreSQL infers the type, so where no column gives a type, CAST($n AS ...);
 * - booleans are written as "1"/"0" (PostgreSQL's boolean input accepts both) and read back as
 *   't'/'f' (PostgreSQL) or '1'/'0' (SQLite);
 * - times are BIGINT microseconds since the epoch, NULL when unset;
 * - every UPDATE/DELETE says RETURNING id so "no such row" is told apart without a second query. */
#ifndef HS_STORE_INTERNAL_H
#define HS_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "notify/notify.h"
#include "store/store.h"

#define STORE_MAX_PARAMS 24
#define STORE_NUM_LEN 24 /* "-9223372036854775808" + NUL */

/* A result as rows of text cells; a NULL cell is SQL NULL. Owned; free with store__result_free. */
struct store_result {
    size_t nrows, ncols;
    char **cells; /* nrows * ncols, room for cap */
    size_t cap;
};

/* One connection of a backend (SQLite: the only one; PostgreSQL: one of the pool). */
struct store_conn;

struct store_ops {
    const char *name; /* "sqlite" / "postgres": also the folder of its migrations */
    int (*open)(const struct hs_config *cfg, void **drv);
    void (*close)(void *drv);
    /* Blocks until a connection is free; the caller has it to itself until release. */
    int (*acquire)(void *drv, struct store_conn **out);
    /* The same for a statement that only reads (it may see the state of the last commit). */
    int (*acquire_read)(void *drv, struct store_conn **out);
    void (*release)(void *drv, struct store_conn *c);
    int (*begin)(struct store_conn *c);
    int (*commit)(struct store_conn *c);
    int (*rollback)(struct store_conn *c);
    /* One statement with text parameters; res may be NULL when no rows are wanted.
     * Errors: -EEXIST (unique violation), -ENOENT / -EBUSY (foreign key, see store__fk_errno),
     * -EINVAL (NOT NULL or CHECK violation), -EIO (anything else, logged). res is written only on success. */
    int (*exec)(struct store_conn *c, const char *sql, int nparams, const char *const *params,
                struct store_result *res);
    /* Several statements without parameters (migration files). */
    int (*exec_script)(struct store_conn *c, const char *sql);
    /* Serialises migrations between processes; NULL when BEGIN already does (SQLite). */
    int (*migrate_lock)(struct store_conn *c, bool lock);
    /* First statement of a transaction that picks a new node's address and name by reading
     * what is taken: makes such transactions of all processes take turns. NULL when BEGIN
     * already does (SQLite's BEGIN IMMEDIATE). */
    const char *alloc_lock_sql;
    /* After migrations, before the store is used: SQLite turns on WAL and opens its reader
     * here, so that a database refused at open is left byte for byte as it was. May be NULL. */
    int (*ready)(void *drv);

    /* Importing a headscale database (store_import.c). */
    /* Rows of (table, column) for every table of the database, sorted by table. */
    const char *columns_sql;
    /* Keeps a usable copy of the database before the import transaction and makes it
     * readable as the schema headscale_backup; where (for the log) says where it is. */
    int (*backup)(void *drv, struct store_conn *c, char *where, size_t size);
    /* Undoes what backup did for reading (SQLite detaches the file). May be NULL. */
    void (*backup_done)(void *drv, struct store_conn *c);
    /* In the import transaction, before our schema is made: clears the way for it (SQLite
     * drops headscale's tables, which the copy keeps; PostgreSQL moves them into the schema
     * headscale_backup, which is the copy). */
    const char *set_aside_sql;
    /* In the import transaction, after the rows are copied with their ids (PostgreSQL moves
     * its id sequences past them). May be NULL. */
    const char *import_finish_sql;

    /* Replicas (store_feed.c). NULL on SQLite. In the writing transaction, before COMMIT:
     * takes $1 numbers from the change counter and NOTIFYs each element of the text array $2,
     * prefixed with its number. */
    const char *announce_sql;
    /* A connection that LISTENs for announcements, its descriptor, the next payload (1; 0: none
     * waiting; -EIO: lost), and a query on it. NULL on SQLite. */
    int (*feed_open)(void *drv, void **feed);
    void (*feed_close)(void *feed);
    int (*feed_fd)(const void *feed);
    int (*feed_next)(void *feed, char *payload, size_t size);
    int (*feed_query)(void *feed, const char *sql, struct store_result *res);
    /* serve's exclusive use of the database; NULL when it is shared. */
    int (*claim)(void *drv);
};

extern const struct store_ops store__sqlite_ops;
extern const struct store_ops store__pg_ops;

struct store {
    const struct store_ops *ops;
    void *drv;
    struct notify_bus *bus;
    bool debug; /* database.debug: log every statement's text (never its parameters) */
    uint64_t origin; /* tags this process's announcements (store_origin) */
    struct metrics_hist latency[STORE_OPS];
};

/* ---- results ---- */
void store__result_init(struct store_result *r, size_t ncols);
/* Appends a row of ncols NULL cells and returns it for the driver to fill (hs_strdup). */
char **store__result_add_row(struct store_result *r);
void store__result_free(struct store_result *r);
const char *store__cell(const struct store_result *r, size_t row, size_t col);
/* Cell decoders: NULL decodes as 0 / false / NULL. */
uint64_t store__cell_u64(const struct store_result *r, size_t row, size_t col);
int64_t store__cell_i64(const struct store_result *r, size_t row, size_t col);
bool store__cell_bool(const struct store_result *r, size_t row, size_t col);
/* Moves the cell's text out (the caller frees it); the cell reads as NULL afterwards. */
char *store__cell_take(struct store_result *r, size_t row, size_t col);
/* A JSON array of strings ("[]" or NULL gives an empty list; other junk is logged, ignored). */
int store__cell_strv(const struct store_result *r, size_t row, size_t col, struct hs_strv *out);
/* 2*STORE_KEY_LEN hex chars after an optional text prefix ("mkey:"); NULL gives zeros. */
int store__cell_key(const struct store_result *r, size_t row, size_t col, const char *prefix,
                    uint8_t out[STORE_KEY_LEN]);

/* ---- parameters: fixed slots, numbers formatted in place, owned strings freed at the end ---- */
struct store_params {
    int n;
    const char *v[STORE_MAX_PARAMS];
    char num[STORE_MAX_PARAMS][STORE_NUM_LEN];
    char *owned[STORE_MAX_PARAMS];
};
void store__params_init(struct store_params *p);
void store__params_free(struct store_params *p);
void store__p_str(struct store_params *p, const char *s); /* borrowed; NULL = SQL NULL */
void store__p_own(struct store_params *p, char *s);       /* takes ownership */
void store__p_u64(struct store_params *p, uint64_t v);
void store__p_i64(struct store_params *p, int64_t v);
void store__p_id(struct store_params *p, uint64_t id);    /* 0 = NULL (optional FK) */
void store__p_time(struct store_params *p, int64_t us);   /* 0 = NULL (unset) */
void store__p_bool(struct store_params *p, bool b);
void store__p_strv(struct store_params *p, const struct hs_strv *sv); /* JSON array text */
void store__p_key(struct store_params *p, const char *prefix, const uint8_t key[STORE_KEY_LEN]);

/* ---- queries and transactions ---- */
typedef int (*store_row_fn)(struct store_result *r, size_t row, void *out);

/* Runs one statement on a pooled connection outside any transaction. */
int store__query(struct store *st, const char *sql, struct store_params *p,
                 struct store_result *res);
/* First row through fn into out; -ENOENT when there is none. */
int store__get_one(struct store *st, const char *sql, struct store_params *p, store_row_fn fn,
                   void *out);
/* A (text, time) row: the first row's first two columns; -ENOENT when there is none. */
int store__get_text(struct store *st, const char *sql, char **text, int64_t *at);
/* Every row through fn into a new array of elem_size elements; free_fn undoes a partial one. */
int store__get_all(struct store *st, const char *sql, struct store_params *p, store_row_fn fn,
                   size_t elem_size, void (*free_fn)(void *elem), void **out, size_t *n);

/* A transaction that owns its connection and collects notify events, which are published
 * only after a successful commit (and dropped on rollback). */
struct store_tx {
    struct store *st;
    struct store_conn *c;
    struct notify_event *ev;
    size_t nev, cap;
    bool quiet; /* announced to other replicas only, not published on this process's bus */
};
int store__begin(struct store *st, struct store_tx *tx);
int store__tx_exec(struct store_tx *tx, const char *sql, struct store_params *p,
                   struct store_result *res);
void store__tx_event(struct store_tx *tx, enum notify_entity e, enum notify_op op, uint64_t id);
/* The same for a node update, with the row's revision after it. */
void store__tx_event_rev(struct store_tx *tx, enum notify_entity e, enum notify_op op,
                         uint64_t id, uint64_t revision);
/* Announces the events to other replicas (PostgreSQL), commits, releases the connection,
 * then publishes; on failure behaves like rollback. */
int store__commit(struct store_tx *tx);
void store__rollback(struct store_tx *tx);

/* One write statement that RETURNs the changed row (id first) in its own transaction:
 * -ENOENT when it matched nothing; otherwise publishes (entity, op, id) after commit and, when
 * out is not NULL, decodes the row into it through fn. */
int store__write_row(struct store *st, const char *sql, struct store_params *p,
                     enum notify_entity e, enum notify_op op, store_row_fn fn, void *out);

/* Migrations (store_migrate.c): brings the schema up to date at open (importing a headscale
 * database first, see below); refuses (-EPROTO, logged) a database it does not recognise. */
int store__migrate(struct store *st, const char *where);
int store__known_version(const char *backend);
/* Creates schema_migrations and applies every migration inside the caller's transaction. */
int store__migrate_all(struct store *st, struct store_conn *c);

/* ---- recognising the database and importing headscale's (store_import.c) ---- */
enum store_schema {
    STORE_SCHEMA_EMPTY,
    STORE_SCHEMA_OURS,
    STORE_SCHEMA_HEADSCALE_022, /* 0.22.3: machines, routes, kvs */
    STORE_SCHEMA_HEADSCALE_029, /* 0.29.x: nodes with approved_routes, policies, migrations */
    STORE_SCHEMA_UNKNOWN,       /* refused; logged with the tables found (where names it) */
};
int store__schema_detect(const struct store_ops *ops, struct store_conn *c, const char *where,
                         enum store_schema *out);
/* Backs the headscale database up, then in one transaction replaces its tables with our
 * schema holding its users, keys, nodes, routes and policies. Under the migration lock. */
int store__import_headscale(struct store *st, struct store_conn *c, enum store_schema kind);

/* headscale's text encodings of the three node keys (key.MachinePublic.MarshalText & co). */
#define NODE_MKEY_PREFIX "mkey:"
#define NODE_NODEKEY_PREFIX "nodekey:"
#define NODE_DISCO_PREFIX "discokey:"

/* Drivers map a foreign-key violation through this: a DELETE that orphans rows is refused
 * (-EBUSY); an INSERT/UPDATE naming a missing parent has no such row (-ENOENT). */
int store__fk_errno(const char *sql);

/* Next free tailnet address of pfx given the addresses in use (text, any may be NULL):
 * the lowest free one, or from a random start when random; -ENOSPC when the prefix is full. */
int store__ip_next(const struct ip_prefix *pfx, bool random, const char *const *used,
                   size_t nused, char *out, size_t size);

/* store_feed.c: in tx, before its COMMIT: numbers and announces its events (announce_sql). */
int store__announce(struct store_tx *tx);

/* Test and maintenance hook: any one statement, outside a transaction. */
int store__exec(struct store *st, const char *sql, int nparams, const char *const *params,
                struct store_result *res);

#endif
