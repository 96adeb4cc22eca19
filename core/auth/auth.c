#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"
#include "util/util.h"

#define AUTH_APIKEY_TOUCH_US (60 * HS_USEC_PER_SEC) /* last_seen is kept to the minute */

/* A new key whose random prefix collides with an existing one is drawn again. */
#define AUTH_CREATE_ATTEMPTS 5


static const char *cred_tag(enum auth_cred_kind kind)
{
    return kind == AUTH_CRED_API ? "hskey-api-" : "hskey-auth-";
}

int auth_new(const struct hs_config *cfg, struct store *st, struct auth **out)
{
    struct auth *a;
    int rc;

    if (sodium_init() < 0)
        return -EIO;
    a = hs_xcalloc(1, sizeof(*a));
    a->cfg = cfg;
    a->st = st;
    if ((rc = store_server_secret(st, a->secret)) < 0) {
        auth_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    sodium_memzero(a->secret, sizeof(a->secret));
    free(a);
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

int auth_cred_parse(enum auth_cred_kind kind, const char *text, char prefix[AUTH_PREFIX_LEN + 1],
                    uint8_t secret[AUTH_SECRET_LEN])
{
    const char *tag = cred_tag(kind);
    size_t taglen = strlen(tag);

    if (!text || strlen(text) != taglen + AUTH_PREFIX_LEN + 1 + 2 * AUTH_SECRET_LEN ||
        strncmp(text, tag, taglen) != 0)
        return -EINVAL;
    text += taglen;
    if (!is_lower_hex(text, AUTH_PREFIX_LEN) || text[AUTH_PREFIX_LEN] != '-')
        return -EINVAL;
    if (hs_hex_decode(text + AUTH_PREFIX_LEN + 1, 2 * AUTH_SECRET_LEN, secret, AUTH_SECRET_LEN))
        return -EINVAL;
    memcpy(prefix, text, AUTH_PREFIX_LEN);
    prefix[AUTH_PREFIX_LEN] = '\0';
    return 0;
}

int auth_cred_prefix(enum auth_cred_kind kind, const char *text, char prefix[AUTH_PREFIX_LEN + 1])
{
    const char *tag = cred_tag(kind);

    if (!text)
        return -EINVAL;
    if (hs_has_prefix(text, tag))
        text += strlen(tag);
    if (strlen(text) < AUTH_PREFIX_LEN || !is_lower_hex(text, AUTH_PREFIX_LEN) ||
        (text[AUTH_PREFIX_LEN] != '\0' && text[AUTH_PREFIX_LEN] != '-'))
        return -EINVAL;
    memcpy(prefix, text, AUTH_PREFIX_LEN);
    prefix[AUTH_PREFIX_LEN] = '\0';
    return 0;
}

void auth_cred_mask(enum auth_cred_kind kind, const char *prefix, char *out, size_t size)
{
    snprintf(out, size, "%s%s-***", cred_tag(kind), prefix);
}

static void cred_hash(const struct auth *a, const char *prefix, const uint8_t *secret,
                      uint8_t out[STORE_KEY_LEN])
{
    crypto_generichash_state h;

    crypto_generichash_init(&h, a->secret, sizeof(a->secret), STORE_KEY_LEN);
    crypto_generichash_update(&h, (const uint8_t *)prefix, AUTH_PREFIX_LEN);
    crypto_generichash_update(&h, secret, AUTH_SECRET_LEN);
    crypto_generichash_final(&h, out, STORE_KEY_LEN);
    sodium_memzero(&h, sizeof(h));
}

/* Draws a fresh key: prefix, secret, hash, and the full text. */
static void cred_draw(const struct auth *a, enum auth_cred_kind kind, char *prefix,
                      uint8_t hash[STORE_KEY_LEN], char *full)
{
    uint8_t rnd[AUTH_PREFIX_LEN / 2], secret[AUTH_SECRET_LEN];
    char secret_hex[2 * AUTH_SECRET_LEN + 1];

    randombytes_buf(rnd, sizeof(rnd));
    randombytes_buf(secret, sizeof(secret));
    hs_hex_encode(rnd, sizeof(rnd), prefix);
    hs_hex_encode(secret, sizeof(secret), secret_hex);
    cred_hash(a, prefix, secret, hash);
    snprintf(full, AUTH_KEY_TEXT_MAX, "%s%s-%s", cred_tag(kind), prefix, secret_hex);
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(secret_hex, sizeof(secret_hex));
}

int auth_apikey_create(struct auth *a, int64_t expiration, char *full, struct store_apikey *out)
{
    struct store_apikey in = { .expiration = expiration };
    int rc = -EEXIST;

    for (int i = 0; i < AUTH_CREATE_ATTEMPTS && rc == -EEXIST; i++) {
        cred_draw(a, AUTH_CRED_API, in.prefix, in.hash, full);
        rc = store_apikey_create(a->st, &in, out);
    }
    if (rc < 0)
        sodium_memzero(full, AUTH_KEY_TEXT_MAX);
    return rc;
}

int auth_preauthkey_create(struct auth *a, const struct store_preauthkey *in, char *full,
                           struct store_preauthkey *out)
{
    struct store_preauthkey k = *in;
    int rc = -EEXIST;

    for (int i = 0; i < AUTH_CREATE_ATTEMPTS && rc == -EEXIST; i++) {
        cred_draw(a, AUTH_CRED_PREAUTH, k.prefix, k.hash, full);
        rc = store_preauthkey_create(a->st, &k, out);
    }
    if (rc < 0)
        sodium_memzero(full, AUTH_KEY_TEXT_MAX);
    return rc;
}

/* Parses key, looks its prefix up, and compares hashes in constant time. */
static int cred_verify(struct auth *a, enum auth_cred_kind kind, const char *key,
                       char prefix[AUTH_PREFIX_LEN + 1], uint8_t hash[STORE_KEY_LEN])
{
    uint8_t secret[AUTH_SECRET_LEN];

    if (auth_cred_parse(kind, key, prefix, secret) < 0)
        return -EACCES;
    cred_hash(a, prefix, secret, hash);
    sodium_memzero(secret, sizeof(secret));
    return 0;
}

int auth_apikey_check(struct auth *a, const char *key, uint64_t *id_out)
{
    char prefix[AUTH_PREFIX_LEN + 1];
    uint8_t hash[STORE_KEY_LEN];
    struct store_apikey k;
    int64_t now = hs_now_us();
    int rc;

    if ((rc = cred_verify(a, AUTH_CRED_API, key, prefix, hash)) < 0)
        return rc;
    if ((rc = store_apikey_get_by_prefix(a->st, prefix, &k)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    if (crypto_verify_32(hash, k.hash) != 0)
        return -EACCES;
    if (k.expiration && k.expiration <= now)
        return -EKEYEXPIRED;
    /* Last use to the minute: a dashboard polling every second would otherwise queue a
     * write per request behind whatever else is being written. */
    if (now - k.last_seen >= AUTH_APIKEY_TOUCH_US)
        store_apikey_touch(a->st, k.id, now);
    if (id_out)
        *id_out = k.id;
    return 0;
}

int auth_preauthkey_check(struct auth *a, const char *key, struct store_preauthkey *out)
{
    char prefix[AUTH_PREFIX_LEN + 1];
    uint8_t hash[STORE_KEY_LEN];
    struct store_preauthkey k;
    int rc;

    if ((rc = cred_verify(a, AUTH_CRED_PREAUTH, key, prefix, hash)) < 0)
        return rc;
    if ((rc = store_preauthkey_get_by_prefix(a->st, prefix, &k)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    if (crypto_verify_32(hash, k.hash) != 0)
        rc = -EACCES;
    else if (k.expiration && k.expiration <= hs_now_us())
        rc = -EKEYEXPIRED;
    else if (k.used && !k.reusable)
        rc = -EALREADY;
    if (rc < 0) {
        store_preauthkey_free(&k);
        return rc;
    }
    *out = k;
    return 0;
}
