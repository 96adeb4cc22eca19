/* The certificate's life: load the cache, obtain, renew, retry; the challenge answers. */
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acme/acme_internal.h"

#define ACCOUNT_FILE "acme_account+key" /* autocert's name */
#define ACME_MAX_CACHE_FILE (ACME_MAX_CHAIN + 8192)
#define HTTP01_PREFIX "/.well-known/acme-challenge/"
#define HTTP01_TIMEOUT_S 10
#define ACME_WALL_CHECK_S 60 /* how stale a wait for a renewal date may let the wall clock get */

struct acme {
    const struct hs_config *cfg;
    struct net_tls *tls;
    EVP_PKEY *account;
    char *cert_path; /* <cache>/<hostname> */
    bool alpn;       /* TLS-ALPN-01, else HTTP-01 */
    struct MHD_Daemon *http01;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    pthread_mutex_t mu; /* guards the two below, and the condition */
    pthread_cond_t cond;
    char *token, *key_auth; /* the HTTP-01 answer while a challenge is pending */
    atomic_uint issued;
};

unsigned acme_issued(const struct acme *a)
{
    return atomic_load(&a->issued);
}

int acme_listen_addr(const char *in, char *out, size_t size)
{
    char host[256], port[16];

    if (hs_split_host_port(in, host, sizeof(host), port, sizeof(port)) < 0)
        return -EINVAL;
    if (strcmp(port, "http") == 0)
        snprintf(port, sizeof(port), "80");
    else if (strcmp(port, "https") == 0)
        snprintf(port, sizeof(port), "443");
    if (snprintf(out, size, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port) >= (int)size)
        return -E2BIG;
    return 0;
}

/* ---- the challenge answers ---- */

/* acme_challenge_sink.publish: HTTP-01 keeps the answer for the listener; TLS-ALPN-01 puts
 * the RFC 8737 certificate into the listener's context. */
static void publish(void *arg, const char *token, const char *key_auth)
{
    struct acme *a = arg;
    struct hs_buf pem;

    if (a->alpn) {
        hs_buf_init(&pem, 16384);
        if (!token)
            net_tls_set_challenge(a->tls, NULL, 0);
        else if (acme__alpn_cert(a->cfg->tls_letsencrypt_hostname, key_auth, &pem) < 0 ||
                 net_tls_set_challenge(a->tls, pem.data, pem.len) < 0)
            log_warnx("acme: cannot make the TLS-ALPN-01 certificate");
        sodium_memzero(pem.data, pem.len);
        hs_buf_free(&pem);
        return;
    }
    pthread_mutex_lock(&a->mu);
    free(a->token);
    free(a->key_auth);
    a->token = hs_strdup(token);
    a->key_auth = hs_strdup(key_auth);
    pthread_mutex_unlock(&a->mu);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body,
                             const char *location)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                             MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
    if (location)
        MHD_add_response_header(r, "Location", location);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The HTTP-01 listener: the key authorization for the pending token, 404 for another token,
 * and, as headscale does, a redirect to server_url for anything else. */
static enum MHD_Result on_http01(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_size, void **req_cls)
{
    struct acme *a = cls;
    enum MHD_Result ret;
    char *target, *answer = NULL;

    (void)version;
    (void)upload_data;
    (void)upload_size;
    if (!hs_has_prefix(url, HTTP01_PREFIX)) {
        target = hs_aprintf("%s%s", a->cfg->server_url, *req_cls ? (char *)*req_cls : url);
        ret = reply(conn, MHD_HTTP_FOUND, "", target);
        free(target);
        return ret;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", NULL);
    pthread_mutex_lock(&a->mu);
    if (a->token && strcmp(url + strlen(HTTP01_PREFIX), a->token) == 0)
        answer = hs_strdup(a->key_auth);
    pthread_mutex_unlock(&a->mu);
    ret = answer ? reply(conn, MHD_HTTP_OK, answer, NULL)
                 : reply(conn, MHD_HTTP_NOT_FOUND, "no such challenge\n", NULL);
    free(answer);
    return ret;
}

/* The request target as sent, query included (the redirect keeps it, as headscale's); it
 * becomes the request's context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    return hs_strdup(uri);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    free(*req_cls);
    *req_cls = NULL;
}

static int start_http01(struct acme *a, int fd)
{
    a->http01 = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                                 on_http01, a, MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP01_TIMEOUT_S,
                                 MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                 MHD_OPTION_END);
    if (!a->http01) {
        log_errorx("acme: cannot serve HTTP-01 challenges on %s",
                   a->cfg->tls_letsencrypt_listen);
        close(fd);
        return -EIO;
    }
    log_info("acme: HTTP-01 challenges answered on %s", a->cfg->tls_letsencrypt_listen);
    return 0;
}

/* ---- the cache ---- */

/* The account key from the cache, or a new one written there (0600). */
static int load_account(struct acme *a)
{
    char *path = hs_aprintf("%s/%s", a->cfg->tls_letsencrypt_cache_dir, ACCOUNT_FILE), *pem;
    struct hs_buf out;
    size_t len;
    int rc;

    if ((rc = hs_read_file(path, ACME_MAX_CACHE_FILE, &pem, &len)) == 0) {
        a->account = acme__key_parse(pem, len);
        sodium_memzero(pem, len);
        free(pem);
        if (!a->account)
            log_errorx("acme: %s holds no usable EC private key", path);
        rc = a->account ? 0 : -EINVAL;
    } else if (rc == -ENOENT && (a->account = acme__key_new())) {
        hs_buf_init(&out, 4096);
        if ((rc = acme__key_pem(a->account, &out)) == 0 &&
            (rc = hs_write_file_atomic(path, out.data, out.len, 0600)) == 0)
            log_info("acme: new account key in %s", path);
        sodium_memzero(out.data, out.len);
        hs_buf_free(&out);
    }
    if (rc < 0 && a->account == NULL)
        log_errorx("acme: cannot read the account key %s: %s", path, hs_strerror(rc));
    else if (rc < 0)
        log_errorx("acme: cannot write the account key %s: %s", path, hs_strerror(rc));
    free(path);
    return rc;
}

/* When the certificate in the cache is due for renewal (Unix seconds): a third of its
 * lifetime or ACME_RENEW_BEFORE_S before it ends, whichever comes first; 0 when there is no
 * usable one. */
static int64_t cached_due(struct acme *a)
{
    int64_t nb, na, ahead;
    EVP_PKEY *key;
    char *pem;
    size_t len;

    if (hs_read_file(a->cert_path, ACME_MAX_CACHE_FILE, &pem, &len) < 0)
        return 0;
    key = acme__key_parse(pem, len);
    if (!key || acme__cert_times(pem, len, key, &nb, &na) < 0) {
        log_warnx("acme: %s is not a certificate with its key: obtaining a new one",
                  a->cert_path);
        na = nb = 0;
    }
    EVP_PKEY_free(key);
    sodium_memzero(pem, len);
    free(pem);
    ahead = (na - nb) / 3 < ACME_RENEW_BEFORE_S ? (na - nb) / 3 : ACME_RENEW_BEFORE_S;
    return na ? na - ahead : 0;
}

/* Puts the cached certificate into the listener's context when it is still valid. */
static int install_cached(struct acme *a, int64_t due)
{
    char err[512];
    int64_t now = time(NULL);

    if (!due) {
        log_info("acme: no certificate for %s yet: TLS handshakes fail until one is obtained",
                 a->cfg->tls_letsencrypt_hostname);
        return -ENOENT;
    }
    if (net_tls_reload(a->tls, a->cert_path, a->cert_path, err, sizeof(err)) < 0) {
        log_warnx("acme: cached certificate unusable: %s", err);
        return -EINVAL;
    }
    log_info("acme: certificate for %s from %s, renewal %s", a->cfg->tls_letsencrypt_hostname,
             a->cert_path, due > now ? "scheduled" : "due now");
    return 0;
}

/* ---- the worker ----
 * A renewal is due at a date (the certificate's, on the wall clock); the pauses between tries
 * are durations (on the monotonic clock), so a clock set back does not hold a retry for hours. */

/* Waits until the monotonic clock reaches at_us, or a stop; true when stopped. */
static bool wait_monotonic(struct acme *a, int64_t at_us)
{
    bool stop;

    pthread_mutex_lock(&a->mu);
    while (!(stop = atomic_load(&a->stop)))
        if (hs_cond_wait_until(&a->cond, &a->mu, at_us))
            break;
    pthread_mutex_unlock(&a->mu);
    return stop;
}

static bool pause_for(struct acme *a, int64_t seconds)
{
    return wait_monotonic(a, hs_monotonic_us() + seconds * HS_USEC_PER_SEC);
}

/* Waits until Unix time `when`, or a stop, reading the wall clock again at least every
 * ACME_WALL_CHECK_S (it may be set forward or back meanwhile); true when stopped. */
static bool wait_wall(struct acme *a, int64_t when)
{
    int64_t left;

    while ((left = when - time(NULL)) > 0)
        if (pause_for(a, left < ACME_WALL_CHECK_S ? left : ACME_WALL_CHECK_S))
            return true;
    return atomic_load(&a->stop);
}

/* One order; the result cached and put into the listener's context. */
static int renew(struct acme *a)
{
    struct acme_flow fl = {
        .directory_url = a->cfg->acme_url, .host = a->cfg->tls_letsencrypt_hostname,
        .email = a->cfg->acme_email, .challenge = a->alpn ? "tls-alpn-01" : "http-01",
        .account = a->account, .sink = { publish, a }, .stop = &a->stop,
    };
    struct hs_buf pem;
    char err[1024];
    int rc;

    hs_buf_init(&pem, ACME_MAX_CACHE_FILE);
    rc = acme__obtain(&fl, &pem, err, sizeof(err));
    if (rc == 0 && (rc = hs_write_file_atomic(a->cert_path, pem.data, pem.len, 0600)) < 0)
        snprintf(err, sizeof(err), "cannot write %s: %s", a->cert_path, hs_strerror(rc));
    if (rc == 0 && (rc = net_tls_reload(a->tls, a->cert_path, a->cert_path, err, sizeof(err))) == 0)
        atomic_fetch_add(&a->issued, 1);
    sodium_memzero(pem.data, pem.len);
    hs_buf_free(&pem);
    if (rc == 0)
        log_info("acme: new certificate for %s from %s", fl.host, fl.directory_url);
    else if (rc != -ECANCELED)
        log_errorx("acme: no certificate for %s from %s: %s", fl.host, fl.directory_url, err);
    return rc;
}

static void *worker(void *arg)
{
    struct acme *a = arg;
    int64_t due = cached_due(a), pause = ACME_RETRY_MIN_S;

    for (;;) {
        if (wait_wall(a, due))
            break;
        if (renew(a) == 0) {
            /* never sooner than the shortest pause, whatever the CA's dates say */
            if (pause_for(a, ACME_RETRY_MIN_S))
                break;
            due = cached_due(a);
            pause = ACME_RETRY_MIN_S;
            continue;
        }
        if (atomic_load(&a->stop))
            break;
        log_info("acme: trying again in %" PRId64 " s", pause);
        if (pause_for(a, pause))
            break;
        pause = pause * 2 < ACME_RETRY_MAX_S ? pause * 2 : ACME_RETRY_MAX_S;
    }
    return NULL;
}

static int cache_dir(const struct hs_config *cfg)
{
    int rc = hs_mkdir_p(cfg->tls_letsencrypt_cache_dir, 0700);

    if (rc < 0)
        log_errorx("acme: cannot make tls_letsencrypt_cache_dir %s: %s",
                   cfg->tls_letsencrypt_cache_dir, hs_strerror(rc));
    return rc;
}

int acme_start(const struct acme_deps *deps, struct acme **out)
{
    const struct hs_config *cfg = deps->cfg;
    struct acme *a = hs_xcalloc(1, sizeof(*a));
    int rc;

    a->cfg = cfg;
    a->tls = deps->tls;
    a->alpn = hs_streq(cfg->tls_letsencrypt_challenge_type, "TLS-ALPN-01");
    a->cert_path = hs_aprintf("%s/%s", cfg->tls_letsencrypt_cache_dir,
                              cfg->tls_letsencrypt_hostname);
    pthread_mutex_init(&a->mu, NULL);
    hs_cond_init_monotonic(&a->cond);
    if ((rc = cache_dir(cfg)) < 0 || (rc = load_account(a)) < 0) {
        if (deps->http_fd >= 0)
            close(deps->http_fd);
        goto fail;
    }
    install_cached(a, cached_due(a));
    if (deps->http_fd >= 0 && (rc = start_http01(a, deps->http_fd)) < 0)
        goto fail;
    if ((rc = -pthread_create(&a->thread, NULL, worker, a)) < 0) {
        log_errorx("acme: cannot start the worker: %s", hs_strerror(rc));
        goto fail;
    }
    a->running = true;
    *out = a;
    return 0;
fail:
    acme_stop(a);
    return rc;
}

void acme_stop(struct acme *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->stop, true);
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
    if (a->running)
        pthread_join(a->thread, NULL);
    if (a->http01)
        MHD_stop_daemon(a->http01);
    EVP_PKEY_free(a->account);
    free(a->token);
    free(a->key_auth);
    free(a->cert_path);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
