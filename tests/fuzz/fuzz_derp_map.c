/* DERP map documents (derp.paths files and derp.urls downloads: JSON, or YAML as headscale's
 * derp.yaml) converted to tailcfg.DERPMap. What comes out must serialise. */
#include <stdlib.h>
#include <string.h>

#include "derp/derp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *map = derpmap_parse((const char *)data, size, err, sizeof(err));
    char *text;

    if (!map)
        return 0;
    if (!(text = json_dumps(map, JSON_COMPACT)))
        abort();
    free(text);
    json_decref(map);
    return 0;
}
