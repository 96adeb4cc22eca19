/* auth: pre-auth keys and API keys — generation in headscale's formats, keyed hashing at rest,
 * constant-time verification, and node registration (pre-auth key, interactive, OIDC).
 *
 * Formats (headscale >= 0.28): hskey-auth-<12 hex prefix>-<64 hex secret> and
 * hskey-api-<12 hex prefix>-<64 hex secret>. The store keeps only the prefix and
 * BLAKE2b-256(key = per-database secret, prefix || secret): the secrets carry 256 bits of
 * entropy, so a fast keyed hash is enough (no bcrypt needed), and the full key is shown once.
 * Keys imported from a headscale database keep headscale's bcrypt hashes and forms (base64url
 * prefixes and secrets; "<prefix>.<secret>" API keys and bare 48-hex pre-auth keys of older
 * versions), and the checks below accept them too.
 *
 * OIDC: logins through an OpenID provider (oidc.c), on a relying party (oidc_rp.c) that
 * headscale-webadmin shares, and the JWT code (jwt.c) that `headscale mockoidc` signs with. */
#ifndef HS_AUTH_H
#define HS_AUTH_H

#include <openssl/evp.h>
#include <stdint.h>

#include "store/store.h"

#define AUTH_PREFIX_LEN 12
#define AUTH_SECRET_LEN 32
#define AUTH_KEY_TEXT_MAX 96 /* "hskey-auth-" + 12 + "-" + 64 + NUL */
#define AUTH_LEGACY_PAK_LEN 48 /* headscale <= 0.27's pre-auth keys: 24 bytes in hex */

enum auth_cred_kind { AUTH_CRED_PREAUTH, AUTH_CRED_API };

struct auth;

/* Reads (or creates) the per-database hashing secret. Borrows cfg and st. */
int auth_new(const struct hs_config *cfg, struct store *st, struct auth **out);
void auth_free(struct auth *a); /* zeroes the secret; NULL is fine */

/* Parses a full key of the given kind into its prefix (NUL-terminated) and secret. */
int auth_cred_parse(enum auth_cred_kind kind, const char *text, char prefix[AUTH_PREFIX_LEN + 1],
                    uint8_t secret[AUTH_SECRET_LEN]);
/* Extracts the prefix of a full or masked key ("hskey-api-<prefix>-***", or just the 12-char
 * prefix itself, hex or headscale's base64url; a 0.22.3 pre-auth key gives its first 12
 * chars). -EINVAL if there is none. */
int auth_cred_prefix(enum auth_cred_kind kind, const char *text, char prefix[AUTH_PREFIX_LEN + 1]);
/* "hskey-auth-<prefix>-***" */
void auth_cred_mask(enum auth_cred_kind kind, const char *prefix, char *out, size_t size);

/* Creates and stores a key; on success full (>= AUTH_KEY_TEXT_MAX) holds the key, shown once. */
int auth_apikey_create(struct auth *a, int64_t expiration, char *full, struct store_apikey *out);
/* 0 when the bearer key is valid (and records last_seen); -EACCES unknown or malformed;
 * -EKEYEXPIRED expired. */
int auth_apikey_check(struct auth *a, const char *key, uint64_t *id_out);

/* in: user_id, reusable, ephemeral, tags, expiration. */
int auth_preauthkey_create(struct auth *a, const struct store_preauthkey *in, char *full,
                           struct store_preauthkey *out);
/* Validates a pre-auth key presented by a client: 0 and *out filled; -EACCES unknown or
 * malformed; -EKEYEXPIRED expired; -EALREADY single-use key already used. */
int auth_preauthkey_check(struct auth *a, const char *key, struct store_preauthkey *out);

/* ---- node registration (pre-auth key and interactive) ---- */

#define AUTH_REG_ID_MAX 48    /* "hskey-authreq-" + 24 hex + NUL */
#define AUTH_REG_ID_RANDOM 24 /* characters after the prefix */

/* Whether id has the shape of a registration id: "hskey-authreq-" and 24 URL-safe base64
 * characters (headscale's auth ids; ours use hex, a subset). */
bool auth_registration_id_valid(const char *id);

/* What a client presented in its RegisterRequest. */
struct auth_node_request {
    uint8_t machine_key[STORE_KEY_LEN];
    uint8_t node_key[STORE_KEY_LEN];
    const char *hostinfo_json; /* compact JSON object, may be NULL */
    const char *hostname;      /* Hostinfo.Hostname, may be NULL */
    int64_t expiry;            /* requested key expiry, 0 = none */
    bool ephemeral;
};

/* Whether a node of user_id may take tag: the policy's tagOwners (the server answers from
 * the policy in force). Any thread. */
typedef bool (*auth_tag_check_fn)(void *arg, uint64_t user_id, const char *tag);
/* Tags a client asks for (Hostinfo.RequestTags, `tailscale up --advertise-tags`) are given
 * only when fn allows every one of them for the user the node would belong to: the node is
 * then tagged (owned by its tags, no user, no key expiry). Otherwise the registration is
 * refused with -EPERM, as headscale refuses it ("requested tags ... are invalid or not
 * permitted"). Without fn every requested tag is refused. */
void auth_set_tag_check(struct auth *a, auth_tag_check_fn fn, void *arg);

/* The MagicDNS label for a host name (Tailscale's sanitiser): lowercase, space . @ _ → '-',
 * other invalid characters dropped, edge hyphens trimmed, at most 63 chars, "node" if empty. */
void auth_given_name(const char *hostname, char *out, size_t size);

/* Pre-auth key login: validates the key (-EACCES, -EKEYEXPIRED, -EALREADY), then creates the
 * node or, when this machine already has a node of the same owner, re-registers it in place
 * (same id and addresses). A single-use key is marked used on first registration only. With a
 * user's key, requested tags are checked for that user (-EPERM, see auth_set_tag_check); a
 * tagged key's tags are the node's, whatever it asks for. */
int auth_register_with_key(struct auth *a, const char *key, const struct auth_node_request *rq,
                           struct store_node *out);

/* Interactive login: records a pending registration (shared by replicas) and returns its id
 * ("hskey-authreq-<24 hex>"); the client is told <server_url>/register/<id>. It expires after
 * tuning.register_cache_expiration; past tuning.register_cache_max_entries the oldest pending
 * ones are deleted. rq->hostinfo_json is stored as it is: the caller bounds it. */
int auth_registration_start(struct auth *a, const struct auth_node_request *rq,
                            char id[AUTH_REG_ID_MAX]);

/* The same under a given id (`headscale debug create-node`, which names it): -EEXIST when
 * that id is taken. */
int auth_registration_add(struct auth *a, const char *id, const struct auth_node_request *rq);

/* An operator completes a pending registration for a user (`nodes register`): creates or
 * re-registers the node. -ENOENT for an unknown, expired, completed or refused id; -EPERM
 * when the node asked for tags the user may not give it. */
int auth_registration_complete(struct auth *a, const char *id, uint64_t user_id,
                               struct store_node *out);
/* `auth approve`: completes it for the owner this machine's node already has (a re-login after
 * a logout or an expiry), tags included. -ENXIO when the machine has no node yet: only
 * auth_registration_complete can say whose it is. -ENOENT as above. */
int auth_registration_approve(struct auth *a, const char *id, struct store_node *out);
/* `auth reject`: refuses it; the client waiting on it is told, and it can no longer be
 * completed. Rejecting it again is fine. -ENOENT when it is not pending. */
int auth_registration_reject(struct auth *a, const char *id);

/* Registrations by how they ended, since start (for /metrics). Any thread. */
enum auth_outcome {
    AUTH_KEY_OK,          /* a pre-auth key login registered its node */
    AUTH_KEY_REFUSED,     /* a pre-auth key login failed (bad, spent or expired key, tags) */
    AUTH_LOGIN_STARTED,   /* an interactive login is pending */
    AUTH_LOGIN_COMPLETED, /* an operator completed one (nodes register, auth approve) */
    AUTH_LOGIN_REJECTED,  /* an operator refused one (auth reject) */
    AUTH_OUTCOMES
};
void auth_outcomes(struct auth *a, uint64_t out[AUTH_OUTCOMES]);

/* Once after a headscale 0.22.3 import (STORE_KV_IMPORTED_REQUEST_TAGS), with the policy in
 * force and auth_set_tag_check set: each user's node that requested tags (Hostinfo.
 * RequestTags) the policy lets its user give becomes tagged, as 0.22.3 treated it; nodes whose
 * requests are refused stay their user's. Errors are the store's. */
int auth_adopt_requested_tags(struct auth *a);

/* ---- OIDC login (oidc.c, oidc_provider.c, oidc_claims.c) ---- */

#define AUTH_OIDC_STATE_MAX 64 /* the state text and its cookie */

struct auth_oidc;
/* With oidc.issuer set: reads the client secret and asks the provider for its discovery
 * document and keys. When it cannot be reached, oidc.only_start_if_oidc_is_available makes
 * that an error (why says what failed); otherwise a warning, and each login tries again.
 * Borrows cfg and a. */
int auth_oidc_new(const struct hs_config *cfg, struct auth *a, struct auth_oidc **out, char *why,
                  size_t whysize);
void auth_oidc_free(struct auth_oidc *o); /* NULL is fine */

/* GET /register/<reg_id>: a fresh state, nonce (and PKCE verifier) bound to that pending
 * registration, kept in the store with it (any replica takes the callback); *location
 * (malloc'd) is the provider's authorization URL, and state goes in a cookie for the
 * callback. -ENOENT unknown or finished registration; -EHOSTUNREACH and others when the
 * provider cannot be reached, or the store's errors. Any thread. */
int auth_oidc_begin(struct auth_oidc *o, const char *reg_id, char **location,
                    char state[AUTH_OIDC_STATE_MAX], char *why, size_t whysize);

/* A finished login: the user (found by issuer and subject, or created) and the node. */
struct auth_oidc_login {
    struct store_user user;
    struct store_node node;
};
void auth_oidc_login_free(struct auth_oidc_login *l);
/* GET /oidc/callback?state&code with the state cookie: the state is used up whatever
 * happens (once for all replicas); the code is exchanged, the ID token verified and the
 * login checked against oidc.allowed_*, then the registration completed. -EINVAL a stray or
 * replayed callback; -EACCES refused by the provider or by allowed_*; -EBADMSG an ID token
 * that does not verify; others from the provider or the store. why says what in words fit
 * for the user. */
int auth_oidc_callback(struct auth_oidc *o, const char *state, const char *code,
                       const char *cookie_state, struct auth_oidc_login *out, char *why,
                       size_t whysize);

/* oidc.allowed_groups / allowed_domains / allowed_users: 0, or -EACCES with why. */
int auth_oidc_allowed(const struct hs_config *cfg, const json_t *claims, char *why,
                      size_t whysize);

/* ---- a relying party of an OpenID provider (oidc_rp.c, oidc_provider.c, jwt.c) ----
 * The half of the OIDC login that knows no store: built on its own as the library hs_auth_rp,
 * which headscale-webadmin links for its administrators' sign-in, so that both verify ID
 * tokens with the same code. */

#define AUTH_OIDC_CLOCK_SKEW_S 60 /* how far the provider's clock may be from ours */

/* One authorization request's secrets: state, nonce and (with PKCE) the code verifier, as
 * base64url text. */
struct auth_oidc_request {
    char state[AUTH_OIDC_STATE_MAX];
    char nonce[AUTH_OIDC_STATE_MAX];
    char verifier[AUTH_OIDC_STATE_MAX]; /* "" without PKCE */
};
/* Fresh random state and nonce, and a verifier when pkce. */
void auth_oidc_request_new(struct auth_oidc_request *r, bool pkce);

/* Sign-ins between the redirect and the callback, kept in a table of the caller's (who locks
 * it if need be): a request, what the caller ties to it and when it expires. */
struct auth_oidc_pending {
    struct auth_oidc_request rq; /* rq.state "" = a free slot */
    char ref[AUTH_REG_ID_MAX];   /* the caller's */
    int64_t expires_at;          /* monotonic us: a wall-clock step leaves it be */
};
/* A free or expired slot of the n in t; the one closest to expiring when all are taken. */
struct auth_oidc_pending *auth_oidc_pending_slot(struct auth_oidc_pending *t, size_t n,
                                                 int64_t now);
/* Takes state's entry out of t (wiped, so that a second callback with it finds nothing): true
 * with *out when it was there and had not expired. */
bool auth_oidc_pending_take(struct auth_oidc_pending *t, size_t n, const char *state,
                            int64_t now, struct auth_oidc_pending *out);

struct auth_oidc_rp;
/* A relying party of issuer as client_id (client_secret, redirect_uri); the strings are
 * copied. Nothing is fetched yet. */
struct auth_oidc_rp *auth_oidc_rp_new(const char *issuer, const char *client_id,
                                      const char *client_secret, const char *redirect_uri);
void auth_oidc_rp_free(struct auth_oidc_rp *rp); /* NULL is fine; wipes the secret */
/* Fetches the discovery document and the keys unless already there; why on failure. */
int auth_oidc_rp_discover(struct auth_oidc_rp *rp, char *why, size_t whysize);
/* The provider's authorization URL for r (malloc'd; after a successful discover): scope
 * words, a code challenge (S256 unless plain) when r has a verifier, and extra "key=value"
 * parameters (NULL for none). */
char *auth_oidc_rp_authorize_url(struct auth_oidc_rp *rp, const struct auth_oidc_request *r,
                                 const struct hs_strv *scope, bool plain,
                                 const struct hs_strv *extra);
/* The callback's code for r: exchanges it (with r's verifier), verifies the ID token's
 * signature with the provider's keys (refetched once for an unknown key id) and its claims
 * (auth_oidc_check_claims with r's nonce), and adds the claims the token lacks from userinfo.
 * *claims is the caller's. -EACCES refused by the provider; -EBADMSG a token that does not
 * verify; others when the provider cannot be reached. why in words fit for the user. */
int auth_oidc_rp_finish(struct auth_oidc_rp *rp, const struct auth_oidc_request *r,
                        const char *code, json_t **claims, char *why, size_t whysize);

/* The checks on an ID token's claims: iss, aud (and azp), exp and nbf with
 * AUTH_OIDC_CLOCK_SKEW_S of clock skew, nonce, sub. -EBADMSG with why. */
int auth_oidc_check_claims(const char *issuer, const char *client_id, const json_t *claims,
                           const char *nonce, int64_t now_s, char *why, size_t whysize);
/* email_verified as providers send it: a boolean, or (some) the string "true". */
bool auth_oidc_email_verified(const json_t *claims);
/* headscale's provider identifier, "<issuer>/<subject>" (malloc'd). */
char *auth_oidc_identifier(const char *iss, const char *sub);
/* Appends ?key=value (&key=value once u has a query) with value percent-encoded. */
void auth_query_add(struct hs_buf *u, const char *key, const char *value);
/* A secret kept in a file (up to 4 KiB), its trailing white space cut: *out is malloc'd.
 * why names the file on failure. */
int auth_secret_file_read(const char *path, char **out, char *why, size_t whysize);

/* ---- JWT (RFC 7519 compact JWS, RS256 and ES256) ---- */

#define AUTH_JWT_MAX 16384 /* bytes of a token we look at; longer ones are refused */

/* base64url without padding; the result is malloc'd. */
char *auth_b64url(const uint8_t *in, size_t n);
/* Checks token's signature with the key of jwks (a JWK Set) its header names and, on success,
 * gives its claims (*claims is the caller's). -E2BIG over AUTH_JWT_MAX, -EINVAL malformed,
 * -ENOTSUP another algorithm, -ENOKEY no such key in jwks (fetch them again), -EBADMSG bad
 * signature; err says which in words. The claims are not checked here. */
int auth_jwt_verify(const char *token, const json_t *jwks, json_t **claims, char *err,
                    size_t errsize);
/* Signs claims with an RSA key: *out (malloc'd) is the token. */
int auth_jwt_sign_rs256(EVP_PKEY *key, const char *kid, const json_t *claims, char **out);
/* The public half of an RSA key as a JWK, and a key id for it (SHA-256 of its DER form). */
json_t *auth_jwk_rsa_public(const EVP_PKEY *key, const char *kid);
char *auth_jwk_kid(EVP_PKEY *key);

#endif
