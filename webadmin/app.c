/* The program's front: templates loaded at start, routing, sessions and CSRF checks before any
 * page runs, the layout around each page and the headers every answer carries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define SESSION_COOKIE "__Host-wa_session"
#define SIGNIN_COOKIE "__Host-wa_signin"
#define COOKIE_ATTRS "Path=/; HttpOnly; Secure"

/* No inline script or style anywhere: everything comes from static/ on this origin. */
#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " \
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

static const char *const page_files[] = { "signin", "error", "overview", "users", "nodes",
                                          "node", "preauthkeys", "apikeys", "routes", "policy",
                                          "derp", "dns", "signedin", "notadmin" };

struct route {
    const char *method;
    const char *pattern; /* "{}" matches one path segment */
    void (*fn)(struct wa_ctx *x);
};

static const struct route routes[] = {
    { "GET", "/", wa__page_overview },
    { "GET", "/users", wa__page_users },
    { "POST", "/users/create", wa__post_user_create },
    { "POST", "/users/{}/rename", wa__post_user_rename },
    { "POST", "/users/{}/delete", wa__post_user_delete },
    { "GET", "/nodes", wa__page_nodes },
    { "GET", "/live.json", wa__live },
    { "GET", "/nodes/{}", wa__page_node },
    { "POST", "/nodes/{}/rename", wa__post_node_rename },
    { "POST", "/nodes/{}/expire", wa__post_node_expire },
    { "POST", "/nodes/{}/move", wa__post_node_move },
    { "POST", "/nodes/{}/tags", wa__post_node_tags },
    { "POST", "/nodes/{}/delete", wa__post_node_delete },
    { "GET", "/routes", wa__page_routes },
    { "POST", "/routes/{}/approve", wa__post_route_approve },
    { "POST", "/routes/{}/disable", wa__post_route_disable },
    { "GET", "/policy", wa__page_policy },
    { "POST", "/policy/check", wa__post_policy_check },
    { "POST", "/policy/save", wa__post_policy_save },
    { "POST", "/policy/preview", wa__post_policy_preview },
    { "POST", "/policy/versions/{}/rollback", wa__post_policy_rollback },
    { "GET", "/dns", wa__page_dns },
    { "POST", "/dns/save", wa__post_dns_save },
    { "POST", "/dns/revert", wa__post_dns_revert },
    { "GET", "/preauthkeys", wa__page_preauthkeys },
    { "POST", "/preauthkeys/create", wa__post_preauthkey_create },
    { "POST", "/preauthkeys/expire", wa__post_preauthkey_expire },
    { "GET", "/derp", wa__page_derp },
    { "GET", "/apikeys", wa__page_apikeys },
    { "POST", "/apikeys/create", wa__post_apikey_create },
    { "POST", "/apikeys/expire", wa__post_apikey_expire },
    { "POST", "/apikeys/delete", wa__post_apikey_delete },
};

/* ---- start ---- */

static struct tmpl *load_template(const char *dir, const char *name, char *err, size_t errsize)
{
    char *path = hs_aprintf("%s/%s.html", dir, name), *src = NULL, msg[200];
    struct tmpl *t = NULL;
    size_t len;
    int rc = hs_read_file(path, TMPL_MAX_SOURCE, &src, &len);

    if (rc < 0)
        snprintf(err, errsize, "%s: %s", path, strerror(-rc));
    else if (tmpl_compile(src, len, &t, msg, sizeof(msg)) < 0)
        snprintf(err, errsize, "%s: %s", path, msg);
    free(src);
    free(path);
    return t;
}

struct webadmin *webadmin_new(const struct webadmin_config *cfg, char *err, size_t errsize)
{
    struct webadmin *wa = hs_xcalloc(1, sizeof(*wa));

    wa->cfg = *cfg;
    wa->cfg.server_url = hs_strdup(cfg->server_url);
    wa->cfg.templates_dir = hs_strdup(cfg->templates_dir);
    wa->cfg.ca_file = hs_strdup(cfg->ca_file);
    wa->cfg.base_path = hs_strdup(cfg->base_path);
    wa->cfg.sessions_file = hs_strdup(cfg->sessions_file);
    /* The provider's options are wa->oidc's (copied there) but for the administrators. */
    wa->cfg.public_url = wa->cfg.oidc_issuer = wa->cfg.oidc_client_id = NULL;
    wa->cfg.oidc_client_secret_file = wa->cfg.api_key_file = NULL;
    wa->cfg.oidc_name = wa->cfg.oidc_scope = NULL;
    hs_strv_copy(&wa->cfg.admin_emails, &cfg->admin_emails);
    hs_strv_copy(&wa->cfg.admin_groups, &cfg->admin_groups);
    hs_strv_copy(&wa->cfg.admin_ids, &cfg->admin_ids);
    wa->sessions = wa__sessions_new(cfg->session_max_us, cfg->session_idle_us,
                                    cfg->sessions_file);
    wa->client = wa__client_new(cfg->server_url, cfg->ca_file);
    if (!wa->client) {
        snprintf(err, errsize, "libcurl did not start");
        goto fail;
    }
    if (cfg->oidc_issuer && !(wa->oidc = wa__oidc_new(cfg, err, errsize)))
        goto fail;
    if (!(wa->head = load_template(cfg->templates_dir, "_head", err, errsize)) ||
        !(wa->foot = load_template(cfg->templates_dir, "_foot", err, errsize)))
        goto fail;
    for (size_t i = 0; i < HS_ARRAY_LEN(page_files); i++) {
        wa->page_names[i] = page_files[i];
        if (!(wa->pages[i] = load_template(cfg->templates_dir, page_files[i], err, errsize)))
            goto fail;
        wa->npages++;
    }
    return wa;
fail:
    webadmin_free(wa);
    return NULL;
}

void webadmin_free(struct webadmin *wa)
{
    if (!wa)
        return;
    for (size_t i = 0; i < wa->npages; i++)
        tmpl_free(wa->pages[i]);
    tmpl_free(wa->head);
    tmpl_free(wa->foot);
    wa__client_free(wa->client);
    wa__oidc_free(wa->oidc);
    wa__sessions_free(wa->sessions);
    free((char *)wa->cfg.server_url);
    free((char *)wa->cfg.templates_dir);
    free((char *)wa->cfg.ca_file);
    free((char *)wa->cfg.base_path);
    free((char *)wa->cfg.sessions_file);
    hs_strv_free(&wa->cfg.admin_emails);
    hs_strv_free(&wa->cfg.admin_groups);
    hs_strv_free(&wa->cfg.admin_ids);
    free(wa);
}

void wa_response_free(struct wa_response *rs)
{
    hs_buf_free(&rs->headers);
    hs_buf_free(&rs->body);
}

/* ---- answers ---- */

void wa__set_cookie(struct wa_ctx *x, const char *name, const char *value, long max_age,
                    bool lax)
{
    hs_buf_appendf(&x->rs->headers,
                   "Set-Cookie: %s=%s; " COOKIE_ATTRS "; SameSite=%s; Max-Age=%ld\r\n", name,
                   value, lax ? "Lax" : "Strict", max_age);
}

static void set_cookie(struct wa_ctx *x, const char *name, const char *value, long max_age)
{
    wa__set_cookie(x, name, value, max_age, false);
}

static const struct tmpl *page_template(const struct webadmin *wa, const char *name)
{
    for (size_t i = 0; i < wa->npages; i++)
        if (strcmp(wa->page_names[i], name) == 0)
            return wa->pages[i];
    return NULL;
}

void wa__render(struct wa_ctx *x, int status, const char *name, const char *title, json_t *data)
{
    const struct tmpl *page = page_template(x->wa, name);
    char nav[40];
    int rc;

    json_object_set_new(data, "title", json_string(title));
    json_object_set_new(data, "base", json_string(x->wa->cfg.base_path));
    json_object_set_new(data, "signed_in", json_boolean(x->signed_in));
    if (x->signed_in)
        json_object_set_new(data, "csrf", json_string(x->s.csrf));
    snprintf(nav, sizeof(nav), "nav_%s", name);
    json_object_set_new(data, nav, json_true());
    hs_buf_reset(&x->rs->body);
    rc = tmpl_render(x->wa->head, data, &x->rs->body);
    if (rc == 0)
        rc = tmpl_render(page, data, &x->rs->body);
    if (rc == 0)
        rc = tmpl_render(x->wa->foot, data, &x->rs->body);
    json_decref(data);
    x->rs->status = status;
    if (rc < 0) {
        hs_buf_reset(&x->rs->body);
        hs_buf_puts(&x->rs->body, "The page is too large to show.\n");
        x->rs->content_type = "text/plain; charset=utf-8";
        x->rs->status = 500;
    }
}

void wa__redirect(struct wa_ctx *x, const char *rel)
{
    x->rs->status = 303;
    hs_buf_appendf(&x->rs->headers, "Location: %s%s\r\n", x->wa->cfg.base_path, rel);
    hs_buf_reset(&x->rs->body);
}

void wa__error_page(struct wa_ctx *x, int status, const char *message)
{
    wa__render(x, status, "error", "Error", json_pack("{s:s, s:i}", "message", message,
                                                       "status", status));
}

void wa__after_change(struct wa_ctx *x, long status, const json_t *answer, const char *back,
                      void (*show)(struct wa_ctx *x))
{
    if (status == 200)
        return wa__redirect(x, back);
    x->error = wa__api_message(answer);
    x->error_status = status == 404 || status == 409 ? (int)status : 400;
    show(x);
}

int wa__page_status(struct wa_ctx *x, json_t *data)
{
    if (!x->error)
        return 200;
    json_object_set_new(data, "error", json_string(x->error));
    return x->error_status;
}

bool wa__id_arg(struct wa_ctx *x, uint64_t *id)
{
    if (hs_parse_u64(x->args[0], INT64_MAX, id) < 0 || *id == 0) {
        wa__error_page(x, 404, "No such item.");
        return false;
    }
    return true;
}

char *wa__path_join(const char *path, const char *segment)
{
    struct hs_buf b;

    hs_buf_init(&b, SIZE_MAX / 2);
    hs_buf_puts(&b, path);
    hs_buf_puts(&b, "/");
    tmpl_escape_url_component(&b, segment, strlen(segment));
    return hs_buf_steal(&b);
}

void wa__human_time(const char *rfc3339, char *out, size_t size)
{
    int64_t us;

    out[0] = '\0';
    if (rfc3339 && hs_parse_rfc3339(rfc3339, &us) == 0 && us > 0)
        hs_format_human(us, out, size);
}

bool wa__time_past(const char *rfc3339)
{
    int64_t us;

    return rfc3339 && hs_parse_rfc3339(rfc3339, &us) == 0 && us > 0 && us < hs_now_us();
}

/* ---- the API as the signed-in administrator ---- */

void wa__signin_page(struct wa_ctx *x, int status, const char *message)
{
    char token[WA_CSRF_LEN + 1];
    json_t *data = json_object();

    wa__random_token(token);
    set_cookie(x, SIGNIN_COOKIE, token, 3600);
    json_object_set_new(data, "signin_csrf", json_string(token));
    if (message)
        json_object_set_new(data, "error", json_string(message));
    if (x->wa->oidc)
        json_object_set_new(data, "oidc_name", json_string(wa__oidc_name(x->wa->oidc)));
    x->signed_in = false;
    wa__render(x, status, "signin", "Sign in", data);
}

static void end_session(struct wa_ctx *x)
{
    char id[WA_SESSION_ID_LEN + 1];

    if (wa__cookie_get(x->rq->cookie, SESSION_COOKIE, id, sizeof(id)))
        wa__session_end(x->wa->sessions, id);
    set_cookie(x, SESSION_COOKIE, "", 0);
    x->signed_in = false;
}

int wa__api(struct wa_ctx *x, const char *method, const char *path, json_t *body, long *status,
            json_t **out)
{
    int rc = wa__client_call(x->wa->client, x->s.api_key, method, path, body, status, out);

    json_decref(body);

    if (rc < 0) {
        wa__error_page(x, 502, "The headscale server did not answer.");
        return rc;
    }
    if (*status == 401) {
        json_decref(*out);
        *out = NULL;
        end_session(x);
        wa__signin_page(x, 401, "The API key of this session is no longer valid (expired or "
                            "deleted): sign in again.");
        return -EACCES;
    }
    return 0;
}

const char *wa__api_message(const json_t *answer)
{
    const char *m = hs_json_str(answer, "message");

    return m && *m ? m : "The server refused the change.";
}

/* ---- sign in, sign out ---- */

static void do_signin(struct wa_ctx *x)
{
    const char *key = wa__form_get(&x->form, "api_key");
    char expect[WA_CSRF_LEN + 1];
    long status = 0;
    json_t *answer = NULL;

    if (!wa__cookie_get(x->rq->cookie, SIGNIN_COOKIE, expect, sizeof(expect)) ||
        !wa__token_equal(expect, wa__form_get(&x->form, "csrf")))
        return wa__signin_page(x, 403, "The form's security token is missing or wrong: try again.");
    if (!key || !*key || strlen(key) > WA_MAX_API_KEY)
        return wa__signin_page(x, 400, "Enter an API key (hskey-api-…).");
    if (wa__client_call(x->wa->client, key, "GET", "/api/v1/health", NULL, &status,
                        &answer) < 0)
        return wa__signin_page(x, 502, "The headscale server did not answer.");
    json_decref(answer);
    if (status != 200)
        return wa__signin_page(x, 401, "This API key is not valid: unknown, expired or deleted.");
    wa__session_begin(x, key, false);
    wa__redirect(x, "/");
}

void wa__session_begin(struct wa_ctx *x, const char *api_key, bool minted)
{
    char id[WA_SESSION_ID_LEN + 1];

    wa__session_create(x->wa->sessions, api_key, minted, id);
    set_cookie(x, SESSION_COOKIE, id, (long)(x->wa->cfg.session_max_us / HS_USEC_PER_SEC));
    set_cookie(x, SIGNIN_COOKIE, "", 0);
    sodium_memzero(id, sizeof(id));
}

/* ---- routing ---- */

static bool match(const char *pattern, const char *path, const char **args, char *store,
                  size_t storesize)
{
    size_t nargs = 0, used = 0;

    while (*pattern && *path) {
        if (strncmp(pattern, "{}", 2) == 0) {
            size_t n = strcspn(path, "/");
            if (n == 0 || nargs == 2 || used + n + 1 > storesize)
                return false;
            memcpy(store + used, path, n);
            store[used + n] = '\0';
            args[nargs++] = store + used;
            used += n + 1;
            path += n;
            pattern += 2;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

static void route(struct wa_ctx *x, const char *rel)
{
    char store[256];
    bool path_known = false;

    for (size_t i = 0; i < HS_ARRAY_LEN(routes); i++) {
        if (!match(routes[i].pattern, rel, x->args, store, sizeof(store)))
            continue;
        path_known = true;
        if (strcmp(routes[i].method, x->rq->method) == 0)
            return routes[i].fn(x);
    }
    if (path_known)
        wa__error_page(x, 405, "This page does not take that method.");
    else
        wa__error_page(x, 404, "No such page.");
}

static void security_headers(struct wa_response *rs)
{
    hs_buf_puts(&rs->headers, "Content-Security-Policy: " CSP "\r\n"
                              "X-Content-Type-Options: nosniff\r\n"
                              "X-Frame-Options: DENY\r\n"
                              "Referrer-Policy: no-referrer\r\n"
                              "Cache-Control: no-store\r\n");
}

/* Parses the query and a POST's form; false after answering 400 or 415. */
static bool parse_input(struct wa_ctx *x)
{
    const struct wa_request *rq = x->rq;

    if (rq->query && wa__form_parse(&x->query, rq->query, strlen(rq->query)) < 0) {
        wa__error_page(x, 400, "The address's query is malformed.");
        return false;
    }
    if (strcmp(rq->method, "POST") != 0)
        return true;
    if (!rq->content_type ||
        !hs_has_prefix(rq->content_type, "application/x-www-form-urlencoded")) {
        wa__error_page(x, 415, "Forms are sent as application/x-www-form-urlencoded.");
        return false;
    }
    if (rq->body_len > WA_MAX_BODY || wa__form_parse(&x->form, rq->body, rq->body_len) < 0) {
        wa__error_page(x, 400, "The form is malformed or too large.");
        return false;
    }
    return true;
}

/* Signs x in from its session cookie; false after answering (the sign-in page, or 403 for a
 * POST without the session's CSRF token: nothing is changed then). */
static bool check_session(struct wa_ctx *x)
{
    char id[WA_SESSION_ID_LEN + 1];

    if (!wa__cookie_get(x->rq->cookie, SESSION_COOKIE, id, sizeof(id)) ||
        wa__session_open(x->wa->sessions, id, &x->s) < 0) {
        if (x->rq->cookie && strstr(x->rq->cookie, SESSION_COOKIE "="))
            set_cookie(x, SESSION_COOKIE, "", 0);
        wa__redirect(x, "/signin");
        return false;
    }
    x->signed_in = true;
    if (strcmp(x->rq->method, "POST") == 0 &&
        !wa__token_equal(x->s.csrf, wa__form_get(&x->form, "csrf"))) {
        wa__error_page(x, 403, "The form's security token is missing or wrong, so nothing was "
                               "changed. Reload the page and try again.");
        return false;
    }
    return true;
}

static void dispatch(struct wa_ctx *x, const char *rel)
{
    if (strcmp(rel, "/signin") == 0) {
        if (strcmp(x->rq->method, "POST") == 0)
            return do_signin(x);
        return wa__signin_page(x, 200, NULL);
    }
    if (x->wa->oidc && strcmp(x->rq->method, "GET") == 0) {
        if (strcmp(rel, "/oidc/start") == 0)
            return wa__oidc_start(x);
        if (strcmp(rel, "/oidc/callback") == 0)
            return wa__oidc_callback(x);
    }
    if (!check_session(x))
        return;
    if (strcmp(rel, "/signout") == 0 && strcmp(x->rq->method, "POST") == 0) {
        if (x->s.minted[0])
            wa__oidc_expire_key(x);
        end_session(x);
        return wa__redirect(x, "/signin");
    }
    route(x, rel);
}

void webadmin_handle(struct webadmin *wa, const struct wa_request *rq, struct wa_response *rs)
{
    struct wa_ctx x = { .wa = wa, .rq = rq, .rs = rs };
    size_t blen = strlen(wa->cfg.base_path);
    const char *rel = rq->path;

    *rs = (struct wa_response){ .status = 200, .content_type = "text/html; charset=utf-8" };
    hs_buf_init(&rs->headers, WA_MAX_HEADERS);
    hs_buf_init(&rs->body, WA_MAX_PAGE);
    security_headers(rs);
    if (strncmp(rel, wa->cfg.base_path, blen) == 0 && (rel[blen] == '/' || rel[blen] == '\0'))
        rel += blen;
    else
        rel = NULL;
    if (wa->oidc)
        wa__oidc_sweep(wa);
    if (!rel)
        wa__error_page(&x, 404, "No such page.");
    else if (parse_input(&x))
        dispatch(&x, *rel ? rel : "/");
    wa__form_free(&x.form);
    wa__form_free(&x.query);
    sodium_memzero(&x.s, sizeof(x.s));
}
