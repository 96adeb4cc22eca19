/* The ACME server's JSON (RFC 8555 §7.1), read with bounds: the body's size is capped before
 * jansson sees it, duplicate keys are refused, every field we use is type-checked and must
 * fit its buffer, and lists are capped. Fields we do not use are ignored. */
#include <stdio.h>
#include <string.h>

#include "acme/acme_internal.h"

#define PROBLEM_PREFIX "urn:ietf:params:acme:error:"

static json_t *load_object(const char *body, size_t len, char *err, size_t errsize)
{
    json_t *j = hs_json_load(body, len, ACME_MAX_BODY, err, errsize);

    if (j && !json_is_object(j)) {
        snprintf(err, errsize, "not a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A string member copied into out (size bytes with the NUL); -EINVAL when missing, of
 * another type, too long or empty. */
static int get_str(const json_t *o, const char *key, char *out, size_t size, char *err,
                   size_t errsize)
{
    const char *s = hs_json_str(o, key);

    if (!s || !*s || strlen(s) >= size) {
        snprintf(err, errsize, "\"%s\" is %s", key, !s ? "missing or not a string"
                                                     : !*s ? "empty" : "too long");
        return -EINVAL;
    }
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

/* RFC 8555 §7.1.6; "deactivated", "expired" and "revoked" all mean it cannot be used. */
static int get_status(const json_t *o, enum acme_status *out, char *err, size_t errsize)
{
    static const struct { const char *name; enum acme_status st; } names[] = {
        { "pending", ACME_PENDING },       { "ready", ACME_READY },
        { "processing", ACME_PROCESSING }, { "valid", ACME_VALID },
        { "invalid", ACME_INVALID },       { "deactivated", ACME_INVALID },
        { "expired", ACME_INVALID },       { "revoked", ACME_INVALID },
    };
    const char *s = hs_json_str(o, "status");

    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].st;
            return 0;
        }
    }
    snprintf(err, errsize, "\"status\" is missing or unknown");
    return -EINVAL;
}

int acme__parse_directory(const char *body, size_t len, struct acme_directory *out, char *err,
                          size_t errsize)
{
    struct acme_directory d;
    json_t *j = load_object(body, len, err, errsize);
    int rc;

    if (!j)
        return -EINVAL;
    rc = get_str(j, "newNonce", d.new_nonce, sizeof(d.new_nonce), err, errsize);
    if (rc == 0)
        rc = get_str(j, "newAccount", d.new_account, sizeof(d.new_account), err, errsize);
    if (rc == 0)
        rc = get_str(j, "newOrder", d.new_order, sizeof(d.new_order), err, errsize);
    json_decref(j);
    if (rc == 0)
        *out = d;
    return rc;
}

static int order_fields(const json_t *j, struct acme_order *o, char *err, size_t errsize)
{
    const json_t *list = json_object_get(j, "authorizations");
    size_t i;
    int rc;

    if ((rc = get_status(j, &o->status, err, errsize)) < 0 ||
        (rc = get_str(j, "finalize", o->finalize, sizeof(o->finalize), err, errsize)) < 0)
        return rc;
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > ACME_MAX_AUTHZ) {
        snprintf(err, errsize, "\"authorizations\" is not a list of 1 to %d", ACME_MAX_AUTHZ);
        return -EINVAL;
    }
    for (i = 0; i < json_array_size(list); i++) {
        const char *u = json_string_value(json_array_get(list, i));
        if (!u || !*u || strlen(u) >= ACME_MAX_URL) {
            snprintf(err, errsize, "authorization %zu is not a usable URL", i);
            return -EINVAL;
        }
        memcpy(o->authz[i], u, strlen(u) + 1);
    }
    o->n_authz = i;
    o->certificate[0] = '\0';
    if (o->status == ACME_VALID)
        return get_str(j, "certificate", o->certificate, sizeof(o->certificate), err, errsize);
    return 0;
}

int acme__parse_order(const char *body, size_t len, struct acme_order *out, char *err,
                      size_t errsize)
{
    struct acme_order *o = hs_xcalloc(1, sizeof(*o));
    json_t *j = load_object(body, len, err, errsize);
    int rc = j ? order_fields(j, o, err, errsize) : -EINVAL;

    json_decref(j);
    if (rc == 0)
        *out = *o;
    free(o);
    return rc;
}

/* The challenge of the given type among the authorization's. */
static int pick_challenge(const json_t *list, const char *type, struct acme_authz *a, char *err,
                          size_t errsize)
{
    const json_t *c, *e;
    size_t i;
    int rc;

    if (!json_is_array(list) || json_array_size(list) > 16) {
        snprintf(err, errsize, "\"challenges\" is not a list of at most 16");
        return -EINVAL;
    }
    json_array_foreach(list, i, c) {
        if (!json_is_object(c) || !hs_streq(hs_json_str(c, "type"), type))
            continue;
        if ((rc = get_str(c, "url", a->chall_url, sizeof(a->chall_url), err, errsize)) < 0 ||
            (rc = get_str(c, "token", a->token, sizeof(a->token), err, errsize)) < 0 ||
            (rc = get_status(c, &a->chall_status, err, errsize)) < 0)
            return rc;
        /* RFC 8555 §8.1: the token is base64url; it ends up in a URL path and a file. */
        if (strspn(a->token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") !=
            strlen(a->token)) {
            snprintf(err, errsize, "the %s token is not base64url", type);
            return -EINVAL;
        }
        e = json_object_get(c, "error");
        acme__parse_problem_obj(e, NULL, 0, a->error, sizeof(a->error));
        return 0;
    }
    snprintf(err, errsize, "the server offers no %s challenge", type);
    return -ENOENT;
}

static int authz_fields(const json_t *j, const char *type, struct acme_authz *a, char *err,
                        size_t errsize)
{
    const json_t *id = json_object_get(j, "identifier");
    int rc;

    if ((rc = get_status(j, &a->status, err, errsize)) < 0)
        return rc;
    if (!json_is_object(id) || !hs_streq(hs_json_str(id, "type"), "dns") ||
        get_str(id, "value", a->identifier, sizeof(a->identifier), err, errsize) < 0) {
        snprintf(err, errsize, "\"identifier\" is not a DNS name");
        return -EINVAL;
    }
    if (a->status == ACME_VALID)
        return 0; /* nothing left to do: the challenges do not matter */
    return pick_challenge(json_object_get(j, "challenges"), type, a, err, errsize);
}

int acme__parse_authz(const char *body, size_t len, const char *type, struct acme_authz *out,
                      char *err, size_t errsize)
{
    struct acme_authz *a = hs_xcalloc(1, sizeof(*a));
    json_t *j = load_object(body, len, err, errsize);
    int rc = j ? authz_fields(j, type, a, err, errsize) : -EINVAL;

    json_decref(j);
    if (rc == 0)
        *out = *a;
    free(a);
    return rc;
}

int acme__parse_problem_obj(const json_t *j, char *type, size_t typesize, char *out,
                            size_t outsize)
{
    const char *t = hs_json_str(j, "type"), *d = hs_json_str(j, "detail");

    if (!json_is_object(j) || !t)
        return -EINVAL;
    if (hs_has_prefix(t, PROBLEM_PREFIX))
        t += strlen(PROBLEM_PREFIX);
    if (type)
        snprintf(type, typesize, "%s", t);
    snprintf(out, outsize, "%s: %s", t, d ? d : "(no detail)");
    hs_utf8_sanitize(out);
    return 0;
}

int acme__parse_problem(const char *body, size_t len, char *type, size_t typesize, char *out,
                        size_t outsize)
{
    char err[128];
    json_t *j = load_object(body, len, err, sizeof(err));
    int rc = acme__parse_problem_obj(j, type, typesize, out, outsize);

    json_decref(j);
    return rc;
}
