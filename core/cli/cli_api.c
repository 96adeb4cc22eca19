/* REST calls from the handlers: JSON in, JSON out, RFC 7807 errors turned into one line. */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"

#define CLI_PLAIN_ERROR_MAX 200 /* a plain-text error body longer than this is not shown */

static const char *status_text(long status)
{
    static const struct {
        long code;
        const char *text;
    } texts[] = {
        { 400, "Bad Request" }, { 401, "Unauthorized" },  { 403, "Forbidden" },
        { 404, "Not Found" },   { 405, "Method Not Allowed" }, { 409, "Conflict" },
        { 500, "Internal Server Error" }, { 502, "Bad Gateway" }, { 503, "Service Unavailable" },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(texts); i++)
        if (texts[i].code == status)
            return texts[i].text;
    return "";
}

/* detail, then every errors[].message that adds something, joined with ": ". */
static void problem_parts(const json_t *p, struct hs_buf *b)
{
    const char *detail = hs_json_str(p, "detail"), *msg;
    size_t i;
    json_t *e;

    if (detail && *detail)
        hs_buf_puts(b, detail);
    json_array_foreach(json_object_get(p, "errors"), i, e) {
        msg = hs_json_str(e, "message");
        if (msg && *msg && !hs_streq(msg, detail))
            hs_buf_appendf(b, "%s%s", b->len ? ": " : "", msg);
    }
    /* ≤0.29 gateway errors: {"code":N,"message":"..."} */
    if (b->len == 0 && (msg = hs_json_str(p, "message")) && *msg)
        hs_buf_puts(b, msg);
    if (b->len == 0 && (msg = hs_json_str(p, "title")) && *msg)
        hs_buf_puts(b, msg);
}

static bool plain_text(const char *body, size_t len)
{
    if (len == 0 || len > CLI_PLAIN_ERROR_MAX || memchr(body, '<', len))
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)body[i] < 0x20 && body[i] != '\n' && body[i] != '\r' && body[i] != '\t')
            return false;
    return true;
}

void cli_problem_message(long status, const char *body, size_t len, char *out, size_t size)
{
    char jerr[160];
    json_t *p = body && len ? hs_json_load(body, len, CLI_MAX_RESPONSE, jerr, sizeof(jerr)) : NULL;
    struct hs_buf b;

    hs_buf_init(&b, size ? size - 1 : 0);
    if (p)
        problem_parts(p, &b);
    json_decref(p);
    if (b.len)
        snprintf(out, size, "%s", b.data);
    else if (!p && plain_text(body, len))
        snprintf(out, size, "%.*s", (int)strcspn(body, "\r\n"), body);
    else
        snprintf(out, size, "unexpected response status: %ld %s", status, status_text(status));
    hs_buf_free(&b);
}

static int api_transport(struct cli_ctx *ctx)
{
    char err[512];

    if (ctx->http)
        return 0;
    if (cli_config(ctx) < 0)
        return -1;
    if (cli_http_open(&ctx->cfg, &ctx->http, err, sizeof(err)) < 0) {
        cli_fail(ctx, "%s", err);
        return -1;
    }
    return 0;
}

static int api_reply(struct cli_ctx *ctx, long status, const struct hs_buf *body, json_t **resp)
{
    char msg[1024];

    if (status < 200 || status > 299) {
        cli_problem_message(status, body->data, body->len, msg, sizeof(msg));
        cli_fail(ctx, "%s", msg);
        return -1;
    }
    *resp = body->len ? hs_json_load(body->data, body->len, CLI_MAX_RESPONSE, msg, sizeof(msg))
                      : json_object();
    if (!*resp) {
        cli_fail(ctx, "bad response from server: %s", msg);
        return -1;
    }
    return 0;
}

int cli_api(struct cli_ctx *ctx, const char *method, const char *path, json_t *body,
            json_t **resp)
{
    char *text = body ? hs_json_dump(body, JSON_COMPACT) : NULL;
    char err[1536]; /* a refused socket's reason names two paths */
    struct hs_buf reply;
    long status = 0;
    int rc = -1;

    json_decref(body);
    hs_buf_init(&reply, CLI_MAX_RESPONSE);
    if (api_transport(ctx) == 0) {
        if (cli_http_do(ctx->http, method, path, text, &status, &reply, err, sizeof(err)) < 0)
            cli_fail(ctx, "%s", err);
        else
            rc = api_reply(ctx, status, &reply, resp);
    }
    hs_buf_free(&reply);
    free(text);
    return rc;
}

/* Only "%s" conversions: each argument is URL-escaped. */
char *cli_pathf(const char *fmt, ...)
{
    struct hs_buf b;
    va_list ap;
    const char *p;

    hs_buf_init(&b, 8192);
    va_start(ap, fmt);
    for (p = fmt; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            char *esc = curl_easy_escape(NULL, va_arg(ap, const char *), 0);
            hs_buf_puts(&b, esc ? esc : "");
            curl_free(esc);
            p++;
        } else {
            hs_buf_append(&b, p, 1);
        }
    }
    va_end(ap);
    return hs_buf_steal(&b);
}
