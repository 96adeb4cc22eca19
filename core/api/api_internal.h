/* Shared between the api/ source files only. */
#ifndef HS_API_INTERNAL_H
#define HS_API_INTERNAL_H

#include "api/api.h"
#include "state/state.h"

#define API_MAX_ARGS 4

struct api {
    const struct hs_config *cfg;
    struct store *st;
    struct auth *auth;
    struct state *state;
    struct derpmap *derpmap; /* NULL until api_set_derpmap */
};

/* One request in flight: the request, its path arguments, its parsed JSON body. */
struct api_call {
    struct api *api;
    const struct api_request *req;
    struct api_response *resp;
    char *args[API_MAX_ARGS]; /* {} segments of the route pattern, URL-decoded */
    json_t *body;             /* parsed lazily by api_body() */
    bool v022;                /* a headscale 0.22.3 path: nodes and users in its shapes */
};

/* The member naming a node, or a list of them, in this call's answer: "node"/"nodes", or
 * 0.22.3's "machine"/"machines". */
const char *api_node_member(const struct api_call *c, bool list);

/* Writes a JSON response (steals j). */
void api_reply(struct api_call *c, int status, json_t *j);
/* Writes an error: headscale 0.29's {code, message, details} with RFC 7807's members. */
void api_error(struct api_call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with the gRPC code headscale 0.29 puts in "code" where it is not the status's
 * usual one (API_GRPC_UNKNOWN on its 500 for "no policy"). */
#define API_GRPC_UNKNOWN 2
void api_error_code(struct api_call *c, int status, int grpc_code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
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
/* A list of tags ("tag:name"), sorted and without repeats as headscale 0.29 stores them. */
int api_field_tags(struct api_call *c, json_t *obj, const char *key, struct hs_strv *out);
/* Accepts a JSON string or number holding a uint64 id. */
int api_field_id(struct api_call *c, json_t *obj, const char *key, uint64_t *out);
/* Parses a path/query id; replies 400 on garbage, 404 past INT64_MAX (no row has it). */
int api_parse_id(struct api_call *c, const char *s, const char *what, uint64_t *out);

/* Resolves a user given by id (digits) or name; replies 404/400 itself on failure. */
int api_lookup_user(struct api_call *c, const char *id_or_name, struct store_user *out);

/* JSON shapes of headscale 0.29 (protojson: camelCase, string ids, RFC 3339 times). */
json_t *api_json_time(int64_t us);        /* null when 0 */
json_t *api_json_id(uint64_t id);         /* "123" */
/* The user in the call's shape (0.22.3's paths: {id, name, createdAt}); c may be NULL. */
json_t *api_json_user(const struct api_call *c, const struct store_user *u);
json_t *api_json_preauthkey(struct api_call *c, const struct store_preauthkey *k,
                            const char *full_key);
json_t *api_json_apikey(const struct store_apikey *k);
json_t *api_json_node(struct api_call *c, const struct store_node *n, bool in_list);
/* The same with "subnetRoutes" listing subnet (NULL: empty). */
json_t *api_json_node_subnet(struct api_call *c, const struct store_node *n, bool in_list,
                             const struct hs_strv *subnet);
/* Read lock held: what headscale 0.29 shows as a node's subnetRoutes: its primary routes and,
 * with_exit (in lists), its approved and announced exit routes after them. */
void api_node_subnet_routes(struct state *s, const struct state_node *sn, bool with_exit,
                            struct hs_strv *out);

/* A JSON writer straight into a buffer (api_jw.c) for large responses: the output is what
 * json_dumps(JSON_COMPACT) writes for the same values. Members are api_jw_key + one value, or
 * api_jw_kstr; an append error (the buffer's cap) sticks and is returned by api_jw_end. */
#define API_JW_MAX_DEPTH 64
struct api_jw {
    struct hs_buf *b; /* borrowed */
    int err;
    unsigned depth;
    uint64_t items; /* bit d: the container at depth d has a member already */
    bool after_key;
};
void api_jw_begin(struct api_jw *w, struct hs_buf *b);
int api_jw_end(struct api_jw *w); /* 0, or the first error (-E2BIG, -ENOMEM, -EINVAL) */
void api_jw_obj(struct api_jw *w);
void api_jw_obj_end(struct api_jw *w);
void api_jw_arr(struct api_jw *w);
void api_jw_arr_end(struct api_jw *w);
void api_jw_key(struct api_jw *w, const char *key); /* a literal: ASCII, nothing to escape */
/* A string value; NULL or invalid UTF-8 writes nothing and returns false (jansson's
 * json_string() refuses those, and the member or element is then left out). */
bool api_jw_str(struct api_jw *w, const char *s);
/* A string member, left out entirely when s is NULL or not UTF-8 (see api_jw_str). */
void api_jw_kstr(struct api_jw *w, const char *key, const char *s);
/* A string member known to be ASCII with nothing to escape (hex keys, times): no scan. */
void api_jw_kascii(struct api_jw *w, const char *key, const char *s, size_t len);
void api_jw_null(struct api_jw *w);
void api_jw_bool(struct api_jw *w, bool v);
void api_jw_raw(struct api_jw *w, const char *json); /* an encoded value, copied as is */
void api_jw_id(struct api_jw *w, uint64_t id);       /* "123" */
void api_jw_time(struct api_jw *w, int64_t us);      /* RFC 3339, null when 0 */
#define API_JW_TIME_MAX 48
/* What hs_format_rfc3339 writes, faster; returns the length. */
size_t api_jw_format_time(int64_t us, char out[API_JW_TIME_MAX]);
void api_jw_strv(struct api_jw *w, const struct hs_strv *sv);
/* Parses what a writer wrote into b (one value) and frees b; json null if it is not JSON. */
json_t *api_jw_to_json(struct hs_buf *b);

/* Starts a 200 JSON reply written in place with w; api_reply_end answers 500 instead when the
 * body did not fit. */
void api_reply_begin(struct api_call *c, struct api_jw *w);
void api_reply_end(struct api_call *c, struct api_jw *w);

/* Users and pre-auth keys loaded once for a whole list, so that N rows cost a fixed number of
 * queries instead of one or two per row (each also waiting for the store's connection behind
 * the control plane's writes). Sorted by id, as the store lists them. */
struct api_refs {
    struct store_user *users;
    size_t nusers;
    struct store_preauthkey *keys; /* only when loaded with_keys */
    size_t nkeys;
    /* Their JSON text, rendered on first use (a list names the same few rows many times). */
    char **user_json, **key_json;
    bool missed; /* a row named a user or key not in the tables (rendered null) */
};
int api_refs_load(struct api_call *c, bool with_keys, struct api_refs *out);
void api_refs_free(struct api_refs *r);
/* Every node of the in-memory state (of one user unless user_id is 0) as one array value,
 * in id order, the rows they refer to found in refs. False if one named a user or key refs
 * lacks: created after refs were loaded (load again and retry) or deleted since. */
bool api_jw_state_nodes(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                        uint64_t user_id);
/* A node of the state (read lock held) as GET /api/v1/node/{id} shows it, its user and key
 * found in refs (refs->missed set when they are not). */
void api_jw_state_node(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                       const struct state_node *sn);
/* The same as a row of GET /api/v1/node shows it (subnetRoutes filled). */
void api_jw_state_list_node(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                            const struct state_node *sn);
void api_jw_preauthkeys(struct api_call *c, struct api_jw *w, struct api_refs *refs,
                        const struct store_preauthkey *v, size_t n);
/* Answers 200 with what write puts in w from the state's nodes and refs (users and keys
 * loaded here); when write returns false (a row named a user or key refs lacks, made between
 * the two reads) once more with refs loaded again. */
void api_reply_state_nodes(struct api_call *c,
                           bool (*write)(struct api_call *c, struct api_jw *w,
                                         struct api_refs *refs, void *arg),
                           void *arg);
/* GET /api/v1/node/page (api_node_page.c). */
void api_node_page(struct api_call *c);
/* Ours, for the web admin (api_stats.c): GET /api/v1/node/stats, /api/v1/node/{id}/hostinfo,
 * /api/v1/derpmap. */
void api_node_stats(struct api_call *c);
void api_node_hostinfo(struct api_call *c);
void api_derpmap(struct api_call *c);

bool api_valid_username(const char *name, char *why, size_t whysize);
bool api_valid_tag(const char *tag);

/* The route table (method, pattern with "{}" per path argument, no key needed), read by the
 * unit test that holds it and core/api/openapi.json to each other. i < api_route_count(). */
size_t api_route_count(void);
void api_route_at(size_t i, const char **method, const char **pattern, bool *public);

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
/* headscale 0.22.3's paths (api_machine.c): the handlers above, answering in its shapes. */
void api_machine_list(struct api_call *c);
void api_machine_get(struct api_call *c);
void api_machine_register(struct api_call *c);
void api_machine_expire(struct api_call *c);
void api_machine_rename(struct api_call *c);
void api_machine_tags(struct api_call *c);
void api_machine_move(struct api_call *c);
void api_debug_create_machine(struct api_call *c);
void api_user_get_v022(struct api_call *c);
void api_node_list(struct api_call *c);
void api_node_get(struct api_call *c);
void api_node_delete(struct api_call *c);
void api_node_expire(struct api_call *c);
void api_node_rename(struct api_call *c);
void api_node_tags(struct api_call *c);
void api_node_move(struct api_call *c);
void api_node_register(struct api_call *c);
void api_auth_register(struct api_call *c);
void api_auth_approve(struct api_call *c);
void api_auth_reject(struct api_call *c);
void api_debug_create_node(struct api_call *c);
void api_node_backfill_ips(struct api_call *c);
void api_node_approve_routes(struct api_call *c);
void api_routes_list(struct api_call *c);
void api_routes_node_list(struct api_call *c);
void api_route_enable(struct api_call *c);
void api_route_disable(struct api_call *c);
void api_route_delete(struct api_call *c);
void api_policy_get(struct api_call *c);
void api_policy_set(struct api_call *c);
void api_policy_check(struct api_call *c);
void api_policy_history(struct api_call *c);
void api_policy_preview(struct api_call *c);
void api_policy_version(struct api_call *c);
void api_policy_rollback(struct api_call *c);
void api_dns_get(struct api_call *c);
void api_dns_set(struct api_call *c);
void api_dns_clear(struct api_call *c);
void api_openapi(struct api_call *c);

extern const char api_openapi_json[]; /* generated from core/api/openapi.json */

#endif
