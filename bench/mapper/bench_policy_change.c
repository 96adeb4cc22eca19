/* What one policy change costs the map thread, in-process: the tailnet of bench/run.sh's
 * policy scenario (bench/lib/bench.py: policy_layout, make_policy) in a SQLite store, every
 * node told the allow-all policy, then the new policy compiled and, for every node, the plan
 * of what it is to be told and the delta encoded as a client would get it (zstd). Checks a
 * sample: the zstd message decodes to the plain one. Run:
 *   python3 bench/mapper/policy_files.py 5000 /tmp/pc   (writes layout.json, policy.json)
 *   build/bench/mapper/bench_policy_change /tmp/pc/layout.json /tmp/pc/policy.json [json]
 * ("json": deltas built as a jansson tree and dumped, the way they were before, to compare).
 * Prints one line per measurement; not a test (no thresholds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "mapper/mapper.h"
#include "state/state.h"
#include "store/store_internal.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Users user1..userK, then node i as layout["owner"][i] says: ["tag", k] or ["user", k]. */
static int insert_tailnet(struct store *st, json_t *lay)
{
    json_t *users = json_object_get(lay, "users"), *tags = json_object_get(lay, "tags");
    json_t *owner = json_object_get(lay, "owner"), *o;
    char sql[512], mk[80], nk[80], dk[80], v4[32], v6[64], name[32], uid[24], tagj[64];
    const char *params[8];
    size_t i;
    json_t *u;

    store__exec(st, "BEGIN", 0, NULL, NULL);
    json_array_foreach(users, i, u) {
        params[0] = json_string_value(u);
        store__exec(st, "INSERT INTO users (name, created_at, updated_at) VALUES ($1, 1, 1)", 1,
                    params, NULL);
    }
    snprintf(sql, sizeof(sql),
             "INSERT INTO nodes (machine_key, node_key, disco_key, ipv4, ipv6, hostname, "
             "given_name, user_id, tags, register_method, created_at, updated_at) "
             "VALUES ($1, $2, $8, $3, $4, $5, $5, $6, $7, 'authkey', 1, 1)");
    json_array_foreach(owner, i, o) {
        int n = (int)i + 1;
        bool tagged = strcmp(json_string_value(json_array_get(o, 0)), "tag") == 0;
        json_int_t k = json_integer_value(json_array_get(o, 1));
        snprintf(mk, sizeof(mk), "mkey:%064x", n);
        snprintf(nk, sizeof(nk), "nodekey:%064x", n);
        snprintf(dk, sizeof(dk), "discokey:%064x", n);
        snprintf(v4, sizeof(v4), "100.64.%d.%d", n / 250, n % 250 + 1);
        snprintf(v6, sizeof(v6), "fd7a:115c:a1e0::%x", n);
        snprintf(name, sizeof(name), "host-%d", n);
        snprintf(uid, sizeof(uid), "%lld", (long long)k + 1);
        snprintf(tagj, sizeof(tagj), "[\"%s\"]",
                 tagged ? json_string_value(json_array_get(tags, (size_t)k)) : "");
        params[0] = mk; params[1] = nk; params[2] = v4; params[3] = v6; params[4] = name;
        params[5] = tagged ? "1" : uid;
        params[6] = tagged ? tagj : "[]";
        params[7] = dk;
        if (store__exec(st, sql, 8, params, NULL) < 0)
            return -1;
    }
    return store__exec(st, "COMMIT", 0, NULL, NULL) < 0 ? -1 : (int)json_array_size(owner);
}

static int set_policy(struct state *s, const char *path, double *ms)
{
    char err[512];
    double t0 = now_ms();

    state_policy_source(s, STATE_POLICY_FILE, path);
    if (state_policy_reload(s, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_policy_change: %s\n", err);
        return -1;
    }
    *ms = now_ms() - t0;
    return 0;
}

/* The zstd message decodes to the plain one. */
static bool same_message(const struct hs_buf *z, const struct hs_buf *plain)
{
    size_t cap = plain->len, n;
    char *out = malloc(cap + 1);
    bool ok;

    n = ZSTD_decompress(out, cap + 1, z->data + 4, z->len - 4);
    ok = !ZSTD_isError(n) && n == plain->len - 4 && memcmp(out, plain->data + 4, n) == 0;
    free(out);
    return ok;
}

struct totals {
    bool via_json;
    double plan_ms, encode_ms;
    size_t wire, sent, checked, bad;
};

static void tell_node(struct mapper *m, struct state *s, uint64_t id,
                      const struct mapper_policy_state *was, struct totals *t)
{
    struct mapper_changes none = { 0 };
    struct mapper_plan p;
    struct hs_buf z, plain;
    double t0 = now_ms(), t1;

    if (mapper_plan(m, s, id, &none, was, NULL, &p) < 0)
        return;
    t1 = now_ms();
    t->plan_ms += t1 - t0;
    hs_buf_init(&z, MAPPER_MAX_FRAME + 8);
    if (t->via_json) { /* the way deltas were built before: a jansson tree, dumped */
        json_t *d = mapper_plan_delta(m, s, id, &p, hs_now_us());
        if (d && mapper_encode(d, true, &z) == 0) {
            t->sent++;
            t->wire += z.len;
        }
        json_decref(d);
    } else if (mapper_plan_encoded(m, s, id, &p, hs_now_us(), true, &z) == 0) {
        t->sent++;
        t->wire += z.len;
    }
    t->encode_ms += now_ms() - t1;
    if (id % 97 == 1) {
        hs_buf_init(&plain, MAPPER_MAX_FRAME + 8);
        mapper_plan_encoded(m, s, id, &p, hs_now_us(), false, &plain);
        t->checked++;
        t->bad += !same_message(&z, &plain);
        hs_buf_free(&plain);
    }
    hs_buf_free(&z);
    mapper_plan_free(&p);
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/bench-polchange-XXXXXX", db[128], allow[160];
    struct hs_config cfg = { .db_type = DB_SQLITE, .sqlite_wal = true, .sqlite_wal_autocheckpoint = 1000,
                             .dns_magic_dns = true, .dns_base_domain = "tailnet.example" };
    struct mapper_policy_state told = { 0 };
    struct totals t = { 0 };
    struct store *st;
    struct state *s;
    struct mapper *m;
    struct hs_buf out;
    json_t *lay;
    double compile0, compile;
    int n;
    FILE *f;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_policy_change LAYOUT.json POLICY.json [json]\n");
        return 2;
    }
    t.via_json = argc > 3 && strcmp(argv[3], "json") == 0;
    log_set_level(LOG_WARN);
    if (!(lay = json_load_file(argv[1], 0, NULL)) || !mkdtemp(dir))
        return 1;
    snprintf(db, sizeof(db), "%s/db.sqlite", dir);
    snprintf(allow, sizeof(allow), "%s/allow.json", dir);
    cfg.sqlite_path = db;
    if (!(f = fopen(allow, "w")) ||
        fputs("{\"acls\":[{\"action\":\"accept\",\"src\":[\"*\"],\"dst\":[\"*:*\"]}]}", f) < 0 ||
        fclose(f) != 0)
        return 1;
    if (store_open(&cfg, NULL, &st) < 0 || (n = insert_tailnet(st, lay)) < 0 ||
        state_new(st, NULL, &s) < 0)
        return 1;
    m = mapper_new(&cfg, NULL);
    if (set_policy(s, allow, &compile0) < 0)
        return 1;
    /* Every node holds the same allow-all texts: one full map says what they were told. */
    hs_buf_init(&out, MAPPER_MAX_FRAME + 8);
    state_rdlock(s);
    mapper_full_text(m, s, 1, hs_now_us(), NULL, &out, &told);
    state_net_ref(told.net);
    state_unlock(s);
    hs_buf_free(&out);
    if (set_policy(s, argv[2], &compile) < 0)
        return 1;
    state_rdlock(s);
    for (int i = 1; i <= n; i++)
        tell_node(m, s, (uint64_t)i, &told, &t);
    state_unlock(s);
    printf("nodes=%d compile_ms=%.1f plan_ms=%.1f encode_ms=%.1f per_node_us=%.1f "
           "sent=%zu wire_bytes_per_node=%zu zstd_checked=%zu zstd_mismatch=%zu\n",
           n, compile, t.plan_ms, t.encode_ms, (t.plan_ms + t.encode_ms) * 1e3 / n, t.sent,
           t.sent ? t.wire / t.sent : 0, t.checked, t.bad);
    state_net_unref(told.net);
    mapper_free(m);
    state_free(s);
    store_close(st);
    json_decref(lay);
    snprintf(db, sizeof(db), "rm -rf %s", dir);
    return system(db) == 0 && t.bad == 0 ? 0 : 1;
}
