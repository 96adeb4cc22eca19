/* Shared between the auth/ source files only. */
#ifndef HS_AUTH_INTERNAL_H
#define HS_AUTH_INTERNAL_H

#include "auth/auth.h"

struct auth {
    const struct hs_config *cfg;
    struct store *st;
    uint8_t secret[STORE_KEY_LEN];
    auth_tag_check_fn tag_check; /* NULL: requested tags are refused */
    void *tag_check_arg;
};

#endif
