/* Administrators' sign-in through an OpenID provider: the web admin is a relying party of its
 * own (the authorization code flow with state, nonce and PKCE S256), verifying ID tokens with
 * the server's code (auth/auth.h's relying party, linked in as hs_auth_rp).
 *
 * An administrator so signed in has no API key of their own, so the web admin makes one for
 * each session with its service key (--api-key-file): it expires when the session would at
 * the latest (--session-max), is expired at sign-out or, for a session that ended unused, at
 * the next request the web admin answers, and the API keys page lists it like any other,
 * where it can be expired to end that session. The session keeps it sealed as it keeps an
 * API key signed in with. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "auth/auth.h"
#include "webadmin/wa_internal.h"

#define DEFAULT_SCOPE "openid profile email"

struct wa_oidc {
    struct auth_oidc_rp *rp;
    struct hs_strv scope;
    char *name;
    char *service_key; /* the web admin's API key: it makes the sessions' keys */
    struct auth_oidc_pending flows[WA_OIDC_FLOWS]; /* between redirect and callback */
};

/* A secret file of its owner's only: its text in *out. */
static int read_private(const char *option, const char *path, char **out, char *err,
                        size_t errsize)
{
    struct stat st;
    char why[64];
    int rc;

    /* The path is not repeated: it may be a secret given where its file's name belongs. */
    if (stat(path, &st) < 0) {
        rc = -errno;
        snprintf(err, errsize, "%s: the file cannot be read (%s)", option, strerror(-rc));
        return rc;
    }
    if (st.st_mode & 077) {
        snprintf(err, errsize, "%s: the file may be read by others (mode %03o): make it 0600 "
                 "or 0400", option, (unsigned)(st.st_mode & 0777));
        return -EPERM;
    }
    if ((rc = auth_secret_file_read(path, out, why, sizeof(why))) < 0 || !**out) {
        snprintf(err, errsize, "%s: the file cannot be read or is empty", option);
        if (rc == 0)
            free(*out);
        return rc < 0 ? rc : -EINVAL;
    }
    return 0;
}

/* The issuer's host, for a button that names the provider. */
static char *issuer_host(const char *issuer)
{
    const char *h = strstr(issuer, "://");

    h = h ? h + 3 : issuer;
    return hs_strndup(h, strcspn(h, "/"));
}

struct wa_oidc *wa__oidc_new(const struct webadmin_config *cfg, char *err, size_t errsize)
{
    struct wa_oidc *o = hs_xcalloc(1, sizeof(*o));
    char *secret = NULL, *redirect;

    if (read_private("--oidc-client-secret-file", cfg->oidc_client_secret_file, &secret, err,
                     errsize) < 0 ||
        read_private("--api-key-file", cfg->api_key_file, &o->service_key, err, errsize) < 0) {
        if (secret)
            sodium_memzero(secret, strlen(secret));
        free(secret);
        wa__oidc_free(o);
        return NULL;
    }
    redirect = hs_aprintf("%s%s/oidc/callback", cfg->public_url, cfg->base_path);
    o->rp = auth_oidc_rp_new(cfg->oidc_issuer, cfg->oidc_client_id, secret, redirect);
    sodium_memzero(secret, strlen(secret));
    free(secret);
    free(redirect);
    hs_strv_split(&o->scope, cfg->oidc_scope ? cfg->oidc_scope : DEFAULT_SCOPE, " ");
    o->name = cfg->oidc_name ? hs_strdup(cfg->oidc_name) : issuer_host(cfg->oidc_issuer);
    return o;
}

void wa__oidc_free(struct wa_oidc *o)
{
    if (!o)
        return;
    auth_oidc_rp_free(o->rp);
    hs_strv_free(&o->scope);
    free(o->name);
    if (o->service_key)
        sodium_memzero(o->service_key, strlen(o->service_key));
    free(o->service_key);
    sodium_memzero(o->flows, sizeof(o->flows));
    free(o);
}

const char *wa__oidc_name(const struct wa_oidc *o)
{
    return o->name;
}

/* ---- who is an administrator ---- */

static bool has_nocase(const struct hs_strv *v, const char *s)
{
    for (size_t i = 0; s && i < v->n; i++)
        if (strcasecmp(v->v[i], s) == 0)
            return true;
    return false;
}

bool wa__oidc_is_admin(const struct webadmin_config *cfg, const json_t *claims)
{
    const char *iss = hs_json_str(claims, "iss"), *sub = hs_json_str(claims, "sub");
    const json_t *g;
    bool found = false;
    size_t i;

    if (auth_oidc_email_verified(claims) &&
        has_nocase(&cfg->admin_emails, hs_json_str(claims, "email")))
        return true;
    json_array_foreach(json_object_get(claims, "groups"), i, g)
        if (json_is_string(g) && hs_strv_contains(&cfg->admin_groups, json_string_value(g)))
            return true;
    if (iss && sub && cfg->admin_ids.n) {
        char *id = auth_oidc_identifier(iss, sub);
        found = hs_strv_contains(&cfg->admin_ids, id);
        free(id);
    }
    return found;
}

/* ---- the flow ---- */

void wa__oidc_start(struct wa_ctx *x)
{
    struct wa_oidc *o = x->wa->oidc;
    struct auth_oidc_pending *f;
    char why[512], *location;

    if (auth_oidc_rp_discover(o->rp, why, sizeof(why)) < 0) {
        log_warnx("webadmin: the provider cannot be reached: %s", why);
        return wa__signin_page(x, 502, "The sign-in provider cannot be reached now: try again "
                                       "later, or sign in with an API key.");
    }
    f = auth_oidc_pending_slot(o->flows, WA_OIDC_FLOWS, hs_monotonic_us());
    auth_oidc_request_new(&f->rq, true);
    f->expires_at = hs_monotonic_us() + WA_OIDC_FLOW_TTL_US;
    location = auth_oidc_rp_authorize_url(o->rp, &f->rq, &o->scope, false, NULL);
    /* Lax: the cookie must come back on the provider's redirect to the callback. */
    wa__set_cookie(x, WA_OIDC_COOKIE, f->rq.state, WA_OIDC_FLOW_TTL_US / HS_USEC_PER_SEC, true);
    x->rs->status = 303;
    hs_buf_appendf(&x->rs->headers, "Location: %s\r\n", location);
    free(location);
}

/* An API key made for this session, expiring when the session must end; NULL after the page
 * saying why was written. */
static char *mint_key(struct wa_ctx *x)
{
    char expiry[40], *key = NULL;
    json_t *answer = NULL;
    long status = 0;
    json_t *body;

    hs_format_rfc3339(hs_now_us() + x->wa->cfg.session_max_us, expiry, sizeof(expiry));
    body = json_pack("{s:s}", "expiration", expiry);
    if (wa__client_call(x->wa->client, x->wa->oidc->service_key, "POST", "/api/v1/apikey", body,
                        &status, &answer) < 0) {
        wa__signin_page(x, 502, "The headscale server did not answer.");
    } else if (status != 200 || !hs_json_str(answer, "apiKey") ||
               strlen(hs_json_str(answer, "apiKey")) > WA_MAX_API_KEY) {
        log_warnx("webadmin: the server refused to make a session's API key (HTTP %ld): is "
                  "the key of --api-key-file valid?", status);
        wa__signin_page(x, 502, "The server did not make an API key for this session: the "
                                "web admin's own API key may have expired. Tell the operator.");
    } else {
        key = hs_strdup(hs_json_str(answer, "apiKey"));
    }
    json_decref(body);
    if (answer && key)
        sodium_memzero((char *)hs_json_str(answer, "apiKey"), strlen(key));
    json_decref(answer);
    return key;
}

/* Who the claims are, in words: the e-mail address, else the subject. */
static const char *who(const json_t *claims)
{
    const char *email = hs_json_str(claims, "email");

    return email && *email ? email : hs_json_str(claims, "sub");
}

/* The callback's state checked against the browser's cookie and taken: false after the page
 * saying why was written. */
static bool take_state(struct wa_ctx *x, struct auth_oidc_pending *p)
{
    const char *state = wa__form_get(&x->query, "state");
    char cookie[AUTH_OIDC_STATE_MAX];

    if (!wa__cookie_get(x->rq->cookie, WA_OIDC_COOKIE, cookie, sizeof(cookie)) ||
        !wa__token_equal(cookie, state)) {
        wa__signin_page(x, 400, "This answer of the provider does not belong to a sign-in "
                                "started in this browser: sign in again.");
        return false;
    }
    wa__set_cookie(x, WA_OIDC_COOKIE, "", 0, true);
    if (!auth_oidc_pending_take(x->wa->oidc->flows, WA_OIDC_FLOWS, state, hs_monotonic_us(), p)) {
        wa__signin_page(x, 400, "This sign-in is unknown, used already or expired: sign in "
                                "again.");
        return false;
    }
    return true;
}

void wa__oidc_callback(struct wa_ctx *x)
{
    const char *code = wa__form_get(&x->query, "code");
    struct auth_oidc_pending p;
    json_t *claims = NULL;
    char why[512], *key;
    int rc;

    if (wa__form_get(&x->query, "error") || !code)
        return wa__signin_page(x, 401, "The provider did not sign you in.");
    if (!take_state(x, &p))
        return;
    rc = auth_oidc_rp_finish(x->wa->oidc->rp, &p.rq, code, &claims, why, sizeof(why));
    sodium_memzero(&p, sizeof(p));
    if (rc < 0) {
        log_warnx("webadmin: a sign-in through the provider failed: %s", why);
        return wa__signin_page(x, rc == -EBADMSG || rc == -EACCES ? 401 : 502,
                               "The provider's answer could not be verified: sign in again.");
    }
    if (!wa__oidc_is_admin(&x->wa->cfg, claims)) {
        log_info("webadmin: %s signed in at the provider but is no administrator", who(claims));
        wa__render(x, 403, "notadmin", "Not an administrator",
                   json_pack("{s:s, s:s}", "who", who(claims), "provider",
                             x->wa->oidc->name));
    } else if ((key = mint_key(x))) {
        wa__session_begin(x, key, true);
        sodium_memzero(key, strlen(key));
        free(key);
        log_info("webadmin: %s signed in through the provider", who(claims));
        /* The session cookie is SameSite=Strict: the browser sends it only once a page of
         * this site moves on, not on the provider's redirect chain. */
        wa__render(x, 200, "signedin", "Signed in", json_pack("{s:s}", "who", who(claims)));
    }
    json_decref(claims);
}

/* Expires the API key of prefix, calling the API with key; a failure is logged only (the
 * key expires by itself when the session would have). */
static void expire_prefix(struct webadmin *wa, const char *key, const char *prefix)
{
    json_t *body = json_pack("{s:s}", "prefix", prefix), *answer = NULL;
    long status = 0;

    if (wa__client_call(wa->client, key, "POST", "/api/v1/apikey/expire", body, &status,
                        &answer) < 0 || (status != 200 && status != 401))
        log_warnx("webadmin: the API key %s of a session that ended could not be expired "
                  "(HTTP %ld); it expires by itself at the session's end", prefix, status);
    json_decref(body);
    json_decref(answer);
}

void wa__oidc_expire_key(struct wa_ctx *x)
{
    expire_prefix(x->wa, x->s.api_key, x->s.minted);
}

void wa__oidc_sweep(struct webadmin *wa)
{
    char prefixes[8][WA_KEY_PREFIX_LEN + 1];
    size_t n = wa__sessions_sweep(wa->sessions, prefixes, HS_ARRAY_LEN(prefixes));

    for (size_t i = 0; i < n; i++)
        expire_prefix(wa, wa->oidc->service_key, prefixes[i]);
}
