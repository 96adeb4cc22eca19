#include <criterion/criterion.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <string.h>

#include "acme/acme_internal.h"

/* ---- helpers ---- */

static char *b64url_decode(const char *s, size_t *len)
{
    size_t cap = strlen(s) + 4;
    unsigned char *out = malloc(cap + 1);

    cr_assert_eq(sodium_base642bin(out, cap, s, strlen(s), NULL, len, NULL,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                 0, "not base64url: %s", s);
    out[*len] = '\0';
    return (char *)out;
}

static json_t *jws_of(EVP_PKEY *k, const char *kid, const char *payload)
{
    struct hs_buf out;
    json_t *j;

    hs_buf_init(&out, 1 << 16);
    cr_assert_eq(acme__jws(k, kid, "nonce-1", "https://ca.example/new-order", payload, &out), 0);
    j = json_loads(out.data, 0, NULL);
    cr_assert_not_null(j, "%s", out.data);
    hs_buf_free(&out);
    return j;
}

/* Verifies an ES256 signature (r||s) over input with k. */
static bool es256_ok(EVP_PKEY *k, const char *input, const unsigned char *sig, size_t siglen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    unsigned char *der = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int derlen, ok;

    cr_assert_eq(siglen, 64);
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    derlen = i2d_ECDSA_SIG(es, &der);
    ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
         EVP_DigestVerify(md, der, (size_t)derlen, (const unsigned char *)input,
                          strlen(input)) == 1;
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    return ok;
}

/* ---- JWS ---- */

Test(acme, jws_with_jwk_verifies_and_carries_the_header)
{
    EVP_PKEY *k = acme__key_new();
    json_t *j = jws_of(k, NULL, "{\"termsOfServiceAgreed\":true}"), *h;
    const char *prot = hs_json_str(j, "protected"), *pay = hs_json_str(j, "payload");
    char *input, *htext, *ptext;
    unsigned char *sig;
    size_t hlen, plen, slen;

    cr_assert_not_null(prot);
    cr_assert_not_null(pay);
    htext = b64url_decode(prot, &hlen);
    ptext = b64url_decode(pay, &plen);
    cr_assert_str_eq(ptext, "{\"termsOfServiceAgreed\":true}");
    h = json_loads(htext, 0, NULL);
    cr_assert_str_eq(hs_json_str(h, "alg"), "ES256");
    cr_assert_str_eq(hs_json_str(h, "nonce"), "nonce-1");
    cr_assert_str_eq(hs_json_str(h, "url"), "https://ca.example/new-order");
    cr_assert_null(json_object_get(h, "kid"));
    cr_assert_str_eq(hs_json_str(json_object_get(h, "jwk"), "kty"), "EC");
    cr_assert_str_eq(hs_json_str(json_object_get(h, "jwk"), "crv"), "P-256");
    input = hs_aprintf("%s.%s", prot, pay);
    sig = (unsigned char *)b64url_decode(hs_json_str(j, "signature"), &slen);
    cr_assert(es256_ok(k, input, sig, slen));
    input[0] ^= 1; /* another header: the signature no longer fits */
    cr_assert(!es256_ok(k, input, sig, slen));
    free(input);
    free(sig);
    free(htext);
    free(ptext);
    json_decref(h);
    json_decref(j);
    EVP_PKEY_free(k);
}

Test(acme, jws_with_kid_and_post_as_get)
{
    EVP_PKEY *k = acme__key_new();
    json_t *j = jws_of(k, "https://ca.example/acct/7", NULL), *h;
    size_t hlen;
    char *htext = b64url_decode(hs_json_str(j, "protected"), &hlen);

    cr_assert_str_eq(hs_json_str(j, "payload"), "", "POST-as-GET has an empty payload");
    h = json_loads(htext, 0, NULL);
    cr_assert_str_eq(hs_json_str(h, "kid"), "https://ca.example/acct/7");
    cr_assert_null(json_object_get(h, "jwk"));
    json_decref(h);
    free(htext);
    json_decref(j);
    EVP_PKEY_free(k);
}

/* RFC 7638 §3.1 with a P-256 key of our own: the thumbprint is the SHA-256 of the members
 * crv, kty, x, y in that order, no spaces; recomputed here from the key's coordinates. */
Test(acme, thumbprint_is_rfc7638)
{
    EVP_PKEY *k = acme__key_new();
    BIGNUM *x = NULL, *y = NULL;
    unsigned char bx[32], by[32], digest[32];
    struct hs_buf bx64, by64, want;
    char thumb[ACME_THUMB_LEN + 1], *jwk;

    cr_assert_eq(EVP_PKEY_get_bn_param(k, "qx", &x), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(k, "qy", &y), 1);
    BN_bn2binpad(x, bx, 32);
    BN_bn2binpad(y, by, 32);
    hs_buf_init(&bx64, 64);
    hs_buf_init(&by64, 64);
    hs_buf_init(&want, 64);
    acme__b64url(bx, 32, &bx64);
    acme__b64url(by, 32, &by64);
    jwk = hs_aprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", bx64.data,
                     by64.data);
    crypto_hash_sha256(digest, (unsigned char *)jwk, strlen(jwk));
    acme__b64url(digest, 32, &want);
    cr_assert_eq(acme__thumbprint(k, thumb), 0);
    cr_assert_str_eq(thumb, want.data);
    cr_assert_eq(strlen(thumb), ACME_THUMB_LEN);
    free(jwk);
    hs_buf_free(&bx64);
    hs_buf_free(&by64);
    hs_buf_free(&want);
    BN_free(x);
    BN_free(y);
    EVP_PKEY_free(k);
}

Test(acme, key_pem_round_trip_and_refuses_junk)
{
    EVP_PKEY *k = acme__key_new(), *back;
    struct hs_buf pem;

    hs_buf_init(&pem, 8192);
    cr_assert_eq(acme__key_pem(k, &pem), 0);
    cr_assert(strstr(pem.data, "-----BEGIN EC PRIVATE KEY-----"), "autocert's PEM type");
    cr_assert_not_null(back = acme__key_parse(pem.data, pem.len));
    cr_assert_eq(EVP_PKEY_eq(k, back), 1);
    cr_assert_null(acme__key_parse("nothing here", 12));
    cr_assert_null(acme__key_parse(pem.data, pem.len / 2), "a cut key");
    EVP_PKEY_free(back);
    EVP_PKEY_free(k);
    hs_buf_free(&pem);
}

/* ---- CSR and the TLS-ALPN-01 certificate ---- */

Test(acme, csr_names_the_host_and_is_signed_by_the_key)
{
    EVP_PKEY *k = acme__key_new();
    struct hs_buf b64;
    size_t len;
    char *der;
    const unsigned char *p;
    X509_REQ *req;
    STACK_OF(X509_EXTENSION) *exts;
    GENERAL_NAMES *san;
    GENERAL_NAME *gn;

    hs_buf_init(&b64, 8192);
    cr_assert_eq(acme__csr(k, "hs.example.com", &b64), 0);
    der = b64url_decode(b64.data, &len);
    p = (const unsigned char *)der;
    cr_assert_not_null(req = d2i_X509_REQ(NULL, &p, (long)len));
    cr_assert_eq(X509_REQ_verify(req, k), 1);
    exts = X509_REQ_get_extensions(req);
    san = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    cr_assert_not_null(san);
    cr_assert_eq(sk_GENERAL_NAME_num(san), 1);
    gn = sk_GENERAL_NAME_value(san, 0);
    cr_assert_eq(gn->type, GEN_DNS);
    cr_assert_str_eq((const char *)ASN1_STRING_get0_data(gn->d.dNSName), "hs.example.com");
    GENERAL_NAMES_free(san);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(der);
    hs_buf_free(&b64);
    EVP_PKEY_free(k);
}

Test(acme, alpn_certificate_carries_the_key_authorization_hash)
{
    const char *ka = "token-abc.thumbprint-xyz";
    unsigned char want[2 + 32] = { 0x04, 0x20 };
    struct hs_buf pem;
    BIO *bio;
    X509 *x;
    EVP_PKEY *key;
    int idx;
    X509_EXTENSION *e;
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int64_t nb, na;

    hs_buf_init(&pem, 16384);
    cr_assert_eq(acme__alpn_cert("hs.example.com", ka, &pem), 0);
    bio = BIO_new_mem_buf(pem.data, (int)pem.len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    cr_assert_not_null(x);
    cr_assert_not_null(key, "the key follows the certificate");
    cr_assert_eq(X509_check_private_key(x, key), 1);
    cr_assert_eq(X509_check_host(x, "hs.example.com", 0, 0, NULL), 1);
    cr_assert_geq(idx = X509_get_ext_by_OBJ(x, oid, -1), 0);
    e = X509_get_ext(x, idx);
    cr_assert_eq(X509_EXTENSION_get_critical(e), 1, "RFC 8737: critical");
    crypto_hash_sha256(want + 2, (const unsigned char *)ka, strlen(ka));
    cr_assert_eq(ASN1_STRING_length(X509_EXTENSION_get_data(e)), sizeof(want));
    cr_assert_arr_eq(ASN1_STRING_get0_data(X509_EXTENSION_get_data(e)), want, sizeof(want));
    cr_assert_eq(acme__cert_times(pem.data, pem.len, key, &nb, &na), 0);
    cr_assert_gt(na, nb);
    ASN1_OBJECT_free(oid);
    EVP_PKEY_free(key);
    X509_free(x);
    BIO_free(bio);
    hs_buf_free(&pem);
}

Test(acme, cert_times_refuse_a_foreign_key)
{
    struct hs_buf pem;
    EVP_PKEY *other = acme__key_new();
    int64_t nb, na;

    hs_buf_init(&pem, 16384);
    cr_assert_eq(acme__alpn_cert("a.example", "x.y", &pem), 0);
    cr_assert_eq(acme__cert_times(pem.data, pem.len, other, &nb, &na), -EINVAL);
    cr_assert_eq(acme__cert_times("junk", 4, NULL, &nb, &na), -EINVAL);
    EVP_PKEY_free(other);
    hs_buf_free(&pem);
}

/* ---- the CA's JSON ---- */

#define DIR_JSON                                                                             \
    "{\"newNonce\":\"https://ca/nonce\",\"newAccount\":\"https://ca/acct\","                \
    "\"newOrder\":\"https://ca/order\",\"meta\":{\"termsOfService\":\"x\"}}"

Test(acme, directory_parses_and_needs_each_url)
{
    struct acme_directory d;
    char err[256];

    cr_assert_eq(acme__parse_directory(DIR_JSON, strlen(DIR_JSON), &d, err, sizeof(err)), 0);
    cr_assert_str_eq(d.new_order, "https://ca/order");
    memset(&d, 0x55, sizeof(d));
    const char *partial = "{\"newNonce\":\"a\",\"newAccount\":\"b\"}";
    const char *dup = "{\"newNonce\":\"a\",\"newNonce\":\"b\"}";

    cr_assert_eq(acme__parse_directory(partial, strlen(partial), &d, err, sizeof(err)),
                 -EINVAL);
    cr_assert(strstr(err, "newOrder"), "%s", err);
    cr_assert_eq(((unsigned char *)&d)[0], 0x55, "nothing written on failure");
    cr_assert_eq(acme__parse_directory("[1]", 3, &d, err, sizeof(err)), -EINVAL);
    cr_assert_eq(acme__parse_directory(dup, strlen(dup), &d, err, sizeof(err)), -EINVAL,
                 "duplicate keys");
}

Test(acme, directory_body_over_the_limit_is_refused_before_parsing)
{
    struct acme_directory d;
    size_t n = ACME_MAX_BODY + 1;
    char *big = malloc(n), err[256];

    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    cr_assert_eq(acme__parse_directory(big, n, &d, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "exceeds"), "%s", err);
    free(big);
}

Test(acme, order_fields_and_limits)
{
    const char *ok = "{\"status\":\"valid\",\"authorizations\":[\"https://ca/a/1\"],"
                     "\"finalize\":\"https://ca/f\",\"certificate\":\"https://ca/c\"}";
    const char *no_cert = "{\"status\":\"valid\",\"authorizations\":[\"https://ca/a/1\"],"
                          "\"finalize\":\"https://ca/f\"}";
    const char *bad_status = "{\"status\":\"weird\",\"authorizations\":[\"u\"],"
                             "\"finalize\":\"f\"}";
    struct acme_order o;
    struct hs_buf many;
    char err[256];

    cr_assert_eq(acme__parse_order(ok, strlen(ok), &o, err, sizeof(err)), 0);
    cr_assert_eq(o.status, ACME_VALID);
    cr_assert_eq(o.n_authz, 1);
    cr_assert_str_eq(o.certificate, "https://ca/c");
    cr_assert_eq(acme__parse_order(no_cert, strlen(no_cert), &o, err, sizeof(err)), -EINVAL,
                 "a valid order names its certificate");
    cr_assert_eq(acme__parse_order(bad_status, strlen(bad_status), &o, err, sizeof(err)),
                 -EINVAL);
    hs_buf_init(&many, 4096);
    hs_buf_puts(&many, "{\"status\":\"pending\",\"finalize\":\"f\",\"authorizations\":[");
    for (int i = 0; i <= ACME_MAX_AUTHZ; i++)
        hs_buf_appendf(&many, "%s\"https://ca/a/%d\"", i ? "," : "", i);
    hs_buf_puts(&many, "]}");
    cr_assert_eq(acme__parse_order(many.data, many.len, &o, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "authorizations"), "%s", err);
    hs_buf_free(&many);
}

#define AUTHZ_JSON(status, chall_status, token)                                              \
    "{\"status\":\"" status "\",\"identifier\":{\"type\":\"dns\",\"value\":\"hs.example\"},"  \
    "\"challenges\":[{\"type\":\"dns-01\",\"url\":\"https://ca/c/0\",\"token\":\"t0\","       \
    "\"status\":\"pending\"},{\"type\":\"http-01\",\"url\":\"https://ca/c/1\",\"token\":\""    \
    token "\",\"status\":\"" chall_status "\",\"error\":{\"type\":"                           \
    "\"urn:ietf:params:acme:error:connection\",\"detail\":\"refused\"}}]}"

Test(acme, authz_picks_the_challenge_of_our_type)
{
    const char *j = AUTHZ_JSON("pending", "pending", "abc_DEF-123");
    struct acme_authz a;
    char err[256];

    cr_assert_eq(acme__parse_authz(j, strlen(j), "http-01", &a, err, sizeof(err)), 0);
    cr_assert_str_eq(a.identifier, "hs.example");
    cr_assert_str_eq(a.chall_url, "https://ca/c/1");
    cr_assert_str_eq(a.token, "abc_DEF-123");
    cr_assert_str_eq(a.error, "connection: refused");
    cr_assert_eq(acme__parse_authz(j, strlen(j), "tls-alpn-01", &a, err, sizeof(err)), -ENOENT);
}

Test(acme, authz_token_must_be_base64url)
{
    const char *j = AUTHZ_JSON("pending", "pending", "../../etc/passwd");
    struct acme_authz a;
    char err[256];

    cr_assert_eq(acme__parse_authz(j, strlen(j), "http-01", &a, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "base64url"), "%s", err);
}

Test(acme, problem_document)
{
    const char *p = "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"stale\"}";
    char type[64], out[128];

    cr_assert_eq(acme__parse_problem(p, strlen(p), type, sizeof(type), out, sizeof(out)), 0);
    cr_assert_str_eq(type, "badNonce");
    cr_assert_str_eq(out, "badNonce: stale");
    cr_assert_eq(acme__parse_problem("<html>", 6, type, sizeof(type), out, sizeof(out)),
                 -EINVAL);
}

/* Every prefix of a good document is refused cleanly (no partial result, no crash). */
Test(acme, cut_documents_are_refused)
{
    const char *j = AUTHZ_JSON("pending", "pending", "tok");
    struct acme_authz a;
    struct acme_order o;
    char err[256];

    for (size_t n = 0; n < strlen(j); n++) {
        cr_assert_lt(acme__parse_authz(j, n, "http-01", &a, err, sizeof(err)), 0);
        cr_assert_lt(acme__parse_order(j, n, &o, err, sizeof(err)), 0);
    }
}

/* ---- small parts ---- */

Test(acme, listen_addr_maps_go_service_names)
{
    char out[64];

    cr_assert_eq(acme_listen_addr(":http", out, sizeof(out)), 0);
    cr_assert_str_eq(out, ":80");
    cr_assert_eq(acme_listen_addr("0.0.0.0:https", out, sizeof(out)), 0);
    cr_assert_str_eq(out, "0.0.0.0:443");
    cr_assert_eq(acme_listen_addr("[::1]:8080", out, sizeof(out)), 0);
    cr_assert_str_eq(out, "[::1]:8080");
    cr_assert_eq(acme_listen_addr("nocolon", out, sizeof(out)), -EINVAL);
}

Test(acme, alpn_offer_parser_is_bounded)
{
    static const uint8_t both[] = { 0, 20, 8, 'h', 't', 't', 'p', '/', '1', '.', '1',
                                    10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1' };
    static const uint8_t h11[] = { 0, 9, 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };
    static const uint8_t overrun[] = { 0, 3, 9, 'a', 'b' };
    static const uint8_t badlen[] = { 0, 9, 8, 'h' };
    static const uint8_t empty_name[] = { 0, 1, 0 };

    cr_assert_eq(net_alpn_offers(both, sizeof(both), "acme-tls/1"), 1);
    cr_assert_eq(net_alpn_offers(both, sizeof(both), "h2"), 0);
    cr_assert_eq(net_alpn_offers(h11, sizeof(h11), "acme-tls/1"), 0);
    cr_assert_eq(net_alpn_offers(overrun, sizeof(overrun), "ab"), -EINVAL);
    cr_assert_eq(net_alpn_offers(badlen, sizeof(badlen), "h"), -EINVAL);
    cr_assert_eq(net_alpn_offers(empty_name, sizeof(empty_name), "x"), -EINVAL);
    for (size_t n = 0; n < sizeof(both); n++)
        cr_assert_eq(net_alpn_offers(both, n, "acme-tls/1"), -EINVAL, "cut at %zu", n);
}
