#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth.h"
#include "store/store_internal.h"

static char dir[64], dbpath[128];
static struct hs_config cfg;
static struct store *st;
static struct auth *au;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/hs-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(dbpath, sizeof(dbpath), "%s/db.sqlite", dir);
    cfg = (struct hs_config){ .db_type = DB_SQLITE, .sqlite_path = dbpath, .sqlite_wal = true };
    cr_assert_eq(store_open(&cfg, NULL, &st), 0);
    cr_assert_eq(auth_new(&cfg, st, &au), 0);
}

static void teardown(void)
{
    char cmd[160];
    auth_free(au);
    store_close(st);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(auth, .init = setup, .fini = teardown);

Test(auth, parse_formats)
{
    char prefix[AUTH_PREFIX_LEN + 1];
    uint8_t secret[AUTH_SECRET_LEN];
    const char *good = "hskey-api-0123456789ab-"
                       "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    cr_assert_eq(auth_cred_parse(AUTH_CRED_API, good, prefix, secret), 0);
    cr_assert_str_eq(prefix, "0123456789ab");
    cr_assert_eq(secret[1], 0x11);
    cr_assert_eq(auth_cred_parse(AUTH_CRED_PREAUTH, good, prefix, secret), -EINVAL);
    cr_assert_eq(auth_cred_parse(AUTH_CRED_API, "hskey-api-0123456789ab-00", prefix, secret),
                 -EINVAL);
    cr_assert_eq(auth_cred_parse(AUTH_CRED_API, "hskey-api-0123456789AB-"
                 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                 prefix, secret), -EINVAL);
    cr_assert_eq(auth_cred_parse(AUTH_CRED_API, NULL, prefix, secret), -EINVAL);
}

Test(auth, prefix_and_mask)
{
    char prefix[AUTH_PREFIX_LEN + 1], masked[AUTH_KEY_TEXT_MAX];

    cr_assert_eq(auth_cred_prefix(AUTH_CRED_API, "hskey-api-0123456789ab-***", prefix), 0);
    cr_assert_str_eq(prefix, "0123456789ab");
    cr_assert_eq(auth_cred_prefix(AUTH_CRED_API, "0123456789ab", prefix), 0);
    cr_assert_eq(auth_cred_prefix(AUTH_CRED_API, "0123456789abc", prefix), -EINVAL);
    cr_assert_eq(auth_cred_prefix(AUTH_CRED_API, "short", prefix), -EINVAL);
    auth_cred_mask(AUTH_CRED_PREAUTH, "0123456789ab", masked, sizeof(masked));
    cr_assert_str_eq(masked, "hskey-auth-0123456789ab-***");
}

Test(auth, apikey_lifecycle)
{
    char full[AUTH_KEY_TEXT_MAX], wrong[AUTH_KEY_TEXT_MAX];
    struct store_apikey k;
    uint64_t id;

    cr_assert_eq(auth_apikey_create(au, hs_now_us() + 3600 * HS_USEC_PER_SEC, full, &k), 0);
    cr_assert(hs_has_prefix(full, "hskey-api-"));
    cr_assert_eq(strlen(full), 10 + 12 + 1 + 64);
    cr_assert_eq(auth_apikey_check(au, full, &id), 0);
    cr_assert_eq(id, k.id);
    /* Same prefix, other secret. */
    strcpy(wrong, full);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == '0' ? '1' : '0';
    cr_assert_eq(auth_apikey_check(au, wrong, NULL), -EACCES);
    cr_assert_eq(auth_apikey_check(au, "garbage", NULL), -EACCES);
    cr_assert_eq(store_apikey_expire(st, k.id, hs_now_us() - 1), 0);
    cr_assert_eq(auth_apikey_check(au, full, NULL), -EKEYEXPIRED);
}

Test(auth, hash_only_at_rest)
{
    char full[AUTH_KEY_TEXT_MAX], *db;
    struct store_apikey k;
    size_t len;

    cr_assert_eq(auth_apikey_create(au, 0, full, &k), 0);
    store_close(st);
    st = NULL;
    cr_assert_eq(hs_read_file(dbpath, 64 << 20, &db, &len), 0);
    cr_assert_null(memmem(db, len, full + 23, 64), "secret stored in clear");
    free(db);
    cr_assert_eq(store_open(&cfg, NULL, &st), 0);
    auth_free(au);
    cr_assert_eq(auth_new(&cfg, st, &au), 0);
    cr_assert_eq(auth_apikey_check(au, full, NULL), 0, "secret must survive a reopen");
}

Test(auth, preauthkey_single_use_and_expiry)
{
    struct store_user u = { .name = "alice" }, uo;
    struct store_preauthkey in = { 0 }, k, got;
    char full[AUTH_KEY_TEXT_MAX];

    cr_assert_eq(store_user_create(st, &u, &uo), 0);
    in.user_id = uo.id;
    cr_assert_eq(auth_preauthkey_create(au, &in, full, &k), 0);
    cr_assert(hs_has_prefix(full, "hskey-auth-"));
    cr_assert_eq(auth_preauthkey_check(au, full, &got), 0);
    cr_assert_eq(got.id, k.id);
    store_preauthkey_free(&got);
    cr_assert_eq(store_preauthkey_use(st, k.id), 0);
    cr_assert_eq(auth_preauthkey_check(au, full, &got), -EALREADY);

    in.reusable = true;
    in.expiration = hs_now_us() - HS_USEC_PER_SEC;
    store_preauthkey_free(&k);
    cr_assert_eq(auth_preauthkey_create(au, &in, full, &k), 0);
    cr_assert_eq(auth_preauthkey_check(au, full, &got), -EKEYEXPIRED);
    store_preauthkey_free(&k);
    store_user_free(&uo);
}

/* Logins racing for one single-use key, from a machine that already has a node of the key's
 * user (a re-login): one wins, the others are refused, and the node is never lost. (The
 * losers used to undo their registration by deleting the node, the winner's included.) */
struct racer {
    const char *key;
    struct auth_node_request rq;
    int rc;
    struct store_node node;
};

static void *race(void *arg)
{
    struct racer *r = arg;

    r->rc = auth_register_with_key(au, r->key, &r->rq, &r->node);
    return NULL;
}

Test(auth, single_use_key_race_never_loses_a_node)
{
    struct store_user u = { .name = "alice" }, uo;
    struct store_preauthkey in = { .reusable = true }, k;
    char first[AUTH_KEY_TEXT_MAX], once[AUTH_KEY_TEXT_MAX];
    struct auth_node_request rq = { .hostinfo_json = "{\"Hostname\":\"box\"}",
                                    .hostname = "box" };
    struct store_node had, now;
    enum { RACERS = 8, ROUNDS = 10 };

    cr_assert_eq(store_user_create(st, &u, &uo), 0);
    in.user_id = uo.id;
    cr_assert_eq(auth_preauthkey_create(au, &in, first, &k), 0);
    store_preauthkey_free(&k);
    memset(rq.machine_key, 7, sizeof(rq.machine_key));
    memset(rq.node_key, 7, sizeof(rq.node_key));
    cr_assert_eq(auth_register_with_key(au, first, &rq, &had), 0);
    in.reusable = false;
    for (int round = 0; round < ROUNDS; round++) {
        struct racer r[RACERS];
        pthread_t t[RACERS];
        int won = 0;

        cr_assert_eq(auth_preauthkey_create(au, &in, once, &k), 0);
        store_preauthkey_free(&k);
        for (int i = 0; i < RACERS; i++) {
            r[i] = (struct racer){ .key = once, .rq = rq };
            r[i].rq.node_key[0] = (uint8_t)(round * RACERS + i); /* a new node key each */
            cr_assert_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
        }
        for (int i = 0; i < RACERS; i++) {
            pthread_join(t[i], NULL);
            if (r[i].rc == 0) {
                won++;
                cr_expect_eq(r[i].node.id, had.id, "the machine's node, logged in again");
                store_node_free(&r[i].node);
            } else {
                cr_expect_eq(r[i].rc, -EALREADY, "a loser is told the key is spent");
            }
        }
        cr_expect_eq(won, 1, "round %d: one login per single-use key", round);
        cr_assert_eq(store_node_get(st, had.id, &now), 0, "round %d: the node is gone", round);
        store_node_free(&now);
    }
    store_node_free(&had);
    store_user_free(&uo);
}

Test(auth, failed_registration_leaves_the_key_unused)
{
    static const struct ip_prefix tiny = { .family = AF_INET, .addr = { 100, 64, 0, 0 },
                                           .bits = 30 }; /* two usable addresses */
    struct store_user u = { .name = "bob" }, uo;
    struct store_preauthkey in = { .reusable = true }, k, got;
    char many[AUTH_KEY_TEXT_MAX], once[AUTH_KEY_TEXT_MAX];
    struct auth_node_request rq = { .hostname = "box" };
    struct store_node n;

    cr_assert_eq(store_user_create(st, &u, &uo), 0);
    in.user_id = uo.id;
    cfg.prefix_v4 = tiny;
    cr_assert_eq(auth_preauthkey_create(au, &in, many, &k), 0);
    store_preauthkey_free(&k);
    for (int i = 1; i <= 2; i++) { /* the pool is full after these */
        memset(rq.machine_key, i, sizeof(rq.machine_key));
        cr_assert_eq(auth_register_with_key(au, many, &rq, &n), 0);
        store_node_free(&n);
    }
    in.reusable = false;
    cr_assert_eq(auth_preauthkey_create(au, &in, once, &k), 0);
    memset(rq.machine_key, 3, sizeof(rq.machine_key));
    cr_assert_lt(auth_register_with_key(au, once, &rq, &n), 0, "no address left");
    cr_assert_eq(auth_preauthkey_check(au, once, &got), 0, "the key is still good");
    store_preauthkey_free(&got);
    store_preauthkey_free(&k);
    store_user_free(&uo);
}

/* ---- tags a client asks for (Hostinfo.RequestTags) ---- */

/* The policy stand-in: the first user may take tag:ok and tag:also, nobody anything else. */
static uint64_t tag_owner;

static bool allow_ok(void *arg, uint64_t user_id, const char *tag)
{
    (void)arg;
    return user_id == tag_owner && (strcmp(tag, "tag:ok") == 0 || strcmp(tag, "tag:also") == 0);
}

static struct auth_node_request tag_request(int key, const char *hostinfo)
{
    struct auth_node_request rq = { .hostinfo_json = hostinfo, .hostname = "tagged-host" };

    memset(rq.machine_key, key, sizeof(rq.machine_key));
    memset(rq.node_key, key, sizeof(rq.node_key));
    return rq;
}

static void user_key(const char *name, uint64_t *user, char full[AUTH_KEY_TEXT_MAX])
{
    struct store_user u = { .name = (char *)name }, uo;
    struct store_preauthkey in = { .reusable = true }, k;

    cr_assert_eq(store_user_create(st, &u, &uo), 0);
    *user = uo.id;
    in.user_id = uo.id;
    cr_assert_eq(auth_preauthkey_create(au, &in, full, &k), 0);
    store_preauthkey_free(&k);
    store_user_free(&uo);
}

static size_t node_count(void)
{
    struct store_node *v;
    size_t n;

    cr_assert_eq(store_node_list(st, 0, &v, &n), 0);
    store_node_list_free(v, n);
    return n;
}

Test(auth, requested_tags_need_the_policy)
{
    static const char want[] = "{\"Hostname\":\"h\",\"RequestTags\":[\"tag:ok\",\"tag:also\","
                               "\"tag:ok\"]}";
    char full[AUTH_KEY_TEXT_MAX];
    struct auth_node_request rq;
    struct store_node n;
    uint64_t alice;

    user_key("alice", &alice, full);
    tag_owner = alice;
    rq = tag_request(1, want);
    cr_expect_eq(auth_register_with_key(au, full, &rq, &n), -EPERM, "no check set: refused");
    cr_expect_eq(node_count(), 0);

    auth_set_tag_check(au, allow_ok, NULL);
    cr_assert_eq(auth_register_with_key(au, full, &rq, &n), 0);
    cr_expect_eq(n.user_id, 0, "tagged: owned by its tags");
    cr_assert_eq(n.tags.n, 2, "sorted, without the duplicate");
    cr_expect_str_eq(n.tags.v[0], "tag:also");
    cr_expect_str_eq(n.tags.v[1], "tag:ok");
    cr_expect_eq(n.expiry, 0, "tagged nodes do not expire");
    store_node_free(&n);

    rq = tag_request(2, "{\"RequestTags\":[\"tag:ok\",\"tag:nope\"]}");
    cr_expect_eq(auth_register_with_key(au, full, &rq, &n), -EPERM, "one refused: all are");
    rq = tag_request(2, "{\"RequestTags\":[\"tag:Bad_Name\"]}");
    cr_expect_eq(auth_register_with_key(au, full, &rq, &n), -EPERM, "malformed");
    cr_expect_eq(node_count(), 1);

    rq = tag_request(2, "{\"RequestTags\":[]}");
    cr_assert_eq(auth_register_with_key(au, full, &rq, &n), 0, "none asked: the key's user");
    cr_expect_eq(n.user_id, alice);
    cr_expect_eq(n.tags.n, 0);
    store_node_free(&n);
}

Test(auth, requested_tags_by_user_and_key)
{
    char full[AUTH_KEY_TEXT_MAX], bob_key[AUTH_KEY_TEXT_MAX], tagged[AUTH_KEY_TEXT_MAX];
    struct store_preauthkey in = { .reusable = true }, k;
    struct auth_node_request rq = tag_request(3, "{\"RequestTags\":[\"tag:ok\"]}");
    struct store_node n;
    uint64_t alice, bob;

    user_key("alice", &alice, full);
    user_key("bob", &bob, bob_key);
    tag_owner = alice;
    auth_set_tag_check(au, allow_ok, NULL);
    cr_expect_eq(auth_register_with_key(au, bob_key, &rq, &n), -EPERM, "bob owns no tag");

    /* A tagged key: its tags are the node's, whatever the node asks for. */
    hs_strv_push(&in.tags, "tag:key");
    cr_assert_eq(auth_preauthkey_create(au, &in, tagged, &k), 0);
    store_preauthkey_free(&k);
    hs_strv_free(&in.tags);
    rq = tag_request(4, "{\"RequestTags\":[\"tag:nope\"]}");
    cr_assert_eq(auth_register_with_key(au, tagged, &rq, &n), 0);
    cr_assert_eq(n.tags.n, 1);
    cr_expect_str_eq(n.tags.v[0], "tag:key");
    store_node_free(&n);
}

Test(auth, requested_tags_on_interactive_login)
{
    struct auth_node_request rq = tag_request(5, "{\"RequestTags\":[\"tag:ok\"]}");
    char id[AUTH_REG_ID_MAX], full[AUTH_KEY_TEXT_MAX];
    struct store_node n;
    uint64_t alice, bob;

    user_key("alice", &alice, full);
    user_key("bob", &bob, full);
    tag_owner = alice;
    auth_set_tag_check(au, allow_ok, NULL);
    cr_assert_eq(auth_registration_start(au, &rq, id), 0);
    cr_expect_eq(auth_registration_complete(au, id, bob, &n), -EPERM, "not bob's tag");
    cr_assert_eq(auth_registration_complete(au, id, alice, &n), 0, "still pending: alice's");
    cr_expect_eq(n.user_id, 0);
    cr_assert_eq(n.tags.n, 1);
    cr_expect_str_eq(n.tags.v[0], "tag:ok");
    store_node_free(&n);
}

Test(auth, registration_id_shape)
{
    cr_expect(auth_registration_id_valid("hskey-authreq-0123456789abcdefABCD-_xy"));
    cr_expect(!auth_registration_id_valid("hskey-authreq-0123456789abcdefABCD-_x"), "short");
    cr_expect(!auth_registration_id_valid("hskey-authreq-0123456789abcdefABCD-_xyz"), "long");
    cr_expect(!auth_registration_id_valid("hskey-authreq-0123456789abcdefABCD-_x!"), "!");
    cr_expect(!auth_registration_id_valid("hskey-auth-0123456789abcdefABCD-_xy"), "prefix");
    cr_expect(!auth_registration_id_valid(NULL));
}

/* approve: the owner the machine's node has already; a new machine has none (-ENXIO) and
 * stays pending. reject: final, repeatable; nothing completes it afterwards. */
Test(auth, registration_approve_and_reject)
{
    struct auth_node_request rq = tag_request(30, "{\"Hostname\":\"h\"}");
    char id[AUTH_REG_ID_MAX], id2[AUTH_REG_ID_MAX], full[AUTH_KEY_TEXT_MAX];
    struct store_node n, again;
    uint64_t alice;

    user_key("alice", &alice, full);
    cr_assert_eq(auth_registration_start(au, &rq, id), 0);
    cr_expect_eq(auth_registration_approve(au, id, &n), -ENXIO, "a new machine has no owner");
    cr_assert_eq(auth_registration_complete(au, id, alice, &n), 0, "still pending");
    cr_expect_eq(auth_registration_approve(au, id, &again), -ENOENT, "completed already");
    cr_expect_eq(auth_registration_reject(au, id), -ENOENT, "completed already");
    /* The same machine logs in again (new node key): approve keeps its node and user. */
    memset(rq.node_key, 31, sizeof(rq.node_key));
    cr_assert_eq(auth_registration_start(au, &rq, id2), 0);
    cr_assert_eq(auth_registration_approve(au, id2, &again), 0);
    cr_expect_eq(again.id, n.id);
    cr_expect_eq(again.user_id, alice);
    cr_expect_eq(again.node_key[0], 31);
    store_node_free(&again);
    store_node_free(&n);
    /* Refused: for good, and again is fine. */
    cr_assert_eq(auth_registration_start(au, &rq, id), 0);
    cr_assert_eq(auth_registration_reject(au, id), 0);
    cr_assert_eq(auth_registration_reject(au, id), 0);
    cr_expect_eq(auth_registration_approve(au, id, &n), -ENOENT);
    cr_expect_eq(auth_registration_complete(au, id, alice, &n), -ENOENT);
    cr_expect_eq(auth_registration_reject(au, "hskey-authreq-000000000000000000000000"),
                 -ENOENT);
}

/* debug create-node names the id; a taken one is refused. */
Test(auth, registration_add_under_a_given_id)
{
    struct auth_node_request rq = tag_request(40, NULL);
    const char *id = "hskey-authreq-debugdebugdebugdebug_-12";
    struct store_registration r;

    cr_assert_eq(auth_registration_add(au, id, &rq), 0);
    cr_expect_eq(auth_registration_add(au, id, &rq), -EEXIST);
    cr_assert_eq(store_registration_get(st, id, &r), 0);
    cr_expect_eq(r.machine_key[0], 40);
    cr_expect(!r.rejected && r.node_id == 0);
    store_registration_free(&r);
}

/* tuning.register_cache_max_entries: the newest stay, the oldest give way (headscale's LRU);
 * Hostinfo is kept as an object, not as escaped text. */
Test(auth, pending_registrations_are_bounded)
{
    char ids[5][AUTH_REG_ID_MAX];
    struct store_registration r;
    size_t n = 0;

    cfg.tuning_register_cache_max_entries = 3;
    for (int i = 0; i < 5; i++) {
        struct auth_node_request rq = tag_request(20 + i, "{\"Hostname\":\"h\\\"q\"}");
        cr_assert_eq(auth_registration_start(au, &rq, ids[i]), 0);
    }
    cr_assert_eq(store_registration_count(st, &n), 0);
    cr_expect_eq(n, 3);
    cr_expect_eq(store_registration_get(st, ids[0], &r), -ENOENT);
    cr_expect_eq(store_registration_get(st, ids[1], &r), -ENOENT);
    cr_assert_eq(store_registration_get(st, ids[4], &r), 0);
    cr_expect(strstr(r.data_json, "\"hostinfo\":{\"Hostname\":\"h\\\"q\"}") != NULL, "%s",
              r.data_json);
    store_registration_free(&r);
}

/* node.expiry, prefixes.v4/v6 and prefixes.allocation as register uses them. */
Test(auth, config_expiry_prefixes_and_allocation)
{
    char full[AUTH_KEY_TEXT_MAX];
    struct auth_node_request rq;
    struct store_node n;
    uint64_t alice;
    int64_t now = hs_now_us();
    bool in_order = true;

    cfg.node_expiry_us = 3600 * HS_USEC_PER_SEC;
    cr_assert_eq(config_parse_prefix("100.100.0.0/16", &cfg.prefix_v4), 0);
    cfg.prefix_v6 = (struct ip_prefix){ 0 }; /* "" disables the family */
    cfg.ip_allocation = IP_ALLOC_RANDOM;
    user_key("alice", &alice, full);
    for (int i = 1; i <= 5; i++) {
        char want[32];
        rq = tag_request(i, "{\"Hostname\":\"h\"}");
        cr_assert_eq(auth_register_with_key(au, full, &rq, &n), 0);
        cr_expect(n.expiry >= now + 3600 * HS_USEC_PER_SEC &&
                      n.expiry < hs_now_us() + 3601 * HS_USEC_PER_SEC,
                  "expiry %lld is not an hour from now", (long long)n.expiry);
        cr_assert_not_null(n.ipv4);
        cr_expect(hs_has_prefix(n.ipv4, "100.100."), "%s outside prefixes.v4", n.ipv4);
        cr_expect_null(n.ipv6, "no IPv6 prefix: no IPv6 address");
        snprintf(want, sizeof(want), "100.100.0.%d", i);
        in_order = in_order && strcmp(n.ipv4, want) == 0;
        store_node_free(&n);
    }
    cr_expect_not(in_order, "random allocation gave 100.100.0.1 to .5 in order");
}

/* Keys imported from a headscale database keep its bcrypt hashes and its forms. */
static void put_imported(const char *table, const char *prefix, const char *secret)
{
    char hash[HS_BCRYPT_LEN + 1];
    const char *sql = strcmp(table, "api_keys") == 0
                          ? "INSERT INTO api_keys (prefix, hash, created_at) VALUES ($1, $2, 1)"
                          : "INSERT INTO pre_auth_keys (prefix, hash, reusable, created_at)"
                            " VALUES ($1, $2, 1, 1)";
    const char *params[2] = { prefix, hash };

    cr_assert_eq(hs_bcrypt_hash(secret, strlen(secret), hash), 0);
    cr_assert_eq(store__exec(st, sql, 2, params, NULL), 0);
}

Test(auth, imported_headscale_keys)
{
    const char *secret64 = "FRwj25GkV_VRzOuQtkG521pShMdS9CY6j9G8S_ipyMotdgQ-_F45sqVR_hlQdV0o";
    const char *legacy_pak = "c6a23af49991173ac4ca6670b6b88a3117767731f75a5240";
    char key[AUTH_KEY_TEXT_MAX];
    struct store_preauthkey k;

    put_imported("api_keys", "ANZXKcZ-GY9Y", secret64);
    snprintf(key, sizeof(key), "hskey-api-ANZXKcZ-GY9Y-%s", secret64);
    cr_assert_eq(auth_apikey_check(au, key, NULL), 0);
    key[strlen(key) - 1] = 'x';
    cr_assert_eq(auth_apikey_check(au, key, NULL), -EACCES);

    put_imported("api_keys", "oqS0p9fGFw", "tKvHdfKMWmVgHM3aRAeNVkK7CMn13MPENcZH_aa8Qy0");
    cr_assert_eq(auth_apikey_check(au, "oqS0p9fGFw.tKvHdfKMWmVgHM3aRAeNVkK7CMn13MPENcZH_aa8Qy0",
                                   NULL), 0);
    cr_assert_eq(auth_apikey_check(au, "oqS0p9fGFw.tKvHdfKMWmVgHM3aRAeNVkK7CMn13MPENcZH_aa8Qy1",
                                   NULL), -EACCES);
    cr_assert_eq(auth_apikey_check(au, ".x", NULL), -EACCES);

    put_imported("pre_auth_keys", "c6a23af49991", legacy_pak);
    cr_assert_eq(auth_preauthkey_check(au, legacy_pak, &k), 0);
    store_preauthkey_free(&k);
    cr_assert_eq(auth_preauthkey_check(au, "c6a23af49991173ac4ca6670b6b88a3117767731f75a5241",
                                       &k), -EACCES);
    /* The prefix alone finds the key for expire/delete, base64url as headscale draws it. */
    cr_assert_eq(auth_cred_prefix(AUTH_CRED_API, "hskey-api-ANZXKcZ-GY9Y-***", key), 0);
    cr_assert_str_eq(key, "ANZXKcZ-GY9Y");
    cr_assert_eq(auth_cred_prefix(AUTH_CRED_PREAUTH, legacy_pak, key), 0);
    cr_assert_str_eq(key, "c6a23af49991");
    cr_assert_eq(auth_cred_prefix(AUTH_CRED_API, legacy_pak, key), -EINVAL);
}
