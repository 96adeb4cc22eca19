#include <criterion/criterion.h>
#include <string.h>

#include "util/util.h"

Test(buf, append_stops_at_max)
{
    struct hs_buf b;
    hs_buf_init(&b, 4);
    cr_assert_eq(hs_buf_append(&b, "abcd", 4), 0);
    cr_assert_eq(hs_buf_append(&b, "e", 1), -E2BIG);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.data, "abcd");
    cr_assert_eq(hs_buf_appendf(&b, "%d", 1), -E2BIG);
    cr_assert_eq(b.len, 4);
    hs_buf_free(&b);
}

Test(buf, appendf_grows)
{
    struct hs_buf b;
    hs_buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(hs_buf_appendf(&b, "%04d", i), 0);
    cr_assert_eq(b.len, 4000);
    cr_assert(strncmp(b.data + 3996, "0999", 4) == 0);
    hs_buf_free(&b);
}

Test(parse, u64_bounds)
{
    uint64_t v;
    cr_assert_eq(hs_parse_u64("18446744073709551615", UINT64_MAX, &v), 0);
    cr_assert_eq(v, UINT64_MAX);
    cr_assert_eq(hs_parse_u64("18446744073709551616", UINT64_MAX, &v), -ERANGE);
    cr_assert_eq(hs_parse_u64("65536", 65535, &v), -ERANGE);
    cr_assert_eq(hs_parse_u64("", 10, &v), -EINVAL);
    cr_assert_eq(hs_parse_u64("12a", 100, &v), -EINVAL);
    cr_assert_eq(hs_parse_u64("-1", 100, &v), -EINVAL);
}

Test(parse, durations)
{
    static const struct { const char *s; int64_t us; } ok[] = {
        { "0", 0 },
        { "30s", 30 * HS_USEC_PER_SEC },
        { "30m", 1800 * HS_USEC_PER_SEC },
        { "24h", 86400 * HS_USEC_PER_SEC },
        { "365d", 365 * 86400 * HS_USEC_PER_SEC },
        { "1w", 7 * 86400 * HS_USEC_PER_SEC },
        { "1y", 365 * 86400 * HS_USEC_PER_SEC },
        { "800ms", 800000 },
        { "1h30m", 5400 * HS_USEC_PER_SEC },
        { "1.5h", 5400 * HS_USEC_PER_SEC },
        { "250us", 250 },
    };
    static const char *const bad[] = { "", "s", "30", "30x", "-5s", "1h-", "abc", "1..5h",
                                       "99999999999999999999d" };
    int64_t us;

    for (size_t i = 0; i < HS_ARRAY_LEN(ok); i++) {
        cr_assert_eq(hs_parse_duration(ok[i].s, &us), 0, "%s", ok[i].s);
        cr_assert_eq(us, ok[i].us, "%s", ok[i].s);
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++)
        cr_assert_lt(hs_parse_duration(bad[i], &us), 0, "%s accepted", bad[i]);
}

Test(time, rfc3339_round_trip)
{
    char buf[48];
    int64_t us;

    cr_assert_eq(hs_parse_rfc3339("2024-02-29T12:34:56Z", &us), 0);
    hs_format_rfc3339(us, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-02-29T12:34:56Z");
    cr_assert_eq(hs_parse_rfc3339("2024-02-29T12:34:56.250+02:00", &us), 0);
    hs_format_rfc3339(us, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-02-29T10:34:56.250Z");
    cr_assert_eq(hs_parse_rfc3339("2024-01-01T00:00:00.123456789Z", &us), 0);
    hs_format_rfc3339(us, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-01-01T00:00:00.123456Z");
}

Test(time, rfc3339_rejects)
{
    static const char *const bad[] = { "", "2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z",
                                       "2024-01-01", "2024-01-01T00:00:00", "tomorrow",
                                       "2024-01-01T25:00:00Z", "2024-01-01T00:00:00Zjunk",
                                       "2024-01-01T00:00:00." };
    int64_t us;
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++)
        cr_assert_eq(hs_parse_rfc3339(bad[i], &us), -EINVAL, "%s accepted", bad[i]);
}

Test(hex, decode_exact)
{
    uint8_t out[2];
    cr_assert_eq(hs_hex_decode("0aFf", 4, out, 2), 0);
    cr_assert_eq(out[0], 0x0a);
    cr_assert_eq(out[1], 0xff);
    cr_assert_eq(hs_hex_decode("0aF", 3, out, 2), -EINVAL);
    cr_assert_eq(hs_hex_decode("0aFg", 4, out, 2), -EINVAL);
}

Test(strv, split_and_contains)
{
    struct hs_strv sv = { 0 };
    hs_strv_split(&sv, " tag:a,,tag:b ,", ", ");
    cr_assert_eq(sv.n, 2);
    cr_assert(hs_strv_contains(&sv, "tag:b"));
    cr_assert(!hs_strv_contains(&sv, "tag:c"));
    hs_strv_free(&sv);
}

Test(json, rejects_duplicates_and_size)
{
    char err[128];
    json_t *j = hs_json_load("{\"a\":1,\"a\":2}", 13, 100, err, sizeof(err));
    cr_assert_null(j);
    cr_assert(strstr(err, "duplicate") != NULL, "%s", err);
    cr_assert_null(hs_json_load("{}", 2, 1, err, sizeof(err)));
    cr_assert(strstr(err, "limit") != NULL);
}

Test(utf8, valid_and_sanitize)
{
    char s[] = "ok \xe2\x98\x83 \xff \xe2\x98 end";
    cr_assert(hs_utf8_valid("snow \xe2\x98\x83", 8));
    cr_assert(!hs_utf8_valid("\xc0\xaf", 2), "overlong");
    cr_assert(!hs_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    cr_assert(!hs_utf8_valid("\xf4\x90\x80\x80", 4), "beyond U+10FFFF");
    cr_assert(!hs_utf8_valid(s, strlen(s)));
    hs_utf8_sanitize(s);
    cr_assert(hs_utf8_valid(s, strlen(s)));
    cr_assert_str_eq(s, "ok \xe2\x98\x83 ? ?? end");
}

Test(buf, truncate_undoes_appends)
{
    struct hs_buf b;

    hs_buf_init(&b, 64);
    cr_assert_eq(hs_buf_puts(&b, "keep"), 0);
    cr_assert_eq(hs_buf_puts(&b, "-drop"), 0);
    hs_buf_truncate(&b, 4);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.data, "keep");
    hs_buf_truncate(&b, 10); /* past the end: nothing to cut */
    cr_assert_str_eq(b.data, "keep");
    hs_buf_free(&b);
}
