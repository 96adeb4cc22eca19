/* Shared between the auth/ source files only. */
#ifndef HS_AUTH_INTERNAL_H
#define HS_AUTH_INTERNAL_H

#include <pthread.h>

#include "auth/auth.h"

/* Imported keys checked with bcrypt lately: bcrypt costs tens of milliseconds a check (that is
 * its point), which an API client would pay on every request. A hit needs the same key id and
 * the same secret (a keyed hash of it, never the secret itself). */
#define AUTH_BCRYPT_SEEN 32

struct auth_bcrypt_seen {
    uint64_t id; /* 0: free */
    enum auth_cred_kind kind;
    uint8_t mac[STORE_KEY_LEN];
};

struct auth {
    const struct hs_config *cfg;
    struct store *st;
    uint8_t secret[STORE_KEY_LEN];
    auth_tag_check_fn tag_check; /* NULL: requested tags are refused */
    void *tag_check_arg;
    pthread_mutex_t seen_mu;
    struct auth_bcrypt_seen seen[AUTH_BCRYPT_SEEN];
    unsigned seen_next; /* the slot the next one takes, round robin */
    uint64_t outcomes[AUTH_OUTCOMES]; /* atomic */
};

/* register.c, for the OIDC login: whether id is a pending registration, and completing it
 * for a user with a register method and key expiry (0: the usual). */
bool auth__registration_pending(struct auth *a, const char *id);
int auth__registration_complete_as(struct auth *a, const char *id, uint64_t user_id,
                                   enum register_method method, int64_t expiry,
                                   struct store_node *out);

struct auth_oidc;
/* oidc_claims.c: applies oidc.allowed_*, finds or creates the user, completes reg_id. */
int auth__oidc_login(struct auth_oidc *o, const json_t *claims, const char *reg_id,
                     struct auth_oidc_login *out, char *why, size_t whysize);

#endif
