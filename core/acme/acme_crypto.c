/* The cryptography of ACME: the account key as a JWK and its thumbprint, ES256-signed JWS
 * requests, the CSR, and the TLS-ALPN-01 certificate. Keys are ECDSA P-256 throughout (as
 * autocert's). */
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "acme/acme_internal.h"

#define P256_COORD 32
#define ALPN_CERT_DAYS 7
#define OID_ACME_IDENTIFIER "1.3.6.1.5.5.7.1.31" /* RFC 8737 §6.1 */

int acme__b64url(const void *data, size_t n, struct hs_buf *out)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *s = hs_xmalloc(cap);
    int rc;

    sodium_bin2base64(s, cap, data, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    rc = hs_buf_puts(out, s);
    free(s);
    return rc;
}

EVP_PKEY *acme__key_new(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");

    if (!k)
        ERR_clear_error();
    return k;
}

/* Everything a BIO holds, appended to out. */
static int bio_drain(BIO *bio, struct hs_buf *out)
{
    char *p;
    long n = BIO_get_mem_data(bio, &p);

    return n < 0 ? -EIO : hs_buf_append(out, p, (size_t)n);
}

int acme__key_pem(EVP_PKEY *key, struct hs_buf *out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = -ENOMEM;

    if (bio && PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0, NULL, NULL) == 1)
        rc = bio_drain(bio, out);
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}

EVP_PKEY *acme__key_parse(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);
    ERR_clear_error();
    if (k && !EVP_PKEY_is_a(k, "EC")) {
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* The public point of a P-256 key, each coordinate base64url-encoded. */
static int public_xy(EVP_PKEY *key, struct hs_buf *x, struct hs_buf *y)
{
    const char *names[2] = { OSSL_PKEY_PARAM_EC_PUB_X, OSSL_PKEY_PARAM_EC_PUB_Y };
    struct hs_buf *outs[2] = { x, y };
    uint8_t raw[P256_COORD];
    int rc = 0;

    for (int i = 0; i < 2 && rc == 0; i++) {
        BIGNUM *bn = NULL;
        if (EVP_PKEY_get_bn_param(key, names[i], &bn) != 1 ||
            BN_bn2binpad(bn, raw, sizeof(raw)) != sizeof(raw))
            rc = -EINVAL;
        else
            rc = acme__b64url(raw, sizeof(raw), outs[i]);
        BN_free(bn);
    }
    ERR_clear_error();
    return rc;
}

/* RFC 7638 §3: the required members in lexicographic order, no white space. */
static int jwk_text(EVP_PKEY *key, struct hs_buf *out)
{
    struct hs_buf x, y;
    int rc;

    hs_buf_init(&x, 64);
    hs_buf_init(&y, 64);
    if ((rc = public_xy(key, &x, &y)) == 0)
        rc = hs_buf_appendf(out, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                            x.data, y.data);
    hs_buf_free(&x);
    hs_buf_free(&y);
    return rc;
}

int acme__thumbprint(EVP_PKEY *key, char out[ACME_THUMB_LEN + 1])
{
    uint8_t digest[crypto_hash_sha256_BYTES];
    struct hs_buf jwk, b64;
    int rc;

    hs_buf_init(&jwk, 256);
    hs_buf_init(&b64, 64);
    if ((rc = jwk_text(key, &jwk)) == 0) {
        crypto_hash_sha256(digest, (const uint8_t *)jwk.data, jwk.len);
        if ((rc = acme__b64url(digest, sizeof(digest), &b64)) == 0)
            memcpy(out, b64.data, ACME_THUMB_LEN + 1);
    }
    hs_buf_free(&jwk);
    hs_buf_free(&b64);
    return rc;
}

/* ES256 (RFC 7518 §3.4): the signature is r and s, 32 bytes each, not DER. */
static int es256_sign(EVP_PKEY *key, const char *input, size_t len, uint8_t sig[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t der[80];
    const uint8_t *p = der;
    size_t derlen = sizeof(der);
    ECDSA_SIG *es = NULL;
    const BIGNUM *r, *s;
    int rc = -EIO;

    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(md, der, &derlen, (const uint8_t *)input, len) == 1 &&
        (es = d2i_ECDSA_SIG(NULL, &p, (long)derlen))) {
        ECDSA_SIG_get0(es, &r, &s);
        if (BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32)
            rc = 0;
    }
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return rc;
}

/* The protected header: the key by kid once the account exists, by jwk before. */
static int protected_header(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                            struct hs_buf *out)
{
    json_t *h = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", nonce, "url", url);
    struct hs_buf jwk;
    char *text;
    int rc = 0;

    if (!h)
        return -EINVAL;
    hs_buf_init(&jwk, 256);
    if (kid)
        json_object_set_new(h, "kid", json_string(kid));
    else if ((rc = jwk_text(key, &jwk)) == 0)
        json_object_set_new(h, "jwk", json_loads(jwk.data, 0, NULL));
    if (rc == 0) {
        text = hs_json_dump(h, JSON_COMPACT);
        rc = acme__b64url(text, strlen(text), out);
        free(text);
    }
    hs_buf_free(&jwk);
    json_decref(h);
    return rc;
}

int acme__jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
              const char *payload, struct hs_buf *out)
{
    struct hs_buf signing;
    uint8_t sig[64];
    size_t dot;
    int rc;

    hs_buf_init(&signing, ACME_MAX_BODY);
    if ((rc = protected_header(key, kid, nonce, url, &signing)) < 0)
        goto out;
    dot = signing.len;
    if ((rc = hs_buf_puts(&signing, ".")) < 0 ||
        (payload && (rc = acme__b64url(payload, strlen(payload), &signing)) < 0) ||
        (rc = es256_sign(key, signing.data, signing.len, sig)) < 0)
        goto out;
    signing.data[dot] = '\0'; /* the header and the payload apart again */
    rc = hs_buf_appendf(out, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"",
                        signing.data, signing.data + dot + 1);
    if (rc == 0 && (rc = acme__b64url(sig, sizeof(sig), out)) == 0)
        rc = hs_buf_puts(out, "\"}");
out:
    hs_buf_free(&signing);
    return rc;
}

/* subjectAltName dNSName host, on a request or certificate. */
static X509_EXTENSION *san_ext(const char *host)
{
    char *v = hs_aprintf("DNS:%s", host);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, v);

    free(v);
    return e;
}

static X509_NAME *cn_name(const char *host)
{
    X509_NAME *n = X509_NAME_new();

    if (n && X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const uint8_t *)host, -1, -1,
                                        0) != 1) {
        X509_NAME_free(n);
        return NULL;
    }
    return n;
}

int acme__csr(EVP_PKEY *key, const char *host, struct hs_buf *out)
{
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *san = san_ext(host);
    X509_NAME *name = cn_name(host);
    uint8_t *der = NULL;
    int len = -1, rc = -EIO;

    if (req && exts && san && name && sk_X509_EXTENSION_push(exts, san) > 0) {
        san = NULL; /* the stack has it */
        if (X509_REQ_set_version(req, 0) == 1 && X509_REQ_set_subject_name(req, name) == 1 &&
            X509_REQ_add_extensions(req, exts) == 1 && X509_REQ_set_pubkey(req, key) == 1 &&
            X509_REQ_sign(req, key, EVP_sha256()) > 0 && (len = i2d_X509_REQ(req, &der)) > 0)
            rc = acme__b64url(der, (size_t)len, out);
    }
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_EXTENSION_free(san);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    ERR_clear_error();
    return rc;
}

/* RFC 8737 §3: critical, its value the DER of an OCTET STRING of the SHA-256 of the key
 * authorization. */
static X509_EXTENSION *acme_identifier_ext(const char *key_auth)
{
    uint8_t der[2 + crypto_hash_sha256_BYTES] = { 0x04, crypto_hash_sha256_BYTES };
    ASN1_OBJECT *oid = OBJ_txt2obj(OID_ACME_IDENTIFIER, 1);
    ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
    X509_EXTENSION *e = NULL;

    crypto_hash_sha256(der + 2, (const uint8_t *)key_auth, strlen(key_auth));
    if (oid && val && ASN1_OCTET_STRING_set(val, der, sizeof(der)) == 1)
        e = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, val);
    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(oid);
    return e;
}

static int alpn_cert_fill(X509 *x, EVP_PKEY *key, const char *host, const char *key_auth)
{
    X509_EXTENSION *san = san_ext(host), *id = acme_identifier_ext(key_auth);
    X509_NAME *name = cn_name(host);
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    int ok;

    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f; /* positive */
    ok = san && id && name && (bn = BN_bin2bn(serial, sizeof(serial), NULL)) &&
         BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) == 1 &&
         X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
         X509_gmtime_adj(X509_getm_notAfter(x), ALPN_CERT_DAYS * 86400L) &&
         X509_set_pubkey(x, key) == 1 && X509_add_ext(x, san, -1) == 1 &&
         X509_add_ext(x, id, -1) == 1 && X509_sign(x, key, EVP_sha256()) > 0;
    BN_free(bn);
    X509_NAME_free(name);
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(id);
    return ok ? 0 : -EIO;
}

int acme__alpn_cert(const char *host, const char *key_auth, struct hs_buf *out)
{
    EVP_PKEY *key = acme__key_new();
    X509 *x = X509_new();
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = -EIO;

    if (key && x && bio && alpn_cert_fill(x, key, host, key_auth) == 0 &&
        PEM_write_bio_X509(bio, x) == 1 && (rc = bio_drain(bio, out)) == 0)
        rc = acme__key_pem(key, out);
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return rc;
}

static int asn1_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return -EINVAL;
    *out = (int64_t)timegm(&tm);
    return 0;
}

int acme__cert_times(const char *pem, size_t len, EVP_PKEY *key, int64_t *not_before,
                     int64_t *not_after)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    int64_t nb, na;
    int rc = -EINVAL;

    if (x && asn1_unix(X509_get0_notBefore(x), &nb) == 0 &&
        asn1_unix(X509_get0_notAfter(x), &na) == 0 && na > nb &&
        (!key || X509_check_private_key(x, key) == 1)) {
        *not_before = nb;
        *not_after = na;
        rc = 0;
    }
    X509_free(x);
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}
