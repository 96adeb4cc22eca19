/* Server-side sessions in memory: a keyed hash of each id, the API key sealed under a key
 * derived from the id (libsodium secretbox), an absolute and an idle expiry. A table of at
 * most WA_MAX_SESSIONS, searched linearly (an administrator console has few sessions).
 * Optionally kept in a file as well (see wa__sessions_new). A session whose API key was made
 * for it stays past its end until wa__sessions_sweep hands that key over to be expired. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define ID_BYTES 32
#define SEALED_MAX (WA_MAX_API_KEY + crypto_secretbox_MACBYTES)
#define WA_SESSION_SAVE_EVERY_US (60 * HS_USEC_PER_SEC) /* last use kept in the file to this */

struct session {
    bool used;
    uint8_t id_hash[crypto_generichash_BYTES];
    uint8_t nonce[crypto_secretbox_NONCEBYTES];
    uint8_t sealed[SEALED_MAX];
    size_t sealed_len;
    char csrf[WA_CSRF_LEN + 1];
    char minted[WA_KEY_PREFIX_LEN + 1]; /* the prefix of a key made for it, else "" */
    int64_t created, last_used;
    int64_t saved_use; /* last_used as the file has it */
};

struct wa_sessions {
    int64_t max_us, idle_us;
    uint8_t hash_key[crypto_generichash_KEYBYTES]; /* random per table (kept in the file) */
    char *path;                                    /* the sessions file, or NULL */
    struct session s[WA_MAX_SESSIONS];
};

static void load(struct wa_sessions *ss);
static void save(struct wa_sessions *ss);

struct wa_sessions *wa__sessions_new(int64_t max_us, int64_t idle_us, const char *path)
{
    struct wa_sessions *ss = hs_xcalloc(1, sizeof(*ss));

    ss->max_us = max_us;
    ss->idle_us = idle_us;
    randombytes_buf(ss->hash_key, sizeof(ss->hash_key));
    if (path) {
        ss->path = hs_strdup(path);
        load(ss);
    }
    return ss;
}

void wa__sessions_free(struct wa_sessions *ss)
{
    if (!ss)
        return;
    free(ss->path);
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

/* A free slot: an unused or expired one (not one whose made key is still to be expired),
 * else the least recently used. */
static struct session *free_slot(struct wa_sessions *ss, int64_t now)
{
    struct session *oldest = &ss->s[0];

    for (size_t i = 0; i < WA_MAX_SESSIONS; i++) {
        struct session *s = &ss->s[i];
        if (!s->used || (expired(ss, s, now) && !s->minted[0]))
            return s;
        if (s->last_used < oldest->last_used)
            oldest = s;
    }
    return oldest;
}

int wa__session_create(struct wa_sessions *ss, const char *api_key, bool minted,
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
    if (minted && hs_has_prefix(api_key, "hskey-api-") &&
        klen > strlen("hskey-api-") + WA_KEY_PREFIX_LEN)
        hs_strlcpy(s->minted, api_key + strlen("hskey-api-"), sizeof(s->minted));
    s->created = s->last_used = s->saved_use = now;
    s->used = true;
    save(ss);
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
        if (!s->minted[0]) /* else wa__sessions_sweep's */
            sodium_memzero(s, sizeof(*s));
        s = NULL;
    }
    if (s && crypto_secretbox_open_easy((uint8_t *)v->api_key, s->sealed, s->sealed_len,
                                        s->nonce, seal_key) == 0) {
        v->api_key[s->sealed_len - crypto_secretbox_MACBYTES] = '\0';
        memcpy(v->csrf, s->csrf, sizeof(v->csrf));
        memcpy(v->minted, s->minted, sizeof(v->minted));
        s->last_used = now;
        rc = 0;
        if (now - s->saved_use >= WA_SESSION_SAVE_EVERY_US) {
            s->saved_use = now;
            save(ss);
        }
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
    if ((s = find(ss, hash))) {
        sodium_memzero(s, sizeof(*s));
        save(ss);
    }
}

size_t wa__sessions_sweep(struct wa_sessions *ss, char (*prefixes)[WA_KEY_PREFIX_LEN + 1],
                          size_t max)
{
    int64_t now = hs_now_us();
    size_t n = 0;

    for (size_t i = 0; i < WA_MAX_SESSIONS && n < max; i++) {
        struct session *s = &ss->s[i];
        if (!s->used || !s->minted[0] || !expired(ss, s, now))
            continue;
        memcpy(prefixes[n++], s->minted, sizeof(s->minted));
        sodium_memzero(s, sizeof(*s));
    }
    if (n)
        save(ss);
    return n;
}

/* ---- the sessions file ----
 * Text, one record a line, fields split by one space, binary fields in base64 (URL-safe, no
 * padding):
 *   headscale-webadmin sessions 2
 *   key <hash_key>
 *   s <id_hash> <nonce> <sealed API key> <csrf> <created us> <last used us> <minted>
 * minted is the prefix of an API key made for the session, else "-"; version 1 files (read
 * too) end their lines before it. Only live sessions are written, and ended ones whose key
 * is still to be expired; a line that does not parse voids the whole file. */
#define FILE_MAGIC "headscale-webadmin sessions 2"
#define FILE_MAGIC_V1 "headscale-webadmin sessions 1"
#define FILE_MAX (WA_MAX_SESSIONS * 1024u)
#define FILE_FIELDS 8

static void put_b64(struct hs_buf *b, const uint8_t *p, size_t n)
{
    char text[sodium_base64_ENCODED_LEN(SEALED_MAX, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];

    sodium_bin2base64(text, sizeof(text), p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    hs_buf_appendf(b, " %s", text);
}

static void save(struct wa_sessions *ss)
{
    int64_t now = hs_now_us();
    struct hs_buf b;
    int rc;

    if (!ss->path)
        return;
    hs_buf_init(&b, FILE_MAX);
    hs_buf_puts(&b, FILE_MAGIC "\nkey");
    put_b64(&b, ss->hash_key, sizeof(ss->hash_key));
    for (size_t i = 0; i < WA_MAX_SESSIONS; i++) {
        const struct session *s = &ss->s[i];
        if (!s->used || (expired(ss, s, now) && !s->minted[0]))
            continue;
        hs_buf_puts(&b, "\ns");
        put_b64(&b, s->id_hash, sizeof(s->id_hash));
        put_b64(&b, s->nonce, sizeof(s->nonce));
        put_b64(&b, s->sealed, s->sealed_len);
        hs_buf_appendf(&b, " %s %" PRId64 " %" PRId64 " %s", s->csrf, s->created,
                       s->last_used, s->minted[0] ? s->minted : "-");
    }
    hs_buf_puts(&b, "\n");
    if ((rc = hs_write_file_atomic(ss->path, b.data, b.len, 0600)) < 0)
        log_warnx("webadmin: cannot write the sessions file %s: %s", ss->path, hs_strerror(rc));
    sodium_memzero(b.data, b.len);
    hs_buf_free(&b);
}

/* Splits line (NUL-terminated, changed) at single spaces into at most max fields. */
static size_t split(char *line, char **field, size_t max)
{
    size_t n = 0;

    while (line && n < max) {
        field[n++] = line;
        if ((line = strchr(line, ' ')))
            *line++ = '\0';
    }
    return line ? max + 1 : n;
}

/* base64 text of exactly want bytes (want 0: 1 to max bytes) into out; -EINVAL otherwise. */
static int get_b64(const char *text, uint8_t *out, size_t max, size_t want, size_t *len)
{
    size_t n;

    if (sodium_base642bin(out, max, text, strlen(text), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        (want && n != want) || n == 0)
        return -EINVAL;
    if (len)
        *len = n;
    return 0;
}

/* A session line of a file of version 2 (v1: of version 1). */
static int parse_session(char *line, bool v1, struct session *s)
{
    char *f[FILE_FIELDS];
    size_t n = v1 ? FILE_FIELDS - 1 : FILE_FIELDS;

    if (split(line, f, n) != n || strcmp(f[0], "s") != 0 ||
        (!v1 && strcmp(f[7], "-") != 0 && strlen(f[7]) != WA_KEY_PREFIX_LEN) ||
        get_b64(f[1], s->id_hash, sizeof(s->id_hash), sizeof(s->id_hash), NULL) < 0 ||
        get_b64(f[2], s->nonce, sizeof(s->nonce), sizeof(s->nonce), NULL) < 0 ||
        get_b64(f[3], s->sealed, sizeof(s->sealed), 0, &s->sealed_len) < 0 ||
        s->sealed_len <= crypto_secretbox_MACBYTES || strlen(f[4]) != WA_CSRF_LEN ||
        hs_parse_i64(f[5], &s->created) < 0 || hs_parse_i64(f[6], &s->last_used) < 0)
        return -EINVAL;
    memcpy(s->csrf, f[4], WA_CSRF_LEN + 1);
    if (!v1 && strcmp(f[7], "-") != 0)
        memcpy(s->minted, f[7], sizeof(s->minted));
    s->saved_use = s->last_used;
    s->used = true;
    return 0;
}

/* Reads the file's lines after the magic one into the table; -EINVAL at the first bad one. */
static int parse_file(struct wa_sessions *ss, char *text)
{
    char *line = text, *next, *f[2];
    size_t n = 0;
    int64_t now = hs_now_us();
    bool v1 = false;

    for (size_t i = 0; line && *line; i++, line = next) {
        if ((next = strchr(line, '\n')))
            *next++ = '\0';
        if (i == 0 && !(v1 = strcmp(line, FILE_MAGIC_V1) == 0) && strcmp(line, FILE_MAGIC) != 0)
            return -EINVAL;
        if (i == 1 && (split(line, f, 2) != 2 || strcmp(f[0], "key") != 0 ||
                       get_b64(f[1], ss->hash_key, sizeof(ss->hash_key), sizeof(ss->hash_key),
                               NULL) < 0))
            return -EINVAL;
        if (i < 2)
            continue;
        if (n == WA_MAX_SESSIONS || parse_session(line, v1, &ss->s[n]) < 0)
            return -EINVAL;
        if (expired(ss, &ss->s[n], now) && !ss->s[n].minted[0])
            sodium_memzero(&ss->s[n], sizeof(ss->s[n]));
        else
            n++;
    }
    return 0;
}

static void load(struct wa_sessions *ss)
{
    char *text = NULL;
    size_t len;
    int rc = hs_read_file(ss->path, FILE_MAX, &text, &len);

    if (rc == -ENOENT)
        return;
    if (rc == 0 && (strlen(text) != len || (rc = parse_file(ss, text)) < 0)) {
        rc = -EINVAL;
        memset(ss->s, 0, sizeof(ss->s));
        randombytes_buf(ss->hash_key, sizeof(ss->hash_key));
    }
    if (rc < 0)
        log_warnx("webadmin: the sessions file %s is unreadable or malformed (%s): everyone "
                  "signs in again", ss->path, hs_strerror(rc));
    if (text)
        sodium_memzero(text, len);
    free(text);
}
