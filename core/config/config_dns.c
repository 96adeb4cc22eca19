/* config: the DNS settings that change while serving (PUT /api/v1/dns), read from and written
 * as JSON, checked as strictly as the config file's dns section and a little more: an entry a
 * client could not use is refused here rather than left out, since the operator is there to
 * read the answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

/* Members a PUT may carry besides the settings: what GET answers, so that its answer can be
 * sent back edited. They are read-only: checked (baseDomain, extraRecordsPath) or ignored. */
static const char *const read_only[] = { "baseDomain", "extraRecordsPath", "source",
                                         "updatedAt" };
static const char *const settable[] = { "magicDns", "overrideLocalDns", "nameservers",
                                        "searchDomains", "extraRecords" };

static void split_free(struct dns_split *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].domain);
        hs_strv_free(&v[i].nameservers);
    }
    free(v);
}

static struct dns_record *records_copy(const struct dns_record *v, size_t n)
{
    struct dns_record *c = hs_xcalloc(n + 1, sizeof(*c));

    for (size_t i = 0; i < n; i++)
        c[i] = (struct dns_record){ hs_strdup(v[i].name), hs_strdup(v[i].type),
                                    hs_strdup(v[i].value) };
    return c;
}

static struct dns_split *split_copy(const struct dns_split *v, size_t n)
{
    struct dns_split *c = hs_xcalloc(n + 1, sizeof(*c));

    for (size_t i = 0; i < n; i++) {
        c[i].domain = hs_strdup(v[i].domain);
        hs_strv_copy(&c[i].nameservers, &v[i].nameservers);
    }
    return c;
}

static void settings_copy(const struct dns_settings *src, struct dns_settings *out)
{
    out->magic_dns = src->magic_dns;
    out->override_local_dns = src->override_local_dns;
    hs_strv_copy(&out->nameservers, &src->nameservers);
    out->split = split_copy(src->split, src->nsplit);
    out->nsplit = src->nsplit;
    hs_strv_copy(&out->search_domains, &src->search_domains);
    out->records = records_copy(src->records, src->nrecords);
    out->nrecords = src->nrecords;
}

struct dns_settings config_dns_settings_view(const struct hs_config *cfg)
{
    return (struct dns_settings){
        .magic_dns = cfg->dns_magic_dns,
        .override_local_dns = cfg->dns_override_local_dns,
        .nameservers = cfg->dns_nameservers_global,
        .split = cfg->dns_split,
        .nsplit = cfg->dns_nsplit,
        .search_domains = cfg->dns_search_domains,
        .records = cfg->dns_extra_records,
        .nrecords = cfg->dns_nextra_records,
    };
}

void config_dns_settings_of(const struct hs_config *cfg, struct dns_settings *out)
{
    const struct dns_settings view = config_dns_settings_view(cfg);

    *out = (struct dns_settings){ 0 };
    settings_copy(&view, out);
}

void config_dns_settings_fini(struct dns_settings *d)
{
    hs_strv_free(&d->nameservers);
    split_free(d->split, d->nsplit);
    hs_strv_free(&d->search_domains);
    config_dns_records_free(d->records, d->nrecords);
    *d = (struct dns_settings){ 0 };
}

/* ---- to JSON ---- */

static json_t *strv_json(const struct hs_strv *v)
{
    json_t *a = json_array();

    for (size_t i = 0; i < v->n; i++)
        json_array_append_new(a, json_string(v->v[i]));
    return a;
}

json_t *config_dns_settings_json(const struct dns_settings *d)
{
    json_t *split = json_object(), *records = json_array();

    for (size_t i = 0; i < d->nsplit; i++)
        json_object_set_new(split, d->split[i].domain, strv_json(&d->split[i].nameservers));
    for (size_t i = 0; i < d->nrecords; i++)
        json_array_append_new(records, json_pack("{s:s, s:s, s:s}", "name", d->records[i].name,
                                                 "type", d->records[i].type, "value",
                                                 d->records[i].value));
    return json_pack("{s:b, s:b, s:{s:o, s:o}, s:o, s:o}", "magicDns", d->magic_dns,
                     "overrideLocalDns", d->override_local_dns, "nameservers", "global",
                     strv_json(&d->nameservers), "split", split, "searchDomains",
                     strv_json(&d->search_domains), "extraRecords", records);
}

bool config_dns_settings_equal(const struct dns_settings *a, const struct dns_settings *b)
{
    json_t *x = config_dns_settings_json(a), *y = config_dns_settings_json(b);
    bool same = json_equal(x, y);

    json_decref(x);
    json_decref(y);
    return same;
}

/* ---- from JSON ---- */

/* A name as search and split domains take it: dot-separated labels of letters, digits, '-'
 * and '_' (SRV-style names), none empty or over 63 bytes, no final dot, 253 bytes at most. */
static bool domain_ok(const char *s)
{
    size_t n = strlen(s), label = 0;

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (s[i] == '.' || s[i] == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                return false;
            label = 0;
        } else if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                          s[i])) {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

enum list_kind { LIST_NAMESERVERS, LIST_DOMAINS };

/* A JSON list of strings (null: empty) into out, each checked as kind, no repeats. */
static int read_list(json_t *v, const char *what, enum list_kind kind, size_t max,
                     struct hs_strv *out, char *err, size_t errsize)
{
    const char *s;
    json_t *e;
    size_t i;

    *out = (struct hs_strv){ 0 };
    if (json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return config__fail(err, errsize, "%s must be a list of strings", what);
    if (json_array_size(v) > max) {
        config__fail(err, errsize, "%s: more than %zu entries", what, max);
        return -E2BIG;
    }
    json_array_foreach(v, i, e) {
        if (!(s = json_string_value(e)))
            break;
        if (kind == LIST_NAMESERVERS && !config__is_nameserver(s)) {
            config__fail(err, errsize, "%s: \"%.64s\" is not an IP address, IP:port or "
                         "http(s):// URL", what, s);
            break;
        }
        if (kind == LIST_DOMAINS && !domain_ok(s)) {
            config__fail(err, errsize, "%s: \"%.64s\" is not a domain name", what, s);
            break;
        }
        if (hs_strv_contains(out, s)) {
            config__fail(err, errsize, "%s: \"%.64s\" is listed twice", what, s);
            break;
        }
        hs_strv_push(out, s);
    }
    if (i == json_array_size(v))
        return 0;
    if (!json_is_string(e))
        config__fail(err, errsize, "%s: entry %zu is not a string", what, i);
    hs_strv_free(out);
    return -EINVAL;
}

static int read_split(json_t *v, struct dns_settings *d, char *err, size_t errsize)
{
    const char *domain;
    char what[320];
    json_t *ns;
    int rc;

    if (json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return config__fail(err, errsize, "nameservers.split must map domains to lists of "
                                          "nameservers");
    if (json_object_size(v) > CONFIG_DNS_MAX_SPLIT) {
        config__fail(err, errsize, "nameservers.split: more than %d domains",
                     CONFIG_DNS_MAX_SPLIT);
        return -E2BIG;
    }
    d->split = hs_xcalloc(json_object_size(v) + 1, sizeof(*d->split));
    json_object_foreach(v, domain, ns) {
        if (!domain_ok(domain))
            return config__fail(err, errsize, "nameservers.split: \"%.64s\" is not a domain "
                                              "name", domain);
        snprintf(what, sizeof(what), "nameservers.split[%.253s]", domain);
        if (json_array_size(ns) == 0)
            return config__fail(err, errsize, "%s needs at least one nameserver", what);
        if ((rc = read_list(ns, what, LIST_NAMESERVERS, CONFIG_DNS_MAX_NAMESERVERS,
                            &d->split[d->nsplit].nameservers, err, errsize)) < 0)
            return rc;
        d->split[d->nsplit++].domain = hs_strdup(domain);
    }
    return 0;
}

static int read_nameservers(json_t *v, struct dns_settings *d, char *err, size_t errsize)
{
    const char *k;
    json_t *m;
    int rc;

    if (json_is_null(v)) {
        hs_strv_free(&d->nameservers);
        split_free(d->split, d->nsplit);
        d->split = NULL;
        d->nsplit = 0;
        return 0;
    }
    if (!json_is_object(v))
        return config__fail(err, errsize, "nameservers must be an object {global, split}");
    json_object_foreach(v, k, m) {
        if (strcmp(k, "global") && strcmp(k, "split"))
            return config__fail(err, errsize, "nameservers: unknown member \"%.64s\" (there "
                                              "are global and split)", k);
    }
    if ((m = json_object_get(v, "global"))) {
        hs_strv_free(&d->nameservers);
        if ((rc = read_list(m, "nameservers.global", LIST_NAMESERVERS,
                            CONFIG_DNS_MAX_NAMESERVERS, &d->nameservers, err, errsize)) < 0)
            return rc;
    }
    if ((m = json_object_get(v, "split"))) {
        split_free(d->split, d->nsplit);
        d->split = NULL;
        d->nsplit = 0;
        return read_split(m, d, err, errsize);
    }
    return 0;
}

static int read_records(const struct hs_config *cfg, json_t *v, struct dns_settings *d,
                        char *err, size_t errsize)
{
    config_dns_records_free(d->records, d->nrecords);
    d->records = NULL;
    d->nrecords = 0;
    if (json_is_null(v))
        return 0;
    if (*cfg->dns_extra_records_path)
        return config__fail(err, errsize, "the extra records come from dns.extra_records_path "
                            "(%.200s): change that file", cfg->dns_extra_records_path);
    if (!json_is_array(v))
        return config__fail(err, errsize, "extraRecords must be a list of {name, type, value}");
    if (json_array_size(v) > CONFIG_DNS_MAX_RECORDS) {
        config__fail(err, errsize, "extraRecords: more than %d records",
                     CONFIG_DNS_MAX_RECORDS);
        return -E2BIG;
    }
    return config__dns_records_from_json(v, CONFIG_DNS_MAX_RECORDS, &d->records, &d->nrecords,
                                         err, errsize);
}

static bool listed(const char *const *v, size_t n, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], k) == 0)
            return true;
    return false;
}

/* Unknown members (a typo like "magic_dns" must not pass as a change) and the read-only ones
 * that would change what cannot change here. */
static int check_members(const struct hs_config *cfg, json_t *o, char *err, size_t errsize)
{
    const char *k, *s;
    json_t *v;

    json_object_foreach(o, k, v) {
        if (!listed(settable, HS_ARRAY_LEN(settable), k) &&
            !listed(read_only, HS_ARRAY_LEN(read_only), k))
            return config__fail(err, errsize, "unknown member \"%.64s\"", k);
    }
    s = json_string_value(json_object_get(o, "baseDomain"));
    if (s && strcmp(s, cfg->dns_base_domain))
        return config__fail(err, errsize, "baseDomain cannot change while serving: every "
                            "node's name ends in it; change dns.base_domain in the config file "
                            "and restart");
    s = json_string_value(json_object_get(o, "extraRecordsPath"));
    if (s && strcmp(s, cfg->dns_extra_records_path))
        return config__fail(err, errsize, "extraRecordsPath cannot change here: it is "
                                          "dns.extra_records_path of the config file");
    return 0;
}

static int read_bool(json_t *o, const char *key, bool *out, char *err, size_t errsize)
{
    json_t *v = json_object_get(o, key);

    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return config__fail(err, errsize, "%s must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* What the settings as a whole must satisfy. */
static int check_whole(const struct hs_config *cfg, json_t *o, const struct dns_settings *d,
                       char *err, size_t errsize)
{
    if (d->magic_dns && !*cfg->dns_base_domain)
        return config__fail(err, errsize, "magicDns needs a base domain: set dns.base_domain "
                                          "in the config file first");
    if (cfg->legacy && d->magic_dns != cfg->dns_magic_dns)
        return config__fail(err, errsize, "magicDns cannot change under the 0.22 config layout "
                            "(it also decides node names there): change dns_config.magic_dns "
                            "in the file and restart");
    if (json_is_true(json_object_get(o, "overrideLocalDns")) && d->nameservers.n == 0)
        return config__fail(err, errsize, "overrideLocalDns needs at least one nameserver in "
                                          "nameservers.global");
    return 0;
}

static int read_settings(const struct hs_config *cfg, json_t *o, struct dns_settings *d,
                         char *err, size_t errsize)
{
    json_t *v;
    int rc;

    if ((rc = check_members(cfg, o, err, errsize)) < 0 ||
        (rc = read_bool(o, "magicDns", &d->magic_dns, err, errsize)) < 0 ||
        (rc = read_bool(o, "overrideLocalDns", &d->override_local_dns, err, errsize)) < 0)
        return rc;
    if ((v = json_object_get(o, "nameservers")) &&
        (rc = read_nameservers(v, d, err, errsize)) < 0)
        return rc;
    if ((v = json_object_get(o, "searchDomains"))) {
        hs_strv_free(&d->search_domains);
        if ((rc = read_list(v, "searchDomains", LIST_DOMAINS, CONFIG_DNS_MAX_SEARCH,
                            &d->search_domains, err, errsize)) < 0)
            return rc;
    }
    if ((v = json_object_get(o, "extraRecords")) &&
        (rc = read_records(cfg, v, d, err, errsize)) < 0)
        return rc;
    return check_whole(cfg, o, d, err, errsize);
}

int config_dns_settings_parse(const struct hs_config *cfg, const struct dns_settings *base,
                              const char *text, size_t len, struct dns_settings *out,
                              char *err, size_t errsize)
{
    struct dns_settings d = { 0 };
    json_error_t je;
    json_t *o;
    int rc;

    if (len > CONFIG_DNS_MAX_BYTES) {
        config__fail(err, errsize, "larger than %u bytes", CONFIG_DNS_MAX_BYTES);
        return -E2BIG;
    }
    if (!(o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je)))
        return config__fail(err, errsize, "not valid JSON (line %d, column %d): %s", je.line,
                            je.column, je.text);
    if (!json_is_object(o)) {
        json_decref(o);
        return config__fail(err, errsize, "expected a JSON object");
    }
    settings_copy(base, &d);
    if ((rc = read_settings(cfg, o, &d, err, errsize)) < 0)
        config_dns_settings_fini(&d);
    else
        *out = d;
    json_decref(o);
    return rc;
}
