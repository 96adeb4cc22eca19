/* OIDC login for nodes (the authorization code flow, OpenID Connect Core 1.0 §3.1): the
 * client's /register/<id> redirects to the provider with a fresh state, nonce and (with
 * oidc.pkce) code challenge bound to that pending registration; the callback exchanges the
 * code, verifies the ID token, applies oidc.allowed_*, finds or creates the user by issuer and
 * subject, and completes the registration, which answers the waiting client. */
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
    pthread_mutex_init(&o->mu, NULL);
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
    sodium_memzero(o->flows, sizeof(o->flows));
    pthread_mutex_destroy(&o->mu);
    free(o);
}

int auth_oidc_begin(struct auth_oidc *o, const char *reg_id, char **location,
                    char state[AUTH_OIDC_STATE_MAX], char *why, size_t whysize)
{
    const struct hs_config *cfg = o->cfg;
    struct auth_oidc_pending f = { 0 };
    int rc;

    if (!auth__registration_pending(o->auth, reg_id)) {
        snprintf(why, whysize, "this login is unknown, finished or expired");
        return -ENOENT;
    }
    if ((rc = auth_oidc_rp_discover(o->rp, why, whysize)) < 0)
        return rc;
    auth_oidc_request_new(&f.rq, cfg->oidc_pkce_enabled);
    hs_strlcpy(f.ref, reg_id, sizeof(f.ref));
    f.expires_at = hs_now_us() + OIDC_FLOW_TTL_US;
    *location = auth_oidc_rp_authorize_url(o->rp, &f.rq, &cfg->oidc_scope,
                                           strcmp(cfg->oidc_pkce_method, "S256") != 0,
                                           &cfg->oidc_extra_params);
    pthread_mutex_lock(&o->mu);
    *auth_oidc_pending_slot(o->flows, OIDC_MAX_FLOWS, hs_now_us()) = f;
    pthread_mutex_unlock(&o->mu);
    memcpy(state, f.rq.state, AUTH_OIDC_STATE_MAX);
    sodium_memzero(&f, sizeof(f));
    return 0;
}

/* ---- the callback ---- */

int auth_oidc_callback(struct auth_oidc *o, const char *state, const char *code,
                       const char *cookie_state, struct auth_oidc_login *out, char *why,
                       size_t whysize)
{
    struct auth_oidc_pending f;
    json_t *claims = NULL;
    bool live;
    int rc;

    /* The state must come back to the browser that was sent away with it: a link with
     * someone else's state, opened in another browser, is refused. */
    if (!state || !code || !cookie_state || strlen(state) != strlen(cookie_state) ||
        sodium_memcmp(state, cookie_state, strlen(state)) != 0) {
        snprintf(why, whysize, "this answer does not belong to a login started in this browser");
        return -EINVAL;
    }
    pthread_mutex_lock(&o->mu);
    live = auth_oidc_pending_take(o->flows, OIDC_MAX_FLOWS, state, hs_now_us(), &f);
    pthread_mutex_unlock(&o->mu);
    if (!live) {
        snprintf(why, whysize, "this login is unknown, used already or expired");
        return -EINVAL;
    }
    rc = auth_oidc_rp_finish(o->rp, &f.rq, code, &claims, why, whysize);
    if (rc == 0)
        rc = auth__oidc_login(o, claims, f.ref, out, why, whysize);
    json_decref(claims);
    sodium_memzero(&f, sizeof(f));
    return rc;
}
