#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

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
    int depth = 0;

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
            depth--;
            i++;
        } else {
            /* A policy is a few levels deep; the JSON parser behind this one recurses. */
            if ((c == '{' || c == '[') && ++depth > POLICY_MAX_DEPTH) {
                snprintf(err, errsize, "line %d: nested deeper than %d levels", line_of(in, i),
                         POLICY_MAX_DEPTH);
                return -EINVAL;
            }
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                last_comma = (size_t)-1;
            i++;
        }
    }
    return 0;
}
