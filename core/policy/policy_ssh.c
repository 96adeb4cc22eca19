/* The `ssh` section: SSH rules per destination node (tailcfg.SSHPolicy), and `sshTests`. */
#include "policy/policy_internal.h"

int pol__load_ssh(struct policy *p, char *err, size_t errsize)
{
    (void)p, (void)err, (void)errsize;
    return 0;
}

void pol__ssh_free(struct pol_ssh *s)
{
    (void)s;
}

int policy_net_ssh(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    (void)c, (void)i;
    return hs_buf_puts(out, "[]");
}

int pol__check_ssh_tests(const struct policy_net *c, char *err, size_t errsize)
{
    (void)c, (void)err, (void)errsize;
    return 0;
}
