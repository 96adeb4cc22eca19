/* Shared between the OIDC source files of auth/ only. */
#ifndef HS_OIDC_INTERNAL_H
#define HS_OIDC_INTERNAL_H

#include <pthread.h>

#include "auth/auth_internal.h"

#define OIDC_MAX_RESPONSE (1u << 20) /* bytes of any answer of the provider */
#define OIDC_HTTP_TIMEOUT_MS 10000
#define OIDC_MAX_FLOWS 1024           /* logins between redirect and callback */
#define OIDC_FLOW_TTL_US (15 * 60 * HS_USEC_PER_SEC)
#define OIDC_CLOCK_SKEW_S 60          /* how far the provider's clock may be from ours */
#define OIDC_JWKS_MIN_REFETCH_US (10 * HS_USEC_PER_SEC) /* unknown kids refetch at most this often */
#define OIDC_RANDOM_BYTES 24          /* state, nonce */
#define OIDC_VERIFIER_BYTES 32        /* PKCE verifier: 43 characters */
#define OIDC_TEXT_MAX AUTH_OIDC_STATE_MAX /* state, nonce, verifier as text */
#define OIDC_MAX_GROUPS 256           /* provider groups kept per user */

/* One login between the redirect to the provider and its callback. */
struct oidc_flow {
    char state[OIDC_TEXT_MAX]; /* "" = free slot */
    char nonce[OIDC_TEXT_MAX];
    char verifier[OIDC_TEXT_MAX];
    char reg_id[AUTH_REG_ID_MAX];
    int64_t expires_at;
};

struct auth_oidc {
    const struct hs_config *cfg;
    struct auth *auth;
    char *client_secret;
    char *redirect_uri; /* <server_url>/oidc/callback */
    pthread_mutex_t mu; /* everything below */
    json_t *discovery;  /* NULL until the provider answered */
    json_t *jwks;
    int64_t jwks_fetched_us; /* the last refetch for an unknown kid (0: none yet) */
    struct oidc_flow flows[OIDC_MAX_FLOWS];
};

/* oidc_provider.c: the provider's documents and endpoints. Each sets why on failure. */
/* Fetches discovery and keys unless already there. */
int oidc__discover(struct auth_oidc *o, char *why, size_t whysize);
/* A reference to the current discovery document or key set (the caller decrefs). */
json_t *oidc__discovery(struct auth_oidc *o);
json_t *oidc__jwks(struct auth_oidc *o);
/* Refetches the key set (an unknown kid: the provider rolled its keys); rate limited. */
int oidc__jwks_refresh(struct auth_oidc *o, char *why, size_t whysize);
/* The token endpoint's answer for an authorization code. */
int oidc__exchange(struct auth_oidc *o, const char *code, const char *verifier, json_t **out,
                   char *why, size_t whysize);
/* The userinfo endpoint's answer for an access token (NULL when there is none). */
json_t *oidc__userinfo(struct auth_oidc *o, const char *access_token);

#endif
