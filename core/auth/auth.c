#include <ctype.h>
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
    pthread_mutex_init(&a->seen_mu, NULL);
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
    sodium_memzero(a->seen, sizeof(a->seen));
    pthread_mutex_destroy(&a->seen_mu);
    free(a);
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* base64url: headscale 0.28+ draws its prefixes and secrets from it (ours are hex). */
static bool is_url_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
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
    bool legacy = false;

    if (!text)
        return -EINVAL;
    if (hs_has_prefix(text, tag))
        text += strlen(tag);
    else if (kind == AUTH_CRED_PREAUTH && strlen(text) == AUTH_LEGACY_PAK_LEN &&
             is_lower_hex(text, AUTH_LEGACY_PAK_LEN))
        legacy = true; /* 0.22.3's bare key: imported under its first 12 chars */
    if (strlen(text) < AUTH_PREFIX_LEN || !is_url_safe(text, AUTH_PREFIX_LEN) ||
        (!legacy && text[AUTH_PREFIX_LEN] != '\0' && text[AUTH_PREFIX_LEN] != '-'))
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

/* A presented key split into the prefix the store knows it by and the secret after it.
 * Forms: hskey-<kind>-<12>-<64> (ours in hex; headscale 0.28+ in base64url); headscale's older
 * API keys "<prefix>.<secret>"; its older pre-auth keys, 48 hex chars stored in clear, which
 * the import hashed whole under their first 12 chars as prefix. */
struct cred_text {
    char prefix[STORE_PREFIX_MAX];
    const char *secret; /* points into the key */
    size_t len;
};

static int cred_split_legacy(enum auth_cred_kind kind, const char *key, size_t len,
                             struct cred_text *out)
{
    const char *dot = memchr(key, '.', len);
    size_t plen;

    if (kind == AUTH_CRED_PREAUTH) {
        if (len != AUTH_LEGACY_PAK_LEN || !is_lower_hex(key, len))
            return -EACCES;
        plen = AUTH_PREFIX_LEN;
        *out = (struct cred_text){ .secret = key, .len = len };
    } else {
        plen = dot ? (size_t)(dot - key) : 0;
        if (!plen || plen >= STORE_PREFIX_MAX || !is_url_safe(key, plen))
            return -EACCES;
        *out = (struct cred_text){ .secret = dot + 1, .len = len - plen - 1 };
    }
    memcpy(out->prefix, key, plen);
    out->prefix[plen] = '\0';
    return 0;
}

static int cred_split(enum auth_cred_kind kind, const char *key, struct cred_text *out)
{
    const char *tag = cred_tag(kind);
    size_t taglen = strlen(tag), len = key ? strnlen(key, AUTH_KEY_TEXT_MAX) : 0;

    if (!len || len == AUTH_KEY_TEXT_MAX)
        return -EACCES;
    if (!hs_has_prefix(key, tag))
        return cred_split_legacy(kind, key, len, out);
    key += taglen;
    if (len != taglen + AUTH_PREFIX_LEN + 1 + 2 * AUTH_SECRET_LEN ||
        key[AUTH_PREFIX_LEN] != '-' || !is_url_safe(key, len - taglen))
        return -EACCES;
    memcpy(out->prefix, key, AUTH_PREFIX_LEN);
    out->prefix[AUTH_PREFIX_LEN] = '\0';
    out->secret = key + AUTH_PREFIX_LEN + 1;
    out->len = 2 * AUTH_SECRET_LEN;
    return 0;
}

static void seen_mac(const struct auth *a, enum auth_cred_kind kind, uint64_t id,
                     const struct cred_text *ct, uint8_t mac[STORE_KEY_LEN])
{
    crypto_generichash_state h;
    uint8_t head[sizeof(kind) + sizeof(id)];

    memcpy(head, &kind, sizeof(kind));
    memcpy(head + sizeof(kind), &id, sizeof(id));
    crypto_generichash_init(&h, a->secret, sizeof(a->secret), STORE_KEY_LEN);
    crypto_generichash_update(&h, head, sizeof(head));
    crypto_generichash_update(&h, (const uint8_t *)ct->secret, ct->len);
    crypto_generichash_final(&h, mac, STORE_KEY_LEN);
    sodium_memzero(&h, sizeof(h));
}

/* bcrypt, unless this very key was verified lately (see AUTH_BCRYPT_SEEN). */
static int bcrypt_match(struct auth *a, enum auth_cred_kind kind, uint64_t id,
                        const struct cred_text *ct, const char *bcrypt)
{
    uint8_t mac[STORE_KEY_LEN];
    bool hit = false;

    seen_mac(a, kind, id, ct, mac);
    pthread_mutex_lock(&a->seen_mu);
    for (size_t i = 0; i < AUTH_BCRYPT_SEEN && !hit; i++)
        hit = a->seen[i].id == id && a->seen[i].kind == kind &&
              crypto_verify_32(a->seen[i].mac, mac) == 0;
    pthread_mutex_unlock(&a->seen_mu);
    if (hit)
        return 0;
    if (hs_bcrypt_verify(ct->secret, ct->len, bcrypt) < 0)
        return -EACCES;
    pthread_mutex_lock(&a->seen_mu);
    a->seen[a->seen_next] = (struct auth_bcrypt_seen){ .id = id, .kind = kind };
    memcpy(a->seen[a->seen_next].mac, mac, sizeof(mac));
    a->seen_next = (a->seen_next + 1) % AUTH_BCRYPT_SEEN;
    pthread_mutex_unlock(&a->seen_mu);
    return 0;
}

/* Whether the presented secret matches what is stored for key id: bcrypt for a key imported
 * from headscale, otherwise our keyed hash (constant-time either way). */
static int cred_match(struct auth *a, enum auth_cred_kind kind, uint64_t id,
                      const struct cred_text *ct, const uint8_t hash[STORE_KEY_LEN],
                      const char *bcrypt)
{
    uint8_t secret[AUTH_SECRET_LEN], mine[STORE_KEY_LEN];
    int rc = -EACCES;

    if (bcrypt[0])
        return bcrypt_match(a, kind, id, ct, bcrypt);
    if (strlen(ct->prefix) != AUTH_PREFIX_LEN || ct->len != 2 * AUTH_SECRET_LEN ||
        hs_hex_decode(ct->secret, ct->len, secret, sizeof(secret)) < 0)
        return -EACCES;
    cred_hash(a, ct->prefix, secret, mine);
    if (crypto_verify_32(mine, hash) == 0)
        rc = 0;
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(mine, sizeof(mine));
    return rc;
}

int auth_apikey_check(struct auth *a, const char *key, uint64_t *id_out)
{
    struct cred_text ct;
    struct store_apikey k;
    int64_t now = hs_now_us();
    int rc;

    if ((rc = cred_split(AUTH_CRED_API, key, &ct)) < 0)
        return rc;
    if ((rc = store_apikey_get_by_prefix(a->st, ct.prefix, &k)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    if ((rc = cred_match(a, AUTH_CRED_API, k.id, &ct, k.hash, k.bcrypt)) < 0)
        return rc;
    if (k.expiration && k.expiration <= now)
        return -EKEYEXPIRED;
    /* Last use to the minute: a dashboard polling every second would otherwise queue a
     * write per request behind whatever else is being written. A last use ahead of now (the
     * wall clock was set back) is written over at once, not kept until the clock catches up. */
    if (now - k.last_seen >= AUTH_APIKEY_TOUCH_US || now < k.last_seen)
        store_apikey_touch(a->st, k.id, now);
    if (id_out)
        *id_out = k.id;
    return 0;
}

int auth_preauthkey_check(struct auth *a, const char *key, struct store_preauthkey *out)
{
    struct cred_text ct;
    struct store_preauthkey k;
    int rc;

    if ((rc = cred_split(AUTH_CRED_PREAUTH, key, &ct)) < 0)
        return rc;
    if ((rc = store_preauthkey_get_by_prefix(a->st, ct.prefix, &k)) < 0)
        return rc == -ENOENT ? -EACCES : rc;
    rc = cred_match(a, AUTH_CRED_PREAUTH, k.id, &ct, k.hash, k.bcrypt);
    if (rc == 0 && k.expiration && k.expiration <= hs_now_us())
        rc = -EKEYEXPIRED;
    if (rc == 0 && k.used && !k.reusable)
        rc = -EALREADY;
    if (rc < 0) {
        store_preauthkey_free(&k);
        return rc;
    }
    *out = k;
    return 0;
}
