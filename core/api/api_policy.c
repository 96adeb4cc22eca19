#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
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

void api_policy_set(struct api_call *c)
{
    const char *text;
    int64_t updated_at;
    int rc;

    if (c->api->cfg->policy_mode != POLICY_MODE_DATABASE) {
        api_error(c, 400, "update is disabled: policy.mode is \"file\"; set it to \"database\" "
                          "to manage the policy through the API");
        return;
    }
    if (!(text = policy_from_body(c)))
        return;
    /* The store's event makes the state load the new row (state_policy_reload). */
    if ((rc = store_policy_set(c->api->st, text, &updated_at)) < 0) {
        api_store_error(c, rc, "policy");
        return;
    }
    reply_policy(c, text, updated_at);
}

void api_policy_check(struct api_call *c)
{
    if (policy_from_body(c))
        api_reply(c, 200, json_object());
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
