/* Shared between the OIDC source files of auth/ only (the node logins and the relying party
 * they share with headscale-webadmin). */
#ifndef HS_OIDC_INTERNAL_H
#define HS_OIDC_INTERNAL_H

#include <pthread.h>

#include "auth/auth_internal.h"

#define OIDC_MAX_RESPONSE (1u << 20) /* bytes of any answer of the provider */
#define OIDC_HTTP_TIMEOUT_MS 10000
#define OIDC_FLOW_TTL_US (15 * 60 * HS_USEC_PER_SEC)
#define OIDC_JWKS_MIN_REFETCH_US (10 * HS_USEC_PER_SEC) /* unknown kids refetch at most this often */
#define OIDC_MAX_GROUPS 256           /* provider groups kept per user */

/* A relying party of one provider (oidc_provider.c, oidc_rp.c): what it was told and what
 * the provider published. */
struct auth_oidc_rp {
    char *issuer, *client_id, *client_secret, *redirect_uri;
    pthread_mutex_t mu; /* everything below */
    json_t *discovery;  /* NULL until the provider answered */
    json_t *jwks;
    int64_t jwks_fetched_us; /* the last refetch for an unknown kid (0: none yet) */
};

struct auth_oidc {
    const struct hs_config *cfg;
    struct auth *auth;
    struct auth_oidc_rp *rp;
};

/* oidc_provider.c: the provider's documents and endpoints. Each sets why on failure. */
/* A reference to the current discovery document or key set (the caller decrefs). */
json_t *oidc__discovery(struct auth_oidc_rp *rp);
json_t *oidc__jwks(struct auth_oidc_rp *rp);
/* Refetches the key set (an unknown kid: the provider rolled its keys); rate limited. */
int oidc__jwks_refresh(struct auth_oidc_rp *rp, char *why, size_t whysize);
/* The token endpoint's answer for an authorization code. */
int oidc__exchange(struct auth_oidc_rp *rp, const char *code, const char *verifier, json_t **out,
                   char *why, size_t whysize);
/* The userinfo endpoint's answer for an access token (NULL when there is none). */
json_t *oidc__userinfo(struct auth_oidc_rp *rp, const char *access_token);

#endif
