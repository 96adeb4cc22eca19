/* headscale-webadmin: the FastCGI loop around webadmin_handle. It listens on the socket it is
 * given as fd 0 (cgi-fcgi -start, spawn-fcgi, systemd with StandardInput=socket) or on
 * --listen PATH, and answers one request at a time. */
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "webadmin/webadmin.h"

/* The body of a POST, up to WA_MAX_BODY; false when it is larger (not read then). */
static bool read_body(FCGX_Request *req, struct hs_buf *body)
{
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", req->envp);
    uint64_t len = 0;
    char chunk[4096];
    int n;

    if (cl && *cl && hs_parse_u64(cl, WA_MAX_BODY, &len) < 0)
        return false;
    while (body->len < len && (n = FCGX_GetStr(chunk, sizeof(chunk), req->in)) > 0)
        if (hs_buf_append(body, chunk, (size_t)n) < 0)
            return false;
    return true;
}

static void write_response(FCGX_Request *req, const struct wa_response *rs)
{
    /* libfcgi's printf knows no %zu */
    FCGX_FPrintF(req->out, "Status: %d\r\nContent-Type: %s\r\nContent-Length: %lu\r\n",
                 rs->status, rs->content_type, (unsigned long)rs->body.len);
    FCGX_PutStr(rs->headers.data ? rs->headers.data : "", (int)rs->headers.len, req->out);
    FCGX_PutS("\r\n", req->out);
    FCGX_PutStr(rs->body.data ? rs->body.data : "", (int)rs->body.len, req->out);
}

static void serve(struct webadmin *wa, FCGX_Request *req)
{
    struct wa_request rq = {
        .method = FCGX_GetParam("REQUEST_METHOD", req->envp),
        .path = FCGX_GetParam("DOCUMENT_URI", req->envp),
        .query = FCGX_GetParam("QUERY_STRING", req->envp),
        .cookie = FCGX_GetParam("HTTP_COOKIE", req->envp),
        .content_type = FCGX_GetParam("CONTENT_TYPE", req->envp),
    };
    struct wa_response rs;
    struct hs_buf body;

    hs_buf_init(&body, WA_MAX_BODY);
    if (!rq.method || !rq.path) {
        FCGX_PutS("Status: 500\r\nContent-Type: text/plain\r\n\r\nnginx passed no "
                  "REQUEST_METHOD or DOCUMENT_URI (include fastcgi_params)\n", req->out);
    } else if (!read_body(req, &body)) {
        FCGX_PutS("Status: 413\r\nContent-Type: text/plain\r\n\r\nThe form is too large.\n",
                  req->out);
    } else {
        rq.body = body.data;
        rq.body_len = body.len;
        webadmin_handle(wa, &rq, &rs);
        write_response(req, &rs);
        wa_response_free(&rs);
    }
    sodium_memzero(body.data ? body.data : (char *)"", body.len);
    hs_buf_free(&body);
}

static int listen_fd;

/* SIGTERM: stop accepting, so that the loop ends and the program exits cleanly. */
static void on_term(int sig)
{
    (void)sig;
    FCGX_ShutdownPending();
    shutdown(listen_fd, SHUT_RDWR);
}

static int listen_socket(const char *path)
{
    int fd;

    if (!path)
        return 0;
    unlink(path);
    fd = FCGX_OpenSocket(path, 64);
    if (fd < 0 || chmod(path, 0660) < 0) {
        log_warn("webadmin: cannot listen on %s", path);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct webadmin_options o;
    struct webadmin *wa;
    FCGX_Request req;
    char err[512];
    int fd;

    if (webadmin_options(argc, argv, &o, err, sizeof(err)) < 0) {
        fprintf(stderr, "headscale-webadmin: %s\n", err);
        return 2;
    }
    if (o.help) {
        fputs(webadmin_usage, stdout);
        webadmin_options_free(&o);
        return 0;
    }
    if (sodium_init() < 0 || FCGX_Init() != 0)
        log_fatalx("webadmin: libsodium or libfcgi did not start");
    if (!(wa = webadmin_new(&o.cfg, err, sizeof(err))))
        log_fatalx("webadmin: %s", err);
    if ((fd = listen_socket(o.listen)) < 0)
        return 1;
    listen_fd = fd;
    sigaction(SIGTERM, &(struct sigaction){ .sa_handler = on_term }, NULL); /* no SA_RESTART */
    FCGX_InitRequest(&req, fd, 0);
    log_info("webadmin: serving %s for %s%s%s", o.cfg.base_path, o.cfg.server_url,
             o.cfg.oidc_issuer ? ", administrators also sign in through " : "",
             o.cfg.oidc_issuer ? o.cfg.oidc_issuer : "");
    while (FCGX_Accept_r(&req) >= 0) {
        serve(wa, &req);
        FCGX_Finish_r(&req);
    }
    webadmin_free(wa);
    webadmin_options_free(&o);
    return 0;
}
