/* Shared between the acme/ source files only (and their unit tests). */
#ifndef HS_ACME_INTERNAL_H
#define HS_ACME_INTERNAL_H

#include <jansson.h>
#include <stdatomic.h>
#include <openssl/evp.h>

#include "acme/acme.h"
#include "util/util.h"

#define ACME_MAX_BODY (64u * 1024)      /* a directory, order, authorization or problem */
#define ACME_MAX_CHAIN (128u * 1024)    /* the PEM chain */
#define ACME_MAX_AUTHZ 8                /* one identifier: one authorization, some spare */
#define ACME_MAX_URL 2048
#define ACME_MAX_NONCE 256
#define ACME_MAX_TOKEN 256
#define ACME_THUMB_LEN 43               /* base64url of a SHA-256, unpadded */

/* ---- keys, JWS, CSR, certificates (acme_crypto.c) ---- */

/* A new P-256 key; NULL if OpenSSL fails. */
EVP_PKEY *acme__key_new(void);
/* PEM ("EC PRIVATE KEY") of key appended to out. */
int acme__key_pem(EVP_PKEY *key, struct hs_buf *out);
/* The first private key of PEM text; NULL when there is none. */
EVP_PKEY *acme__key_parse(const char *pem, size_t len);

/* RFC 7638 thumbprint of the key's JWK, base64url (ACME_THUMB_LEN chars + NUL). */
int acme__thumbprint(EVP_PKEY *key, char out[ACME_THUMB_LEN + 1]);

/* A flattened JWS (RFC 7515 §7.2.2, RFC 8555 §6.2) with ES256: the protected header holds
 * alg, nonce, url and either kid (when not NULL) or the key's jwk. payload NULL means
 * POST-as-GET (an empty payload). The JSON text is appended to out. */
int acme__jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
              const char *payload, struct hs_buf *out);

/* DER of a CSR for host signed with key, base64url-encoded into out. */
int acme__csr(EVP_PKEY *key, const char *host, struct hs_buf *out);

/* RFC 8737 §3: a self-signed certificate for host carrying the SHA-256 of the key
 * authorization in a critical acmeIdentifier extension, with its key, as PEM into out. */
int acme__alpn_cert(const char *host, const char *key_auth, struct hs_buf *out);

/* notBefore and notAfter of the first certificate in PEM text, in Unix seconds; also checks
 * that key belongs to it when key is not NULL. -EINVAL when unreadable. */
int acme__cert_times(const char *pem, size_t len, EVP_PKEY *key, int64_t *not_before,
                     int64_t *not_after);

/* base64url without padding of n bytes, appended to out. */
int acme__b64url(const void *data, size_t n, struct hs_buf *out);

/* ---- the server's JSON (acme_json.c): bounded, every field checked ---- */

struct acme_directory {
    char new_nonce[ACME_MAX_URL], new_account[ACME_MAX_URL], new_order[ACME_MAX_URL];
};

enum acme_status { ACME_PENDING, ACME_READY, ACME_PROCESSING, ACME_VALID, ACME_INVALID };

struct acme_order {
    enum acme_status status;
    size_t n_authz;
    char authz[ACME_MAX_AUTHZ][ACME_MAX_URL];
    char finalize[ACME_MAX_URL];
    char certificate[ACME_MAX_URL]; /* "" until valid */
};

/* The authorization's status and, for type ("http-01" or "tls-alpn-01"), its challenge. */
struct acme_authz {
    enum acme_status status;
    char identifier[256];
    char chall_url[ACME_MAX_URL];
    char token[ACME_MAX_TOKEN + 1];
    enum acme_status chall_status;
    char error[512]; /* the challenge's error detail, when the authorization is invalid */
};

/* Each returns 0, or -EINVAL with the reason in err (nothing written to out then). */
int acme__parse_directory(const char *body, size_t len, struct acme_directory *out, char *err,
                          size_t errsize);
int acme__parse_order(const char *body, size_t len, struct acme_order *out, char *err,
                      size_t errsize);
int acme__parse_authz(const char *body, size_t len, const char *type, struct acme_authz *out,
                      char *err, size_t errsize);
/* An RFC 7807 problem document: its type (without "urn:ietf:params:acme:error:") and detail
 * into out; -EINVAL when the body is not one. */
int acme__parse_problem(const char *body, size_t len, char *type, size_t typesize, char *out,
                        size_t outsize);
/* The same from a parsed object (type may be NULL). */
int acme__parse_problem_obj(const json_t *j, char *type, size_t typesize, char *out,
                            size_t outsize);

/* ---- HTTP (acme_http.c) ---- */

struct acme_reply {
    long status;
    struct hs_buf body;
    char nonce[ACME_MAX_NONCE]; /* Replay-Nonce, "" when absent */
    char location[ACME_MAX_URL];
    int retry_after;            /* seconds, 0 when absent */
};

/* One request (body NULL: GET; "": HEAD; else a JWS POST). 0 with the reply filled (free its
 * body with hs_buf_free), -ECANCELED once *stop is true, or another negative errno with the
 * reason in err. */
int acme__http(const char *url, const char *body, const atomic_bool *stop,
               struct acme_reply *r, char *err, size_t errsize);

/* ---- the protocol (acme_flow.c) ---- */

/* What the flow publishes for the CA's validation: a key authorization for a token (HTTP-01)
 * or the RFC 8737 certificate (TLS-ALPN-01). token NULL withdraws it. */
struct acme_challenge_sink {
    void (*publish)(void *arg, const char *token, const char *key_auth);
    void *arg;
};

struct acme_flow {
    const char *directory_url, *host, *email, *challenge; /* "http-01" / "tls-alpn-01" */
    EVP_PKEY *account;
    struct acme_challenge_sink sink;
    const atomic_bool *stop; /* read between steps: true ends the order early (-ECANCELED) */
};

/* Runs an order for host to its end: the PEM of the new certificate key followed by the
 * chain into out (0), or a negative errno with the reason in err. */
int acme__obtain(const struct acme_flow *fl, struct hs_buf *out, char *err, size_t errsize);

#endif
