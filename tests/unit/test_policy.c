#include <criterion/criterion.h>
#include <string.h>

#include "policy/policy.h"

static int check(const char *text, char *err, size_t n)
{
    return policy_check(text, strlen(text), err, n);
}

Test(hujson, comments_and_trailing_commas)
{
    const char *in = "{\n // comment\n \"acls\": [ /* inline */\n  {\"action\": \"accept\", "
                     "\"src\": [\"*\",], \"dst\": [\"*:*\"],},\n ],\n}\n";
    char out[256], err[128];

    cr_assert_eq(policy_hujson_standardize(in, strlen(in), out, err, sizeof(err)), 0);
    cr_assert_eq(strlen(out), strlen(in));
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "%s", out);
    cr_assert_eq(json_array_size(json_object_get(j, "acls")), 1);
    json_decref(j);
}

Test(hujson, strings_keep_comment_markers)
{
    const char *in = "{\"hosts\": {\"a//b,]\": \"100.64.0.1\"}}";
    char out[128], err[128];
    cr_assert_eq(policy_hujson_standardize(in, strlen(in), out, err, sizeof(err)), 0);
    cr_assert_str_eq(out, in);
}

Test(hujson, unterminated)
{
    char out[64], err[128];
    cr_assert_eq(policy_hujson_standardize("{\"a", 3, out, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "string"));
    cr_assert_eq(policy_hujson_standardize("{/* x", 5, out, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "comment"));
}

Test(policy, check_rejects)
{
    char err[256];
    cr_assert_eq(check("{", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("[]", err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "object"));
    cr_assert_eq(check("{\"acl\": []}", err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "acl"));
    cr_assert_eq(check("{\"acls\": {}}", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"acls\": [], \"acls\": []}", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"groups\": {\"group:a\": [\"alice@\"]}, \"acls\": []}", err,
                       sizeof(err)), 0);
}

Test(policy, byte_by_byte_prefixes_never_crash)
{
    const char *in = "{\"acls\": [{\"action\": \"accept\", // c\n \"src\": [\"*\"]}], }";
    char err[256];
    for (size_t n = 0; n <= strlen(in); n++)
        policy_check(in, n, err, sizeof(err));
}

Test(policy, acl_entries_checked)
{
    char err[256];
    cr_assert_eq(check("{\"acls\": [{\"action\": \"dance\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
                       err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "accept"), "%s", err);
    cr_assert_eq(check("{\"acls\": [{\"action\": \"accept\", \"src\": \"*\", \"dst\": [\"*:*\"]}]}",
                       err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"acls\": [1]}", err, sizeof(err)), -EINVAL);
    cr_assert_eq(check("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
                       err, sizeof(err)), 0);
}
