/* Pre-auth keys and API keys: lists, creation (the new key shown once, on the answer to the
 * form, never in an address) and expiry. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define KEY_DEFAULT_EXPIRY "1h"

static void mark_times(json_t *list)
{
    size_t i;
    json_t *k;
    char buf[40];

    json_array_foreach(list, i, k) {
        wa__human_time(hs_json_str(k, "expiration"), buf, sizeof(buf));
        json_object_set_new(k, "expires", json_string(buf));
        json_object_set_new(k, "expired", json_boolean(wa__time_past(hs_json_str(k,
                                                                                  "expiration"))));
        wa__human_time(hs_json_str(k, "createdAt"), buf, sizeof(buf));
        json_object_set_new(k, "created", json_string(buf));
    }
}

/* The key list page; `created` (a full key just made) is shown once above it. */
static void preauthkeys_page(struct wa_ctx *x, const char *created)
{
    json_t *keys = wa__api_list(x, "/api/v1/preauthkey", "preAuthKeys"), *users, *data;

    if (!keys)
        return;
    if (!(users = wa__api_list(x, "/api/v1/user", "users"))) {
        json_decref(keys);
        return;
    }
    mark_times(keys);
    data = json_pack("{s:o, s:o}", "keys", keys, "users", users);
    if (created)
        json_object_set_new(data, "created_key", json_string(created));
    wa__render(x, wa__page_status(x, data), "preauthkeys", "Pre-auth keys", data);
}

void wa__page_preauthkeys(struct wa_ctx *x)
{
    preauthkeys_page(x, NULL);
}

/* The form's expiry ("90m", "24h", "7d") as an RFC 3339 time; false after an error page. */
static bool form_expiry(struct wa_ctx *x, char *out, size_t size)
{
    const char *text = wa__form_get(&x->form, "expiration");
    int64_t us;

    if (!text || !*text)
        text = KEY_DEFAULT_EXPIRY;
    if (hs_parse_duration(text, &us) < 0 || us <= 0) {
        x->error = "The expiry is a duration such as 30m, 24h or 7d.";
        x->error_status = 400;
        return false;
    }
    hs_format_rfc3339(hs_now_us() + us, out, size);
    return true;
}

void wa__post_preauthkey_create(struct wa_ctx *x)
{
    const char *user = wa__form_get(&x->form, "user");
    char expiry[40];
    json_t *answer = NULL, *body;
    long status;

    if (!form_expiry(x, expiry, sizeof(expiry)))
        return preauthkeys_page(x, NULL);
    body = json_pack("{s:s, s:b, s:b, s:s, s:o}", "user", user ? user : "", "reusable",
                     hs_streq(wa__form_get(&x->form, "reusable"), "on"), "ephemeral",
                     hs_streq(wa__form_get(&x->form, "ephemeral"), "on"), "expiration", expiry,
                     "aclTags", wa__form_words(&x->form, "tags"));
    if (wa__api(x, "POST", "/api/v1/preauthkey", body, &status, &answer) < 0)
        return;
    if (status == 200) {
        preauthkeys_page(x, hs_json_str(json_object_get(answer, "preAuthKey"), "key"));
    } else {
        x->error = wa__api_message(answer);
        x->error_status = 400;
        preauthkeys_page(x, NULL);
    }
    json_decref(answer);
}

/* A change by id from the form's "id" field: method on path with {"id": id}. */
static void change_by_id(struct wa_ctx *x, const char *path, const char *back,
                         void (*show)(struct wa_ctx *x))
{
    const char *id = wa__form_get(&x->form, "id");
    json_t *answer = NULL;
    long status;

    if (wa__api(x, "POST", path, json_pack("{s:s}", "id", id ? id : ""), &status, &answer) == 0)
        wa__after_change(x, status, answer, back, show);
    json_decref(answer);
}

void wa__post_preauthkey_expire(struct wa_ctx *x)
{
    change_by_id(x, "/api/v1/preauthkey/expire", "/preauthkeys", wa__page_preauthkeys);
}

static void apikeys_page(struct wa_ctx *x, const char *created)
{
    json_t *keys = wa__api_list(x, "/api/v1/apikey", "apiKeys"), *data;

    if (!keys)
        return;
    mark_times(keys);
    data = json_pack("{s:o}", "keys", keys);
    if (created)
        json_object_set_new(data, "created_key", json_string(created));
    wa__render(x, wa__page_status(x, data), "apikeys", "API keys", data);
}

void wa__page_apikeys(struct wa_ctx *x)
{
    apikeys_page(x, NULL);
}

void wa__post_apikey_create(struct wa_ctx *x)
{
    char expiry[40];
    json_t *answer = NULL;
    long status;

    if (!form_expiry(x, expiry, sizeof(expiry)))
        return apikeys_page(x, NULL);
    if (wa__api(x, "POST", "/api/v1/apikey", json_pack("{s:s}", "expiration", expiry), &status,
                &answer) < 0)
        return;
    if (status == 200) {
        apikeys_page(x, hs_json_str(answer, "apiKey"));
    } else {
        x->error = wa__api_message(answer);
        x->error_status = 400;
        apikeys_page(x, NULL);
    }
    json_decref(answer);
}

void wa__post_apikey_expire(struct wa_ctx *x)
{
    change_by_id(x, "/api/v1/apikey/expire", "/apikeys", wa__page_apikeys);
}

void wa__post_apikey_delete(struct wa_ctx *x)
{
    const char *id = wa__form_get(&x->form, "id");
    json_t *answer = NULL;
    uint64_t n;
    long status;
    char *path;

    if (!id || hs_parse_u64(id, INT64_MAX, &n) < 0 || n == 0)
        return wa__error_page(x, 404, "No such API key.");
    path = hs_aprintf("/api/v1/apikey/-?id=%" PRIu64, n);
    if (wa__api(x, "DELETE", path, NULL, &status, &answer) == 0)
        wa__after_change(x, status, answer, "/apikeys", wa__page_apikeys);
    json_decref(answer);
    free(path);
}
