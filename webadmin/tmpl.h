/* tmpl: the web admin's HTML templates, escaped by default.
 *
 * Syntax (a small Mustache):
 *   {{name}}  {{a.b}}  {{.}}     a value, escaped for where it stands (see below)
 *   {{#name}} ... {{/name}}       a section: once per array element, once with an object or
 *                                 any other true value as context; skipped when the value is
 *                                 missing, null, false, "", 0 or []
 *   {{^name}} ... {{/name}}       the inverse: only when the section would be skipped
 *   {{! text }}                   a comment
 * There is no way to write a value unescaped.
 *
 * Contexts: the compiler follows the HTML around each {{value}} and fixes its escaping then:
 *   - element text: & < > " ' become entities;
 *   - a quoted attribute value: the same; in a URL attribute (href, src, action, formaction)
 *     a value that starts the attribute must be a relative path or http(s) URL (anything else,
 *     javascript: included, is written as "#"), and a value later in the URL is
 *     percent-encoded as a URL component;
 *   - anywhere else (tag or attribute names, unquoted attribute values, on* and style
 *     attributes, <script>, <style>, comments): refused at compile time.
 * A section must end in the same HTML context it started in, so that repeating it cannot
 * change what its values are taken as.
 *
 * Limits are checked before work: the source size, the number of pieces, section depth and
 * the output size (the caller's hs_buf max). Invalid UTF-8 in values is written as '?'. */
#ifndef HS_WEBADMIN_TMPL_H
#define HS_WEBADMIN_TMPL_H

#include <stddef.h>

#include "util/util.h"

#define TMPL_MAX_SOURCE (256u << 10)
#define TMPL_MAX_PIECES 8192
#define TMPL_MAX_DEPTH 16
#define TMPL_MAX_NAME 64

struct tmpl;

/* Compiles src (len bytes, need not be NUL-terminated). 0 and *out (free with tmpl_free), or
 * -EINVAL (malformed, or a value where no escaping is safe) / -E2BIG (over a limit) with a
 * message naming the line in err. */
int tmpl_compile(const char *src, size_t len, struct tmpl **out, char *err, size_t errsize);
void tmpl_free(struct tmpl *t); /* NULL is fine */

/* Appends t rendered with data (borrowed) to out. -E2BIG when out's max is reached (out is then
 * cut back to where it was), -ENOMEM. */
int tmpl_render(const struct tmpl *t, const json_t *data, struct hs_buf *out);

/* The escapers, for the program's own output outside templates. */
int tmpl_escape_html(struct hs_buf *out, const char *s, size_t n);
int tmpl_escape_url_component(struct hs_buf *out, const char *s, size_t n);

#endif
