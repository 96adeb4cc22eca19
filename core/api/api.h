/* api: headscale's REST API under /api/v1 (0.29 paths and camelCase JSON, plus the 0.22.3
 * paths where they don't clash), API-key authentication and the OpenAPI document.
 *
 * Transport-free: the server hands over a parsed request and writes the response out, so
 * the same code serves the TCP listener and the unix socket, and unit tests call it directly.
 * Thread-safe: api_handle may run on several HTTP threads at once. */
#ifndef HS_API_H
#define HS_API_H

#include <stdbool.h>

#include "auth/auth.h"
#include "config/config.h"
#include "store/store.h"

#define API_MAX_BODY (1u << 20)
/* Responses are ours and sized by the data (a node is about 1 KiB in a list): the cap only
 * stops a runaway, it must not cut a large tailnet's node list. */
#define API_MAX_RESPONSE (256u << 20)

struct api;

struct api_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* URL-decoded path, e.g. "/api/v1/user/3" */
    /* Query parameter lookup (NULL when absent). */
    const char *(*query)(void *qctx, const char *key);
    void *qctx;
    const char *body;          /* may be NULL when body_len is 0 */
    size_t body_len;
    const char *authorization; /* the Authorization header, or NULL */
    bool trusted;              /* came in over the unix socket: no API key needed */
    bool authenticated;        /* api_authenticate() passed on this request's headers */
    bool invalid_utf8;         /* a query value is not UTF-8: answered 400, nothing runs */
};

struct api_response {
    int status;
    const char *content_type; /* static string */
    struct hs_buf body;       /* owned by the response: free with api_response_free */
};

struct state;

/* Borrows cfg, st, auth and state (kept current by the bus st publishes on) for the lifetime
 * of the api object. */
struct api *api_new(const struct hs_config *cfg, struct store *st, struct auth *auth,
                    struct state *state);
void api_free(struct api *a);
/* The DERP map GET /api/v1/derpmap shows (borrowed; without it the map is empty). */
struct derpmap;
void api_set_derpmap(struct api *a, struct derpmap *dm);

/* Returns false when the path is not /api or under /api/ (the caller serves it elsewhere). */
bool api_handles(const char *path);

/* The API key check, on the method, path and headers alone: call it before reading a body,
 * so that nobody without a key makes the server hold one. true when the request may go on
 * (the unix socket, the public OpenAPI document, a valid key); false with resp holding the
 * answer (401 "Unauthorized" as headscale 0.29 words it, or a 500 when the key store
 * fails), which the caller sends and frees with api_response_free. Every /api path needs a
 * key, known or not, so that routes cannot be mapped without one. */
bool api_authenticate(struct api *a, const struct api_request *req, struct api_response *resp);

/* Authenticates (unless req->authenticated says the caller did), routes and answers. */
void api_handle(struct api *a, const struct api_request *req, struct api_response *resp);
void api_response_free(struct api_response *resp);

/* The OpenAPI (swagger 2.0) document of every operation served, as GET /api/v1/openapi.json
 * and headscale's /swagger/v1/openapiv2.json answer it. */
const char *api_openapi_document(void);

#endif
