/* OIDC login for nodes (the authorization code flow, OpenID Connect Core 1.0 §3.1): the
 * client's /register/<id> redirects to the provider with a fresh state, nonce and (with
 * oidc.pkce) code challenge bound to that pending registration; the callback exchanges the
 * code, verifies the ID token, applies oidc.allowed_*, finds or creates the user by issuer and
 * subject, and completes the registration, which answers the waiting client.
 *
 * The login between the two is kept in the database with its registration (a balancer may
 * send the callback to another replica): a row found by a keyed hash of the state, taken by
 * a conditional delete, so each state is used once across replicas. The nonce and the PKCE
 * verifier are not stored: each is a keyed hash of the state under the database's server
 * secret, which every replica holds, so the replica of the callback derives them again. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/oidc_internal.h"

int auth_oidc_new(const struct hs_config *cfg, struct auth *a, struct auth_oidc **out, char *why,
                  size_t whysize)
{
    struct auth_oidc *o = hs_xcalloc(1, sizeof(*o));
    const char *base = cfg->server_url;
    char *secret = NULL, *redirect, inner[300];
    int rc = 0;

    o->cfg = cfg;
    o->auth = a;
    if (!*cfg->oidc_client_secret_path) {
        secret = hs_strdup(cfg->oidc_client_secret);
    } else if ((rc = auth_secret_file_read(cfg->oidc_client_secret_path, &secret, inner,
                                           sizeof(inner))) < 0) {
        snprintf(why, whysize, "oidc.client_secret_path %s", inner);
        auth_oidc_free(o);
        return rc;
    }
    redirect = hs_aprintf("%.*s/oidc/callback",
                          (int)(strlen(base) - (*base && base[strlen(base) - 1] == '/')), base);
    o->rp = auth_oidc_rp_new(cfg->oidc_issuer, cfg->oidc_client_id, secret, redirect);
    if (secret)
        sodium_memzero(secret, strlen(secret));
    free(secret);
    free(redirect);
    if ((rc = auth_oidc_rp_discover(o->rp, why, whysize)) < 0) {
        if (cfg->oidc_only_start_if_available) {
            auth_oidc_free(o);
            return rc;
        }
        log_warnx("oidc: the provider %s cannot be reached (%s); logins will try again",
                  cfg->oidc_issuer, why);
    } else {
        log_info("oidc: logins go through %s", cfg->oidc_issuer);
    }
    *out = o;
    return 0;
}

void auth_oidc_free(struct auth_oidc *o)
{
    if (!o)
        return;
    auth_oidc_rp_free(o->rp);
    free(o);
}

/* ---- a login's values, from its state ---- */

/* A keyed hash of the state under the server secret, for one use (what). */
static void derive(const struct auth_oidc *o, const char *what, const char *state,
                   uint8_t out[STORE_KEY_LEN])
{
    crypto_generichash_state h;

    crypto_generichash_init(&h, o->auth->secret, sizeof(o->auth->secret), STORE_KEY_LEN);
    crypto_generichash_update(&h, (const uint8_t *)what, strlen(what) + 1);
    crypto_generichash_update(&h, (const uint8_t *)state, strlen(state));
    crypto_generichash_final(&h, out, STORE_KEY_LEN);
}

static void derive_text(const struct auth_oidc *o, const char *what, const char *state,
                        char out[AUTH_OIDC_STATE_MAX])
{
    uint8_t mac[STORE_KEY_LEN];
    char *s;

    derive(o, what, state, mac);
    s = auth_b64url(mac, sizeof(mac)); /* 43 characters, as a PKCE verifier must have */
    hs_strlcpy(out, s, AUTH_OIDC_STATE_MAX);
    sodium_memzero(s, strlen(s));
    sodium_memzero(mac, sizeof(mac));
    free(s);
}

/* The nonce and (with oidc.pkce) the verifier of the login of r->state. */
static void login_secrets(const struct auth_oidc *o, struct auth_oidc_request *r)
{
    derive_text(o, "oidc nonce", r->state, r->nonce);
    r->verifier[0] = '\0';
    if (o->cfg->oidc_pkce_enabled)
        derive_text(o, "oidc pkce verifier", r->state, r->verifier);
}

int auth_oidc_begin(struct auth_oidc *o, const char *reg_id, char **location,
                    char state[AUTH_OIDC_STATE_MAX], char *why, size_t whysize)
{
    const struct hs_config *cfg = o->cfg;
    struct auth_oidc_request rq;
    uint8_t key[STORE_KEY_LEN];
    int rc;

    if (!auth__registration_pending(o->auth, reg_id)) {
        snprintf(why, whysize, "this login is unknown, finished or expired");
        return -ENOENT;
    }
    if ((rc = auth_oidc_rp_discover(o->rp, why, whysize)) < 0)
        return rc;
    auth_oidc_request_new(&rq, false); /* a random state; the rest follows from it */
    login_secrets(o, &rq);
    derive(o, "oidc state", rq.state, key);
    rc = store_oidc_login_create(o->auth->st, key, reg_id, hs_now_us() + OIDC_FLOW_TTL_US);
    if (rc < 0) {
        snprintf(why, whysize, rc == -ENOENT ? "this login is unknown, finished or expired"
                                             : "the login cannot be recorded; try again");
        sodium_memzero(&rq, sizeof(rq));
        return rc;
    }
    *location = auth_oidc_rp_authorize_url(o->rp, &rq, &cfg->oidc_scope,
                                           strcmp(cfg->oidc_pkce_method, "S256") != 0,
                                           &cfg->oidc_extra_params);
    memcpy(state, rq.state, AUTH_OIDC_STATE_MAX);
    sodium_memzero(&rq, sizeof(rq));
    return 0;
}

/* ---- the callback ---- */

int auth_oidc_callback(struct auth_oidc *o, const char *state, const char *code,
                       const char *cookie_state, struct auth_oidc_login *out, char *why,
                       size_t whysize)
{
    struct auth_oidc_request rq = { 0 };
    uint8_t key[STORE_KEY_LEN];
    char *reg_id = NULL;
    json_t *claims = NULL;
    int rc;

    /* The state must come back to the browser that was sent away with it: a link with
     * someone else's state, opened in another browser, is refused. */
    if (!state || !code || !cookie_state || strlen(state) != strlen(cookie_state) ||
        sodium_memcmp(state, cookie_state, strlen(state)) != 0) {
        snprintf(why, whysize, "this answer does not belong to a login started in this browser");
        return -EINVAL;
    }
    if (!*state || strlen(state) >= sizeof(rq.state)) {
        snprintf(why, whysize, "this login is unknown, used already or expired");
        return -EINVAL;
    }
    derive(o, "oidc state", state, key);
    if ((rc = store_oidc_login_take(o->auth->st, key, hs_now_us(), &reg_id)) < 0) {
        snprintf(why, whysize, rc == -ENOENT ? "this login is unknown, used already or expired"
                                             : "the login cannot be looked up; try again");
        return rc == -ENOENT ? -EINVAL : rc;
    }
    hs_strlcpy(rq.state, state, sizeof(rq.state));
    login_secrets(o, &rq);
    rc = auth_oidc_rp_finish(o->rp, &rq, code, &claims, why, whysize);
    if (rc == 0)
        rc = auth__oidc_login(o, claims, reg_id, out, why, whysize);
    json_decref(claims);
    free(reg_id);
    sodium_memzero(&rq, sizeof(rq));
    return rc;
}
