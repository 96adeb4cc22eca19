/* The REST API: hostile requests (users, pre-auth keys, API keys, nodes, routes, policy) to
 * the real handlers over a database that already holds a user, a key, a node and a policy
 * (world.h). Input: "METHOD /path?query" up to the first newline, then the body. Requests come
 * as over the unix socket (trusted), so every handler is reached without a key, unless a
 * space and an Authorization header value follow the path: then they come from the network
 * and that is checked ("Bearer " and the world's API key placeholder passes, world.h). */
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

/* One request against a fresh world: the response's status and what it left in the
 * database. */
static uint64_t run(void *arg)
{
    const struct api_request *req = arg;
    struct api_response resp = { 0 };
    struct fuzz_world w;
    struct api *a;
    uint64_t digest;

    fuzz_world_open(&w);
    a = api_new(w.cfg, w.st, w.au, w.state);
    api_handle(a, req, &resp);
    api_free(a);
    digest = fuzz_world_close(&w);
    digest = fuzz_world_mix(digest, &resp.status, sizeof(resp.status));
    api_response_free(&resp);
    return digest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct api_request req = { .query = query };
    char *in, *nl, *sp, *q, *authz;

    if (size > MAX_HEAD + 1 + API_MAX_BODY)
        return 0;
    if (!ready) {
        fuzz_world_init(true);
        ready = 1;
    }
    in = malloc(size + 1); /* the server's bodies end in a NUL after body_len */
    memcpy(in, data, size);
    in[size] = '\0';
    fuzz_world_put_keys((uint8_t *)in, size);
    nl = memchr(in, '\n', size);
    if ((nl ? (size_t)(nl - in) : size) > MAX_HEAD || !(sp = memchr(in, ' ', nl ? (size_t)(nl - in) : size)))
        goto out;
    if (nl)
        *nl = '\0';
    *sp = '\0';
    if ((authz = strchr(sp + 1, ' ')))
        *authz++ = '\0';
    if ((q = strchr(sp + 1, '?')))
        *q++ = '\0';
    req.method = in;
    req.path = sp + 1;
    req.qctx = q;
    req.authorization = authz;
    req.trusted = !authz;
    req.body = nl ? nl + 1 : "";
    req.body_len = nl ? size - (size_t)(nl + 1 - in) : 0;
    fuzz_world_run(run, &req);
out:
    free(in);
    return 0;
}
