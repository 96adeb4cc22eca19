/* The dns.extra_records_path file: JSON of any shape, records good and bad. Whatever comes
 * in, the parser either hands back records that are A/AAAA with an address of that family,
 * or an error with a message; never both. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dns_record *v;
    size_t n;
    char err[256] = "";
    int rc = config_dns_records_parse((const char *)data, size, &v, &n, err, sizeof(err));

    if (rc < 0 && (v || n || !err[0]))
        abort(); /* an error leaves nothing behind and says why */
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!v[i].name[0] || (strcasecmp(v[i].type, "A") && strcasecmp(v[i].type, "AAAA")))
            abort();
    if (rc == 0)
        config_dns_records_free(v, n);
    return 0;
}
