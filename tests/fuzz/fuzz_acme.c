/* acme: hostile answers from an ACME server. The first byte picks the reader (mod 5): the
 * directory, an order, an authorization (for http-01 and for tls-alpn-01), a problem
 * document, or the ALPN list of a ClientHello (net_alpn_offers, which answers TLS-ALPN-01). */
#include <stdlib.h>
#include <string.h>

#include "acme/acme_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct acme_directory *d = malloc(sizeof(*d));
    struct acme_order *o = malloc(sizeof(*o));
    struct acme_authz *a = malloc(sizeof(*a));
    const char *body = (const char *)data + 1;
    char err[256], type[64], out[256];

    if (size > 0) {
        switch (data[0] % 5) {
        case 0: acme__parse_directory(body, size - 1, d, err, sizeof(err)); break;
        case 1: acme__parse_order(body, size - 1, o, err, sizeof(err)); break;
        case 2:
            acme__parse_authz(body, size - 1, "http-01", a, err, sizeof(err));
            acme__parse_authz(body, size - 1, "tls-alpn-01", a, err, sizeof(err));
            break;
        case 3: acme__parse_problem(body, size - 1, type, sizeof(type), out, sizeof(out)); break;
        default: net_alpn_offers(data + 1, size - 1, "acme-tls/1"); break;
        }
    }
    free(d);
    free(o);
    free(a);
    return 0;
}
