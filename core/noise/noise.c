#include <openssl/evp.h>
#include <sodium.h>
#include <string.h>

#include "noise/noise.h"
#include "util/util.h"

#define HASH_LEN 32
#define BLOCK_LEN 64

static const char protocol_name[] = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
static const char prologue_prefix[] = "Tailscale Control Protocol v";

struct symmetric {
    uint8_t h[HASH_LEN];
    uint8_t ck[HASH_LEN];
};

int noise_blake2s(const uint8_t *in, size_t len, uint8_t out[32])
{
    static EVP_MD *md; /* fetched once; OpenSSL's fetch is thread-safe */
    unsigned outlen = HASH_LEN;

    if (!md && !(md = EVP_MD_fetch(NULL, "BLAKE2S-256", NULL)))
        return -ENOSYS;
    return EVP_Digest(in, len, out, &outlen, md, NULL) == 1 ? 0 : -EIO;
}

/* BLAKE2s over two pieces without copying into one buffer. */
static int blake2s_2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                     uint8_t out[HASH_LEN])
{
    uint8_t buf[BLOCK_LEN + 256];
    if (alen + blen > sizeof(buf))
        return -E2BIG;
    memcpy(buf, a, alen);
    if (blen) /* b may be NULL for the empty input of Split() */
        memcpy(buf + alen, b, blen);
    return noise_blake2s(buf, alen + blen, out);
}

/* HMAC-BLAKE2s (RFC 2104, block 64); keys here are always <= 32 bytes. */
static int hmac(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t msglen,
                uint8_t out[HASH_LEN])
{
    uint8_t pad[BLOCK_LEN], inner[HASH_LEN];
    int rc;

    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < keylen; i++)
        pad[i] ^= key[i];
    if ((rc = blake2s_2(pad, BLOCK_LEN, msg, msglen, inner)) < 0)
        return rc;
    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < keylen; i++)
        pad[i] ^= key[i];
    rc = blake2s_2(pad, BLOCK_LEN, inner, HASH_LEN, out);
    sodium_memzero(pad, sizeof(pad));
    sodium_memzero(inner, sizeof(inner));
    return rc;
}

/* Noise HKDF with two outputs. */
static int hkdf2(const uint8_t ck[HASH_LEN], const uint8_t *ikm, size_t ikmlen,
                 uint8_t out1[HASH_LEN], uint8_t out2[HASH_LEN])
{
    uint8_t prk[HASH_LEN], buf[HASH_LEN + 1];
    static const uint8_t one = 1;
    int rc;

    if ((rc = hmac(ck, HASH_LEN, ikm, ikmlen, prk)) < 0 ||
        (rc = hmac(prk, HASH_LEN, &one, 1, out1)) < 0)
        goto out;
    memcpy(buf, out1, HASH_LEN);
    buf[HASH_LEN] = 2;
    rc = hmac(prk, HASH_LEN, buf, sizeof(buf), out2);
out:
    sodium_memzero(prk, sizeof(prk));
    sodium_memzero(buf, sizeof(buf));
    return rc;
}

static int mix_hash(struct symmetric *s, const uint8_t *data, size_t len)
{
    return blake2s_2(s->h, HASH_LEN, data, len, s->h);
}

/* DH, then (ck, k) = HKDF(ck, dh). A low-order point gives an all-zero secret: refused. */
static int mix_dh(struct symmetric *s, const uint8_t priv[32], const uint8_t pub[32],
                  uint8_t k[32])
{
    uint8_t dh[32];
    int rc;

    if (crypto_scalarmult(dh, priv, pub) != 0)
        return -EACCES;
    rc = hkdf2(s->ck, dh, sizeof(dh), s->ck, k);
    sodium_memzero(dh, sizeof(dh));
    return rc;
}

static const uint8_t zero_nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];

/* Handshake AEADs: each key is used once, so the nonce is always zero; AD is h. */
static int decrypt_and_hash(struct symmetric *s, const uint8_t k[32], const uint8_t *ct,
                            size_t ctlen, uint8_t *pt)
{
    unsigned long long ptlen;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, &ptlen, NULL, ct, ctlen, s->h, HASH_LEN,
                                                  zero_nonce, k) != 0)
        return -EACCES;
    return mix_hash(s, ct, ctlen);
}

static int encrypt_and_hash(struct symmetric *s, const uint8_t k[32], const uint8_t *pt,
                            size_t ptlen, uint8_t *ct)
{
    unsigned long long ctlen;
    crypto_aead_chacha20poly1305_ietf_encrypt(ct, &ctlen, pt, ptlen, s->h, HASH_LEN, NULL,
                                              zero_nonce, k);
    return mix_hash(s, ct, ctlen);
}

static int symmetric_init(struct symmetric *s, uint16_t version, const uint8_t server_pub[32])
{
    char prologue[64];
    int n, rc;

    if ((rc = noise_blake2s((const uint8_t *)protocol_name, sizeof(protocol_name) - 1, s->h)))
        return rc;
    memcpy(s->ck, s->h, HASH_LEN);
    n = snprintf(prologue, sizeof(prologue), "%s%u", prologue_prefix, version);
    if ((rc = mix_hash(s, (const uint8_t *)prologue, (size_t)n)) < 0)
        return rc;
    return mix_hash(s, server_pub, KEY_LEN);
}

/* Message 1 (-> e, es, s, ss): yields the client's ephemeral and static keys. */
static int read_initiation(struct symmetric *s, const struct key_pair *server,
                           const uint8_t *msg, uint8_t e[32], uint8_t peer_static[32])
{
    uint8_t k[32], empty[1];
    int rc;

    memcpy(e, msg + 5, 32);
    if ((rc = mix_hash(s, e, 32)) < 0 || (rc = mix_dh(s, server->priv, e, k)) < 0 ||
        (rc = decrypt_and_hash(s, k, msg + 37, 48, peer_static)) < 0 ||
        (rc = mix_dh(s, server->priv, peer_static, k)) < 0)
        goto out;
    rc = decrypt_and_hash(s, k, msg + 85, NOISE_TAG_LEN, empty);
out:
    sodium_memzero(k, sizeof(k));
    return rc;
}

/* Message 2 (<- e, ee, se), then Split(). */
static int write_response(struct symmetric *s, const uint8_t e[32], const uint8_t peer[32],
                          struct noise_handshake_result *out)
{
    struct key_pair eph;
    uint8_t k[32], unused[32];
    int rc;

    keys_generate(&eph);
    out->response[0] = 2;
    out->response[1] = 0;
    out->response[2] = 48;
    memcpy(out->response + 3, eph.pub, 32);
    if ((rc = mix_hash(s, eph.pub, 32)) < 0 || (rc = mix_dh(s, eph.priv, e, unused)) < 0 ||
        (rc = mix_dh(s, eph.priv, peer, k)) < 0 ||
        (rc = encrypt_and_hash(s, k, NULL, 0, out->response + 35)) < 0)
        goto out;
    /* Split: the initiator sends with the first key, so the server receives with it. */
    rc = hkdf2(s->ck, NULL, 0, out->transport.rx_key, out->transport.tx_key);
out:
    sodium_memzero(&eph, sizeof(eph));
    sodium_memzero(k, sizeof(k));
    sodium_memzero(unused, sizeof(unused));
    return rc;
}

int noise_accept(const struct key_pair *server, const uint8_t *msg, size_t len,
                 struct noise_handshake_result *out)
{
    struct symmetric s;
    uint8_t e[32];
    int rc;

    if (len != NOISE_INIT_LEN || msg[2] != 1 || msg[3] != 0 || msg[4] != 96)
        return -EINVAL;
    *out = (struct noise_handshake_result){ .version = (uint16_t)(msg[0] << 8 | msg[1]) };
    if ((rc = symmetric_init(&s, out->version, server->pub)) < 0 ||
        (rc = read_initiation(&s, server, msg, e, out->peer_static)) < 0 ||
        (rc = write_response(&s, e, out->peer_static, out)) < 0)
        sodium_memzero(out, sizeof(*out));
    sodium_memzero(&s, sizeof(s));
    return rc;
}

static void transport_nonce(uint64_t counter, uint8_t nonce[12])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(counter >> (56 - 8 * i));
}

ssize_t noise_seal(struct noise_transport *t, const uint8_t *pt, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    unsigned long long ctlen;
    size_t flen = len + NOISE_TAG_LEN;

    if (len > NOISE_MAX_PLAINTEXT)
        return -E2BIG;
    if (t->tx_nonce == UINT64_MAX)
        return -ERANGE;
    transport_nonce(t->tx_nonce++, nonce);
    out[0] = NOISE_MSG_RECORD;
    out[1] = (uint8_t)(flen >> 8);
    out[2] = (uint8_t)flen;
    crypto_aead_chacha20poly1305_ietf_encrypt(out + NOISE_HDR_LEN, &ctlen, pt, len, NULL, 0,
                                              NULL, nonce, t->tx_key);
    return (ssize_t)(NOISE_HDR_LEN + ctlen);
}

ssize_t noise_frame_len(const uint8_t *buf, size_t len)
{
    size_t flen;

    if (len < NOISE_HDR_LEN)
        return -EAGAIN;
    flen = (size_t)buf[1] << 8 | buf[2];
    if (buf[0] != NOISE_MSG_RECORD || flen < NOISE_TAG_LEN ||
        NOISE_HDR_LEN + flen > NOISE_MAX_FRAME)
        return -EINVAL;
    if (len < NOISE_HDR_LEN + flen)
        return -EAGAIN;
    return (ssize_t)(NOISE_HDR_LEN + flen);
}

int noise_open(struct noise_transport *t, uint8_t *frame, size_t frame_len, uint8_t **pt,
               size_t *pt_len)
{
    uint8_t nonce[12];
    unsigned long long n;

    if (t->rx_nonce == UINT64_MAX)
        return -ERANGE;
    transport_nonce(t->rx_nonce, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(frame + NOISE_HDR_LEN, &n, NULL,
                                                  frame + NOISE_HDR_LEN,
                                                  frame_len - NOISE_HDR_LEN, NULL, 0, nonce,
                                                  t->rx_key) != 0)
        return -EACCES;
    t->rx_nonce++;
    *pt = frame + NOISE_HDR_LEN;
    *pt_len = (size_t)n;
    return 0;
}

size_t noise_error_frame(const char *msg, uint8_t *out, size_t size)
{
    size_t n = strlen(msg);
    if (n > size - NOISE_HDR_LEN)
        n = size - NOISE_HDR_LEN;
    if (n > 0xffff)
        n = 0xffff;
    out[0] = NOISE_MSG_ERROR;
    out[1] = (uint8_t)(n >> 8);
    out[2] = (uint8_t)n;
    memcpy(out + NOISE_HDR_LEN, msg, n);
    return NOISE_HDR_LEN + n;
}

void noise_transport_wipe(struct noise_transport *t)
{
    sodium_memzero(t, sizeof(*t));
}
