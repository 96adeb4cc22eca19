/* YAML policies arrive from operators (acl.yaml) and from the REST API: libyaml events to
 * JSON, with the depth, alias and document limits of policy_yaml_to_json. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *j = policy_yaml_to_json((const char *)data, size, err, sizeof(err));

    /* A failure must say where; a success must be a value jansson can write back out. */
    if (!j && (err[0] != 'l' || err[1] != 'i'))
        __builtin_trap();
    if (j) {
        char *s = json_dumps(j, JSON_ENCODE_ANY);
        if (!s)
            __builtin_trap();
        free(s);
    }
    json_decref(j);
    return 0;
}
