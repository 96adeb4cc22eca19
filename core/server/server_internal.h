/* Shared between the server/ source files only. */
#ifndef HS_SERVER_INTERNAL_H
#define HS_SERVER_INTERNAL_H

#include <microhttpd.h>

#include "auth/auth.h"
#include "control/control.h"
#include "derp/derp.h"
#include "metrics/metrics.h"
#include "net/net.h"
#include "util/util.h"

/* Returns a listening socket, or a negative errno (logged). */
int listen_tcp(const char *addr);
int listen_unix(const char *path, unsigned mode);

/* The front door of the TCP listener (front.c): it accepts, terminates TLS, and sends
 * /ts2021 and /derp upgrades to their loops and every other request to mhd, checking the
 * framing of each. The limits bound connections it holds (being set up, reading a head, or
 * carrying HTTP requests), never the streams it handed on. */
struct front_deps {
    int listen_fd;            /* owned by the front door from front_start() on */
    struct net_tls *tls;      /* NULL for plain HTTP */
    struct control *control;
    struct derp_server *derp; /* NULL when the embedded DERP server is off */
    struct MHD_Daemon *mhd;   /* started without a listening socket */
    int64_t request_us;       /* a request's head and body arrive within this */
    unsigned max_conns;       /* in total */
    unsigned max_conns_per_ip; /* 0: no cap */
    const struct hs_strv *trusted_proxies; /* not capped per address; read at start only */
};
struct front;
int front_start(const struct front_deps *deps, struct front **out);
/* Stops accepting and closes what it has not handed on; before the loops and mhd stop. */
void front_stop(struct front *f);


/* /metrics on metrics_listen_addr (server_metrics.c). The deps must outlive the metrics
 * listener: stop it before freeing them. */
struct server_metrics_deps {
    struct control_service *svc;
    struct state *state;
    struct store *store;
    struct replica *replica; /* NULL on SQLite */
    struct auth *auth;
    struct derp_server *derp; /* NULL when the embedded DERP server is off */
};
struct server_metrics;
struct server_metrics *server_metrics_new(const struct server_metrics_deps *d);
void server_metrics_free(struct server_metrics *sm); /* NULL is fine */
/* The exposition text (metrics.h) appended to out; any thread. */
int server_metrics_render(struct server_metrics *sm, struct hs_buf *out);

/* /debug/overview, /debug/batcher, /debug/derp (headscale's) and /debug/node?id=N (ours) on
 * the metrics listener (server_debug.c). The deps must outlive the listener. */
struct server_debug_deps {
    const struct hs_config *cfg;
    struct control_service *svc;
    struct state *state;
    struct derpmap *derpmap;
    struct replica *replica; /* NULL on SQLite */
};
/* The page at path as JSON in *body (the caller's to free) and its HTTP status; 404 and
 * *body untouched for a path that is no page. id: the query's id argument, or NULL. Any
 * thread. */
int server_debug_page(const struct server_debug_deps *d, const char *path, const char *id,
                      char **body);

/* SIGHUP (reload.c): the config file read again and what can change while serving put in
 * force; see there. Runs on the thread that waits for signals; the deps outlive it. */
struct dns_watch;
struct reload_deps {
    const struct hs_config *cfg; /* the configuration the server runs with */
    struct state *state;
    struct derpmap *derpmap;
    struct derp_server *derp; /* NULL unless derp.server.enabled */
    struct net_tls *tls;      /* NULL: plain HTTP */
    struct mapper *mapper;
    struct control_service *svc;
    struct dns_watch **dns;   /* NULL inside: no extra records file; a new path replaces it */
    void (*dns_changed)(void *arg);
    void *dns_arg;
};
struct reload;
struct reload *reload_new(const struct reload_deps *d);
void reload_run(struct reload *r);
void reload_free(struct reload *r); /* NULL is fine */

/* The OIDC login's pages (server_oidc.c): what to answer, as the HTTP layer sends it. */
struct server_oidc_reply {
    int status;
    char *location;      /* a redirect's target, or NULL */
    char *cookie;        /* a Set-Cookie value, or NULL */
    struct hs_buf body;  /* HTML */
};
/* GET /register/<id> with OIDC on: off to the provider, or a page saying why not. */
void server_oidc_register(struct auth_oidc *o, const struct hs_config *cfg, const char *id,
                          struct server_oidc_reply *r);
/* GET /oidc/callback: the page saying how the login ended. */
void server_oidc_callback(struct auth_oidc *o, const char *state, const char *code,
                          const char *cookie, struct server_oidc_reply *r);
void server_oidc_reply_free(struct server_oidc_reply *r);

#endif
