/* cli: argv parsing, user references, tables, -o formats, key prefixes, expirations and
 * the error paths that need no server. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "server/server.h"

#define ARGV(...) ((char *[]){ "headscale", __VA_ARGS__, NULL })
#define ARGC(...) ((int)(sizeof((char *[]){ "headscale", __VA_ARGS__ }) / sizeof(char *)))
#define PARSE(a, ...) cli_parse(&cli_root, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (a))

static const char *cmd_name(const struct cli_args *a)
{
    return cli_args_cmd(a)->name;
}

/* ---- parsing ---- */

Test(cli_parse, flags_before_the_subcommand)
{
    struct cli_args a;

    cr_assert_eq(PARSE(&a, "-n", "default", "node", "ls"), 0, "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "list");
    cr_assert_str_eq(a.path[1]->name, "nodes");
    cr_assert_str_eq(cli_flag_str(&a, "namespace"), "default");

    cr_assert_eq(PARSE(&a, "-u", "alice", "preauthkeys", "create"), 0, "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "create");
    cr_assert_str_eq(cli_flag_str(&a, "user"), "alice");

    cr_assert_eq(PARSE(&a, "-o", "json", "users", "list"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "output"), "json");
    cr_assert_eq(a.npos, 0);
}

Test(cli_parse, flags_after_and_between)
{
    struct cli_args a;

    cr_assert_eq(PARSE(&a, "users", "create", "bob", "--email", "b@x", "-o", "yaml"), 0, "%s",
                 a.err);
    cr_assert_eq(a.npos, 1);
    cr_assert_str_eq(a.pos[0], "bob");
    cr_assert_str_eq(cli_flag_str(&a, "email"), "b@x");
    cr_assert_str_eq(cli_flag_str(&a, "output"), "yaml");

    cr_assert_eq(PARSE(&a, "preauthkeys", "--user", "7", "create", "--reusable"), 0, "%s", a.err);
    cr_assert(cli_flag_bool(&a, "reusable"));
    cr_assert_not(cli_flag_bool(&a, "ephemeral"));
    cr_assert_str_eq(cli_flag_str(&a, "user"), "7");
}

Test(cli_parse, value_forms)
{
    struct cli_args a;

    cr_assert_eq(PARSE(&a, "apikeys", "create", "--expiration=30m"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "expiration"), "30m");
    cr_assert_eq(PARSE(&a, "apikeys", "create", "-e2h"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "expiration"), "2h");
    cr_assert_eq(PARSE(&a, "apikeys", "create", "-e=3h"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "expiration"), "3h");
    cr_assert_eq(PARSE(&a, "apikeys", "create"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "expiration"), "90d", "default");
    cr_assert_eq(PARSE(&a, "--force=false", "users", "destroy", "x"), 0, "%s", a.err);
    cr_assert_not(cli_flag_bool(&a, "force"));
    cr_assert_eq(PARSE(&a, "users", "destroy", "x", "--force"), 0, "%s", a.err);
    cr_assert(cli_flag_bool(&a, "force"));
}

Test(cli_parse, aliases)
{
    static const struct {
        const char *group, *sub, *want_group, *want_sub;
    } cases[] = {
        { "ns", "new", "users", "create" },       { "namespace", "ls", "users", "list" },
        { "user", "delete", "users", "destroy" }, { "users", "mv", "users", "rename" },
        { "pre", "c", "preauthkeys", "create" },  { "authkey", "revoke", "preauthkeys", "expire" },
        { "preauthkey", "rm", "preauthkeys", "delete" }, { "api", "show", "apikeys", "list" },
        { "apikey", "e", "apikeys", "expire" },   { "apikeys", "remove", "apikeys", "delete" },
        { "machines", "ls", "nodes", "list" },    { "machine", "show", "nodes", "list" },
        { "gen", "private-key", "generate", "private-key" },
        { "policy", "fetch", "policy", "get" },   { "policy", "put", "policy", "set" },
    };
    struct cli_args a;

    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        char *argv[] = { "headscale", (char *)cases[i].group, (char *)cases[i].sub, NULL };
        cli_parse(&cli_root, 3, argv, &a); /* "users create" alone lacks NAME: path still set */
        cr_assert_eq(a.depth, 3, "%s %s: %s", cases[i].group, cases[i].sub, a.err);
        cr_assert_str_eq(a.path[1]->name, cases[i].want_group);
        cr_assert_str_eq(cmd_name(&a), cases[i].want_sub);
    }
}

Test(cli_parse, bad_input)
{
    struct cli_args a;

    cr_assert_eq(PARSE(&a, "users", "list", "--bogus"), -EINVAL);
    cr_assert_str_eq(a.err, "--bogus is not a flag of this command");
    cr_assert_str_eq(cmd_name(&a), "list", "the path stays resolved for the usage text");
    cr_assert_eq(PARSE(&a, "users", "list", "-z"), -EINVAL);
    cr_assert_eq(PARSE(&a, "frobnicate"), -EINVAL);
    cr_assert(strstr(a.err, "has no command \"frobnicate\"") != NULL, "%s", a.err);
    cr_assert_eq(PARSE(&a, "users", "frobnicate"), -EINVAL);
    cr_assert_eq(PARSE(&a, "users", "create"), -EINVAL);
    cr_assert_str_eq(a.err, "missing argument: the usage is \"create NAME\"");
    cr_assert_eq(PARSE(&a, "users", "list", "extra"), -EINVAL);
    cr_assert_eq(PARSE(&a, "apikeys", "create", "-e"), -EINVAL);
    cr_assert(strstr(a.err, "-e needs a value") != NULL, "%s", a.err);
    cr_assert_eq(PARSE(&a, "--force=maybe", "users", "list"), -EINVAL);
    cr_assert_eq(PARSE(&a, "version", "--user", "x"), -EINVAL, "-u is not a version flag");
}

Test(cli_parse, help_groups_and_dashdash)
{
    struct cli_args a;

    cr_assert_eq(PARSE(&a, "users", "create", "--help"), 0);
    cr_assert(a.help);
    cr_assert_eq(PARSE(&a, "users"), 0);
    cr_assert_null(cli_args_cmd(&a)->run, "a group prints its help");
    cr_assert_eq(PARSE(&a, "users", "create", "--", "-weird"), 0, "%s", a.err);
    cr_assert_str_eq(a.pos[0], "-weird");
}

Test(cli_parse, ambiguous_short_flag_before_command)
{
    struct cli_args a;

    /* -t is a bool for nodes list: "list" after it is the subcommand, not its value. */
    cr_assert_eq(PARSE(&a, "nodes", "-t", "list"), 0, "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "list");
    cr_assert(cli_flag_bool(&a, "tags"));
}

Test(cli_parse, list_flags_accumulate)
{
    struct cli_args a;
    struct hs_strv tags = { 0 };

    cr_assert_eq(PARSE(&a, "pre", "create", "--tags", "tag:a,tag:b", "--tags=tag:c"), 0, "%s",
                 a.err);
    cr_assert_eq(cli_flag_list(&a, "tags", &tags), 0);
    cr_assert_eq(tags.n, 3);
    cr_assert_str_eq(tags.v[0], "tag:a");
    cr_assert_str_eq(tags.v[2], "tag:c");
    hs_strv_free(&tags);
}

Test(cli_parse, help_text_lists_flags)
{
    struct cli_args a;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    cr_assert_eq(PARSE(&a, "preauthkeys", "create", "-h"), 0);
    cli_help(&a, f);
    fclose(f);
    cr_assert(strstr(text, "Usage:\n  headscale preauthkeys create [flags]") != NULL, "%s", text);
    cr_assert(strstr(text, "--reusable") != NULL);
    cr_assert(strstr(text, "-e, --expiration string") != NULL, "%s", text);
    cr_assert(strstr(text, "(default \"1h\")") != NULL);
    cr_assert(strstr(text, "-u, --user string") != NULL, "inherited flag shown");
    cr_assert(strstr(text, "--namespace") == NULL, "hidden flag not shown");
    cr_assert(strstr(text, "-o, --output string") != NULL);
    free(text);
}

/* ---- helpers ---- */

Test(cli_util, user_reference_rule)
{
    cr_assert_eq(cli_user_ref_kind("1"), CLI_USER_BY_ID);
    cr_assert_eq(cli_user_ref_kind("123456"), CLI_USER_BY_ID);
    cr_assert_eq(cli_user_ref_kind("alice"), CLI_USER_BY_NAME);
    cr_assert_eq(cli_user_ref_kind("a1"), CLI_USER_BY_NAME);
    cr_assert_eq(cli_user_ref_kind("1a"), CLI_USER_BY_NAME);
    cr_assert_eq(cli_user_ref_kind("-1"), CLI_USER_BY_NAME);
    cr_assert_eq(cli_user_ref_kind(""), CLI_USER_BY_NAME);
}

Test(cli_util, key_prefix)
{
    char p[64];

    cr_assert_eq(cli_key_prefix("hskey-auth-", "hskey-auth-0123456789ab-" "ffffffff", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "0123456789ab");
    cr_assert_eq(cli_key_prefix("hskey-auth-", "hskey-auth-0123456789ab-***", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "0123456789ab");
    cr_assert_eq(cli_key_prefix("hskey-api-", "hskey-api-abcdefabcdef", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "abcdefabcdef");
    cr_assert_eq(cli_key_prefix("hskey-api-", "abcdefabcdef", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "abcdefabcdef");
    cr_assert_eq(cli_key_prefix("hskey-api-", "Ab3_x-9***", p, sizeof(p)), 0, "legacy masked");
    cr_assert_str_eq(p, "Ab3_x-9");
    cr_assert_eq(cli_key_prefix("hskey-api-", "Ab3_x-9.secretsecret", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "Ab3_x-9");
    /* headscale 0.28+ draws prefixes in base64url, '-' included (keys imported from it) */
    cr_assert_eq(cli_key_prefix("hskey-auth-", "hskey-auth-Hyms-8CsilzL-***", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "Hyms-8CsilzL");
    cr_assert_eq(cli_key_prefix("hskey-api-", "hskey-api-ANZXKcZ-GY9Y", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "ANZXKcZ-GY9Y");
    cr_assert_eq(cli_key_prefix("hskey-auth-", "c6a23af49991173ac4ca6670b6b88a3117767731f75a5240",
                                p, sizeof(p)), 0, "a 0.22.3 pre-auth key");
    cr_assert_str_eq(p, "c6a23af49991");
    cr_assert_eq(cli_key_prefix("hskey-auth-", "hskey-auth-", p, sizeof(p)), -EINVAL);
    cr_assert_eq(cli_key_prefix("hskey-auth-", "", p, sizeof(p)), -EINVAL);
    cr_assert_eq(cli_key_prefix("hskey-auth-", "0123456789abcdef", p, 8), -EINVAL, "too long");
}

Test(cli_util, duration_to_expiration)
{
    char buf[40];
    int64_t now = INT64_C(1700000000) * HS_USEC_PER_SEC; /* 2023-11-14T22:13:20Z */

    cr_assert_eq(cli_expiration("1h", now, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "2023-11-14T23:13:20Z");
    cr_assert_eq(cli_expiration("90d", now, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "2024-02-12T22:13:20Z");
    cr_assert_eq(cli_expiration("1w", now, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "2023-11-21T22:13:20Z");
    cr_assert_eq(cli_expiration("30m", now, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "2023-11-14T22:43:20Z");
    cr_assert_lt(cli_expiration("soon", now, buf, sizeof(buf)), 0);
    cr_assert_lt(cli_expiration("", now, buf, sizeof(buf)), 0);
}

Test(cli_util, short_key)
{
    char s[16];

    /* 00 10 83 ... → base64 "ABCD..." */
    cli_key_short("nodekey:0010830000000000000000000000000000000000000000000000000000000001", s,
                  sizeof(s));
    cr_assert_str_eq(s, "[ABCDA]");
    cli_key_short("mkey:" "ffffffff00000000000000000000000000000000000000000000000000000000", s,
                  sizeof(s));
    cr_assert_str_eq(s, "[/////]");
    cli_key_short("nodekey:0000000000000000000000000000000000000000000000000000000000000000", s,
                  sizeof(s));
    cr_assert_str_eq(s, "", "zero key");
    cli_key_short("garbage", s, sizeof(s));
    cr_assert_str_eq(s, "");
    cli_key_short(NULL, s, sizeof(s));
    cr_assert_str_eq(s, "");
}

Test(cli_util, base_url)
{
    char *u;

    u = cli_base_url("hs.example.com:443");
    cr_assert_str_eq(u, "https://hs.example.com:443");
    free(u);
    u = cli_base_url("http://127.0.0.1:8080/");
    cr_assert_str_eq(u, "http://127.0.0.1:8080");
    free(u);
    u = cli_base_url("https://hs.example.com");
    cr_assert_str_eq(u, "https://hs.example.com");
    free(u);
}

Test(cli_util, path_escaping)
{
    char *p = cli_pathf("/api/v1/user/%s/rename/%s", "1", "a b/c");
    cr_assert_str_eq(p, "/api/v1/user/1/rename/a%20b%2Fc");
    free(p);
}

Test(cli_util, problem_messages)
{
    char m[256];
    const char *problem = "{\"title\":\"Not Found\",\"status\":404,\"detail\":\"user not found\"}";
    const char *nested = "{\"title\":\"Bad Request\",\"status\":400,\"detail\":\"creating user\","
                         "\"errors\":[{\"message\":\"name is too long\"}]}";
    const char *grpc = "{\"code\":5,\"message\":\"record not found\",\"details\":[]}";

    cli_problem_message(404, problem, strlen(problem), m, sizeof(m));
    cr_assert_str_eq(m, "user not found");
    cli_problem_message(400, nested, strlen(nested), m, sizeof(m));
    cr_assert_str_eq(m, "creating user: name is too long");
    cli_problem_message(404, grpc, strlen(grpc), m, sizeof(m));
    cr_assert_str_eq(m, "record not found");
    cli_problem_message(401, "Unauthorized\n", 13, m, sizeof(m));
    cr_assert_str_eq(m, "Unauthorized");
    cli_problem_message(500, "", 0, m, sizeof(m));
    cr_assert_str_eq(m, "unexpected response status: 500 Internal Server Error");
    cli_problem_message(502, "<html>x</html>", 14, m, sizeof(m));
    cr_assert_str_eq(m, "unexpected response status: 502 Bad Gateway");
}

/* ---- rendering ---- */

static char *render(const char *json, enum cli_format fmt)
{
    json_error_t e;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &e);
    struct hs_buf b;

    cr_assert_not_null(j, "%s", e.text);
    hs_buf_init(&b, 1u << 20);
    cr_assert_eq(cli_render(j, fmt, &b), 0);
    json_decref(j);
    return hs_buf_steal(&b);
}

Test(cli_output, json_tab_indentation)
{
    char *s = render("{\"users\":[{\"id\":\"1\",\"name\":\"a  b\"}],\"empty\":[],\"n\":null}",
                     CLI_FMT_JSON);
    cr_assert_str_eq(s, "{\n"
                        "\t\"users\": [\n"
                        "\t\t{\n"
                        "\t\t\t\"id\": \"1\",\n"
                        "\t\t\t\"name\": \"a  b\"\n"
                        "\t\t}\n"
                        "\t],\n"
                        "\t\"empty\": [],\n"
                        "\t\"n\": null\n"
                        "}");
    free(s);
}

Test(cli_output, json_line)
{
    char *s = render("{\"a\": [1, 2], \"b\": \"x\"}", CLI_FMT_JSON_LINE);
    cr_assert_str_eq(s, "{\"a\":[1,2],\"b\":\"x\"}");
    free(s);
}

Test(cli_output, yaml)
{
    char *s = render("[{\"id\":\"1\",\"name\":\"alice\",\"reusable\":true,\"expiry\":null,"
                     "\"createdAt\":\"2024-01-02T03:04:05Z\",\"aclTags\":[\"tag:a\"],"
                     "\"empty\":\"\",\"yes\":\"no\",\"note\":\"a: b\"}]",
                     CLI_FMT_YAML);
    cr_assert(strstr(s, "id: \"1\"") != NULL, "%s", s);
    cr_assert(strstr(s, "name: alice\n") != NULL, "%s", s);
    cr_assert(strstr(s, "reusable: true\n") != NULL, "%s", s);
    cr_assert(strstr(s, "expiry: null\n") != NULL, "%s", s);
    cr_assert(strstr(s, "createdAt: \"2024-01-02T03:04:05Z\"") != NULL, "%s", s);
    cr_assert(strstr(s, "- tag:a") != NULL, "%s", s);
    cr_assert(strstr(s, "empty: \"\"") != NULL, "%s", s);
    cr_assert(strstr(s, "\"yes\": \"no\"") != NULL, "%s", s);
    cr_assert(strstr(s, "note: 'a: b'") != NULL || strstr(s, "note: \"a: b\"") != NULL, "%s", s);
    cr_assert(s[0] == '-', "a top-level sequence: %s", s);
    cr_assert(s[strlen(s) - 1] == '\n', "yaml.v3 ends with a newline, Println adds one");
    free(s);
}

Test(cli_output, yaml_scalar_string)
{
    char *s = render("\"hskey-api-abc-def\"", CLI_FMT_YAML);
    cr_assert_str_eq(s, "hskey-api-abc-def\n");
    free(s);
}

/* A REST pre-auth key as headscale's CLI prints the gRPC one. */
static char *shaped(const char *rest, bool list, enum cli_format fmt)
{
    json_error_t e;
    json_t *j = json_loads(rest, 0, &e), *p;
    struct hs_buf b;
    bool yaml = fmt == CLI_FMT_YAML;

    cr_assert_not_null(j, "%s", e.text);
    p = list ? cli_proto_list(j, &cli_msg_pre_auth_key, yaml)
             : cli_proto(j, &cli_msg_pre_auth_key, yaml);
    hs_buf_init(&b, 1u << 20);
    cr_assert_eq(cli_render(p, fmt, &b), 0);
    json_decref(j);
    json_decref(p);
    return hs_buf_steal(&b);
}

#define PAK_REST                                                                          \
    "{\"user\":{\"id\":\"1\",\"name\":\"alice\",\"createdAt\":\"2026-12-03T16:53:11.5Z\","    \
    "\"displayName\":\"\",\"email\":\"\",\"providerId\":\"\",\"provider\":\"\","              \
    "\"profilePicUrl\":\"\"},\"id\":\"2\",\"key\":\"hskey-auth-ab-***\",\"reusable\":true,"   \
    "\"ephemeral\":false,\"used\":false,\"expiration\":\"2026-12-03T17:53:11+01:00\","        \
    "\"createdAt\":\"0001-01-01T00:00:00Z\",\"aclTags\":[\"tag:a\"]}"

Test(cli_proto, json_is_encoding_json_of_the_message)
{
    char *s = shaped(PAK_REST, false, CLI_FMT_JSON_LINE);

    /* snake_case in declaration order; "" and false left out; numbers; Timestamps as
     * seconds+nanos (zero nanos left out; Go's zero time is not nil) */
    cr_assert_str_eq(s, "{\"user\":{\"id\":1,\"name\":\"alice\",\"created_at\":{\"seconds\":"
                        "1796316791,\"nanos\":500000000}},\"id\":2,\"key\":\"hskey-auth-ab-***\","
                        "\"reusable\":true,\"expiration\":{\"seconds\":1796316791},"
                        "\"created_at\":{\"seconds\":-62135596800},\"acl_tags\":[\"tag:a\"]}");
    free(s);
    s = shaped("[]", true, CLI_FMT_JSON);
    cr_assert_str_eq(s, "null", "an empty list is a nil slice");
    free(s);
}

Test(cli_proto, yaml_is_yaml_v3_of_the_message)
{
    char *s = shaped("[" PAK_REST "]", true, CLI_FMT_YAML);

    /* every member under its lowercased Go name, laid out as yaml.v3 does */
    cr_assert_str_eq(s, "- user:\n"
                        "    id: 1\n"
                        "    name: alice\n"
                        "    createdat:\n"
                        "        seconds: 1796316791\n"
                        "        nanos: 500000000\n"
                        "    displayname: \"\"\n"
                        "    email: \"\"\n"
                        "    providerid: \"\"\n"
                        "    provider: \"\"\n"
                        "    profilepicurl: \"\"\n"
                        "  id: 2\n"
                        "  key: hskey-auth-ab-***\n"
                        "  reusable: true\n"
                        "  ephemeral: false\n"
                        "  used: false\n"
                        "  expiration:\n"
                        "    seconds: 1796316791\n"
                        "    nanos: 0\n"
                        "  createdat:\n"
                        "    seconds: -62135596800\n"
                        "    nanos: 0\n"
                        "  acltags:\n"
                        "    - tag:a\n");
    free(s);
    s = shaped("{\"aclTags\":[]}", false, CLI_FMT_YAML);
    cr_assert(strstr(s, "\nacltags: []\n") != NULL, "%s", s);
    cr_assert(strstr(s, "\nexpiration: null\n") != NULL, "%s", s);
    cr_assert(hs_has_prefix(s, "user: null\nid: 0\nkey: \"\"\n"), "%s", s);
    free(s);
}

Test(cli_output, yaml_quotes_what_would_not_read_back_as_text)
{
    static const char *const quoted[] = { "12", "-1.5", ".5", "1e3", "0x1F", "0o17", "0b101",
                                          "1_000", "1:20", "2024-01-02", "2024-1-2T03:04:05Z",
                                          "yes", "Off", "~", "" };
    static const char *const plain[] = { "100.64.0.1", "fd7a:115c:a1e0::1", "10.0.0.0/8",
                                         "1.2.3", "0x", "1e", "tag:a", "nodekey:ab", "2024-x" };
    char json[64], want[64];

    for (size_t i = 0; i < HS_ARRAY_LEN(quoted); i++) {
        snprintf(json, sizeof(json), "[\"%s\"]", quoted[i]);
        snprintf(want, sizeof(want), "- \"%s\"\n", quoted[i]);
        char *s = render(json, CLI_FMT_YAML);
        cr_assert_str_eq(s, want);
        free(s);
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(plain); i++) {
        snprintf(json, sizeof(json), "[\"%s\"]", plain[i]);
        snprintf(want, sizeof(want), "- %s\n", plain[i]);
        char *s = render(json, CLI_FMT_YAML);
        cr_assert_str_eq(s, want);
        free(s);
    }
}

Test(cli_output, yaml_nested_mapping_steps_of_four)
{
    char *s = render("{\"user\":{\"id\":1,\"tags\":[\"a\",\"b: c\"]},\"e\":{},\"s\":\"1:20\"}",
                     CLI_FMT_YAML);
    cr_assert_str_eq(s, "user:\n"
                        "    id: 1\n"
                        "    tags:\n"
                        "        - a\n"
                        "        - 'b: c'\n"
                        "e: {}\n"
                        "s: \"1:20\"\n");
    free(s);
}

Test(cli_output, table_layout)
{
    static const char *const header[] = { "ID", "Name", "Created" };
    struct cli_table t;
    struct hs_buf b;

    cli_table_init(&t, header, 3);
    cli_table_add(&t, "1");
    cli_table_add(&t, "alice");
    cli_table_add(&t, "2024-01-02 03:04:05");
    cli_table_add(&t, "10");
    cli_table_add(&t, "\033[92mbö\033[0m"); /* colour and UTF-8 don't count as width */
    cli_table_add(&t, "");
    hs_buf_init(&b, 4096);
    cr_assert_eq(cli_table_render(&t, false, &b), 0);
    cr_assert_str_eq(b.data, "ID | Name  | Created\n"
                             "1  | alice | 2024-01-02 03:04:05\n"
                             "10 | \033[92mbö\033[0m    | \n");
    hs_buf_free(&b);
    cli_table_free(&t);
}

Test(cli_output, table_from_json_rows)
{
    static const struct cli_column cols[] = {
        { "ID", "id", CELL_STR, NULL },
        { "User", "user.name", CELL_STR, NULL },
        { "Used", "used", CELL_BOOL, NULL },
        { "Expiration", "expiration", CELL_EXPIRY, NULL },
        { "Created", "createdAt", CELL_TIME, NULL },
        { "Tags", "aclTags", CELL_STRV, NULL },
    };
    json_t *rows = json_loads("[{\"id\":\"3\",\"user\":{\"name\":\"bob\"},\"used\":true,"
                              "\"expiration\":\"2030-01-01T00:00:00Z\","
                              "\"createdAt\":\"2024-05-06T07:08:09.5Z\",\"aclTags\":[\"tag:a\",\"tag:b\"]},"
                              "{\"id\":\"4\",\"user\":null,\"expiration\":null}]",
                              0, NULL);
    struct cli_ctx ctx = { .now_us = hs_now_us() };
    struct cli_table t;
    struct hs_buf b;

    cli_table_init(&t, NULL, HS_ARRAY_LEN(cols));
    cli_table_rows(&ctx, &t, cols, HS_ARRAY_LEN(cols), rows);
    hs_buf_init(&b, 4096);
    cr_assert_eq(cli_table_render(&t, false, &b), 0);
    cr_assert_str_eq(b.data, "3 | bob | true  | 2030-01-01 00:00:00 | 2024-05-06 07:08:09 | tag:a,tag:b\n"
                             "4 |     | false | -                   |                     | \n");
    hs_buf_free(&b);
    cli_table_free(&t);
    json_decref(rows);
}

Test(cli_output, formats_and_machine_detection)
{
    enum cli_format f;

    cr_assert_eq(cli_format_parse(NULL, &f), 0);
    cr_assert_eq(f, CLI_FMT_HUMAN);
    cr_assert_eq(cli_format_parse("json-line", &f), 0);
    cr_assert_eq(f, CLI_FMT_JSON_LINE);
    cr_assert_eq(cli_format_parse("xml", &f), -EINVAL);
    cr_assert(cli_machine_output(ARGC("users", "list", "-o", "yaml"), ARGV("users", "list", "-o", "yaml")));
    cr_assert_not(cli_machine_output(ARGC("users", "list", "-o=json"), ARGV("users", "list", "-o=json")));
    cr_assert_not(cli_machine_output(ARGC("users", "list"), ARGV("users", "list")));
}

/* ---- whole runs without a server ---- */

struct run {
    int rc;
    char *out, *err;
};

static struct run run_cli(int argc, char **argv)
{
    struct run r = { 0 };
    size_t olen, elen;
    FILE *out = open_memstream(&r.out, &olen), *err = open_memstream(&r.err, &elen);

    r.rc = cli_run(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

#define RUN(...) run_cli(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

Test(cli_run, version)
{
    struct run r = RUN("version");
    cr_assert_eq(r.rc, 0);
    cr_assert(hs_has_prefix(r.out, "headscale version " SERVER_VERSION), "%s", r.out);
    cr_assert(strstr(r.out, "\ncommit: "), "%s", r.out);
    run_free(&r);

    r = RUN("version", "-o", "json");
    cr_assert_eq(r.rc, 0);
    cr_assert(hs_has_prefix(r.out, "{\n\t\"version\": \"" SERVER_VERSION "\",\n\t\"commit\""),
              "%s", r.out);
    run_free(&r);
}

Test(cli_run, generate_private_key)
{
    struct run r = RUN("gen", "private-key");
    cr_assert_eq(r.rc, 0);
    cr_assert(hs_has_prefix(r.out, "privkey:"), "%s", r.out);
    cr_assert_eq(strlen(r.out), strlen("privkey:") + 64 + 1);
    run_free(&r);

    r = RUN("generate", "private-key", "-o", "json-line");
    cr_assert(hs_has_prefix(r.out, "{\"private_key\":\"privkey:"), "%s", r.out);
    run_free(&r);
}

Test(cli_run, usage_errors_exit_1)
{
    struct run r = RUN("users", "list", "--nope");
    cr_assert_eq(r.rc, 1);
    cr_assert(hs_has_prefix(r.err, "Error: --nope is not a flag of this command\n"), "%s", r.err);
    cr_assert(strstr(r.err, "Usage:") != NULL);
    run_free(&r);

    r = RUN("nosuchcommand");
    cr_assert_eq(r.rc, 1);
    run_free(&r);

    r = RUN("users", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "Available Commands:") != NULL);
    cr_assert(strstr(r.out, "users, user, namespace, namespaces, ns") != NULL, "%s", r.out);
    run_free(&r);
}

static char *write_config(const char *body)
{
    char *path = strdup("/tmp/test_cli_XXXXXX.yaml");
    int fd = mkstemps(path, 5);

    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    return path;
}

/* A server that takes the connection and never answers: the wait is named as such, not as a
 * server that is not running. */
Test(cli_run, server_that_never_answers)
{
    char sock[] = "/tmp/test_cli_mute_XXXXXX";
    int fd = mkstemp(sock);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    cr_assert_geq(fd, 0);
    close(fd);
    unlink(sock);
    strcpy(sa.sun_path, sock);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 4), 0); /* the kernel completes the connect; nothing reads */
    char *body = hs_aprintf("unix_socket: %s\ncli:\n  timeout: 300ms\n", sock);
    char *cfg = write_config(body);
    struct run r = RUN("-c", cfg, "users", "list");

    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "did not answer within 0.3 s (cli.timeout)") != NULL, "%s", r.err);
    cr_assert(strstr(r.err, "running?") == NULL, "%s", r.err);
    run_free(&r);
    close(fd);
    unlink(sock);
    unlink(cfg);
    free(cfg);
    free(body);
}

Test(cli_run, server_not_running)
{
    char *cfg = write_config("server_url: http://127.0.0.1:8080\n"
                             "unix_socket: /tmp/test_cli_no_such_dir/headscale.sock\n"
                             "cli:\n  timeout: 200ms\n");
    struct run r = RUN("-c", cfg, "users", "list");

    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "Error: cannot reach headscale at "
                            "/tmp/test_cli_no_such_dir/headscale.sock: is \"headscale serve\" "
                            "running?\n") != NULL,
              "%s", r.err);
    run_free(&r);

    r = RUN("-c", cfg, "users", "list", "-o", "json");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "{\n\t\"error\": \"cannot reach headscale") != NULL, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
    unlink(cfg);
    free(cfg);
}

Test(cli_run, remote_needs_api_key)
{
    char *cfg = write_config("server_url: http://127.0.0.1:8080\n"
                             "cli:\n  address: 127.0.0.1:1\n");
    struct run r;

    unsetenv("HEADSCALE_CLI_API_KEY");
    r = RUN("-c", cfg, "apikeys", "list");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "Error: talking to a remote server (cli.address) takes an API key: "
                            "set HEADSCALE_CLI_API_KEY") != NULL,
              "%s", r.err);
    run_free(&r);
    unlink(cfg);
    free(cfg);
}

Test(cli_run, argument_checks_before_the_server)
{
    struct run r = RUN("pre", "create");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "--user or --tags") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("apikeys", "expire");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "name the key with --id or --prefix") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("apikeys", "delete", "-p", "abc", "-i", "2");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "not both") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("apikeys", "create", "-e", "later");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "could not parse duration") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("users", "rename", "-n", "alice");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "new-name") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("users", "list", "-o", "xml");
    cr_assert_eq(r.rc, 1);
    run_free(&r);
}

/* ---- nodes and auth commands ---- */

Test(cli_nodes, commands_and_aliases)
{
    static const struct {
        const char *group, *sub, *want;
    } cases[] = {
        { "nodes", "register", "register" },   { "machine", "register", "register" },
        { "node", "delete", "delete" },        { "machines", "del", "delete" },
        { "nodes", "expire", "expire" },       { "nodes", "logout", "expire" },
        { "node", "exp", "expire" },           { "node", "e", "expire" },
        { "nodes", "rename", "rename" },       { "nodes", "move", "move" },
        { "machine", "mv", "move" },           { "nodes", "tag", "tag" },
        { "nodes", "tags", "tag" },            { "nodes", "t", "tag" },
        { "nodes", "list-routes", "list-routes" }, { "nodes", "lsr", "list-routes" },
        { "node", "routes", "list-routes" },   { "nodes", "approve-routes", "approve-routes" },
        { "nodes", "ls", "list" },             { "auth", "register", "register" },
    };
    struct cli_args a;

    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        char *argv[] = { "headscale", (char *)cases[i].group, (char *)cases[i].sub, NULL };
        cli_parse(&cli_root, 3, argv, &a);
        cr_assert_eq(a.depth, 3, "%s %s: %s", cases[i].group, cases[i].sub, a.err);
        cr_assert_str_eq(a.path[1]->name, hs_streq(cases[i].group, "auth") ? "auth" : "nodes");
        cr_assert_str_eq(cmd_name(&a), cases[i].want, "%s %s", cases[i].group, cases[i].sub);
        cr_assert_not_null(cli_args_cmd(&a)->run);
    }
}

Test(cli_nodes, flag_placement)
{
    struct cli_args a;
    struct hs_strv v = { 0 };

    cr_assert_eq(PARSE(&a, "-u", "alice", "nodes", "register", "--key", "hskey-authreq-x"), 0,
                 "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "register");
    cr_assert_str_eq(cli_flag_str(&a, "user"), "alice");
    cr_assert_str_eq(cli_flag_str(&a, "key"), "hskey-authreq-x");

    cr_assert_eq(PARSE(&a, "-n", "default", "machine", "register", "-k", "k1"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "namespace"), "default");

    cr_assert_eq(PARSE(&a, "-i", "3", "nodes", "delete", "--force"), 0, "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "delete");
    cr_assert_str_eq(cli_flag_str(&a, "identifier"), "3");
    cr_assert(cli_flag_bool(&a, "force"));

    cr_assert_eq(PARSE(&a, "nodes", "-i", "4", "expire", "-d"), 0, "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "expire");
    cr_assert(cli_flag_bool(&a, "disable"));

    cr_assert_eq(PARSE(&a, "nodes", "-d", "expire", "-i", "4"), 0, "%s", a.err);
    cr_assert_str_eq(cmd_name(&a), "expire", "-d is a bool here: expire is the subcommand");

    cr_assert_eq(PARSE(&a, "nodes", "rename", "-i", "5", "newname"), 0, "%s", a.err);
    cr_assert_eq(a.npos, 1);
    cr_assert_str_eq(a.pos[0], "newname");
    cr_assert_eq(PARSE(&a, "nodes", "rename", "newname", "-i", "5"), 0, "%s", a.err);
    cr_assert_str_eq(a.pos[0], "newname");

    cr_assert_eq(PARSE(&a, "-t", "tag:a", "nodes", "tag", "-i", "1", "-t", "tag:b,tag:c"), 0,
                 "%s", a.err);
    cr_assert_eq(cli_flag_list(&a, "tags", &v), 0);
    cr_assert_eq(v.n, 3);
    cr_assert_str_eq(v.v[0], "tag:a");
    cr_assert_str_eq(v.v[2], "tag:c");
    hs_strv_free(&v);

    cr_assert_eq(PARSE(&a, "auth", "register", "--auth-id", "x", "-u", "1"), 0, "%s", a.err);
    cr_assert_str_eq(cli_flag_str(&a, "auth-id"), "x");

    cr_assert_eq(PARSE(&a, "nodes", "list-routes"), 0, "-i is optional: %s", a.err);
    cr_assert_eq(PARSE(&a, "nodes", "rename", "-i", "1"), -EINVAL, "NEW_NAME is required");
    cr_assert_eq(PARSE(&a, "nodes", "delete", "-k", "x"), -EINVAL, "-k is register's only");
}

/* Every required-flag or ID error prints "Error: ..." and the usage, before any request. */
Test(cli_nodes, required_flags)
{
    const struct {
        int argc;
        char **argv;
        const char *want;
    } cases[] = {
        { ARGC("nodes", "delete"), ARGV("nodes", "delete"), "--identifier is required" },
        { ARGC("nodes", "expire"), ARGV("nodes", "expire"), "--identifier is required" },
        { ARGC("nodes", "rename", "x"), ARGV("nodes", "rename", "x"), "--identifier is required" },
        { ARGC("nodes", "tag", "-t", "tag:a"), ARGV("nodes", "tag", "-t", "tag:a"), "--identifier is" },
        { ARGC("nodes", "approve-routes"), ARGV("nodes", "approve-routes"), "--identifier is" },
        { ARGC("nodes", "move"), ARGV("nodes", "move"),
          "--identifier, --user are required" },
        { ARGC("nodes", "move", "-i", "1"), ARGV("nodes", "move", "-i", "1"),
          "--user is required" },
        { ARGC("nodes", "register"), ARGV("nodes", "register"),
          "--key, --user are required" },
        { ARGC("nodes", "register", "-n", "ns"), ARGV("nodes", "register", "-n", "ns"),
          "--key is required" },
        { ARGC("auth", "register", "-u", "a"), ARGV("auth", "register", "-u", "a"),
          "--auth-id is required" },
        { ARGC("nodes", "delete", "-i", "abc"), ARGV("nodes", "delete", "-i", "abc"),
          "-i/--identifier: \"abc\" is not a node ID" },
        { ARGC("nodes", "lsr", "-i", "-1"), ARGV("nodes", "lsr", "-i", "-1"),
          "-i/--identifier: \"-1\" is not" },
    };

    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        struct run r = run_cli(cases[i].argc, cases[i].argv);
        cr_assert_eq(r.rc, 1, "case %zu", i);
        cr_assert(hs_has_prefix(r.err, "Error: "), "case %zu: %s", i, r.err);
        cr_assert(strstr(r.err, cases[i].want) != NULL, "case %zu: %s", i, r.err);
        cr_assert(strstr(r.err, "Usage:\n  headscale ") != NULL, "case %zu: %s", i, r.err);
        cr_assert_str_eq(r.out, "");
        run_free(&r);
    }
}

Test(cli_nodes, expire_flag_checks)
{
    struct run r = RUN("nodes", "expire", "-i", "1", "-d", "-e", "2030-01-01T00:00:00Z");
    cr_assert_eq(r.rc, 1);
    cr_assert_str_eq(r.err, "Error: cannot use both --expiry and --disable flags together\n");
    run_free(&r);

    r = RUN("nodes", "expire", "-i", "1", "-e", "tomorrow", "-o", "json");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "\"error\": \"invalid expiry \\\"tomorrow\\\"") != NULL, "%s", r.err);
    run_free(&r);
}

Test(cli_nodes, help_texts)
{
    struct run r = RUN("nodes", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "nodes, node, machine, machines") != NULL, "%s", r.out);
    static const char *const subs[] = { "approve-routes", "delete", "expire", "list",
                                        "list-routes", "move", "register", "rename", "tag" };
    for (size_t i = 0; i < HS_ARRAY_LEN(subs); i++) {
        char line[64];
        snprintf(line, sizeof(line), "\n  %s ", subs[i]);
        cr_assert(strstr(r.out, line) != NULL, "%s missing: %s", subs[i], r.out);
    }
    run_free(&r);

    r = RUN("nodes", "expire", "-h");
    cr_assert(strstr(r.out, "expire, logout, exp, e") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "-i, --identifier string") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "-e, --expiry string") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "-d, --disable") != NULL, "%s", r.out);
    run_free(&r);

    r = RUN("nodes", "register", "--help");
    cr_assert(strstr(r.out, "-k, --key string") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "--namespace") == NULL, "hidden");
    run_free(&r);

    r = RUN("auth", "register", "--help");
    cr_assert(strstr(r.out, "--auth-id string") != NULL, "%s", r.out);
    run_free(&r);

    r = RUN("--help");
    cr_assert(strstr(r.out, "\n  auth ") != NULL, "%s", r.out);
    run_free(&r);
}

/* A stand-in server on a unix socket: answers every request with one canned reply and
 * appends "METHOD TARGET\nBODY\n" per request to a log, so tests see what the CLI sent. */
struct fake {
    pid_t pid;
    char dir[64], sock[96], log[128], *cfg;
};

static size_t fake_read_request(int c, char *buf, size_t size)
{
    size_t len = 0, need = 0;
    char *end;

    while (len + 1 < size) {
        ssize_t n = read(c, buf + len, size - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (!need && (end = strstr(buf, "\r\n\r\n"))) {
            const char *cl = strcasestr(buf, "Content-Length:");
            need = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0);
        }
        if (need && len >= need)
            break;
    }
    buf[len] = '\0';
    return len;
}

static void fake_serve(int ls, const char *log, int status, const char *body)
{
    static char req[65536];
    char head[256];

    for (;;) {
        int c = accept(ls, NULL, NULL);
        FILE *f;
        char *sp, *eoh;

        if (c < 0)
            _exit(0);
        fake_read_request(c, req, sizeof(req));
        sp = strchr(req, ' ');
        sp = sp ? strchr(sp + 1, ' ') : NULL;
        eoh = strstr(req, "\r\n\r\n");
        if ((f = fopen(log, "a"))) {
            fprintf(f, "%.*s\n%s\n", sp ? (int)(sp - req) : 0, req, eoh ? eoh + 4 : "");
            fclose(f);
        }
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 status, strlen(body));
        if (write(c, head, strlen(head)) < 0 || write(c, body, strlen(body)) < 0)
            _exit(1);
        close(c);
    }
}

static void fake_start(struct fake *f, int status, const char *body)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char cfg[512];
    int ls;

    snprintf(f->dir, sizeof(f->dir), "/tmp/test_cli_nodes_XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/hs.sock", f->dir);
    snprintf(f->log, sizeof(f->log), "%s/requests.log", f->dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
    ls = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_geq(ls, 0);
    cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(ls, 16), 0);
    f->pid = fork();
    cr_assert_geq(f->pid, 0);
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion skips fake_stop */
        alarm(60);
        fake_serve(ls, f->log, status, body);
    }
    close(ls);
    snprintf(cfg, sizeof(cfg), "server_url: http://127.0.0.1:8080\nunix_socket: %s\n"
                               "cli:\n  timeout: 2s\n", f->sock);
    f->cfg = write_config(cfg);
}

/* The request log so far. */
static char *fake_log(const struct fake *f)
{
    char *text = NULL;
    size_t len;

    if (hs_read_file(f->log, 1u << 20, &text, &len) < 0)
        return hs_strdup("");
    return text;
}

static void fake_stop(struct fake *f)
{
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    unlink(f->sock);
    unlink(f->log);
    unlink(f->cfg);
    free(f->cfg);
    rmdir(f->dir);
}

#define NODE_JSON                                                                            \
    "{\"id\":\"7\",\"machineKey\":\"mkey:" "ffffffff" "00000000000000000000000000000000"       \
    "000000000000000000000000\",\"nodeKey\":\"nodekey:" "0010830000000000000000000000000000"   \
    "000000000000000000000000000001\",\"ipAddresses\":[\"100.64.0.7\",\"fd7a::7\"],"           \
    "\"name\":\"laptop\",\"givenName\":\"lap\",\"user\":{\"id\":\"1\",\"name\":\"alice\"},"     \
    "\"lastSeen\":null,\"expiry\":null,\"online\":true,\"tags\":[\"tag:a\"],"                  \
    "\"approvedRoutes\":[\"10.0.0.0/8\"],\"availableRoutes\":[\"10.0.0.0/8\",\"0.0.0.0/0\","   \
    "\"::/0\"],\"subnetRoutes\":[\"10.0.0.0/8\"]}"

#define FRUN(f, ...) RUN("-c", (f)->cfg, __VA_ARGS__)

Test(cli_nodes, list_columns_and_tags)
{
    struct fake f;
    struct run r;
    char *log;

    fake_start(&f, 200, "{\"nodes\":[" NODE_JSON "]}");
    r = FRUN(&f, "nodes", "list", "-u", "alice");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(hs_has_prefix(r.out, "ID | Hostname | Name | MachineKey | NodeKey | User  | Tags  | "
                                   "IP addresses        | Ephemeral | Last seen | Expiration | "
                                   "Connected | Expired\n"),
              "%s", r.out);
    cr_assert(strstr(r.out, "7  | laptop   | lap  | [/////]    | [ABCDA] | alice | tag:a | "
                            "100.64.0.7, fd7a::7 | false     |           | N/A        | online    | no\n") != NULL,
              "%s", r.out);
    run_free(&r);

    r = FRUN(&f, "-n", "alice", "machines", "ls", "-t");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "| Expired | ForcedTags | InvalidTags | ValidTags\n") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "| no      |            |             | tag:a\n") != NULL, "%s", r.out);
    run_free(&r);

    log = fake_log(&f);
    cr_assert(strstr(log, "GET /api/v1/node?user=alice\n\nGET /api/v1/node?user=alice\n") != NULL,
              "%s", log);
    free(log);
    fake_stop(&f);
}

Test(cli_nodes, list_routes_one_prefix_per_line)
{
    struct fake f;
    struct run r;

    fake_start(&f, 200, "{\"nodes\":[" NODE_JSON ",{\"id\":\"8\",\"givenName\":\"bare\","
                        "\"approvedRoutes\":[],\"availableRoutes\":[],\"subnetRoutes\":[]}]}");
    r = FRUN(&f, "nodes", "lsr");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "ID | Hostname | Approved   | Available  | Serving (Primary)\n"
                            "7  | lap      | 10.0.0.0/8 | 10.0.0.0/8 | 10.0.0.0/8\n"
                            "   |          |            | 0.0.0.0/0  | \n"
                            "   |          |            | ::/0       | \n");
    run_free(&r);

    r = FRUN(&f, "nodes", "routes", "-o", "json-line");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(hs_has_prefix(r.out, "[{\"id\":7,"), "%s", r.out);
    cr_assert(strstr(r.out, "\"bare\"") == NULL, "nodes without routes are left out");
    run_free(&r);
    fake_stop(&f);
}

/* What each command sends, and what it prints for the {node} reply. */
Test(cli_nodes, requests_and_messages)
{
    const struct {
        int argc;
        char **argv;
        const char *request, *out;
    } cases[] = {
        { ARGC("nodes", "register", "-u", "alice", "-k", "hskey-authreq-1"),
          ARGV("nodes", "register", "-u", "alice", "-k", "hskey-authreq-1"),
          "POST /api/v1/node/register?user=alice&key=hskey-authreq-1\n\n", "Login finished: node lap joined the tailnet\n" },
        { ARGC("auth", "register", "--auth-id", "hskey-authreq-2", "-u", "3"),
          ARGV("auth", "register", "--auth-id", "hskey-authreq-2", "-u", "3"),
          "POST /api/v1/auth/register\n{\"user\":\"3\",\"authId\":\"hskey-authreq-2\"}\n",
          "Login finished: node lap joined the tailnet\n" },
        { ARGC("nodes", "expire", "-i", "7"), ARGV("nodes", "expire", "-i", "7"),
          "POST /api/v1/node/7/expire\n{}\n", "The node is logged out: it must log in again\n" },
        { ARGC("nodes", "logout", "-i", "7", "-e", "2999-01-02T03:04:05+01:00"),
          ARGV("nodes", "logout", "-i", "7", "-e", "2999-01-02T03:04:05+01:00"),
          "POST /api/v1/node/7/expire\n{\"expiry\":\"2999-01-02T02:04:05Z\"}\n",
          "The node's key expiry is set\n" },
        { ARGC("nodes", "e", "-i", "7", "-e", "2001-01-01T00:00:00Z"),
          ARGV("nodes", "e", "-i", "7", "-e", "2001-01-01T00:00:00Z"),
          "POST /api/v1/node/7/expire\n{\"expiry\":\"2001-01-01T00:00:00Z\"}\n", "The node is logged out: it must log in again\n" },
        { ARGC("nodes", "exp", "-i", "7", "-d"), ARGV("nodes", "exp", "-i", "7", "-d"),
          "POST /api/v1/node/7/expire\n{\"disableExpiry\":true}\n", "The node's key no longer expires\n" },
        { ARGC("nodes", "rename", "-i", "7", "new-name"), ARGV("nodes", "rename", "-i", "7", "new-name"),
          "POST /api/v1/node/7/rename/new-name\n\n", "The node has its new name\n" },
        { ARGC("-u", "bob", "nodes", "mv", "-i", "7"), ARGV("-u", "bob", "nodes", "mv", "-i", "7"),
          "POST /api/v1/node/7/user?user=bob\n\n", "The node belongs to its new user\n" },
        { ARGC("nodes", "t", "-i", "7", "-t", "tag:a,tag:b", "--tags", "tag:c"),
          ARGV("nodes", "t", "-i", "7", "-t", "tag:a,tag:b", "--tags", "tag:c"),
          "POST /api/v1/node/7/tags\n{\"tags\":[\"tag:a\",\"tag:b\",\"tag:c\"]}\n", "The node has its new tags\n" },
        { ARGC("nodes", "approve-routes", "-i", "7", "-r", "10.0.0.0/8,::/0"),
          ARGV("nodes", "approve-routes", "-i", "7", "-r", "10.0.0.0/8,::/0"),
          "POST /api/v1/node/7/approve_routes\n{\"routes\":[\"10.0.0.0/8\",\"::/0\"]}\n",
          "The node's approved routes are set\n" },
        { ARGC("nodes", "approve-routes", "-i", "7", "-r", ""),
          ARGV("nodes", "approve-routes", "-i", "7", "-r", ""),
          "POST /api/v1/node/7/approve_routes\n{\"routes\":[]}\n", "The node's approved routes are set\n" },
        { ARGC("nodes", "del", "-i", "7", "--force"), ARGV("nodes", "del", "-i", "7", "--force"),
          "GET /api/v1/node/7\n\nDELETE /api/v1/node/7\n\n", "The node is removed\n" },
    };

    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        struct fake f;
        char *argv[16], *log;
        int argc = 0;
        struct run r;

        fake_start(&f, 200, "{\"node\":" NODE_JSON "}");
        argv[argc++] = "headscale";
        argv[argc++] = "-c";
        argv[argc++] = f.cfg;
        for (int j = 1; j < cases[i].argc; j++)
            argv[argc++] = cases[i].argv[j];
        argv[argc] = NULL;
        r = run_cli(argc, argv);
        cr_assert_eq(r.rc, 0, "case %zu: %s", i, r.err);
        cr_assert_str_eq(r.out, cases[i].out, "case %zu", i);
        log = fake_log(&f);
        cr_assert_str_eq(log, cases[i].request, "case %zu", i);
        free(log);
        run_free(&r);
        fake_stop(&f);
    }
}

Test(cli_nodes, json_output_is_the_node)
{
    struct fake f;
    struct run r;

    fake_start(&f, 200, "{\"node\":" NODE_JSON "}");
    r = FRUN(&f, "nodes", "register", "-u", "alice", "-k", "k", "-o", "json");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(hs_has_prefix(r.out, "{\n\t\"id\": 7,\n"), "%s", r.out);
    run_free(&r);
    r = FRUN(&f, "nodes", "tag", "-i", "7", "-t", "tag:a", "-o", "json-line");
    cr_assert(hs_has_prefix(r.out, "{\"id\":7,"), "%s", r.out);
    run_free(&r);
    fake_stop(&f);
}

Test(cli_nodes, server_errors)
{
    struct fake f;
    struct run r;
    char *log;

    fake_start(&f, 404, "{\"title\":\"Not Found\",\"status\":404,\"detail\":\"node not found\"}");
    r = FRUN(&f, "nodes", "expire", "-i", "99");
    cr_assert_eq(r.rc, 1);
    cr_assert_str_eq(r.err, "Error: node not found\n");
    cr_assert_str_eq(r.out, "");
    run_free(&r);

    r = FRUN(&f, "nodes", "delete", "-i", "99", "--force");
    cr_assert_eq(r.rc, 1);
    cr_assert_str_eq(r.err, "Error: node not found\n");
    run_free(&r);
    log = fake_log(&f);
    cr_assert(strstr(log, "DELETE") == NULL, "no delete after a failed lookup: %s", log);
    free(log);

    r = FRUN(&f, "nodes", "approve-routes", "-i", "1", "-r", "10.0.0.0/8", "-o", "json");
    cr_assert_eq(r.rc, 1);
    cr_assert_str_eq(r.err, "{\n\t\"error\": \"node not found\"\n}\n");
    run_free(&r);
    fake_stop(&f);
}

Test(cli_nodes, delete_without_tty_refuses)
{
    struct fake f;
    struct run r;
    char *log;

    if (isatty(STDIN_FILENO))
        cr_skip_test("stdin is a terminal");
    fake_start(&f, 200, "{\"node\":" NODE_JSON "}");
    r = FRUN(&f, "nodes", "delete", "-i", "7");
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "use --force") != NULL, "%s", r.err);
    run_free(&r);
    log = fake_log(&f);
    cr_assert_str_eq(log, "GET /api/v1/node/7\n\n");
    free(log);
    fake_stop(&f);
}

/* ---- debug policy: offline, from files ---- */

static char *write_tmp(const char *body, const char *suffix)
{
    char *path = hs_aprintf("/tmp/test_cli_debug_XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));

    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    return path;
}

#define ALLOW_ALL "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}"
/* Nodes listed out of order, with ids against name order: output is still by name. "c" has
 * no IPv6. The user's id 0 and empty email are as in some corpus captures. */
#define TOPOLOGY                                                                             \
    "{\"users\": [{\"id\": 0, \"name\": \"alice\", \"email\": \"\"}],"                      \
    " \"nodes\": {"                                                                          \
    "  \"c\": {\"id\": 1, \"tags\": [\"tag:srv\"], \"ipv4\": \"100.64.0.3\"},"                \
    "  \"a\": {\"user\": \"alice\", \"tags\": [], \"ipv4\": \"100.64.0.1\","                  \
    "         \"ipv6\": \"fd7a:115c:a1e0::1\", \"routable_ips\": [], \"approved_routes\": []},"\
    "  \"b\": {\"id\": 2, \"user\": \"alice\", \"ipv4\": \"100.64.0.2\","                     \
    "         \"ipv6\": \"fd7a:115c:a1e0::2\"}}}"

Test(cli_debug, policy_json_answer_per_node)
{
    char *pol = write_tmp(ALLOW_ALL, ".json"), *top = write_tmp(TOPOLOGY, ".json");
    struct run r = RUN("-c", "/nonexistent/config.yaml", "debug", "policy", "--policy", pol,
                       "--topology", top, "-o", "json");
    json_t *j, *a;

    cr_assert_eq(r.rc, 0, "%s", r.err);
    j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    cr_assert_eq(json_object_size(j), 3);
    cr_assert_str_eq(json_object_iter_key(json_object_iter(j)), "a"); /* by name, not id */
    a = json_object_get(j, "a");
    cr_assert(json_is_array(json_object_get(a, "packet_filter_rules")));
    cr_assert(json_is_array(json_object_get(a, "ssh_policy")));
    cr_assert(json_is_object(json_object_get(a, "cap_map")));
    cr_assert(json_is_object(json_object_get(a, "peer_allowed_ips")));
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(a, "peers"), 0)), "b");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(a, "peers"), 1)), "c");
    cr_assert_eq(json_array_size(json_object_get(json_object_get(j, "c"), "peers")), 2);
    json_decref(j);
    run_free(&r);

    r = RUN("debug", "policy", "--policy", pol, "--topology", top);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(hs_has_prefix(r.out, "a (100.64.0.1, fd7a:115c:a1e0::1) user alice\n"
                                   "  peers (2): b, c\n"),
              "%s", r.out);
    cr_assert(strstr(r.out, "\nc (100.64.0.3) tags tag:srv\n") != NULL, "%s", r.out);
    run_free(&r);
    unlink(pol);
    unlink(top);
    free(pol);
    free(top);
}

Test(cli_debug, policy_errors_exit_1)
{
    char *bad = write_tmp("{\"acls\": [", ".json"), *pol = write_tmp(ALLOW_ALL, ".json");
    char *top = write_tmp(TOPOLOGY, ".json");
    char *nouser = write_tmp("{\"users\": [], \"nodes\": {\"a\": {\"user\": \"bob\"}}}", ".json");
    struct run r = RUN("debug", "policy", "--policy", bad, "--topology", top);

    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "policy: ") != NULL, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);

    r = RUN("debug", "policy", "--policy", pol, "--topology", nouser);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "topology: node a: ") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("debug", "policy", "--policy", pol, "--topology", bad);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "topology: ") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("debug", "policy", "--policy", pol);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "topology") != NULL, "%s", r.err);
    run_free(&r);

    r = RUN("debug", "policy", "--policy", "/nonexistent/policy.json", "--topology", top);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "policy: /nonexistent/policy.json: ") != NULL, "%s", r.err);
    run_free(&r);
    for (char **p = (char *[]){ bad, pol, top, nouser, NULL }; *p; p++) {
        unlink(*p);
        free(*p);
    }
}
