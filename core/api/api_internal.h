/* Shared between the api/ source files only. */
#ifndef HS_API_INTERNAL_H
#define HS_API_INTERNAL_H

#include "api/api.h"

#define API_MAX_ARGS 4

struct api {
    const struct hs_config *cfg;
    struct store *st;
    struct auth *auth;
    struct state *state;
};

/* One request in flight: the request, its path arguments, its parsed JSON body. */
struct api_call {
    struct api *api;
    const struct api_request *req;
    struct api_response *resp;
    char *args[API_MAX_ARGS]; /* {} segments of the route pattern, URL-decoded */
    json_t *body;             /* parsed lazily by api_body() */
};

/* Writes a JSON response (steals j). */
void api_reply(struct api_call *c, int status, json_t *j);
/* Writes an RFC 7807 problem+json error. */
void api_error(struct api_call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps a store/auth errno to an HTTP error with the given object name ("user", "node"). */
void api_store_error(struct api_call *c, int rc, const char *what);

/* The JSON body as an object (an empty body is {}); NULL after replying 400. */
json_t *api_body(struct api_call *c);
const char *api_query(struct api_call *c, const char *key);

/* Field readers for request bodies: return 0, or reply 400 and return -EINVAL.
 * A missing (or null) field leaves *out unchanged. */
int api_field_str(struct api_call *c, json_t *obj, const char *key, const char **out);
int api_field_bool(struct api_call *c, json_t *obj, const char *key, bool *out);
int api_field_time(struct api_call *c, json_t *obj, const char *key, int64_t *out);
int api_field_strv(struct api_call *c, json_t *obj, const char *key, struct hs_strv *out);
/* Accepts a JSON string or number holding a uint64 id. */
int api_field_id(struct api_call *c, json_t *obj, const char *key, uint64_t *out);
/* Parses a path/query id; replies 400 on garbage. */
int api_parse_id(struct api_call *c, const char *s, const char *what, uint64_t *out);

/* Resolves a user given by id (digits) or name; replies 404/400 itself on failure. */
int api_lookup_user(struct api_call *c, const char *id_or_name, struct store_user *out);

/* JSON shapes of headscale 0.29 (protojson: camelCase, string ids, RFC 3339 times). */
json_t *api_json_time(int64_t us);        /* null when 0 */
json_t *api_json_id(uint64_t id);         /* "123" */
json_t *api_json_user(const struct store_user *u);
json_t *api_json_strv(const struct hs_strv *sv);
json_t *api_json_preauthkey(struct api_call *c, const struct store_preauthkey *k,
                            const char *full_key);
json_t *api_json_apikey(const struct store_apikey *k);
json_t *api_json_node(struct api_call *c, const struct store_node *n, bool in_list);

bool api_valid_username(const char *name, char *why, size_t whysize);
bool api_valid_tag(const char *tag);

/* Handlers, one per route. */
typedef void (*api_handler)(struct api_call *c);
void api_health(struct api_call *c);
void api_user_list(struct api_call *c);
void api_user_get(struct api_call *c);
void api_user_create(struct api_call *c);
void api_user_rename(struct api_call *c);
void api_user_delete(struct api_call *c);
void api_preauthkey_list(struct api_call *c);
void api_preauthkey_create(struct api_call *c);
void api_preauthkey_expire(struct api_call *c);
void api_preauthkey_delete(struct api_call *c);
void api_apikey_list(struct api_call *c);
void api_apikey_create(struct api_call *c);
void api_apikey_expire(struct api_call *c);
void api_apikey_delete(struct api_call *c);
void api_node_list(struct api_call *c);
void api_node_get(struct api_call *c);
void api_node_delete(struct api_call *c);
void api_node_expire(struct api_call *c);
void api_node_rename(struct api_call *c);
void api_node_tags(struct api_call *c);
void api_node_move(struct api_call *c);
void api_node_register(struct api_call *c);
void api_auth_register(struct api_call *c);
void api_policy_get(struct api_call *c);
void api_policy_set(struct api_call *c);
void api_policy_check(struct api_call *c);
void api_openapi(struct api_call *c);

extern const char api_openapi_json[]; /* generated from core/api/openapi.json */

#endif
