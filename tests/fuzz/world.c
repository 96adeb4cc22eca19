#include "world.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

static char dir[64], db_path[128], template_path[128];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz world: %s failed\n", what);
    exit(1);
}

/* The working copy with its WAL files. */
static void remove_db(void)
{
    char p[160];

    snprintf(p, sizeof(p), "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", db_path);
    unlink(p);
    unlink(db_path);
}

static void remove_dir(void)
{
    remove_db();
    unlink(template_path);
    rmdir(dir);
}

static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ssize_t n;

    if (in < 0 || out < 0)
        fail("opening the template");
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            fail("copying the template");
    close(in);
    close(out);
}

/* The configuration for the database at path, loaded once for each (the YAML parser would be
 * most of a run's time). */
static const struct hs_config *config_for(const char *path)
{
    static struct hs_config cfgs[2];
    static const char *paths[2];
    char yaml[512];
    struct config_diags diags;
    int i = paths[0] && strcmp(paths[0], path) != 0, n;

    if (paths[i])
        return &cfgs[i];
    n = snprintf(yaml, sizeof(yaml), "server_url: http://127.0.0.1:8080\n"
                                     "database:\n  sqlite:\n    path: %s\n"
                                     "policy:\n  mode: database\n", path);
    if (config_load_text(yaml, (size_t)n, dir, CONFIG_FOR_SERVER, &cfgs[i], &diags) < 0)
        fail("the configuration");
    config_diags_free(&diags);
    paths[i] = path;
    return &cfgs[i];
}

static void open_at(struct fuzz_world *w, const char *path)
{
    w->cfg = config_for(path);
    w->bus = notify_new();
    if (store_open(w->cfg, w->bus, &w->st) < 0)
        fail("store_open");
    if (state_new(w->st, w->bus, &w->state) < 0)
        fail("state_new");
    state_policy_source(w->state, STATE_POLICY_STORE, NULL);
    if (auth_new(w->cfg, w->st, &w->au) < 0)
        fail("auth_new");
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

void fuzz_world_init(void)
{
    struct fuzz_world w = { 0 };
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
    atexit(remove_dir);
    open_at(&w, template_path);
    populate(&w);
    fuzz_world_close(&w);
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
    remove_db();
    copy_file(template_path, db_path);
    open_at(w, db_path);
}

void fuzz_world_close(struct fuzz_world *w)
{
    auth_free(w->au);
    state_free(w->state);
    store_close(w->st);
    notify_free(w->bus);
    *w = (struct fuzz_world){ 0 };
}
