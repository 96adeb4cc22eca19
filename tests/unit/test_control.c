/* control: the reply backlog that new full maps wait on, and the limits on what clients send
 * (the loop and the protocol are proven by the system tests with real clients). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_internal.h"
#include "control/service_internal.h"

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

/* ---- Hostinfo and Endpoints ---- */

static json_t *hostinfo_of_size(size_t pad, size_t ports)
{
    json_t *hi = json_pack("{s:s, s:s}", "Hostname", "h", "Pad", ""), *svc = json_array();
    char *fill = calloc(1, pad + 1);

    memset(fill, 'x', pad);
    json_object_set_new(hi, "Pad", json_string(fill));
    free(fill);
    json_array_append_new(svc, json_pack("{s:s, s:i}", "Proto", "peerapi4", "Port", 1234));
    for (size_t i = 0; i < ports; i++)
        json_array_append_new(svc, json_pack("{s:s, s:i, s:s}", "Proto", "tcp", "Port",
                                             (int)(i % 65535) + 1, "Description", "some-daemon"));
    json_object_set_new(hi, "Services", svc);
    return hi;
}

Test(control, hostinfo_within_the_limit_is_kept_whole)
{
    json_t *hi = hostinfo_of_size(1000, 10);
    char *text = NULL;
    size_t len = 0;

    cr_assert_eq(control__hostinfo_text(hi, &text, &len), 0);
    cr_expect_eq(len, strlen(text));
    cr_expect(strstr(text, "\"tcp\"") != NULL, "the port list stays when there is room");
    free(text);
    json_decref(hi);
    cr_expect_eq(control__hostinfo_text(json_array(), &text, NULL), -EINVAL);
}

Test(control, hostinfo_port_list_goes_first)
{
    json_t *hi = hostinfo_of_size(1000, 2000); /* about 100 KB of ports */
    char *text = NULL, *before = json_dumps(hi, JSON_COMPACT);
    size_t len = 0;

    cr_assert_eq(control__hostinfo_text(hi, &text, &len), 0);
    cr_expect_leq(len, CONTROL_HOSTINFO_MAX);
    cr_expect(strstr(text, "peerapi4") != NULL, "PeerAPI ports are needed by peers");
    cr_expect(strstr(text, "\"tcp\"") == NULL);
    cr_expect(strstr(text, "\"Hostname\":\"h\"") != NULL);
    free(text);
    text = json_dumps(hi, JSON_COMPACT);
    cr_expect_str_eq(text, before, "the request itself is left alone");
    free(text);
    free(before);
    json_decref(hi);
}

Test(control, hostinfo_too_large_is_refused)
{
    json_t *hi = hostinfo_of_size(CONTROL_HOSTINFO_MAX, 0);
    char *text = NULL;
    size_t len = 0;

    cr_assert_eq(control__hostinfo_text(hi, &text, &len), -E2BIG);
    cr_expect_null(text);
    cr_expect_gt(len, CONTROL_HOSTINFO_MAX, "the size is reported: %zu", len);
    json_decref(hi);
    /* Exactly at the limit is fine. */
    hi = json_pack("{s:s}", "P", "");
    char *fill = calloc(1, CONTROL_HOSTINFO_MAX);
    memset(fill, 'y', CONTROL_HOSTINFO_MAX - strlen("{\"P\":\"\"}"));
    json_object_set_new(hi, "P", json_string(fill));
    free(fill);
    cr_assert_eq(control__hostinfo_text(hi, &text, &len), 0);
    cr_expect_eq(len, CONTROL_HOSTINFO_MAX);
    free(text);
    json_decref(hi);
}

Test(control, pending_registration_keeps_the_identity)
{
    json_t *hi = hostinfo_of_size(100, 3000), *back;
    char *text = NULL;
    size_t len = 0;

    json_object_set_new(hi, "NetInfo", json_pack("{s:i}", "PreferredDERP", 1));
    json_object_set_new(hi, "RoutableIPs", json_pack("[s]", "10.0.0.0/24"));
    json_object_set_new(hi, "SSH_HostKeys", json_pack("[s]", "ssh-ed25519 AAAA"));
    json_object_set_new(hi, "RequestTags", json_pack("[s]", "tag:a"));
    cr_assert_eq(control__hostinfo_pending(hi, &text, &len), 0);
    back = json_loads(text, 0, NULL);
    cr_expect_str_eq(hs_json_str(back, "Hostname"), "h");
    cr_expect_eq(json_array_size(json_object_get(back, "RequestTags")), 1, "tags are checked "
                 "when it completes");
    cr_expect_null(json_object_get(back, "Services"));
    cr_expect_null(json_object_get(back, "NetInfo"));
    cr_expect_null(json_object_get(back, "RoutableIPs"));
    cr_expect_null(json_object_get(back, "SSH_HostKeys"));
    cr_expect_eq(len, strlen(text));
    json_decref(back);
    free(text);
    json_decref(hi);
    /* Identity fields padded past the limit: refused. */
    hi = hostinfo_of_size(CONTROL_PENDING_HOSTINFO_MAX, 0);
    text = NULL;
    cr_expect_eq(control__hostinfo_pending(hi, &text, &len), -E2BIG);
    cr_expect_null(text);
    cr_expect_gt(len, CONTROL_PENDING_HOSTINFO_MAX);
    json_decref(hi);
}

Test(control, endpoints_valid_and_bounded)
{
    json_t *ep = json_pack("[s, s, i, s, s, s, s, s, s, s]", "192.0.2.1:41641",
                           "[2001:db8::1]:41641", 7, "192.0.2.1", "192.0.2.1:0",
                           "192.0.2.1:70000", "[fe80::1%eth0]:1", "example.com:80",
                           "300.1.1.1:5", "1.2.3.4:5x");
    size_t dropped = 0;
    char *text = control__endpoints_text(ep, &dropped);

    cr_expect_str_eq(text, "[\"192.0.2.1:41641\",\"[2001:db8::1]:41641\"]");
    cr_expect_eq(dropped, 8);
    free(text);
    json_decref(ep);

    ep = json_array();
    for (int i = 0; i < 3 * CONTROL_ENDPOINTS_MAX; i++)
        json_array_append_new(ep, json_sprintf("198.18.%d.%d:%d", i / 250, i % 250, 1000 + i));
    text = control__endpoints_text(ep, &dropped);
    json_t *back = json_loads(text, 0, NULL);
    cr_expect_eq(json_array_size(back), CONTROL_ENDPOINTS_MAX);
    cr_expect_str_eq(json_string_value(json_array_get(back, 0)), "198.18.0.0:1000",
                     "the client's first (preferred) ones are kept");
    cr_expect_eq(dropped, 2 * CONTROL_ENDPOINTS_MAX);
    json_decref(back);
    free(text);
    json_decref(ep);
}

/* ---- new registrations per client address ---- */

static void ip4(uint8_t out[16], uint8_t last)
{
    memset(out, 0, 16);
    out[10] = out[11] = 0xff;
    out[12] = 198, out[13] = 18, out[14] = 0, out[15] = last;
}

Test(control, reglimit_burst_then_steady_rate)
{
    struct reglimit *l = control__reglimit_new(6, 60 * HS_USEC_PER_SEC, 16); /* 6 at once, then one per 10 s */
    int64_t t = 1000 * HS_USEC_PER_SEC;
    uint8_t a[16], b[16];

    ip4(a, 1);
    ip4(b, 2);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(control__reglimit_take(l, a, t), 0, "burst %d", i);
    cr_expect_eq(control__reglimit_take(l, a, t), 10, "the seventh waits 10 s");
    cr_expect_eq(control__reglimit_take(l, b, t), 0, "another address is not held up");
    cr_expect_eq(control__reglimit_take(l, a, t + 9 * HS_USEC_PER_SEC), 1);
    cr_expect_eq(control__reglimit_take(l, a, t + 10 * HS_USEC_PER_SEC), 0);
    cr_expect_eq(control__reglimit_take(l, a, t + 10 * HS_USEC_PER_SEC), 10);
    cr_expect_eq(control__reglimit_take(l, a, t + 3600 * HS_USEC_PER_SEC), 0, "idle: refilled");
    control__reglimit_free(l);
    cr_expect_null(control__reglimit_new(0, 60 * HS_USEC_PER_SEC, 16), "0: no limit");
    cr_expect_eq(control__reglimit_take(NULL, a, t), 0);
}

Test(control, reglimit_one_count_for_everyone)
{
    /* 1024 per 15 minutes, as the registration table turns over by itself. */
    struct reglimit *l = control__reglimit_new(1024, 15 * 60 * HS_USEC_PER_SEC, 1);
    static const uint8_t everyone[16];
    int64_t t = 5 * HS_USEC_PER_SEC;

    for (int i = 0; i < 1024; i++)
        cr_assert_eq(control__reglimit_take(l, everyone, t), 0, "%d", i);
    cr_expect_eq(control__reglimit_take(l, everyone, t), 1, "then one every 0.88 s");
    cr_expect_eq(control__reglimit_take(l, everyone, t + 900 * 1000), 0);
    control__reglimit_free(l);
}

Test(control, reglimit_counts_ipv6_per_64)
{
    struct reglimit *l = control__reglimit_new(2, 60 * HS_USEC_PER_SEC, 16);
    uint8_t x[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1 }, y[16];
    int64_t t = 5 * HS_USEC_PER_SEC;

    memcpy(y, x, 16);
    x[15] = 1;
    y[15] = 2; /* same /64, another host part */
    cr_assert_eq(control__reglimit_take(l, x, t), 0);
    cr_assert_eq(control__reglimit_take(l, y, t), 0);
    cr_expect_gt(control__reglimit_take(l, x, t), 0, "rotating addresses in a /64 gains nothing");
    y[7] = 2; /* another /64 */
    cr_expect_eq(control__reglimit_take(l, y, t), 0);
    control__reglimit_free(l);
}

Test(control, reglimit_table_is_bounded)
{
    struct reglimit *l = control__reglimit_new(1, 60 * HS_USEC_PER_SEC, 4);
    int64_t t = 5 * HS_USEC_PER_SEC;
    uint8_t a[16];

    /* More sources than the table holds: each still gets its first registration; the table
     * gives way to newcomers instead of growing. */
    for (int i = 0; i < 50; i++) {
        ip4(a, (uint8_t)i);
        cr_assert_eq(control__reglimit_take(l, a, t), 0, "source %d", i);
    }
    ip4(a, 49);
    cr_expect_gt(control__reglimit_take(l, a, t), 0, "the newest is still tracked");
    control__reglimit_free(l);
}
