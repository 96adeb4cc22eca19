/* `headscale mockoidc`: the provider mockoidc.h describes, served with libmicrohttpd. */
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "mockoidc/mockoidc.h"
#include "util/util.h"

#define MOCK_MAX_SESSIONS 1024 /* the oldest session gives way past this */
#define MOCK_MAX_BODY 16384
#define MOCK_MAX_USERS 1024
#define MOCK_CODE_BYTES 24
#define MOCK_DEFAULT_TTL_US (2 * 60 * HS_USEC_PER_SEC)
#define MOCK_REFRESH_TTL_US (60 * 60 * HS_USEC_PER_SEC) /* headscale's mock: an hour */

struct mock_session {
    char *code; /* NULL: free slot; also the tokens' jti */
    struct hs_strv scopes;
    char *nonce, *challenge, *method;
    json_t *user; /* borrowed from the user list or the default user */
    bool granted; /* the code was exchanged: it cannot be again */
};

struct mockoidc {
    char *client_id, *client_secret, *issuer;
    int64_t access_ttl_us;
    EVP_PKEY *key;
    char *kid;
    json_t *users, *default_user;
    size_t next_user;
    pthread_mutex_t mu; /* next_user and sessions */
    struct mock_session sessions[MOCK_MAX_SESSIONS];
    size_t next_slot;
    struct MHD_Daemon *http;
};

struct mock_request {
    struct hs_buf body;
    bool too_big;
};

/* ---- replies ---- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
                             const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned status, json_t *j)
{
    char *text = hs_json_dump(j, JSON_COMPACT);
    enum MHD_Result ret = reply(conn, status, "application/json", text);

    free(text);
    json_decref(j);
    return ret;
}

/* OAuth 2.0's error shape (RFC 6749 §5.2). */
static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status,
                                   const char *code, const char *what)
{
    return reply_json(conn, status,
                      json_pack("{s:s, s:s}", "error", code, "error_description", what));
}

/* ---- users and sessions ---- */

/* The user the mock hands out once its list is used up (the library's default). */
static json_t *default_user(void)
{
    return json_pack("{s:s, s:s, s:b, s:s, s:s, s:s, s:[s,s]}", "Subject", "1234567890",
                     "Email", "jane.doe@example.com", "EmailVerified", 1, "PreferredUsername",
                     "jane.doe", "Phone", "555-987-6543", "Address", "123 Main Street",
                     "Groups", "engineering", "design");
}

static json_t *next_user(struct mockoidc *m)
{
    json_t *u = json_array_get(m->users, m->next_user);

    if (!u)
        return m->default_user;
    m->next_user++;
    return u;
}

static void session_clear(struct mock_session *s)
{
    free(s->code);
    free(s->nonce);
    free(s->challenge);
    free(s->method);
    hs_strv_free(&s->scopes);
    *s = (struct mock_session){ 0 };
}

static struct mock_session *session_find(struct mockoidc *m, const char *code)
{
    for (size_t i = 0; code && i < MOCK_MAX_SESSIONS; i++)
        if (m->sessions[i].code && strcmp(m->sessions[i].code, code) == 0)
            return &m->sessions[i];
    return NULL;
}

static bool has_scope(const struct mock_session *s, const char *scope)
{
    return hs_strv_contains(&s->scopes, scope);
}

/* The user's claims the session's scopes allow, as the library scopes them: profile gives the
 * name, phone and address; email the address and whether it is verified; groups the groups. */
static void add_user_claims(json_t *out, const struct mock_session *s, bool id_token)
{
    const json_t *u = s->user;
    const json_t *groups = json_object_get(u, "Groups");
    static const struct { const char *scope, *field, *claim; } map[] = {
        { "profile", "PreferredUsername", "preferred_username" },
        { "profile", "Phone", "phone_number" },
        { "profile", "Address", "address" },
        { "email", "Email", "email" },
    };

    json_object_set_new(out, "sub", json_string(hs_json_str(u, "Subject") ?: ""));
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const char *v = hs_json_str(u, map[i].field);
        if (has_scope(s, map[i].scope) && v && *v)
            json_object_set_new(out, map[i].claim, json_string(v));
    }
    if (id_token && has_scope(s, "email") && json_is_true(json_object_get(u, "EmailVerified")))
        json_object_set_new(out, "email_verified", json_true());
    if (has_scope(s, "groups") && json_array_size(groups))
        json_object_set(out, "groups", (json_t *)groups);
}

/* ---- endpoints ---- */

static enum MHD_Result serve_discovery(struct mockoidc *m, struct MHD_Connection *conn)
{
    const char *is = m->issuer;
    json_t *d = json_pack(
        "{s:s, s:s++, s:s++, s:s++, s:s++, s:[s,s], s:[s], s:[s], s:[s], s:[s,s,s,s], "
        "s:[s,s], s:[s,s,s,s,s,s,s,s,s], s:[s,s]}",
        "issuer", is, "authorization_endpoint", is, "/authorize", "", "token_endpoint", is,
        "/token", "", "jwks_uri", is, "/.well-known/jwks.json", "", "userinfo_endpoint", is,
        "/userinfo", "", "grant_types_supported", "authorization_code", "refresh_token",
        "response_types_supported", "code", "subject_types_supported", "public",
        "id_token_signing_alg_values_supported", "RS256", "scopes_supported", "openid",
        "email", "groups", "profile", "token_endpoint_auth_methods_supported",
        "client_secret_basic", "client_secret_post", "claims_supported", "sub", "email",
        "email_verified", "preferred_username", "phone_number", "address", "groups", "iss",
        "aud", "code_challenge_methods_supported", "plain", "S256");

    return reply_json(conn, 200, d);
}

static enum MHD_Result serve_jwks(struct mockoidc *m, struct MHD_Connection *conn)
{
    return reply_json(conn, 200,
                      json_pack("{s:[o]}", "keys", auth_jwk_rsa_public(m->key, m->kid)));
}

static const char *arg(struct MHD_Connection *conn, const char *key)
{
    return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key);
}

/* The scopes must be ones it knows and include openid. */
static bool scopes_ok(const char *scope, struct hs_strv *out)
{
    static const char *const known[] = { "openid", "email", "groups", "profile", NULL };

    hs_strv_split(out, scope, " ");
    for (size_t i = 0; i < out->n; i++) {
        bool ok = false;
        for (size_t k = 0; known[k]; k++)
            ok |= strcmp(out->v[i], known[k]) == 0;
        if (!ok)
            return false;
    }
    return hs_strv_contains(out, "openid");
}

static char *new_code(void)
{
    uint8_t rnd[MOCK_CODE_BYTES];

    randombytes_buf(rnd, sizeof(rnd));
    return auth_b64url(rnd, sizeof(rnd));
}

/* Stores a session and returns a copy of its code. */
static char *session_add(struct mockoidc *m, struct hs_strv *scopes, const char *nonce,
                               const char *challenge, const char *method)
{
    struct mock_session *s;
    char *code;

    pthread_mutex_lock(&m->mu);
    s = &m->sessions[m->next_slot];
    m->next_slot = (m->next_slot + 1) % MOCK_MAX_SESSIONS;
    session_clear(s);
    s->code = new_code();
    s->scopes = *scopes;
    *scopes = (struct hs_strv){ 0 };
    s->nonce = hs_strdup(nonce);
    s->challenge = challenge && *challenge ? hs_strdup(challenge) : NULL;
    s->method = method && *method ? hs_strdup(method) : (s->challenge ? hs_strdup("plain") : NULL);
    s->user = next_user(m);
    code = hs_strdup(s->code);
    pthread_mutex_unlock(&m->mu);
    return code;
}

static enum MHD_Result serve_authorize(struct mockoidc *m, struct MHD_Connection *conn)
{
    static const char *const needed[] = { "scope", "state", "client_id", "response_type",
                                          "redirect_uri", NULL };
    const char *method = arg(conn, "code_challenge_method");
    char *code;
    struct hs_strv scopes = { 0 };
    struct hs_buf to;
    struct MHD_Response *r;
    enum MHD_Result ret;

    for (size_t i = 0; needed[i]; i++)
        if (!arg(conn, needed[i]) || !*arg(conn, needed[i]))
            return reply_error(conn, 400, "invalid_request", "a required parameter is missing");
    if (!scopes_ok(arg(conn, "scope"), &scopes)) {
        hs_strv_free(&scopes);
        return reply_error(conn, 400, "invalid_scope", "unknown scope, or no openid");
    }
    if (strcmp(arg(conn, "client_id"), m->client_id) != 0 ||
        strcmp(arg(conn, "response_type"), "code") != 0 ||
        (method && *method && strcmp(method, "S256") != 0 && strcmp(method, "plain") != 0)) {
        hs_strv_free(&scopes);
        return reply_error(conn, 400, "invalid_request",
                           "unknown client, response type or code challenge method");
    }
    code = session_add(m, &scopes, arg(conn, "nonce"), arg(conn, "code_challenge"), method);
    hs_buf_init(&to, MOCK_MAX_BODY);
    hs_buf_puts(&to, arg(conn, "redirect_uri"));
    auth_query_add(&to, "code", code);
    auth_query_add(&to, "state", arg(conn, "state"));
    r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Location", to.data);
    ret = MHD_queue_response(conn, 302, r);
    MHD_destroy_response(r);
    hs_buf_free(&to);
    free(code);
    return ret;
}

/* ---- the token endpoint ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* application/x-www-form-urlencoded into a JSON object of strings; -EINVAL on a bad escape. */
static int form_parse(const char *body, json_t **out)
{
    json_t *form = json_object();
    struct hs_strv pairs = { 0 };

    hs_strv_split(&pairs, body, "&");
    for (size_t i = 0; i < pairs.n; i++) {
        char *p = pairs.v[i], *w = p, *key = p, *value = NULL;
        for (char *r = p; *r; r++) {
            if (*r == '=' && !value) {
                *w++ = '\0';
                value = w;
            } else if (*r == '+') {
                *w++ = ' ';
            } else if (*r == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
                *w++ = (char)(hexval(r[1]) << 4 | hexval(r[2]));
                r += 2;
            } else if (*r == '%') {
                hs_strv_free(&pairs);
                json_decref(form);
                return -EINVAL;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        if (hs_utf8_valid(key, strlen(key)) && value && hs_utf8_valid(value, strlen(value)))
            json_object_set_new(form, key, json_string(value));
    }
    hs_strv_free(&pairs);
    *out = form;
    return 0;
}

static bool pkce_ok(const struct mock_session *s, const char *verifier)
{
    uint8_t hash[crypto_hash_sha256_BYTES];
    char *expect;
    bool ok;

    if (!s->challenge)
        return true;
    if (!verifier)
        return false;
    if (strcmp(s->method, "plain") == 0)
        return strcmp(verifier, s->challenge) == 0;
    crypto_hash_sha256(hash, (const uint8_t *)verifier, strlen(verifier));
    expect = auth_b64url(hash, sizeof(hash));
    ok = strcmp(expect, s->challenge) == 0;
    free(expect);
    return ok;
}

/* Claims every token of a session carries. */
static json_t *base_claims(struct mockoidc *m, const struct mock_session *s, int64_t ttl_us)
{
    json_int_t now = (json_int_t)(hs_now_us() / HS_USEC_PER_SEC);

    return json_pack("{s:[s], s:I, s:s, s:I, s:s, s:I, s:s}", "aud", m->client_id, "exp",
                     now + (json_int_t)(ttl_us / HS_USEC_PER_SEC), "jti", s->code, "iat", now,
                     "iss", m->issuer, "nbf", now, "sub", hs_json_str(s->user, "Subject") ?: "");
}

static char *sign(struct mockoidc *m, json_t *claims)
{
    char *tok = NULL;

    if (auth_jwt_sign_rs256(m->key, m->kid, claims, &tok) < 0)
        tok = NULL;
    json_decref(claims);
    return tok;
}

static json_t *token_response(struct mockoidc *m, const struct mock_session *s)
{
    json_t *idc = base_claims(m, s, m->access_ttl_us);
    char *access = sign(m, base_claims(m, s, m->access_ttl_us));
    char *refresh = sign(m, base_claims(m, s, MOCK_REFRESH_TTL_US)), *id;
    json_t *out;

    if (s->nonce && *s->nonce)
        json_object_set_new(idc, "nonce", json_string(s->nonce));
    add_user_claims(idc, s, true);
    id = sign(m, idc);
    out = json_pack("{s:s?, s:s?, s:s?, s:s, s:I}", "access_token", access, "refresh_token",
                    refresh, "id_token", id, "token_type", "bearer", "expires_in",
                    (json_int_t)(m->access_ttl_us / HS_USEC_PER_SEC));
    free(access);
    free(refresh);
    free(id);
    return out;
}

static enum MHD_Result serve_token(struct mockoidc *m, struct MHD_Connection *conn,
                                   struct mock_request *rq)
{
    json_t *form, *out = NULL;
    struct mock_session *s;
    const char *why = NULL;

    if (rq->too_big || form_parse(rq->body.data ? rq->body.data : "", &form) < 0)
        return reply_error(conn, 400, "invalid_request", "the form cannot be read");
    if (!hs_streq(hs_json_str(form, "client_id"), m->client_id) ||
        !hs_streq(hs_json_str(form, "client_secret"), m->client_secret))
        why = "invalid_client";
    else if (!hs_streq(hs_json_str(form, "grant_type"), "authorization_code"))
        why = "unsupported_grant_type";
    pthread_mutex_lock(&m->mu);
    s = why ? NULL : session_find(m, hs_json_str(form, "code"));
    if (!why && (!s || s->granted || !pkce_ok(s, hs_json_str(form, "code_verifier"))))
        why = "invalid_grant";
    if (!why) {
        s->granted = true;
        out = token_response(m, s);
    }
    pthread_mutex_unlock(&m->mu);
    json_decref(form);
    if (why)
        return reply_error(conn, strcmp(why, "unsupported_grant_type") == 0 ? 400 : 401, why,
                           "the client, code or code verifier is not accepted");
    return reply_json(conn, 200, out);
}

/* The bearer must be one of its own access tokens, still valid. */
static enum MHD_Result serve_userinfo(struct mockoidc *m, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    json_t *jwks = json_pack("{s:[o]}", "keys", auth_jwk_rsa_public(m->key, m->kid));
    json_t *claims = NULL, *info = NULL;
    struct mock_session *s;

    if (h && hs_has_prefix(h, "Bearer ") &&
        auth_jwt_verify(h + 7, jwks, &claims, NULL, 0) == 0 &&
        json_integer_value(json_object_get(claims, "exp")) > hs_now_us() / HS_USEC_PER_SEC) {
        pthread_mutex_lock(&m->mu);
        if ((s = session_find(m, hs_json_str(claims, "jti")))) {
            info = json_object();
            add_user_claims(info, s, false);
        }
        pthread_mutex_unlock(&m->mu);
    }
    json_decref(claims);
    json_decref(jwks);
    if (!info)
        return reply_error(conn, 401, "invalid_request", "missing or invalid access token");
    return reply_json(conn, 200, info);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls)
{
    struct mockoidc *m = cls;
    struct mock_request *rq = *req_cls;

    (void)version;
    if (!rq) {
        rq = hs_xcalloc(1, sizeof(*rq));
        hs_buf_init(&rq->body, MOCK_MAX_BODY);
        *req_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) {
        if (hs_buf_append(&rq->body, upload, *upload_size) < 0)
            rq->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    log_info("mockoidc: %s %s", method, url);
    if (strcmp(url, "/oidc/.well-known/openid-configuration") == 0)
        return serve_discovery(m, conn);
    if (strcmp(url, "/oidc/.well-known/jwks.json") == 0)
        return serve_jwks(m, conn);
    if (strcmp(url, "/oidc/authorize") == 0)
        return serve_authorize(m, conn);
    if (strcmp(url, "/oidc/token") == 0 && strcmp(method, "POST") == 0)
        return serve_token(m, conn, rq);
    if (strcmp(url, "/oidc/userinfo") == 0)
        return serve_userinfo(m, conn);
    return reply(conn, 404, "text/plain", "404 page not found\n");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct mock_request *rq = *req_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (rq) {
        hs_buf_free(&rq->body);
        free(rq);
    }
}

/* ---- start and stop ---- */

static int env_config(struct mockoidc *m, char *why, size_t whysize)
{
    static const char *const required[] = { "MOCKOIDC_CLIENT_ID", "MOCKOIDC_CLIENT_SECRET",
                                            "MOCKOIDC_ADDR", "MOCKOIDC_PORT", "MOCKOIDC_USERS",
                                            NULL };
    const char *ttl = getenv("MOCKOIDC_ACCESS_TTL"), *users = getenv("MOCKOIDC_USERS");
    char err[160];

    for (size_t i = 0; required[i]; i++)
        if (!getenv(required[i]) || !*getenv(required[i]))
            return snprintf(why, whysize, "%s is not set", required[i]), -EINVAL;
    m->access_ttl_us = MOCK_DEFAULT_TTL_US;
    if (ttl && *ttl && (hs_parse_duration(ttl, &m->access_ttl_us) < 0 || !m->access_ttl_us))
        return snprintf(why, whysize, "MOCKOIDC_ACCESS_TTL: %s is not a duration", ttl), -EINVAL;
    m->users = hs_json_load(users, strlen(users), HS_JSON_MAX_BYTES, err, sizeof(err));
    if (!json_is_array(m->users) || json_array_size(m->users) > MOCK_MAX_USERS)
        return snprintf(why, whysize, "MOCKOIDC_USERS: not a JSON list of at most %d users%s%s",
                        MOCK_MAX_USERS, m->users ? "" : ": ", m->users ? "" : err), -EINVAL;
    m->client_id = hs_strdup(getenv("MOCKOIDC_CLIENT_ID"));
    m->client_secret = hs_strdup(getenv("MOCKOIDC_CLIENT_SECRET"));
    return 0;
}

static struct MHD_Daemon *listen_on(struct mockoidc *m, const char *addr, const char *port,
                                    char *why, size_t whysize)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    struct MHD_Daemon *d = NULL;
    int rc = getaddrinfo(addr, port, &hints, &ai);

    if (rc != 0) {
        snprintf(why, whysize, "MOCKOIDC_ADDR/PORT %s:%s: %s", addr, port, gai_strerror(rc));
        return NULL;
    }
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                             (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                         0, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!d)
        snprintf(why, whysize, "cannot listen on %s:%s", addr, port);
    freeaddrinfo(ai);
    return d;
}

int mockoidc_start(struct mockoidc **out, char *why, size_t whysize)
{
    struct mockoidc *m = hs_xcalloc(1, sizeof(*m));
    const char *addr = getenv("MOCKOIDC_ADDR"), *port = getenv("MOCKOIDC_PORT");

    pthread_mutex_init(&m->mu, NULL);
    m->default_user = default_user();
    if (env_config(m, why, whysize) < 0)
        goto fail;
    m->issuer = hs_aprintf(strchr(addr, ':') ? "http://[%s]:%s/oidc" : "http://%s:%s/oidc",
                           addr, port);
    if (!(m->key = EVP_RSA_gen(2048)) || !(m->kid = auth_jwk_kid(m->key))) {
        snprintf(why, whysize, "cannot make an RSA key");
        goto fail;
    }
    if (!(m->http = listen_on(m, addr, port, why, whysize)))
        goto fail;
    *out = m;
    return 0;
fail:
    mockoidc_stop(m);
    return -EINVAL;
}

void mockoidc_stop(struct mockoidc *m)
{
    if (!m)
        return;
    if (m->http)
        MHD_stop_daemon(m->http);
    for (size_t i = 0; i < MOCK_MAX_SESSIONS; i++)
        session_clear(&m->sessions[i]);
    EVP_PKEY_free(m->key);
    free(m->kid);
    free(m->issuer);
    free(m->client_id);
    free(m->client_secret);
    json_decref(m->users);
    json_decref(m->default_user);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

const char *mockoidc_issuer(const struct mockoidc *m)
{
    return m->issuer;
}

int mockoidc_main(void)
{
    struct mockoidc *m;
    sigset_t set;
    char why[256];
    int sig;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before the HTTP thread starts */
    if (sodium_init() < 0 || mockoidc_start(&m, why, sizeof(why)) < 0) {
        fprintf(stderr, "Error: mockoidc: %s\n", why);
        return 1;
    }
    log_info("mockoidc: issuer %s, %zu users, tokens valid %llds", m->issuer,
             json_array_size(m->users), (long long)(m->access_ttl_us / HS_USEC_PER_SEC));
    sigwait(&set, &sig);
    mockoidc_stop(m);
    return 0;
}
