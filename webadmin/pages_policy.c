/* The policy page: the policy in force in an editor; a draft is checked or saved through the
 * API, and a refused one comes back as it was written, with the server's message and the
 * lines around the one it names. */
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define EXCERPT_CONTEXT 3 /* lines shown on each side of an error's line */

/* The first "line N" of a message, or 0. */
static long error_line(const char *msg)
{
    const char *p = msg ? strstr(msg, "line ") : NULL;
    uint64_t n = 0;
    char digits[12];
    size_t k = 0;

    if (!p)
        return 0;
    for (p += 5; k + 1 < sizeof(digits) && *p >= '0' && *p <= '9'; p++)
        digits[k++] = *p;
    digits[k] = '\0';
    return hs_parse_u64(digits, 1000000, &n) == 0 ? (long)n : 0;
}

/* The lines of text around `line`, each {n, text, bad}. */
static json_t *excerpt(const char *text, long line)
{
    json_t *out = json_array();
    long n = 1;

    for (const char *p = text; *p && n <= line + EXCERPT_CONTEXT; n++) {
        size_t len = strcspn(p, "\n");
        if (n >= line - EXCERPT_CONTEXT) {
            char *l = hs_strndup(p, len);
            json_array_append_new(out, json_pack("{s:I, s:s, s:b}", "n", (json_int_t)n, "text",
                                                 l, "bad", n == line));
            free(l);
        }
        p += len + (p[len] == '\n');
    }
    return out;
}

/* The editor with `text`; when x carries an error, with its excerpt. */
static void policy_page(struct wa_ctx *x, const char *text, const char *notice)
{
    json_t *data = json_pack("{s:s}", "policy", text ? text : "");
    long line = error_line(x->error);

    if (notice)
        json_object_set_new(data, "notice", json_string(notice));
    if (line > 0 && text) {
        json_object_set_new(data, "error_line", json_integer(line));
        json_object_set_new(data, "excerpt", excerpt(text, line));
    }
    wa__render(x, wa__page_status(x, data), "policy", "Policy", data);
}

void wa__page_policy(struct wa_ctx *x)
{
    json_t *answer = NULL;
    long status;

    if (wa__api(x, "GET", "/api/v1/policy", NULL, &status, &answer) < 0)
        return;
    /* headscale answers "no policy" with a 500 its clients know: an empty editor */
    policy_page(x, status == 200 ? hs_json_str(answer, "policy") : "",
                hs_streq(wa__form_get(&x->query, "saved"), "1") ? "The policy was saved and "
                                                                  "is in force." : NULL);
    json_decref(answer);
}

/* A textarea's value arrives with CRLF line ends (HTML's form encoding): the policy keeps the
 * LF ends it was written with. */
static char *lf_lines(const char *s)
{
    char *out = hs_xmalloc(strlen(s) + 1), *o = out;

    for (; *s; s++)
        if (!(s[0] == '\r' && s[1] == '\n'))
            *o++ = *s;
    *o = '\0';
    return out;
}

/* Sends the form's draft with method to path and answers: back to the page when saved, the
 * draft again with the verdict otherwise. */
static void send_draft(struct wa_ctx *x, const char *method, const char *path, bool save)
{
    const char *field = wa__form_get(&x->form, "policy");
    json_t *answer = NULL;
    long status;
    char *text;

    if (!field)
        return wa__error_page(x, 400, "The form has no policy.");
    text = lf_lines(field);
    if (wa__api(x, method, path, json_pack("{s:s}", "policy", text), &status, &answer) < 0) {
        free(text);
        return;
    }
    if (status == 200 && save) {
        wa__redirect(x, "/policy?saved=1");
    } else if (status == 200) {
        policy_page(x, text, "The draft is valid: it loads, compiles for the current users and "
                             "nodes, and its tests pass. It is not saved yet.");
    } else {
        x->error = wa__api_message(answer);
        x->error_status = 400;
        policy_page(x, text, NULL);
    }
    json_decref(answer);
    free(text);
}

void wa__post_policy_check(struct wa_ctx *x)
{
    send_draft(x, "POST", "/api/v1/policy/check", false);
}

void wa__post_policy_save(struct wa_ctx *x)
{
    send_draft(x, "PUT", "/api/v1/policy", true);
}
