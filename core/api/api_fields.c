#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

int api_field_str(struct api_call *c, json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        api_error(c, 400, "field \"%s\" must be a string", key);
        return -EINVAL;
    }
    *out = json_string_value(v);
    return 0;
}

int api_field_bool(struct api_call *c, json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        api_error(c, 400, "field \"%s\" must be true or false", key);
        return -EINVAL;
    }
    *out = json_is_true(v);
    return 0;
}

int api_field_time(struct api_call *c, json_t *obj, const char *key, int64_t *out)
{
    const char *s = NULL;
    if (api_field_str(c, obj, key, &s) < 0)
        return -EINVAL;
    if (!s || !*s)
        return 0;
    if (hs_parse_rfc3339(s, out) < 0) {
        api_error(c, 400, "field \"%s\": \"%s\" is not an RFC 3339 time", key, s);
        return -EINVAL;
    }
    return 0;
}

int api_field_strv(struct api_call *c, json_t *obj, const char *key, struct hs_strv *out)
{
    json_t *v = json_object_get(obj, key), *item;
    size_t i;

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v)) {
        api_error(c, 400, "field \"%s\" must be a list of strings", key);
        return -EINVAL;
    }
    json_array_foreach(v, i, item) {
        if (!json_is_string(item)) {
            api_error(c, 400, "field \"%s\" must be a list of strings", key);
            hs_strv_free(out);
            return -EINVAL;
        }
        hs_strv_push(out, json_string_value(item));
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int api_field_tags(struct api_call *c, json_t *obj, const char *key, struct hs_strv *out)
{
    size_t n = 0;

    if (api_field_strv(c, obj, key, out) < 0)
        return -EINVAL;
    for (size_t i = 0; i < out->n; i++) {
        if (!api_valid_tag(out->v[i])) {
            api_error(c, 400, "invalid tag \"%s\": tags look like \"tag:name\" (lowercase "
                              "letters, digits, '-')", out->v[i]);
            hs_strv_free(out);
            return -EINVAL;
        }
    }
    if (out->n)
        qsort(out->v, out->n, sizeof(*out->v), cmp_str);
    for (size_t i = 0; i < out->n; i++) {
        if (n && strcmp(out->v[n - 1], out->v[i]) == 0)
            free(out->v[i]);
        else
            out->v[n++] = out->v[i];
    }
    out->n = n;
    return 0;
}

/* As headscale 0.29's gateway parses a uint64: digits only (no sign, no spaces), at most
 * UINT64_MAX, else 400. 0 is well formed and names nothing (the lookup answers 404); ids
 * above INT64_MAX name nothing either and are answered 404 here, as no store column holds
 * them (PostgreSQL would refuse the comparison). */
int api_parse_id(struct api_call *c, const char *s, const char *what, uint64_t *out)
{
    uint64_t v;

    if (hs_parse_u64(s, UINT64_MAX, &v) < 0) {
        api_error(c, 400, "invalid %s id \"%s\": not a number", what, s ? s : "");
        return -EINVAL;
    }
    if (v > INT64_MAX) {
        api_error(c, 404, "%s %s not found", what, s);
        return -ENOENT;
    }
    *out = v;
    return 0;
}

int api_field_id(struct api_call *c, json_t *obj, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    char buf[32];

    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v))
        return api_parse_id(c, json_string_value(v), key, out);
    snprintf(buf, sizeof(buf), "%s", key);
    api_error(c, 400, "field \"%s\" must be an id", buf);
    return -EINVAL;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int api_lookup_user(struct api_call *c, const char *id_or_name, struct store_user *out)
{
    char why[128];
    uint64_t id;
    int rc;

    if (!id_or_name || !*id_or_name) {
        api_error(c, 400, "a user is required");
        return -EINVAL;
    }
    /* User names start with a letter, so a number is always an id. Other text can only be
     * a name (0.22.3 named users where 0.29 takes ids); what no user could be named is a
     * malformed id, 400 as in 0.29. */
    if (all_digits(id_or_name)) {
        if (api_parse_id(c, id_or_name, "user", &id) < 0)
            return -EINVAL;
        rc = store_user_get(c->api->st, id, out);
    } else if (!api_valid_username(id_or_name, why, sizeof(why))) {
        api_error(c, 400, "invalid user id \"%s\": not a number, nor a user name", id_or_name);
        return -EINVAL;
    } else {
        rc = store_user_get_by_name(c->api->st, id_or_name, out);
    }
    if (rc == -ENOENT)
        api_error(c, 404, "user \"%s\" not found", id_or_name);
    else if (rc < 0)
        api_store_error(c, rc, "user");
    return rc;
}

/* headscale's rule: 2+ chars, starts with a letter, then letters, digits, '-', '.', '_',
 * and at most one '@'. */
bool api_valid_username(const char *name, char *why, size_t whysize)
{
    int ats = 0;

    if (strlen(name) < 2) {
        snprintf(why, whysize, "user name must be at least 2 characters long");
        return false;
    }
    if (strlen(name) > 255) {
        snprintf(why, whysize, "user name must be at most 255 characters long");
        return false;
    }
    if (!isalpha((unsigned char)name[0])) {
        snprintf(why, whysize, "user name must start with a letter");
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (*p == '@' && ++ats <= 1)
            continue;
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') {
            snprintf(why, whysize, "user name may contain only letters, digits, '-', '.', '_' "
                                   "and one '@' (found '%c')", *p);
            return false;
        }
    }
    return true;
}

/* "tag:" followed by lowercase letters, digits and '-' (Tailscale's tag names). */
bool api_valid_tag(const char *tag)
{
    const char *p;
    if (!hs_has_prefix(tag, "tag:") || !tag[4] || strlen(tag) > 255)
        return false;
    for (p = tag + 4; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' ||
              *p == '_'))
            return false;
    return isalpha((unsigned char)tag[4]);
}
