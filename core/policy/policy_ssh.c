/* SSH rules per destination node (tailcfg.SSHPolicy) and node capabilities from nodeAttrs. */
#include "policy/policy_internal.h"

int policy_net_ssh(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    (void)c, (void)i;
    return hs_buf_puts(out, "[]");
}

int policy_net_capmap(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    (void)c, (void)i;
    return hs_buf_puts(out, "{}");
}
