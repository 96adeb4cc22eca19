#include <criterion/criterion.h>
#include <ctype.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_internal.h"
#include "notify/notify.h"
#include "state/state.h"

static char dir[64], dbpath[128];
static struct hs_config cfg;
static struct notify_bus *bus;
static struct store *st;
static struct state *state;
static struct auth *au;
static struct api *api;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/hs-api-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(dbpath, sizeof(dbpath), "%s/db.sqlite", dir);
    cfg = (struct hs_config){ .db_type = DB_SQLITE, .sqlite_path = dbpath, .sqlite_wal = true,
                              .policy_mode = POLICY_MODE_DATABASE };
    bus = notify_new();
    cr_assert_eq(store_open(&cfg, bus, &st), 0);
    cr_assert_eq(state_new(st, bus, &state), 0);
    state_policy_source(state, STATE_POLICY_STORE, NULL); /* as the server does in this mode */
    cr_assert_eq(auth_new(&cfg, st, &au), 0);
    api = api_new(&cfg, st, au, state);
}

static void teardown(void)
{
    char cmd[160];
    api_free(api);
    auth_free(au);
    state_free(state);
    store_close(st);
    notify_free(bus);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(api, .init = setup, .fini = teardown);

struct query { const char *key, *val; };

static const char *lookup(void *qctx, const char *key)
{
    for (struct query *q = qctx; q && q->key; q++)
        if (strcmp(q->key, key) == 0)
            return q->val;
    return NULL;
}

/* Runs one request; returns the status and the parsed body (caller decrefs). */
static int call(const char *method, const char *path, const char *body, const char *authz,
                bool trusted, struct query *q, json_t **out)
{
    struct api_request req = { .method = method, .path = path, .query = lookup, .qctx = q,
                               .body = body, .body_len = body ? strlen(body) : 0,
                               .authorization = authz, .trusted = trusted };
    struct api_response resp = { 0 };
    int status;

    api_handle(api, &req, &resp);
    status = resp.status;
    *out = json_loads(resp.body.data ? resp.body.data : "", 0, NULL);
    cr_assert_not_null(*out, "response is not JSON: %s", resp.body.data);
    api_response_free(&resp);
    return status;
}

static int local(const char *method, const char *path, const char *body, json_t **out)
{
    return call(method, path, body, NULL, true, NULL, out);
}

/* A request without a valid key, answered as headscale 0.29 does: 401, plain text. */
static void expect_unauthorized(const char *method, const char *path, const char *authz)
{
    struct api_request req = { .method = method, .path = path, .authorization = authz };
    struct api_response resp = { 0 };

    api_handle(api, &req, &resp);
    cr_assert_eq(resp.status, 401, "%s %s (%s): %d", method, path, authz, resp.status);
    cr_assert_str_eq(resp.content_type, "text/plain; charset=utf-8");
    cr_assert_str_eq(resp.body.data, "Unauthorized");
    api_response_free(&resp);
    /* The same answer on the headers alone, before any body is read. */
    cr_assert_not(api_authenticate(api, &req, &resp));
    cr_assert_eq(resp.status, 401);
    api_response_free(&resp);
}

Test(api, untrusted_needs_key)
{
    struct api_request pub = { .method = "GET", .path = "/api/v1/openapi.json" };
    struct api_response resp = { 0 };
    json_t *j;

    expect_unauthorized("GET", "/api/v1/user", NULL);
    expect_unauthorized("GET", "/api/v1/user", "Bearer nope");
    expect_unauthorized("GET", "/api/v1/user", "Basic dXNlcjpwYXNz");
    /* Unknown routes and wrong methods too: nothing to map without a key. */
    expect_unauthorized("GET", "/api/v1/nothing", NULL);
    expect_unauthorized("PATCH", "/api/v1/user", NULL);
    expect_unauthorized("GET", "/api/v2/x", NULL);
    expect_unauthorized("GET", "/api", NULL);
    cr_assert(api_authenticate(api, &pub, &resp));
    api_response_free(&resp);
    cr_assert_eq(call("GET", "/api/v1/openapi.json", NULL, NULL, false, NULL, &j), 200);
    cr_assert_str_eq(hs_json_str(j, "swagger"), "2.0");
    json_decref(j);
}

Test(api, key_from_api_works_as_bearer)
{
    json_t *j;
    char authz[160];

    cr_assert_eq(local("POST", "/api/v1/apikey", "{}", &j), 200);
    snprintf(authz, sizeof(authz), "Bearer %s", hs_json_str(j, "apiKey"));
    json_decref(j);
    cr_assert_eq(call("GET", "/api/v1/user", NULL, authz, false, NULL, &j), 200);
    cr_assert(json_is_array(json_object_get(j, "users")));
    json_decref(j);
}

Test(api, user_shape_and_errors)
{
    json_t *j, *u;

    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"alice\",\"email\":\"a@x.org\"}", &j),
                 200);
    u = json_object_get(j, "user");
    cr_assert_str_eq(hs_json_str(u, "id"), "1");
    cr_assert_str_eq(hs_json_str(u, "name"), "alice");
    cr_assert_str_eq(hs_json_str(u, "email"), "a@x.org");
    cr_assert_str_eq(hs_json_str(u, "displayName"), "");
    cr_assert_not_null(hs_json_str(u, "createdAt"));
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"alice\"}", &j), 409);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"1x\"}", &j), 400);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":", &j), 400);
    cr_assert(strstr(hs_json_str(j, "detail"), "JSON") != NULL);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/user", "[]", &j), 400);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/user/alice", NULL, &j), 200);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/user/bob", NULL, &j), 404);
    json_decref(j);
    cr_assert_eq(local("DELETE", "/api/v1/user/77", NULL, &j), 404);
    json_decref(j);
    cr_assert_eq(local("PATCH", "/api/v1/user", NULL, &j), 405);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/nothing", NULL, &j), 404);
    json_decref(j);
}

Test(api, preauthkey_create_list_masked)
{
    json_t *j, *k;
    char full[128];

    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"bob\"}", &j), 200);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/preauthkey",
                       "{\"user\":\"1\",\"reusable\":true,\"aclTags\":[\"tag:web\"]}", &j), 200);
    k = json_object_get(j, "preAuthKey");
    snprintf(full, sizeof(full), "%s", hs_json_str(k, "key"));
    cr_assert(hs_has_prefix(full, "hskey-auth-"));
    cr_assert_str_eq(hs_json_str(json_object_get(k, "user"), "name"), "bob");
    cr_assert_eq(json_array_size(json_object_get(k, "aclTags")), 1);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/preauthkey", NULL, &j), 200);
    k = json_array_get(json_object_get(j, "preAuthKeys"), 0);
    cr_assert(strstr(hs_json_str(k, "key"), "-***") != NULL);
    cr_assert_null(strstr(json_dumps(j, 0), full + 24), "full key leaked in list");
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/preauthkey", "{\"user\":\"bob\",\"aclTags\":[\"web\"]}",
                       &j), 400);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/preauthkey",
                       "{\"user\":\"bob\",\"expiration\":\"2001-01-01T00:00:00Z\"}", &j), 400);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/preauthkey", "{\"user\":\"9\"}", &j), 404);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/preauthkey", NULL, &j), 200);
    cr_assert_eq(json_array_size(json_object_get(j, "preAuthKeys")), 1, "a failed create "
                 "must not leave a key behind");
    json_decref(j);
}

Test(api, policy_roundtrip_and_rejects)
{
    json_t *j;
    /* headscale 0.29's answer to an empty database: 500 with gRPC UNKNOWN. */
    cr_assert_eq(local("GET", "/api/v1/policy", NULL, &j), 500);
    cr_assert_eq(json_integer_value(json_object_get(j, "code")), 2);
    json_decref(j);
    cr_assert_eq(local("PUT", "/api/v1/policy",
                       "{\"policy\":\"{\\n // hi\\n \\\"acls\\\": [],\\n}\"}", &j), 200);
    json_decref(j);
    cr_assert_eq(local("PUT", "/api/v1/policy", "{\"policy\":\"{\\\"bogus\\\": 1}\"}", &j), 400);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/policy", NULL, &j), 200);
    cr_assert(strstr(hs_json_str(j, "policy"), "// hi") != NULL);
    json_decref(j);
}

/* Saves go into the history with who saved them; a rollback stores the old text as the
 * newest version, and an unknown version or one that no longer compiles changes nothing. */
Test(api, policy_history_and_rollback)
{
    const char *v1 = "{\"policy\":\"{\\\"acls\\\": []}\"}";
    const char *v2 = "{\"policy\":\"{\\\"acls\\\": [], \\\"groups\\\": {}}\"}";
    const char *bearer = "Bearer hskey-api-0123456789ab-00";
    char path[96], first_id[24];
    json_t *j, *vs;

    cr_assert_eq(local("PUT", "/api/v1/policy", v1, &j), 200);
    json_decref(j);
    /* The socket does not check a key, but a key presented names the saver. */
    cr_assert_eq(call("PUT", "/api/v1/policy", v2, bearer, true, NULL, &j), 200);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/policy/history", NULL, &j), 200);
    vs = json_object_get(j, "versions");
    cr_assert_eq(json_array_size(vs), 2);
    cr_assert_str_eq(hs_json_str(json_array_get(vs, 0), "savedBy"), "0123456789ab");
    cr_assert_str_eq(hs_json_str(json_array_get(vs, 1), "savedBy"), "cli");
    cr_assert(json_is_true(json_object_get(json_array_get(vs, 0), "current")));
    cr_assert(json_is_false(json_object_get(json_array_get(vs, 1), "current")));
    cr_assert_null(json_object_get(json_array_get(vs, 0), "policy"), "lists carry no text");
    hs_strlcpy(first_id, hs_json_str(json_array_get(vs, 1), "id"), sizeof(first_id));
    json_decref(j);

    snprintf(path, sizeof(path), "/api/v1/policy/history/%s", first_id);
    cr_assert_eq(local("GET", path, NULL, &j), 200);
    cr_assert_str_eq(hs_json_str(json_object_get(j, "version"), "policy"), "{\"acls\": []}");
    json_decref(j);
    snprintf(path, sizeof(path), "/api/v1/policy/history/%s/rollback", first_id);
    cr_assert_eq(local("POST", path, NULL, &j), 200);
    cr_assert_str_eq(hs_json_str(j, "policy"), "{\"acls\": []}");
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/policy", NULL, &j), 200);
    cr_assert_str_eq(hs_json_str(j, "policy"), "{\"acls\": []}", "the old text is in force");
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/policy/history", NULL, &j), 200);
    vs = json_object_get(j, "versions");
    cr_assert_eq(json_array_size(vs), 3);
    cr_assert_str_eq(hs_json_str(json_array_get(vs, 0), "restoredFrom"), first_id);
    json_decref(j);

    cr_assert_eq(local("POST", "/api/v1/policy/history/999999/rollback", NULL, &j), 404);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/policy/history/x/rollback", NULL, &j), 400);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/policy/history", NULL, &j), 200);
    cr_assert_eq(json_array_size(json_object_get(j, "versions")), 3, "nothing was added");
    json_decref(j);
}

/* ---- the JSON writer and the list shapes it writes ---- */

static void both_str(json_t *o, json_t *a, struct api_jw *w, const char *key, const char *s)
{
    json_object_set_new(o, key, json_string(s)); /* NULL (refused) leaves the member out */
    json_array_append_new(a, json_string(s));
    api_jw_kstr(w, key, s);
}

/* Lists are written with api_jw and single objects with it too (parsed back), so the writer
 * must produce byte for byte what json_dumps(JSON_COMPACT) makes of the same values. */
Test(api, jw_writes_what_jansson_dumps)
{
    static const char *const samples[] = {
        "", "plain", "quote\" back\\slash /slash", "tab\tnl\ncr\rbs\bff\f", "\x01\x1f\x7f",
        "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80", "\xff bad", "cut \xc3", "\xed\xa0\x80",
        "\xc0\xaf", NULL,
    };
    json_t *o = json_object(), *a = json_array(), *inner = json_object();
    struct hs_buf b, arr;
    struct api_jw w, aw;
    char all[128], key[16];
    char *want;

    for (int i = 1; i < 128; i++)
        all[i - 1] = (char)i;
    all[127] = '\0';
    hs_buf_init(&b, 1 << 20);
    hs_buf_init(&arr, 1 << 20);
    api_jw_begin(&w, &b);
    api_jw_begin(&aw, &arr);
    api_jw_obj(&w);
    api_jw_arr(&aw);
    for (size_t i = 0; i < HS_ARRAY_LEN(samples); i++) {
        snprintf(key, sizeof(key), "k%zu", i);
        both_str(o, a, &w, key, samples[i]);
        api_jw_str(&aw, samples[i]);
    }
    both_str(o, a, &w, "all", all);
    api_jw_str(&aw, all);
    api_jw_arr_end(&aw);
    cr_assert_eq(api_jw_end(&aw), 0);
    api_jw_key(&w, "arr");
    api_jw_raw(&w, arr.data);
    json_object_set_new(o, "arr", a);
    api_jw_key(&w, "inner");
    api_jw_obj(&w);
    api_jw_key(&w, "n");
    api_jw_null(&w);
    api_jw_key(&w, "t");
    api_jw_bool(&w, true);
    api_jw_key(&w, "id");
    api_jw_id(&w, 18446744073709551615ull);
    api_jw_key(&w, "at");
    api_jw_time(&w, 1700000000123456);
    api_jw_key(&w, "never");
    api_jw_time(&w, 0);
    api_jw_key(&w, "e");
    api_jw_arr(&w);
    api_jw_arr_end(&w);
    api_jw_obj_end(&w);
    api_jw_obj_end(&w);
    cr_assert_eq(api_jw_end(&w), 0);
    json_object_set_new(inner, "n", json_null());
    json_object_set_new(inner, "t", json_true());
    json_object_set_new(inner, "id", api_json_id(18446744073709551615ull));
    json_object_set_new(inner, "at", api_json_time(1700000000123456));
    json_object_set_new(inner, "never", api_json_time(0));
    json_object_set_new(inner, "e", json_array());
    json_object_set_new(o, "inner", inner);
    want = json_dumps(o, JSON_COMPACT);
    cr_assert_str_eq(b.data, want);
    free(want);
    json_decref(o);
    hs_buf_free(&b);
    hs_buf_free(&arr);
}

/* The fast time formatter must agree with hs_format_rfc3339 everywhere. */
Test(api, jw_time_matches_hs_format_rfc3339)
{
    static const int64_t fixed[] = {
        1, 999, 1000, 1000000, 86399999999, 86400000000, 951782400000000 /* 2000-02-29 */,
        951868800000000, 4107542400000000 /* 2100-03-01 */, 1700000000123456, 1700000000123000,
        253402300799999999 /* 9999-12-31 */, 253402300800000000 /* year 10000 */,
        -1, -86400000000, -30610224000000000 /* year 1000 */, -30610224000000001,
    };
    char want[API_JW_TIME_MAX], got[API_JW_TIME_MAX];
    uint64_t x = 88172645463325252ull;

    for (size_t i = 0; i < HS_ARRAY_LEN(fixed) + 200000; i++) {
        int64_t us;
        if (i < HS_ARRAY_LEN(fixed)) {
            us = fixed[i];
        } else { /* xorshift over 1970-9999, whole seconds and milliseconds too */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            us = (int64_t)(x % 253402300800000000ull);
            if (i % 3 == 1)
                us -= us % 1000000;
            else if (i % 3 == 2)
                us -= us % 1000;
        }
        hs_format_rfc3339(us, want, sizeof(want));
        cr_assert_eq(api_jw_format_time(us, got), strlen(want));
        cr_assert_str_eq(got, want, "us=%lld", (long long)us);
    }
}

Test(api, jw_reports_a_full_buffer)
{
    struct hs_buf b;
    struct api_jw w;

    hs_buf_init(&b, 16);
    api_jw_begin(&w, &b);
    api_jw_arr(&w);
    for (int i = 0; i < 10; i++)
        api_jw_str(&w, "long enough");
    api_jw_arr_end(&w);
    cr_assert_eq(api_jw_end(&w), -E2BIG);
    hs_buf_free(&b);
}

static uint64_t make_node(uint64_t user, uint64_t key, const char *tag, const char *hostname,
                          const char *hostinfo)
{
    static const struct ip_prefix v4 = { .family = AF_INET, .addr = { 100, 64 }, .bits = 10 };
    static int seq;
    struct store_ip_config ips = { .v4 = &v4 };
    struct store_node in = { .user_id = user, .auth_key_id = key, .hostname = (char *)hostname,
                             .given_name = "host", .hostinfo_json = (char *)hostinfo,
                             .register_method = REGISTER_AUTH_KEY, .expiry = 1900000000000000 },
                      out;
    uint64_t id;

    seq++;
    memset(in.machine_key, seq, sizeof(in.machine_key));
    memset(in.node_key, seq, sizeof(in.node_key));
    if (tag)
        hs_strv_push(&in.tags, tag);
    cr_assert_eq(store_node_create(st, &in, &ips, &out), 0);
    hs_strv_free(&in.tags);
    id = out.id;
    store_node_free(&out);
    return id;
}

/* ---- the policy preview ---- */

static uint64_t make_user(const char *name)
{
    char body[96];
    json_t *j;
    uint64_t id;

    snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
    cr_assert_eq(local("POST", "/api/v1/user", body, &j), 200);
    id = strtoull(hs_json_str(json_object_get(j, "user"), "id"), NULL, 10);
    json_decref(j);
    return id;
}

static size_t cell(json_t *m, const char *which, size_t g, size_t h)
{
    return (size_t)json_integer_value(json_array_get(json_array_get(json_object_get(m, which),
                                                                    g), h));
}

/* The draft's rules, written again here as predicates over (user, tagged) so that the
 * expected matrix does not come from the compiler under test. */
struct pnode {
    uint64_t id;
    int user; /* 0 alice, 1 bob */
    bool tagged;
};

static bool draft_reaches(const struct pnode *a, const struct pnode *b)
{
    bool r1 = a->user == 0 && !a->tagged && b->tagged;              /* alice@ -> tag:srv:22 */
    bool r2 = a->user == 1 && !a->tagged && b->user == 0 && !b->tagged; /* bob@ -> alice@:* */
    bool r3 = !a->tagged && !b->tagged && a->user == b->user;       /* member -> self */
    return a != b && (r1 || r2 || r3);
}

#define PREVIEW_DRAFT                                                                          \
    "{\"policy\": \"{\\\"tagOwners\\\": {\\\"tag:srv\\\": [\\\"alice@\\\"]},"                   \
    " \\\"acls\\\": [{\\\"action\\\": \\\"accept\\\", \\\"src\\\": [\\\"alice@\\\"],"             \
    " \\\"dst\\\": [\\\"tag:srv:22\\\"]}, {\\\"action\\\": \\\"accept\\\","                      \
    " \\\"src\\\": [\\\"bob@\\\"], \\\"dst\\\": [\\\"alice@:*\\\"]}, {\\\"action\\\":"         \
    " \\\"accept\\\", \\\"src\\\": [\\\"autogroup:member\\\"],"                                  \
    " \\\"dst\\\": [\\\"autogroup:self:*\\\"]}], \\\"tests\\\": [{"                               \
    " \\\"src\\\": \\\"alice@\\\", \\\"accept\\\": [\\\"tag:srv:22\\\"],"                         \
    " \\\"deny\\\": [\\\"tag:srv:80\\\"]},"                                                        \
    " {\\\"src\\\": \\\"bob@\\\", \\\"accept\\\": [\\\"tag:srv:22\\\"]}]}\"}"

/* Four nodes, no policy in force: the draft's cells against every pair, node by node, and
 * its tests one by one (the second fails); nothing is stored. */
Test(api, policy_preview_small_tailnet)
{
    uint64_t alice = make_user("alice"), bob = make_user("bob");
    struct pnode n[4] = { { .user = 0 }, { .user = 0 }, { .user = 1 },
                          { .user = 0, .tagged = true } };
    json_t *j, *m, *groups, *tests;
    size_t changed = 0;

    for (int i = 0; i < 4; i++)
        n[i].id = make_node(n[i].user ? bob : alice, 0, n[i].tagged ? "tag:srv" : NULL, "h",
                            NULL);
    cr_assert_eq(local("POST", "/api/v1/policy/preview", PREVIEW_DRAFT, &j), 200);
    m = json_object_get(j, "matrix");
    groups = json_object_get(m, "groups");
    cr_assert_str_eq(hs_json_str(m, "grouping"), "node");
    cr_assert_eq(json_array_size(groups), 4);
    for (size_t g = 0; g < 4; g++) {
        const struct pnode *a = NULL, *b;
        for (int i = 0; i < 4; i++)
            if (strtoull(hs_json_str(json_array_get(groups, g), "id"), NULL, 10) == n[i].id)
                a = &n[i];
        cr_assert_not_null(a);
        for (size_t h = 0; h < 4; h++) {
            b = NULL;
            for (int i = 0; i < 4; i++)
                if (strtoull(hs_json_str(json_array_get(groups, h), "id"), NULL, 10) == n[i].id)
                    b = &n[i];
            cr_assert_eq(cell(m, "draft", g, h), draft_reaches(a, b), "draft %zu -> %zu", g, h);
            cr_assert_eq(cell(m, "current", g, h), g != h, "no policy: all but itself");
            cr_assert_eq(cell(m, "pairs", g, h), g != h);
            changed += draft_reaches(a, b) != (g != h);
        }
    }
    cr_assert_eq((size_t)json_integer_value(json_object_get(m, "changed")), changed);
    tests = json_object_get(j, "tests");
    cr_assert(json_is_false(json_object_get(tests, "passed")));
    cr_assert_eq(json_integer_value(json_object_get(tests, "failed")), 1);
    cr_assert(json_is_true(json_object_get(json_array_get(json_object_get(tests, "results"), 0),
                                           "passed")));
    cr_assert(strstr(hs_json_str(json_array_get(json_object_get(tests, "results"), 1),
                                 "message"), "expected accept") != NULL);
    json_decref(j);
    /* A draft with an error: 400 naming where; and nothing was stored either way. */
    cr_assert_eq(local("POST", "/api/v1/policy/preview", "{\"policy\":\"{\\n\\\"acls\\\": [}\"}",
                       &j), 400);
    cr_assert(strstr(hs_json_str(j, "message"), "line 2") != NULL, "%s", hs_json_str(j, "message"));
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/policy/history", NULL, &j), 200);
    cr_assert_eq(json_array_size(json_object_get(j, "versions")), 0);
    json_decref(j);
}

/* Past 32 nodes, rows are owners; past 48 owners, the smallest fold into "others". */
Test(api, policy_preview_groups_owners)
{
    char name[16];
    uint64_t big = make_user("big");
    json_t *j, *m, *groups;
    size_t total = 0, last;

    for (int i = 0; i < 11; i++)
        make_node(big, 0, NULL, "h", NULL);
    for (int u = 0; u < 49; u++) {
        snprintf(name, sizeof(name), "u%02d", u);
        make_node(make_user(name), 0, NULL, "h", NULL);
    }
    cr_assert_eq(local("POST", "/api/v1/policy/preview", "{\"policy\":\"{\\\"acls\\\": []}\"}",
                       &j), 200);
    m = json_object_get(j, "matrix");
    groups = json_object_get(m, "groups");
    cr_assert_str_eq(hs_json_str(m, "grouping"), "owner");
    cr_assert_eq(json_array_size(groups), 48);
    cr_assert_eq(json_integer_value(json_object_get(m, "folded")), 50 - 47);
    last = json_array_size(groups) - 1;
    cr_assert_str_eq(hs_json_str(json_array_get(groups, last), "kind"), "others");
    cr_assert_str_eq(hs_json_str(json_array_get(groups, 0), "name"), "big");
    for (size_t g = 0; g <= last; g++) {
        size_t ng = (size_t)json_integer_value(json_object_get(json_array_get(groups, g), "nodes"));
        total += ng;
        for (size_t h = 0; h <= last; h++) {
            size_t nh = (size_t)json_integer_value(
                json_object_get(json_array_get(groups, h), "nodes"));
            cr_assert_eq(cell(m, "pairs", g, h), ng * nh - (g == h ? ng : 0));
            cr_assert_eq(cell(m, "current", g, h), cell(m, "pairs", g, h), "no policy: all");
            cr_assert_eq(cell(m, "draft", g, h), 0, "no rules: none");
        }
    }
    cr_assert_eq(total, 60);
    json_decref(j);
}

static uint64_t make_key(const char *body)
{
    json_t *j;
    uint64_t id;

    cr_assert_eq(local("POST", "/api/v1/preauthkey", body, &j), 200);
    id = strtoull(hs_json_str(json_object_get(j, "preAuthKey"), "id"), NULL, 10);
    json_decref(j);
    return id;
}

/* GET /api/v1/node reads users and keys once for the whole list: every element must still be
 * what GET /api/v1/node/{id} says of that node (bar the pseudo user lists give tagged nodes). */
Test(api, node_list_matches_node_get)
{
    json_t *j, *list, *one, *el;
    uint64_t ka, kb, kt, deleted;
    char path[64];
    size_t i;

    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"alice\",\"email\":\"a@x.org\"}", &j),
                 200);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"bob\"}", &j), 200);
    json_decref(j);
    ka = make_key("{\"user\":\"1\",\"reusable\":true}");
    kb = make_key("{\"user\":\"2\"}");
    kt = make_key("{\"aclTags\":[\"tag:web\"]}");
    deleted = make_key("{\"user\":\"2\",\"reusable\":true}");
    make_node(1, ka, NULL, "a1", "{\"Hostname\":\"a1\",\"RoutableIPs\":[\"10.1.0.0/16\"]}");
    make_node(1, ka, NULL, "a\"2 \xc3\xa9", "{\"Hostname\":\"x\",\"NetInfo\":{\"RoutableIPs\":1}}");
    make_node(2, kb, NULL, "b1", NULL);
    make_node(0, kt, "tag:web", "t1", "{}");
    make_node(1, 0, NULL, "nokey", NULL);
    make_node(2, deleted, NULL, "gone", NULL);
    snprintf(path, sizeof(path), "%llu", (unsigned long long)deleted);
    cr_assert_eq(call("DELETE", "/api/v1/preauthkey", NULL, NULL, true,
                      (struct query[]){ { "id", path }, { NULL, NULL } }, &j), 200);
    json_decref(j);

    cr_assert_eq(local("GET", "/api/v1/node", NULL, &j), 200);
    list = json_object_get(j, "nodes");
    cr_assert_eq(json_array_size(list), 6);
    json_array_foreach(list, i, el) {
        snprintf(path, sizeof(path), "/api/v1/node/%s", hs_json_str(el, "id"));
        cr_assert_eq(local("GET", path, NULL, &one), 200);
        if (json_array_size(json_object_get(el, "tags"))) {
            cr_assert_str_eq(hs_json_str(json_object_get(el, "user"), "name"), "tagged-devices");
            json_object_del(el, "user");
            json_object_del(json_object_get(one, "node"), "user");
        }
        cr_assert(json_equal(el, json_object_get(one, "node")), "node %s differs: %s vs %s",
                  hs_json_str(el, "id"), json_dumps(el, 0),
                  json_dumps(json_object_get(one, "node"), 0));
        json_decref(one);
    }
    el = json_array_get(list, 0);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(el, "availableRoutes"), 0)),
                     "10.1.0.0/16");
    cr_assert_str_eq(hs_json_str(json_object_get(json_object_get(el, "preAuthKey"), "user"),
                                 "email"), "a@x.org");
    cr_assert_eq(json_array_size(json_object_get(json_array_get(list, 1), "availableRoutes")), 0);
    cr_assert_str_eq(hs_json_str(json_array_get(list, 1), "name"), "a\"2 \xc3\xa9");
    cr_assert(json_is_null(json_object_get(json_array_get(list, 4), "preAuthKey")));
    cr_assert(json_is_null(json_object_get(json_array_get(list, 5), "preAuthKey")));
    json_decref(j);

    cr_assert_eq(local("GET", "/api/v1/node", NULL, &j), 200);
    json_decref(j);
    cr_assert_eq(call("GET", "/api/v1/node", NULL, NULL, true,
                      (struct query[]){ { "user", "bob" }, { NULL, NULL } }, &j), 200);
    cr_assert_eq(json_array_size(json_object_get(j, "nodes")), 2);
    json_decref(j);
}

/* Same for the pre-auth key list, whose users come from one query too. */
Test(api, preauthkey_list_matches_create)
{
    json_t *j, *made, *list;

    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"carol\",\"email\":\"c@x.org\"}", &j),
                 200);
    json_decref(j);
    cr_assert_eq(local("POST", "/api/v1/preauthkey", "{\"user\":\"1\",\"reusable\":true}", &made),
                 200);
    cr_assert_eq(local("POST", "/api/v1/preauthkey", "{\"aclTags\":[\"tag:x\"]}", &j), 200);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/preauthkey", NULL, &j), 200);
    list = json_object_get(j, "preAuthKeys");
    cr_assert_eq(json_array_size(list), 2);
    json_object_del(json_object_get(made, "preAuthKey"), "key");
    json_object_del(json_array_get(list, 0), "key");
    cr_assert(json_equal(json_array_get(list, 0), json_object_get(made, "preAuthKey")));
    cr_assert(json_is_null(json_object_get(json_array_get(list, 1), "user")));
    json_decref(made);
    json_decref(j);
}

/* ---- core/api/openapi.json against the route table, both ways ---- */

/* A document path with each {name} segment written {}, as the route table writes it. */
static void doc_pattern(const char *path, char *out, size_t size)
{
    size_t n = 0;

    while (*path && n + 3 < size) {
        if (*path == '{') {
            out[n++] = '{';
            out[n++] = '}';
            path += strcspn(path, "}");
            if (*path)
                path++;
        } else {
            out[n++] = *path++;
        }
    }
    out[n] = '\0';
}

static size_t count_args(const char *pattern)
{
    size_t n = 0;

    for (const char *p = pattern; (p = strstr(p, "{}")); p += 2)
        n++;
    return n;
}

/* The operation of the document for (method, pattern), or NULL. */
static json_t *doc_operation(json_t *doc, const char *method, const char *pattern)
{
    char lower[16], pat[256];
    const char *path;
    json_t *ops;
    size_t i;

    for (i = 0; method[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)tolower((unsigned char)method[i]);
    lower[i] = '\0';
    json_object_foreach(json_object_get(doc, "paths"), path, ops) {
        doc_pattern(path, pat, sizeof(pat));
        if (strcmp(pat, pattern) == 0 && json_object_get(ops, lower))
            return json_object_get(ops, lower);
    }
    return NULL;
}

static json_t *load_doc(void)
{
    json_error_t err;
    json_t *doc = json_loads(api_openapi_json, JSON_REJECT_DUPLICATES, &err);

    cr_assert_not_null(doc, "openapi.json: %s (line %d)", err.text, err.line);
    cr_assert_str_eq(hs_json_str(doc, "swagger"), "2.0");
    return doc;
}

Test(openapi, every_route_documented)
{
    json_t *doc = load_doc(), *op, *params, *p;
    const char *method, *pattern;
    bool public;
    size_t i, k, in_path;

    for (i = 0; i < api_route_count(); i++) {
        api_route_at(i, &method, &pattern, &public);
        op = doc_operation(doc, method, pattern);
        cr_assert_not_null(op, "%s %s is served but not in core/api/openapi.json", method,
                           pattern);
        cr_assert(hs_has_prefix(hs_json_str(op, "operationId"), "HeadscaleService_"),
                  "%s %s: operationId", method, pattern);
        cr_assert_not_null(json_object_get(json_object_get(op, "responses"), "200"));
        cr_assert_not_null(json_object_get(json_object_get(op, "responses"), "default"));
        in_path = 0;
        params = json_object_get(op, "parameters");
        json_array_foreach(params, k, p)
            in_path += hs_streq(hs_json_str(p, "in"), "path");
        cr_assert_eq(in_path, count_args(pattern), "%s %s: %zu path parameters documented",
                     method, pattern, in_path);
        /* The public routes are the ones documented without security. */
        cr_assert_eq(public, json_is_array(json_object_get(op, "security")) &&
                             json_array_size(json_object_get(op, "security")) == 0,
                     "%s %s: security", method, pattern);
    }
    json_decref(doc);
}

Test(openapi, every_documented_operation_served)
{
    json_t *doc = load_doc(), *ops, *op;
    const char *path, *method, *rmethod, *pattern;
    char pat[256], upper[16];
    bool public, found;
    size_t n = 0;

    json_object_foreach(json_object_get(doc, "paths"), path, ops) {
        doc_pattern(path, pat, sizeof(pat));
        json_object_foreach(ops, method, op) {
            size_t j;
            for (j = 0; method[j] && j + 1 < sizeof(upper); j++)
                upper[j] = (char)toupper((unsigned char)method[j]);
            upper[j] = '\0';
            found = false;
            for (size_t i = 0; i < api_route_count() && !found; i++) {
                api_route_at(i, &rmethod, &pattern, &public);
                found = strcmp(rmethod, upper) == 0 && strcmp(pattern, pat) == 0;
            }
            cr_assert(found, "%s %s is documented but not served", upper, path);
            n++;
        }
    }
    cr_assert_eq(n, api_route_count(), "%zu operations documented, %zu routes", n,
                 api_route_count());
    json_decref(doc);
}

/* Ours, for the web admin: client versions counted from each node's Hostinfo (a hostile or
 * odd IPNVersion counts as what it says, cut to 64 bytes, or not at all), the online history,
 * one node's Hostinfo and endpoints, and the DERP map (empty without one). */
Test(api, node_stats_hostinfo_and_derpmap)
{
    json_t *j, *v, *pts;
    uint64_t id;
    char path[64], longv[200];

    cr_assert_eq(local("POST", "/api/v1/user", "{\"name\":\"alice\"}", &j), 200);
    json_decref(j);
    memset(longv, 'v', sizeof(longv));
    snprintf(longv, sizeof(longv), "{\"IPNVersion\":\"%0150d\"}", 1);
    id = make_node(1, 0, NULL, "a", "{\"Hostname\":\"a\",\"IPNVersion\":\"1.102.3-tX\"}");
    make_node(1, 0, NULL, "b", "{\"IPNVersion\":\"1.102.3-tX\",\"OS\":\"linux\"}");
    make_node(1, 0, NULL, "c", "{\"IPNVersion\":\"1.80.0\\\"<b>\"}");
    make_node(1, 0, NULL, "d", "{\"IPNVersion\":42}");
    make_node(1, 0, NULL, "e", NULL);
    make_node(1, 0, NULL, "f", longv);
    state_sample_online(state, hs_now_us());

    cr_assert_eq(local("GET", "/api/v1/node/stats", NULL, &j), 200);
    v = json_object_get(j, "clientVersions");
    cr_assert_eq(json_array_size(v), 3, "%s", json_dumps(j, 0));
    cr_assert_str_eq(hs_json_str(json_array_get(v, 0), "version"), "1.102.3-tX");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(v, 0), "nodes")), 2);
    cr_assert_str_eq(hs_json_str(json_array_get(v, 2), "version"), "1.80.0\"<b>");
    cr_assert_eq(strlen(hs_json_str(json_array_get(v, 1), "version")), 64);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "onlineHistory"),
                                                    "stepSeconds")), 300);
    pts = json_object_get(json_object_get(j, "onlineHistory"), "points");
    cr_assert_eq(json_array_size(pts), 1);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(pts, 0), "online")), 0);
    cr_assert_not_null(hs_json_str(json_array_get(pts, 0), "time"));
    json_decref(j);

    snprintf(path, sizeof(path), "/api/v1/node/%llu/hostinfo", (unsigned long long)id);
    cr_assert_eq(local("GET", path, NULL, &j), 200);
    cr_assert_str_eq(hs_json_str(json_object_get(j, "hostinfo"), "IPNVersion"), "1.102.3-tX");
    cr_assert(json_is_array(json_object_get(j, "endpoints")));
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/node/999/hostinfo", NULL, &j), 404);
    json_decref(j);
    cr_assert_eq(local("GET", "/api/v1/node/x/hostinfo", NULL, &j), 400);
    json_decref(j);

    cr_assert_eq(local("GET", "/api/v1/derpmap", NULL, &j), 200);
    cr_assert_eq(json_object_size(json_object_get(json_object_get(j, "derpMap"), "Regions")), 0);
    json_decref(j);
}
