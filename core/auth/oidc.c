/* OIDC login for nodes (the authorization code flow, OpenID Connect Core 1.0 §3.1): the
 * client's /register/<id> redirects to the provider with a fresh state, nonce and (with
 * oidc.pkce) code challenge bound to that pending registration; the callback exchanges the
 * code, verifies the ID token, applies oidc.allowed_*, finds or creates the user by issuer and
 * subject, and completes the registration, which answers the waiting client. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/oidc_internal.h"

static void random_text(size_t bytes, char out[OIDC_TEXT_MAX])
{
    uint8_t rnd[OIDC_VERIFIER_BYTES];
    char *s;

    randombytes_buf(rnd, bytes);
    s = auth_b64url(rnd, bytes);
    hs_strlcpy(out, s, OIDC_TEXT_MAX);
    free(s);
}

static int read_secret(const struct hs_config *cfg, char **out, char *why, size_t whysize)
{
    char *text;
    size_t len;
    int rc;

    if (!*cfg->oidc_client_secret_path) {
        *out = hs_strdup(cfg->oidc_client_secret);
        return 0;
    }
    if ((rc = hs_read_file(cfg->oidc_client_secret_path, 4096, &text, &len)) < 0) {
        snprintf(why, whysize, "oidc.client_secret_path %s: %s", cfg->oidc_client_secret_path,
                 hs_strerror(rc));
        return rc;
    }
    while (len && isspace((unsigned char)text[len - 1]))
        text[--len] = '\0'; /* a trailing newline is not part of the secret */
    *out = text;
    return 0;
}

int auth_oidc_new(const struct hs_config *cfg, struct auth *a, struct auth_oidc **out, char *why,
                  size_t whysize)
{
    struct auth_oidc *o = hs_xcalloc(1, sizeof(*o));
    const char *base = cfg->server_url;
    int rc;

    o->cfg = cfg;
    o->auth = a;
    pthread_mutex_init(&o->mu, NULL);
    o->redirect_uri = hs_aprintf("%.*s/oidc/callback",
                                 (int)(strlen(base) - (*base && base[strlen(base) - 1] == '/')),
                                 base);
    if ((rc = read_secret(cfg, &o->client_secret, why, whysize)) < 0)
        goto fail;
    if ((rc = oidc__discover(o, why, whysize)) < 0) {
        if (cfg->oidc_only_start_if_available)
            goto fail;
        log_warnx("oidc: the provider %s cannot be reached (%s); logins will try again",
                  cfg->oidc_issuer, why);
    } else {
        log_info("oidc: logins go through %s", cfg->oidc_issuer);
    }
    *out = o;
    return 0;
fail:
    auth_oidc_free(o);
    return rc;
}

void auth_oidc_free(struct auth_oidc *o)
{
    if (!o)
        return;
    json_decref(o->discovery);
    json_decref(o->jwks);
    if (o->client_secret) {
        sodium_memzero(o->client_secret, strlen(o->client_secret));
        free(o->client_secret);
    }
    free(o->redirect_uri);
    sodium_memzero(o->flows, sizeof(o->flows));
    pthread_mutex_destroy(&o->mu);
    free(o);
}

/* ---- flows: state → (nonce, verifier, registration) ---- */

/* A free or expired slot; the one closest to expiring when all are taken. */
static struct oidc_flow *flow_slot(struct auth_oidc *o, int64_t now)
{
    struct oidc_flow *best = &o->flows[0];

    for (size_t i = 0; i < OIDC_MAX_FLOWS; i++) {
        struct oidc_flow *f = &o->flows[i];
        if (!f->state[0] || f->expires_at <= now)
            return f;
        if (f->expires_at < best->expires_at)
            best = f;
    }
    return best;
}

/* Takes the flow of state out of the table (a second callback with it finds nothing). */
static int flow_take(struct auth_oidc *o, const char *state, struct oidc_flow *out)
{
    int64_t now = hs_now_us();
    size_t n = strlen(state);
    int rc = -ENOENT;

    if (n == 0 || n >= OIDC_TEXT_MAX)
        return -ENOENT;
    pthread_mutex_lock(&o->mu);
    for (size_t i = 0; i < OIDC_MAX_FLOWS; i++) {
        struct oidc_flow *f = &o->flows[i];
        if (strlen(f->state) != n || sodium_memcmp(f->state, state, n) != 0)
            continue;
        if (f->expires_at > now) {
            *out = *f;
            rc = 0;
        }
        sodium_memzero(f, sizeof(*f));
        break;
    }
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void auth_query_add(struct hs_buf *u, const char *key, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";

    hs_buf_appendf(u, "%c%s=", u->data && strchr(u->data, '?') ? '&' : '?', key);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (isalnum(*p) || strchr("-._~", *p))
            hs_buf_append(u, p, 1);
        else
            hs_buf_appendf(u, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
    }
}

/* The provider's authorization URL for flow f. */
static char *authorize_url(struct auth_oidc *o, const json_t *d, const struct oidc_flow *f)
{
    const struct hs_config *cfg = o->cfg;
    struct hs_buf u, scope;

    hs_buf_init(&u, 65536);
    hs_buf_init(&scope, 4096);
    for (size_t i = 0; i < cfg->oidc_scope.n; i++)
        hs_buf_appendf(&scope, "%s%s", i ? " " : "", cfg->oidc_scope.v[i]);
    hs_buf_puts(&u, hs_json_str(d, "authorization_endpoint"));
    auth_query_add(&u, "client_id", cfg->oidc_client_id);
    auth_query_add(&u, "redirect_uri", o->redirect_uri);
    auth_query_add(&u, "response_type", "code");
    auth_query_add(&u, "scope", scope.data ? scope.data : "openid");
    auth_query_add(&u, "state", f->state);
    auth_query_add(&u, "nonce", f->nonce);
    if (f->verifier[0]) {
        bool s256 = strcmp(cfg->oidc_pkce_method, "S256") == 0;
        uint8_t hash[crypto_hash_sha256_BYTES];
        char *challenge;
        crypto_hash_sha256(hash, (const uint8_t *)f->verifier, strlen(f->verifier));
        challenge = s256 ? auth_b64url(hash, sizeof(hash)) : hs_strdup(f->verifier);
        auth_query_add(&u, "code_challenge", challenge);
        auth_query_add(&u, "code_challenge_method", s256 ? "S256" : "plain");
        free(challenge);
    }
    for (size_t i = 0; i < cfg->oidc_extra_params.n; i++) {
        char *kv = hs_strdup(cfg->oidc_extra_params.v[i]), *eq = strchr(kv, '=');
        if (eq) {
            *eq = '\0';
            auth_query_add(&u, kv, eq + 1);
        }
        free(kv);
    }
    hs_buf_free(&scope);
    return hs_buf_steal(&u);
}

int auth_oidc_begin(struct auth_oidc *o, const char *reg_id, char **location,
                    char state[AUTH_OIDC_STATE_MAX], char *why, size_t whysize)
{
    struct oidc_flow f = { 0 };
    json_t *d;
    int rc;

    if (!auth__registration_pending(o->auth, reg_id)) {
        snprintf(why, whysize, "this login is unknown, finished or expired");
        return -ENOENT;
    }
    if ((rc = oidc__discover(o, why, whysize)) < 0)
        return rc;
    random_text(OIDC_RANDOM_BYTES, f.state);
    random_text(OIDC_RANDOM_BYTES, f.nonce);
    if (o->cfg->oidc_pkce_enabled)
        random_text(OIDC_VERIFIER_BYTES, f.verifier);
    hs_strlcpy(f.reg_id, reg_id, sizeof(f.reg_id));
    f.expires_at = hs_now_us() + OIDC_FLOW_TTL_US;
    d = oidc__discovery(o);
    *location = authorize_url(o, d, &f);
    json_decref(d);
    pthread_mutex_lock(&o->mu);
    *flow_slot(o, hs_now_us()) = f;
    pthread_mutex_unlock(&o->mu);
    memcpy(state, f.state, OIDC_TEXT_MAX);
    return 0;
}

/* ---- the callback ---- */

/* The ID token of a token answer, verified; a key the set does not hold yet refetches it. */
static int id_token_claims(struct auth_oidc *o, const json_t *tokens, json_t **claims,
                           char *why, size_t whysize)
{
    const char *tok = hs_json_str(tokens, "id_token");
    char refetch[256];
    json_t *keys;
    int rc;

    if (!tok) {
        snprintf(why, whysize, "the provider's answer has no id_token");
        return -EBADMSG;
    }
    keys = oidc__jwks(o);
    rc = auth_jwt_verify(tok, keys, claims, why, whysize);
    json_decref(keys);
    /* Not found: the provider may have rolled its keys. Why the refetch failed matters less
     * than the missing key, which why still names. */
    if (rc == -ENOKEY && oidc__jwks_refresh(o, refetch, sizeof(refetch)) == 0) {
        keys = oidc__jwks(o);
        rc = auth_jwt_verify(tok, keys, claims, why, whysize);
        json_decref(keys);
    }
    return rc;
}

/* Claims the ID token lacks, taken from userinfo when it speaks of the same subject. */
static void merge_userinfo(struct auth_oidc *o, const json_t *tokens, json_t *claims)
{
    static const char *const names[] = { "email", "email_verified", "preferred_username",
                                         "name", "picture", "groups", NULL };
    json_t *info = oidc__userinfo(o, hs_json_str(tokens, "access_token"));

    if (info && hs_streq(hs_json_str(info, "sub"), hs_json_str(claims, "sub")))
        for (size_t i = 0; names[i]; i++)
            if (!json_object_get(claims, names[i]) && json_object_get(info, names[i]))
                json_object_set(claims, names[i], json_object_get(info, names[i]));
    json_decref(info);
}

static int finish(struct auth_oidc *o, const struct oidc_flow *f, const char *code,
                  struct auth_oidc_login *out, char *why, size_t whysize)
{
    json_t *tokens = NULL, *claims = NULL;
    int rc;

    if ((rc = oidc__discover(o, why, whysize)) < 0 ||
        (rc = oidc__exchange(o, code, f->verifier, &tokens, why, whysize)) < 0)
        return rc;
    if ((rc = id_token_claims(o, tokens, &claims, why, whysize)) == 0 &&
        (rc = auth_oidc_check_claims(o->cfg, claims, f->nonce, hs_now_us() / HS_USEC_PER_SEC,
                                     why, whysize)) == 0) {
        merge_userinfo(o, tokens, claims);
        rc = auth__oidc_login(o, claims, f->reg_id, out, why, whysize);
    }
    json_decref(claims);
    json_decref(tokens);
    return rc;
}

int auth_oidc_callback(struct auth_oidc *o, const char *state, const char *code,
                       const char *cookie_state, struct auth_oidc_login *out, char *why,
                       size_t whysize)
{
    struct oidc_flow f;
    int rc;

    /* The state must come back to the browser that was sent away with it: a link with
     * someone else's state, opened in another browser, is refused. */
    if (!state || !code || !cookie_state || strlen(state) != strlen(cookie_state) ||
        sodium_memcmp(state, cookie_state, strlen(state)) != 0) {
        snprintf(why, whysize, "this answer does not belong to a login started in this browser");
        return -EINVAL;
    }
    if (flow_take(o, state, &f) < 0) {
        snprintf(why, whysize, "this login is unknown, used already or expired");
        return -EINVAL;
    }
    rc = finish(o, &f, code, out, why, whysize);
    sodium_memzero(&f, sizeof(f));
    return rc;
}
