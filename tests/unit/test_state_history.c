/* Tests for core/state's online history: the ring of one point per step that the web admin's
 * 24-hour chart is drawn from. */
#include <criterion/criterion.h>

#include "state/state.h"

#define STEP STATE_HISTORY_STEP_US
#define T0 (INT64_C(1800000000) * HS_USEC_PER_SEC) /* a multiple of the step */

static struct state_history h;
static struct state_history_point out[STATE_HISTORY_POINTS];

static void reset(void)
{
    memset(&h, 0, sizeof(h));
    memset(out, 0, sizeof(out));
}

TestSuite(state_history, .init = reset);

Test(state_history, empty_reads_nothing)
{
    cr_assert_eq(state_history_read(&h, out), 0);
}

Test(state_history, a_step_keeps_its_latest_sample)
{
    state_history_add(&h, T0 + 1, 3);
    state_history_add(&h, T0 + STEP / 2, 7);
    state_history_add(&h, T0 + STEP - 1, 5);
    cr_assert_eq(state_history_read(&h, out), 1);
    cr_assert_eq(out[0].at, T0, "a point is dated at the start of its step");
    cr_assert_eq(out[0].online, 5);
}

Test(state_history, each_step_is_a_point_oldest_first)
{
    state_history_add(&h, T0, 1);
    state_history_add(&h, T0 + STEP, 2);
    state_history_add(&h, T0 + 3 * STEP + 9, 4); /* a step without a tick leaves a gap */
    cr_assert_eq(state_history_read(&h, out), 3);
    cr_assert_eq(out[0].online, 1);
    cr_assert_eq(out[1].at, T0 + STEP);
    cr_assert_eq(out[1].online, 2);
    cr_assert_eq(out[2].at, T0 + 3 * STEP);
    cr_assert_eq(out[2].online, 4);
}

Test(state_history, a_full_ring_drops_the_oldest)
{
    size_t extra = 5, n;

    for (size_t i = 0; i < STATE_HISTORY_POINTS + extra; i++)
        state_history_add(&h, T0 + (int64_t)i * STEP, (uint32_t)i);
    n = state_history_read(&h, out);
    cr_assert_eq(n, STATE_HISTORY_POINTS);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(out[i].online, i + extra, "point %zu", i);
        cr_assert_eq(out[i].at, T0 + (int64_t)(i + extra) * STEP);
    }
    /* 24 hours at the step */
    cr_assert_eq(out[n - 1].at - out[0].at, 24 * 3600 * HS_USEC_PER_SEC - STEP);
}

Test(state_history, a_time_before_the_epoch_changes_nothing)
{
    state_history_add(&h, T0 + STEP, 4);
    state_history_add(&h, -1, 9);
    cr_assert_eq(state_history_read(&h, out), 1);
    cr_assert_eq(out[0].at, T0 + STEP);
    cr_assert_eq(out[0].online, 4);
}

Test(state_history, a_clock_set_back_drops_what_lies_ahead_and_goes_on)
{
    int64_t back = 2 * 3600 * HS_USEC_PER_SEC; /* a multiple of the step */

    for (int i = 0; i < 30; i++)
        state_history_add(&h, T0 + i * STEP, (uint32_t)i);
    state_history_add(&h, T0 + 29 * STEP - back + 1, 100);
    cr_assert_eq(state_history_read(&h, out), 30 - back / STEP);
    cr_assert_eq(out[0].at, T0, "the points before the new time stay");
    cr_assert_eq(out[29 - back / STEP].at, T0 + 29 * STEP - back);
    cr_assert_eq(out[29 - back / STEP].online, 100, "the newest point follows the count again");
    state_history_add(&h, T0 + 30 * STEP - back, 101);
    cr_assert_eq(state_history_read(&h, out), 31 - back / STEP, "and the next step adds one");
    cr_assert_eq(out[30 - back / STEP].online, 101);
}
