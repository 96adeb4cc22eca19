#include <arpa/inet.h>
#include <malloc.h>
#include <netdb.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#include "acme/acme.h"
#include "api/api.h"
#include "auth/auth.h"
#include "control/control.h"
#include "derp/derp.h"
#include "mapper/mapper.h"
#include "state/state.h"
#include "keys/keys.h"
#include "notify/notify.h"
#include "policy/policy.h"
#include "replica/replica.h"
#include "server/dns_watch.h"
#include "server/server.h"
#include "server/server_internal.h"
#include "store/store.h"

#define SERVER_HTTP_THREADS 4
#define SERVER_CONN_TIMEOUT_S 60
#define SERVER_MAX_HEADER_BYTES 16384
#define SERVER_MAX_CONNECTIONS 1000000

struct server {
    const struct hs_config *cfg;
    struct key_pair noise_key;
    struct notify_bus *bus;
    struct store *st;
    struct auth *auth;
    struct auth_oidc *oidc; /* NULL unless oidc.issuer is set */
    struct api *api;
    struct state *state;
    uint64_t loaded_seq;      /* the database's change number when the state loaded */
    struct replica *replica;  /* NULL on SQLite */
    struct derpmap *derpmap;
    struct mapper *mapper;
    struct control_service *svc;
    struct dns_watch *dns;    /* NULL unless dns.extra_records_path is set */
    struct derp_server *derp; /* NULL unless derp.server.enabled */
    /* Held by the state listener while it uses derp, and by server_stop() to free it: API
     * threads can still change nodes then. */
    pthread_mutex_t derp_mu;
    struct front *front;  /* accepts on listen_addr */
    struct net_tls *tls;  /* NULL: plain HTTP */
    struct acme *acme;    /* NULL unless tls_letsencrypt_hostname is set */
    struct MHD_Daemon *tcp, *unix_sock;
    char *unix_path;
    struct MHD_Daemon *metrics_http;  /* NULL unless metrics_listen_addr is set */
    struct server_metrics *metrics;
    struct server_debug_deps debug; /* the /debug pages beside it */
    struct reload *reload; /* SIGHUP; made once everything runs */
};

/* What the HTTP layer keeps per request between access-handler calls. */
struct request {
    struct hs_buf body;
    bool too_big;
    bool authenticated; /* the API key passed on the headers */
};

/* One listener's identity: the unix socket is trusted (no API key), TCP is not; the metrics
 * listener serves /metrics and /health only. */
struct listener {
    struct server *srv;
    bool trusted;
    bool metrics;
};

static struct listener tcp_listener, unix_listener, metrics_listener;

static void add_security_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Content-Security-Policy", "frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
}

static enum MHD_Result queue_reply(struct MHD_Connection *conn, int status, const char *ctype,
                                   struct MHD_Response *r)
{
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    add_security_headers(r);
    ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, int status, const char *ctype,
                                  const char *body, size_t len)
{
    return queue_reply(conn, status, ctype,
                       MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY));
}

/* Hands the body over instead of copying it: a node list is megabytes at thousands of nodes. */
static enum MHD_Result send_body(struct MHD_Connection *conn, int status, const char *ctype,
                                 struct hs_buf *body)
{
    size_t len = body->len;
    char *data = hs_buf_steal(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);

    if (!r)
        free(data);
    return queue_reply(conn, status, ctype, r);
}

static const char *query_lookup(void *qctx, const char *key)
{
    return MHD_lookup_connection_value(qctx, MHD_GET_ARGUMENT_KIND, key);
}

static enum MHD_Result check_utf8(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    bool *ok = cls;
    (void)kind;
    if (!hs_utf8_valid(key, strlen(key)) || (value && !hs_utf8_valid(value, strlen(value))))
        *ok = false;
    return *ok ? MHD_YES : MHD_NO;
}

static enum MHD_Result serve_api(struct listener *l, struct MHD_Connection *conn,
                                 const char *url, const char *method, struct request *rq)
{
    struct api_request req = {
        .method = method,
        .path = url,
        .query = query_lookup,
        .qctx = conn,
        .body = rq->body.data,
        .body_len = rq->body.len,
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
        .trusted = l->trusted,
        .authenticated = rq->authenticated,
    };
    struct api_response resp = { 0 };
    enum MHD_Result ret;
    bool utf8_ok = true;

    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, check_utf8, &utf8_ok);
    req.invalid_utf8 = !utf8_ok;
    api_handle(l->srv->api, &req, &resp);
    if (resp.status >= 500)
        log_warnx("api: %s %s: %d %s", method, url, resp.status, resp.body.data);
    else
        log_debug("api: %s %s: %d", method, url, resp.status);
    ret = send_body(conn, resp.status, resp.content_type, &resp.body);
    api_response_free(&resp);
    return ret;
}

/* The API key is checked on the headers, before libmicrohttpd reads any body: a refused
 * request is answered at once (*ret) and its body never held (libmicrohttpd then closes
 * the connection instead of reading on). */
static void api_gate(struct listener *l, struct MHD_Connection *conn, const char *url,
                     const char *method, struct request *rq, enum MHD_Result *ret)
{
    struct api_request req = {
        .method = method,
        .path = url,
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
        .trusted = l->trusted,
    };
    struct api_response resp = { 0 };

    rq->authenticated = api_authenticate(l->srv->api, &req, &resp);
    if (!rq->authenticated)
        *ret = send_body(conn, resp.status, resp.content_type, &resp.body);
    api_response_free(&resp);
}

static enum MHD_Result serve_health(struct server *srv, struct MHD_Connection *conn)
{
    /* headscale's body byte for byte: its JSON encoder ends it with a newline */
    static const char pass[] = "{\"status\":\"pass\"}\n", fail[] = "{\"status\":\"fail\"}\n";
    bool ok = store_ping(srv->st) == 0;

    return send_reply(conn, ok ? 200 : 500, "application/health+json; charset=utf-8",
                      ok ? pass : fail, ok ? sizeof(pass) - 1 : sizeof(fail) - 1);
}

static enum MHD_Result serve_version(struct MHD_Connection *conn)
{
    json_t *j = server_version_json();
    char *body = hs_json_dump(j, JSON_COMPACT);
    enum MHD_Result ret = send_reply(conn, 200, "application/json", body, strlen(body));

    free(body);
    json_decref(j);
    return ret;
}

static enum MHD_Result serve_key(struct server *srv, struct MHD_Connection *conn)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "v");
    uint64_t capver;
    char *body;
    enum MHD_Result ret;

    if (!v || hs_parse_u64(v, 65535, &capver) < 0)
        return send_reply(conn, 400, "text/plain", "missing or invalid ?v=\n", 23);
    body = control_key_json(control_service_control(srv->svc));
    ret = send_reply(conn, 200, "application/json", body, strlen(body));
    free(body);
    return ret;
}

/* /ts2021 and /derp upgrades are taken by the front door (front.c) before they get here;
 * what reaches this is a request that cannot be upgraded. */
static enum MHD_Result serve_ts2021(struct MHD_Connection *conn)
{
    const char *upg = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");

    if (!upg || !*upg) {
        static const char msg[] = "expected Upgrade: tailscale-control-protocol (a reverse proxy "
                                  "in front must pass the Upgrade header through)\n";
        log_info("server: /ts2021 without the Upgrade header: check the reverse proxy");
        return send_reply(conn, 500, "text/plain", msg, sizeof(msg) - 1);
    }
    log_info("server: /ts2021 with Upgrade: %.32s: not supported", upg);
    static const char msg[] = "unsupported Upgrade for /ts2021 (it must be the first request "
                              "on its connection)\n";
    return send_reply(conn, 400, "text/plain", msg, sizeof(msg) - 1);
}

static enum MHD_Result serve_derp(struct server *srv, struct MHD_Connection *conn)
{
    if (!srv->derp)
        return send_reply(conn, 404, "text/plain", "the embedded DERP server is disabled\n", 37);
    return send_reply(conn, 426, "text/plain", "DERP requires connection upgrade\n", 33);
}

/* Latency probes clients use when UDP is blocked. */
static enum MHD_Result serve_probe(struct MHD_Connection *conn)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    add_security_headers(r);
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* The addresses of one DERP host name into ips (none when it does not resolve: headscale
 * leaves such a name out). */
static void resolve_into(const char *host, json_t *out)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *a;
    json_t *ips = json_array();

    if (getaddrinfo(host, NULL, &hints, &res) == 0) {
        for (a = res; a; a = a->ai_next) {
            char txt[INET6_ADDRSTRLEN];
            const void *p = a->ai_family == AF_INET
                                ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
            if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
                inet_ntop(a->ai_family, p, txt, sizeof(txt)))
                json_array_append_new(ips, json_string(txt));
        }
        freeaddrinfo(res);
    }
    if (json_array_size(ips))
        json_object_set_new(out, host, ips);
    else
        json_decref(ips);
}

/* /bootstrap-dns (with the embedded DERP server, as headscale): every DERP host name of the
 * map with the addresses this server resolves it to, so a client whose own DNS is broken can
 * still reach its relays. */
static enum MHD_Result serve_bootstrap_dns(struct server *srv, struct MHD_Connection *conn)
{
    json_t *map = derpmap_get(srv->derpmap), *out = json_object(), *region, *node;
    const char *rid;
    enum MHD_Result ret;
    size_t i;
    char *text, *doc;

    json_object_foreach(json_object_get(map, "Regions"), rid, region) {
        json_array_foreach(json_object_get(region, "Nodes"), i, node) {
            const char *host = json_string_value(json_object_get(node, "HostName"));
            if (host && *host && !json_object_get(out, host))
                resolve_into(host, out);
        }
    }
    /* Go's JSON encoder: keys sorted, a newline after the document */
    text = hs_json_dump(out, JSON_COMPACT | JSON_SORT_KEYS);
    doc = hs_aprintf("%s\n", text);
    ret = send_reply(conn, 200, "application/json", doc, strlen(doc));
    free(doc);
    free(text);
    json_decref(out);
    json_decref(map);
    return ret;
}

/* Captive-portal check: echo a well-formed challenge. */
static enum MHD_Result serve_generate_204(struct MHD_Connection *conn)
{
    const char *ch = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Tailscale-Challenge");
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;
    char resp[96];

    if (ch && strlen(ch) <= 64 &&
        strspn(ch, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") ==
            strlen(ch)) {
        snprintf(resp, sizeof(resp), "response %s", ch);
        MHD_add_response_header(r, "X-Tailscale-Response", resp);
    }
    ret = MHD_queue_response(conn, 204, r);
    MHD_destroy_response(r);
    return ret;
}

extern const char server_register_page[]; /* templates/register.html */

static enum MHD_Result send_oidc_reply(struct MHD_Connection *conn, struct server_oidc_reply *r)
{
    size_t len = r->body.len;
    char *data = hs_buf_steal(&r->body);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, data ? data : hs_strdup(""), MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (resp && r->location)
        MHD_add_response_header(resp, "Location", r->location);
    if (resp && r->cookie)
        MHD_add_response_header(resp, "Set-Cookie", r->cookie);
    if (resp)
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    ret = queue_reply(conn, r->status, "text/html; charset=utf-8", resp);
    server_oidc_reply_free(r);
    return ret;
}

/* GET /oidc/callback?state=&code= (or error= when the provider refused). */
static enum MHD_Result serve_oidc_callback(struct server *srv, struct MHD_Connection *conn)
{
    struct server_oidc_reply r;

    if (!srv->oidc)
        return send_reply(conn, 404, "text/plain", "404 page not found\n", 19);
    server_oidc_callback(srv->oidc, query_lookup(conn, "state"), query_lookup(conn, "code"),
                         MHD_lookup_connection_value(conn, MHD_COOKIE_KIND, "hs_oidc_state"),
                         &r);
    return send_oidc_reply(conn, &r);
}

/* GET /register/<id>: with OIDC, off to the provider; otherwise the command that completes
 * this login. The id is checked to be ours (hex only) before it goes into the page. */
static enum MHD_Result serve_register(struct server *srv, struct MHD_Connection *conn,
                                      const char *id)
{
    static const char prefix[] = "hskey-authreq-";
    struct hs_buf page;
    const char *p, *mark;
    enum MHD_Result ret;

    if (!hs_has_prefix(id, prefix) || strlen(id) != sizeof(prefix) - 1 + 24 ||
        strspn(id + sizeof(prefix) - 1, "0123456789abcdef") != 24)
        return send_reply(conn, 404, "text/plain", "unknown registration\n", 21);
    if (srv->oidc) {
        struct server_oidc_reply r;
        server_oidc_register(srv->oidc, srv->cfg, id, &r);
        return send_oidc_reply(conn, &r);
    }
    hs_buf_init(&page, 1 << 16);
    for (p = server_register_page; (mark = strstr(p, "{{ID}}")); p = mark + 6) {
        hs_buf_append(&page, p, (size_t)(mark - p));
        hs_buf_puts(&page, id);
    }
    hs_buf_puts(&page, p);
    ret = send_reply(conn, 200, "text/html; charset=utf-8", page.data, page.len);
    hs_buf_free(&page);
    return ret;
}

/* A node answering an HA health probe (control/haprobe.c): the id is its credential. */
static enum MHD_Result serve_ping_response(struct server *srv, struct MHD_Connection *conn,
                                           const char *method)
{
    const char *id = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "id");

    if (strcmp(method, "HEAD") != 0)
        return send_reply(conn, 405, "text/plain", "method not allowed\n", 19);
    if (!id || !*id)
        return send_reply(conn, 400, "text/plain", "missing ping id\n", 16);
    if (!control_service_ping_answered(srv->svc, id))
        return send_reply(conn, 404, "text/plain", "unknown or expired ping\n", 24);
    return send_reply(conn, 200, "text/plain", "", 0);
}

/* Endpoints outside /api/ on the public listener. */
static enum MHD_Result serve_root(struct server *srv, struct MHD_Connection *conn,
                                  const char *url, const char *method)
{
    static const char robots[] = "User-agent: *\nDisallow: /\n";
    static const char notfound[] = "404 page not found\n";

    if (strcmp(url, "/ts2021") == 0)
        return serve_ts2021(conn);
    if (strcmp(url, "/machine/ping-response") == 0)
        return serve_ping_response(srv, conn, method);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return send_reply(conn, 405, "text/plain", "method not allowed\n", 19);
    if (strcmp(url, "/key") == 0)
        return serve_key(srv, conn);
    if (strcmp(url, "/derp") == 0)
        return serve_derp(srv, conn);
    if (strcmp(url, "/derp/probe") == 0 || strcmp(url, "/derp/latency-check") == 0)
        return serve_probe(conn);
    if (strcmp(url, "/generate_204") == 0)
        return serve_generate_204(conn);
    if (strcmp(url, "/bootstrap-dns") == 0 && srv->derp)
        return serve_bootstrap_dns(srv, conn);
    if (hs_has_prefix(url, "/register/"))
        return serve_register(srv, conn, url + strlen("/register/"));
    if (strcmp(url, "/oidc/callback") == 0)
        return serve_oidc_callback(srv, conn);
    if (strcmp(url, "/health") == 0)
        return serve_health(srv, conn);
    if (strcmp(url, "/version") == 0)
        return serve_version(conn);
    if (strcmp(url, "/swagger/v1/openapiv2.json") == 0)
        return send_reply(conn, 200, "application/json", api_openapi_document(),
                          strlen(api_openapi_document()));
    if (strcmp(url, "/robots.txt") == 0)
        return send_reply(conn, 200, "text/plain", robots, sizeof(robots) - 1);
    if (strcmp(url, "/") == 0)
        return send_reply(conn, 200, "text/html; charset=utf-8", "", 0);
    return send_reply(conn, 404, "text/plain", notfound, sizeof(notfound) - 1);
}

static enum MHD_Result serve_metrics(struct server *srv, struct MHD_Connection *conn)
{
    struct hs_buf text;
    enum MHD_Result ret;

    hs_buf_init(&text, METRICS_MAX_TEXT);
    if (server_metrics_render(srv->metrics, &text) < 0) {
        log_warnx("server: /metrics: the text passed %u bytes", METRICS_MAX_TEXT);
        hs_buf_free(&text);
        return send_reply(conn, 500, "text/plain", "metrics too large\n", 18);
    }
    ret = send_body(conn, 200, METRICS_CONTENT_TYPE, &text);
    hs_buf_free(&text);
    return ret;
}

static enum MHD_Result serve_debug(struct server *srv, struct MHD_Connection *conn,
                                   const char *url)
{
    const char *id = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "id");
    char *body = NULL;
    int status = server_debug_page(&srv->debug, url, id, &body);
    enum MHD_Result ret;

    if (!body)
        return send_reply(conn, 404, "text/plain", "404 page not found\n", 19);
    ret = send_reply(conn, status, "application/json", body, strlen(body));
    free(body);
    return ret;
}

/* Everything the metrics listener answers: no API, no client protocol. */
static enum MHD_Result serve_metrics_listener(struct server *srv, struct MHD_Connection *conn,
                                              const char *url, const char *method)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return send_reply(conn, 405, "text/plain", "method not allowed\n", 19);
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(srv, conn);
    if (strcmp(url, "/health") == 0)
        return serve_health(srv, conn);
    if (strncmp(url, "/debug/", 7) == 0)
        return serve_debug(srv, conn, url);
    return send_reply(conn, 404, "text/plain", "404 page not found\n", 19);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    struct listener *l = cls;
    struct request *rq = *req_cls;
    enum MHD_Result ret = MHD_YES;

    (void)version;
    if (l->metrics)
        return serve_metrics_listener(l->srv, conn, url, method);
    if (!rq) {
        rq = hs_xcalloc(1, sizeof(*rq));
        hs_buf_init(&rq->body, API_MAX_BODY);
        *req_cls = rq;
        if (api_handles(url))
            api_gate(l, conn, url, method, rq, &ret);
        return ret;
    }
    if (*upload_data_size) {
        /* Keep reading past the limit (and drop it) so the client gets a clean 413. */
        if (!rq->too_big && hs_buf_append(&rq->body, upload_data, *upload_data_size) < 0)
            rq->too_big = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->too_big) {
        /* api_error's shape: headscale 0.29's gateway error with RFC 7807's members. */
        static const char msg[] = "{\"code\":8,\"message\":\"request body exceeds 1 MiB\","
                                  "\"details\":[],\"type\":\"about:blank\","
                                  "\"title\":\"Payload Too Large\",\"status\":413,"
                                  "\"detail\":\"request body exceeds 1 MiB\"}";
        return send_reply(conn, 413, "application/json", msg, sizeof(msg) - 1);
    }
    if (api_handles(url))
        return serve_api(l, conn, url, method, rq);
    if (l->trusted)
        return send_reply(conn, 404, "text/plain", "404 page not found\n", 19);
    return serve_root(l->srv, conn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *req_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (rq) {
        hs_buf_free(&rq->body);
        free(rq);
        *req_cls = NULL;
    }
}

/* libmicrohttpd's own messages are about single connections (and, on the front door's
 * local sockets, TCP options that do not apply): debug detail, not operator news. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_debug("http: %s", msg);
}

/* fd < 0: no listening socket, connections come from the front door (MHD_add_connection).
 * Those are watched with poll, not epoll: the front door ends a stream with its last bytes
 * (a client that half-closed, a request refused mid-body), and libmicrohttpd's
 * edge-triggered epoll loop, having read those bytes, never sees the end that came with
 * them and waits out its timeout instead of answering or closing. Level-triggered poll sees
 * it; the front door's connections are few (API calls, probes), so poll costs nothing. */
static struct MHD_Daemon *start_daemon(struct listener *l, int fd)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | (fd < 0 ? MHD_USE_POLL : MHD_USE_EPOLL) |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC | (fd < 0 ? MHD_USE_NO_LISTEN_SOCKET : 0);
    struct MHD_OptionItem opts[] = {
        { MHD_OPTION_THREAD_POOL_SIZE, SERVER_HTTP_THREADS, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, SERVER_CONN_TIMEOUT_S, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, SERVER_MAX_HEADER_BYTES * 2, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, SERVER_MAX_CONNECTIONS, NULL },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL },
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
        { fd < 0 ? MHD_OPTION_END : MHD_OPTION_LISTEN_SOCKET, fd, NULL },
        { MHD_OPTION_END, 0, NULL },
    };

    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, l, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
}

/* The listener's certificate: from tls_cert_path and tls_key_path, or by ACME. With ACME
 * the listener starts without one (TLS-ALPN-01 needs it up to answer), and handshakes fail
 * until the first certificate is there; a cached one is there at once. */
static int start_tls(struct server *srv)
{
    const struct hs_config *cfg = srv->cfg;
    struct acme_deps deps = { .cfg = cfg, .http_fd = -1 };
    char err[512];

    if (cfg->tls_letsencrypt_hostname && *cfg->tls_letsencrypt_hostname) {
        if (!(srv->tls = deps.tls = net_tls_new_empty()))
            return -ENOMEM;
        if (!hs_streq(cfg->tls_letsencrypt_challenge_type, "TLS-ALPN-01")) {
            if (acme_listen_addr(cfg->tls_letsencrypt_listen, err, sizeof(err)) < 0) {
                log_errorx("server: tls_letsencrypt_listen \"%s\" is not host:port",
                           cfg->tls_letsencrypt_listen);
                return -EINVAL;
            }
            if ((deps.http_fd = listen_tcp(err)) < 0)
                return deps.http_fd;
        }
        return acme_start(&deps, &srv->acme);
    }
    if (cfg->tls_cert_path && *cfg->tls_cert_path &&
        !(srv->tls = net_tls_new(cfg->tls_cert_path, cfg->tls_key_path, err, sizeof(err)))) {
        log_errorx("server: cannot load tls_cert_path/tls_key_path: %s", err);
        return -EINVAL;
    }
    return 0;
}

static int start_tcp(struct server *srv)
{
    const struct hs_config *cfg = srv->cfg;
    struct front_deps deps = { .listen_fd = -1 };
    struct hs_keepalive ka;
    int rc;

    if ((rc = start_tls(srv)) < 0)
        return rc;
    tcp_listener = (struct listener){ .srv = srv, .trusted = false };
    if (!(srv->tcp = start_daemon(&tcp_listener, -1))) {
        log_errorx("server: cannot start the HTTP server");
        return -EIO;
    }
    if ((deps.listen_fd = listen_tcp(cfg->listen_addr)) < 0)
        return deps.listen_fd;
    /* Map streams and DERP connections idle for minutes: without keep-alives a client whose
     * network vanished would hold its stream, and look online, for the kernel's 15 minutes
     * of retransmissions. Accepted sockets inherit these. */
    hs_keepalive_for(cfg->tuning_unreachable_client_timeout_us, &ka);
    if ((rc = hs_keepalive_set(deps.listen_fd, &ka)) < 0)
        log_warnx("server: cannot set TCP keep-alives on %s: %s", cfg->listen_addr,
                  hs_strerror(rc));
    deps.tls = srv->tls;
    deps.control = control_service_control(srv->svc);
    deps.derp = srv->derp;
    deps.mhd = srv->tcp;
    deps.request_us = cfg->tuning_http_request_timeout_us;
    deps.max_conns = (unsigned)cfg->tuning_http_max_connections;
    deps.max_conns_per_ip = (unsigned)cfg->tuning_http_max_connections_per_ip;
    deps.trusted_proxies = &cfg->trusted_proxies;
    if ((rc = front_start(&deps, &srv->front)) < 0)
        return rc;
    log_info("server: listening on %s (%s), server_url %s", cfg->listen_addr,
             srv->tls ? "https" : "http", cfg->server_url);
    return 0;
}

static int start_unix(struct server *srv)
{
    int fd = listen_unix(srv->cfg->unix_socket, srv->cfg->unix_socket_permission);

    if (fd < 0)
        return fd;
    srv->unix_path = hs_strdup(srv->cfg->unix_socket);
    unix_listener = (struct listener){ .srv = srv, .trusted = true };
    if (!(srv->unix_sock = start_daemon(&unix_listener, fd))) {
        log_errorx("server: cannot serve the unix socket %s", srv->unix_path);
        close(fd);
        return -EIO;
    }
    log_info("server: CLI socket %s (mode %03o)", srv->unix_path,
             srv->cfg->unix_socket_permission);
    return 0;
}

/* metrics_listen_addr: /metrics and /health on a listener of their own, plain HTTP, meant
 * for a monitoring network (as headscale's). */
static int start_metrics(struct server *srv)
{
    const char *addr = srv->cfg->metrics_listen_addr;
    struct server_metrics_deps deps = { .svc = srv->svc, .state = srv->state, .store = srv->st,
                                        .replica = srv->replica, .auth = srv->auth,
                                        .derp = srv->derp };
    int fd;

    if (!addr || !*addr)
        return 0;
    if ((fd = listen_tcp(addr)) < 0)
        return fd;
    srv->metrics = server_metrics_new(&deps);
    srv->debug = (struct server_debug_deps){ .cfg = srv->cfg, .svc = srv->svc,
                                             .state = srv->state, .derpmap = srv->derpmap,
                                             .replica = srv->replica };
    metrics_listener = (struct listener){ .srv = srv, .metrics = true };
    if (!(srv->metrics_http = start_daemon(&metrics_listener, fd))) {
        log_errorx("server: cannot serve metrics on %s", addr);
        close(fd);
        return -EIO;
    }
    log_info("server: metrics on http://%s/metrics", addr);
    return 0;
}

/* The policy in force: the file of policy.path (or the legacy acl_policy_path) in file mode,
 * the newest stored row in database mode. At start it must load and compile for the nodes
 * there are: a broken policy would otherwise surface only when a client connects. */
static int load_policy(struct server *srv)
{
    const struct hs_config *cfg = srv->cfg;
    char err[1024];
    int rc;

    state_set_server_url(srv->state, cfg->server_url);
    if (cfg->policy_mode == POLICY_MODE_DATABASE)
        state_policy_source(srv->state, STATE_POLICY_STORE, NULL);
    else
        state_policy_source(srv->state, STATE_POLICY_FILE, cfg->policy_path);
    if ((rc = state_policy_load(srv->state, err, sizeof(err))) < 0)
        log_errorx("policy: %s", err);
    return rc;
}

/* Tags a registering node asks for, against the policy in force (auth_set_tag_check). */
static bool tag_check(void *arg, uint64_t user_id, const char *tag)
{
    struct server *srv = arg;

    return state_policy_tag_allowed(srv->state, user_id, tag);
}

/* New extra records from the file reach every client as a DNSConfig of their own (settings
 * saved through the API go the state's way: STATE_DNS_CHANGED). */
static void on_dns_change(void *arg)
{
    struct server *srv = arg;
    control_service_dns_changed(srv->svc);
}

/* A refreshed DERP map reaches every client through a full map. */
static void on_derpmap_change(void *arg)
{
    struct server *srv = arg;
    control_service_resync(srv->svc);
}

static void server_stop(struct server *srv)
{
    MHD_socket fd;

    /* Metrics read everything below: they go first. Then stop accepting, close the control
     * and DERP connections (nothing hands them new ones any more), and only then stop MHD. */
    reload_free(srv->reload);
    srv->reload = NULL;
    if (srv->metrics_http)
        MHD_stop_daemon(srv->metrics_http);
    server_metrics_free(srv->metrics);
    front_stop(srv->front);
    srv->front = NULL;
    if (srv->unix_sock && (fd = MHD_quiesce_daemon(srv->unix_sock)) != MHD_INVALID_SOCKET)
        close(fd);
    replica_stop(srv->replica); /* its changes reach the service through the state */
    derpmap_stop(srv->derpmap); /* its refresher calls into the service */
    dns_watch_free(srv->dns);   /* so does the extra records watcher */
    srv->dns = NULL;
    control_service_free(srv->svc);
    srv->svc = NULL;
    pthread_mutex_lock(&srv->derp_mu);
    derp_server_free(srv->derp);
    srv->derp = NULL;
    pthread_mutex_unlock(&srv->derp_mu);
    if (srv->tcp)
        MHD_stop_daemon(srv->tcp);
    acme_stop(srv->acme);
    net_tls_free(srv->tls);
    if (srv->unix_sock)
        MHD_stop_daemon(srv->unix_sock);
    if (srv->unix_path) {
        unlink(srv->unix_path);
        free(srv->unix_path);
    }
    mapper_free(srv->mapper);
    derpmap_free(srv->derpmap);
    state_free(srv->state);
    replica_free(srv->replica); /* the state called into it until now */
    api_free(srv->api);
    auth_oidc_free(srv->oidc);
    auth_free(srv->auth);
    store_close(srv->st);
    notify_free(srv->bus);
    pthread_mutex_destroy(&srv->derp_mu);
    memset(&srv->noise_key, 0, sizeof(srv->noise_key));
}

/* verify_clients: the relay admits the node keys of this tailnet that have not expired. */
static uint64_t derp_key_node(void *arg, const uint8_t key[DERP_KEY_LEN])
{
    struct server *srv = arg;
    const struct state_node *n;
    uint64_t id = 0;

    state_rdlock(srv->state);
    n = state_node_by_nodekey(srv->state, key);
    if (n && !(n->n.expiry && n->n.expiry <= hs_now_us()))
        id = n->n.id;
    state_unlock(srv->state);
    return id;
}

/* A node deleted, expired (by an admin, a logout, or its expiry passing: state_check_expiry
 * reports those as changes) or given a new node key loses its relay connections: the relay
 * asks derp_key_node again. Changes reach us through the state, so a deletion on another
 * replica does too once the bus carries it. */
static void derp_on_state_change(void *arg, const struct state_change *ch)
{
    struct server *srv = arg;

    if (ch->kind != STATE_NODE_REMOVED &&
        !(ch->kind == STATE_NODE_CHANGED && (ch->fields & (STATE_F_OTHER | STATE_F_NODE_KEY))))
        return;
    pthread_mutex_lock(&srv->derp_mu);
    if (srv->derp)
        derp_server_recheck(srv->derp, ch->id);
    pthread_mutex_unlock(&srv->derp_mu);
}

static int build_derp(struct server *srv)
{
    const struct hs_config *cfg = srv->cfg;
    int rc;

    if (!cfg->derp_server_enabled)
        return 0;
    if ((rc = derp_server_new(cfg, &srv->derp)) < 0)
        return rc;
    derp_server_set_verifier(srv->derp, derp_key_node, srv);
    if (cfg->derp_server_verify_clients)
        state_listen(srv->state, derp_on_state_change, srv);
    else
        log_info("derp: verify_clients is off: any client may relay through the embedded "
                 "server, including deleted and expired nodes");
    if (cfg->derp_server_auto_add_region)
        derpmap_set_embedded(srv->derpmap, derp_server_region(srv->derp, cfg));
    return 0;
}

static int build_oidc(struct server *srv)
{
    char why[512];
    int rc = auth_oidc_new(srv->cfg, srv->auth, &srv->oidc, why, sizeof(why));

    if (rc < 0)
        log_errorx("server: OIDC: %s; not starting%s", why,
                   hs_has_prefix(why, "oidc.") ? ""
                   : " (oidc.only_start_if_oidc_is_available is on: set it to false to start "
                     "anyway and retry at each login)");
    return rc;
}

/* Everything `serve` and `configtest` share: key, database, migrations, policy. */
static int server_build(struct server *srv, const struct hs_config *cfg)
{
    int rc;

    *srv = (struct server){ .cfg = cfg };
    pthread_mutex_init(&srv->derp_mu, NULL);
    log_set_level(cfg->log_level);
    log_set_json(cfg->log_json);
    if ((rc = keys_load_or_create(cfg->noise_private_key_path, &srv->noise_key)) < 0) {
        log_errorx("server: noise.private_key_path %s: %s", cfg->noise_private_key_path,
                   rc == -EINVAL ? "not a private key (expected privkey:<64 hex>)"
                                 : hs_strerror(rc));
        return rc;
    }
    srv->bus = notify_new();
    if ((rc = store_open(cfg, srv->bus, &srv->st)) < 0) {
        log_errorx("server: cannot open the %s database: %s",
                   cfg->db_type == DB_POSTGRES ? "postgres" : "sqlite", hs_strerror(rc));
        return rc;
    }
    if ((rc = auth_new(cfg, srv->st, &srv->auth)) < 0) {
        log_errorx("server: cannot read the credential secret: %s", hs_strerror(rc));
        return rc;
    }
    if (*cfg->oidc_issuer && (rc = build_oidc(srv)) < 0)
        return rc;
    if ((rc = store_change_seq(srv->st, &srv->loaded_seq)) < 0 ||
        (rc = state_new(srv->st, srv->bus, &srv->state)) < 0) {
        log_errorx("server: cannot load nodes and users: %s", hs_strerror(rc));
        return rc;
    }
    state_set_write_interval(srv->state, cfg->tuning_node_write_interval_us);
    if ((rc = load_policy(srv)) < 0)
        return rc;
    if ((rc = state_dns_configure(srv->state, cfg)) < 0) {
        log_errorx("server: cannot read the DNS settings: %s", hs_strerror(rc));
        return rc;
    }
    auth_set_tag_check(srv->auth, tag_check, srv);
    if ((rc = auth_adopt_requested_tags(srv->auth)) < 0) {
        log_errorx("server: cannot tag the nodes imported from headscale 0.22.3: %s",
                   hs_strerror(rc));
        return rc;
    }
    srv->api = api_new(cfg, srv->st, srv->auth, srv->state);
    if ((rc = derpmap_new(cfg, &srv->derpmap)) < 0)
        return rc;
    api_set_derpmap(srv->api, srv->derpmap);
    srv->mapper = mapper_new(cfg, srv->derpmap);
    if (*cfg->dns_extra_records_path &&
        (rc = dns_watch_new(cfg->dns_extra_records_path, srv->mapper, &srv->dns)) < 0)
        return rc;
    struct control_service_deps deps = { .cfg = cfg, .auth = srv->auth,
                                         .state = srv->state, .mapper = srv->mapper,
                                         .noise_key = &srv->noise_key };
    if ((rc = control_service_new(&deps, &srv->svc)) < 0)
        return rc;
    derpmap_set_listener(srv->derpmap, on_derpmap_change, srv);
    return build_derp(srv);
}

int server_configtest(const struct hs_config *cfg)
{
    struct server srv;
    int rc = server_build(&srv, cfg);

    server_stop(&srv);
    if (rc == 0)
        log_info("configtest: configuration is valid");
    return rc == 0 ? 0 : 1;
}

/* The signals the main thread waits for: shutdown, and SIGHUP. */
static void server_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGQUIT);
    sigaddset(set, SIGHUP);
}

static int wait_for_signal(struct server *srv)
{
    sigset_t set;
    int sig;

    server_signals(&set);
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            return -1;
        if (sig == SIGHUP) {
            reload_run(srv->reload);
            continue;
        }
        return sig;
    }
}

static void start_reload(struct server *srv)
{
    struct reload_deps deps = {
        .cfg = srv->cfg, .state = srv->state, .derpmap = srv->derpmap, .derp = srv->derp,
        .tls = srv->acme ? NULL : srv->tls, /* ACME renews its own */
        .mapper = srv->mapper, .svc = srv->svc, .dns = &srv->dns,
        .dns_changed = on_dns_change, .dns_arg = srv,
    };

    srv->reload = reload_new(&deps);
}

/* glibc gives each thread its own heap arena and keeps what was freed in it; the bursts of a
 * connect storm (full maps of megabytes on several threads) then stay resident for good.
 * Few arenas, large buffers in their own mappings, and a low trim threshold keep RSS close
 * to what is live. The map thread also trims periodically (control/service.c). */
static void tune_malloc(void)
{
    mallopt(M_ARENA_MAX, 2);
    mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024);
}

/* Every client holds a socket: take the whole hard limit on descriptors, as Go programs
 * (headscale) do by default, instead of the usual soft limit of 1024. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("server: cannot raise the descriptor limit");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_info("server: up to %llu open descriptors", (unsigned long long)rl.rlim_cur);
}

/* SQLite serves one process; replicas share PostgreSQL. */
static int claim_database(struct server *srv)
{
    int rc = store_claim(srv->st);

    if (rc == -EBUSY)
        log_errorx("server: the SQLite database %s is in use by another headscale serve; "
                   "SQLite serves one process (replicas share a PostgreSQL database)",
                   srv->cfg->sqlite_path);
    else if (rc < 0)
        log_errorx("server: cannot lock the SQLite database %s: %s", srv->cfg->sqlite_path,
                   hs_strerror(rc));
    return rc;
}

static void on_mesh_peers(void *arg, const struct hs_strv *urls)
{
    derp_server_mesh_peers(arg, urls);
}

/* Where the other replicas dial our relay for the mesh: derp.server.mesh_url, or else our
 * listener's port at the address PostgreSQL sees us connect from (loopback over a unix
 * socket), which the replicas sharing that database can usually reach. NULL: none offered
 * (TLS on the listener without mesh_url, since a certificate is rarely valid for a bare
 * address). */
static char *mesh_url(struct server *srv)
{
    const struct hs_config *cfg = srv->cfg;
    char host[256], port[16], addr[64] = "";

    if (*cfg->derp_server_mesh_url)
        return hs_strdup(cfg->derp_server_mesh_url);
    if (*cfg->tls_cert_path || *cfg->tls_letsencrypt_hostname) {
        log_warnx("server: this replica serves TLS itself: set derp.server.mesh_url to a URL "
                  "its certificate is valid for, so that the other replicas can mesh with its "
                  "DERP relay (none offered now)");
        return NULL;
    }
    if (hs_split_host_port(cfg->listen_addr, host, sizeof(host), port, sizeof(port)) < 0)
        return NULL;
    if (!host[0] || hs_streq(host, "0.0.0.0") || hs_streq(host, "::")) {
        if (store_client_addr(srv->st, addr, sizeof(addr)) < 0 || !addr[0])
            snprintf(addr, sizeof(addr), "127.0.0.1");
        snprintf(host, sizeof(host), "%s", addr);
    }
    if (strchr(host, ':'))
        return hs_aprintf("http://[%s]:%s/derp", host, port);
    return hs_aprintf("http://%s:%s/derp", host, port);
}

/* Replicas on PostgreSQL: the feed, presence, and the DERP mesh with the others found in the
 * database. */
static int start_replica(struct server *srv)
{
    struct replica_mesh mesh = { 0 };
    int rc;

    /* A relay with a mesh key, on a database replicas share. */
    if (srv->derp && derp_server_meshes(srv->derp) && store_shared(srv->st)) {
        mesh.url = mesh_url(srv);
        mesh.peers = on_mesh_peers;
        mesh.arg = srv->derp;
    }
    if (mesh.url)
        log_info("server: this replica's DERP relay is offered to the others at %s", mesh.url);
    rc = replica_start(srv->st, srv->bus, srv->state, srv->loaded_seq, &mesh, &srv->replica);
    free((char *)mesh.url);
    return rc;
}

int server_run(const struct hs_config *cfg)
{
    struct server srv;
    sigset_t set;
    int sig;

    /* Block the shutdown signals before any thread starts, so only sigwait sees them. */
    server_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    tune_malloc();

    if (server_build(&srv, cfg) < 0 || claim_database(&srv) < 0 ||
        start_replica(&srv) < 0 ||
        control_service_start(srv.svc) < 0 ||
        (srv.derp && derp_server_start(srv.derp) < 0) ||
        derpmap_start(srv.derpmap) < 0 ||
        (srv.dns && dns_watch_start(srv.dns, on_dns_change, &srv) < 0) ||
        /* metrics first: whoever sees the server answer (health on the main listener) can
         * scrape it at once */
        start_metrics(&srv) < 0 || start_unix(&srv) < 0 || start_tcp(&srv) < 0) {
        server_stop(&srv);
        return 1;
    }
    start_reload(&srv);
    log_info("headscale %s started (database %s)", HS_VERSION, store_backend_name(srv.st));
    sig = wait_for_signal(&srv);
    log_info("server: signal %d: shutting down", sig);
    server_stop(&srv);
    return 0;
}
