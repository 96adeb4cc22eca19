/* webadmin: the pages of headscale-webadmin, a FastCGI program behind nginx.
 *
 * Transport-free like core/api: main.c turns each FastCGI request into a wa_request and writes
 * the wa_response out, so unit tests call webadmin_handle directly. The program holds no data
 * of its own but sessions: everything shown or changed goes through the server's REST API
 * with the signed-in administrator's API key, so it works with any replica and the key's own
 * expiry ends what it may do.
 *
 * Single-threaded: one webadmin serves one request at a time (the FastCGI accept loop). */
#ifndef HS_WEBADMIN_H
#define HS_WEBADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

#define WA_MAX_BODY (64u << 10)       /* a form post */
#define WA_MAX_PAGE (16u << 20)       /* a rendered page */
#define WA_MAX_HEADERS (8u << 10)

struct webadmin_config {
    const char *server_url;    /* the server's REST API: http(s)://host:port, no path */
    const char *templates_dir; /* the templates/ folder */
    const char *ca_file;       /* optional: CA bundle for an https server_url */
    const char *base_path;     /* where nginx mounts the pages, e.g. "/admin" */
    int64_t session_max_us;    /* a session ends this long after sign-in ... */
    int64_t session_idle_us;   /* ... or after this long unused */
    const char *sessions_file; /* optional: sessions kept here across restarts (0600) */
    /* Sign-in through an OpenID provider for the administrators named below: all of
     * public_url .. api_key_file and at least one list are set, or none (webadmin_options
     * checks). */
    const char *public_url;    /* the origin browsers reach the pages at: https://host[:port] */
    const char *oidc_issuer;
    const char *oidc_client_id;
    const char *oidc_client_secret_file;
    const char *oidc_name;     /* on the sign-in button; default: the issuer's host */
    const char *oidc_scope;    /* space-separated; default "openid profile email" */
    struct hs_strv admin_emails; /* verified e-mail addresses (any case) */
    struct hs_strv admin_groups; /* provider groups (the groups claim) */
    struct hs_strv admin_ids;    /* "<issuer>/<subject>", as headscale names a provider's user */
    const char *api_key_file;  /* the web admin's own API key: mints each OIDC session's key */
};

/* The options of headscale-webadmin (main.c's command line). */
struct webadmin_options {
    struct webadmin_config cfg;
    const char *listen;        /* a unix socket, or NULL for the socket on fd 0 */
    bool help;
};
extern const char webadmin_usage[];
/* Parses argv into o (defaults first; the strings are argv's). 0, or -EINVAL with a message
 * in err: an unknown option, a bad value, or the OIDC sign-in's options given in part. */
int webadmin_options(int argc, char **argv, struct webadmin_options *o, char *err,
                     size_t errsize);
void webadmin_options_free(struct webadmin_options *o); /* the lists */

struct wa_request {
    const char *method;        /* "GET", "POST" */
    const char *path;          /* decoded path, e.g. "/admin/nodes/3" */
    const char *query;         /* raw query string, or NULL */
    const char *cookie;        /* the Cookie header, or NULL */
    const char *content_type;  /* or NULL */
    const char *body;          /* urlencoded form; may be NULL when body_len is 0 */
    size_t body_len;
};

struct wa_response {
    int status;
    struct hs_buf headers;     /* "Name: value\r\n" lines beyond Status and Content-Type */
    struct hs_buf body;
    const char *content_type;  /* static string */
};

struct webadmin;

/* Loads and compiles every template; NULL with a message in err when one is missing or
 * refused by the template compiler. cfg's strings are copied. */
struct webadmin *webadmin_new(const struct webadmin_config *cfg, char *err, size_t errsize);
void webadmin_free(struct webadmin *wa); /* NULL is fine */

/* Answers one request. rs is initialised here; free it with wa_response_free. */
void webadmin_handle(struct webadmin *wa, const struct wa_request *rq, struct wa_response *rs);
void wa_response_free(struct wa_response *rs);

#endif
