/* OIDC: JWT signatures (RS256, ES256) against a JWK set, the claim checks, oidc.allowed_*,
 * and the provider identifier. */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define NOW 1800000000

static EVP_PKEY *rsa_key;
static char *rsa_kid;
static json_t *jwks;

static void setup(void)
{
    rsa_key = EVP_RSA_gen(2048);
    cr_assert_not_null(rsa_key);
    rsa_kid = auth_jwk_kid(rsa_key);
    jwks = json_pack("{s:[o]}", "keys", auth_jwk_rsa_public(rsa_key, rsa_kid));
}

static void teardown(void)
{
    json_decref(jwks);
    free(rsa_kid);
    EVP_PKEY_free(rsa_key);
}

static char *signed_token(const json_t *claims)
{
    char *tok;

    cr_assert_eq(auth_jwt_sign_rs256(rsa_key, rsa_kid, claims, &tok), 0);
    return tok;
}

Test(jwt, rs256_round_trip, .init = setup, .fini = teardown)
{
    json_t *c = json_pack("{s:s, s:i}", "sub", "alice", "exp", NOW), *got = NULL;
    char *tok = signed_token(c), err[128];

    cr_assert_eq(auth_jwt_verify(tok, jwks, &got, err, sizeof(err)), 0, "%s", err);
    cr_assert(json_equal(c, got));
    json_decref(got);
    json_decref(c);
    free(tok);
}

Test(jwt, tampering_and_malformed_tokens, .init = setup, .fini = teardown)
{
    json_t *c = json_pack("{s:s}", "sub", "alice"), *got = NULL;
    char *tok = signed_token(c), *bad = strdup(tok), *dot = strchr(bad, '.');
    char err[128];

    dot[2] = dot[2] == 'A' ? 'B' : 'A'; /* a payload byte changed */
    cr_assert_eq(auth_jwt_verify(bad, jwks, &got, err, sizeof(err)), -EBADMSG);
    cr_assert(strstr(err, "signature"));
    json_t *empty = json_pack("{s:[]}", "keys");
    cr_assert_eq(auth_jwt_verify(tok, empty, &got, err, sizeof(err)), -ENOKEY);
    cr_assert_eq(auth_jwt_verify(tok, NULL, &got, err, sizeof(err)), -ENOKEY);
    const char *const malformed[] = { "", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.", "!!.b.c" };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(*malformed); i++)
        cr_assert_eq(auth_jwt_verify(malformed[i], jwks, &got, err, sizeof(err)), -EINVAL,
                     "%s", malformed[i]);
    char *huge = malloc(AUTH_JWT_MAX + 2);
    memset(huge, 'a', AUTH_JWT_MAX + 1);
    huge[AUTH_JWT_MAX + 1] = '\0';
    cr_assert_eq(auth_jwt_verify(huge, jwks, &got, err, sizeof(err)), -E2BIG);
    /* {"alg":"HS256"} */
    cr_assert_eq(auth_jwt_verify("eyJhbGciOiJIUzI1NiJ9.e30.c2ln", jwks, &got, err, sizeof(err)),
                 -ENOTSUP);
    cr_assert_null(got, "nothing handed out on failure");
    free(huge);
    json_decref(empty);
    json_decref(c);
    free(bad);
    free(tok);
}

/* Every cut-off prefix of a good token fails cleanly. */
Test(jwt, byte_by_byte, .init = setup, .fini = teardown)
{
    json_t *c = json_pack("{s:s}", "sub", "alice"), *got = NULL;
    char *tok = signed_token(c), err[128];
    size_t n = strlen(tok);

    for (size_t i = 0; i < n; i++) {
        char *cut = strndup(tok, i);
        cr_assert_lt(auth_jwt_verify(cut, jwks, &got, err, sizeof(err)), 0, "prefix %zu", i);
        free(cut);
    }
    json_decref(c);
    free(tok);
}

static char *b64(const uint8_t *p, size_t n)
{
    return auth_b64url(p, n);
}

/* An ES256 token made with OpenSSL directly: header, claims, r || s. */
static char *es256_token(EVP_PKEY *key, const char *claims_json)
{
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"e1\"}";
    char *h = b64((const uint8_t *)hdr, strlen(hdr));
    char *c = b64((const uint8_t *)claims_json, strlen(claims_json));
    char *msg = NULL, *sig_text, *tok;
    uint8_t der[128], rs[64];
    size_t derlen = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const uint8_t *p = der;
    ECDSA_SIG *sig;

    cr_assert_gt(asprintf(&msg, "%s.%s", h, c), 0);
    cr_assert_eq(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    cr_assert_eq(EVP_DigestSign(md, der, &derlen, (uint8_t *)msg, strlen(msg)), 1);
    sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + 32, 32);
    sig_text = b64(rs, sizeof(rs));
    cr_assert_gt(asprintf(&tok, "%s.%s", msg, sig_text), 0);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    free(sig_text);
    free(msg);
    free(h);
    free(c);
    return tok;
}

static json_t *ec_jwks(EVP_PKEY *key)
{
    BIGNUM *x = NULL, *y = NULL;
    uint8_t xb[32], yb[32];
    char *xs, *ys;
    json_t *j;

    cr_assert_eq(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
    BN_bn2binpad(x, xb, 32);
    BN_bn2binpad(y, yb, 32);
    xs = b64(xb, 32);
    ys = b64(yb, 32);
    j = json_pack("{s:[{s:s, s:s, s:s, s:s, s:s}]}", "keys", "kty", "EC", "kid", "e1", "crv",
                  "P-256", "x", xs, "y", ys);
    free(xs);
    free(ys);
    BN_free(x);
    BN_free(y);
    return j;
}

Test(jwt, es256)
{
    EVP_PKEY *key = EVP_EC_gen("P-256"), *other = EVP_EC_gen("P-256");
    json_t *keys = ec_jwks(key), *wrong = ec_jwks(other), *got = NULL;
    char *tok = es256_token(key, "{\"sub\":\"bob\"}"), err[128];

    cr_assert_eq(auth_jwt_verify(tok, keys, &got, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(json_string_value(json_object_get(got, "sub")), "bob");
    json_decref(got);
    cr_assert_eq(auth_jwt_verify(tok, wrong, &got, err, sizeof(err)), -EBADMSG);
    json_decref(keys);
    json_decref(wrong);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    free(tok);
}

Test(jwt, short_rsa_keys_are_not_used)
{
    EVP_PKEY *weak = EVP_RSA_gen(1024);
    json_t *keys = json_pack("{s:[o]}", "keys", auth_jwk_rsa_public(weak, "w")), *got = NULL;
    json_t *c = json_pack("{s:s}", "sub", "x");
    char *tok, err[128];

    cr_assert_eq(auth_jwt_sign_rs256(weak, "w", c, &tok), 0);
    cr_assert_eq(auth_jwt_verify(tok, keys, &got, err, sizeof(err)), -ENOKEY);
    json_decref(c);
    json_decref(keys);
    EVP_PKEY_free(weak);
    free(tok);
}

/* ---- claims ---- */

static struct hs_config cfg;

static void cfg_setup(void)
{
    cfg = (struct hs_config){ 0 };
    cfg.oidc_issuer = "https://id.example";
    cfg.oidc_client_id = "hs";
    cfg.oidc_email_verified_required = true;
}

static int check(const char *claims_json, const char *nonce)
{
    json_t *c = json_loads(claims_json, 0, NULL);
    char why[128];
    int rc;

    cr_assert_not_null(c, "%s", claims_json);
    rc = auth_oidc_check_claims(cfg.oidc_issuer, cfg.oidc_client_id, c, nonce, NOW, why,
                                sizeof(why));
    json_decref(c);
    return rc;
}

#define GOOD "\"iss\":\"https://id.example\",\"sub\":\"s\",\"nonce\":\"n\""

Test(claims, what_a_token_must_say, .init = cfg_setup)
{
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1800000100}", "n"), 0);
    cr_assert_eq(check("{" GOOD ",\"aud\":[\"hs\"],\"exp\":1800000100}", "n"), 0);
    /* A minute of clock skew either way, no more. */
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1799999950}", "n"), 0);
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1799999900}", "n"), -EBADMSG);
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1800000100,\"nbf\":1800000050}", "n"), 0);
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1800000900,\"nbf\":1800000100}", "n"),
                 -EBADMSG);
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\"}", "n"), -EBADMSG, "no exp");
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":\"soon\"}", "n"), -EBADMSG);
    cr_assert_eq(check("{" GOOD ",\"aud\":\"other\",\"exp\":1800000100}", "n"), -EBADMSG);
    cr_assert_eq(check("{" GOOD ",\"aud\":[\"other\",\"hs\"],\"azp\":\"other\",\"exp\":1800000100}",
                       "n"), -EBADMSG);
    cr_assert_eq(check("{" GOOD ",\"aud\":[\"other\",\"hs\"],\"azp\":\"hs\",\"exp\":1800000100}",
                       "n"), 0);
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1800000100}", "m"), -EBADMSG, "nonce");
    cr_assert_eq(check("{" GOOD ",\"aud\":\"hs\",\"exp\":1800000100}", "nn"), -EBADMSG);
    cr_assert_eq(check("{\"iss\":\"https://id.example/\",\"sub\":\"s\",\"nonce\":\"n\","
                       "\"aud\":\"hs\",\"exp\":1800000100}", "n"), -EBADMSG, "issuer exactly");
    cr_assert_eq(check("{\"iss\":\"https://id.example\",\"sub\":\"\",\"nonce\":\"n\","
                       "\"aud\":\"hs\",\"exp\":1800000100}", "n"), -EBADMSG, "empty sub");
}

static int allowed(const char *claims_json)
{
    json_t *c = json_loads(claims_json, 0, NULL);
    char why[128];
    int rc = auth_oidc_allowed(&cfg, c, why, sizeof(why));

    json_decref(c);
    return rc;
}

Test(claims, allowed_lists, .init = cfg_setup)
{
    const char *ann = "{\"email\":\"Ann@Example.ORG\",\"email_verified\":true,\"groups\":[\"ops\"]}";
    const char *unverified = "{\"email\":\"ann@example.org\",\"email_verified\":false}";

    cr_assert_eq(allowed(unverified), 0, "no lists: everyone");
    hs_strv_push(&cfg.oidc_allowed_groups, "eng");
    cr_assert_eq(allowed(ann), -EACCES);
    hs_strv_push(&cfg.oidc_allowed_groups, "ops");
    cr_assert_eq(allowed(ann), 0);
    hs_strv_free(&cfg.oidc_allowed_groups);
    hs_strv_push(&cfg.oidc_allowed_domains, "example.org");
    cr_assert_eq(allowed(ann), 0, "domains compare without case");
    cr_assert_eq(allowed(unverified), -EACCES);
    cr_assert_eq(allowed("{\"email\":\"x@example.org.evil\",\"email_verified\":true}"), -EACCES);
    cfg.oidc_email_verified_required = false;
    cr_assert_eq(allowed(unverified), 0);
    hs_strv_push(&cfg.oidc_allowed_users, "bob@example.org");
    cr_assert_eq(allowed(unverified), -EACCES);
    cr_assert_eq(allowed("{\"email\":\"bob@example.org\",\"email_verified\":\"true\"}"), 0);
    hs_strv_free(&cfg.oidc_allowed_domains);
    hs_strv_free(&cfg.oidc_allowed_users);
}

Test(claims, identifier)
{
    char *a = auth_oidc_identifier("https://id.example/", "/abc");
    char *b = auth_oidc_identifier("https://id.example", "abc");

    cr_assert_str_eq(a, "https://id.example/abc");
    cr_assert_str_eq(b, a);
    free(a);
    free(b);
}

/* ---- sign-ins under way ---- */

Test(pending, fresh_secrets_good_once_and_until_they_expire)
{
    struct auth_oidc_pending t[3] = { 0 }, got;
    struct auth_oidc_request a, b;

    auth_oidc_request_new(&a, true);
    auth_oidc_request_new(&b, false);
    cr_expect_eq(strlen(a.state), 32);
    cr_expect_eq(strlen(a.verifier), 43, "PKCE wants 43 to 128 characters");
    cr_expect_str_empty(b.verifier);
    cr_expect_str_neq(a.state, b.state);
    cr_expect_str_neq(a.state, a.nonce);

    *auth_oidc_pending_slot(t, 3, 100) = (struct auth_oidc_pending){ .rq = a, .expires_at = 200 };
    *auth_oidc_pending_slot(t, 3, 100) = (struct auth_oidc_pending){ .rq = b, .expires_at = 150 };
    cr_expect_not(auth_oidc_pending_take(t, 3, b.state, 150, &got), "expired");
    cr_expect_not(auth_oidc_pending_take(t, 3, b.state, 100, &got), "an expired one is gone");
    cr_expect_not(auth_oidc_pending_take(t, 3, "", 100, &got));
    cr_expect_not(auth_oidc_pending_take(t, 3, "x", 100, &got));
    cr_assert(auth_oidc_pending_take(t, 3, a.state, 199, &got));
    cr_expect_str_eq(got.rq.nonce, a.nonce);
    cr_expect_str_eq(got.rq.verifier, a.verifier);
    cr_expect_not(auth_oidc_pending_take(t, 3, a.state, 199, &got), "good once");

    /* A full table gives up the entry closest to expiring. */
    for (int i = 0; i < 3; i++)
        t[i] = (struct auth_oidc_pending){ .rq = a, .expires_at = 500 - i };
    cr_expect_eq(auth_oidc_pending_slot(t, 3, 100), &t[2]);
    cr_expect_eq(auth_oidc_pending_slot(t, 3, 499), &t[1], "an expired one first");
}
