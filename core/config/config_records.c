/* config: the dns.extra_records_path file — a JSON list of {"Name","Type","Value"} records,
 * the form headscale reads there (tailcfg.DNSRecord). Field names match whatever their case,
 * as Go's JSON decoder does; other fields are ignored. We are stricter than headscale about
 * the records themselves (A or AAAA with an address of that family, a name): a file with a
 * bad record is refused whole, so the records in force stay. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <jansson.h>

#include "config/config_internal.h"

void config_dns_records_free(struct dns_record *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].type);
        free(v[i].value);
    }
    free(v);
}

int config__fail(char *err, size_t errsize, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* The string member of o named key in any case; NULL when absent. -1 in *bad when present
 * but not a string. */
static const char *member(json_t *o, const char *key, int *bad)
{
    const char *k;
    json_t *v;

    json_object_foreach(o, k, v) {
        if (strcasecmp(k, key) != 0)
            continue;
        if (json_is_null(v))
            return NULL;
        if (!json_is_string(v)) {
            *bad = -1;
            return NULL;
        }
        return json_string_value(v);
    }
    return NULL;
}

static bool listed(const struct dns_record *v, size_t n, const struct dns_record *r)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, r->name) && !strcmp(v[i].type, r->type) &&
            !strcmp(v[i].value, r->value))
            return true;
    return false;
}

static void drop(struct dns_record *r)
{
    free(r->name);
    free(r->type);
    free(r->value);
    memset(r, 0, sizeof(*r));
}

/* Record i of the list into r; a message in err when it is not a usable record. */
static int one(json_t *e, size_t i, struct dns_record *r, char *err, size_t errsize)
{
    const char *name, *type, *value;
    uint8_t a[16];
    int bad = 0, fam;

    if (!json_is_object(e))
        return config__fail(err, errsize,
                            "record %zu is not an object {\"Name\",\"Type\",\"Value\"}", i);
    name = member(e, "Name", &bad);
    type = member(e, "Type", &bad);
    value = member(e, "Value", &bad);
    if (bad)
        return config__fail(err, errsize, "record %zu: Name, Type and Value must be strings", i);
    if (!name || !*name || !type || !value)
        return config__fail(err, errsize, "record %zu needs a Name, a Type and a Value", i);
    if (strcasecmp(type, "A") && strcasecmp(type, "AAAA"))
        return config__fail(err, errsize,
                            "record %zu (%.64s): type must be A or AAAA, got \"%.16s\"", i,
                            name, type);
    fam = strcasecmp(type, "A") == 0 ? AF_INET : AF_INET6;
    if (config__parse_ip(value, fam, a) != fam)
        return config__fail(err, errsize,
                            "record %zu (%.64s): \"%.64s\" is not an IPv%d address", i,
                            name, value, fam == AF_INET ? 4 : 6);
    r->name = hs_strdup(name);
    r->type = hs_strdup(type);
    r->value = hs_strdup(value);
    return 0;
}

int config__dns_records_from_json(json_t *list, size_t max, struct dns_record **out, size_t *nout,
                                  char *err, size_t errsize)
{
    struct dns_record *v;
    size_t n = 0;

    if (json_array_size(list) > max)
        return config__fail(err, errsize, "more than %zu records", max);
    v = hs_xcalloc(json_array_size(list) + 1, sizeof(*v));
    for (size_t i = 0; i < json_array_size(list); i++) {
        if (one(json_array_get(list, i), i, &v[n], err, errsize) < 0) {
            config_dns_records_free(v, n);
            return -EINVAL;
        }
        /* headscale keeps a set: a record listed twice is sent once */
        if (listed(v, n, &v[n]))
            drop(&v[n]);
        else
            n++;
    }
    *out = v;
    *nout = n;
    return 0;
}

int config_dns_records_parse(const char *text, size_t len, struct dns_record **out,
                             size_t *nout, char *err, size_t errsize)
{
    json_error_t je;
    json_t *root;
    int rc;

    *out = NULL;
    *nout = 0;
    /* An empty file is most likely one being written: headscale waits for the next change. */
    if (len == 0)
        return 1;
    if (len > CONFIG_MAX_EXTRA_RECORDS_BYTES)
        return config__fail(err, errsize, "larger than %u bytes", CONFIG_MAX_EXTRA_RECORDS_BYTES);
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return config__fail(err, errsize, "not valid JSON (line %d, column %d): %s", je.line,
                    je.column, je.text);
    if (json_is_null(root)) { /* Go decodes null into no list at all: nothing to apply */
        json_decref(root);
        return 1;
    }
    if (!json_is_array(root)) {
        bool obj = json_is_object(root);
        json_decref(root);
        return config__fail(err, errsize, "expected a JSON list of records, got a %s",
                    obj ? "JSON object" : "single value");
    }
    rc = config__dns_records_from_json(root, CONFIG_MAX_EXTRA_RECORDS, out, nout, err, errsize);
    json_decref(root);
    return rc;
}
