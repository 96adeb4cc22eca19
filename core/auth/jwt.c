/* JSON Web Tokens as OpenID Connect uses them: compact JWS (RFC 7515) signed with RS256 or
 * ES256, keys published as a JWK Set (RFC 7517). The verifier checks the signature only; the
 * claims (iss, aud, exp, nonce) are oidc.c's. The signer serves `headscale mockoidc`. */
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define JWT_MAX_PART 8192     /* bytes of a decoded header or signature we look at */
#define JWT_MAX_KEY_BYTES 1024 /* an RSA modulus of 8192 bits */

static void set_err(char *err, size_t size, const char *fmt, const char *arg)
{
    if (err && size)
        snprintf(err, size, fmt, arg ? arg : "");
}

char *auth_b64url(const uint8_t *in, size_t n)
{
    size_t len = sodium_base64_encoded_len(n, B64URL);
    char *out = hs_xmalloc(len);

    sodium_bin2base64(out, len, in, n, B64URL);
    return out;
}

/* Decodes at most max bytes of base64url (no padding) into a new buffer. */
static int b64url_decode(const char *in, size_t len, size_t max, uint8_t **out, size_t *n)
{
    uint8_t *buf;

    if (len / 4 * 3 + 3 > max)
        return -E2BIG;
    buf = hs_xmalloc(len / 4 * 3 + 3);
    if (sodium_base642bin(buf, len / 4 * 3 + 3, in, len, NULL, n, NULL, B64URL) != 0) {
        free(buf);
        return -EINVAL;
    }
    *out = buf;
    return 0;
}

static json_t *b64url_json(const char *in, size_t len)
{
    uint8_t *raw;
    size_t n;
    json_t *j;

    if (b64url_decode(in, len, AUTH_JWT_MAX, &raw, &n) < 0)
        return NULL;
    j = hs_json_load((const char *)raw, n, AUTH_JWT_MAX, NULL, 0);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* A JWK member (base64url big-endian integer or point coordinate) as bytes. */
static int jwk_bytes(const json_t *jwk, const char *name, uint8_t **out, size_t *n)
{
    const char *s = hs_json_str(jwk, name);

    return s ? b64url_decode(s, strlen(s), JWT_MAX_KEY_BYTES, out, n) : -EINVAL;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *key = NULL;

    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        key = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return key;
}

static EVP_PKEY *jwk_rsa(const json_t *jwk)
{
    uint8_t *n = NULL, *e = NULL;
    size_t nlen, elen;
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *key = NULL;

    if (jwk_bytes(jwk, "n", &n, &nlen) < 0 || jwk_bytes(jwk, "e", &e, &elen) < 0)
        goto out;
    bn = BN_bin2bn(n, (int)nlen, NULL);
    be = BN_bin2bn(e, (int)elen, NULL);
    /* Under 2048 bits is forgeable with enough effort: such a provider is refused. */
    if (!bn || !be || BN_num_bits(bn) < 2048 || !(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        goto out;
    key = pkey_fromdata("RSA", bld);
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return key;
}

static EVP_PKEY *jwk_p256(const json_t *jwk)
{
    uint8_t *x = NULL, *y = NULL, point[65];
    size_t xlen = 0, ylen = 0;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *key = NULL;

    if (!hs_streq(hs_json_str(jwk, "crv"), "P-256") || jwk_bytes(jwk, "x", &x, &xlen) < 0 ||
        jwk_bytes(jwk, "y", &y, &ylen) < 0 || xlen != 32 || ylen != 32)
        goto out;
    point[0] = 0x04; /* uncompressed: x || y */
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    if (!(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
        goto out;
    key = pkey_fromdata("EC", bld);
out:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return key;
}

/* The key of jwks whose kid is kid (any key of the right type when the token names none). */
static EVP_PKEY *jwks_find(const json_t *jwks, const char *kid, const char *kty)
{
    const json_t *k;
    size_t i;

    json_array_foreach(json_object_get(jwks, "keys"), i, k) {
        const char *use = hs_json_str(k, "use");
        if (!hs_streq(hs_json_str(k, "kty"), kty) || (use && strcmp(use, "sig") != 0))
            continue;
        if (kid && !hs_streq(hs_json_str(k, "kid"), kid))
            continue;
        return strcmp(kty, "RSA") == 0 ? jwk_rsa(k) : jwk_p256(k);
    }
    return NULL;
}

/* JWS ES256 signatures are r || s (32 bytes each); OpenSSL wants DER. */
static int es256_der(const uint8_t *sig, size_t len, uint8_t **der, size_t *derlen)
{
    ECDSA_SIG *s;
    BIGNUM *r, *ss;
    int n;

    if (len != 64 || !(s = ECDSA_SIG_new()))
        return -EINVAL;
    r = BN_bin2bn(sig, 32, NULL);
    ss = BN_bin2bn(sig + 32, 32, NULL);
    if (!r || !ss || !ECDSA_SIG_set0(s, r, ss)) {
        BN_free(r);
        BN_free(ss);
        ECDSA_SIG_free(s);
        return -EINVAL;
    }
    *der = NULL;
    n = i2d_ECDSA_SIG(s, der);
    ECDSA_SIG_free(s);
    if (n <= 0)
        return -EINVAL;
    *derlen = (size_t)n;
    return 0;
}

static bool signature_ok(EVP_PKEY *key, bool ec, const char *signed_part, size_t signed_len,
                         const uint8_t *sig, size_t siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *der = NULL;
    bool ok = false;

    if (ec && es256_der(sig, siglen, &der, &siglen) < 0)
        goto out;
    ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
         EVP_DigestVerify(md, der ? der : sig, siglen, (const uint8_t *)signed_part,
                          signed_len) == 1;
out:
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    return ok;
}

/* Splits header.payload.signature; every part non-empty. */
static int jwt_split(const char *token, size_t len, const char *dot[2])
{
    const char *end = token + len;

    if (!(dot[0] = memchr(token, '.', len)) ||
        !(dot[1] = memchr(dot[0] + 1, '.', (size_t)(end - dot[0] - 1))) ||
        memchr(dot[1] + 1, '.', (size_t)(end - dot[1] - 1)) || dot[0] == token ||
        dot[1] == dot[0] + 1 || dot[1] + 1 == end)
        return -EINVAL;
    return 0;
}

int auth_jwt_verify(const char *token, const json_t *jwks, json_t **claims, char *err,
                    size_t errsize)
{
    size_t len = token ? strlen(token) : 0, siglen;
    const char *dot[2], *alg;
    json_t *hdr = NULL, *body = NULL;
    uint8_t *sig = NULL;
    EVP_PKEY *key = NULL;
    bool ec;
    int rc = -EINVAL;

    if (len > AUTH_JWT_MAX) {
        set_err(err, errsize, "the token is longer than %s bytes", "16384");
        return -E2BIG;
    }
    if (jwt_split(token, len, dot) < 0 || !(hdr = b64url_json(token, (size_t)(dot[0] - token)))) {
        set_err(err, errsize, "the token is not a signed JWT%s", NULL);
        goto out;
    }
    alg = hs_json_str(hdr, "alg");
    ec = hs_streq(alg, "ES256");
    if (!ec && !hs_streq(alg, "RS256")) {
        set_err(err, errsize, "the token's algorithm %.32s is not RS256 or ES256", alg ? alg : "?");
        rc = -ENOTSUP;
        goto out;
    }
    if (!(key = jwks_find(jwks, hs_json_str(hdr, "kid"), ec ? "EC" : "RSA"))) {
        set_err(err, errsize, "the provider's key set has no usable key %.64s",
                hs_json_str(hdr, "kid"));
        rc = -ENOKEY;
        goto out;
    }
    if (b64url_decode(dot[1] + 1, (size_t)(token + len - dot[1] - 1), JWT_MAX_PART, &sig,
                      &siglen) < 0 ||
        !signature_ok(key, ec, token, (size_t)(dot[1] - token), sig, siglen)) {
        set_err(err, errsize, "the token's signature does not verify%s", NULL);
        rc = -EBADMSG;
        goto out;
    }
    if (!(body = b64url_json(dot[0] + 1, (size_t)(dot[1] - dot[0] - 1)))) {
        set_err(err, errsize, "the token's claims are not a JSON object%s", NULL);
        goto out;
    }
    *claims = body;
    rc = 0;
out:
    EVP_PKEY_free(key);
    free(sig);
    json_decref(hdr);
    return rc;
}

/* ---- signing (the mock provider) ---- */

static char *json_b64url(const json_t *j)
{
    char *text = hs_json_dump(j, JSON_COMPACT);
    char *out = auth_b64url((const uint8_t *)text, strlen(text));

    free(text);
    return out;
}

int auth_jwt_sign_rs256(EVP_PKEY *key, const char *kid, const json_t *claims, char **out)
{
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "kid", kid);
    char *h = json_b64url(hdr), *c = json_b64url(claims), *sig_text = NULL;
    struct hs_buf tok;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t sig[1024];
    size_t siglen = sizeof(sig);
    int rc = -EIO;

    hs_buf_init(&tok, AUTH_JWT_MAX);
    hs_buf_appendf(&tok, "%s.%s", h, c);
    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(md, sig, &siglen, (uint8_t *)tok.data, tok.len) == 1) {
        sig_text = auth_b64url(sig, siglen);
        if (hs_buf_appendf(&tok, ".%s", sig_text) == 0) {
            *out = hs_buf_steal(&tok);
            rc = 0;
        }
    }
    free(sig_text);
    hs_buf_free(&tok);
    EVP_MD_CTX_free(md);
    free(h);
    free(c);
    json_decref(hdr);
    return rc;
}

static char *bn_b64url(const EVP_PKEY *key, const char *name)
{
    BIGNUM *bn = NULL;
    uint8_t buf[JWT_MAX_KEY_BYTES];
    char *out = NULL;
    int n;

    if (EVP_PKEY_get_bn_param(key, name, &bn) == 1 && (n = BN_num_bytes(bn)) <= (int)sizeof(buf)) {
        BN_bn2bin(bn, buf);
        out = auth_b64url(buf, (size_t)n);
    }
    BN_free(bn);
    return out;
}

json_t *auth_jwk_rsa_public(const EVP_PKEY *key, const char *kid)
{
    char *n = bn_b64url(key, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64url(key, OSSL_PKEY_PARAM_RSA_E);
    json_t *jwk = NULL;

    if (n && e)
        jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "use", "sig", "alg",
                        "RS256", "kid", kid, "n", n, "e", e);
    free(n);
    free(e);
    return jwk;
}

char *auth_jwk_kid(EVP_PKEY *key)
{
    uint8_t *der = NULL, hash[crypto_hash_sha256_BYTES];
    int n = i2d_PUBKEY(key, &der);
    char *kid;

    if (n <= 0)
        return NULL;
    crypto_hash_sha256(hash, der, (size_t)n);
    OPENSSL_free(der);
    kid = auth_b64url(hash, sizeof(hash));
    return kid;
}
