/* derp internals shared by derpmap.c, derpmap_parse.c and derpmap_fetch.c. */
#ifndef HS_DERP_INTERNAL_H
#define HS_DERP_INTERNAL_H

#include <stdatomic.h>

#include "derp/derp.h"

#define DERPMAP_FETCH_TIMEOUT_MS 10000L
#define DERPMAP_MAX_REDIRS 5L

/* GETs url (http, https, file) into out (capped at DERPMAP_MAX_BYTES). cancel (may be NULL)
 * aborts a transfer in progress as soon as it becomes true. 0, or -EIO / -E2BIG / -ECANCELED
 * with a message in err. */
int derp__fetch_url(const char *url, const atomic_bool *cancel, struct hs_buf *out, char *err,
                    size_t errsize);

#endif
