/* The DNS page: the settings in force and where they come from (the config file, or saved
 * through the API), one form that saves new ones (PUT /api/v1/dns: every node gets them at
 * once) and one that goes back to the config file's (DELETE). Lists are edited as text, an
 * entry a line; a refused form comes back as it was typed, with the reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define DNS_LINE_MAX 1024 /* one line of a list field */

/* ---- the settings as text ---- */

static char *lines_of(const json_t *list)
{
    struct hs_buf b;
    const json_t *v;
    size_t i;

    hs_buf_init(&b, WA_MAX_API_RESPONSE);
    json_array_foreach(list, i, v)
        hs_buf_appendf(&b, "%s\n", json_string_value(v) ? json_string_value(v) : "");
    return hs_buf_steal(&b);
}

/* "domain: nameserver nameserver", a line each */
static char *split_text(const json_t *split)
{
    struct hs_buf b;
    const char *domain;
    json_t *ns, *v;
    size_t i;

    hs_buf_init(&b, WA_MAX_API_RESPONSE);
    json_object_foreach((json_t *)split, domain, ns) {
        hs_buf_appendf(&b, "%s:", domain);
        json_array_foreach(ns, i, v)
            hs_buf_appendf(&b, " %s", json_string_value(v) ? json_string_value(v) : "");
        hs_buf_puts(&b, "\n");
    }
    return hs_buf_steal(&b);
}

/* "name type value", a line each */
static char *records_text(const json_t *records)
{
    struct hs_buf b;
    json_t *r;
    size_t i;

    hs_buf_init(&b, WA_MAX_API_RESPONSE);
    json_array_foreach(records, i, r)
        hs_buf_appendf(&b, "%s %s %s\n", hs_json_str(r, "name") ? hs_json_str(r, "name") : "",
                       hs_json_str(r, "type") ? hs_json_str(r, "type") : "",
                       hs_json_str(r, "value") ? hs_json_str(r, "value") : "");
    return hs_buf_steal(&b);
}

static void set_text(json_t *o, const char *key, char *text)
{
    json_object_set_new(o, key, json_string(text ? text : ""));
    free(text);
}

/* The page's data: where the settings come from, and the form filled with what is in force,
 * or with what was typed when the form came back refused. */
static json_t *page_data(struct wa_ctx *x, const json_t *in_force, bool typed)
{
    json_t *ns = json_object_get(in_force, "nameservers"), *d;
    char when[40];

    wa__human_time(hs_json_str(in_force, "updatedAt"), when, sizeof(when));
    d = json_pack("{s:b, s:s, s:s, s:s}", "source_db",
                  hs_streq(hs_json_str(in_force, "source"), "database"), "updated", when,
                  "base_domain", hs_json_str(in_force, "baseDomain") ?
                  hs_json_str(in_force, "baseDomain") : "", "records_path",
                  hs_json_str(in_force, "extraRecordsPath") ?
                  hs_json_str(in_force, "extraRecordsPath") : "");
    if (typed) {
        static const char *const text_fields[] = { "nameservers", "split", "search_domains",
                                                   "extra_records" };
        json_object_set_new(d, "magic_dns", json_boolean(wa__form_get(&x->form, "magic_dns")));
        json_object_set_new(d, "override_local_dns",
                            json_boolean(wa__form_get(&x->form, "override_local_dns")));
        for (size_t i = 0; i < HS_ARRAY_LEN(text_fields); i++) {
            const char *v = wa__form_get(&x->form, text_fields[i]);
            json_object_set_new(d, text_fields[i], json_string(v ? v : ""));
        }
        return d;
    }
    json_object_set_new(d, "magic_dns", json_boolean(json_is_true(
                                            json_object_get(in_force, "magicDns"))));
    json_object_set_new(d, "override_local_dns", json_boolean(json_is_true(
                                                     json_object_get(in_force,
                                                                     "overrideLocalDns"))));
    set_text(d, "nameservers", lines_of(json_object_get(ns, "global")));
    set_text(d, "split", split_text(json_object_get(ns, "split")));
    set_text(d, "search_domains", lines_of(json_object_get(in_force, "searchDomains")));
    set_text(d, "extra_records", records_text(json_object_get(in_force, "extraRecords")));
    return d;
}

static const char *notice_of(struct wa_ctx *x)
{
    const char *done = wa__form_get(&x->query, "done");

    if (hs_streq(done, "saved"))
        return "Saved: every node has been sent the new DNS settings.";
    if (hs_streq(done, "reverted"))
        return "The config file's DNS settings are in force again.";
    return NULL;
}

/* The page; typed: fill the form from the posted one (it was refused). */
static void dns_page(struct wa_ctx *x, bool typed)
{
    json_t *answer = NULL, *data;
    const char *notice;
    long status;

    if (wa__api(x, "GET", "/api/v1/dns", NULL, &status, &answer) < 0)
        return;
    if (status != 200) {
        wa__error_page(x, 502, wa__api_message(answer));
        json_decref(answer);
        return;
    }
    data = page_data(x, answer, typed);
    if (!typed && (notice = notice_of(x)))
        json_object_set_new(data, "notice", json_string(notice));
    wa__render(x, wa__page_status(x, data), "dns", "DNS", data);
    json_decref(answer);
}

void wa__page_dns(struct wa_ctx *x)
{
    dns_page(x, false);
}

static void show_typed(struct wa_ctx *x)
{
    dns_page(x, true);
}

/* ---- the form back to JSON ---- */

/* The next line of *p (without its end) into line; false at the end of the text. */
static bool next_line(const char **p, char line[DNS_LINE_MAX], bool *too_long)
{
    size_t n;

    if (!**p)
        return false;
    n = strcspn(*p, "\r\n");
    *too_long = n >= DNS_LINE_MAX;
    snprintf(line, DNS_LINE_MAX, "%.*s", (int)(n < DNS_LINE_MAX ? n : DNS_LINE_MAX - 1), *p);
    *p += n;
    *p += strspn(*p, "\r\n");
    return true;
}

/* The words of s (spaces, tabs and commas between) as a JSON array of strings. */
static json_t *words(const char *s)
{
    struct hs_strv v = { 0 };
    json_t *a = json_array();

    hs_strv_split(&v, s, " \t,\r\n");
    for (size_t i = 0; i < v.n; i++)
        json_array_append_new(a, json_string(v.v[i]));
    hs_strv_free(&v);
    return a;
}

/* "domain: nameservers" lines → {domain: [nameservers]}; NULL with why set. */
static json_t *split_of(const char *text, const char **why)
{
    json_t *o = json_object();
    char line[DNS_LINE_MAX], *colon;
    bool too_long;

    while (next_line(&text, line, &too_long)) {
        if (!line[strspn(line, " \t")])
            continue;
        colon = strchr(line, ':');
        if (too_long || !colon) {
            *why = too_long ? "A split DNS line is too long."
                            : "Split DNS: write one domain a line, as \"domain: nameservers\".";
            json_decref(o);
            return NULL;
        }
        *colon = '\0';
        json_t *dom = words(line);
        if (json_array_size(dom) != 1) {
            json_decref(dom);
            json_decref(o);
            *why = "Split DNS: each line starts with one domain, then a colon.";
            return NULL;
        }
        json_object_set_new(o, json_string_value(json_array_get(dom, 0)), words(colon + 1));
        json_decref(dom);
    }
    return o;
}

/* "name type value" lines → [{name, type, value}]; NULL with why set. */
static json_t *records_of(const char *text, const char **why)
{
    json_t *a = json_array(), *w;
    char line[DNS_LINE_MAX];
    bool too_long;

    while (next_line(&text, line, &too_long)) {
        w = words(line);
        if (json_array_size(w) == 0) {
            json_decref(w);
            continue;
        }
        if (too_long || json_array_size(w) != 3) {
            json_decref(w);
            json_decref(a);
            *why = "Extra records: write one record a line, as \"name A|AAAA address\".";
            return NULL;
        }
        json_array_append_new(a, json_pack("{s:O, s:O, s:O}", "name", json_array_get(w, 0),
                                           "type", json_array_get(w, 1), "value",
                                           json_array_get(w, 2)));
        json_decref(w);
    }
    return a;
}

/* The whole settings of the form as PUT /api/v1/dns takes them; NULL with why set. */
static json_t *settings_of(struct wa_ctx *x, const char **why)
{
    const char *records = wa__form_get(&x->form, "extra_records");
    json_t *split, *body, *recs;

    if (!(split = split_of(wa__form_get(&x->form, "split") ?
                           wa__form_get(&x->form, "split") : "", why)))
        return NULL;
    body = json_pack("{s:b, s:b, s:{s:o, s:o}, s:o}", "magicDns",
                     wa__form_get(&x->form, "magic_dns") != NULL, "overrideLocalDns",
                     wa__form_get(&x->form, "override_local_dns") != NULL, "nameservers",
                     "global", words(wa__form_get(&x->form, "nameservers") ?
                                     wa__form_get(&x->form, "nameservers") : ""),
                     "split", split, "searchDomains",
                     words(wa__form_get(&x->form, "search_domains") ?
                           wa__form_get(&x->form, "search_domains") : ""));
    if (records) { /* absent when the records come from dns.extra_records_path */
        if (!(recs = records_of(records, why))) {
            json_decref(body);
            return NULL;
        }
        json_object_set_new(body, "extraRecords", recs);
    }
    return body;
}

void wa__post_dns_save(struct wa_ctx *x)
{
    json_t *body, *answer = NULL;
    const char *why = NULL;
    long status;

    if (!(body = settings_of(x, &why))) {
        x->error = why;
        x->error_status = 400;
        return show_typed(x);
    }
    if (wa__api(x, "PUT", "/api/v1/dns", body, &status, &answer) < 0)
        return;
    wa__after_change(x, status, answer, "/dns?done=saved", show_typed);
    json_decref(answer);
}

void wa__post_dns_revert(struct wa_ctx *x)
{
    json_t *answer = NULL;
    long status;

    if (wa__api(x, "DELETE", "/api/v1/dns", NULL, &status, &answer) < 0)
        return;
    wa__after_change(x, status, answer, "/dns?done=reverted", wa__page_dns);
    json_decref(answer);
}
