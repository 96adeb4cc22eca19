/* The policy's own `tests`, run against the compiled net (and `sshTests` through
 * policy_ssh.c). */
#include "policy/policy_internal.h"

int pol__load_tests(struct policy *p, char *err, size_t errsize)
{
    (void)p, (void)err, (void)errsize;
    return 0;
}

void pol__tests_free(struct pol_tests *t)
{
    (void)t;
}

int pol__check_tests(const struct policy_net *c, char *err, size_t errsize)
{
    return pol__check_ssh_tests(c, err, errsize);
}
