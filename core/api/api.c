#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

#define API_MAX_SEGMENTS 8

struct route {
    const char *method;
    const char *pattern; /* "{}" matches one path segment */
    api_handler fn;
    bool public;         /* no API key needed */
};

/* 0.29 paths first; the 0.22.3 ones ("machine", user by name) reuse the same handlers,
 * which accept an id or a name wherever 0.22 used a name, through api_machine.c's wrappers
 * that make them answer in 0.22.3's shapes. */
static const struct route routes[] = {
    { "GET", "/api/v1/health", api_health, false },
    { "GET", "/api/v1/openapi.json", api_openapi, true },
    { "GET", "/api/v1/user", api_user_list, false },
    { "POST", "/api/v1/user", api_user_create, false },
    { "GET", "/api/v1/user/{}", api_user_get_v022, false },
    { "POST", "/api/v1/user/{}/rename/{}", api_user_rename, false },
    { "DELETE", "/api/v1/user/{}", api_user_delete, false },
    { "GET", "/api/v1/preauthkey", api_preauthkey_list, false },
    { "POST", "/api/v1/preauthkey", api_preauthkey_create, false },
    { "POST", "/api/v1/preauthkey/expire", api_preauthkey_expire, false },
    { "DELETE", "/api/v1/preauthkey", api_preauthkey_delete, false },
    { "GET", "/api/v1/apikey", api_apikey_list, false },
    { "POST", "/api/v1/apikey", api_apikey_create, false },
    { "POST", "/api/v1/apikey/expire", api_apikey_expire, false },
    { "DELETE", "/api/v1/apikey/{}", api_apikey_delete, false },
    { "DELETE", "/api/v1/apikey", api_apikey_delete, false },
    { "GET", "/api/v1/node", api_node_list, false },
    { "GET", "/api/v1/node/page", api_node_page, false }, /* ours: before node/{} */
    { "GET", "/api/v1/node/stats", api_node_stats, false }, /* ours */
    { "GET", "/api/v1/node/{}/hostinfo", api_node_hostinfo, false }, /* ours */
    { "GET", "/api/v1/derpmap", api_derpmap, false }, /* ours */
    { "GET", "/api/v1/node/{}", api_node_get, false },
    { "DELETE", "/api/v1/node/{}", api_node_delete, false },
    { "POST", "/api/v1/node/register", api_node_register, false },
    { "POST", "/api/v1/node/backfillips", api_node_backfill_ips, false },
    { "POST", "/api/v1/node/{}/expire", api_node_expire, false },
    { "POST", "/api/v1/node/{}/rename/{}", api_node_rename, false },
    { "POST", "/api/v1/node/{}/tags", api_node_tags, false },
    { "POST", "/api/v1/node/{}/user", api_node_move, false },
    { "POST", "/api/v1/node/{}/approve_routes", api_node_approve_routes, false },
    { "POST", "/api/v1/auth/register", api_auth_register, false },
    { "POST", "/api/v1/auth/approve", api_auth_approve, false },
    { "POST", "/api/v1/auth/reject", api_auth_reject, false },
    { "POST", "/api/v1/debug/node", api_debug_create_node, false },
    { "POST", "/api/v1/debug/machine", api_debug_create_machine, false },
    { "POST", "/api/v1/machine/register", api_machine_register, false },
    { "POST", "/api/v1/machine/{}/expire", api_machine_expire, false },
    { "POST", "/api/v1/machine/{}/rename/{}", api_machine_rename, false },
    { "POST", "/api/v1/machine/{}/tags", api_machine_tags, false },
    { "POST", "/api/v1/machine/{}/user", api_machine_move, false },
    { "GET", "/api/v1/machine", api_machine_list, false },
    { "GET", "/api/v1/machine/{}", api_machine_get, false },
    { "DELETE", "/api/v1/machine/{}", api_node_delete, false },
    { "GET", "/api/v1/machine/{}/routes", api_routes_node_list, false },
    { "GET", "/api/v1/routes", api_routes_list, false },
    { "POST", "/api/v1/routes/{}/enable", api_route_enable, false },
    { "POST", "/api/v1/routes/{}/disable", api_route_disable, false },
    { "DELETE", "/api/v1/routes/{}", api_route_delete, false },
    { "GET", "/api/v1/policy", api_policy_get, false },
    { "PUT", "/api/v1/policy", api_policy_set, false },
    { "POST", "/api/v1/policy/check", api_policy_check, false },
    { "POST", "/api/v1/policy/preview", api_policy_preview, false },
    { "GET", "/api/v1/policy/history", api_policy_history, false },
    { "GET", "/api/v1/policy/history/{}", api_policy_version, false },
    { "POST", "/api/v1/policy/history/{}/rollback", api_policy_rollback, false },
    { "GET", "/api/v1/dns", api_dns_get, false }, /* ours: headscale has no DNS API */
    { "PUT", "/api/v1/dns", api_dns_set, false },
    { "DELETE", "/api/v1/dns", api_dns_clear, false },
};

size_t api_route_count(void)
{
    return HS_ARRAY_LEN(routes);
}

void api_route_at(size_t i, const char **method, const char **pattern, bool *public)
{
    *method = routes[i].method;
    *pattern = routes[i].pattern;
    *public = routes[i].public;
}

struct api *api_new(const struct hs_config *cfg, struct store *st, struct auth *auth,
                    struct state *state)
{
    struct api *a = hs_xcalloc(1, sizeof(*a));
    *a = (struct api){ .cfg = cfg, .st = st, .auth = auth, .state = state };
    return a;
}

void api_free(struct api *a)
{
    free(a);
}

bool api_handles(const char *path)
{
    return strcmp(path, "/api") == 0 || hs_has_prefix(path, "/api/");
}

void api_response_free(struct api_response *resp)
{
    hs_buf_free(&resp->body);
}

/* Matches path against pattern segment by segment; {} segments are captured. */
static bool route_match(const char *pattern, const char *path, char **args)
{
    size_t nargs = 0;

    while (*pattern && *path) {
        if (strncmp(pattern, "{}", 2) == 0) {
            size_t n = strcspn(path, "/");
            if (n == 0 || nargs == API_MAX_ARGS)
                goto fail;
            args[nargs++] = hs_strndup(path, n);
            path += n;
            pattern += 2;
        } else if (*pattern == *path) {
            pattern++;
            path++;
        } else {
            goto fail;
        }
    }
    if (*pattern == '\0' && (*path == '\0' || strcmp(path, "/") == 0))
        return true;
fail:
    for (size_t i = 0; i < nargs; i++) {
        free(args[i]);
        args[i] = NULL;
    }
    return false;
}

void api_reply(struct api_call *c, int status, json_t *j)
{
    char *s = hs_json_dump(j, JSON_COMPACT);
    int rc;

    json_decref(j);
    c->resp->status = status;
    c->resp->content_type = "application/json";
    hs_buf_reset(&c->resp->body);
    rc = hs_buf_puts(&c->resp->body, s);
    free(s);
    /* Never a 200 with a cut or empty body: say that it did not fit. */
    if (rc < 0)
        api_error(c, 500, "response of %s too large", c->req->path);
}

void api_reply_begin(struct api_call *c, struct api_jw *w)
{
    c->resp->status = 200;
    c->resp->content_type = "application/json";
    hs_buf_reset(&c->resp->body);
    api_jw_begin(w, &c->resp->body);
}

void api_reply_end(struct api_call *c, struct api_jw *w)
{
    int rc = api_jw_end(w);

    if (rc < 0)
        api_error(c, 500, "response of %s not written: %s", c->req->path, hs_strerror(rc));
}

/* One row per status we answer: its reason phrase (the RFC 7807 title) and the gRPC code that
 * grpc-gateway, headscale 0.29's REST front, would put in "code" for it. */
static const struct {
    int status;
    int grpc_code;
    const char *title;
} error_kinds[] = {
    { 400, 3, "Bad Request" },        /* INVALID_ARGUMENT */
    { 401, 16, "Unauthorized" },      /* UNAUTHENTICATED */
    { 403, 7, "Forbidden" },          /* PERMISSION_DENIED */
    { 404, 5, "Not Found" },          /* NOT_FOUND */
    { 405, 12, "Method Not Allowed" }, /* UNIMPLEMENTED (the gateway answers 501) */
    { 409, 6, "Conflict" },           /* ALREADY_EXISTS */
    { 413, 8, "Payload Too Large" },  /* RESOURCE_EXHAUSTED */
    { 503, 14, "Service Unavailable" }, /* UNAVAILABLE */
    { 500, 13, "Internal Server Error" }, /* INTERNAL; also the row for any other status */
};

static size_t error_kind(int status)
{
    size_t i = 0;

    while (i < HS_ARRAY_LEN(error_kinds) - 1 && error_kinds[i].status != status)
        i++;
    return i;
}

/* The body is both error shapes at once: headscale 0.29's gateway error ({code, message,
 * details}, which its go-swagger clients decode) and RFC 7807's members, which headscale's
 * next release answers with; each kind of client reads its own members and ignores the rest.
 * It is typed application/json, as 0.29 types it: a go-swagger client refuses a
 * problem+json body. */
static void error_reply(struct api_call *c, int status, int grpc_code, const char *fmt,
                        va_list ap)
{
    size_t k = error_kind(status);
    char detail[512];
    json_t *j;

    vsnprintf(detail, sizeof(detail), fmt, ap);
    /* Messages quote client input, which may be cut mid-character or not be UTF-8 at all. */
    hs_utf8_sanitize(detail);
    j = json_pack("{s:i, s:s, s:[], s:s, s:s, s:i, s:s}", "code",
                  grpc_code < 0 ? error_kinds[k].grpc_code : grpc_code, "message", detail,
                  "details", "type", "about:blank", "title", error_kinds[k].title, "status",
                  status, "detail", detail);
    api_reply(c, status, j);
}

void api_error(struct api_call *c, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_reply(c, status, -1, fmt, ap);
    va_end(ap);
}

void api_error_code(struct api_call *c, int status, int grpc_code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_reply(c, status, grpc_code, fmt, ap);
    va_end(ap);
}

void api_store_error(struct api_call *c, int rc, const char *what)
{
    switch (rc) {
    case -ENOENT:
        api_error(c, 404, "%s not found", what);
        break;
    case -EEXIST:
        api_error(c, 409, "%s already exists", what);
        break;
    case -EINVAL:
        api_error(c, 400, "invalid %s", what);
        break;
    case -EDQUOT: /* see store.h */
        api_error(c, 500, "database error: its disk is full; nothing was written");
        break;
    case -EIO: /* unreachable, or a failure the server log names: "Input/output error" says
                * neither */
        api_error(c, 500, "database error: the database did not answer or failed the request "
                          "(see the server log)");
        break;
    default:
        api_error(c, 500, "database error: %s", hs_strerror(rc));
    }
}

/* headscale 0.29's answer, word for word and typed the same: clients and scripts written
 * against it see no difference, and nothing tells a caller without a key which routes exist
 * or why its key failed (the reason goes to the log). */
static void reply_unauthorized(struct api_call *c, const char *why)
{
    static const char body[] = "Unauthorized";

    log_debug("api: %s %s: 401: %s", c->req->method, c->req->path, why);
    c->resp->status = 401;
    c->resp->content_type = "text/plain; charset=utf-8";
    hs_buf_reset(&c->resp->body);
    hs_buf_append(&c->resp->body, body, sizeof(body) - 1);
}

static bool route_public(const struct api_request *req)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(routes); i++)
        if (routes[i].public && strcmp(routes[i].pattern, req->path) == 0)
            return true;
    return false;
}

static bool api_authorized(struct api_call *c)
{
    const char *h = c->req->authorization;
    int rc;

    if (c->req->trusted || c->req->authenticated || route_public(c->req))
        return true;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        reply_unauthorized(c, "no \"Authorization: Bearer <api key>\"");
        return false;
    }
    rc = auth_apikey_check(c->api->auth, h + 7, NULL);
    if (rc == 0)
        return true;
    if (rc == -EKEYEXPIRED)
        reply_unauthorized(c, "API key expired");
    else if (rc == -EACCES || rc == -EINVAL)
        reply_unauthorized(c, "invalid API key");
    else
        api_error(c, 500, "cannot check API key: %s", hs_strerror(rc));
    return false;
}

bool api_authenticate(struct api *a, const struct api_request *req, struct api_response *resp)
{
    struct api_call c = { .api = a, .req = req, .resp = resp };

    hs_buf_init(&resp->body, API_MAX_RESPONSE);
    return api_authorized(&c);
}

static bool args_valid(const struct api_call *c)
{
    for (size_t i = 0; i < API_MAX_ARGS; i++)
        if (c->args[i] && !hs_utf8_valid(c->args[i], strlen(c->args[i])))
            return false;
    return true;
}

void api_handle(struct api *a, const struct api_request *req, struct api_response *resp)
{
    struct api_call c = { .api = a, .req = req, .resp = resp };
    bool path_known = false;

    hs_buf_init(&resp->body, API_MAX_RESPONSE);
    if (!api_authorized(&c))
        return;
    for (size_t i = 0; i < HS_ARRAY_LEN(routes); i++) {
        if (!route_match(routes[i].pattern, req->path, c.args))
            continue;
        path_known = true;
        if (strcmp(routes[i].method, req->method) != 0) {
            for (size_t j = 0; j < API_MAX_ARGS; j++) {
                free(c.args[j]);
                c.args[j] = NULL;
            }
            continue;
        }
        if (!args_valid(&c) || req->invalid_utf8)
            api_error(&c, 400, "the request path or query is not valid UTF-8");
        else
            routes[i].fn(&c);
        goto out;
    }
    if (path_known)
        api_error(&c, 405, "method %s not allowed on %s", req->method, req->path);
    else
        api_error(&c, 404, "no such endpoint: %s", req->path);
out:
    for (size_t j = 0; j < API_MAX_ARGS; j++)
        free(c.args[j]);
    json_decref(c.body);
}

/* grpc-gateway's protojson reads a field under its proto name (acl_tags) as well as its JSON
 * name (aclTags), and headscale 0.29's clients send either: each snake_case member is also
 * given under its lowerCamelCase name. Both names at once is a duplicate field, refused as
 * protojson refuses it. */
static int add_camel_case_names(struct api_call *c, json_t *obj)
{
    json_t *extra = json_object(), *v;
    const char *key;
    char camel[64];
    int rc = 0;

    json_object_foreach(obj, key, v) {
        size_t n = 0;
        if (!strchr(key, '_') || strlen(key) >= sizeof(camel))
            continue;
        for (const char *k = key; *k; k++) {
            if (*k == '_' && k[1] && k != key)
                camel[n++] = (char)toupper((unsigned char)*++k);
            else
                camel[n++] = *k;
        }
        camel[n] = '\0';
        if (json_object_get(obj, camel) || json_object_get(extra, camel)) {
            api_error(c, 400, "field \"%s\" is given twice (as \"%s\" too)", camel, key);
            rc = -EINVAL;
            break;
        }
        json_object_set(extra, camel, v);
    }
    if (rc == 0)
        json_object_update(obj, extra);
    json_decref(extra);
    return rc;
}

json_t *api_body(struct api_call *c)
{
    char err[256];

    if (c->body)
        return c->body;
    if (c->req->body_len == 0) {
        c->body = json_object();
        return c->body;
    }
    c->body = hs_json_load(c->req->body, c->req->body_len, API_MAX_BODY, err, sizeof(err));
    if (!c->body) {
        api_error(c, 400, "%s", err);
        return NULL;
    }
    if (!json_is_object(c->body)) {
        api_error(c, 400, "request body must be a JSON object");
        json_decref(c->body);
        c->body = NULL;
        return NULL;
    }
    if (add_camel_case_names(c, c->body) < 0) {
        json_decref(c->body);
        c->body = NULL;
    }
    return c->body;
}

const char *api_query(struct api_call *c, const char *key)
{
    const char *v = c->req->query ? c->req->query(c->req->qctx, key) : NULL;
    return v && *v ? v : NULL;
}
