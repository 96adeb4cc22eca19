/* derp: fetching derp.urls with libcurl (bounded size and time, cancellable). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>

#include "derp/derp_internal.h"

struct fetch {
    struct hs_buf *out;
    const atomic_bool *cancel;
    bool too_big;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
    struct fetch *f = arg;
    size_t n = size * nmemb;

    if (hs_buf_append(f->out, p, n) < 0) {
        f->too_big = true;
        return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

/* Lets derpmap_free() end a slow download at once instead of after the timeout. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct fetch *f = arg;

    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return f->cancel && atomic_load(f->cancel) ? 1 : 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

/* curl_global_init is not thread-safe in every libcurl build: do it once, up front. */
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void setup(CURL *c, const char *url, struct fetch *f)
{
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, DERPMAP_FETCH_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, DERPMAP_MAX_REDIRS);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)DERPMAP_MAX_BYTES);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "headscale-c/" HS_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
}

int derp__fetch_url(const char *url, const atomic_bool *cancel, struct hs_buf *out, char *err,
                    size_t errsize)
{
    struct fetch f = { .out = out, .cancel = cancel };
    CURLcode cc;
    CURL *c;

    pthread_once(&curl_once, curl_init_once);
    if (!(c = curl_easy_init())) {
        snprintf(err, errsize, "cannot initialise libcurl");
        return -EIO;
    }
    hs_buf_init(out, DERPMAP_MAX_BYTES);
    setup(c, url, &f);
    cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (cc == CURLE_OK)
        return 0;
    hs_buf_free(out);
    if (f.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(err, errsize, "response exceeds %u bytes", DERPMAP_MAX_BYTES);
        return -E2BIG;
    }
    snprintf(err, errsize, "%s", curl_easy_strerror(cc));
    return cc == CURLE_ABORTED_BY_CALLBACK ? -ECANCELED : -EIO;
}
