/* The CLI's transport: HTTP/1.1 over the server's unix socket (local trust, no API key) or
 * HTTPS to cli.address with "Authorization: Bearer <cli.api_key>", via libcurl. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"

#define CLI_RETRY_MIN_US (50 * 1000)
#define CLI_RETRY_MAX_US HS_USEC_PER_SEC

struct cli_http {
    CURL *curl;
    char *base;   /* "http://localhost" for the socket, else the remote base URL */
    char *socket; /* NULL in remote mode */
    struct curl_slist *headers;
    int64_t timeout_us;
    char refused[1200]; /* why the socket was not trusted, "" when it was */
};

char *cli_base_url(const char *address)
{
    size_t n = strlen(address);

    while (n > 0 && address[n - 1] == '/')
        n--;
    if (strstr(address, "://"))
        return hs_strndup(address, n);
    return hs_aprintf("https://%.*s", (int)n, address);
}

static void http_headers(struct cli_http *h, const char *api_key)
{
    char *auth;

    h->headers = curl_slist_append(h->headers, "Accept: application/json");
    h->headers = curl_slist_append(h->headers, "Content-Type: application/json");
    if (api_key) {
        auth = hs_aprintf("Authorization: Bearer %s", api_key);
        h->headers = curl_slist_append(h->headers, auth);
        free(auth);
    }
}

/* Checked before connecting, so a permission problem is named as such. */
static int socket_check(const char *path, char *err, size_t errsize)
{
    if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) < 0 && errno == EACCES) {
        snprintf(err, errsize,
                 "no permission to use the headscale socket \"%s\": run as the server's "
                 "user or a member of its group",
                 path);
        return -EACCES;
    }
    return 0;
}

/* Called once connected, before the request goes out. Anyone who can write a directory on
 * the socket's path could have put their own server there, one that reads the request and
 * answers with made-up data; the server refuses to start in such a place, and so does the
 * CLI refuse to talk there. The socket may belong to any user (the server may run as a
 * service user the CLI does not know) as long as no one else could have put it there. */
static int socket_vet(void *arg, char *primary_ip, char *local_ip, int primary_port,
                      int local_port)
{
    struct cli_http *h = arg;
    char why[1024];
    int v = hs_path_trust(h->socket, 0, why, sizeof(why));

    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (v == HS_PATH_UNSAFE)
        snprintf(h->refused, sizeof(h->refused),
                 "refusing the headscale socket \"%s\": %s, so another user could have put "
                 "their own server there", h->socket, why);
    else if (v < 0)
        snprintf(h->refused, sizeof(h->refused),
                 "refusing the headscale socket \"%s\": cannot examine its directories: %s",
                 h->socket, hs_strerror(v));
    else
        return CURL_PREREQFUNC_OK;
    return CURL_PREREQFUNC_ABORT;
}

static int http_mode(struct cli_http *h, const struct hs_config *cfg, char *err, size_t errsize)
{
    if (cfg->cli_address && *cfg->cli_address) {
        if (!cfg->cli_api_key || !*cfg->cli_api_key) {
            snprintf(err, errsize, "talking to a remote server (cli.address) takes an API key: set "
                     "HEADSCALE_CLI_API_KEY or cli.api_key");
            return -EINVAL;
        }
        h->base = cli_base_url(cfg->cli_address);
        http_headers(h, cfg->cli_api_key);
        if (cfg->cli_insecure) {
            curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYPEER, 0L);
            curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        return 0;
    }
    if (!cfg->unix_socket || !*cfg->unix_socket) {
        snprintf(err, errsize, "unix_socket is not set in the configuration");
        return -EINVAL;
    }
    h->socket = hs_strdup(cfg->unix_socket);
    h->base = hs_strdup("http://localhost");
    http_headers(h, NULL);
    curl_easy_setopt(h->curl, CURLOPT_UNIX_SOCKET_PATH, h->socket);
    curl_easy_setopt(h->curl, CURLOPT_PREREQFUNCTION, socket_vet);
    curl_easy_setopt(h->curl, CURLOPT_PREREQDATA, h);
    return socket_check(h->socket, err, errsize);
}

int cli_http_open(const struct hs_config *cfg, struct cli_http **out, char *err, size_t errsize)
{
    struct cli_http *h = hs_xcalloc(1, sizeof(*h));
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!(h->curl = curl_easy_init())) {
        free(h);
        snprintf(err, errsize, "cannot initialise libcurl");
        return -ENOMEM;
    }
    h->timeout_us = cfg->cli_timeout_us > 0 ? cfg->cli_timeout_us : 5 * HS_USEC_PER_SEC;
    if ((rc = http_mode(h, cfg, err, errsize)) < 0) {
        cli_http_close(h);
        return rc;
    }
    *out = h;
    return 0;
}

void cli_http_close(struct cli_http *h)
{
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    free(h->base);
    free(h->socket);
    free(h);
}

static size_t http_sink(char *p, size_t size, size_t n, void *data)
{
    return hs_buf_append(data, p, size * n) == 0 ? size * n : 0;
}

static void http_prepare(struct cli_http *h, const char *method, const char *url,
                         const char *body, struct hs_buf *resp, char *errbuf)
{
    CURL *c = h->curl;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L); /* resets POST state from an earlier request */
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") ? method : NULL);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
    }
}

static bool unreachable(CURLcode cc)
{
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST;
}

static void http_error(struct cli_http *h, CURLcode cc, const char *errbuf, char *err,
                       size_t errsize)
{
    long oserr = 0;

    curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &oserr);
    if (cc == CURLE_ABORTED_BY_CALLBACK && h->refused[0])
        snprintf(err, errsize, "%s", h->refused);
    else if (h->socket && oserr == EACCES)
        snprintf(err, errsize,
                 "no permission to use the headscale socket \"%s\": run as the server's "
                 "user or a member of its group",
                 h->socket);
    else if (cc == CURLE_OPERATION_TIMEDOUT)
        snprintf(err, errsize,
                 "headscale at %s did not answer within %.3g s (cli.timeout): the server is "
                 "busy or stuck; the request may still take effect",
                 h->socket ? h->socket : h->base, (double)h->timeout_us / HS_USEC_PER_SEC);
    else if (h->socket && unreachable(cc))
        snprintf(err, errsize, "cannot reach headscale at %s: is \"headscale serve\" running?",
                 h->socket);
    else if (unreachable(cc))
        snprintf(err, errsize, "cannot reach headscale at %s: %s", h->base,
                 *errbuf ? errbuf : curl_easy_strerror(cc));
    else
        snprintf(err, errsize, "request to %s failed: %s", h->socket ? h->socket : h->base,
                 *errbuf ? errbuf : curl_easy_strerror(cc));
}

static void sleep_us(int64_t us)
{
    struct timespec ts = { .tv_sec = us / HS_USEC_PER_SEC, .tv_nsec = (us % HS_USEC_PER_SEC) * 1000 };
    nanosleep(&ts, NULL);
}

/* Local mode: a refused or missing socket is retried with backoff until the deadline. */
static CURLcode http_perform(struct cli_http *h, int64_t deadline)
{
    int64_t delay = CLI_RETRY_MIN_US, left;
    long oserr = 0;
    CURLcode cc;

    for (;;) {
        left = deadline - hs_monotonic_us();
        curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)(left > 1000 ? left / 1000 : 1));
        cc = curl_easy_perform(h->curl);
        curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &oserr);
        if (!h->socket || cc != CURLE_COULDNT_CONNECT || oserr == EACCES)
            return cc;
        if (hs_monotonic_us() + delay >= deadline)
            return cc;
        sleep_us(delay);
        delay = delay * 2 > CLI_RETRY_MAX_US ? CLI_RETRY_MAX_US : delay * 2;
    }
}

int cli_http_do(struct cli_http *h, const char *method, const char *path, const char *body,
                long *status, struct hs_buf *resp, char *err, size_t errsize)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url = hs_aprintf("%s%s", h->base, path);
    CURLcode cc;

    h->refused[0] = '\0';
    http_prepare(h, method, url, body, resp, errbuf);
    log_debug("cli: %s %s", method, url);
    cc = http_perform(h, hs_monotonic_us() + h->timeout_us);
    free(url);
    if (cc == CURLE_WRITE_ERROR && resp->len + CURL_MAX_WRITE_SIZE > resp->max) {
        snprintf(err, errsize, "response larger than %zu bytes", resp->max);
        return -E2BIG;
    }
    if (cc != CURLE_OK) {
        http_error(h, cc, errbuf, err, errsize);
        return -EIO;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    return 0;
}
