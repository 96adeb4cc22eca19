#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

json_t *policy__parse(const char *text, size_t len, char *err, size_t errsize);

/* HuJSON → JSON in one pass, no allocation, no recursion: a small state machine over the
 * bytes. Trailing commas are found by remembering the last comma seen outside strings and
 * blanking it when the next significant byte closes an object or array. */

static int line_of(const char *in, size_t pos)
{
    int line = 1;
    for (size_t i = 0; i < pos; i++)
        line += in[i] == '\n';
    return line;
}

static size_t skip_string(const char *in, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (in[i] == '\\')
            i++;
        else if (in[i] == '"')
            return i + 1;
        else if (in[i] == '\n')
            break;
    }
    return 0; /* unterminated */
}

/* Blanks a comment starting at i; returns the index after it, or 0 if unterminated. */
static size_t blank_comment(const char *in, size_t len, size_t i, char *out)
{
    if (in[i + 1] == '/') {
        for (; i < len && in[i] != '\n'; i++)
            out[i] = ' ';
        return i;
    }
    for (size_t j = i + 2; j + 1 < len; j++) {
        if (in[j] == '*' && in[j + 1] == '/') {
            for (size_t k = i; k < j + 2; k++)
                out[k] = in[k] == '\n' ? '\n' : ' ';
            return j + 2;
        }
    }
    return 0;
}

int policy_hujson_standardize(const char *in, size_t len, char *out, char *err, size_t errsize)
{
    size_t i = 0, last_comma = (size_t)-1;

    memcpy(out, in, len);
    out[len] = '\0';
    while (i < len) {
        char c = in[i];
        if (c == '"') {
            size_t end = skip_string(in, len, i);
            if (!end) {
                snprintf(err, errsize, "line %d: unterminated string", line_of(in, i));
                return -EINVAL;
            }
            last_comma = (size_t)-1;
            i = end;
        } else if (c == '/' && i + 1 < len && (in[i + 1] == '/' || in[i + 1] == '*')) {
            size_t end = blank_comment(in, len, i, out);
            if (!end) {
                snprintf(err, errsize, "line %d: unterminated comment", line_of(in, i));
                return -EINVAL;
            }
            i = end;
        } else if (c == ',') {
            last_comma = i++;
        } else if (c == '}' || c == ']') {
            if (last_comma != (size_t)-1)
                out[last_comma] = ' ';
            last_comma = (size_t)-1;
            i++;
        } else {
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                last_comma = (size_t)-1;
            i++;
        }
    }
    return 0;
}

static const char *const known_sections[] = {
    "acls", "groups", "hosts", "tagOwners", "autoApprovers", "ssh", "tests", "sshTests",
    "nodeAttrs", "grants", "postures", "ipsets", "derpMap", "randomizeClientPort",
    "disableIPv4", "OneCGNATRoute",
};

static bool string_list(json_t *v)
{
    size_t i;
    json_t *item;

    if (!json_is_array(v))
        return false;
    json_array_foreach(v, i, item)
        if (!json_is_string(item))
            return false;
    return true;
}

/* Each ACL: {"action": "accept", "src": [...], "dst": [...], "proto"?: ...}. Deeper meaning
 * (aliases, ports) is checked when the policy is compiled. */
static int check_acls(json_t *acls, char *err, size_t errsize)
{
    size_t i;
    json_t *acl;

    json_array_foreach(acls, i, acl) {
        const char *action = hs_json_str(acl, "action");
        if (!json_is_object(acl)) {
            snprintf(err, errsize, "acls[%zu]: must be an object", i);
            return -EINVAL;
        }
        if (!action || strcmp(action, "accept") != 0) {
            snprintf(err, errsize, "acls[%zu]: action must be \"accept\"", i);
            return -EINVAL;
        }
        if (!string_list(json_object_get(acl, "src")) ||
            !string_list(json_object_get(acl, "dst"))) {
            snprintf(err, errsize, "acls[%zu]: src and dst must be lists of strings", i);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_sections(json_t *doc, char *err, size_t errsize)
{
    const char *key;
    json_t *val;

    if (!json_is_object(doc)) {
        snprintf(err, errsize, "policy must be a JSON object");
        return -EINVAL;
    }
    json_object_foreach(doc, key, val) {
        bool known = false;
        for (size_t i = 0; i < HS_ARRAY_LEN(known_sections) && !known; i++)
            known = strcmp(key, known_sections[i]) == 0;
        if (!known) {
            snprintf(err, errsize, "unknown field \"%s\"", key);
            return -EINVAL;
        }
        if ((strcmp(key, "acls") == 0 || strcmp(key, "ssh") == 0 || strcmp(key, "grants") == 0 ||
             strcmp(key, "tests") == 0) && !json_is_array(val)) {
            snprintf(err, errsize, "\"%s\" must be a list", key);
            return -EINVAL;
        }
        if ((strcmp(key, "groups") == 0 || strcmp(key, "hosts") == 0 ||
             strcmp(key, "tagOwners") == 0) && !json_is_object(val)) {
            snprintf(err, errsize, "\"%s\" must be an object", key);
            return -EINVAL;
        }
    }
    return check_acls(json_object_get(doc, "acls"), err, errsize);
}

json_t *policy__parse(const char *text, size_t len, char *err, size_t errsize)
{
    char *std;
    json_t *doc;

    if (len > POLICY_MAX_BYTES) {
        snprintf(err, errsize, "policy of %zu bytes exceeds the limit of %u", len,
                 POLICY_MAX_BYTES);
        return NULL;
    }
    std = hs_xmalloc(len + 1);
    if (policy_hujson_standardize(text, len, std, err, errsize) < 0) {
        free(std);
        return NULL;
    }
    doc = hs_json_load(std, len, POLICY_MAX_BYTES, err, errsize);
    free(std);
    if (doc && check_sections(doc, err, errsize) < 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

int policy_check(const char *text, size_t len, char *err, size_t errsize)
{
    json_t *doc = policy__parse(text, len, err, errsize);
    if (!doc)
        return -EINVAL;
    json_decref(doc);
    return 0;
}
