/* webadmin: the template engine's escaping and refusals, forms and cookies, sessions, and the
 * front door (sign-in, CSRF, sessions) answered without a server. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "webadmin/tmpl.h"
#include "webadmin/wa_internal.h"

/* Renders src with data (JSON text) → a new string; fails the test on a compile error. */
static char *render(const char *src, const char *data)
{
    struct tmpl *t = NULL;
    struct hs_buf out;
    char err[256];
    json_t *d = json_loads(data, 0, NULL);
    int rc = tmpl_compile(src, strlen(src), &t, err, sizeof(err));

    cr_assert_eq(rc, 0, "%s: %s", src, err);
    cr_assert_not_null(d, "%s", data);
    hs_buf_init(&out, 1u << 20);
    cr_assert_eq(tmpl_render(t, d, &out), 0);
    json_decref(d);
    tmpl_free(t);
    return hs_buf_steal(&out);
}

static void expect(const char *src, const char *data, const char *want)
{
    char *got = render(src, data);
    cr_expect_str_eq(got, want, "%s", src);
    free(got);
}

/* The compile error of src, which must be refused with rc. */
static void refused(const char *src, int rc, const char *needle)
{
    struct tmpl *t = NULL;
    char err[256];

    cr_expect_eq(tmpl_compile(src, strlen(src), &t, err, sizeof(err)), rc, "%s", src);
    cr_expect_null(t);
    tmpl_free(t);
    cr_expect(strstr(err, needle) != NULL, "%s: %s", src, err);
}

Test(tmpl, text_and_attributes_are_escaped)
{
    expect("<p>{{x}}</p>", "{\"x\":\"<script>&\\\"'\"}", "<p>&lt;script&gt;&amp;&quot;&#39;</p>");
    expect("<a title=\"{{x}}\" class='{{x}}'>", "{\"x\":\"\\\" onclick='1'\"}",
           "<a title=\"&quot; onclick=&#39;1&#39;\" class='&quot; onclick=&#39;1&#39;'>");
    expect("{{n}} {{f}} {{t}} {{z}} {{missing}}.", "{\"n\":42,\"f\":false,\"t\":true,\"z\":null}",
           "42  true  .");
}

Test(tmpl, urls_are_checked_at_the_start_and_encoded_inside)
{
    const char *src = "<a href=\"{{u}}\">";
    expect(src, "{\"u\":\"javascript:alert(1)\"}", "<a href=\"#\">");
    expect(src, "{\"u\":\" JaVaScRiPt:alert(1)\"}", "<a href=\"#\">");
    expect(src, "{\"u\":\"data:text/html,x\"}", "<a href=\"#\">");
    expect(src, "{\"u\":\"//evil.example/\"}", "<a href=\"#\">");
    expect(src, "{\"u\":\"/\\\\evil.example/\"}", "<a href=\"#\">");
    expect(src, "{\"u\":\"/admin/nodes?q=a&b\"}", "<a href=\"/admin/nodes?q=a&amp;b\">");
    expect(src, "{\"u\":\"https://example.com/\"}", "<a href=\"https://example.com/\">");
    expect("<a href=\"/n/{{id}}?q={{q}}\">", "{\"id\":\"1/../x\",\"q\":\"a b&c=\\\"\"}",
           "<a href=\"/n/1%2F..%2Fx?q=a%20b%26c%3D%22\">");
}

Test(tmpl, values_where_no_escaping_is_safe_are_refused)
{
    refused("<a {{x}}>", -EINVAL, "line 1");
    refused("<{{x}}>", -EINVAL, "'<' right before");
    refused("<{{#x}}script{{/x}}>{{y}}", -EINVAL, "'<' right before");
    refused("<a href={{x}}>", -EINVAL, "no escaping");
    refused("<a onclick=\"{{x}}\">", -EINVAL, "no escaping");
    refused("<a style=\"{{x}}\">", -EINVAL, "no escaping");
    refused("<script>var a = \"{{x}}\";</script>", -EINVAL, "no escaping");
    refused("<style>{{x}}</style>", -EINVAL, "no escaping");
    refused("\n\n<!-- {{x}} -->", -EINVAL, "line 3");
    /* after the script ends, text is text again */
    expect("<script src=\"/a.js\"></script><p>{{x}}</p>", "{\"x\":\"<\"}",
           "<script src=\"/a.js\"></script><p>&lt;</p>");
}

Test(tmpl, sections)
{
    const char *src = "{{#xs}}[{{name}}|{{top}}]{{/xs}}{{^xs}}none{{/xs}}";
    expect(src, "{\"xs\":[{\"name\":\"a\"},{\"name\":\"b\"}],\"top\":1}", "[a|1][b|1]");
    expect(src, "{\"xs\":[]}", "none");
    expect(src, "{\"xs\":false}", "none");
    expect(src, "{\"xs\":{\"name\":\"o\"},\"top\":2}", "[o|2]");
    expect("{{#a.b}}{{a.b.c}}{{.}}{{/a.b}}", "{\"a\":{\"b\":{\"c\":\"x\"}}}", "x");
    expect("{{#xs}}{{.}},{{/xs}}{{xs.1}}", "{\"xs\":[\"p\",\"q\"]}", "p,q,q");
    expect("<option{{#s}} selected{{/s}}>", "{\"s\":true}", "<option selected>");
    expect("<option{{#s}} selected{{/s}}>", "{\"s\":false}", "<option>");
}

Test(tmpl, malformed_sections_are_refused)
{
    refused("{{#a}}", -EINVAL, "not closed");
    refused("{{#a}}text after", -EINVAL, "not closed");
    refused("<a{{#x}} b{{/x}}", -EINVAL, "ends inside a tag");
    refused("{{/a}}", -EINVAL, "closes no section");
    refused("{{#a}}{{/b}}", -EINVAL, "closes");
    refused("{{#a}}<b {{/a}}>", -EINVAL, "another HTML context");
    refused("<a {{#x}}href{{/x}}=\"{{v}}\">", -EINVAL, "followed by the tag's '>'");
    refused("{{a", -EINVAL, "without }}");
    refused("{{}}", -EINVAL, "empty");
    refused("{{a b}}", -EINVAL, "not a name");
    refused("{{a..b}}", -EINVAL, "not a name");
}

Test(tmpl, limits)
{
    struct hs_buf deep, big;
    struct tmpl *t;
    char err[128];

    hs_buf_init(&deep, 1u << 20);
    for (int i = 0; i <= TMPL_MAX_DEPTH; i++)
        hs_buf_puts(&deep, "{{#a}}");
    cr_expect_eq(tmpl_compile(deep.data, deep.len, &t, err, sizeof(err)), -E2BIG);
    hs_buf_free(&deep);
    hs_buf_init(&big, TMPL_MAX_SOURCE + 2);
    hs_buf_reserve(&big, TMPL_MAX_SOURCE + 1);
    memset(big.data, 'x', TMPL_MAX_SOURCE + 1);
    cr_expect_eq(tmpl_compile(big.data, TMPL_MAX_SOURCE + 1, &t, err, sizeof(err)), -E2BIG);
    hs_buf_free(&big);
}

Test(tmpl, many_pieces)
{
    struct hs_buf src, want;

    hs_buf_init(&src, 1u << 20);
    hs_buf_init(&want, 1u << 20);
    /* three pieces each, so that some section ends just where the pieces must grow */
    for (int i = 0; i < 500; i++) {
        hs_buf_puts(&src, "{{#s}}{{x}}{{/s}}");
        hs_buf_puts(&want, "&lt;");
    }
    char *got = render(src.data, "{\"s\":{\"x\":\"<\"}}");
    cr_expect_str_eq(got, want.data);
    free(got);
    hs_buf_free(&src);
    hs_buf_free(&want);
}

Test(tmpl, output_limit_leaves_the_buffer_as_it_was)
{
    struct tmpl *t;
    struct hs_buf out;
    char err[128];
    json_t *d = json_pack("{s:[s,s,s]}", "xs", "aaaa", "bbbb", "cccc");

    cr_assert_eq(tmpl_compile("{{#xs}}{{.}}{{/xs}}", 19, &t, err, sizeof(err)), 0);
    hs_buf_init(&out, 10);
    hs_buf_puts(&out, "ab");
    cr_expect_eq(tmpl_render(t, d, &out), -E2BIG);
    cr_expect_str_eq(out.data, "ab");
    hs_buf_free(&out);
    json_decref(d);
    tmpl_free(t);
}

Test(tmpl, broken_utf8_and_nul_are_replaced)
{
    struct hs_buf out;

    hs_buf_init(&out, 100);
    cr_assert_eq(tmpl_escape_html(&out, "a\xff\xc3\xa9<\0b", 7), 0);
    cr_expect_eq(out.len, 10);
    cr_expect(memcmp(out.data, "a?\xc3\xa9&lt;?b", 10) == 0);
    hs_buf_free(&out);
}

Test(tmpl, every_template_of_the_web_admin_compiles)
{
    const char *names[] = { "_head", "_foot", "signin", "error", "overview", "users", "nodes",
                            "node", "preauthkeys", "apikeys", "routes", "policy", "derp",
                            "dns", "signedin", "notadmin" };

    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        char *path = hs_aprintf("%s/templates/%s.html", HS_SOURCE_DIR, names[i]), *src, err[256];
        struct tmpl *t = NULL;
        size_t len;

        cr_assert_eq(hs_read_file(path, TMPL_MAX_SOURCE, &src, &len), 0, "%s", path);
        cr_expect_eq(tmpl_compile(src, len, &t, err, sizeof(err)), 0, "%s: %s", path, err);
        tmpl_free(t);
        free(src);
        free(path);
    }
}

/* ---- the policy page's line diff ---- */

/* The diff written as one string, "op text" per line, and checked to be a real edit script:
 * its " " and "-" lines are `from`, its " " and "+" lines are `to`. */
static char *diff_text(const char *from, const char *to)
{
    json_t *d = wa__line_diff(from, to), *l;
    struct hs_buf all, a, b;
    size_t i;
    char *out;

    cr_assert_not_null(d);
    hs_buf_init(&all, 1 << 20);
    hs_buf_init(&a, 1 << 20);
    hs_buf_init(&b, 1 << 20);
    json_array_foreach(d, i, l) {
        const char *op = hs_json_str(l, "op"), *text = hs_json_str(l, "text");
        hs_buf_appendf(&all, "%s%s\n", op, text);
        if (op[0] != '+')
            hs_buf_appendf(&a, "%s\n", text);
        if (op[0] != '-')
            hs_buf_appendf(&b, "%s\n", text);
    }
    cr_assert_str_eq(a.data ? a.data : "", from);
    cr_assert_str_eq(b.data ? b.data : "", to);
    json_decref(d);
    hs_buf_free(&a);
    hs_buf_free(&b);
    out = hs_strdup(all.data ? all.data : "");
    hs_buf_free(&all);
    return out;
}

Test(diff, lines_kept_removed_and_added)
{
    char *d = diff_text("a\nb\nc\nd\n", "a\nc\nx\nd\n");

    cr_assert_str_eq(d, " a\n-b\n c\n+x\n d\n");
    free(d);
    d = diff_text("", "one\ntwo\n");
    cr_assert_str_eq(d, "+one\n+two\n");
    free(d);
    d = diff_text("k\nold 1\nold 2\nk\n", "k\nnew\nk\n");
    cr_assert_str_eq(d, " k\n-old 1\n-old 2\n+new\n k\n", "removals before additions");
    free(d);
    d = diff_text("same\n", "same\n");
    cr_assert_str_eq(d, " same\n");
    free(d);
    /* The minimal script: one line moved is one removal and one addition. */
    d = diff_text("1\n2\n3\n4\n5\n", "2\n3\n4\n5\n1\n");
    cr_assert_str_eq(d, "-1\n 2\n 3\n 4\n 5\n+1\n");
    free(d);
}

Test(diff, bounded)
{
    struct hs_buf a, b;
    json_t *d;

    hs_buf_init(&a, 1 << 20);
    hs_buf_init(&b, 1 << 20);
    for (int i = 0; i < WA_DIFF_MAX_LINES + 1; i++) {
        hs_buf_appendf(&a, "a%d\n", i);
        hs_buf_appendf(&b, "b%d\n", i);
    }
    cr_assert_null(wa__line_diff(a.data, b.data), "past the bound: no table is built");
    /* A long common head and tail do not count against it. */
    hs_buf_appendf(&a, "x\n");
    hs_buf_appendf(&b, "x\n");
    d = wa__line_diff(a.data, a.data);
    cr_assert_eq(json_array_size(d), WA_DIFF_MAX_LINES + 2);
    json_decref(d);
    hs_buf_free(&a);
    hs_buf_free(&b);
}

/* ---- forms and cookies ---- */

Test(form, fields_are_decoded_and_checked)
{
    struct wa_form f;

    cr_assert_eq(wa__form_parse(&f, "a=1&b=x+y%21&&c&a=2", 19), 0);
    cr_expect_str_eq(wa__form_get(&f, "a"), "1");
    cr_expect_str_eq(wa__form_get(&f, "b"), "x y!");
    cr_expect_str_eq(wa__form_get(&f, "c"), "");
    cr_expect_null(wa__form_get(&f, "d"));
    wa__form_free(&f);
    cr_expect_eq(wa__form_parse(&f, "a=%2", 4), -EINVAL);
    cr_expect_eq(wa__form_parse(&f, "a=%zz", 5), -EINVAL);
    cr_expect_eq(wa__form_parse(&f, "a=%00", 5), -EINVAL);
    cr_expect_eq(wa__form_parse(&f, "a=%ff", 5), -EINVAL);
    cr_expect_eq(f.n, 0);
}

Test(form, limits)
{
    struct hs_buf b;
    struct wa_form f;

    hs_buf_init(&b, 1u << 20);
    for (int i = 0; i <= WA_MAX_FIELDS; i++)
        hs_buf_puts(&b, "a=1&");
    cr_expect_eq(wa__form_parse(&f, b.data, b.len), -E2BIG);
    hs_buf_reset(&b);
    hs_buf_puts(&b, "a=");
    for (int i = 0; i < WA_MAX_FIELD_LEN; i++)
        hs_buf_puts(&b, "x");
    cr_expect_eq(wa__form_parse(&f, b.data, b.len), -E2BIG);
    hs_buf_free(&b);
}

Test(form, cookies)
{
    char v[8];

    cr_expect(wa__cookie_get("a=1; sess=abc; b=2", "sess", v, sizeof(v)));
    cr_expect_str_eq(v, "abc");
    cr_expect_not(wa__cookie_get("xsess=abc", "sess", v, sizeof(v)));
    cr_expect_not(wa__cookie_get("sess=12345678", "sess", v, sizeof(v)));
    cr_expect_not(wa__cookie_get(NULL, "sess", v, sizeof(v)));
}

/* ---- sessions ---- */

Test(session, open_with_the_id_only)
{
    struct wa_sessions *ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, NULL);
    char id[WA_SESSION_ID_LEN + 1], id2[WA_SESSION_ID_LEN + 1], other[WA_SESSION_ID_LEN + 1];
    struct wa_session_view v, v2;

    cr_assert_eq(wa__session_create(ss, "hskey-api-secret", false, id), 0);
    cr_assert_eq(wa__session_create(ss, "hskey-api-other", false, id2), 0);
    cr_assert_eq(wa__session_open(ss, id, &v), 0);
    cr_expect_str_eq(v.api_key, "hskey-api-secret");
    cr_assert_eq(wa__session_open(ss, id2, &v2), 0);
    cr_expect_str_eq(v2.api_key, "hskey-api-other");
    cr_expect_str_neq(v.csrf, v2.csrf);
    wa__random_token(other);
    cr_expect_eq(wa__session_open(ss, other, &v), -ENOENT);
    cr_expect_eq(wa__session_open(ss, "short", &v), -ENOENT);
    cr_expect_eq(wa__session_open(ss, NULL, &v), -ENOENT);
    wa__session_end(ss, id);
    cr_expect_eq(wa__session_open(ss, id, &v), -ENOENT);
    cr_expect_eq(wa__session_open(ss, id2, &v), 0);
    wa__sessions_free(ss);
}

Test(session, expiry)
{
    struct wa_sessions *ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 1000, NULL);
    char id[WA_SESSION_ID_LEN + 1];
    struct wa_session_view v;

    cr_assert_eq(wa__session_create(ss, "k", false, id), 0);
    usleep(5000);
    cr_expect_eq(wa__session_open(ss, id, &v), -ENOENT, "idle too long");
    wa__sessions_free(ss);
}

static char *sessions_path(char dir[64])
{
    snprintf(dir, 64, "/tmp/hs-wa-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    return hs_aprintf("%s/sessions", dir);
}

static void remove_dir(const char *dir, char *path)
{
    unlink(path);
    rmdir(dir);
    free(path);
}

/* A restart with the same file keeps the sessions that were live (their API key opens with the
 * id alone, their CSRF token unchanged); the file is 0600 and holds neither an id nor a key
 * in the clear; ended sessions stay ended. */
Test(session, a_file_keeps_them_across_a_restart)
{
    char dir[64], *path = sessions_path(dir), id[WA_SESSION_ID_LEN + 1],
                  gone[WA_SESSION_ID_LEN + 1], *text;
    struct wa_sessions *ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
    struct wa_session_view v, again;
    struct stat sb;
    size_t len;

    cr_assert_eq(wa__session_create(ss, "hskey-api-kept", false, id), 0);
    cr_assert_eq(wa__session_create(ss, "hskey-api-ended", false, gone), 0);
    cr_assert_eq(wa__session_open(ss, id, &v), 0);
    wa__session_end(ss, gone);
    wa__sessions_free(ss);

    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0600);
    cr_assert_eq(hs_read_file(path, 1 << 20, &text, &len), 0);
    cr_expect_null(strstr(text, "hskey-api"), "an API key in the clear");
    cr_expect_null(strstr(text, id), "a session id in the clear");
    free(text);

    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
    cr_assert_eq(wa__session_open(ss, id, &again), 0);
    cr_expect_str_eq(again.api_key, "hskey-api-kept");
    cr_expect_str_eq(again.csrf, v.csrf);
    cr_expect_eq(wa__session_open(ss, gone, &again), -ENOENT);
    wa__sessions_free(ss);
    remove_dir(dir, path);
}

#define MADE_KEY "hskey-api-0123456789ab-secret"

/* Whether a key was made for its session is kept in the file; a file of version 1 (before
 * that field) still opens its sessions, as keys of their own. */
Test(session, a_file_keeps_minted_keys_and_reads_version_1)
{
    char dir[64], *path = sessions_path(dir), id[WA_SESSION_ID_LEN + 1], *text;
    struct wa_sessions *ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
    struct wa_session_view v;
    struct hs_buf old;
    size_t len;

    cr_assert_eq(wa__session_create(ss, MADE_KEY, true, id), 0);
    wa__sessions_free(ss);
    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
    cr_assert_eq(wa__session_open(ss, id, &v), 0);
    cr_expect_str_eq(v.minted, "0123456789ab");
    wa__sessions_free(ss);

    /* The same file as version 1 wrote it: another magic line, no last field. */
    cr_assert_eq(hs_read_file(path, 1 << 20, &text, &len), 0);
    cr_assert(hs_has_prefix(text, "headscale-webadmin sessions 2\n"));
    cr_assert(len > 14 && strcmp(text + len - 14, " 0123456789ab\n") == 0, "%s", text);
    hs_buf_init(&old, 1 << 20);
    hs_buf_puts(&old, "headscale-webadmin sessions 1\n");
    hs_buf_append(&old, text + strlen("headscale-webadmin sessions 2\n"),
                  len - 14 - strlen("headscale-webadmin sessions 2\n"));
    hs_buf_puts(&old, "\n");
    cr_assert_eq(hs_write_file_atomic(path, old.data, old.len, 0600), 0);
    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
    cr_assert_eq(wa__session_open(ss, id, &v), 0);
    cr_expect_str_eq(v.api_key, MADE_KEY);
    cr_expect_str_empty(v.minted);
    wa__sessions_free(ss);
    hs_buf_free(&old);
    free(text);
    remove_dir(dir, path);
}

#define IDLE_US 200000

/* A session whose key was made for it and that ends unused stays until the sweep gives its
 * key's prefix to expire, across a restart too; others just end. */
Test(session, ended_sessions_give_their_made_keys_to_expire)
{
    char dir[64], *path = sessions_path(dir), id[WA_SESSION_ID_LEN + 1], got[8][13];
    struct wa_sessions *ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, IDLE_US, path);
    struct wa_session_view v;

    cr_assert_eq(wa__session_create(ss, MADE_KEY, true, id), 0);
    cr_assert_eq(wa__session_create(ss, "hskey-api-111111111111-own", false, id), 0);
    cr_expect_eq(wa__sessions_sweep(ss, got, 8), 0, "nothing has ended yet");
    usleep(2 * IDLE_US);
    cr_expect_eq(wa__session_open(ss, id, &v), -ENOENT);
    wa__sessions_free(ss);
    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, IDLE_US, path);
    cr_assert_eq(wa__sessions_sweep(ss, got, 8), 1);
    cr_expect_str_eq(got[0], "0123456789ab");
    cr_expect_eq(wa__sessions_sweep(ss, got, 8), 0, "given once");
    wa__sessions_free(ss);
    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, IDLE_US, path);
    cr_expect_eq(wa__sessions_sweep(ss, got, 8), 0, "and gone from the file");
    wa__sessions_free(ss);
    remove_dir(dir, path);
}

/* Expiry holds across a restart, and a damaged file signs no one in (and is replaced). */
Test(session, a_file_keeps_expiry_and_refuses_damage)
{
    char dir[64], *path = sessions_path(dir), id[WA_SESSION_ID_LEN + 1], *text;
    struct wa_sessions *ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 1000, path);
    struct wa_session_view v;
    size_t len;

    cr_assert_eq(wa__session_create(ss, "k", false, id), 0);
    wa__sessions_free(ss);
    usleep(5000);
    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 1000, path);
    cr_expect_eq(wa__session_open(ss, id, &v), -ENOENT, "idle too long before the restart");
    wa__sessions_free(ss);

    ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
    cr_assert_eq(wa__session_create(ss, "k", false, id), 0);
    wa__sessions_free(ss);
    cr_assert_eq(hs_read_file(path, 1 << 20, &text, &len), 0);
    for (size_t cut = 0; cut < len; cut += len / 7 + 1) {
        char *bad = hs_strndup(text, cut);
        bad[cut ? cut - 1 : 0] ^= cut ? 0x20 : 0; /* cut short, and one byte changed */
        cr_assert_eq(hs_write_file_atomic(path, bad, strlen(bad), 0600), 0);
        ss = wa__sessions_new(3600 * HS_USEC_PER_SEC, 600 * HS_USEC_PER_SEC, path);
        cr_expect_eq(wa__session_open(ss, id, &v), -ENOENT, "opened from %zu bytes", cut);
        wa__sessions_free(ss);
        free(bad);
    }
    free(text);
    remove_dir(dir, path);
}

Test(session, tokens_compare)
{
    cr_expect(wa__token_equal("abc", "abc"));
    cr_expect_not(wa__token_equal("abc", "abd"));
    cr_expect_not(wa__token_equal("abc", "ab"));
    cr_expect_not(wa__token_equal("", ""));
    cr_expect_not(wa__token_equal(NULL, "a"));
}

/* ---- the front door, with no server behind it ---- */

static struct webadmin *front(void)
{
    struct webadmin_config cfg = { .server_url = "http://127.0.0.1:1",
                                   .templates_dir = HS_SOURCE_DIR "/templates",
                                   .base_path = "/admin",
                                   .session_max_us = 3600 * HS_USEC_PER_SEC,
                                   .session_idle_us = 600 * HS_USEC_PER_SEC };
    char err[256];
    struct webadmin *wa = webadmin_new(&cfg, err, sizeof(err));

    cr_assert_not_null(wa, "%s", err);
    return wa;
}

static int answer(struct webadmin *wa, const char *method, const char *path, const char *cookie,
                  const char *body, struct wa_response *rs)
{
    char *p = hs_strdup(path), *q = strchr(p, '?');
    struct wa_request rq = { .method = method, .path = p, .cookie = cookie, .body = body,
                             .body_len = body ? strlen(body) : 0,
                             .content_type = "application/x-www-form-urlencoded" };

    if (q) {
        *q = '\0';
        rq.query = q + 1;
    }
    webadmin_handle(wa, &rq, rs);
    free(p);
    return rs->status;
}

Test(front, sign_in_page_and_headers)
{
    struct webadmin *wa = front();
    struct wa_response rs;

    cr_expect_eq(answer(wa, "GET", "/admin/signin", NULL, NULL, &rs), 200);
    cr_expect(strstr(rs.headers.data, "Content-Security-Policy: default-src 'none'"));
    cr_expect(strstr(rs.headers.data, "Set-Cookie: __Host-wa_signin="));
    cr_expect(strstr(rs.headers.data, "HttpOnly; Secure; SameSite=Strict"));
    cr_expect(strstr(rs.body.data, "name=\"csrf\""));
    wa_response_free(&rs);
    webadmin_free(wa);
}

Test(front, no_session_no_page)
{
    struct webadmin *wa = front();
    struct wa_response rs;

    cr_expect_eq(answer(wa, "GET", "/admin/nodes", NULL, NULL, &rs), 303);
    cr_expect(strstr(rs.headers.data, "Location: /admin/signin\r\n"));
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "POST", "/admin/users/create",
                        "__Host-wa_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                        "name=x&csrf=y", &rs), 303);
    cr_expect(strstr(rs.headers.data, "Set-Cookie: __Host-wa_session=;"), "the bad cookie is "
              "cleared");
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/elsewhere", NULL, NULL, &rs), 404);
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/admin/signin?a=%zz", NULL, NULL, &rs), 400);
    wa_response_free(&rs);
    webadmin_free(wa);
}

Test(front, sign_in_needs_its_token)
{
    struct webadmin *wa = front();
    struct wa_response rs;

    cr_expect_eq(answer(wa, "POST", "/admin/signin", NULL, "api_key=hskey-api-x", &rs), 403);
    cr_expect_null(strstr(rs.headers.data, "__Host-wa_session="));
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "POST", "/admin/signin", "__Host-wa_signin=abc",
                        "api_key=hskey-api-x&csrf=abd", &rs), 403);
    wa_response_free(&rs);
    /* with the token the key is checked against the server, which is not there */
    cr_expect_eq(answer(wa, "POST", "/admin/signin", "__Host-wa_signin=abc",
                        "api_key=hskey-api-x&csrf=abc", &rs), 502);
    cr_expect_null(strstr(rs.headers.data, "__Host-wa_session="));
    wa_response_free(&rs);
    webadmin_free(wa);
}

/* ---- the command line ---- */

/* webadmin_options on the words of line (space-separated) → its result; err filled. */
static int options(const char *line, struct webadmin_options *o, char *err, size_t errsize)
{
    char *copy = hs_strdup(line), *argv[64] = { "headscale-webadmin" }, *save = NULL;
    int argc = 1, rc;

    for (char *w = strtok_r(copy, " ", &save); w && argc < 63; w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    err[0] = '\0';
    rc = webadmin_options(argc, argv, o, err, errsize);
    if (rc == 0)
        webadmin_options_free(o);
    free(copy);
    return rc;
}

#define OIDC_ALL "--server http://h:1 --public-url https://hs.example --oidc-issuer " \
                 "https://id.example --oidc-client-id wa --oidc-client-secret-file /s " \
                 "--api-key-file /k"

Test(options, defaults_and_values)
{
    struct webadmin_options o;
    char err[512];

    cr_assert_eq(options("--server http://h:1", &o, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(o.cfg.base_path, "/admin");
    cr_expect_eq(o.cfg.session_max_us, 12 * 3600 * HS_USEC_PER_SEC);
    cr_expect_null(o.cfg.oidc_issuer);
    cr_assert_eq(options("--server https://h --base /x --session-idle 5m --help", &o, err,
                         sizeof(err)), 0, "%s", err);
    cr_expect(o.help);
    cr_expect_eq(o.cfg.session_idle_us, 300 * HS_USEC_PER_SEC);
    cr_expect_eq(options("", &o, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "--server"), "%s", err);
    cr_expect_eq(options("--server http://h:1 --base /x/", &o, err, sizeof(err)), -EINVAL);
    cr_expect_eq(options("--server http://h:1 --session-max soon", &o, err, sizeof(err)),
                 -EINVAL);
    cr_expect_eq(options("--server http://h:1 --no-such", &o, err, sizeof(err)), -EINVAL);
}

Test(options, the_provider_options_all_or_none)
{
    struct webadmin_options o;
    char err[512];

    cr_assert_eq(options(OIDC_ALL " --oidc-admin-email a@b.example --oidc-admin-group ops "
                         "--oidc-admin-group eng --oidc-admin-user https://id.example/x",
                         &o, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(options(OIDC_ALL, &o, err, sizeof(err)), -EINVAL, "no administrators");
    cr_expect(strstr(err, "--oidc-admin-email"), "%s", err);
    cr_expect_eq(options("--server http://h:1 --oidc-issuer https://id.example "
                         "--oidc-admin-group ops", &o, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "configured in part"), "%s", err);
    cr_expect(strstr(err, "--public-url, --oidc-client-id, --oidc-client-secret-file, "
                          "--api-key-file"), "%s", err);
    cr_expect_eq(options("--server http://h:1 --api-key-file /k", &o, err, sizeof(err)),
                 -EINVAL, "a service key alone is half a configuration");
    cr_expect_eq(options("--server http://h:1 --oidc-name Corp", &o, err, sizeof(err)),
                 -EINVAL);
    cr_expect_eq(options(OIDC_ALL " --oidc-admin-group ops --public-url https://hs.example/admin",
                         &o, err, sizeof(err)), -EINVAL, "a path in the origin");
    cr_expect_eq(options(OIDC_ALL " --oidc-admin-group ops --oidc-issuer id.example", &o, err,
                         sizeof(err)), -EINVAL);
    /* A secret typed where its file belongs is not repeated in the message. */
    cr_expect_eq(options("--server http://h:1 --oidc-client-secret", &o, err, sizeof(err)),
                 -EINVAL);
    cr_expect_eq(options("--server http://h:1 --oidc-client-secret-fil s3cr3t", &o, err,
                         sizeof(err)), -EINVAL);
    cr_expect_null(strstr(err, "s3cr3t"), "%s", err);
}

/* ---- who is an administrator ---- */

static bool admin(const struct webadmin_config *cfg, const char *claims_json)
{
    json_t *c = json_loads(claims_json, 0, NULL);
    bool yes;

    cr_assert_not_null(c, "%s", claims_json);
    yes = wa__oidc_is_admin(cfg, c);
    json_decref(c);
    return yes;
}

Test(oidc, who_is_an_administrator)
{
    struct webadmin_config cfg = { 0 };

    cr_expect_not(admin(&cfg, "{\"iss\":\"https://id\",\"sub\":\"1\",\"email\":\"a@x\","
                              "\"email_verified\":true}"), "no lists: nobody");
    hs_strv_push(&cfg.admin_emails, "Ann@Example.org");
    hs_strv_push(&cfg.admin_groups, "ops");
    hs_strv_push(&cfg.admin_ids, "https://id/sub-9");
    cr_expect(admin(&cfg, "{\"email\":\"ann@example.ORG\",\"email_verified\":true}"));
    cr_expect(admin(&cfg, "{\"email\":\"ann@example.org\",\"email_verified\":\"true\"}"));
    cr_expect_not(admin(&cfg, "{\"email\":\"ann@example.org\"}"), "unverified");
    cr_expect_not(admin(&cfg, "{\"email\":\"ann@example.org\",\"email_verified\":false}"));
    cr_expect_not(admin(&cfg, "{\"email\":\"ann@example.org.evil\",\"email_verified\":true}"));
    cr_expect(admin(&cfg, "{\"groups\":[\"eng\",\"ops\"]}"));
    cr_expect_not(admin(&cfg, "{\"groups\":[\"OPS\",\"opsx\",3]}"), "groups match exactly");
    cr_expect_not(admin(&cfg, "{\"groups\":\"ops\"}"), "not a list");
    cr_expect(admin(&cfg, "{\"iss\":\"https://id\",\"sub\":\"sub-9\"}"));
    cr_expect(admin(&cfg, "{\"iss\":\"https://id/\",\"sub\":\"sub-9\"}"));
    cr_expect_not(admin(&cfg, "{\"iss\":\"https://other\",\"sub\":\"sub-9\"}"));
    cr_expect_not(admin(&cfg, "{\"iss\":\"https://id\",\"sub\":\"sub-90\"}"));
    hs_strv_free(&cfg.admin_emails);
    hs_strv_free(&cfg.admin_groups);
    hs_strv_free(&cfg.admin_ids);
}

/* ---- the provider's sign-in at the front door, with no provider behind it ---- */

/* A file of text with mode in dir (a mkdtemp'd folder) → its path (malloc'd). */
static char *secret_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path = hs_aprintf("%s/%s", dir, name);

    cr_assert_eq(hs_write_file_atomic(path, text, strlen(text), mode), 0);
    cr_assert_eq(chmod(path, mode), 0);
    return path;
}

Test(oidc, secret_files_are_checked_and_strays_refused)
{
    char dir[] = "/tmp/wa-oidc-XXXXXX", err[256];
    struct webadmin_config cfg = { .server_url = "http://127.0.0.1:1",
                                   .templates_dir = HS_SOURCE_DIR "/templates",
                                   .base_path = "/admin",
                                   .session_max_us = 3600 * HS_USEC_PER_SEC,
                                   .session_idle_us = 600 * HS_USEC_PER_SEC,
                                   .public_url = "https://hs.example",
                                   .oidc_issuer = "http://127.0.0.1:1/oidc",
                                   .oidc_client_id = "wa" };
    struct wa_response rs;
    struct webadmin *wa;
    char *secret, *key;

    cr_assert_not_null(mkdtemp(dir));
    secret = secret_file(dir, "secret", "client-secret\n", 0600);
    key = secret_file(dir, "key", "hskey-api-aaaaaaaaaaaa-b\n", 0644);
    cfg.oidc_client_secret_file = secret;
    cfg.api_key_file = key;
    hs_strv_push(&cfg.admin_groups, "ops");
    cr_expect_null(webadmin_new(&cfg, err, sizeof(err)), "a key others may read");
    cr_expect(strstr(err, "--api-key-file: the file may be read by others"), "%s", err);
    cr_assert_eq(chmod(key, 0400), 0);
    wa = webadmin_new(&cfg, err, sizeof(err));
    cr_assert_not_null(wa, "%s", err);

    cr_expect_eq(answer(wa, "GET", "/admin/signin", NULL, NULL, &rs), 200);
    cr_expect(strstr(rs.body.data, "Sign in with 127.0.0.1:1</a>"), "%s", rs.body.data);
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/admin/oidc/start", NULL, NULL, &rs), 502,
                 "the provider is not there");
    cr_expect_null(strstr(rs.headers.data, "__Host-wa_oidc="));
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/admin/oidc/callback?state=abc&code=c", NULL, NULL, &rs),
                 400, "no state cookie");
    cr_expect_null(strstr(rs.headers.data, "__Host-wa_session="));
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/admin/oidc/callback?state=abc&code=c",
                        "__Host-wa_oidc=abd", NULL, &rs), 400, "another browser's state");
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/admin/oidc/callback?state=abc&code=c",
                        "__Host-wa_oidc=abc", NULL, &rs), 400, "a state never given out");
    cr_expect(strstr(rs.body.data, "used already or expired"));
    cr_expect(strstr(rs.headers.data, "Set-Cookie: __Host-wa_oidc=;"), "the cookie is spent");
    cr_expect_null(strstr(rs.headers.data, "__Host-wa_session="));
    wa_response_free(&rs);
    cr_expect_eq(answer(wa, "GET", "/admin/oidc/callback?error=access_denied&state=abc",
                        "__Host-wa_oidc=abc", NULL, &rs), 401);
    wa_response_free(&rs);
    webadmin_free(wa);
    hs_strv_free(&cfg.admin_groups);
    unlink(secret);
    unlink(key);
    rmdir(dir);
    free(secret);
    free(key);
}
