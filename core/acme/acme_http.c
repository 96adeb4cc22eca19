/* HTTP for the ACME exchange (libcurl): bounded bodies, the three headers ACME needs, and
 * the CA bundle a Go program would use (SSL_CERT_FILE / SSL_CERT_DIR), so that headscale's
 * setup for a private CA carries over. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "acme/acme_internal.h"

#define ACME_HTTP_TIMEOUT_MS 30000
#define ACME_CONNECT_TIMEOUT_MS 10000
#define ACME_MAX_RETRY_AFTER 3600

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct acme_reply *r = arg;

    return hs_buf_append(&r->body, p, size * n) == 0 ? size * n : 0;
}

/* "Name: value\r\n" → the value when the name matches, trimmed, into out. */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name), end;

    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return false;
    line += nl + 1;
    len -= nl + 1;
    while (len && (*line == ' ' || *line == '\t'))
        line++, len--;
    for (end = len; end && (line[end - 1] == '\r' || line[end - 1] == '\n' ||
                            line[end - 1] == ' '); end--)
        ;
    if (end >= size)
        return true; /* too long to be ours: left empty, the caller sees it missing */
    memcpy(out, line, end);
    out[end] = '\0';
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct acme_reply *r = arg;
    char num[16];
    uint64_t v;

    if (!header_value(p, size * n, "Replay-Nonce", r->nonce, sizeof(r->nonce)) &&
        !header_value(p, size * n, "Location", r->location, sizeof(r->location)) &&
        header_value(p, size * n, "Retry-After", num, sizeof(num)) &&
        hs_parse_u64(num, ACME_MAX_RETRY_AFTER, &v) == 0)
        r->retry_after = (int)v;
    return size * n;
}

/* Ends a transfer when the acme is stopping, rather than after its timeout. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load((const atomic_bool *)arg) ? 1 : 0;
}

static void setup(CURL *c, const char *url, const char *body, const atomic_bool *stop,
                  struct acme_reply *r, struct curl_slist *hdrs)
{
    const char *ca_file = getenv("SSL_CERT_FILE"), *ca_dir = getenv("SSL_CERT_DIR");

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ACME_HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ACME_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "headscale-c/" HS_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)stop);
    if (ca_file && *ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
    if (ca_dir && *ca_dir)
        curl_easy_setopt(c, CURLOPT_CAPATH, ca_dir);
    if (body && !*body)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
}

int acme__http(const char *url, const char *body, const atomic_bool *stop,
               struct acme_reply *r, char *err, size_t errsize)
{
    struct curl_slist *hdrs = NULL;
    CURLcode cc;
    CURL *c;

    pthread_once(&curl_once, curl_init_once);
    memset(r, 0, sizeof(*r));
    hs_buf_init(&r->body, ACME_MAX_CHAIN);
    if (!(c = curl_easy_init())) {
        snprintf(err, errsize, "cannot initialise libcurl");
        return -ENOMEM;
    }
    if (body && *body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/jose+json");
    setup(c, url, body, stop, r, hdrs);
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    if (cc == CURLE_OK)
        return 0;
    hs_buf_free(&r->body);
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(err, errsize, "stopped");
        return -ECANCELED;
    }
    if (cc == CURLE_WRITE_ERROR)
        snprintf(err, errsize, "%s: the response exceeds %u bytes", url, ACME_MAX_CHAIN);
    else
        snprintf(err, errsize, "%s: %s", url, curl_easy_strerror(cc));
    return -EIO;
}
