#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

static char err[256];

static json_t *yaml(const char *text)
{
    err[0] = '\0';
    return policy_yaml_to_json(text, strlen(text), err, sizeof(err));
}

/* The value of key "v" in a one-line document "v: <text>". */
static json_t *value_of(const char *text)
{
    char doc[256];
    json_t *j, *v;

    snprintf(doc, sizeof(doc), "v: %s\n", text);
    j = yaml(doc);
    cr_assert_not_null(j, "%s: %s", text, err);
    v = json_incref(json_object_get(j, "v"));
    json_decref(j);
    cr_assert_not_null(v, "%s", text);
    return v;
}

static void assert_fails(const char *text, const char *line, const char *what)
{
    json_t *j = yaml(text);

    cr_assert_null(j, "accepted: %s", text);
    cr_assert(!strncmp(err, line, strlen(line)), "want \"%s\" in: %s", line, err);
    cr_assert(strstr(err, what), "want \"%s\" in: %s", what, err);
}

static void assert_yaml_is_json(const char *y, const char *js)
{
    json_t *a = yaml(y), *b = json_loads(js, JSON_REJECT_DUPLICATES, NULL);

    cr_assert_not_null(a, "%s", err);
    cr_assert_not_null(b);
    if (!json_equal(a, b)) {
        char *d = json_dumps(a, JSON_SORT_KEYS);
        cr_assert_fail("got %s", d);
    }
    json_decref(a);
    json_decref(b);
}

static const char realistic_yaml[] =
    "# headscale 0.22.3 acl.yaml\n"
    "groups:\n"
    "  group:admin:\n"
    "    - alice\n"
    "    - bob\n"
    "  group:dev: [carol, \"dave\"]\n"
    "  group:empty: []\n"
    "hosts:\n"
    "  db: 100.64.0.10/32\n"
    "  office-net: 10.20.0.0/16\n"
    "  cgnat: 100.64.0.0/10\n"
    "tagOwners:\n"
    "  tag:prod:\n"
    "    - group:admin\n"
    "  tag:ci: [alice]\n"
    "acls:\n"
    "  - action: accept\n"
    "    src: [\"*\"]\n"
    "    dst: [\"*:*\"]\n"
    "  - action: accept\n"
    "    src:\n"
    "      - group:dev\n"
    "    proto: tcp\n"
    "    dst:\n"
    "      - db:5432\n"
    "      - tag:prod:22,80,443\n"
    "      - office-net:1000-2000\n"
    "  - action: accept\n"
    "    src: [tag:ci]\n"
    "    proto: 17\n"
    "    dst: ['cgnat:53']\n"
    "ssh:\n"
    "  - action: check\n"
    "    src: [group:admin]\n"
    "    dst: [tag:prod]\n"
    "    users: [root, autogroup:nonroot]\n"
    "autoApprovers:\n"
    "  routes:\n"
    "    10.20.0.0/16: [group:admin]\n"
    "  exitNode: [tag:prod]\n"
    "tests:\n"
    "  - src: carol\n"
    "    accept: [db:5432]\n"
    "    deny:\n"
    "      - tag:prod:8080\n";

static const char realistic_json[] =
    "{\"groups\": {\"group:admin\": [\"alice\", \"bob\"], \"group:dev\": [\"carol\", \"dave\"],"
    "  \"group:empty\": []},"
    " \"hosts\": {\"db\": \"100.64.0.10/32\", \"office-net\": \"10.20.0.0/16\","
    "  \"cgnat\": \"100.64.0.0/10\"},"
    " \"tagOwners\": {\"tag:prod\": [\"group:admin\"], \"tag:ci\": [\"alice\"]},"
    " \"acls\": ["
    "  {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]},"
    "  {\"action\": \"accept\", \"src\": [\"group:dev\"], \"proto\": \"tcp\","
    "   \"dst\": [\"db:5432\", \"tag:prod:22,80,443\", \"office-net:1000-2000\"]},"
    "  {\"action\": \"accept\", \"src\": [\"tag:ci\"], \"proto\": 17, \"dst\": [\"cgnat:53\"]}],"
    " \"ssh\": [{\"action\": \"check\", \"src\": [\"group:admin\"], \"dst\": [\"tag:prod\"],"
    "  \"users\": [\"root\", \"autogroup:nonroot\"]}],"
    " \"autoApprovers\": {\"routes\": {\"10.20.0.0/16\": [\"group:admin\"]},"
    "  \"exitNode\": [\"tag:prod\"]},"
    " \"tests\": [{\"src\": \"carol\", \"accept\": [\"db:5432\"], \"deny\": [\"tag:prod:8080\"]}]}";

Test(policy_yaml, realistic_policy_equals_its_json)
{
    assert_yaml_is_json(realistic_yaml, realistic_json);
}

Test(policy_yaml, flow_style_document)
{
    assert_yaml_is_json("{acls: [{action: accept, src: ['*'], dst: ['*:*']}]}",
                        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"],"
                        " \"dst\": [\"*:*\"]}]}");
}

Test(policy_yaml, plain_null)
{
    const char *in[] = { "", "~", "null", "Null", "NULL" };
    for (size_t i = 0; i < HS_ARRAY_LEN(in); i++) {
        json_t *v = value_of(in[i]);
        cr_assert(json_is_null(v), "%s", in[i]);
        json_decref(v);
    }
}

Test(policy_yaml, plain_booleans)
{
    const char *t[] = { "true", "True", "TRUE" }, *f[] = { "false", "False", "FALSE" };
    for (size_t i = 0; i < 3; i++) {
        json_t *a = value_of(t[i]), *b = value_of(f[i]);
        cr_assert(json_is_true(a), "%s", t[i]);
        cr_assert(json_is_false(b), "%s", f[i]);
        json_decref(a);
        json_decref(b);
    }
}

/* YAML 1.1 spellings that yaml.v3 (and the 1.2 core schema) read as text. */
Test(policy_yaml, yaml11_words_stay_strings)
{
    const char *in[] = { "yes", "no", "on", "off", "y", "tRUE", "nULL", "0x1F", "0o17",
                         "1_000", ".inf", "-.inf", ".nan", "1e", "1.2.3", "+", "." };
    for (size_t i = 0; i < HS_ARRAY_LEN(in); i++) {
        json_t *v = value_of(in[i]);
        cr_assert(json_is_string(v), "%s", in[i]);
        cr_assert_str_eq(json_string_value(v), in[i]);
        json_decref(v);
    }
}

Test(policy_yaml, plain_integers)
{
    struct {
        const char *in;
        json_int_t want;
    } c[] = {
        { "0", 0 },
        { "22", 22 },
        { "+7", 7 },
        { "-3", -3 },
        { "007", 7 }, /* core schema: decimal, not YAML 1.1 octal */
        { "9223372036854775807", LLONG_MAX },
        { "-9223372036854775808", LLONG_MIN },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(c); i++) {
        json_t *v = value_of(c[i].in);
        cr_assert(json_is_integer(v), "%s", c[i].in);
        cr_assert_eq(json_integer_value(v), c[i].want, "%s", c[i].in);
        json_decref(v);
    }
}

Test(policy_yaml, integers_out_of_range)
{
    assert_fails("v: 9223372036854775808\n", "line 1: ", "out of range");
    assert_fails("v: -9223372036854775809\n", "line 1: ", "out of range");
    assert_fails("a: 1\nb:\n  - 99999999999999999999999\n", "line 3: ", "out of range");
    assert_fails("v: 1e999\n", "line 1: ", "out of range");
}

Test(policy_yaml, plain_floats)
{
    struct {
        const char *in;
        double want;
    } c[] = {
        { "1.5", 1.5 }, { "-0.25", -0.25 }, { ".5", 0.5 },     { "1.", 1.0 },
        { "1e3", 1e3 }, { "+2.5E-1", 0.25 }, { "6.02e+23", 6.02e23 },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(c); i++) {
        json_t *v = value_of(c[i].in);
        cr_assert(json_is_real(v), "%s", c[i].in);
        cr_assert_float_eq(json_real_value(v), c[i].want, 1e-9 * (1 + c[i].want), "%s",
                           c[i].in);
        json_decref(v);
    }
}

Test(policy_yaml, policy_words_are_strings)
{
    const char *in[] = { "100.64.0.0/10", "tag:x", "group:a", "alice", "alice@example.com",
                         "autogroup:member", "fd7a:115c:a1e0::/48", "host:22", "10.0.0.1",
                         "1.2.3.4:80-90", "-1-2" };
    for (size_t i = 0; i < HS_ARRAY_LEN(in); i++) {
        json_t *v = value_of(in[i]);
        cr_assert(json_is_string(v), "%s", in[i]);
        cr_assert_str_eq(json_string_value(v), in[i]);
        json_decref(v);
    }
    /* "*" and "*:*" must be quoted in YAML block context ('*' starts an alias). */
    assert_yaml_is_json("- '*'\n- \"*:*\"\n", "[\"*\", \"*:*\"]");
}

Test(policy_yaml, quoted_and_block_scalars_are_strings)
{
    assert_yaml_is_json("a: '22'\nb: \"true\"\nc: ''\nd: \"null\"\ne: '1.5'\n"
                        "f: |\n  22\ng: >-\n  true\n  x\n",
                        "{\"a\": \"22\", \"b\": \"true\", \"c\": \"\", \"d\": \"null\","
                        " \"e\": \"1.5\", \"f\": \"22\\n\", \"g\": \"true x\"}");
}

Test(policy_yaml, str_tag_is_honoured)
{
    assert_yaml_is_json("a: !!str 22\nb: !!str true\nc: !!str\nd: ! 5\n"
                        "e: !!seq [1]\nf: !!map {x: 1}\n!!str 7: k\n",
                        "{\"a\": \"22\", \"b\": \"true\", \"c\": \"\", \"d\": \"5\","
                        " \"e\": [1], \"f\": {\"x\": 1}, \"7\": \"k\"}");
}

Test(policy_yaml, other_tags_refused)
{
    assert_fails("a: !!int 5\n", "line 1: ", "tag:yaml.org,2002:int");
    assert_fails("a: !custom x\n", "line 1: ", "not supported");
    assert_fails("a: !!map [1]\n", "line 1: ", "not supported");
    assert_fails("!!int 5: x\n", "line 1: ", "not supported");
}

Test(policy_yaml, keys_are_text_as_written)
{
    assert_yaml_is_json("22: a\ntrue: b\n1.50: c\n~: d\n'': e\n",
                        "{\"22\": \"a\", \"true\": \"b\", \"1.50\": \"c\", \"~\": \"d\","
                        " \"\": \"e\"}");
}

Test(policy_yaml, keys_must_be_scalars)
{
    assert_fails("? [a, b]\n: x\n", "line 1: ", "mapping key must be a scalar");
    assert_fails("a: 1\n? {b: 1}\n: x\n", "line 2: ", "mapping key must be a scalar");
    assert_fails("a: 1\n?\n: x\n", "line 2: ", "empty mapping key");
}

Test(policy_yaml, duplicate_keys)
{
    assert_fails("acls: []\ngroups: {}\nacls: []\n", "line 3: ", "duplicate key \"acls\"");
    assert_fails("a:\n  b: 1\n  c: 2\n  b: 3\n", "line 4: ", "duplicate key \"b\"");
    assert_fails("{x: 1, 'x': 2}\n", "line 1: ", "duplicate key");
    /* The same key in two mappings is fine. */
    assert_yaml_is_json("- {x: 1}\n- {x: 2}\n", "[{\"x\": 1}, {\"x\": 2}]");
}

Test(policy_yaml, anchors_and_aliases_refused)
{
    assert_fails("a: &x [1]\nb: *x\n", "line 1: ", "anchors");
    assert_fails("a: &x 1\n", "line 1: ", "anchors");
    assert_fails("a: &x {b: 1}\n", "line 1: ", "anchors");
    assert_fails("a: 1\nb: [2,\n  *x]\n", "line 3: ", "aliases");
}

Test(policy_yaml, one_document_only)
{
    assert_fails("a: 1\n---\nb: 2\n", "line 2: ", "more than one YAML document");
    assert_fails("---\na: 1\n...\n---\n", "line 4: ", "more than one YAML document");
    assert_yaml_is_json("%YAML 1.1\n---\na: 1\n...\n", "{\"a\": 1}");
}

Test(policy_yaml, empty_policy)
{
    assert_fails("", "line 1: ", "empty policy");
    assert_fails("# just a comment\n\n", "line ", "empty policy");
    assert_fails("---\n", "line ", "empty policy");
    assert_fails("~\n", "line ", "empty policy");
}

Test(policy_yaml, scalar_documents)
{
    json_t *j = yaml("hello\n");
    cr_assert(json_is_string(j));
    json_decref(j);
}

Test(policy_yaml, nul_escape_refused)
{
    assert_fails("a: \"x\\0y\"\n", "line 1: ", "NUL");
}

static char *nested_seqs(int depth)
{
    char *s = malloc((size_t)depth * 2 + 1);

    memset(s, '[', (size_t)depth);
    memset(s + depth, ']', (size_t)depth);
    s[depth * 2] = '\0';
    return s;
}

Test(policy_yaml, depth_limit)
{
    char *ok = nested_seqs(POLICY_MAX_DEPTH), *deep = nested_seqs(POLICY_MAX_DEPTH + 1);
    json_t *j = yaml(ok);

    cr_assert_not_null(j, "%s", err);
    json_decref(j);
    assert_fails(deep, "line 1: ", "nested deeper than");
    free(ok);
    free(deep);
}

Test(policy_yaml, depth_limit_block_mappings)
{
    char buf[POLICY_MAX_DEPTH * (POLICY_MAX_DEPTH + 4) + 16];
    size_t n = 0;

    /* POLICY_MAX_DEPTH + 1 nested mappings: k:\n  k:\n    k: ... */
    for (int d = 0; d <= POLICY_MAX_DEPTH; d++) {
        memset(buf + n, ' ', (size_t)d);
        n += (size_t)d;
        memcpy(buf + n, d == POLICY_MAX_DEPTH ? "k: v\n" : "k:\n", d == POLICY_MAX_DEPTH ? 5 : 3);
        n += d == POLICY_MAX_DEPTH ? 5 : 3;
    }
    buf[n] = '\0';
    cr_assert_null(policy_yaml_to_json(buf, n, err, sizeof(err)));
    cr_assert(strstr(err, "line 65: nested deeper than"), "%s", err);
}

Test(policy_yaml, size_limit)
{
    size_t n = POLICY_MAX_BYTES + 1;
    char *big = malloc(n);

    memset(big, '#', n);
    cr_assert_null(policy_yaml_to_json(big, n, err, sizeof(err)));
    cr_assert(strstr(err, "exceeds the limit"), "%s", err);
    cr_assert(!strncmp(err, "line 1: ", 8), "%s", err);
    free(big);
}

Test(policy_yaml, syntax_errors_name_the_line)
{
    assert_fails("a: 1\nb: [1, 2\n", "line 3: ", "invalid YAML");
    assert_fails("a: 1\nb: 2\n  c: 3\n", "line 3: ", "invalid YAML");
    assert_fails("a: 1\nb: \"open\n", "line 3: ", "invalid YAML");
    assert_fails("a: 1\nb:\n\t- x\n", "line 3: ", "invalid YAML");
    /* An encoding error comes from libyaml's reader, with an offset rather than a line. */
    assert_fails("a: 1\nb: 2\nc: \xff\n", "line 3: ", "invalid YAML");
}

Test(policy_yaml, small_error_buffers_are_safe)
{
    char tiny[4];

    cr_assert_null(policy_yaml_to_json("a: *x\n", 6, tiny, sizeof(tiny)));
    cr_assert_eq(strlen(tiny), 3);
    cr_assert_null(policy_yaml_to_json("a: *x\n", 6, NULL, 0));
}

/* Every prefix of a realistic policy either parses or fails with a line number; run under
 * ASan (HS_SANITIZE=ON) this also shows no prefix reads past its end or leaks. */
Test(policy_yaml, byte_by_byte_prefixes_never_crash)
{
    size_t len = strlen(realistic_yaml);

    for (size_t n = 0; n <= len; n++) {
        char *copy = malloc(n ? n : 1); /* exact size, so ASan sees any read past the end */
        json_t *j;

        memcpy(copy, realistic_yaml, n);
        err[0] = '\0';
        j = policy_yaml_to_json(copy, n, err, sizeof(err));
        if (!j)
            cr_assert(!strncmp(err, "line ", 5), "prefix %zu: %s", n, err);
        json_decref(j);
        free(copy);
    }
}
