/* The policy page: the policy in force in an editor; a draft is checked, previewed or saved
 * through the API, and a refused one comes back as it was written, with the server's message
 * and the lines around the one it names. A preview shows the draft's tests and who may reach
 * whom under it beside the policy in force (changed cells marked); the saved versions are
 * listed, each can be compared with the policy in force and rolled back to. */
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

/* ---- history ---- */

static void who_saved(const char *by, char *out, size_t size)
{
    if (!by || !*by)
        snprintf(out, size, "unknown");
    else if (strcmp(by, "cli") == 0 || strcmp(by, "import") == 0)
        snprintf(out, size, "%s", by);
    else
        snprintf(out, size, "API key %s", by);
}

/* The API's versions as the page lists them. */
static json_t *versions_rows(const json_t *versions)
{
    json_t *rows = json_array(), *v;
    char when[64], who[64];
    size_t i;

    json_array_foreach(versions, i, v) {
        json_t *row;
        wa__human_time(hs_json_str(v, "savedAt"), when, sizeof(when));
        who_saved(hs_json_str(v, "savedBy"), who, sizeof(who));
        row = json_pack("{s:s, s:s, s:s, s:I, s:b}", "id", hs_json_str(v, "id"), "when", when,
                        "by", who, "size", json_integer_value(json_object_get(v, "size")),
                        "current", json_is_true(json_object_get(v, "current")));
        if (hs_json_str(v, "restoredFrom"))
            json_object_set_new(row, "restored_from",
                                json_string(hs_json_str(v, "restoredFrom")));
        json_array_append_new(rows, row);
    }
    return rows;
}

static const char *diff_class(const char *op)
{
    return op[0] == '+' ? "add" : op[0] == '-' ? "del" : "same";
}

/* What rolling back to version id would change in `current`, as data.diff. */
static void add_diff(struct wa_ctx *x, json_t *data, const char *current, const char *id)
{
    char *path = wa__path_join("/api/v1/policy/history", id);
    json_t *answer = NULL, *lines, *l, *diff;
    const char *text;
    long status;
    size_t i;

    if (wa__api(x, "GET", path, NULL, &status, &answer) < 0 || status != 200) {
        free(path);
        json_object_set_new(data, "diff_error", json_string(wa__api_message(answer)));
        json_decref(answer);
        return;
    }
    free(path);
    text = hs_json_str(json_object_get(answer, "version"), "policy");
    diff = json_pack("{s:s}", "id", id);
    if (!(lines = wa__line_diff(current, text ? text : ""))) {
        json_object_set_new(diff, "too_long", json_integer(WA_DIFF_MAX_LINES));
    } else {
        json_array_foreach(lines, i, l)
            json_object_set_new(l, "cls", json_string(diff_class(hs_json_str(l, "op"))));
        json_object_set_new(diff, "lines", lines);
        json_object_set_new(diff, "same", json_boolean(strcmp(current, text ? text : "") == 0));
    }
    json_object_set_new(data, "diff", diff);
    json_decref(answer);
}

/* ---- the page ---- */

/* The editor with `text` and the history; when x carries an error, with its excerpt; extra
 * (stolen, may be NULL) adds members (a preview's). */
static void policy_page(struct wa_ctx *x, const char *text, const char *notice, json_t *extra)
{
    json_t *data = json_pack("{s:s}", "policy", text ? text : "");
    json_t *versions = wa__api_list(x, "/api/v1/policy/history", "versions");
    long line = error_line(x->error);

    if (!versions) {
        json_decref(data);
        json_decref(extra);
        return;
    }
    json_object_set_new(data, "versions", versions_rows(versions));
    json_decref(versions);
    if (notice)
        json_object_set_new(data, "notice", json_string(notice));
    if (line > 0 && text) {
        json_object_set_new(data, "error_line", json_integer(line));
        json_object_set_new(data, "excerpt", excerpt(text, line));
    }
    if (extra)
        json_object_update(data, extra);
    json_decref(extra);
    wa__render(x, wa__page_status(x, data), "policy", "Policy", data);
}

void wa__page_policy(struct wa_ctx *x)
{
    const char *diff = wa__form_get(&x->query, "diff"), *text, *notice = NULL;
    json_t *answer = NULL, *extra = json_object();
    long status;

    if (wa__api(x, "GET", "/api/v1/policy", NULL, &status, &answer) < 0) {
        json_decref(extra);
        return;
    }
    /* headscale answers "no policy" with a 500 its clients know: an empty editor */
    text = status == 200 ? hs_json_str(answer, "policy") : "";
    if (diff)
        add_diff(x, extra, text ? text : "", diff);
    if (hs_streq(wa__form_get(&x->query, "saved"), "1"))
        notice = "The policy was saved and is in force.";
    else if (hs_streq(wa__form_get(&x->query, "rolledback"), "1"))
        notice = "The version was saved again as the newest and is in force.";
    policy_page(x, text, notice, extra);
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

/* The form's draft with LF line ends (caller frees), or NULL after a 400 page. */
static char *form_draft(struct wa_ctx *x)
{
    const char *field = wa__form_get(&x->form, "policy");

    if (!field) {
        wa__error_page(x, 400, "The form has no policy.");
        return NULL;
    }
    return lf_lines(field);
}

/* A refused draft: back in the editor with the server's message and its line. */
static void refused(struct wa_ctx *x, const char *text, const json_t *answer)
{
    x->error = wa__api_message(answer);
    x->error_status = 400;
    policy_page(x, text, NULL, NULL);
}

/* Sends the form's draft with method to path and answers: back to the page when saved, the
 * draft again with the verdict otherwise. */
static void send_draft(struct wa_ctx *x, const char *method, const char *path, bool save)
{
    json_t *answer = NULL;
    long status;
    char *text;

    if (!(text = form_draft(x)))
        return;
    if (wa__api(x, method, path, json_pack("{s:s}", "policy", text), &status, &answer) < 0) {
        free(text);
        return;
    }
    if (status == 200 && save)
        wa__redirect(x, "/policy?saved=1");
    else if (status == 200)
        policy_page(x, text, "The draft is valid: it loads, compiles for the current users and "
                             "nodes, and its tests pass. It is not saved yet.", NULL);
    else
        refused(x, text, answer);
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

/* ---- the preview ---- */

static void reach_text(size_t n, size_t pairs, bool per_node, char *out, size_t size)
{
    if (per_node)
        snprintf(out, size, "%s", n ? "yes" : "no");
    else
        snprintf(out, size, "%zu/%zu", n, pairs);
}

static size_t at(const json_t *m, const char *which, size_t g, size_t h)
{
    json_t *v = json_array_get(json_array_get(json_object_get(m, which), g), h);
    return (size_t)json_integer_value(v);
}

/* One cell: the draft's count, its class (none/some/all, and changed when the policy in
 * force differs) and, when changed, what it is now. */
static json_t *matrix_cell(const json_t *m, size_t g, size_t h, bool per_node)
{
    size_t draft = at(m, "draft", g, h), now = at(m, "current", g, h), pairs = at(m, "pairs", g, h);
    char text[48], was[56], cls[32];

    if (pairs == 0)
        return json_pack("{s:s, s:s}", "text", "-", "cls", "self");
    reach_text(draft, pairs, per_node, text, sizeof(text));
    snprintf(cls, sizeof(cls), "%s%s", draft == 0 ? "none" : draft == pairs ? "all" : "some",
             draft != now ? " changed" : "");
    if (draft == now)
        return json_pack("{s:s, s:s}", "text", text, "cls", cls);
    reach_text(now, pairs, per_node, was + 4, sizeof(was) - 4);
    memcpy(was, "was ", 4);
    return json_pack("{s:s, s:s, s:s}", "text", text, "cls", cls, "was", was);
}

static json_t *matrix_data(const json_t *m)
{
    const json_t *groups = json_object_get(m, "groups");
    bool per_node = hs_streq(hs_json_str(m, "grouping"), "node");
    json_t *head = json_array(), *rows = json_array(), *g;
    size_t i, n = json_array_size(groups);
    char note[256];

    json_array_foreach(groups, i, g) {
        json_t *cells = json_array();
        for (size_t h = 0; h < n; h++)
            json_array_append_new(cells, matrix_cell(m, i, h, per_node));
        json_array_append_new(head, json_pack("{s:s}", "name", hs_json_str(g, "name")));
        json_array_append_new(rows, json_pack("{s:s, s:s, s:I, s:o}", "name",
                                              hs_json_str(g, "name"), "kind",
                                              hs_json_str(g, "kind"), "nodes",
                                              json_integer_value(json_object_get(g, "nodes")),
                                              "cells", cells));
    }
    if (per_node)
        snprintf(note, sizeof(note), "One row and one column per node.");
    else
        snprintf(note, sizeof(note), "Rows and columns are owners (a user's untagged nodes, or "
                 "the nodes with one set of tags)%s; a cell counts the pairs that may connect.",
                 json_integer_value(json_object_get(m, "folded")) ? ", the smallest folded "
                                                                     "into \"others\"" : "");
    return json_pack("{s:o, s:o, s:I, s:s}", "head", head, "rows", rows, "changed",
                     json_integer_value(json_object_get(m, "changed")), "note", note);
}

static json_t *tests_data(const json_t *t)
{
    json_t *rows = json_array(), *r;
    size_t i;

    json_array_foreach(json_object_get(t, "results"), i, r) {
        json_t *idx = json_object_get(r, "index");
        char label[32];
        if (json_is_integer(idx))
            snprintf(label, sizeof(label), "tests[%lld]", (long long)json_integer_value(idx));
        else
            snprintf(label, sizeof(label), "sshTests");
        json_array_append_new(rows, json_pack("{s:s, s:s, s:b, s:s}", "label", label, "src",
                                              hs_json_str(r, "src"), "passed",
                                              json_is_true(json_object_get(r, "passed")),
                                              "message", hs_json_str(r, "message")));
    }
    return json_pack("{s:o, s:b, s:I}", "results", rows, "passed",
                     json_is_true(json_object_get(t, "passed")), "failed",
                     json_integer_value(json_object_get(t, "failed")));
}

void wa__post_policy_preview(struct wa_ctx *x)
{
    json_t *answer = NULL, *extra;
    long status;
    char *text;

    if (!(text = form_draft(x)))
        return;
    if (wa__api(x, "POST", "/api/v1/policy/preview", json_pack("{s:s}", "policy", text), &status,
                &answer) < 0) {
        free(text);
        return;
    }
    if (status == 200) {
        extra = json_pack("{s:o, s:o, s:I}", "matrix",
                          matrix_data(json_object_get(answer, "matrix")), "tests",
                          tests_data(json_object_get(answer, "tests")), "nodes",
                          json_integer_value(json_object_get(answer, "nodes")));
        policy_page(x, text, "Preview of the draft: nothing is saved yet.", extra);
    } else {
        refused(x, text, answer);
    }
    json_decref(answer);
    free(text);
}

/* ---- rollback ---- */

void wa__post_policy_rollback(struct wa_ctx *x)
{
    char *path = wa__path_join("/api/v1/policy/history", x->args[0]), *full;
    json_t *answer = NULL;
    long status;

    full = hs_aprintf("%s/rollback", path);
    free(path);
    if (wa__api(x, "POST", full, NULL, &status, &answer) == 0)
        wa__after_change(x, status, answer, "/policy?rolledback=1", wa__page_policy);
    json_decref(answer);
    free(full);
}
