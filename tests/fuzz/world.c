#include "world.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

static char dir[64], db_path[128], template_path[128];
/* What lives as long as the process: the configuration, the bus the store publishes on, the
 * store. */
static const struct hs_config *cfg;
static struct notify_bus *bus;
static struct store *st;
/* The harness's own connection to the store's file, with the template attached as "tmpl"
 * (it restores and counts). */
static sqlite3 *live;
static sqlite3_stmt *counts; /* every table's row count and the AUTOINCREMENT counters */
static char *restore_sql;    /* every table emptied and filled again from tmpl */
static int64_t seen_version; /* live's PRAGMA data_version when the database was as tmpl */
static bool keep_state, digest_wanted;
static struct state *kept; /* the last input's, over a database it did not change */

static void fail(const char *what)
{
    fprintf(stderr, "fuzz world: %s failed\n", what);
    exit(1);
}

static void remove_dir(void)
{
    char p[160];

    snprintf(p, sizeof(p), "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", db_path);
    unlink(p);
    unlink(db_path);
    unlink(template_path);
    rmdir(dir);
}

/* The configuration of db_path, loaded once. */
static const struct hs_config *load_config(void)
{
    static struct hs_config c;
    char yaml[512];
    struct config_diags diags;
    int n = snprintf(yaml, sizeof(yaml), "server_url: http://127.0.0.1:8080\n"
                                         "database:\n  sqlite:\n    path: %s\n"
                                         "policy:\n  mode: database\n", db_path);

    if (config_load_text(yaml, (size_t)n, dir, CONFIG_FOR_SERVER, &c, &diags) < 0)
        fail("the configuration");
    config_diags_free(&diags);
    return &c;
}

#define ZEROS64 "0000000000000000000000000000000000000000000000000000000000000000"
static const char *const placeholders[] = { "hskey-auth-000000000000-" ZEROS64,
                                            "hskey-api-000000000000-" ZEROS64 };
static char keys[2][AUTH_KEY_TEXT_MAX]; /* the real ones, in that order */

static void populate(struct fuzz_world *w)
{
    static const struct ip_prefix v4 = { .family = AF_INET, .addr = { 100, 64 }, .bits = 10 };
    struct store_ip_config ips = { .v4 = &v4 };
    struct store_user user = { .name = "alice" }, uout;
    struct store_preauthkey key = { .user_id = 1, .reusable = true }, kout;
    struct store_apikey aout;
    struct store_node node = { .user_id = 1, .hostname = "laptop", .given_name = "laptop",
                               .hostinfo_json = "{\"RoutableIPs\":[\"10.0.0.0/8\"]}",
                               .register_method = REGISTER_CLI, .expiry = 1900000000000000 },
                      nout;

    if (store_user_create(w->st, &user, &uout) < 0)
        fail("store_user_create");
    store_user_free(&uout);
    if (auth_preauthkey_create(w->au, &key, keys[0], &kout) < 0)
        fail("auth_preauthkey_create");
    store_preauthkey_free(&kout);
    if (auth_apikey_create(w->au, 0, keys[1], &aout) < 0)
        fail("auth_apikey_create");
    memset(node.machine_key, FUZZ_WORLD_MACHINE_KEY, sizeof(node.machine_key));
    memset(node.node_key, FUZZ_WORLD_NODE_KEY, sizeof(node.node_key));
    if (store_node_create(w->st, &node, &ips, &nout) < 0)
        fail("store_node_create");
    store_node_free(&nout);
    if (store_policy_set(w->st, "{\"tagOwners\":{\"tag:web\":[\"alice@\"]},"
                                "\"autoApprovers\":{\"routes\":{\"10.0.0.0/8\":[\"alice@\"]}},"
                                "\"acls\":[{\"action\":\"accept\",\"src\":[\"*\"],"
                                "\"dst\":[\"*:*\"]}]}", NULL, 0, NULL, NULL) < 0)
        fail("store_policy_set");
}

static int64_t data_version(void)
{
    sqlite3_stmt *s;
    int64_t v = -1;

    if (sqlite3_prepare_v2(live, "PRAGMA data_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (v < 0)
        fail("PRAGMA data_version");
    return v;
}

/* The tables of the schema (known only now), each passed to add; then sqlite_sequence. */
static void each_table(void (*add)(char *sql, size_t *n, size_t cap, const char *table),
                       char *sql, size_t *n, size_t cap)
{
    sqlite3_stmt *names;

    if (sqlite3_prepare_v2(live, "SELECT name FROM main.sqlite_master WHERE type = 'table'"
                                 " AND name NOT LIKE 'sqlite_%' ORDER BY name", -1, &names,
                           NULL) != SQLITE_OK)
        fail("listing the tables");
    while (sqlite3_step(names) == SQLITE_ROW && *n < cap)
        add(sql, n, cap, (const char *)sqlite3_column_text(names, 0));
    sqlite3_finalize(names);
    if (*n < cap)
        add(sql, n, cap, "sqlite_sequence");
    if (*n >= cap - 1)
        fail("the length of a statement over every table");
}

static void add_count(char *sql, size_t *n, size_t cap, const char *table)
{
    /* The AUTOINCREMENT counters tell apart two runs that made and removed a row each. */
    if (strcmp(table, "sqlite_sequence") == 0)
        *n += (size_t)snprintf(sql + *n, cap - *n,
                               ", (SELECT group_concat(name || seq) FROM sqlite_sequence)");
    else
        *n += (size_t)snprintf(sql + *n, cap - *n, ", (SELECT count(*) FROM \"%s\")", table);
}

static void add_restore(char *sql, size_t *n, size_t cap, const char *table)
{
    *n += (size_t)snprintf(sql + *n, cap - *n,
                           "DELETE FROM main.\"%s\"; INSERT INTO main.\"%s\" SELECT * FROM "
                           "tmpl.\"%s\";", table, table, table);
}

static void prepare_statements(void)
{
    char sql[8192];
    size_t n = (size_t)snprintf(sql, sizeof(sql), "SELECT 0");

    each_table(add_count, sql, &n, sizeof(sql));
    if (sqlite3_prepare_v2(live, sql, -1, &counts, NULL) != SQLITE_OK)
        fail("the row count query");
    n = (size_t)snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE;");
    each_table(add_restore, sql, &n, sizeof(sql));
    if (n + sizeof("COMMIT;") > sizeof(sql))
        fail("the length of the restore");
    strcat(sql, "COMMIT;");
    restore_sql = strdup(sql);
    if (!restore_sql)
        fail("strdup");
}

/* The template as it is in the file now, copied to a file of its own and attached to the
 * harness's connection. Putting it back is then plain DELETE and INSERT: SQLite's backup
 * into the store's file would change the schema cookie, and every statement the store keeps
 * prepared would be prepared again after each restore (a tenth of an input's time). */
static void take_snapshot(void)
{
    sqlite3 *copy = NULL;
    sqlite3_backup *b;
    char attach[200];

    if (sqlite3_open_v2(db_path, &live, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_open(template_path, &copy) != SQLITE_OK)
        fail("opening the template");
    b = sqlite3_backup_init(copy, "main", live, "main");
    if (!b || sqlite3_backup_step(b, -1) != SQLITE_DONE || sqlite3_backup_finish(b) != SQLITE_OK)
        fail("taking the template");
    sqlite3_close(copy);
    snprintf(attach, sizeof(attach), "ATTACH '%s' AS tmpl", template_path);
    if (sqlite3_exec(live, attach, NULL, NULL, NULL) != SQLITE_OK)
        fail("attaching the template");
    prepare_statements();
    seen_version = data_version();
}

static void close_all(void)
{
    state_free(kept);
    sqlite3_finalize(counts);
    free(restore_sql);
    sqlite3_close(live);
    store_close(st);
    notify_free(bus);
    remove_dir();
}

void fuzz_world_init(bool state_from_store)
{
    struct fuzz_world w;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

    /* A line per refused input would be most of the run's time; HS_FUZZ_LOG=1 shows them
     * (what a seed reaches). */
    if (!getenv("HS_FUZZ_LOG"))
        log_set_level(LOG_OFF);
    snprintf(dir, sizeof(dir), "%s/hs-fuzz-XXXXXX", base);
    if (!mkdtemp(dir))
        fail("mkdtemp");
    snprintf(db_path, sizeof(db_path), "%s/db.sqlite", dir);
    snprintf(template_path, sizeof(template_path), "%s/template.sqlite", dir);
    atexit(close_all);
    cfg = load_config();
    bus = notify_new();
    if (store_open(cfg, bus, &st) < 0)
        fail("store_open");
    fuzz_world_open(&w);
    populate(&w);
    auth_free(w.au);
    state_free(w.state);
    take_snapshot();
    keep_state = state_from_store;
}

void fuzz_world_put_keys(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(placeholders); i++) {
        size_t klen = strlen(placeholders[i]);
        uint8_t *p = buf;

        if (strlen(keys[i]) != klen)
            fail("a key of the expected length");
        while ((p = memmem(p, len - (size_t)(p - buf), placeholders[i], klen))) {
            memcpy(p, keys[i], klen);
            p += klen;
        }
    }
}

void fuzz_world_open(struct fuzz_world *w)
{
    *w = (struct fuzz_world){ .cfg = cfg, .bus = bus, .st = st, .state = kept };
    kept = NULL;
    if (!w->state) {
        if (state_new(st, bus, &w->state) < 0)
            fail("state_new");
        state_policy_source(w->state, STATE_POLICY_STORE, NULL);
    }
    if (auth_new(cfg, st, &w->au) < 0)
        fail("auth_new");
}

uint64_t fuzz_world_mix(uint64_t h, const void *p, size_t len)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t count_rows(void)
{
    uint64_t h = 1469598103934665603ULL;

    if (sqlite3_step(counts) != SQLITE_ROW)
        fail("counting rows");
    for (int i = 0; i < sqlite3_column_count(counts); i++) {
        const unsigned char *t = sqlite3_column_text(counts, i);
        h = fuzz_world_mix(h, t ? t : (const unsigned char *)"", t ? strlen((const char *)t) + 1 : 1);
    }
    sqlite3_reset(counts);
    return h;
}

/* The template's rows back into the file (the store's connections see it as a write by
 * another process). */
static void restore(void)
{
    /* BUSY here: the input left a statement or transaction of the store's open. */
    if (sqlite3_exec(live, restore_sql, NULL, NULL, NULL) != SQLITE_OK)
        fail("restoring the template (a transaction left open?)");
}

uint64_t fuzz_world_close(struct fuzz_world *w)
{
    uint64_t digest;
    int64_t v;

    auth_free(w->au);
    if (!keep_state) { /* first: freeing it stores what nodes reported (state_free) */
        state_free(w->state);
        w->state = NULL;
    }
    digest = digest_wanted ? count_rows() : 0; /* counting is a twentieth of an input */
    if ((v = data_version()) != seen_version) {
        state_free(w->state);
        restore();
        seen_version = v; /* live's own writes do not move it */
    } else if (keep_state) {
        kept = w->state;
    }
    *w = (struct fuzz_world){ 0 };
    return digest;
}

void fuzz_world_run(uint64_t (*run)(void *arg), void *arg)
{
    static unsigned long inputs;
    uint64_t first;

    digest_wanted = inputs++ % FUZZ_WORLD_TWICE_EVERY == 0;
    first = run(arg);
    if (digest_wanted && run(arg) != first) {
        fprintf(stderr, "fuzz world: the input came out differently when run again: the "
                        "first run left something behind\n");
        abort();
    }
}
