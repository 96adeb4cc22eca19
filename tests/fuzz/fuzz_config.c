/* config.yaml: YAML events, both layouts, every value parser. */
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hs_config cfg;
    struct config_diags diags;

    config_load_text((const char *)data, size, "/nonexistent", CONFIG_FOR_SERVER, &cfg, &diags);
    config_free(&cfg);
    config_diags_free(&diags);
    return 0;
}
