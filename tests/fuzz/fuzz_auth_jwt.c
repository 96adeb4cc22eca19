/* OIDC: hostile ID tokens against a fixed key set, and hostile key sets and claims. The first
 * byte picks what the rest is: a token, a JWK set (checked against a fixed token), or the
 * claims of a token. */
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *key;
static char *kid, *good_token;
static json_t *jwks;

static void init(void)
{
    json_t *c = json_pack("{s:s, s:s, s:i}", "iss", "https://id.example", "sub", "s", "exp", 1);

    key = EVP_RSA_gen(2048);
    kid = auth_jwk_kid(key);
    jwks = json_pack("{s:[o]}", "keys", auth_jwk_rsa_public(key, kid));
    auth_jwt_sign_rs256(key, kid, c, &good_token);
    json_decref(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hs_config cfg = { .oidc_issuer = "https://id.example", .oidc_client_id = "hs",
                                    .oidc_email_verified_required = true };
    char *text, err[256];
    json_t *claims = NULL, *j;

    if (!key)
        init();
    if (size < 1)
        return 0;
    /* Not strndup: the input has no NUL after it, and strict_string_checks (run-all.sh)
     * rightly reports strndup reading past it. */
    text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 3) {
    case 0:
        if (auth_jwt_verify(text, jwks, &claims, err, sizeof(err)) == 0)
            json_decref(claims);
        break;
    case 1:
        if ((j = hs_json_load(text, strlen(text), AUTH_JWT_MAX, NULL, 0))) {
            if (auth_jwt_verify(good_token, j, &claims, err, sizeof(err)) == 0)
                json_decref(claims);
            json_decref(j);
        }
        break;
    default:
        if ((j = hs_json_load(text, strlen(text), AUTH_JWT_MAX, NULL, 0))) {
            auth_oidc_check_claims(cfg.oidc_issuer, cfg.oidc_client_id, j, "n", 1, err,
                                   sizeof(err));
            auth_oidc_allowed(&cfg, j, err, sizeof(err));
            json_decref(j);
        }
        break;
    }
    free(text);
    return 0;
}
