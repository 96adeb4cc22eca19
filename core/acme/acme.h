/* acme: the listener's certificate from an ACME CA (RFC 8555), as headscale's
 * tls_letsencrypt_* keys promise: obtained at start, cached, renewed ahead of expiry while the
 * server runs.
 *
 * A worker thread does the talking (libcurl; the CA bundle for the directory's TLS is the
 * system's, or the file/folder in the SSL_CERT_FILE / SSL_CERT_DIR environment, as for a Go
 * program such as headscale). Challenges: HTTP-01 answered on tls_letsencrypt_listen (which
 * sends every other request to server_url), or TLS-ALPN-01 (RFC 8737) answered by the
 * listener's own TLS context. The account key and the certificate live in
 * tls_letsencrypt_cache_dir (folder 0700, files 0600) under the names headscale's autocert
 * uses: "acme_account+key" and the hostname (key, then the chain, in PEM), so a cache moves
 * between the two servers. Each new certificate goes into the net_tls context: handshakes
 * from then on see it, connections already open keep theirs. A failure is logged and tried
 * again with a growing pause (ACME_RETRY_MIN_S doubling up to ACME_RETRY_MAX_S). */
#ifndef HS_ACME_H
#define HS_ACME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "net/net.h"

#define ACME_RETRY_MIN_S 2
#define ACME_RETRY_MAX_S 3600
#define ACME_RENEW_BEFORE_S (30 * 86400) /* or a third of the lifetime, if that is sooner */

struct acme;

struct acme_deps {
    const struct hs_config *cfg; /* outlives the acme */
    struct net_tls *tls;         /* outlives the acme; gets each certificate */
    int http_fd;                 /* HTTP-01: listening socket (taken over), else -1 */
};

/* Loads or makes the account key, puts a cached certificate that is still good into the
 * context, and starts the worker that obtains and renews it. 0 or a negative errno (logged);
 * the socket is closed on failure too. */
int acme_start(const struct acme_deps *deps, struct acme **out);
/* Stops the worker (an exchange under way ends within its timeouts). NULL is fine. */
void acme_stop(struct acme *a);

/* How many certificates this process has obtained (tests, logs). */
unsigned acme_issued(const struct acme *a);

/* tls_letsencrypt_listen as a numeric address: Go's service names "http" and "https" for
 * the port become 80 and 443. 0, or -EINVAL when it is not host:port. */
int acme_listen_addr(const char *in, char *out, size_t size);

#endif
