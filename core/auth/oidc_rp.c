/* OIDC: a relying party of one provider (the authorization code flow, OpenID Connect Core 1.0
 * §3.1) as far as it needs no store — the request's secrets, the authorization URL, the
 * callback's code exchanged for a verified ID token (§3.1.3.7) — shared by the node logins
 * (oidc.c) and headscale-webadmin's sign-in. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/oidc_internal.h"

#define RANDOM_BYTES 24   /* state, nonce */
#define VERIFIER_BYTES 32 /* PKCE verifier: 43 characters */

static void random_text(size_t bytes, char out[AUTH_OIDC_STATE_MAX])
{
    uint8_t rnd[VERIFIER_BYTES];
    char *s;

    randombytes_buf(rnd, bytes);
    s = auth_b64url(rnd, bytes);
    hs_strlcpy(out, s, AUTH_OIDC_STATE_MAX);
    free(s);
}

void auth_oidc_request_new(struct auth_oidc_request *r, bool pkce)
{
    *r = (struct auth_oidc_request){ 0 };
    random_text(RANDOM_BYTES, r->state);
    random_text(RANDOM_BYTES, r->nonce);
    if (pkce)
        random_text(VERIFIER_BYTES, r->verifier);
}

struct auth_oidc_pending *auth_oidc_pending_slot(struct auth_oidc_pending *t, size_t n,
                                                 int64_t now)
{
    struct auth_oidc_pending *best = &t[0];

    for (size_t i = 0; i < n; i++) {
        if (!t[i].rq.state[0] || t[i].expires_at <= now)
            return &t[i];
        if (t[i].expires_at < best->expires_at)
            best = &t[i];
    }
    return best;
}

bool auth_oidc_pending_take(struct auth_oidc_pending *t, size_t n, const char *state,
                            int64_t now, struct auth_oidc_pending *out)
{
    size_t len = strlen(state);
    bool live = false;

    for (size_t i = 0; len && len < AUTH_OIDC_STATE_MAX && i < n; i++) {
        if (strlen(t[i].rq.state) != len || sodium_memcmp(t[i].rq.state, state, len) != 0)
            continue;
        live = t[i].expires_at > now;
        if (live)
            *out = t[i];
        sodium_memzero(&t[i], sizeof(t[i]));
        break;
    }
    return live;
}

int auth_secret_file_read(const char *path, char **out, char *why, size_t whysize)
{
    char *text;
    size_t len;
    int rc;

    if ((rc = hs_read_file(path, 4096, &text, &len)) < 0) {
        snprintf(why, whysize, "%s: %s", path, hs_strerror(rc));
        return rc;
    }
    while (len && isspace((unsigned char)text[len - 1]))
        text[--len] = '\0'; /* a trailing newline is not part of the secret */
    *out = text;
    return 0;
}

struct auth_oidc_rp *auth_oidc_rp_new(const char *issuer, const char *client_id,
                                      const char *client_secret, const char *redirect_uri)
{
    struct auth_oidc_rp *rp = hs_xcalloc(1, sizeof(*rp));

    rp->issuer = hs_strdup(issuer);
    rp->client_id = hs_strdup(client_id);
    rp->client_secret = hs_strdup(client_secret);
    rp->redirect_uri = hs_strdup(redirect_uri);
    pthread_mutex_init(&rp->mu, NULL);
    return rp;
}

void auth_oidc_rp_free(struct auth_oidc_rp *rp)
{
    if (!rp)
        return;
    json_decref(rp->discovery);
    json_decref(rp->jwks);
    if (rp->client_secret)
        sodium_memzero(rp->client_secret, strlen(rp->client_secret));
    free(rp->client_secret);
    free(rp->issuer);
    free(rp->client_id);
    free(rp->redirect_uri);
    pthread_mutex_destroy(&rp->mu);
    free(rp);
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

char *auth_oidc_rp_authorize_url(struct auth_oidc_rp *rp, const struct auth_oidc_request *r,
                                 const struct hs_strv *scope, bool plain,
                                 const struct hs_strv *extra)
{
    json_t *d = oidc__discovery(rp);
    struct hs_buf u, words;

    hs_buf_init(&u, 65536);
    hs_buf_init(&words, 4096);
    for (size_t i = 0; i < scope->n; i++)
        hs_buf_appendf(&words, "%s%s", i ? " " : "", scope->v[i]);
    hs_buf_puts(&u, hs_json_str(d, "authorization_endpoint"));
    auth_query_add(&u, "client_id", rp->client_id);
    auth_query_add(&u, "redirect_uri", rp->redirect_uri);
    auth_query_add(&u, "response_type", "code");
    auth_query_add(&u, "scope", words.data ? words.data : "openid");
    auth_query_add(&u, "state", r->state);
    auth_query_add(&u, "nonce", r->nonce);
    if (r->verifier[0]) {
        uint8_t hash[crypto_hash_sha256_BYTES];
        char *challenge;
        crypto_hash_sha256(hash, (const uint8_t *)r->verifier, strlen(r->verifier));
        challenge = plain ? hs_strdup(r->verifier) : auth_b64url(hash, sizeof(hash));
        auth_query_add(&u, "code_challenge", challenge);
        auth_query_add(&u, "code_challenge_method", plain ? "plain" : "S256");
        free(challenge);
    }
    for (size_t i = 0; extra && i < extra->n; i++) {
        char *kv = hs_strdup(extra->v[i]), *eq = strchr(kv, '=');
        if (eq) {
            *eq = '\0';
            auth_query_add(&u, kv, eq + 1);
        }
        free(kv);
    }
    hs_buf_free(&words);
    json_decref(d);
    return hs_buf_steal(&u);
}

/* ---- the callback ---- */

/* The ID token of a token answer, verified; a key the set does not hold yet refetches it. */
static int id_token_claims(struct auth_oidc_rp *rp, const json_t *tokens, json_t **claims,
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
    keys = oidc__jwks(rp);
    rc = auth_jwt_verify(tok, keys, claims, why, whysize);
    json_decref(keys);
    /* Not found: the provider may have rolled its keys. Why the refetch failed matters less
     * than the missing key, which why still names. */
    if (rc == -ENOKEY && oidc__jwks_refresh(rp, refetch, sizeof(refetch)) == 0) {
        keys = oidc__jwks(rp);
        rc = auth_jwt_verify(tok, keys, claims, why, whysize);
        json_decref(keys);
    }
    return rc;
}

/* Claims the ID token lacks, taken from userinfo when it speaks of the same subject. */
static void merge_userinfo(struct auth_oidc_rp *rp, const json_t *tokens, json_t *claims)
{
    static const char *const names[] = { "email", "email_verified", "preferred_username",
                                         "name", "picture", "groups", NULL };
    json_t *info = oidc__userinfo(rp, hs_json_str(tokens, "access_token"));

    if (info && hs_streq(hs_json_str(info, "sub"), hs_json_str(claims, "sub")))
        for (size_t i = 0; names[i]; i++)
            if (!json_object_get(claims, names[i]) && json_object_get(info, names[i]))
                json_object_set(claims, names[i], json_object_get(info, names[i]));
    json_decref(info);
}

int auth_oidc_rp_finish(struct auth_oidc_rp *rp, const struct auth_oidc_request *r,
                        const char *code, json_t **claims, char *why, size_t whysize)
{
    json_t *tokens = NULL;
    int rc;

    *claims = NULL;
    if ((rc = auth_oidc_rp_discover(rp, why, whysize)) < 0 ||
        (rc = oidc__exchange(rp, code, r->verifier, &tokens, why, whysize)) < 0)
        return rc;
    if ((rc = id_token_claims(rp, tokens, claims, why, whysize)) == 0 &&
        (rc = auth_oidc_check_claims(rp->issuer, rp->client_id, *claims, r->nonce,
                                     hs_now_us() / HS_USEC_PER_SEC, why, whysize)) == 0)
        merge_userinfo(rp, tokens, *claims);
    if (rc < 0) {
        json_decref(*claims);
        *claims = NULL;
    }
    json_decref(tokens);
    return rc;
}

/* ---- what an ID token must say ---- */

static bool aud_ok(const json_t *claims, const char *client_id)
{
    const json_t *aud = json_object_get(claims, "aud"), *a;
    const char *azp = hs_json_str(claims, "azp");
    bool found = false;
    size_t i;

    if (json_is_string(aud))
        return hs_streq(json_string_value(aud), client_id);
    json_array_foreach(aud, i, a)
        found |= hs_streq(json_string_value(a), client_id);
    /* Several audiences: the party it was issued to must be us (§3.1.3.7 items 4-5). */
    return found && (json_array_size(aud) == 1 || !azp || strcmp(azp, client_id) == 0);
}

/* A NumericDate claim; *present false when absent. -EINVAL when it is not a number. */
static int numeric_date(const json_t *claims, const char *name, int64_t *out, bool *present)
{
    const json_t *v = json_object_get(claims, name);

    *present = v != NULL;
    if (!v)
        return 0;
    if (!json_is_number(v))
        return -EINVAL;
    double d = json_number_value(v);
    /* Seconds since 1970 within ±2^62: a date, and safe to convert (1e91 is not). */
    if (!(d >= -4.6e18 && d <= 4.6e18))
        return -EINVAL;
    *out = (int64_t)d;
    return 0;
}

int auth_oidc_check_claims(const char *issuer, const char *client_id, const json_t *claims,
                           const char *nonce, int64_t now_s, char *why, size_t whysize)
{
    const char *got_nonce = hs_json_str(claims, "nonce"), *sub = hs_json_str(claims, "sub");
    int64_t exp = 0, nbf = 0;
    bool has_exp, has_nbf;

    if (!hs_streq(hs_json_str(claims, "iss"), issuer))
        return snprintf(why, whysize, "the token was issued by someone else"), -EBADMSG;
    if (!aud_ok(claims, client_id))
        return snprintf(why, whysize, "the token was issued for another client"), -EBADMSG;
    if (numeric_date(claims, "exp", &exp, &has_exp) < 0 ||
        numeric_date(claims, "nbf", &nbf, &has_nbf) < 0 || !has_exp)
        return snprintf(why, whysize, "the token's exp or nbf is missing or not a number"),
               -EBADMSG;
    if (exp + AUTH_OIDC_CLOCK_SKEW_S <= now_s)
        return snprintf(why, whysize, "the token has expired"), -EBADMSG;
    if (has_nbf && nbf - AUTH_OIDC_CLOCK_SKEW_S > now_s)
        return snprintf(why, whysize, "the token is not valid yet"), -EBADMSG;
    if (!got_nonce || !nonce || strlen(got_nonce) != strlen(nonce) ||
        sodium_memcmp(got_nonce, nonce, strlen(nonce)) != 0)
        return snprintf(why, whysize, "the token's nonce is not this login's"), -EBADMSG;
    if (!sub || !*sub || strlen(sub) > 255)
        return snprintf(why, whysize, "the token has no usable subject"), -EBADMSG;
    return 0;
}

bool auth_oidc_email_verified(const json_t *claims)
{
    const json_t *v = json_object_get(claims, "email_verified");

    return json_is_true(v) || hs_streq(json_string_value(v), "true");
}

/* headscale's "issuer/subject" (one slash between them). */
char *auth_oidc_identifier(const char *iss, const char *sub)
{
    size_t n = strlen(iss);

    while (*sub == '/')
        sub++;
    return hs_aprintf("%.*s/%s", (int)(n && iss[n - 1] == '/' ? n - 1 : n), iss, sub);
}
