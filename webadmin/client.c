/* The REST client: one libcurl handle kept open (keep-alive to the server), the caller's API
 * key on each request, answers capped at WA_MAX_API_RESPONSE. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

#define CLIENT_TIMEOUT_MS 15000L

struct wa_client {
    CURL *curl;
    char *base_url;
    char *ca_file;
};

struct wa_client *wa__client_new(const char *base_url, const char *ca_file)
{
    struct wa_client *c = hs_xcalloc(1, sizeof(*c));
    size_t n = strlen(base_url);

    c->curl = curl_easy_init();
    if (!c->curl) {
        free(c);
        return NULL;
    }
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    c->base_url = hs_strndup(base_url, n);
    c->ca_file = hs_strdup(ca_file);
    return c;
}

void wa__client_free(struct wa_client *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    free(c->base_url);
    free(c->ca_file);
    free(c);
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata)
{
    struct hs_buf *b = userdata;

    if (hs_buf_append(b, p, size * n) < 0)
        return 0; /* over the cap: curl stops with CURLE_WRITE_ERROR */
    return size * n;
}

static struct curl_slist *headers_for(const char *key, bool json_body)
{
    struct curl_slist *h = NULL;
    char *auth = hs_aprintf("Authorization: Bearer %s", key);

    h = curl_slist_append(h, auth);
    sodium_memzero(auth, strlen(auth));
    free(auth);
    h = curl_slist_append(h, "Accept: application/json");
    if (json_body)
        h = curl_slist_append(h, "Content-Type: application/json");
    return h;
}

static void setup(struct wa_client *c, const char *method, const char *url, const char *body,
                  struct curl_slist *h, struct hs_buf *resp)
{
    CURL *e = c->curl;

    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, CLIENT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
}

int wa__client_call(struct wa_client *c, const char *key, const char *method, const char *path,
                    const json_t *body, long *status, json_t **out)
{
    char *url = hs_aprintf("%s%s", c->base_url, path), err[160];
    char *text = body ? hs_json_dump(body, JSON_COMPACT) : NULL;
    struct curl_slist *h = headers_for(key, body != NULL);
    struct hs_buf resp;
    CURLcode cc;

    hs_buf_init(&resp, WA_MAX_API_RESPONSE);
    setup(c, method, url, text, h, &resp);
    cc = curl_easy_perform(c->curl);
    curl_slist_free_all(h);
    free(text);
    free(url);
    if (cc != CURLE_OK) {
        log_warnx("webadmin: %s %s: %s", method, path, curl_easy_strerror(cc));
        hs_buf_free(&resp);
        return -EIO;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
    *out = resp.len ? hs_json_load(resp.data, resp.len, WA_MAX_API_RESPONSE, err, sizeof(err))
                    : NULL;
    hs_buf_free(&resp);
    return 0;
}
