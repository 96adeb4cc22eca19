/* Server-side sessions in memory: a keyed hash of each id, the API key sealed under a key
 * derived from the id (libsodium secretbox), an absolute and an idle expiry. A table of at
 * most WA_MAX_SESSIONS, searched linearly (an administrator console has few sessions). */
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define ID_BYTES 32
#define SEALED_MAX (WA_MAX_API_KEY + crypto_secretbox_MACBYTES)

struct session {
    bool used;
    uint8_t id_hash[crypto_generichash_BYTES];
    uint8_t nonce[crypto_secretbox_NONCEBYTES];
    uint8_t sealed[SEALED_MAX];
    size_t sealed_len;
    char csrf[WA_CSRF_LEN + 1];
    int64_t created, last_used;
};

struct wa_sessions {
    int64_t max_us, idle_us;
    uint8_t hash_key[crypto_generichash_KEYBYTES]; /* random per process */
    struct session s[WA_MAX_SESSIONS];
};

struct wa_sessions *wa__sessions_new(int64_t max_us, int64_t idle_us)
{
    struct wa_sessions *ss = hs_xcalloc(1, sizeof(*ss));

    ss->max_us = max_us;
    ss->idle_us = idle_us;
    randombytes_buf(ss->hash_key, sizeof(ss->hash_key));
    return ss;
}

void wa__sessions_free(struct wa_sessions *ss)
{
    if (!ss)
        return;
    sodium_memzero(ss, sizeof(*ss));
    free(ss);
}

void wa__random_token(char out[WA_CSRF_LEN + 1])
{
    uint8_t raw[ID_BYTES];

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(out, WA_CSRF_LEN + 1, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

bool wa__token_equal(const char *a, const char *b)
{
    size_t n;

    if (!a || !b || (n = strlen(a)) != strlen(b) || n == 0)
        return false;
    return sodium_memcmp(a, b, n) == 0;
}

/* The table's hash of an id, and the sealing key derived from it: two keyed BLAKE2b hashes
 * with different keys, so one does not give the other. */
static int id_keys(const struct wa_sessions *ss, const char *id, uint8_t *hash,
                   uint8_t seal_key[crypto_secretbox_KEYBYTES])
{
    static const uint8_t seal_label[crypto_generichash_KEYBYTES] = "webadmin session seal key";
    uint8_t raw[ID_BYTES];
    size_t rawlen;

    if (strlen(id) != WA_SESSION_ID_LEN ||
        sodium_base642bin(raw, sizeof(raw), id, WA_SESSION_ID_LEN, NULL, &rawlen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        rawlen != ID_BYTES)
        return -ENOENT;
    crypto_generichash(hash, crypto_generichash_BYTES, raw, sizeof(raw), ss->hash_key,
                       sizeof(ss->hash_key));
    crypto_generichash(seal_key, crypto_secretbox_KEYBYTES, raw, sizeof(raw), seal_label,
                       sizeof(seal_label));
    sodium_memzero(raw, sizeof(raw));
    return 0;
}

static bool expired(const struct wa_sessions *ss, const struct session *s, int64_t now)
{
    return now - s->created > ss->max_us || now - s->last_used > ss->idle_us;
}

/* A free slot: an unused or expired one, else the least recently used. */
static struct session *free_slot(struct wa_sessions *ss, int64_t now)
{
    struct session *oldest = &ss->s[0];

    for (size_t i = 0; i < WA_MAX_SESSIONS; i++) {
        struct session *s = &ss->s[i];
        if (!s->used || expired(ss, s, now))
            return s;
        if (s->last_used < oldest->last_used)
            oldest = s;
    }
    return oldest;
}

int wa__session_create(struct wa_sessions *ss, const char *api_key,
                       char id_out[WA_SESSION_ID_LEN + 1])
{
    size_t klen = strlen(api_key);
    int64_t now = hs_now_us();
    uint8_t seal_key[crypto_secretbox_KEYBYTES];
    struct session *s;

    if (klen > WA_MAX_API_KEY)
        return -E2BIG;
    s = free_slot(ss, now);
    sodium_memzero(s, sizeof(*s));
    wa__random_token(id_out);
    id_keys(ss, id_out, s->id_hash, seal_key);
    randombytes_buf(s->nonce, sizeof(s->nonce));
    crypto_secretbox_easy(s->sealed, (const uint8_t *)api_key, klen, s->nonce, seal_key);
    sodium_memzero(seal_key, sizeof(seal_key));
    s->sealed_len = klen + crypto_secretbox_MACBYTES;
    wa__random_token(s->csrf);
    s->created = s->last_used = now;
    s->used = true;
    return 0;
}

static struct session *find(struct wa_sessions *ss, const uint8_t *hash)
{
    for (size_t i = 0; i < WA_MAX_SESSIONS; i++)
        if (ss->s[i].used && sodium_memcmp(ss->s[i].id_hash, hash, crypto_generichash_BYTES) == 0)
            return &ss->s[i];
    return NULL;
}

int wa__session_open(struct wa_sessions *ss, const char *id, struct wa_session_view *v)
{
    uint8_t hash[crypto_generichash_BYTES], seal_key[crypto_secretbox_KEYBYTES];
    int64_t now = hs_now_us();
    struct session *s;
    int rc = -ENOENT;

    if (!id || id_keys(ss, id, hash, seal_key) < 0)
        return -ENOENT;
    s = find(ss, hash);
    if (s && expired(ss, s, now)) {
        sodium_memzero(s, sizeof(*s));
        s = NULL;
    }
    if (s && crypto_secretbox_open_easy((uint8_t *)v->api_key, s->sealed, s->sealed_len,
                                        s->nonce, seal_key) == 0) {
        v->api_key[s->sealed_len - crypto_secretbox_MACBYTES] = '\0';
        memcpy(v->csrf, s->csrf, sizeof(v->csrf));
        s->last_used = now;
        rc = 0;
    }
    sodium_memzero(seal_key, sizeof(seal_key));
    return rc;
}

void wa__session_end(struct wa_sessions *ss, const char *id)
{
    uint8_t hash[crypto_generichash_BYTES], seal_key[crypto_secretbox_KEYBYTES];
    struct session *s;

    if (!id || id_keys(ss, id, hash, seal_key) < 0)
        return;
    sodium_memzero(seal_key, sizeof(seal_key));
    if ((s = find(ss, hash)))
        sodium_memzero(s, sizeof(*s));
}
