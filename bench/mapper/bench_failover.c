/* What an HA failover costs the server, in-process: N nodes (users of 50 nodes each) in a
 * SQLite store, the first 50 of them subnet routers in pairs (routers 2k+1 and 2k+2 both serve
 * 10.k.0.0/24, approved), every node online. Then the primary of the first route goes
 * offline, and for every node the delta it is to be told (its plan, as a map stream builds
 * it, and the zstd message) is built. Also every node's full map (zstd) before the failover,
 * where routers' peers are spliced in per viewer when the policy gives them other routes.
 *
 *   build/bench/mapper/bench_failover [nodes] [policy.json]
 *   (bench/mapper/failover_policy.json: members see members, five users reach 10.0.0.0/8;
 *   results in bench/results/2026-12-03-failover.md)
 *
 * Without a policy every node gets every route; with one (e.g. members see members, one group
 * may reach the routes) each viewer gets the routes it may reach. Prints one line per
 * measurement; not a test (no thresholds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper/mapper.h"
#include "state/state.h"
#include "store/store_internal.h"

#define PER_USER 50
#define ROUTERS 50

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int insert_tailnet(struct store *st, int n)
{
    char mk[80], nk[80], dk[80], v4[32], v6[64], name[32], uid[24], hi[128], ap[64];
    const char *p[10];

    store__exec(st, "BEGIN", 0, NULL, NULL);
    for (int u = 0; u < (n + PER_USER - 1) / PER_USER; u++) {
        snprintf(name, sizeof(name), "user%d", u + 1);
        p[0] = name;
        store__exec(st, "INSERT INTO users (name, created_at, updated_at) VALUES ($1, 1, 1)", 1,
                    p, NULL);
    }
    for (int i = 1; i <= n; i++) {
        bool router = i <= ROUTERS;
        snprintf(mk, sizeof(mk), "mkey:%064x", i);
        snprintf(nk, sizeof(nk), "nodekey:%064x", i);
        snprintf(dk, sizeof(dk), "discokey:%064x", i);
        snprintf(v4, sizeof(v4), "100.64.%d.%d", i / 250, i % 250 + 1);
        snprintf(v6, sizeof(v6), "fd7a:115c:a1e0::%x", i);
        snprintf(name, sizeof(name), "host-%d", i);
        snprintf(uid, sizeof(uid), "%d", (i - 1) / PER_USER + 1);
        snprintf(hi, sizeof(hi), router ? "{\"RoutableIPs\":[\"10.%d.0.0/24\"]}" : "{}",
                 (i - 1) / 2);
        snprintf(ap, sizeof(ap), router ? "[\"10.%d.0.0/24\"]" : "[]", (i - 1) / 2);
        p[0] = mk; p[1] = nk; p[2] = v4; p[3] = v6; p[4] = name; p[5] = uid; p[6] = dk;
        p[7] = hi; p[8] = ap;
        if (store__exec(st,
                        "INSERT INTO nodes (machine_key, node_key, disco_key, ipv4, ipv6, "
                        "hostname, given_name, user_id, tags, register_method, host_info, "
                        "approved_routes, created_at, updated_at) VALUES ($1, $2, $7, $3, $4, "
                        "$5, $5, $6, '[]', 'authkey', $8, $9, 1, 1)",
                        9, p, NULL) < 0)
            return -1;
    }
    return store__exec(st, "COMMIT", 0, NULL, NULL) < 0 ? -1 : 0;
}

struct totals {
    double plan_ms, encode_ms;
    size_t sent, wire, distinct;
    uint64_t *hashes;
};

/* One node's delta after the failover, as poll.c builds it: its plan, then the message,
 * encoded once per distinct plan (shareable plans with equal hashes share one). */
static void tell(struct mapper *m, struct state *s, uint64_t id, const struct mapper_changes *ch,
                 struct totals *t)
{
    struct mapper_plan p;
    struct hs_buf z;
    double t0 = now_ms(), t1;
    uint64_t h;
    bool seen = false;

    if (mapper_plan(m, s, id, ch, NULL, NULL, &p) < 0)
        return;
    t1 = now_ms();
    t->plan_ms += t1 - t0;
    h = mapper_plan_hash(&p);
    for (size_t i = 0; i < t->distinct && mapper_plan_shareable(&p); i++)
        seen |= t->hashes[i] == h;
    if (!seen) {
        hs_buf_init(&z, MAPPER_MAX_FRAME + 8);
        if (mapper_plan_encoded(m, s, id, &p, hs_now_us(), true, &z) == 0) {
            t->sent++;
            t->wire += z.len;
        }
        hs_buf_free(&z);
        t->hashes = realloc(t->hashes, (t->distinct + 1) * sizeof(*t->hashes));
        t->hashes[t->distinct++] = h;
    }
    t->encode_ms += now_ms() - t1;
    mapper_plan_free(&p);
}

static double full_maps(struct mapper *m, struct state *s, int n, size_t *bytes)
{
    struct hs_buf z;
    double t0 = now_ms();

    *bytes = 0;
    hs_buf_init(&z, MAPPER_MAX_FRAME + 8);
    for (int i = 1; i <= n; i++) {
        hs_buf_reset(&z);
        if (mapper_full_encoded(m, s, (uint64_t)i, hs_now_us(), NULL, true, &z, NULL) == 0)
            *bytes += z.len;
    }
    hs_buf_free(&z);
    return now_ms() - t0;
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/bench-failover-XXXXXX", db[128], err[512];
    struct hs_config cfg = { .db_type = DB_SQLITE, .sqlite_wal = true, .sqlite_wal_autocheckpoint = 1000,
                             .dns_magic_dns = true, .dns_base_domain = "tailnet.example" };
    int n = argc > 1 ? atoi(argv[1]) : 5000;
    struct totals t = { 0 };
    struct store *st;
    struct state *s;
    struct mapper *m;
    uint64_t old, now_primary, changed[2];
    struct mapper_changes ch = { 0 };
    double t0, online_ms, fail_ms, full_ms, compile_ms = -1;
    size_t full_bytes;

    if (n < ROUTERS + 2)
        return 2;
    log_set_level(LOG_WARN);
    if (!mkdtemp(dir))
        return 1;
    snprintf(db, sizeof(db), "%s/db.sqlite", dir);
    cfg.sqlite_path = db;
    if (store_open(&cfg, NULL, &st) < 0 || insert_tailnet(st, n) < 0 ||
        state_new(st, NULL, &s) < 0)
        return 1;
    if (argc > 2) {
        state_policy_source(s, STATE_POLICY_FILE, argv[2]);
        if (state_policy_reload(s, err, sizeof(err)) < 0) {
            fprintf(stderr, "bench_failover: %s\n", err);
            return 1;
        }
    }
    m = mapper_new(&cfg, NULL);
    t0 = now_ms();
    for (int i = 1; i <= n; i++)
        state_node_session(s, (uint64_t)i, true, 106);
    online_ms = now_ms() - t0;
    state_rdlock(s);
    full_ms = full_maps(m, s, n, &full_bytes);
    old = state_route_primary(s, "10.0.0.0/24");
    state_unlock(s);

    t0 = now_ms();
    state_node_session(s, old, false, 0); /* elects the standby, compiles the two routers again */
    fail_ms = now_ms() - t0;
    state_rdlock(s);
    now_primary = state_route_primary(s, "10.0.0.0/24");
    changed[0] = old < now_primary ? old : now_primary;
    changed[1] = old < now_primary ? now_primary : old;
    ch = (struct mapper_changes){ .changed = changed, .nchanged = 2, .online = &old,
                                  .nonline = 1 };
    for (int i = 1; i <= n; i++)
        tell(m, s, (uint64_t)i, &ch, &t);
    state_unlock(s);
    if (argc > 2) { /* what the failover would cost with a full compile instead */
        char *text;
        size_t len;
        if (hs_read_file(argv[2], POLICY_MAX_BYTES, &text, &len) == 0) {
            t0 = now_ms();
            state_policy_check(s, text, len, POLICY_FORMAT_AUTO, err, sizeof(err));
            compile_ms = now_ms() - t0;
            free(text);
        }
    }
    printf("nodes=%d routers=%d policy=%s full_compile_ms=%.1f online_all_ms=%.1f "
           "full_maps_ms=%.1f "
           "full_map_bytes_per_node=%zu primary=%llu->%llu failover_state_ms=%.2f "
           "deltas_plan_ms=%.1f deltas_encode_ms=%.1f distinct_deltas=%zu "
           "delta_bytes=%zu map_thread_ms_per_node_us=%.1f\n",
           n, ROUTERS, argc > 2 ? argv[2] : "none", compile_ms, online_ms, full_ms, full_bytes / (size_t)n,
           (unsigned long long)old, (unsigned long long)now_primary, fail_ms, t.plan_ms,
           t.encode_ms, t.distinct, t.sent ? t.wire / t.sent : 0,
           (t.plan_ms + t.encode_ms) * 1e3 / n);
    free(t.hashes);
    mapper_free(m);
    state_free(s);
    store_close(st);
    snprintf(db, sizeof(db), "rm -rf %s", dir);
    return system(db) == 0 && now_primary != old && now_primary ? 0 : 1;
}
