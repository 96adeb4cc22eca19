/* Map generation at scale, in-process: a SQLite store with N nodes carrying realistic
 * Hostinfo, then the time to build + serialise + zstd-compress a full map for one node (cold:
 * peer cache empty; warm: cached), and a PeersChangedPatch delta; then the same full maps
 * under an allow-all ACL policy, and the time to compile that for N nodes. Run:
 *   build/bench/mapper/bench_mapper 5000 [rounds of warm full maps, default 20]
 * Prints one line per measurement; not a test (no thresholds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mapper/mapper.h"
#include "state/state.h"
#include "store/store_internal.h"

static const char hostinfo[] =
    "{\"IPNVersion\":\"1.102.3-t0123456789-g0123456789\",\"FrontendLogID\":\"\",\"BackendLogID\":"
    "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"OS\":\"linux\","
    "\"OSVersion\":\"Debian 12.8 (bookworm); kernel=6.1.0-28-amd64\",\"Distro\":\"debian\","
    "\"DistroVersion\":\"12.8\",\"DistroCodeName\":\"bookworm\",\"Desktop\":false,\"Package\":"
    "\"tgz\",\"Hostname\":\"host-%d\",\"Machine\":\"x86_64\",\"GoArch\":\"amd64\",\"GoVersion\":"
    "\"go1.26.5\",\"Services\":[{\"Proto\":\"tcp\",\"Port\":22,\"Description\":\"sshd\"},"
    "{\"Proto\":\"peerapi4\",\"Port\":44521},{\"Proto\":\"peerapi6\",\"Port\":44521}],"
    "\"NetInfo\":{\"MappingVariesByDestIP\":false,\"WorkingIPv6\":false,\"OSHasIPv6\":true,"
    "\"WorkingUDP\":true,\"WorkingICMPv4\":true,\"PreferredDERP\":999,\"LinkType\":\"wired\","
    "\"DERPLatency\":{\"999-v4\":0.0021}},\"Userspace\":false,\"UserspaceRouter\":false}";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void insert_nodes(struct store *st, int n)
{
    char sql[4096], hi[2048], ep[128], mk[80], nk[80], dk[80], v4[32], v6[64], name[32];
    const char *params[12];
    int64_t t = hs_now_us();

    store__exec(st, "BEGIN", 0, NULL, NULL);
    store__exec(st, "INSERT INTO users (name, created_at, updated_at) VALUES ('alice', 1, 1)", 0,
                NULL, NULL);
    snprintf(sql, sizeof(sql),
             "INSERT INTO nodes (machine_key, node_key, disco_key, endpoints, host_info, ipv4, "
             "ipv6, hostname, given_name, user_id, register_method, created_at, updated_at) "
             "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, 'authkey', %lld, %lld)",
             (long long)t, (long long)t);
    for (int i = 1; i <= n; i++) {
        snprintf(mk, sizeof(mk), "mkey:%064x", i);
        snprintf(nk, sizeof(nk), "nodekey:%064x", i);
        snprintf(dk, sizeof(dk), "discokey:%064x", i);
        snprintf(ep, sizeof(ep), "[\"198.18.%d.%d:41641\",\"[fd00::%x]:41641\"]", i / 250,
                 i % 250 + 1, i);
        snprintf(hi, sizeof(hi), hostinfo, i);
        snprintf(v4, sizeof(v4), "100.64.%d.%d", i / 250, i % 250 + 1);
        snprintf(v6, sizeof(v6), "fd7a:115c:a1e0::%x", i);
        snprintf(name, sizeof(name), "host-%d", i);
        params[0] = mk; params[1] = nk; params[2] = dk; params[3] = ep; params[4] = hi;
        params[5] = v4; params[6] = v6; params[7] = name; params[8] = name;
        store__exec(st, sql, 9, params, NULL);
    }
    store__exec(st, "COMMIT", 0, NULL, NULL);
}

/* The same full maps under a policy that lets everyone reach everyone: no shortcut then, the
 * mapper asks the compiled policy about each peer. Also times compiling it for n nodes (what
 * every node added or removed costs). */
static void bench_policy(struct state *s, struct mapper *m, int n, int rounds, const char *dir)
{
    static const char allow_all[] =
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}";
    char path[160], err[512];
    struct hs_buf out;
    double t0, compile, warm = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/policy.hujson", dir);
    if (!(f = fopen(path, "w")) || fputs(allow_all, f) < 0 || fclose(f) != 0)
        return;
    state_policy_source(s, STATE_POLICY_FILE, path);
    t0 = now_ms();
    if (state_policy_reload(s, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_mapper: %s\n", err);
        return;
    }
    compile = now_ms() - t0;
    hs_buf_init(&out, MAPPER_MAX_FRAME + 8);
    state_rdlock(s);
    mapper_full_encoded(m, s, 1, hs_now_us(), NULL, true, &out, NULL); /* the new filter's runs */
    for (int r = 0; r < rounds; r++) {
        hs_buf_reset(&out);
        t0 = now_ms();
        mapper_full_encoded(m, s, (uint64_t)(r % n) + 1, hs_now_us(), NULL, true, &out, NULL);
        warm += now_ms() - t0;
    }
    state_unlock(s);
    printf("policy=allow-all-acl compile_ms=%.2f full_map_warm_ms=%.2f zstd_bytes=%zu\n", compile,
           warm / rounds, out.len);
    hs_buf_free(&out);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 5000, rounds = argc > 2 ? atoi(argv[2]) : 20;
    char dir[] = "/tmp/bench-mapper-XXXXXX", db[128];
    struct hs_config cfg = { .db_type = DB_SQLITE, .sqlite_wal = true, .sqlite_wal_autocheckpoint = 1000, .taildrop_enabled = true,
                             .dns_magic_dns = true, .dns_base_domain = "tailnet.example" };
    struct store *st;
    struct state *s;
    struct mapper *m;
    struct hs_buf out;
    double t0, cold, warm = 0, delta = 0;
    size_t raw_len = 0, z_len = 0, d_len = 0;

    log_set_level(LOG_WARN);
    if (!mkdtemp(dir))
        return 1;
    snprintf(db, sizeof(db), "%s/db.sqlite", dir);
    cfg.sqlite_path = db;
    if (store_open(&cfg, NULL, &st) < 0)
        return 1;
    insert_nodes(st, n);
    if (state_new(st, NULL, &s) < 0)
        return 1;
    m = mapper_new(&cfg, NULL);
    hs_buf_init(&out, MAPPER_MAX_FRAME + 8);

    state_rdlock(s);
    t0 = now_ms();
    mapper_full_encoded(m, s, 1, hs_now_us(), NULL, true, &out, NULL);
    cold = now_ms() - t0;
    z_len = out.len;
    for (int r = 0; r < rounds; r++) {
        hs_buf_reset(&out);
        t0 = now_ms();
        mapper_full_encoded(m, s, (uint64_t)(r % n) + 1, hs_now_us(), NULL, true, &out, NULL);
        warm += now_ms() - t0;
    }
    hs_buf_reset(&out);
    mapper_full_text(m, s, 1, hs_now_us(), NULL, &out, NULL);
    raw_len = out.len;
    for (int r = 0; r < 1000; r++) {
        uint64_t patched = 2;
        struct mapper_changes ch = { .patched = &patched, .npatched = 1 };
        json_t *d;
        hs_buf_reset(&out);
        t0 = now_ms();
        d = mapper_delta(m, s, 0, &ch, hs_now_us());
        mapper_encode(d, true, &out);
        delta += now_ms() - t0;
        d_len = out.len;
        json_decref(d);
    }
    state_unlock(s);
    printf("nodes=%d full_map_cold_ms=%.2f full_map_warm_ms=%.2f json_bytes=%zu zstd_bytes=%zu\n",
           n, cold, warm / rounds, raw_len, z_len);
    printf("patch_delta_us=%.1f patch_wire_bytes=%zu (built once, shared by every recipient)\n",
           delta, d_len);
    bench_policy(s, m, n, rounds, dir);
    hs_buf_free(&out);
    mapper_free(m);
    state_free(s);
    store_close(st);
    snprintf(db, sizeof(db), "rm -rf %s", dir);
    return system(db) == 0 ? 0 : 1;
}
