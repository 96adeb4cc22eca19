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

#endif
