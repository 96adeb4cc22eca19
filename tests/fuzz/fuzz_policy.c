/* Policy documents arrive from operators and from the REST API: HuJSON parse + checks. */
#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    policy_check((const char *)data, size, err, sizeof(err));
    return 0;
}
