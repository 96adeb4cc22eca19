/* The responder against an initiator written here from the Noise spec (IK, BLAKE2s,
 * ChaChaPoly, Tailscale's prologue and big-endian transport nonces), plus every way a
 * handshake or record can be malformed. The real client proves the wire format end to end
 * in tests/system/test_tailnet.py. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "noise/noise.h"

struct sym { uint8_t h[32], ck[32]; };

static void hash2(const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[32])
{
    uint8_t buf[512];
    memcpy(buf, a, an);
    if (bn)
        memcpy(buf + an, b, bn);
    cr_assert_eq(noise_blake2s(buf, an + bn, out), 0);
}

static void hmac(const uint8_t key[32], const uint8_t *m, size_t n, uint8_t out[32])
{
    uint8_t pad[64], inner[32];
    memset(pad, 0x36, 64);
    for (int i = 0; i < 32; i++) pad[i] ^= key[i];
    hash2(pad, 64, m, n, inner);
    memset(pad, 0x5c, 64);
    for (int i = 0; i < 32; i++) pad[i] ^= key[i];
    hash2(pad, 64, inner, 32, out);
}

static void hkdf(const uint8_t ck[32], const uint8_t *ikm, size_t n, uint8_t o1[32], uint8_t o2[32])
{
    uint8_t prk[32], one = 1, buf[33];
    hmac(ck, ikm, n, prk);
    hmac(prk, &one, 1, o1);
    memcpy(buf, o1, 32);
    buf[32] = 2;
    hmac(prk, buf, 33, o2);
}

static void mix_hash(struct sym *s, const uint8_t *d, size_t n) { hash2(s->h, 32, d, n, s->h); }

static void mix_dh(struct sym *s, const uint8_t priv[32], const uint8_t pub[32], uint8_t k[32])
{
    uint8_t dh[32];
    cr_assert_eq(crypto_scalarmult(dh, priv, pub), 0);
    hkdf(s->ck, dh, 32, s->ck, k);
}

static const uint8_t zn[12];

/* Builds the 101-byte initiation; leaves the state for reading the response. */
static void initiate(struct sym *s, const struct key_pair *client, const struct key_pair *eph,
                     const uint8_t server_pub[32], uint16_t version, uint8_t msg[101])
{
    char prologue[64];
    uint8_t k[32];
    unsigned long long clen;
    int n = snprintf(prologue, sizeof(prologue), "Tailscale Control Protocol v%u", version);

    cr_assert_eq(noise_blake2s((const uint8_t *)"Noise_IK_25519_ChaChaPoly_BLAKE2s", 33, s->h), 0);
    memcpy(s->ck, s->h, 32);
    mix_hash(s, (const uint8_t *)prologue, (size_t)n);
    mix_hash(s, server_pub, 32);
    msg[0] = (uint8_t)(version >> 8);
    msg[1] = (uint8_t)version;
    msg[2] = 1;
    msg[3] = 0;
    msg[4] = 96;
    memcpy(msg + 5, eph->pub, 32);
    mix_hash(s, eph->pub, 32);
    mix_dh(s, eph->priv, server_pub, k);
    crypto_aead_chacha20poly1305_ietf_encrypt(msg + 37, &clen, client->pub, 32, s->h, 32, NULL, zn, k);
    mix_hash(s, msg + 37, 48);
    mix_dh(s, client->priv, server_pub, k);
    crypto_aead_chacha20poly1305_ietf_encrypt(msg + 85, &clen, NULL, 0, s->h, 32, NULL, zn, k);
    mix_hash(s, msg + 85, 16);
}

/* Reads the response; returns the client's (tx, rx) keys. */
static void finish(struct sym *s, const struct key_pair *client, const struct key_pair *eph,
                   const uint8_t resp[51], uint8_t tx[32], uint8_t rx[32])
{
    uint8_t k[32], unused[32], pt[1];
    unsigned long long n;

    cr_assert_eq(resp[0], 2);
    mix_hash(s, resp + 3, 32);
    mix_dh(s, eph->priv, resp + 3, unused);
    mix_dh(s, client->priv, resp + 3, k);
    cr_assert_eq(crypto_aead_chacha20poly1305_ietf_decrypt(pt, &n, NULL, resp + 35, 16, s->h, 32,
                                                            zn, k), 0, "response tag");
    hkdf(s->ck, NULL, 0, tx, rx);
}

static void keypair(struct key_pair *kp) { keys_generate(kp); }

Test(noise, handshake_and_records)
{
    struct key_pair server, client, eph;
    struct noise_handshake_result res;
    struct sym s;
    uint8_t msg[101], tx[32], rx[32], frame[200], *pt;
    size_t ptlen;

    keypair(&server); keypair(&client); keypair(&eph);
    initiate(&s, &client, &eph, server.pub, 113, msg);
    cr_assert_eq(noise_accept(&server, msg, sizeof(msg), &res), 0);
    cr_assert_eq(res.version, 113);
    cr_assert(memcmp(res.peer_static, client.pub, 32) == 0);
    finish(&s, &client, &eph, res.response, tx, rx);
    cr_assert(memcmp(tx, res.transport.rx_key, 32) == 0);
    cr_assert(memcmp(rx, res.transport.tx_key, 32) == 0);

    /* Server → client records use big-endian counters; check the second one too. */
    for (uint64_t i = 0; i < 2; i++) {
        uint8_t nonce[12] = { 0 }, out[64];
        unsigned long long n;
        ssize_t flen = noise_seal(&res.transport, (const uint8_t *)"hello", 5, frame);
        cr_assert_eq(flen, 3 + 5 + 16);
        nonce[11] = (uint8_t)i;
        cr_assert_eq(crypto_aead_chacha20poly1305_ietf_decrypt(out, &n, NULL, frame + 3, 21, NULL, 0,
                                                                nonce, rx), 0);
        cr_assert(memcmp(out, "hello", 5) == 0);
    }
    /* Client → server. */
    {
        uint8_t nonce[12] = { 0 };
        unsigned long long clen;
        frame[0] = 4;
        frame[1] = 0;
        frame[2] = 5 + 16;
        crypto_aead_chacha20poly1305_ietf_encrypt(frame + 3, &clen, (const uint8_t *)"world", 5,
                                                  NULL, 0, NULL, nonce, tx);
        cr_assert_eq(noise_frame_len(frame, 10), -EAGAIN);
        cr_assert_eq(noise_frame_len(frame, 24), 24);
        cr_assert_eq(noise_open(&res.transport, frame, 24, &pt, &ptlen), 0);
        cr_assert_eq(ptlen, 5);
        cr_assert(memcmp(pt, "world", 5) == 0);
        /* A replay fails: the counter moved on. */
        crypto_aead_chacha20poly1305_ietf_encrypt(frame + 3, &clen, (const uint8_t *)"world", 5,
                                                  NULL, 0, NULL, nonce, tx);
        cr_assert_eq(noise_open(&res.transport, frame, 24, &pt, &ptlen), -EACCES);
    }
}

Test(noise, rejects_bad_initiations)
{
    struct key_pair server, other, client, eph;
    struct noise_handshake_result res;
    struct sym s;
    uint8_t msg[101], bad[101];

    keypair(&server); keypair(&other); keypair(&client); keypair(&eph);
    initiate(&s, &client, &eph, server.pub, 113, msg);
    cr_assert_eq(noise_accept(&server, msg, 100, &res), -EINVAL, "truncated");
    memcpy(bad, msg, 101);
    bad[2] = 2;
    cr_assert_eq(noise_accept(&server, bad, 101, &res), -EINVAL, "wrong type");
    memcpy(bad, msg, 101);
    bad[4] = 95;
    cr_assert_eq(noise_accept(&server, bad, 101, &res), -EINVAL, "wrong length");
    memcpy(bad, msg, 101);
    bad[50] ^= 1;
    cr_assert_eq(noise_accept(&server, bad, 101, &res), -EACCES, "tampered static key");
    memcpy(bad, msg, 101);
    bad[1] ^= 1;
    cr_assert_eq(noise_accept(&server, bad, 101, &res), -EACCES, "prologue mismatch");
    cr_assert_eq(noise_accept(&other, msg, 101, &res), -EACCES, "sealed for another server");
    memcpy(bad, msg, 101);
    memset(bad + 5, 0, 32); /* low-order ephemeral point */
    cr_assert_eq(noise_accept(&server, bad, 101, &res), -EACCES);
}

Test(noise, frame_limits)
{
    uint8_t f[8] = { 4, 0x10, 0x00 }; /* 4096 + 3 > max */
    cr_assert_eq(noise_frame_len(f, 3), -EINVAL);
    f[0] = 3;
    f[1] = 0;
    f[2] = 20;
    cr_assert_eq(noise_frame_len(f, 3), -EINVAL, "error frames are not records");
    f[0] = 4;
    f[2] = 15;
    cr_assert_eq(noise_frame_len(f, 3), -EINVAL, "shorter than a tag");
    cr_assert_eq(noise_frame_len(f, 2), -EAGAIN);
}
