#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static char dir[64], dbpath[128];
static struct hs_config cfg;
static struct store *st;
static struct auth *au;
static struct api *api;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/hs-api-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(dbpath, sizeof(dbpath), "%s/db.sqlite", dir);
    cfg = (struct hs_config){ .db_type = DB_SQLITE, .sqlite_path = dbpath, .sqlite_wal = true,
                              .policy_mode = POLICY_MODE_DATABASE };
    cr_assert_eq(store_open(&cfg, NULL, &st), 0);
    cr_assert_eq(auth_new(&cfg, st, &au), 0);
    api = api_new(&cfg, st, au, NULL);
}

static void teardown(void)
{
    char cmd[160];
    api_free(api);
    auth_free(au);
    store_close(st);
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

Test(api, untrusted_needs_key)
{
    json_t *j;
    cr_assert_eq(call("GET", "/api/v1/user", NULL, NULL, false, NULL, &j), 401);
    cr_assert_str_eq(hs_json_str(j, "title"), "Unauthorized");
    json_decref(j);
    cr_assert_eq(call("GET", "/api/v1/user", NULL, "Bearer nope", false, NULL, &j), 401);
    json_decref(j);
    cr_assert_eq(call("GET", "/api/v1/openapi.json", NULL, NULL, false, NULL, &j), 200);
    cr_assert_str_eq(hs_json_str(j, "openapi"), "3.1.0");
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
    cr_assert_eq(local("GET", "/api/v1/policy", NULL, &j), 404);
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
