/* policy: ACL policy documents. This first part parses and checks the document (HuJSON: JSON
 * with comments and trailing commas, as Tailscale writes it); compiling it into packet filters
 * comes with the policy issue. */
#ifndef HS_POLICY_H
#define HS_POLICY_H

#include <stddef.h>

#include "util/util.h"

#define POLICY_MAX_BYTES (4u << 20)

/* Rewrites HuJSON into standard JSON of the same length (comments and trailing commas become
 * spaces, so line/column numbers in later errors still point at the original text).
 * out must hold len + 1 bytes. Returns 0 or -EINVAL with a message in err. */
int policy_hujson_standardize(const char *in, size_t len, char *out, char *err, size_t errsize);

/* Parses a policy document; NULL on error with a message ("line 3: ...") in err.
 * The caller owns the returned object. */
json_t *policy_parse(const char *text, size_t len, char *err, size_t errsize);

/* Checks that text is a valid policy document; 0 or -EINVAL with a message in err. */
int policy_check(const char *text, size_t len, char *err, size_t errsize);

#endif
