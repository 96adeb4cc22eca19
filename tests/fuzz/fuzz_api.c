/* The REST API: hostile requests (users, pre-auth keys, API keys, nodes, routes, policy) to
 * the real handlers over a database that already holds a user, a key, a node and a policy
 * (world.h). Input: "METHOD /path?query" up to the first newline, then the body. Requests come as over
 * the unix socket (trusted), so every handler is reached without a key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "world.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEAD 1024

/* The query string's value for key ("k=v&k=v", undecoded), in a static buffer. */
static const char *query(void *qctx, const char *key)
{
    static char val[MAX_HEAD];
    size_t klen = strlen(key);

    for (const char *p = qctx; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : "") {
        size_t n = strcspn(p, "&");
        if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            snprintf(val, sizeof(val), "%.*s", (int)(n - klen - 1), p + klen + 1);
            return val;
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    const uint8_t *nl = memchr(data, '\n', size);
    char head[MAX_HEAD + 1], *sp, *q, *body;
    size_t hlen = nl ? (size_t)(nl - data) : size, blen = nl ? size - hlen - 1 : 0;
    struct fuzz_world w;
    struct api_request req = { .query = query, .trusted = true };
    struct api_response resp = { 0 };
    struct api *a;

    if (hlen > MAX_HEAD || blen > API_MAX_BODY)
        return 0;
    memcpy(head, data, hlen);
    head[hlen] = '\0';
    if (!(sp = strchr(head, ' ')))
        return 0;
    *sp = '\0';
    if ((q = strchr(sp + 1, '?')))
        *q++ = '\0';
    if (!ready) {
        fuzz_world_init();
        ready = 1;
    }
    body = malloc(blen + 1); /* the server's bodies end in a NUL after body_len */
    memcpy(body, nl ? nl + 1 : (const uint8_t *)"", blen);
    body[blen] = '\0';
    req.method = head;
    req.path = sp + 1;
    req.qctx = q;
    req.body = body;
    req.body_len = blen;
    fuzz_world_open(&w);
    a = api_new(w.cfg, w.st, w.au, w.state);
    api_handle(a, &req, &resp);
    api_response_free(&resp);
    api_free(a);
    fuzz_world_close(&w);
    free(body);
    return 0;
}
