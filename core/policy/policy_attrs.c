/* The `nodeAttrs` section: capabilities of the nodes it targets (tailcfg.NodeCapMap). */
#include "policy/policy_internal.h"

int pol__load_attrs(struct policy *p, char *err, size_t errsize)
{
    (void)p, (void)err, (void)errsize;
    return 0;
}

void pol__attrs_free(struct pol_attrs *a)
{
    (void)a;
}

int policy_net_capmap(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    (void)c, (void)i;
    return hs_buf_puts(out, "{}");
}
