#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

json_t *hs_json_load(const char *data, size_t len, size_t max, char *err, size_t errsize)
{
    json_error_t je;
    json_t *j;

    if (len > max) {
        snprintf(err, errsize, "JSON body of %zu bytes exceeds the limit of %zu", len, max);
        return NULL;
    }
    j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        snprintf(err, errsize, "invalid JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
    return j;
}

const char *hs_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

char *hs_json_dump(const json_t *j, size_t flags)
{
    char *s = json_dumps(j, flags | JSON_ENCODE_ANY);
    if (!s)
        abort();
    return s;
}
