#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_internal.h"
#include "auth/auth.h"
#include "policy/policy.h"
#include "state/state.h"

static void reply_policy(struct api_call *c, const char *text, int64_t updated_at)
{
    api_reply(c, 200, json_pack("{s:s, s:o}", "policy", text, "updatedAt",
                                api_json_time(updated_at)));
}

/* The policy in force (what SIGHUP or the last accepted PUT put there), not whatever the
 * file holds now: a file edited into something invalid is not what the tailnet runs. */
void api_policy_get(struct api_call *c)
{
    const struct hs_config *cfg = c->api->cfg;
    int64_t updated_at = 0;
    char *text;

    if (state_policy_text(c->api->state, &text, &updated_at) < 0) {
        /* headscale 0.29 answers "no policy" so (500, gRPC UNKNOWN) in either mode, and its
         * clients (the CLI, web UIs) know that answer. */
        if (cfg->policy_mode == POLICY_MODE_DATABASE)
            api_error_code(c, 500, API_GRPC_UNKNOWN,
                           "no policy has been set (policy.mode is database)");
        else if (!cfg->policy_path || !*cfg->policy_path)
            api_error_code(c, 500, API_GRPC_UNKNOWN,
                           "no policy file is configured (policy.path is empty)");
        else
            api_error_code(c, 500, API_GRPC_UNKNOWN, "no policy is in force");
        return;
    }
    reply_policy(c, text, updated_at);
    free(text);
}

/* Reads {"policy": "..."} and checks that it loads and compiles for the current users and
 * nodes (a policy failing its own tests is refused); NULL after replying 400. An empty text
 * is no policy (every node reaches every other): how headscale's clients clear it. */
static const char *policy_from_body(struct api_call *c)
{
    json_t *body = api_body(c);
    const char *text = NULL;
    char err[1024];

    if (!body || api_field_str(c, body, "policy", &text) < 0)
        return NULL;
    if (!text) {
        api_error(c, 400, "field \"policy\" is required");
        return NULL;
    }
    if (*text && state_policy_check(c->api->state, text, strlen(text), POLICY_FORMAT_AUTO, err,
                                    sizeof(err)) < 0) {
        api_error(c, 400, "invalid policy: %s", err);
        return NULL;
    }
    return text;
}

/* Who saves: the API key's prefix as presented (checked by now, except over the unix socket,
 * where every caller is trusted), or "cli" for the socket without a key. */
static void saved_by(const struct api_call *c, char out[STORE_POLICY_WHO_MAX])
{
    const char *h = c->req->authorization;
    char prefix[AUTH_PREFIX_LEN + 1];

    if (h && strncasecmp(h, "Bearer ", 7) == 0 &&
        auth_cred_prefix(AUTH_CRED_API, h + 7, prefix) == 0)
        snprintf(out, STORE_POLICY_WHO_MAX, "%s", prefix);
    else
        snprintf(out, STORE_POLICY_WHO_MAX, "%s", c->req->trusted ? "cli" : "");
}

static bool database_mode(struct api_call *c)
{
    if (c->api->cfg->policy_mode == POLICY_MODE_DATABASE)
        return true;
    api_error(c, 400, "update is disabled: policy.mode is \"file\"; set it to \"database\" "
                      "to manage the policy through the API");
    return false;
}

/* Stores a checked text as the newest version; the store's event makes the state load the
 * new row (state_policy_reload), here and on every replica. */
static void store_checked(struct api_call *c, const char *text, uint64_t restored_from)
{
    char who[STORE_POLICY_WHO_MAX];
    int64_t updated_at;
    uint64_t id;
    int rc;

    saved_by(c, who);
    if ((rc = store_policy_set(c->api->st, text, who, restored_from, &updated_at, &id)) < 0) {
        api_store_error(c, rc, "policy");
        return;
    }
    if (!restored_from)
        return reply_policy(c, text, updated_at);
    api_reply(c, 200, json_pack("{s:s, s:o, s:o}", "policy", text, "updatedAt",
                                api_json_time(updated_at), "versionId", api_json_id(id)));
}

void api_policy_set(struct api_call *c)
{
    const char *text;

    if (database_mode(c) && (text = policy_from_body(c)))
        store_checked(c, text, 0);
}

void api_policy_check(struct api_call *c)
{
    if (policy_from_body(c))
        api_reply(c, 200, json_object());
}

/* ---- history (ours: headscale keeps no versions) ---- */

static json_t *version_json(const struct store_policy_version *v, bool current)
{
    json_t *j = json_pack("{s:o, s:o, s:s, s:I, s:b}", "id", api_json_id(v->id), "savedAt",
                          api_json_time(v->saved_at), "savedBy", v->saved_by, "size",
                          (json_int_t)v->size, "current", current);

    json_object_set_new(j, "restoredFrom", v->restored_from ? api_json_id(v->restored_from)
                                                            : json_null());
    if (v->text)
        json_object_set_new(j, "policy", json_string(v->text));
    return j;
}

/* The newest version is the one in force in database mode; in file mode none is. */
void api_policy_history(struct api_call *c)
{
    bool db = c->api->cfg->policy_mode == POLICY_MODE_DATABASE;
    struct store_policy_version *v;
    json_t *list = json_array();
    size_t n;
    int rc;

    if ((rc = store_policy_versions(c->api->st, &v, &n)) < 0) {
        json_decref(list);
        api_store_error(c, rc, "policy history");
        return;
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, version_json(&v[i], db && i == 0));
    store_policy_versions_free(v, n);
    api_reply(c, 200, json_pack("{s:o, s:i}", "versions", list, "kept", STORE_POLICY_VERSIONS));
}

/* Version args[0] with its text; false after replying. */
static bool version_arg(struct api_call *c, struct store_policy_version *v)
{
    uint64_t id;
    int rc;

    if (api_parse_id(c, c->args[0], "policy version", &id) < 0)
        return false;
    if ((rc = store_policy_version_get(c->api->st, id, v)) < 0) {
        api_store_error(c, rc, "policy version");
        return false;
    }
    return true;
}

void api_policy_version(struct api_call *c)
{
    struct store_policy_version v;
    struct store_policy_version *newest = NULL;
    size_t n = 0;
    bool current;

    if (!version_arg(c, &v))
        return;
    current = c->api->cfg->policy_mode == POLICY_MODE_DATABASE &&
              store_policy_versions(c->api->st, &newest, &n) == 0 && n && newest[0].id == v.id;
    store_policy_versions_free(newest, n);
    api_reply(c, 200, json_pack("{s:o}", "version", version_json(&v, current)));
    free(v.text);
}

/* The old text goes through the checks of PUT /api/v1/policy again (the users and nodes may
 * have changed since) and is stored as a new version: history is never rewritten. */
void api_policy_rollback(struct api_call *c)
{
    struct store_policy_version v;
    char err[1024];

    if (!database_mode(c) || !version_arg(c, &v))
        return;
    if (*v.text && state_policy_check(c->api->state, v.text, strlen(v.text), POLICY_FORMAT_AUTO,
                                      err, sizeof(err)) < 0)
        api_error(c, 400, "invalid policy: version %" PRIu64 ": %s", v.id, err);
    else
        store_checked(c, v.text, v.id);
    free(v.text);
}

void api_openapi(struct api_call *c)
{
    c->resp->status = 200;
    c->resp->content_type = "application/json";
    hs_buf_reset(&c->resp->body);
    hs_buf_puts(&c->resp->body, api_openapi_json);
}

const char *api_openapi_document(void)
{
    return api_openapi_json;
}
