/* `headscale mockoidc`: the stand-in OpenID provider of core/mockoidc, for tests and demos. It
 * reads no configuration file, only its MOCKOIDC_* environment. */
#include "cli/cli_internal.h"
#include "mockoidc/mockoidc.h"

int cli_cmd_mockoidc(struct cli_ctx *ctx)
{
    (void)ctx;
    return mockoidc_main();
}
