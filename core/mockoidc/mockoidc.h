/* mockoidc: a small OpenID provider for tests and demos (`headscale mockoidc`), configured as
 * headscale's is, by the environment:
 *   MOCKOIDC_CLIENT_ID, MOCKOIDC_CLIENT_SECRET  the one client it knows (both required)
 *   MOCKOIDC_ADDR, MOCKOIDC_PORT                where it listens (both required)
 *   MOCKOIDC_USERS        a JSON list of users: Subject, Email, EmailVerified,
 *                         PreferredUsername, Phone, Address, Groups (required)
 *   MOCKOIDC_ACCESS_TTL   lifetime of access and ID tokens, a Go duration (default 2m)
 * Its issuer is http://ADDR:PORT/oidc. Every authorization request is approved at once for the
 * next user of the list (a built-in default user once the list is used up), as headscale's
 * mock does; the token endpoint takes the code (once), the client's secret and, when the
 * authorization asked for it, the PKCE verifier (S256 or plain). Tokens are RS256 JWTs signed
 * with a key made at start. Sessions live in memory only. */
#ifndef HS_MOCKOIDC_H
#define HS_MOCKOIDC_H

#include <stdbool.h>

struct mockoidc;

/* Reads the environment, makes the key and starts listening. On failure *why says what. */
int mockoidc_start(struct mockoidc **out, char *why, size_t whysize);
void mockoidc_stop(struct mockoidc *m); /* NULL is fine */
const char *mockoidc_issuer(const struct mockoidc *m);

/* Runs until SIGINT or SIGTERM: the `headscale mockoidc` command. Returns the exit status. */
int mockoidc_main(void);

#endif
