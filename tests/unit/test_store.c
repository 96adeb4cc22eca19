/* Contract tests for core/store, run once per backend: suite "sqlite" on a temporary file,
 * suite "postgres" on a fresh database per test when HS_TEST_PG_HOST (+ _PORT, _DB, _USER,
 * optional _PASS) point at a server, e.g. one started by tests/lib/pgtmp.sh:
 *
 *   eval "$(tests/lib/pgtmp.sh start /tmp/pg)"
 *   HS_TEST_PG_HOST=$PGHOST HS_TEST_PG_PORT=$PGPORT HS_TEST_PG_DB=$PGDATABASE \
 *   HS_TEST_PG_USER=$PGUSER build/tests/unit/test_store
 *
 * Without them the postgres tests are skipped. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/migrations.h"
#include "store/store.h"
#include "store/store_internal.h"

#define MAX_EVENTS 256

enum backend { BE_SQLITE, BE_PG };

static struct fixture {
    enum backend be;
    bool skip;
    struct hs_config cfg;
    char dir[64];     /* sqlite: the temporary folder */
    char path[128];   /* sqlite: the database file, in a subfolder that does not exist yet */
    char dbname[64];  /* postgres: this test's database */
    char dbname2[72]; /* postgres: a second, empty one when a test asks for it */
    struct notify_bus *bus;
    struct store *st;
    pthread_mutex_t mu;
    struct notify_event ev[MAX_EVENTS];
    size_t nev;
} fx;

/* ---- events ---- */

static void on_event(const struct notify_event *ev, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&fx.mu);
    if (fx.nev < MAX_EVENTS)
        fx.ev[fx.nev++] = *ev;
    pthread_mutex_unlock(&fx.mu);
}

static void ev_clear(void)
{
    fx.nev = 0;
}

static void expect_event(size_t i, enum notify_entity e, enum notify_op op, uint64_t id)
{
    cr_assert_gt(fx.nev, i, "expected an event #%zu, have %zu", i, fx.nev);
    cr_expect_eq(fx.ev[i].entity, e, "event %zu: entity %s, want %s", i,
                 notify_entity_name(fx.ev[i].entity), notify_entity_name(e));
    cr_expect_eq(fx.ev[i].op, op, "event %zu: op %s, want %s", i, notify_op_name(fx.ev[i].op),
                 notify_op_name(op));
    cr_expect_eq(fx.ev[i].id, id, "event %zu: id %llu, want %llu", i,
                 (unsigned long long)fx.ev[i].id, (unsigned long long)id);
}

/* ---- PostgreSQL: one database per test, so tests (and parallel jobs) cannot see each other */

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);

    return v && *v ? v : dflt;
}

static PGconn *pg_admin(void)
{
    const char *kw[] = { "host", "port", "dbname", "user", "password", NULL };
    const char *val[] = { getenv("HS_TEST_PG_HOST"), env_or("HS_TEST_PG_PORT", "5432"),
                          env_or("HS_TEST_PG_DB", "headscale"), env_or("HS_TEST_PG_USER", NULL),
                          env_or("HS_TEST_PG_PASS", NULL), NULL };
    PGconn *c = PQconnectdbParams(kw, val, 0);

    cr_assert(PQstatus(c) == CONNECTION_OK, "admin connection: %s", PQerrorMessage(c));
    return c;
}

static void pg_admin_exec(const char *sql)
{
    PGconn *c = pg_admin();
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);

    PQclear(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        cr_log_warn("%s: %s", sql, PQerrorMessage(c));
    PQfinish(c);
    cr_assert(s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK);
}

/* ---- setup / teardown ---- */

static void open_store(void)
{
    cr_assert_eq(store_open(&fx.cfg, fx.bus, &fx.st), 0);
}

static void reopen_store(void)
{
    store_close(fx.st);
    fx.st = NULL;
    open_store();
}

static void common_init(enum backend be)
{
    memset(&fx, 0, sizeof(fx));
    fx.be = be;
    pthread_mutex_init(&fx.mu, NULL);
    fx.bus = notify_new();
    cr_assert_gt(notify_subscribe(fx.bus, on_event, NULL), 0);
}

static void sqlite_init(void)
{
    common_init(BE_SQLITE);
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_store.XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.path, sizeof(fx.path), "%s/sub/dir/db.sqlite", fx.dir);
    fx.cfg.db_type = DB_SQLITE;
    fx.cfg.sqlite_path = fx.path;
    fx.cfg.sqlite_wal = true;
    open_store();
}

static void pg_init(void)
{
    static unsigned seq;
    char sql[160];

    common_init(BE_PG);
    if (!getenv("HS_TEST_PG_HOST")) {
        fx.skip = true;
        return;
    }
    /* Only digits go into the name, so building this statement is safe. */
    snprintf(fx.dbname, sizeof(fx.dbname), "hs_test_%d_%u", (int)getpid(), seq++);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", fx.dbname);
    pg_admin_exec(sql);
    fx.cfg.db_type = DB_POSTGRES;
    fx.cfg.pg_host = getenv("HS_TEST_PG_HOST");
    fx.cfg.pg_port = atoi(env_or("HS_TEST_PG_PORT", "5432"));
    fx.cfg.pg_name = fx.dbname;
    fx.cfg.pg_user = (char *)env_or("HS_TEST_PG_USER", NULL);
    fx.cfg.pg_pass = (char *)env_or("HS_TEST_PG_PASS", NULL);
    fx.cfg.pg_sslmode = "false";
    fx.cfg.pg_max_open_conns = 4;
    fx.cfg.pg_max_idle_conns = 4;
    open_store();
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fx_fini(void)
{
    char sql[160];

    store_close(fx.st);
    fx.st = NULL;
    notify_free(fx.bus);
    if (fx.be == BE_SQLITE && fx.dir[0])
        nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    if (fx.be == BE_PG && fx.dbname[0]) {
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx.dbname);
        pg_admin_exec(sql);
    }
    if (fx.be == BE_PG && fx.dbname2[0]) {
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx.dbname2);
        pg_admin_exec(sql);
    }
    pthread_mutex_destroy(&fx.mu);
}

/* Each contract test runs on both backends. */
#define STORE_TEST(name)                                                                   \
    static void name##_body(void);                                                         \
    Test(sqlite, name, .init = sqlite_init, .fini = fx_fini)                               \
    {                                                                                      \
        name##_body();                                                                     \
    }                                                                                      \
    Test(postgres, name, .init = pg_init, .fini = fx_fini)                                 \
    {                                                                                      \
        if (fx.skip)                                                                       \
            cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");     \
        name##_body();                                                                     \
    }                                                                                      \
    static void name##_body(void)

/* ---- helpers ---- */

static uint64_t mk_user(const char *name)
{
    struct store_user in = { .name = (char *)name }, out;
    uint64_t id;

    cr_assert_eq(store_user_create(fx.st, &in, &out), 0, "create user %s", name);
    id = out.id;
    store_user_free(&out);
    return id;
}

static uint64_t mk_key(uint64_t user_id, const char *prefix, bool reusable)
{
    struct store_preauthkey in = { .user_id = user_id, .reusable = reusable }, out;
    uint64_t id;

    hs_strlcpy(in.prefix, prefix, sizeof(in.prefix));
    memset(in.hash, 0xab, sizeof(in.hash));
    cr_assert_eq(store_preauthkey_create(fx.st, &in, &out), 0, "create key %s", prefix);
    id = out.id;
    store_preauthkey_free(&out);
    return id;
}

/* Nodes have no write API yet (the control-protocol issue adds it): raw SQL. */
static uint64_t mk_node(uint64_t user_id, uint8_t seed, const char *given_name)
{
    char mkey[80], nkey[80], dkey[80], hex[65], user[24], ipv4[24];
    const char *params[8];
    struct store_result res;
    uint64_t id;

    memset(hex, '0' + seed % 10, 64);
    hex[64] = '\0';
    snprintf(mkey, sizeof(mkey), "mkey:%s", hex);
    snprintf(nkey, sizeof(nkey), "nodekey:%s", hex);
    snprintf(dkey, sizeof(dkey), "discokey:%s", hex);
    snprintf(user, sizeof(user), "%llu", (unsigned long long)user_id);
    snprintf(ipv4, sizeof(ipv4), "100.64.0.%u", seed);
    params[0] = mkey;
    params[1] = nkey;
    params[2] = dkey;
    params[3] = given_name;
    params[4] = user_id ? user : NULL;
    params[5] = "1700000000000000";
    params[6] = ipv4;
    params[7] = given_name;
    cr_assert_eq(store__exec(fx.st,
                             "INSERT INTO nodes (machine_key, node_key, disco_key, ipv4, hostname,"
                             " given_name, user_id, register_method, tags, approved_routes,"
                             " last_seen, created_at, updated_at)"
                             " VALUES ($1, $2, $3, $7, $4, $8, $5, 'authkey',"
                             " '[\"tag:a\",\"tag:b\"]', '[\"10.0.0.0/24\"]', $6, $6, $6)"
                             " RETURNING id",
                             8, params, &res),
                 0);
    id = store__cell_u64(&res, 0, 0);
    store__result_free(&res);
    return id;
}

static size_t count_rows(const char *table_sql)
{
    struct store_result res;
    size_t n;

    cr_assert_eq(store__exec(fx.st, table_sql, 0, NULL, &res), 0);
    n = (size_t)store__cell_u64(&res, 0, 0);
    store__result_free(&res);
    return n;
}

/* ---- schema ---- */

static size_t embedded_migrations(const char *backend)
{
    size_t n = 0;

    for (const struct migration *m = store_migrations; m->backend; m++)
        n += strcmp(m->backend, backend) == 0;
    return n;
}

STORE_TEST(migrations_apply_and_are_recorded)
{
    int applied = -1, known = -1;

    cr_assert_str_eq(store_backend_name(fx.st), fx.be == BE_PG ? "postgres" : "sqlite");
    cr_assert_eq(store_schema_version(fx.st, &applied, &known), 0);
    cr_assert_geq(known, 1);
    cr_assert_eq(applied, known);
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM schema_migrations"),
                 embedded_migrations(store_backend_name(fx.st)), "numbers may have gaps");
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM schema_migrations WHERE name = 'init'"), 1);
    cr_assert_eq(store_ping(fx.st), 0);
}

STORE_TEST(reopen_is_a_noop_and_keeps_data)
{
    struct store_user u;
    int applied = 0, known = 0;
    uint64_t id = mk_user("alice");
    size_t before = count_rows("SELECT COUNT(*) FROM schema_migrations");

    reopen_store();
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM schema_migrations"), before);
    cr_assert_eq(store_schema_version(fx.st, &applied, &known), 0);
    cr_assert_eq(applied, known);
    cr_assert_eq(store_user_get(fx.st, id, &u), 0);
    cr_assert_str_eq(u.name, "alice");
    store_user_free(&u);
}

/* Migrations land out of order while a release is made (0007 merged before 0006): a database
 * that recorded the higher one must still get the lower one. */
STORE_TEST(a_migration_missed_below_the_highest_is_applied)
{
    const char *drop[] = { "DELETE FROM schema_migrations WHERE version = 6",
                           "DROP TABLE dns_settings" };

    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(store__exec(fx.st, drop[i], 0, NULL, NULL), 0, "%s", drop[i]);
    reopen_store();
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM schema_migrations WHERE version = 6"), 1);
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM dns_settings"), 0, "the table is back");
}

STORE_TEST(newer_schema_is_refused)
{
    const char *params[] = { "9999", "future", "0" };

    cr_assert_eq(store__exec(fx.st,
                             "INSERT INTO schema_migrations (version, name, applied_at)"
                             " VALUES ($1, $2, $3)",
                             3, params, NULL),
                 0);
    store_close(fx.st);
    fx.st = NULL;
    cr_assert_eq(store_open(&fx.cfg, fx.bus, &fx.st), -EPROTO);
    cr_assert_null(fx.st);
}

STORE_TEST(server_secret_is_stable)
{
    uint8_t a[STORE_KEY_LEN], b[STORE_KEY_LEN], zero[STORE_KEY_LEN] = { 0 };

    cr_assert_eq(store_server_secret(fx.st, a), 0);
    cr_assert_neq(memcmp(a, zero, sizeof(a)), 0);
    cr_assert_eq(store_server_secret(fx.st, b), 0);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
    reopen_store();
    cr_assert_eq(store_server_secret(fx.st, b), 0);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
    cr_assert_eq(fx.nev, 0, "the secret is not an entity: no events");
}

/* ---- users ---- */

STORE_TEST(user_crud)
{
    struct store_user in = { .name = "alice", .display_name = "Alice A.", .email = "a@x.org" };
    struct store_user u, *v;
    struct store_user_filter f = { .name = "bob" };
    size_t n;

    cr_assert_eq(store_user_create(fx.st, &in, &u), 0);
    cr_assert_gt(u.id, 0);
    cr_assert_str_eq(u.name, "alice");
    cr_assert_str_eq(u.display_name, "Alice A.");
    cr_assert_null(u.provider_id);
    cr_assert_gt(u.created_at, 0);
    cr_assert_eq(u.created_at, u.updated_at);
    expect_event(0, NOTIFY_USER, NOTIFY_CREATE, u.id);
    store_user_free(&u);
    mk_user("bob");

    cr_assert_eq(store_user_get_by_name(fx.st, "alice", &u), 0);
    cr_assert_str_eq(u.email, "a@x.org");
    store_user_free(&u);
    cr_assert_eq(store_user_get_by_name(fx.st, "carol", &u), -ENOENT);
    cr_assert_eq(store_user_get(fx.st, 999, &u), -ENOENT);

    cr_assert_eq(store_user_list(fx.st, NULL, &v, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[0].name, "alice");
    cr_assert_str_eq(v[1].name, "bob");
    store_user_list_free(v, n);
    cr_assert_eq(store_user_list(fx.st, &f, &v, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(v[0].name, "bob");
    store_user_list_free(v, n);
    f = (struct store_user_filter){ .email = "a@x.org" };
    cr_assert_eq(store_user_list(fx.st, &f, &v, &n), 0);
    cr_assert_eq(n, 1);
    store_user_list_free(v, n);
    f = (struct store_user_filter){ .id = 12345 };
    cr_assert_eq(store_user_list(fx.st, &f, &v, &n), 0);
    cr_assert_eq(n, 0);
    store_user_list_free(v, n);

    ev_clear();
    cr_assert_eq(store_user_get_by_name(fx.st, "bob", &u), 0);
    cr_assert_eq(store_user_rename(fx.st, u.id, "robert"), 0);
    expect_event(0, NOTIFY_USER, NOTIFY_UPDATE, u.id);
    cr_assert_eq(store_user_rename(fx.st, 999, "x"), -ENOENT);
    cr_assert_eq(store_user_delete(fx.st, u.id), 0);
    expect_event(1, NOTIFY_USER, NOTIFY_DELETE, u.id);
    cr_assert_eq(fx.nev, 2);
    cr_assert_eq(store_user_delete(fx.st, u.id), -ENOENT);
    cr_assert_eq(fx.nev, 2);
    store_user_free(&u);
    cr_assert_eq(store_user_create(fx.st, &(struct store_user){ .name = "" }, &u), -EINVAL);
}

STORE_TEST(user_unique_names)
{
    struct store_user oidc = { .name = "alice", .provider_id = "https://idp/123",
                               .provider = "oidc" };
    struct store_user u;
    uint64_t alice = mk_user("alice"), bob = mk_user("bob");

    ev_clear();
    cr_assert_eq(store_user_create(fx.st, &(struct store_user){ .name = "alice" }, &u), -EEXIST);
    cr_assert_eq(store_user_rename(fx.st, bob, "alice"), -EEXIST);
    cr_assert_eq(fx.nev, 0, "no event for a failed write");
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM users"), 2);
    cr_assert_eq(store_user_get(fx.st, bob, &u), 0);
    cr_assert_str_eq(u.name, "bob");
    store_user_free(&u);

    /* A local and an OIDC "alice" coexist; the OIDC identity itself is unique. */
    cr_assert_eq(store_user_create(fx.st, &oidc, &u), 0);
    cr_assert_str_eq(u.provider_id, "https://idp/123");
    store_user_free(&u);
    oidc.name = "alice2";
    cr_assert_eq(store_user_create(fx.st, &oidc, &u), -EEXIST);
    cr_assert_eq(store_user_get_by_name(fx.st, "alice", &u), 0);
    cr_assert_eq(u.id, alice, "the local user wins a name lookup");
    store_user_free(&u);
    cr_assert_eq(fx.nev, 1);
}

/* An OIDC user is found by its identifier; a login's profile replaces the stored one (groups
 * included) with one update event, and the name stays. */
STORE_TEST(user_provider_profile)
{
    static char *groups[] = { "eng", "ops" };
    struct store_user in = { .name = "dana", .provider_id = "https://idp/dana",
                             .provider = "oidc", .groups = { groups, 2 } };
    struct store_user u, got;

    cr_assert_eq(store_user_create(fx.st, &in, &u), 0);
    cr_assert_eq(u.groups.n, 2);
    cr_assert_eq(store_user_get_by_provider_id(fx.st, "https://idp/dana", &got), 0);
    cr_assert_eq(got.id, u.id);
    cr_assert(hs_strv_equal(&got.groups, &in.groups));
    store_user_free(&got);
    cr_assert_eq(store_user_get_by_provider_id(fx.st, "https://idp/none", &got), -ENOENT);
    cr_assert_eq(store_user_get_by_provider_id(fx.st, "", &got), -EINVAL);

    ev_clear();
    in = (struct store_user){ .display_name = "Dana D.", .email = "dana@x.org",
                              .profile_pic_url = "https://pic/d", .groups = { groups + 1, 1 } };
    cr_assert_eq(store_user_update_profile(fx.st, u.id, &in, &got), 0);
    expect_event(0, NOTIFY_USER, NOTIFY_UPDATE, u.id);
    cr_assert_str_eq(got.name, "dana");
    cr_assert_str_eq(got.display_name, "Dana D.");
    cr_assert_str_eq(got.email, "dana@x.org");
    cr_assert_str_eq(got.profile_pic_url, "https://pic/d");
    cr_assert_eq(got.groups.n, 1);
    cr_assert_str_eq(got.groups.v[0], "ops");
    store_user_free(&got);
    cr_assert_eq(store_user_update_profile(fx.st, 999, &in, &got), -ENOENT);
    cr_assert_eq(fx.nev, 1);
    store_user_free(&u);
}

STORE_TEST(user_delete_takes_its_keys)
{
    struct store_preauthkey *v;
    size_t n;
    uint64_t alice = mk_user("alice"), bob = mk_user("bob");
    uint64_t k1 = mk_key(alice, "aaaaaaaaaaa1", false), k2 = mk_key(alice, "aaaaaaaaaaa2", true);
    uint64_t k3 = mk_key(bob, "bbbbbbbbbbb1", false);

    ev_clear();
    cr_assert_eq(store_user_delete(fx.st, alice), 0);
    cr_assert_eq(fx.nev, 3);
    expect_event(0, NOTIFY_PREAUTHKEY, NOTIFY_DELETE, k1);
    expect_event(1, NOTIFY_PREAUTHKEY, NOTIFY_DELETE, k2);
    expect_event(2, NOTIFY_USER, NOTIFY_DELETE, alice);
    cr_assert_eq(store_preauthkey_list(fx.st, 0, &v, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(v[0].id, k3);
    store_preauthkey_list_free(v, n);
}

STORE_TEST(user_delete_refused_while_nodes)
{
    struct store_user u;
    struct store_node node, *nodes;
    size_t n;
    uint64_t alice = mk_user("alice"), key = mk_key(alice, "aaaaaaaaaaa1", false);
    uint64_t nid = mk_node(alice, 1, "laptop");

    ev_clear();
    cr_assert_eq(store_user_delete(fx.st, alice), -EBUSY);
    cr_assert_eq(fx.nev, 0, "no event for a refused delete");
    cr_assert_eq(store_user_get(fx.st, alice, &u), 0);
    store_user_free(&u);
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM pre_auth_keys"), 1, "keys kept (rollback)");

    cr_assert_eq(store_node_get(fx.st, nid, &node), 0);
    cr_assert_eq(node.user_id, alice);
    cr_assert_eq(node.machine_key[0], 0x11);
    cr_assert_eq(node.disco_key[31], 0x11);
    cr_assert_str_eq(node.ipv4, "100.64.0.1");
    cr_assert_null(node.ipv6);
    cr_assert_str_eq(node.given_name, "laptop");
    cr_assert_eq(node.register_method, REGISTER_AUTH_KEY);
    cr_assert_eq(node.tags.n, 2);
    cr_assert_str_eq(node.tags.v[1], "tag:b");
    cr_assert_eq(node.approved_routes.n, 1);
    cr_assert_eq(node.last_seen, INT64_C(1700000000000000));
    cr_assert_eq(node.expiry, 0);
    store_node_free(&node);
    mk_node(0, 2, "tagged");
    cr_assert_eq(store_node_list(fx.st, alice, &nodes, &n), 0);
    cr_assert_eq(n, 1);
    store_node_list_free(nodes, n);
    cr_assert_eq(store_node_list(fx.st, 0, &nodes, &n), 0);
    cr_assert_eq(n, 2);
    store_node_list_free(nodes, n);

    cr_assert_eq(store_node_delete(fx.st, nid), 0);
    expect_event(0, NOTIFY_NODE, NOTIFY_DELETE, nid);
    cr_assert_eq(store_node_delete(fx.st, nid), -ENOENT);
    cr_assert_eq(store_user_delete(fx.st, alice), 0);
    expect_event(1, NOTIFY_PREAUTHKEY, NOTIFY_DELETE, key);
    expect_event(2, NOTIFY_USER, NOTIFY_DELETE, alice);
    cr_assert_eq(fx.nev, 3);
}

/* ---- pre-auth keys ---- */

STORE_TEST(preauthkey_crud)
{
    struct store_preauthkey in = { .ephemeral = true, .expiration = 42 }, k, *v;
    size_t n;
    uint64_t alice = mk_user("alice");

    in.user_id = alice;
    hs_strlcpy(in.prefix, "0123456789ab", sizeof(in.prefix));
    for (size_t i = 0; i < sizeof(in.hash); i++)
        in.hash[i] = (uint8_t)i;
    hs_strv_push(&in.tags, "tag:server");
    ev_clear();
    cr_assert_eq(store_preauthkey_create(fx.st, &in, &k), 0);
    expect_event(0, NOTIFY_PREAUTHKEY, NOTIFY_CREATE, k.id);
    cr_assert_str_eq(k.prefix, "0123456789ab");
    cr_assert_eq(memcmp(k.hash, in.hash, sizeof(k.hash)), 0);
    cr_assert_eq(k.user_id, alice);
    cr_assert(k.ephemeral && !k.reusable && !k.used);
    cr_assert_eq(k.tags.n, 1);
    cr_assert_str_eq(k.tags.v[0], "tag:server");
    cr_assert_eq(k.expiration, 42);
    store_preauthkey_free(&k);

    /* The same prefix again, an unknown user, a bad prefix: refused, no event. */
    cr_assert_eq(store_preauthkey_create(fx.st, &in, &k), -EEXIST);
    hs_strlcpy(in.prefix, "0123456789ac", sizeof(in.prefix));
    in.user_id = 999;
    cr_assert_eq(store_preauthkey_create(fx.st, &in, &k), -ENOENT);
    in.prefix[0] = '\0';
    cr_assert_eq(store_preauthkey_create(fx.st, &in, &k), -EINVAL);
    cr_assert_eq(fx.nev, 1);
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM pre_auth_keys"), 1);
    hs_strv_free(&in.tags);

    /* A tag-only key has no user. */
    hs_strlcpy(in.prefix, "tagonly00001", sizeof(in.prefix));
    in.user_id = 0;
    cr_assert_eq(store_preauthkey_create(fx.st, &in, &k), 0);
    cr_assert_eq(k.user_id, 0);
    cr_assert_eq(k.tags.n, 0);
    store_preauthkey_free(&k);

    cr_assert_eq(store_preauthkey_get_by_prefix(fx.st, "0123456789ab", &k), 0);
    cr_assert_eq(store_preauthkey_list(fx.st, alice, &v, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(v[0].id, k.id);
    store_preauthkey_list_free(v, n);
    cr_assert_eq(store_preauthkey_list(fx.st, 0, &v, &n), 0);
    cr_assert_eq(n, 2);
    store_preauthkey_list_free(v, n);

    ev_clear();
    cr_assert_eq(store_preauthkey_expire(fx.st, k.id, 1234), 0);
    expect_event(0, NOTIFY_PREAUTHKEY, NOTIFY_UPDATE, k.id);
    store_preauthkey_free(&k);
    cr_assert_eq(store_preauthkey_get_by_prefix(fx.st, "0123456789ab", &k), 0);
    cr_assert_eq(k.expiration, 1234);
    cr_assert_eq(store_preauthkey_delete(fx.st, k.id), 0);
    expect_event(1, NOTIFY_PREAUTHKEY, NOTIFY_DELETE, k.id);
    cr_assert_eq(store_preauthkey_delete(fx.st, k.id), -ENOENT);
    cr_assert_eq(store_preauthkey_get(fx.st, k.id, &k), -ENOENT);
    cr_assert_eq(store_preauthkey_expire(fx.st, 999, 1), -ENOENT);
    cr_assert_eq(fx.nev, 2);
    store_preauthkey_free(&k);
}

STORE_TEST(preauthkey_use_single_and_reusable)
{
    struct store_preauthkey k;
    uint64_t alice = mk_user("alice");
    uint64_t once = mk_key(alice, "once00000001", false), many = mk_key(alice, "many00000001", true);

    ev_clear();
    cr_assert_eq(store_preauthkey_use(fx.st, once), 0);
    expect_event(0, NOTIFY_PREAUTHKEY, NOTIFY_UPDATE, once);
    cr_assert_eq(store_preauthkey_use(fx.st, once), -EACCES);
    cr_assert_eq(fx.nev, 1, "no event for a refused use");
    cr_assert_eq(store_preauthkey_get(fx.st, once, &k), 0);
    cr_assert(k.used);
    store_preauthkey_free(&k);

    cr_assert_eq(store_preauthkey_use(fx.st, many), 0);
    cr_assert_eq(store_preauthkey_use(fx.st, many), 0);
    cr_assert_eq(store_preauthkey_use(fx.st, many), 0);
    cr_assert_eq(fx.nev, 2, "only the first use changes a reusable key");
    expect_event(1, NOTIFY_PREAUTHKEY, NOTIFY_UPDATE, many);
    cr_assert_eq(store_preauthkey_use(fx.st, 999), -ENOENT);
}

struct race {
    uint64_t key;
    int rc;
};

static void *use_key(void *arg)
{
    struct race *r = arg;

    r->rc = store_preauthkey_use(fx.st, r->key);
    return NULL;
}

STORE_TEST(preauthkey_single_use_race)
{
    enum { N = 8 };
    pthread_t t[N];
    struct race r[N];
    int ok = 0, denied = 0;
    uint64_t key = mk_key(mk_user("alice"), "race00000001", false);

    ev_clear();
    for (int i = 0; i < N; i++) {
        r[i] = (struct race){ .key = key };
        cr_assert_eq(pthread_create(&t[i], NULL, use_key, &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += r[i].rc == 0;
        denied += r[i].rc == -EACCES;
    }
    cr_assert_eq(ok, 1);
    cr_assert_eq(denied, N - 1);
    cr_assert_eq(fx.nev, 1);
}

/* ---- API keys ---- */

STORE_TEST(apikey_crud)
{
    struct store_apikey in = { .expiration = 5000000 }, k, *v;
    size_t n;

    hs_strlcpy(in.prefix, "abcdef012345", sizeof(in.prefix));
    memset(in.hash, 0x5a, sizeof(in.hash));
    cr_assert_eq(store_apikey_create(fx.st, &in, &k), 0);
    expect_event(0, NOTIFY_APIKEY, NOTIFY_CREATE, k.id);
    cr_assert_eq(k.expiration, 5000000);
    cr_assert_eq(k.last_seen, 0);
    cr_assert_eq(memcmp(k.hash, in.hash, sizeof(k.hash)), 0);
    cr_assert_eq(store_apikey_create(fx.st, &in, &k), -EEXIST);
    cr_assert_eq(fx.nev, 1);

    cr_assert_eq(store_apikey_touch(fx.st, k.id, 777), 0);
    cr_assert_eq(fx.nev, 1, "touch publishes nothing");
    cr_assert_eq(store_apikey_touch(fx.st, 999, 777), -ENOENT);
    cr_assert_eq(store_apikey_expire(fx.st, k.id, 888), 0);
    expect_event(1, NOTIFY_APIKEY, NOTIFY_UPDATE, k.id);
    cr_assert_eq(store_apikey_get_by_prefix(fx.st, "abcdef012345", &k), 0);
    cr_assert_eq(k.last_seen, 777);
    cr_assert_eq(k.expiration, 888);
    cr_assert_eq(store_apikey_get_by_prefix(fx.st, "nope", &k), -ENOENT);

    hs_strlcpy(in.prefix, "abcdef012346", sizeof(in.prefix));
    in.expiration = 0;
    cr_assert_eq(store_apikey_create(fx.st, &in, &k), 0);
    cr_assert_eq(k.expiration, 0);
    cr_assert_eq(store_apikey_list(fx.st, &v, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_lt(v[0].id, v[1].id);
    store_apikey_list_free(v, n);
    cr_assert_eq(store_apikey_delete(fx.st, k.id), 0);
    expect_event(3, NOTIFY_APIKEY, NOTIFY_DELETE, k.id);
    cr_assert_eq(store_apikey_delete(fx.st, k.id), -ENOENT);
    cr_assert_eq(store_apikey_get(fx.st, k.id, &k), -ENOENT);
    cr_assert_eq(fx.nev, 4);
}

/* ---- policy ---- */

STORE_TEST(policy_history)
{
    char *text = NULL;
    int64_t at = 0, at2 = 0;

    cr_assert_eq(store_policy_get(fx.st, &text, &at), -ENOENT);
    cr_assert_eq(store_policy_set(fx.st, "{\"acls\":[]}", NULL, 0, &at, NULL), 0);
    expect_event(0, NOTIFY_POLICY, NOTIFY_UPDATE, 0);
    cr_assert_eq(store_policy_set(fx.st, "{\"acls\":[1]}", NULL, 0, NULL, NULL), 0);
    cr_assert_eq(fx.nev, 2);
    cr_assert_eq(store_policy_get(fx.st, &text, &at2), 0);
    cr_assert_str_eq(text, "{\"acls\":[1]}");
    cr_assert_geq(at2, at);
    free(text);
    reopen_store();
    cr_assert_eq(store_policy_get(fx.st, &text, NULL), 0);
    cr_assert_str_eq(text, "{\"acls\":[1]}");
    free(text);
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM policies"), 2, "history is kept");
}

/* Every save is a version; past STORE_POLICY_VERSIONS the oldest go, in the same write. */
STORE_TEST(policy_versions_bounded)
{
    struct store_policy_version *v, one;
    uint64_t first = 0, id = 0;
    char text[64];
    size_t n;

    for (int i = 0; i < STORE_POLICY_VERSIONS + 5; i++) {
        snprintf(text, sizeof(text), "{\"acls\": [], \"n\": %d}", i);
        cr_assert_eq(store_policy_set(fx.st, text, i % 2 ? "cli" : "0123456789ab", 0, NULL, &id),
                     0);
        if (i == 0)
            first = id;
    }
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM policies"), STORE_POLICY_VERSIONS);
    cr_assert_eq(store_policy_versions(fx.st, &v, &n), 0);
    cr_assert_eq(n, STORE_POLICY_VERSIONS);
    cr_assert_eq(v[0].id, id, "newest first");
    cr_assert_eq(v[n - 1].id, first + 5, "the five oldest went");
    cr_assert_str_eq(v[0].saved_by, "0123456789ab");
    cr_assert_str_eq(v[1].saved_by, "cli");
    cr_assert_null(v[0].text, "lists carry no text");
    snprintf(text, sizeof(text), "{\"acls\": [], \"n\": %d}", STORE_POLICY_VERSIONS + 4);
    cr_assert_eq(v[0].size, strlen(text));
    store_policy_versions_free(v, n);
    cr_assert_eq(store_policy_version_get(fx.st, first, &one), -ENOENT);
    cr_assert_eq(store_policy_version_get(fx.st, id - 1, &one), 0);
    cr_assert_eq(store_policy_set(fx.st, one.text, "cli", one.id, NULL, &id), 0);
    free(one.text);
    cr_assert_eq(store_policy_version_get(fx.st, id, &one), 0);
    cr_assert_eq(one.restored_from, id - 2, "a rollback names the version it copied");
    snprintf(text, sizeof(text), "{\"acls\": [], \"n\": %d}", STORE_POLICY_VERSIONS + 3);
    cr_assert_str_eq(one.text, text);
    free(one.text);
}

/* ---- DNS settings ---- */

STORE_TEST(dns_settings_set_replace_clear)
{
    char *text = NULL;
    int64_t at = 0, at2 = 0;

    cr_assert_eq(store_dns_get(fx.st, &text, &at), -ENOENT);
    cr_assert_eq(store_dns_clear(fx.st), -ENOENT);
    cr_assert_eq(fx.nev, 0, "clearing nothing announces nothing");
    cr_assert_eq(store_dns_set(fx.st, "{\"magicDns\":true}", &at), 0);
    expect_event(0, NOTIFY_DNS, NOTIFY_UPDATE, 1);
    cr_assert_eq(store_dns_set(fx.st, "{\"magicDns\":false}", NULL), 0);
    expect_event(1, NOTIFY_DNS, NOTIFY_UPDATE, 1);
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM dns_settings"), 1, "one row, replaced");
    reopen_store();
    cr_assert_eq(store_dns_get(fx.st, &text, &at2), 0);
    cr_assert_str_eq(text, "{\"magicDns\":false}");
    cr_assert_geq(at2, at);
    free(text);
    cr_assert_eq(store_dns_clear(fx.st), 0);
    cr_assert_eq(store_dns_get(fx.st, &text, NULL), -ENOENT);
}

/* ---- pending registrations ---- */

static void mk_registration(const char *id, int64_t expires_at)
{
    struct store_registration r = { .id = (char *)id, .data_json = "{}",
                                    .expires_at = expires_at };

    memset(r.machine_key, 1, sizeof(r.machine_key));
    memset(r.node_key, 2, sizeof(r.node_key));
    cr_assert_eq(store_registration_create(fx.st, &r), 0, "create %s", id);
}

STORE_TEST(registration_trim_expires_and_bounds)
{
    int64_t now = hs_now_us();
    struct store_registration r;
    size_t n = 0;

    mk_registration("hskey-authreq-gone1", now - 2);
    mk_registration("hskey-authreq-gone2", now);
    for (int i = 1; i <= 4; i++) {
        char id[40];
        snprintf(id, sizeof(id), "hskey-authreq-live%d", i);
        mk_registration(id, now + i * HS_USEC_PER_SEC);
    }
    cr_assert_eq(store_registration_trim(fx.st, now, 100), 2, "the expired ones only");
    cr_assert_eq(store_registration_count(fx.st, &n), 0);
    cr_expect_eq(n, 4);
    cr_expect_eq(store_registration_get(fx.st, "hskey-authreq-gone2", &r), -ENOENT);
    cr_assert_eq(store_registration_trim(fx.st, now, 100), 0, "nothing more to do");
    cr_assert_eq(store_registration_trim(fx.st, now, 2), 2, "the two that expire first go");
    cr_assert_eq(store_registration_count(fx.st, &n), 0);
    cr_expect_eq(n, 2);
    cr_expect_eq(store_registration_get(fx.st, "hskey-authreq-live2", &r), -ENOENT);
    cr_assert_eq(store_registration_get(fx.st, "hskey-authreq-live4", &r), 0);
    store_registration_free(&r);
    cr_assert_eq(store_registration_trim(fx.st, now, 0), 2, "keep 0: all go");
    cr_assert_eq(store_registration_count(fx.st, &n), 0);
    cr_expect_eq(n, 0);
}

/* ---- replicas ---- */

/* A config for a second, empty database of this test's backend (cleaned up by fx_fini). */
static void empty_db_config(struct hs_config *cfg, char *path, size_t size)
{
    char sql[160];

    *cfg = fx.cfg;
    if (fx.be == BE_SQLITE) {
        snprintf(path, size, "%s/replicas.sqlite", fx.dir);
        cfg->sqlite_path = path;
        return;
    }
    snprintf(fx.dbname2, sizeof(fx.dbname2), "%s_b", fx.dbname);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", fx.dbname2);
    pg_admin_exec(sql);
    cfg->pg_name = fx.dbname2;
}

struct opener {
    const struct hs_config *cfg;
    struct store *st;
    int rc;
};

static void *open_replica(void *arg)
{
    struct opener *o = arg;

    o->rc = store_open(o->cfg, NULL, &o->st);
    return NULL;
}

/* Replicas starting together on an empty database: one migrates, the others wait and find
 * nothing to do (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE + re-check). */
STORE_TEST(replicas_migrate_once)
{
    enum { N = 4 };
    struct hs_config cfg;
    char path[128];
    pthread_t t[N];
    struct opener o[N];
    int applied = 0, known = 0;

    empty_db_config(&cfg, path, sizeof(path));
    for (int i = 0; i < N; i++) {
        o[i] = (struct opener){ .cfg = &cfg };
        cr_assert_eq(pthread_create(&t[i], NULL, open_replica, &o[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++)
        cr_expect_eq(o[i].rc, 0, "replica %d: %s", i, hs_strerror(o[i].rc));
    cr_assert_eq(store_schema_version(o[0].st, &applied, &known), 0);
    cr_assert_eq(applied, known);
    for (int i = 0; i < N; i++)
        store_close(o[i].st);
}

/* Leases and presence are timed by the database's clock, whatever the replicas' clocks say:
 * a live lease is kept, one that ran out is deleted with its replica's presence rows (and
 * each node that lost one announced). The replica's own clock is nowhere in the statements. */
Test(postgres, leases_run_on_the_database_clock, .init = pg_init, .fini = fx_fini)
{
    uint64_t node, *ids;
    struct store *dead;
    struct store_result res;
    size_t n, gone = 99;
    bool made, deleted = false;

    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    node = mk_node(mk_user("alice"), 1, "n1");
    cr_assert_eq(store_replica_renew(fx.st, "live:1", NULL, 30 * HS_USEC_PER_SEC, &made), 0);
    cr_expect(made);
    cr_assert_eq(store__exec(fx.st,
                             "SELECT lease_until - CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS"
                             " BIGINT) BETWEEN 29000000 AND 30000000 FROM replicas",
                             0, NULL, &res), 0);
    cr_expect(store__cell_bool(&res, 0, 0), "30 s ahead of the database's now");
    store__result_free(&res);

    /* a replica that renewed once, with a lease that ran out at once, then died */
    cr_assert_eq(store_open(&fx.cfg, NULL, &dead), 0);
    cr_assert_eq(store_replica_renew(dead, "dead:2", NULL, -HS_USEC_PER_SEC, &made), 0);
    cr_assert_eq(store_presence_write(dead, &node, 1, NULL, 0), 0);
    cr_assert_eq(store_presence_others(fx.st, &ids, &n), 0);
    cr_expect_eq(n, 1, "the dead replica's node is online until its lease is seen to run out");
    free(ids);

    ev_clear();
    cr_assert_eq(store_replicas_expire(fx.st, &gone), 0);
    cr_expect_eq(gone, 1);
    cr_assert_eq(store_presence_others(fx.st, &ids, &n), 0);
    cr_expect_eq(n, 0, "its node is offline");
    free(ids);
    for (size_t i = 0; i < fx.nev; i++)
        deleted = deleted || (fx.ev[i].entity == NOTIFY_PRESENCE &&
                              fx.ev[i].op == NOTIFY_DELETE && fx.ev[i].id == node);
    cr_expect(deleted, "and announced");
    cr_assert_eq(store_replica_renew(fx.st, "live:1", NULL, 30 * HS_USEC_PER_SEC, &made), 0);
    cr_expect_not(made, "the live lease was kept");
    store_close(dead);
}

/* Each replica finds the others' DERP relays beside their leases: its own is left out, so is
 * a replica whose lease ran out or that offers none, and a URL two replicas give (a restart
 * before the old lease ends) is listed once. */
Test(postgres, replicas_find_each_others_derp, .init = pg_init, .fini = fx_fini)
{
    struct store *b, *c, *gone, *none;
    struct hs_strv urls;
    char addr[64] = "x";
    bool made;

    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    cr_assert_eq(store_open(&fx.cfg, NULL, &b), 0);
    cr_assert_eq(store_open(&fx.cfg, NULL, &c), 0);
    cr_assert_eq(store_open(&fx.cfg, NULL, &gone), 0);
    cr_assert_eq(store_open(&fx.cfg, NULL, &none), 0);
    cr_assert_eq(store_replica_renew(fx.st, "a:1", "http://10.0.0.1:8080/derp",
                                     30 * HS_USEC_PER_SEC, &made), 0);
    cr_assert_eq(store_replica_renew(b, "b:2", "http://10.0.0.2:8080/derp",
                                     30 * HS_USEC_PER_SEC, &made), 0);
    cr_assert_eq(store_replica_renew(c, "c:3", "http://10.0.0.2:8080/derp",
                                     30 * HS_USEC_PER_SEC, &made), 0);
    cr_assert_eq(store_replica_renew(gone, "gone:4", "http://10.0.0.4:8080/derp",
                                     -HS_USEC_PER_SEC, &made), 0);
    cr_assert_eq(store_replica_renew(none, "none:5", NULL, 30 * HS_USEC_PER_SEC, &made), 0);

    cr_assert_eq(store_replica_derp_urls(fx.st, &urls), 0);
    cr_assert_eq(urls.n, 1);
    cr_expect_str_eq(urls.v[0], "http://10.0.0.2:8080/derp");
    hs_strv_free(&urls);
    cr_assert_eq(store_replica_derp_urls(b, &urls), 0);
    cr_assert_eq(urls.n, 2, "b sees a, and c's URL though it is b's own");
    cr_expect_str_eq(urls.v[0], "http://10.0.0.1:8080/derp");
    hs_strv_free(&urls);

    /* a URL changed at renewal replaces the old one */
    cr_assert_eq(store_replica_renew(b, "b:2", "http://10.0.0.9:8080/derp",
                                     30 * HS_USEC_PER_SEC, &made), 0);
    cr_expect_not(made);
    cr_assert_eq(store_replica_leave(c), 0);
    cr_assert_eq(store_replica_derp_urls(fx.st, &urls), 0);
    cr_assert_eq(urls.n, 1);
    cr_expect_str_eq(urls.v[0], "http://10.0.0.9:8080/derp");
    hs_strv_free(&urls);

    /* the test connects over TCP or a unix socket: an address, or none */
    cr_assert_eq(store_client_addr(fx.st, addr, sizeof(addr)), 0);
    cr_expect(addr[0] == '\0' || strchr(addr, '.') || strchr(addr, ':'), "%s", addr);
    store_close(b);
    store_close(c);
    store_close(gone);
    store_close(none);
}

/* ---- backend specifics ---- */

Test(sqlite, file_and_folder_are_private, .init = sqlite_init, .fini = fx_fini)
{
    struct stat sb;
    struct store_result res;

    cr_assert_eq(stat(fx.path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    cr_assert_eq(store__exec(fx.st, "PRAGMA journal_mode", 0, NULL, &res), 0);
    cr_assert_str_eq(store__cell(&res, 0, 0), "wal");
    store__result_free(&res);
    cr_assert_eq(store__exec(fx.st, "PRAGMA foreign_keys", 0, NULL, &res), 0);
    cr_assert_str_eq(store__cell(&res, 0, 0), "1");
    store__result_free(&res);
}

static const char *pragma(const char *name)
{
    static char out[32];
    struct store_result res;
    char sql[64];

    snprintf(sql, sizeof(sql), "PRAGMA %s", name);
    cr_assert_eq(store__exec(fx.st, sql, 0, NULL, &res), 0);
    snprintf(out, sizeof(out), "%s", store__cell(&res, 0, 0));
    store__result_free(&res);
    return out;
}

/* database.sqlite.write_ahead_log and wal_autocheckpoint (0 turns checkpoints off, -1 keeps
 * SQLite's 1000), as headscale passes them to SQLite. */
Test(sqlite, wal_follows_the_config, .init = sqlite_init, .fini = fx_fini)
{
    static const struct {
        bool wal;
        int checkpoint;
        const char *mode, *pages;
    } cases[] = {
        { true, 500, "wal", "500" },
        { true, 0, "wal", "0" },
        { true, -1, "wal", "1000" },
        { false, 500, "delete", "1000" },
    };

    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        fx.cfg.sqlite_wal = cases[i].wal;
        fx.cfg.sqlite_wal_autocheckpoint = cases[i].checkpoint;
        if (!cases[i].wal) { /* leaving WAL needs the database to itself: start afresh */
            store_close(fx.st);
            fx.st = NULL;
            snprintf(fx.path, sizeof(fx.path), "%s/plain.sqlite", fx.dir);
        }
        reopen_store();
        cr_expect_str_eq(pragma("journal_mode"), cases[i].mode, "case %zu", i);
        cr_expect_str_eq(pragma("wal_autocheckpoint"), cases[i].pages, "case %zu", i);
    }
}

/* Statements are cached per connection: more distinct ones than the cache holds, a failed
 * step, and a schema change under a cached statement must all still give the right rows. */
Test(sqlite, cached_statements_stay_correct, .init = sqlite_init, .fini = fx_fini)
{
    struct store_result res;
    const char *param[1];
    char sql[96], want[32];

    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(sql, sizeof(sql), "SELECT %d + CAST($1 AS INTEGER)", i);
            param[0] = round ? "1000" : "7";
            cr_assert_eq(store__exec(fx.st, sql, 1, param, &res), 0);
            snprintf(want, sizeof(want), "%d", i + (round ? 1000 : 7));
            cr_assert_str_eq(store__cell(&res, 0, 0), want, "%s", sql);
            store__result_free(&res);
        }
    }
    cr_assert_eq(store__exec(fx.st, "CREATE TABLE t (v TEXT UNIQUE)", 0, NULL, NULL), 0);
    param[0] = "a";
    cr_assert_eq(store__exec(fx.st, "INSERT INTO t (v) VALUES ($1)", 1, param, NULL), 0);
    cr_assert_eq(store__exec(fx.st, "INSERT INTO t (v) VALUES ($1)", 1, param, NULL), -EEXIST);
    param[0] = "b";
    cr_assert_eq(store__exec(fx.st, "INSERT INTO t (v) VALUES ($1)", 1, param, NULL), 0);
    cr_assert_eq(count_rows("SELECT count(*) FROM t"), 2);
    cr_assert_eq(store__exec(fx.st, "DROP TABLE t", 0, NULL, NULL), 0);
    cr_assert_lt(store__exec(fx.st, "SELECT count(*) FROM t", 0, NULL, &res), 0);
    cr_assert_eq(store__exec(fx.st, "CREATE TABLE t (v TEXT, w TEXT)", 0, NULL, NULL), 0);
    cr_assert_eq(count_rows("SELECT count(*) FROM t"), 0);
}

static void *sleep_query(void *arg)
{
    (void)arg;
    cr_assert_eq(store__exec(fx.st, "SELECT pg_sleep(0.3)", 0, NULL, NULL), 0);
    return NULL;
}

/* Connections open at once when 6 queries run together. */
static size_t peak_connections(void)
{
    pthread_t t[6];

    for (size_t i = 0; i < HS_ARRAY_LEN(t); i++)
        cr_assert_eq(pthread_create(&t[i], NULL, sleep_query, NULL), 0);
    for (size_t i = 0; i < HS_ARRAY_LEN(t); i++)
        pthread_join(t[i], NULL);
    return count_rows("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'headscale'");
}

/* database.postgres.max_open_conns caps the pool; database.postgres.ssl reaches libpq as its
 * sslmode (true: require, which a server without TLS refuses). */
Test(postgres, pool_size_and_ssl_follow_the_config, .init = pg_init, .fini = fx_fini)
{
    struct store_result res;
    bool server_tls;

    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    fx.cfg.pg_max_idle_conns = 10;
    fx.cfg.pg_max_open_conns = 2;
    reopen_store();
    cr_expect_eq(peak_connections(), 2);
    fx.cfg.pg_max_open_conns = 5;
    reopen_store();
    cr_expect_eq(peak_connections(), 5);

    cr_assert_eq(store__exec(fx.st, "SHOW ssl", 0, NULL, &res), 0);
    server_tls = strcmp(store__cell(&res, 0, 0), "on") == 0;
    store__result_free(&res);
    if (server_tls)
        return; /* a test server with TLS would take both: nothing to tell apart */
    store_close(fx.st);
    fx.st = NULL;
    fx.cfg.pg_host = "127.0.0.1"; /* libpq ignores sslmode on a unix socket */
    fx.cfg.pg_sslmode = "true";
    cr_expect_neq(store_open(&fx.cfg, fx.bus, &fx.st), 0, "ssl: true must insist on TLS");
    fx.st = NULL;
    fx.cfg.pg_sslmode = "false";
    open_store();
}

static size_t open_connections(void)
{
    return count_rows("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'headscale'");
}

/* Polls until n connections are open (a closed one leaves pg_stat_activity a moment later);
 * returns how long that took. */
static int64_t wait_open(size_t n)
{
    int64_t t0 = hs_monotonic_us();

    while (open_connections() != n && hs_monotonic_us() - t0 < 5 * HS_USEC_PER_SEC)
        usleep(50000);
    cr_expect_eq(open_connections(), n);
    return hs_monotonic_us() - t0;
}

/* database.postgres.max_idle_conns and conn_max_idle_time_secs: what stays open unused. */
Test(postgres, idle_connections_follow_the_config, .init = pg_init, .fini = fx_fini)
{
    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    fx.cfg.pg_max_open_conns = 5;
    fx.cfg.pg_max_idle_conns = 1;
    reopen_store();
    peak_connections();
    wait_open(1); /* 5 opened, 1 kept */

    fx.cfg.pg_max_idle_conns = 5;
    fx.cfg.pg_conn_max_idle_time_secs = 1;
    reopen_store();
    cr_expect_eq(peak_connections(), 5, "all 5 kept for now");
    cr_expect_geq(wait_open(1), HS_USEC_PER_SEC / 2, "the unused ones closed, not too soon");
}

Test(postgres, reconnects_after_the_server_drops_it, .init = pg_init, .fini = fx_fini)
{
    char sql[200];

    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    mk_user("alice");
    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'",
             fx.dbname);
    pg_admin_exec(sql);
    cr_assert_eq(store_ping(fx.st), 0);
    mk_user("bob");
    cr_assert_eq(count_rows("SELECT COUNT(*) FROM users"), 2);
}

/* Reads the feed until want changes arrived (or 5 s passed). */
static size_t feed_wait(struct store_feed *f, struct store_change *out, size_t want)
{
    size_t n = 0;
    int64_t until = hs_monotonic_us() + 5 * HS_USEC_PER_SEC;

    while (n < want && hs_monotonic_us() < until) {
        struct pollfd p = { .fd = store_feed_fd(f), .events = POLLIN };
        poll(&p, 1, 100);
        int got = store_feed_read(f, out + n, want - n);
        cr_assert_geq(got, 0);
        n += (size_t)got;
    }
    return n;
}

/* Another replica's committed writes reach a feed numbered one after the other, in commit
 * order, with the writer's origin; a rolled-back one is never announced. */
Test(postgres, feed_hears_other_replicas_in_order, .init = pg_init, .fini = fx_fini)
{
    struct store *other;
    struct store_feed *f;
    struct store_change c[4];
    uint64_t seq0, seq;
    struct store_user dup = { .name = "alice" }, out;

    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    cr_assert(store_shared(fx.st));
    cr_assert_eq(store_open(&fx.cfg, NULL, &other), 0);
    cr_assert_neq(store_origin(other), store_origin(fx.st));
    cr_assert_eq(store_feed_open(fx.st, &f), 0);
    cr_assert_eq(store_feed_seq(f, &seq0), 0);

    uint64_t alice = mk_user("alice");
    cr_assert_eq(store_user_create(other, &dup, &out), -EEXIST); /* rolled back */
    struct store_user bob = { .name = "bob" };
    cr_assert_eq(store_user_create(other, &bob, &out), 0);
    cr_assert_eq(feed_wait(f, c, 3), 2, "two commits, two announcements");
    cr_expect_eq(c[0].seq, seq0 + 1);
    cr_expect_eq(c[0].ev.entity, NOTIFY_USER);
    cr_expect_eq(c[0].ev.op, NOTIFY_CREATE);
    cr_expect_eq(c[0].ev.id, alice);
    cr_expect_eq(c[0].origin, store_origin(fx.st));
    cr_expect_eq(c[1].seq, seq0 + 2);
    cr_expect_eq(c[1].ev.id, out.id);
    cr_expect_eq(c[1].origin, store_origin(other));
    /* Each says when it was written (the writer's clock, a moment ago). */
    cr_expect(c[1].at >= c[0].at && c[0].at > hs_now_us() - 10 * HS_USEC_PER_SEC &&
              c[1].at <= hs_now_us(), "at %lld, %lld", (long long)c[0].at, (long long)c[1].at);
    cr_assert_eq(store_change_seq(other, &seq), 0);
    cr_expect_eq(seq, seq0 + 2);
    store_user_free(&out);

    /* Something this binary cannot read keeps its number and reads as entity 0. */
    cr_assert_eq(store__exec(other, "SELECT pg_notify('headscale_changes', '99 bogus')", 0,
                             NULL, NULL), 0);
    cr_assert_eq(feed_wait(f, c, 1), 1);
    cr_expect_eq(c[0].seq, 99);
    cr_expect_eq(c[0].ev.entity, 0);
    /* An older version's payload (no time) reads, without a time; junk after it does not. */
    cr_assert_eq(store__exec(other, "SELECT pg_notify('headscale_changes', '100 1 1 7 ab')", 0,
                             NULL, NULL), 0);
    cr_assert_eq(store__exec(other, "SELECT pg_notify('headscale_changes', '101 1 1 7 ab 5 x')",
                             0, NULL, NULL), 0);
    cr_assert_eq(feed_wait(f, c, 2), 2);
    cr_expect(c[0].seq == 100 && c[0].ev.entity == NOTIFY_USER && c[0].origin == 0xab &&
              c[0].at == 0);
    cr_expect(c[1].seq == 101 && c[1].ev.entity == 0);

    /* A feed whose connection the database dropped says so. */
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'"
             " AND application_name = 'headscale feed'", fx.dbname);
    pg_admin_exec(sql);
    int rc = 0;
    for (int i = 0; i < 50 && rc == 0; i++) {
        struct pollfd p = { .fd = store_feed_fd(f), .events = POLLIN };
        poll(&p, 1, 100);
        rc = store_feed_read(f, c, 1);
    }
    cr_expect_eq(rc, -EIO);
    store_feed_close(f);
    store_close(other);
}

Test(sqlite, no_feed_and_one_serve_per_file, .init = sqlite_init, .fini = fx_fini)
{
    struct store *other;
    struct store_feed *f = NULL;
    uint64_t seq = 1;

    cr_assert(!store_shared(fx.st));
    cr_assert_eq(store_feed_open(fx.st, &f), -ENOTSUP);
    cr_assert_eq(store_change_seq(fx.st, &seq), 0);
    cr_expect_eq(seq, 0);
    mk_user("alice"); /* announces nothing, fails nothing */
    cr_assert_eq(store_open(&fx.cfg, NULL, &other), 0);
    cr_assert_eq(store_claim(fx.st), 0);
    cr_assert_eq(store_claim(fx.st), 0, "claiming twice in one process is fine");
    cr_expect_eq(store_claim(other), -EBUSY);
    store_close(fx.st);
    fx.st = NULL;
    cr_expect_eq(store_claim(other), 0, "free again once the first closed");
    store_close(other);
    open_store();
}

Test(postgres, bad_password_or_host_fails_cleanly, .init = pg_init, .fini = fx_fini)
{
    struct hs_config cfg;
    struct store *st = NULL;

    if (fx.skip)
        cr_skip("HS_TEST_PG_HOST is not set (start one with tests/lib/pgtmp.sh)");
    cfg = fx.cfg;
    cfg.pg_name = "no_such_database";
    cr_assert_eq(store_open(&cfg, NULL, &st), -EIO);
    cr_assert_null(st);
}

/* ---- node creation under concurrency (the PostgreSQL pool runs these in parallel) ---- */

struct node_race {
    struct store *st;
    uint64_t user;
    int idx, rc;
    char ipv4[64];
};

static void *create_node(void *arg)
{
    struct node_race *r = arg;
    static const struct ip_prefix v4 = { .family = AF_INET, .addr = { 100, 64 }, .bits = 10 };
    struct store_ip_config ips = { .v4 = &v4 };
    struct store_node in = { .user_id = r->user, .given_name = "host" }, out;

    memset(in.machine_key, r->idx + 1, sizeof(in.machine_key));
    memset(in.node_key, r->idx + 1, sizeof(in.node_key));
    r->rc = store_node_create(r->st, &in, &ips, &out);
    if (r->rc == 0) {
        snprintf(r->ipv4, sizeof(r->ipv4), "%s", out.ipv4);
        store_node_free(&out);
    }
    return NULL;
}

/* Two stores on one database are two replicas: half the registrations go through each. */
STORE_TEST(node_create_race_gets_distinct_addresses_and_names)
{
    enum { N = 24 };
    pthread_t t[N];
    struct node_race r[N];
    uint64_t user = mk_user("alice");
    struct store_node *nodes;
    struct store *other = NULL;
    size_t n;

    if (fx.be == BE_PG)
        cr_assert_eq(store_open(&fx.cfg, NULL, &other), 0);
    for (int i = 0; i < N; i++) {
        r[i] = (struct node_race){ .st = other && i % 2 ? other : fx.st, .user = user, .idx = i };
        cr_assert_eq(pthread_create(&t[i], NULL, create_node, &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(r[i].rc, 0, "node %d: %s", i, hs_strerror(r[i].rc));
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(r[i].ipv4, r[j].ipv4);
    }
    cr_assert_eq(store_node_list(fx.st, 0, &nodes, &n), 0);
    cr_assert_eq(n, N);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(nodes[i].given_name, nodes[j].given_name);
    store_node_list_free(nodes, n);
    store_close(other);
}

/* Every update counts the row's revision up and says it in its event; a batch of updates
 * (the state's writer) is one transaction, skips a node gone meanwhile, and is announced to
 * other replicas without being published on the writer's own bus. */
STORE_TEST(node_revisions_and_batched_updates)
{
    struct node_race r = { .st = fx.st, .user = mk_user("alice") };
    struct store_node v = { .given_name = "renamed" }, out, *nodes;
    struct store_node_patch batch[2] = {
        { .id = 999999, .fields = STORE_NODE_BIT(STORE_NODE_ENDPOINTS) },
        { .fields = STORE_NODE_BIT(STORE_NODE_ENDPOINTS) | STORE_NODE_BIT(STORE_NODE_LAST_SEEN) },
    };
    struct store_feed *f = NULL;
    struct store_change c[2];
    size_t n;

    create_node(&r);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(store_node_list(fx.st, 0, &nodes, &n), 0);
    cr_assert_eq(n, 1);
    batch[1].id = nodes[0].id;
    cr_expect_eq(nodes[0].revision, 0, "a new row");
    store_node_list_free(nodes, n);

    ev_clear();
    cr_assert_eq(store_node_update(fx.st, batch[1].id, STORE_NODE_BIT(STORE_NODE_GIVEN_NAME), &v,
                                   &out), 0);
    cr_expect_eq(out.revision, 1);
    store_node_free(&out);
    expect_event(0, NOTIFY_NODE, NOTIFY_UPDATE, batch[1].id);
    cr_expect_eq(fx.ev[0].revision, 1, "the event names the revision it made");

    if (fx.be == BE_PG)
        cr_assert_eq(store_feed_open(fx.st, &f), 0);
    ev_clear();
    batch[0].v.endpoints_json = "[\"192.0.2.9:1\"]";
    batch[1].v.endpoints_json = "[\"192.0.2.1:1\"]";
    batch[1].v.last_seen = 4242;
    cr_assert_eq(store_node_update_many(fx.st, batch, 2), 0, "a node gone is no failure");
    cr_expect_eq(fx.nev, 0, "the writer's own bus hears nothing");
    cr_assert_eq(store_node_get(fx.st, batch[1].id, &out), 0);
    cr_expect_str_eq(out.endpoints_json, "[\"192.0.2.1:1\"]");
    cr_expect_eq(out.last_seen, 4242);
    cr_expect_eq(out.revision, 2);
    store_node_free(&out);
    if (f) { /* other replicas hear it */
        cr_assert_eq(feed_wait(f, c, 1), 1);
        cr_expect(c[0].ev.entity == NOTIFY_NODE && c[0].ev.id == batch[1].id);
        store_feed_close(f);
    }
    cr_expect_eq(store_node_update_many(fx.st, batch, 0), 0, "nothing to write");
}

/* Databases that look like headscale's but not like a version the import knows (here 0.25,
 * with a routes table and no approved_routes; and 0.29 with a table of someone else's) are
 * refused at open and not written to. */
static void refused_as_is(const char *schema)
{
    struct hs_config cfg = fx.cfg;
    struct store *st = NULL;
    char path[160], *before, *after;
    size_t nb, na;
    sqlite3 *db;

    snprintf(path, sizeof(path), "%s/other.sqlite", fx.dir);
    unlink(path);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, schema, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    cr_assert_eq(hs_read_file(path, 1 << 20, &before, &nb), 0);
    cfg.sqlite_path = path;
    cr_expect_eq(store_open(&cfg, NULL, &st), -EPROTO);
    cr_assert_eq(hs_read_file(path, 1 << 20, &after, &na), 0);
    cr_expect(nb == na && memcmp(before, after, nb) == 0, "the file was changed");
    free(before);
    free(after);
}

Test(sqlite, unknown_headscale_versions_are_refused, .init = sqlite_init, .fini = fx_fini)
{
    refused_as_is("CREATE TABLE migrations (id TEXT PRIMARY KEY);"
                  "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, deleted_at TEXT);"
                  "CREATE TABLE nodes (id INTEGER PRIMARY KEY, machine_key TEXT, ipv4 TEXT,"
                  " deleted_at TEXT);"
                  "CREATE TABLE routes (id INTEGER PRIMARY KEY, node_id INTEGER, prefix TEXT);");
    refused_as_is("CREATE TABLE migrations (id TEXT PRIMARY KEY);"
                  "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, deleted_at TEXT,"
                  " provider_identifier TEXT);"
                  "CREATE TABLE nodes (id INTEGER PRIMARY KEY, ipv4 TEXT, approved_routes TEXT,"
                  " tags TEXT, deleted_at TEXT);"
                  "CREATE TABLE pre_auth_keys (id INTEGER PRIMARY KEY, prefix TEXT, hash BLOB,"
                  " tags TEXT);"
                  "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, hash BLOB);"
                  "CREATE TABLE policies (id INTEGER PRIMARY KEY, data TEXT);"
                  "CREATE TABLE invoices (id INTEGER PRIMARY KEY);");
}

/* ---- HA routes across replicas ---- */

STORE_TEST(primaries_are_published_whole_and_health_marks_announced)
{
    uint64_t u = mk_user("alice"), a = mk_node(u, 1, "a"), b = mk_node(u, 2, "b"), *bad;
    struct store_primary set[] = { { .route = "192.168.0.0/24", .node_id = b },
                                   { .route = "10.0.0.0/8", .node_id = a },
                                   { .route = "10.1.0.0/16", .node_id = 999 } }, *got;
    uint64_t ids[] = { a, b };
    bool unhealthy[] = { false, false }, healthy[] = { true, true };
    size_t n;

    ev_clear();
    cr_assert_eq(store_primaries_set(fx.st, set, 3), 0);
    cr_assert_eq(store_primaries_get(fx.st, &got, &n), 0);
    if (fx.be == BE_SQLITE) { /* one process decides alone: nothing is kept or announced */
        cr_expect_eq(n, 0);
        cr_expect_eq(fx.nev, 0);
        store_primaries_free(got, n);
        cr_assert_eq(store_health_set(fx.st, ids, unhealthy, 2), 0);
        cr_assert_eq(store_health_unhealthy(fx.st, &bad, &n), 0);
        cr_expect_eq(n, 0);
        free(bad);
        return;
    }
    cr_assert_eq(n, 2, "the route of a node that does not exist is left out");
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(got[i].node_id, strcmp(got[i].route, "10.0.0.0/8") == 0 ? a : b);
    store_primaries_free(got, n);
    cr_assert_eq(fx.nev, 1);
    expect_event(0, NOTIFY_PRIMARY, NOTIFY_UPDATE, 0);
    cr_assert_eq(store_primaries_set(fx.st, set + 1, 1), 0, "a new choice replaces the old");
    cr_assert_eq(store_primaries_get(fx.st, &got, &n), 0);
    cr_expect(n == 1 && got[0].node_id == a);
    store_primaries_free(got, n);

    /* Unhealthy verdicts are announced each time (a replica may have cleared its mark on a
     * reconnect); a mark cleared once. */
    ev_clear();
    cr_assert_eq(store_health_set(fx.st, ids, unhealthy, 2), 0);
    cr_assert_eq(store_health_set(fx.st, ids, unhealthy, 1), 0);
    cr_assert_eq(fx.nev, 3);
    expect_event(0, NOTIFY_HEALTH, NOTIFY_CREATE, a);
    expect_event(1, NOTIFY_HEALTH, NOTIFY_CREATE, b);
    expect_event(2, NOTIFY_HEALTH, NOTIFY_CREATE, a);
    cr_assert_eq(store_health_unhealthy(fx.st, &bad, &n), 0);
    cr_expect(n == 2 && bad[0] == a && bad[1] == b);
    free(bad);
    ev_clear();
    cr_assert_eq(store_health_set(fx.st, ids + 1, healthy, 1), 0);
    cr_assert_eq(store_health_set(fx.st, ids + 1, healthy, 1), 0);
    cr_assert_eq(fx.nev, 1, "clearing what is clear announces nothing");
    expect_event(0, NOTIFY_HEALTH, NOTIFY_DELETE, b);

    /* Both go with their node. */
    cr_assert_eq(store_node_delete(fx.st, a), 0);
    cr_assert_eq(store_health_unhealthy(fx.st, &bad, &n), 0);
    cr_expect_eq(n, 0);
    free(bad);
    cr_assert_eq(store_primaries_get(fx.st, &got, &n), 0);
    cr_expect_eq(n, 0);
    store_primaries_free(got, n);
}

/* ---- OIDC logins ---- */

static int oidc_count(void)
{
    struct store_result r;
    int n;

    cr_assert_eq(store__exec(fx.st, "SELECT count(*) FROM oidc_logins", 0, NULL, &r), 0);
    n = (int)store__cell_u64(&r, 0, 0);
    store__result_free(&r);
    return n;
}

STORE_TEST(oidc_logins_are_taken_once_and_go_with_their_registration)
{
    int64_t now = hs_now_us(), later = now + 600 * HS_USEC_PER_SEC;
    uint8_t k[8][STORE_KEY_LEN];
    char *reg = NULL;

    for (size_t i = 0; i < 8; i++)
        memset(k[i], 0x10 + (int)i, STORE_KEY_LEN);
    mk_registration("hskey-authreq-a", later);
    mk_registration("hskey-authreq-b", later);
    cr_assert_eq(store_oidc_login_create(fx.st, k[0], "hskey-authreq-none", later), -ENOENT,
                 "a login needs its registration");
    cr_assert_eq(store_oidc_login_create(fx.st, k[0], "hskey-authreq-a", later), 0);
    cr_assert_eq(store_oidc_login_take(fx.st, k[0], now, &reg), 0);
    cr_expect_str_eq(reg, "hskey-authreq-a");
    free(reg);
    cr_assert_eq(store_oidc_login_take(fx.st, k[0], now, &reg), -ENOENT, "once only");

    /* Expired: refused, and deleted all the same. */
    cr_assert_eq(store_oidc_login_create(fx.st, k[1], "hskey-authreq-a", now + 10), 0);
    cr_assert_eq(store_oidc_login_take(fx.st, k[1], now + 10, &reg), -ENOENT);
    cr_assert_eq(oidc_count(), 0);

    /* A registration keeps its newest few; the others' logins are not touched. */
    cr_assert_eq(store_oidc_login_create(fx.st, k[2], "hskey-authreq-b", later), 0);
    for (size_t i = 3; i < 8; i++)
        cr_assert_eq(store_oidc_login_create(fx.st, k[i], "hskey-authreq-a", later), 0);
    cr_assert_eq(oidc_count(), STORE_OIDC_LOGINS_KEPT + 1);
    cr_assert_eq(store_oidc_login_take(fx.st, k[3], now, &reg), -ENOENT, "the oldest went");
    cr_assert_eq(store_oidc_login_take(fx.st, k[7], now, &reg), 0, "the newest stays");
    free(reg);

    /* Gone with the registration. */
    cr_assert_eq(store__exec(fx.st, "DELETE FROM registrations WHERE id = 'hskey-authreq-b'",
                             0, NULL, NULL), 0);
    cr_assert_eq(store_oidc_login_take(fx.st, k[2], now, &reg), -ENOENT);
}
