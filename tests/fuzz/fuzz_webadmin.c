/* The web admin's template engine and form parser meet text that templates, the API (names
 * chosen by anyone who registers a node) and browsers supply. Input: a template, a NUL byte,
 * then JSON data to render it with; the whole input is also parsed as a form. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "webadmin/tmpl.h"
#include "webadmin/wa_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void render(const char *src, size_t len, const char *json, size_t jlen)
{
    struct tmpl *t;
    struct hs_buf out;
    char err[256];
    json_t *d;

    if (tmpl_compile(src, len, &t, err, sizeof(err)) < 0)
        return;
    if (!(d = json_loadb(json, jlen, 0, NULL)))
        d = json_object();
    hs_buf_init(&out, 1u << 16); /* small: nested sections multiply, the cap is what counts */
    tmpl_render(t, d, &out);
    hs_buf_free(&out);
    json_decref(d);
    tmpl_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    size_t tlen = nul ? (size_t)(nul - s) : size;
    struct wa_form f;

    render(s, tlen, nul ? nul + 1 : "{}", nul ? size - tlen - 1 : 2);
    if (wa__form_parse(&f, s, size) == 0)
        wa__form_free(&f);
    return 0;
}
