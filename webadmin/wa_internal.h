/* webadmin's insides, shared by its files: form and cookie parsing, sessions, the REST client
 * and the page handlers. */
#ifndef HS_WEBADMIN_INTERNAL_H
#define HS_WEBADMIN_INTERNAL_H

#include <sodium.h>

#include "webadmin/tmpl.h"
#include "webadmin/webadmin.h"

/* A number macro as a string literal. */
#define WA_STR_(x) #x
#define WA_STR(x) WA_STR_(x)

/* ---- urlencoded forms and queries (form.c) ---- */
#define WA_MAX_FIELDS 64
#define WA_MAX_FIELD_LEN 4096

struct wa_form {
    size_t n;
    char *name[WA_MAX_FIELDS];
    char *value[WA_MAX_FIELDS];
};
/* Parses "a=1&b=x%20y" (len bytes). -EINVAL on a bad escape or a NUL, -E2BIG past the field
 * limits; on failure f is empty. Values are checked to be UTF-8. */
int wa__form_parse(struct wa_form *f, const char *s, size_t len);
void wa__form_free(struct wa_form *f);
/* The first value of name, or NULL. */
const char *wa__form_get(const struct wa_form *f, const char *name);
/* The words of field name (split on spaces and commas) as a JSON array of strings. */
json_t *wa__form_words(const struct wa_form *f, const char *name);
/* The value of cookie `name` in a Cookie header, copied into out; false when absent or
 * longer than outsize - 1. */
bool wa__cookie_get(const char *header, const char *name, char *out, size_t outsize);

/* ---- sessions (session.c) ---- */
/* A session id is 32 random bytes in base64url (43 chars); the table keeps only a keyed hash
 * of it, and the administrator's API key sealed with a key derived from the id, so neither
 * the table nor a memory dump of it alone signs anyone in. */
#define WA_SESSION_ID_LEN 43
#define WA_CSRF_LEN 43
#define WA_MAX_SESSIONS 1024
#define WA_MAX_API_KEY 256
#define WA_KEY_PREFIX_LEN 12 /* hskey-api-<prefix>-<secret>, as the server makes them */

struct wa_sessions;
struct wa_session_view {
    char csrf[WA_CSRF_LEN + 1];
    char api_key[WA_MAX_API_KEY + 1]; /* wipe after use (sodium_memzero) */
    char minted[WA_KEY_PREFIX_LEN + 1]; /* the prefix of a key made for this session (sign-out
                                         * expires it), else "" */
};

/* path: NULL keeps sessions in memory only; else they are also kept in that file (mode 0600,
 * rewritten whole when a session begins or ends and when one's last use moved by a minute)
 * and read back from it here, so that a restart signs no one out. The file holds what memory
 * holds: id hashes, API keys sealed under the ids, CSRF tokens; without a browser's cookie it
 * signs no one in. A file that does not parse is ignored (with a warning) and replaced. */
struct wa_sessions *wa__sessions_new(int64_t max_us, int64_t idle_us, const char *path);
void wa__sessions_free(struct wa_sessions *ss);
/* A new session for api_key (minted: made for it, in the server's form
 * hskey-api-<prefix>-<secret>): its id in id_out. -E2BIG when the key is too long; a full
 * table drops the oldest session. */
int wa__session_create(struct wa_sessions *ss, const char *api_key, bool minted,
                       char id_out[WA_SESSION_ID_LEN + 1]);
/* The live session with this id (touching it), opened into v; -ENOENT for an unknown,
 * expired or malformed id. */
int wa__session_open(struct wa_sessions *ss, const char *id, struct wa_session_view *v);
void wa__session_end(struct wa_sessions *ss, const char *id);
/* Ends the expired sessions whose API keys were made for them and gives those keys' prefixes
 * (at most max), for the caller to expire: such a session may end unused, without a
 * sign-out. Other expired sessions end when next met. */
size_t wa__sessions_sweep(struct wa_sessions *ss, char (*prefixes)[WA_KEY_PREFIX_LEN + 1],
                          size_t max);
/* Random base64url text of WA_CSRF_LEN chars. */
void wa__random_token(char out[WA_CSRF_LEN + 1]);
/* Constant-time compare of two tokens (NULL never matches). */
bool wa__token_equal(const char *a, const char *b);

/* ---- the REST client (client.c) ---- */
#define WA_MAX_API_RESPONSE (64u << 20)

struct wa_client;
struct wa_client *wa__client_new(const char *base_url, const char *ca_file);
void wa__client_free(struct wa_client *c);
/* One request with `Authorization: Bearer key`; body is JSON (borrowed) or NULL. *status is
 * the HTTP status and *out the parsed JSON answer (the caller's; NULL when not JSON).
 * -EIO when the server could not be reached or answered too much. */
int wa__client_call(struct wa_client *c, const char *key, const char *method, const char *path,
                    const json_t *body, long *status, json_t **out);

/* ---- sign-in through an OpenID provider (oidc.c) ---- */
#define WA_OIDC_FLOWS 256                            /* sign-ins between redirect and callback */
#define WA_OIDC_FLOW_TTL_US (10 * 60 * HS_USEC_PER_SEC) /* and how long one may take */
#define WA_OIDC_COOKIE "__Host-wa_oidc"              /* the state of the browser's sign-in */

struct wa_oidc;
/* For cfg's provider (cfg->oidc_issuer set): reads the client secret and the service API key
 * from their files, each of which must be readable by its owner only. NULL with err when one
 * cannot be read or is open to others. The provider is asked nothing yet. */
struct wa_oidc *wa__oidc_new(const struct webadmin_config *cfg, char *err, size_t errsize);
void wa__oidc_free(struct wa_oidc *o); /* NULL is fine */
/* The provider's name for the sign-in button. */
const char *wa__oidc_name(const struct wa_oidc *o);
/* Whether verified claims name one of cfg's administrators: a verified e-mail address of
 * admin_emails, a group (the groups claim) of admin_groups, or "<iss>/<sub>" of admin_ids. */
bool wa__oidc_is_admin(const struct webadmin_config *cfg, const json_t *claims);

/* ---- pages ---- */
struct webadmin {
    struct webadmin_config cfg;
    struct wa_sessions *sessions;
    struct wa_client *client;
    struct wa_oidc *oidc; /* NULL: API keys only */
    struct tmpl *head, *foot;
    struct tmpl *pages[16];
    const char *page_names[16];
    size_t npages;
};

/* One request being answered by a page handler. */
struct wa_ctx {
    struct webadmin *wa;
    const struct wa_request *rq;
    struct wa_response *rs;
    struct wa_form form;      /* the POST body */
    struct wa_form query;
    struct wa_session_view s; /* signed in when signed_in */
    bool signed_in;
    const char *args[2];      /* path segments matched by {} */
    const char *error;        /* a failed change: shown on the page rendered after it */
    int error_status;
};

/* A cookie (HttpOnly, Secure, Path=/) with SameSite=Strict, or Lax for one that must come
 * back on the provider's redirect. */
void wa__set_cookie(struct wa_ctx *x, const char *name, const char *value, long max_age,
                    bool lax);
/* The sign-in page (API key form, and the provider's button), with status and a message. */
void wa__signin_page(struct wa_ctx *x, int status, const char *message);
/* Signs the browser in with api_key (minted: made for this session): a new session and its
 * cookie. */
void wa__session_begin(struct wa_ctx *x, const char *api_key, bool minted);
/* GET /oidc/start: off to the provider. GET /oidc/callback: back from it. */
void wa__oidc_start(struct wa_ctx *x);
void wa__oidc_callback(struct wa_ctx *x);
/* At sign-out of a session whose API key was made for it: expires that key. */
void wa__oidc_expire_key(struct wa_ctx *x);
/* Expires the keys made for sessions that ended unused (wa__sessions_sweep). */
void wa__oidc_sweep(struct webadmin *wa);

/* Calls the API as the signed-in administrator, with body (JSON, stolen; NULL for none). A 401 ends the session (the key expired or
 * was deleted) and answers with the sign-in page: then returns -EACCES and the handler stops.
 * -EIO: the server is unreachable (a 502 page is written). Otherwise 0 with *status and
 * *out as wa__client_call gives them. */
int wa__api(struct wa_ctx *x, const char *method, const char *path, json_t *body, long *status,
            json_t **out);
/* GET path → its array member `key` (the caller's; empty when absent), or NULL after the
 * page for a failed call was written. */
json_t *wa__api_list(struct wa_ctx *x, const char *path, const char *key);
/* GET /api/v1/node/page?query (our server's filtered, sorted page with counts) → the answer
 * (the caller's), or NULL after the page for a failed call was written. */
json_t *wa__api_node_page(struct wa_ctx *x, const char *query);
/* Node id's object, inside *answer (the caller's to free, NULL or not), or NULL after the
 * page for a failed call was written. */
json_t *wa__api_node(struct wa_ctx *x, uint64_t id, json_t **answer);
/* The API's error message of a failed call, or a generic one. */
const char *wa__api_message(const json_t *answer);

/* Renders page `name` inside the layout with data (stolen); adds csrf, base, signed_in. */
void wa__render(struct wa_ctx *x, int status, const char *name, const char *title, json_t *data);
/* 303 to base_path + rel (rel starts with '/'). */
void wa__redirect(struct wa_ctx *x, const char *rel);
/* A short error page with status. */
void wa__error_page(struct wa_ctx *x, int status, const char *message);

/* The handlers of changes end in one of these: on a 200 answer, 303 back to `back`; else
 * the page `show` rendered again with the API's message and a 400 (409 or 404 kept). */
void wa__after_change(struct wa_ctx *x, long status, const json_t *answer, const char *back,
                      void (*show)(struct wa_ctx *x));
/* args[0] as a numeric id, or false after a 404 page. */
bool wa__id_arg(struct wa_ctx *x, uint64_t *id);
/* s percent-encoded as one path segment, appended to path (a malloc'd string, replaced). */
char *wa__path_join(const char *path, const char *segment);
/* Adds "error" to data when x carries one, and gives the status to render with. */
int wa__page_status(struct wa_ctx *x, json_t *data);
/* RFC 3339 text of the API as headscale's "2006-01-02 15:04:05", or "" for none/zero. */
void wa__human_time(const char *rfc3339, char *out, size_t size);
/* True when t (RFC 3339) is set and before now. */
bool wa__time_past(const char *rfc3339);

/* The lines of `from` turned into those of `to` (diff.c): an array of {op, text}, op " "
 * (kept), "-" (only in from) or "+" (only in to); NULL when the lines that differ are more
 * than WA_DIFF_MAX_LINES on either side (the table would be too big). */
#define WA_DIFF_MAX_LINES 1000
json_t *wa__line_diff(const char *from, const char *to);

void wa__page_overview(struct wa_ctx *x);
void wa__page_derp(struct wa_ctx *x);
/* Adds what node id reports of itself (endpoints, client_version, os, home_derp) to node;
 * nothing when the server has no such view. -EACCES/-EIO after the page was written. */
int wa__node_reported(struct wa_ctx *x, uint64_t id, json_t *node);
void wa__page_users(struct wa_ctx *x);
void wa__post_user_create(struct wa_ctx *x);
void wa__post_user_rename(struct wa_ctx *x);
void wa__post_user_delete(struct wa_ctx *x);
void wa__page_nodes(struct wa_ctx *x);
void wa__page_node(struct wa_ctx *x);
void wa__live(struct wa_ctx *x);
void wa__post_node_rename(struct wa_ctx *x);
void wa__post_node_expire(struct wa_ctx *x);
void wa__post_node_move(struct wa_ctx *x);
void wa__post_node_tags(struct wa_ctx *x);
void wa__post_node_delete(struct wa_ctx *x);
void wa__page_routes(struct wa_ctx *x);
void wa__post_route_approve(struct wa_ctx *x);
void wa__post_route_disable(struct wa_ctx *x);
void wa__page_policy(struct wa_ctx *x);
void wa__post_policy_check(struct wa_ctx *x);
void wa__post_policy_save(struct wa_ctx *x);
void wa__page_dns(struct wa_ctx *x);
void wa__post_dns_save(struct wa_ctx *x);
void wa__post_dns_revert(struct wa_ctx *x);
void wa__post_policy_preview(struct wa_ctx *x);
void wa__post_policy_rollback(struct wa_ctx *x);
void wa__page_preauthkeys(struct wa_ctx *x);
void wa__post_preauthkey_create(struct wa_ctx *x);
void wa__post_preauthkey_expire(struct wa_ctx *x);
void wa__page_apikeys(struct wa_ctx *x);
void wa__post_apikey_create(struct wa_ctx *x);
void wa__post_apikey_expire(struct wa_ctx *x);
void wa__post_apikey_delete(struct wa_ctx *x);

#endif
