/* control: the reply backlog that new full maps wait on (the loop and the protocol are
 * proven by the system tests with real clients). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_internal.h"

static struct control *ctl_new(void)
{
    struct key_pair k;
    struct control_handlers h = { 0 };

    keys_generate(&k);
    return control_new(&k, &h, 1);
}

static void *drain_soon(void *arg)
{
    usleep(20 * 1000);
    control__backlog_add(arg, -(int64_t)CONTROL_BACKLOG_SOFT);
    return NULL;
}

Test(control, backlog_wait)
{
    struct control *c = ctl_new();
    pthread_t th;
    int64_t t0;

    /* Under the limit: no wait at all, whatever the timeout. */
    t0 = hs_monotonic_us();
    control_wait_backlog(c, 60 * HS_USEC_PER_SEC);
    cr_assert_lt(hs_monotonic_us() - t0, 10 * HS_USEC_PER_SEC);

    /* Over it and nobody reading: the timeout ends the wait. */
    control__backlog_add(c, (int64_t)CONTROL_BACKLOG_SOFT + 1);
    t0 = hs_monotonic_us();
    control_wait_backlog(c, 50 * 1000);
    cr_assert_geq(hs_monotonic_us() - t0, 50 * 1000);

    /* Over it until the loop sends some: the drain wakes the waiter long before its timeout. */
    cr_assert_eq(pthread_create(&th, NULL, drain_soon, c), 0);
    t0 = hs_monotonic_us();
    control_wait_backlog(c, 60 * HS_USEC_PER_SEC);
    cr_assert_lt(hs_monotonic_us() - t0, 10 * HS_USEC_PER_SEC);
    pthread_join(th, NULL);
    control_free(c);
}
